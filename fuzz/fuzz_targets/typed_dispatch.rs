//! Fuzz target `typed_dispatch`: see `palisade_fuzz::typed_dispatch`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::typed_dispatch(data));
