//! Fuzz target `bundle`: see `checks::bundle` in `testkit/src/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| session_engine_fuzz::checks::bundle(data));
