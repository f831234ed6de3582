//! A bounded loopback load test of the service (issue 18): `CONNECTIONS` clients, each
//! its own HTTP/1.1 connection, send a fixed number of requests back to back, and the
//! program prints requests/s and p50/p99 latency for
//!
//! * `ceiling`: a minimal axum handler returning a constant, on its own listener in the
//!   same server runtime: the HTTP stack's own ceiling on this machine;
//! * `health`: `GET /health`, through the service's middleware (guard, metrics,
//!   idempotency, timeout) to a small handler;
//! * `read`: `GET /api/claude/sessions/{id}` (each client its own session, of
//!   `READ_SESSION_ACTIVITIES` activities, not written during the rounds: the answer is
//!   the whole session);
//! * `write`: `POST /api/claude/sessions/{id}/activities`, durable (answered after
//!   `fdatasync`, group commit), each client its own session.
//!
//! The workloads run in rounds (`ROUNDS`, the order rotating each round) so that a slow
//! moment of a shared machine hits them all; requests/s is the median over rounds, the
//! percentiles are over every request of every round. The data directory is under
//! `CARGO_TARGET_TMPDIR` (the target directory's disk, not a RAM-backed `/tmp`), opened
//! as `serve` opens it (projections on). The client and the server share the machine:
//! the figures are the pair's, not the server's alone.
//!
//! The server runs without its per-IP rate limit (`Limits::rate_limit` = `None`): all
//! the clients share 127.0.0.1, and the limit would measure 429s.
//!
//! `cargo bench -p session-engine-server --bench http_load`; `SESSION_ENGINE_BENCH_QUICK=1`
//! (as `.ci/bench-quick` sets it) runs a few requests only, whose figures mean nothing.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use session_engine::{ManagerOptions, Options, SessionManager};
use session_engine_server::{Limits, ServeOptions};

const CONNECTIONS: usize = 64;

fn quick() -> bool {
    std::env::var("SESSION_ENGINE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Ceiling,
    Health,
    Read,
    Write,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Ceiling => "ceiling: constant axum handler",
            Workload::Health => "GET /health: the service's middleware, a small handler",
            Workload::Read => "read: GET session",
            Workload::Write => "durable write: POST activity",
        }
    }
}

struct Target {
    api: String,
    ceiling: String,
    /// Read, never written during the rounds (each with `READ_SESSION_ACTIVITIES`).
    read_sessions: Vec<String>,
    /// Written.
    write_sessions: Vec<String>,
}

/// Activities each read session holds (a GET answers the whole session).
const READ_SESSION_ACTIVITIES: usize = 10;

/// One round of `w`: every client sends `per_client` requests; returns the wall time and
/// each request's latency.
async fn round(
    t: &Arc<Target>,
    clients: &[reqwest::Client],
    w: Workload,
    per_client: usize,
) -> (Duration, Vec<Duration>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        let t = Arc::clone(t);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for n in 0..per_client {
                let sent = Instant::now();
                let r = match w {
                    Workload::Ceiling => c.get(&t.ceiling).send().await,
                    Workload::Health => c.get(format!("{}/health", t.api)).send().await,
                    Workload::Read => {
                        c.get(format!(
                            "{}/api/claude/sessions/{}",
                            t.api, t.read_sessions[i]
                        ))
                        .send()
                        .await
                    }
                    Workload::Write => {
                        c.post(format!(
                            "{}/api/claude/sessions/{}/activities",
                            t.api, t.write_sessions[i]
                        ))
                        .json(&json!({ "action": "api_call", "details": { "n": n } }))
                        .send()
                        .await
                    }
                }
                .expect("send");
                let status = r.status();
                let body = r.bytes().await.expect("body");
                assert!(status.is_success(), "{w:?}: {status} {body:?}");
                lat.push(sent.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    (start.elapsed(), all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() {
    let (rounds, per_client, warmup) = if quick() { (1, 3, 1) } else { (5, 100, 10) };
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    eprintln!("data directory: {}", dir.path().display());
    let manager = Arc::new(
        SessionManager::open(
            dir.path().join("data"),
            ManagerOptions::with_engine(Options::default()),
        )
        .unwrap(),
    );

    // The server: its own runtime (two workers, as on the CI machine's two cores).
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, ceiling_addr) = server_rt.block_on(async {
        let server = session_engine_server::start(
            Arc::clone(&manager),
            // No per-IP rate limit: every client here is 127.0.0.1, and the limit
            // (1,000/s by default) would turn the load into 429s.
            ServeOptions {
                addr: "127.0.0.1:0".parse().unwrap(),
                limits: Limits {
                    rate_limit: None,
                    ..Limits::default()
                },
                ..ServeOptions::default()
            },
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (server, addr)
    });

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = format!("http://127.0.0.1:{}", server.local_addr().port());
    client_rt.block_on(async {
        // One client each, so each holds its own connection.
        let clients: Vec<reqwest::Client> = (0..CONNECTIONS)
            .map(|_| {
                reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap()
            })
            .collect();
        let mut read_sessions = Vec::new();
        let mut write_sessions = Vec::new();
        for i in 0..2 * CONNECTIONS {
            let r = clients[0]
                .post(format!("{api}/api/claude/sessions"))
                .json(&json!({ "name": format!("load-{i}") }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            let v: serde_json::Value = r.json().await.unwrap();
            let id = v["data"]["session"]["id"].as_str().unwrap().to_owned();
            if i < CONNECTIONS {
                for n in 0..READ_SESSION_ACTIVITIES {
                    let r = clients[0]
                        .post(format!("{api}/api/claude/sessions/{id}/activities"))
                        .json(&json!({ "action": "api_call", "details": { "n": n } }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 201);
                }
                read_sessions.push(id);
            } else {
                write_sessions.push(id);
            }
        }
        let t = Arc::new(Target {
            api: api.clone(),
            ceiling: format!("http://{ceiling_addr}/"),
            read_sessions,
            write_sessions,
        });
        let order = [
            Workload::Ceiling,
            Workload::Health,
            Workload::Read,
            Workload::Write,
        ];
        let n = order.len();
        for w in order {
            round(&t, &clients, w, warmup).await;
        }
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); n];
        for r in 0..rounds {
            for k in 0..n {
                let i = (k + r) % n;
                let (wall, l) = round(&t, &clients, order[i], per_client).await;
                rates[i].push(l.len() as f64 / wall.as_secs_f64());
                lat[i].extend(l);
            }
        }
        println!(
            "{CONNECTIONS} connections x {per_client} requests, {rounds} rounds{}",
            if quick() {
                " (quick mode: the figures mean nothing)"
            } else {
                ""
            }
        );
        println!();
        println!("| workload | requests/s (median of rounds) | p50 ms | p99 ms | requests |");
        println!("|---|---:|---:|---:|---:|");
        for i in 0..n {
            rates[i].sort_by(f64::total_cmp);
            lat[i].sort();
            println!(
                "| {} | {:.0} | {} | {} | {} |",
                order[i].name(),
                rates[i][rates[i].len() / 2],
                ms(percentile(&lat[i], 0.50)),
                ms(percentile(&lat[i], 0.99)),
                lat[i].len()
            );
        }
    });
    server_rt.block_on(server.shutdown()).unwrap();
    manager.close().unwrap();
}
