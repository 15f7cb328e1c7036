//! Fuzz target `frame_header`: see `palisade_fuzz::frame_header`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::frame_header(data));
