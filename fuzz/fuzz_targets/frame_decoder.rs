//! Fuzz target `frame_decoder`: see `palisade_fuzz::frame_decoder`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::frame_decoder(data));
