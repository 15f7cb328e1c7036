//! Fuzz target `handshake_request`: see `palisade_fuzz::handshake_request`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::handshake_request(data));
