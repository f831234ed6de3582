//! The integration tests' helpers: the `session-engine-testkit` member (`testkit/`),
//! shared with the command line's tests and the fuzz targets.
#![allow(unused_imports)]

pub use session_engine_testkit::*;
