//! `serve`: the local service of `session-engine-server` over this data directory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use session_engine::{Options, SessionManager};
use session_engine_server::ratelimit::RateLimit;
use session_engine_server::{Limits, ServeOptions};

use crate::args::{Cli, ServeArgs};
use crate::output::Out;

/// Opens the data directory for writing (with the watchdog, as a long-running engine),
/// prints `{"listening": "http://ADDR", "token_file": ...}` once it listens, serves until
/// SIGINT or SIGTERM, then answers what is in flight and closes the engine.
pub(crate) fn run(cli: &Cli, out: &mut Out, args: &ServeArgs) -> Result<u8> {
    let options = Options {
        watchdog_interval: Some(Duration::from_secs(1)),
        ..cli.options()
    };
    let manager = Arc::new(SessionManager::open(
        &cli.data_dir,
        cli.manager_options(options, cli.projection_format()),
    )?);
    crate::report_recovery(manager.engine());
    // Runs a restart left recovering (safe to repeat) start their next attempt now.
    for id in manager.resume_runs()? {
        eprintln!("session-engine: run {id} resumed");
    }
    let defaults = ServeOptions::default();
    let serve = ServeOptions {
        addr: args.addr,
        token_file: args.token_file.clone(),
        limits: Limits {
            rate_limit: (args.rate_limit > 0).then_some(RateLimit {
                per_second: f64::from(args.rate_limit),
                burst: args.rate_burst,
            }),
            header_read_timeout: Duration::from_millis(args.header_timeout_ms),
            ..defaults.limits
        },
    };
    let mut printed = Ok(());
    session_engine_server::run(Arc::clone(&manager), serve, |addr, token| {
        printed = out
            .json(&json!({
                "listening": format!("http://{addr}"),
                "token_file": token.map(|p| p.display().to_string()),
            }))
            .and_then(|()| out.flush());
    })?;
    printed?;
    manager.close()?;
    Ok(0)
}
