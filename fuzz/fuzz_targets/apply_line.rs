//! Fuzz target `apply_line`: see `checks::apply_line` in `tests/common/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| session_engine_fuzz::checks::apply_line(data));
