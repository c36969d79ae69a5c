//! Fuzz target `decode_protobuf`: see `skiff_control::fuzzing::decode_protobuf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_control::fuzzing::decode_protobuf(data));
