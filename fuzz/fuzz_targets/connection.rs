//! Fuzz target `connection`: see `palisade_fuzz::connection`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::connection(data));
