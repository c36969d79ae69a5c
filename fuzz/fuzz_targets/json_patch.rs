//! Fuzz target `json_patch`: see `skiff_control::fuzzing::json_patch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_control::fuzzing::json_patch(data));
