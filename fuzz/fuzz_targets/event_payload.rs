//! Fuzz target `event_payload`: see `checks::event_payload` in `testkit/src/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| session_engine_fuzz::checks::event_payload(data));
