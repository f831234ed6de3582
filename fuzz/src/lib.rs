//! Support for the fuzz targets: the checks they run live in the main crate's test
//! helpers (`tests/common/`), so that `tests/fuzz_regressions.rs` replays committed inputs
//! through exactly the same code.
#![allow(dead_code)]

#[path = "../../tests/common/checks.rs"]
pub mod checks;
#[path = "../../tests/common/model.rs"]
pub mod model;
#[path = "../../tests/common/workload.rs"]
pub mod workload;
