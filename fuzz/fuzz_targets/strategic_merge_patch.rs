//! Fuzz target `strategic_merge_patch`: see `skiff_control::fuzzing::strategic_merge_patch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_control::fuzzing::strategic_merge_patch(data));
