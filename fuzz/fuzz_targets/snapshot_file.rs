//! Fuzz target `snapshot_file`: see `checks::snapshot_file` in `testkit/src/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| session_engine_fuzz::checks::snapshot_file(data));
