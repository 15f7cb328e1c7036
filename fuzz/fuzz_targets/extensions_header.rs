//! Fuzz target `extensions_header`: see `palisade_fuzz::extensions_header`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::extensions_header(data));
