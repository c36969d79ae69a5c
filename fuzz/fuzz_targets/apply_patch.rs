//! Fuzz target `apply_patch`: see `skiff_control::fuzzing::apply_patch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_control::fuzzing::apply_patch(data));
