//! Fuzz target `decode_json`: see `skiff_control::fuzzing::decode_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_control::fuzzing::decode_json(data));
