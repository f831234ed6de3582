//! Fuzz target `event_payload`: see `checks::event_payload` in `tests/common/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| session_engine_fuzz::checks::event_payload(data));
