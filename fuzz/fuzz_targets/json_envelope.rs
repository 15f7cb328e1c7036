//! Fuzz target `json_envelope`: see `palisade_fuzz::json_envelope`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::json_envelope(data));
