//! Fuzz target `label_selector`: see `skiff_control::fuzzing::label_selector`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_control::fuzzing::label_selector(data));
