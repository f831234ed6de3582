//! Support for the fuzz targets: the checks they run live in the test scaffolding
//! (`testkit/`, package `session-engine-testkit`), so that `tests/fuzz_regressions.rs` replays committed inputs
//! through exactly the same code.
#![allow(dead_code)]

pub use session_engine_testkit::{checks, model, workload};
