//! Fuzz target `decode_yaml`: see `skiff_control::fuzzing::decode_yaml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_control::fuzzing::decode_yaml(data));
