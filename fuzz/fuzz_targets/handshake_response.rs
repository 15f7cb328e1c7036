//! Fuzz target `handshake_response`: see `palisade_fuzz::handshake_response`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::handshake_response(data));
