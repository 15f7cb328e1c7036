//! Fuzz target `deflate_inflate`: see `palisade_fuzz::deflate_inflate`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::deflate_inflate(data));
