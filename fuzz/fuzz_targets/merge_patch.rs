//! Fuzz target `merge_patch`: see `skiff_control::fuzzing::merge_patch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_control::fuzzing::merge_patch(data));
