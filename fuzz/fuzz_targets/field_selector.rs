//! Fuzz target `field_selector`: see `skiff_control::fuzzing::field_selector`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_control::fuzzing::field_selector(data));
