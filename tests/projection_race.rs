//! A reader of the projection files never sees a torn or half-written JSON document,
//! however it races the projector: every JSON file is written to a fresh temporary file
//! and renamed over the old one, so opening the path gives the old document or the new
//! one (real file system, a reader thread re-reading the files in a loop).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;
use session_engine::{CommandRun, NewSession, SessionId, SessionManager};

fn named_session(id: &str) -> NewSession {
    NewSession {
        id: Some(SessionId::new(id).unwrap()),
        timeout_secs: 0,
        ..NewSession::default()
    }
}

/// Reads every JSON projection file under `dir` once; returns how many were read and the
/// first that did not parse.
fn read_all(dir: &std::path::Path) -> (u64, Option<String>) {
    let mut n = 0;
    for sub in ["sessions", "sessions/archive", "chains"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            // A file renamed away (archived) between the listing and the read is fine.
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            n += 1;
            if let Err(err) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                return (
                    n,
                    Some(format!("{sub}/{name} ({} bytes): {err}", bytes.len())),
                );
            }
        }
    }
    (n, None)
}

#[test]
fn a_reader_racing_the_writer_never_sees_invalid_json() {
    let b = Backend::file();
    let clock = clock();
    let mut p = fast_projections();
    p.flush_interval = Duration::from_micros(200);
    p.registry_interval = Duration::from_micros(200);
    let m: SessionManager = b.open_with(&clock, p);
    for i in 0..4 {
        m.create_session(named_session(&format!("s{i}"))).unwrap();
    }
    flush(&m);
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                let (n, bad) = read_all(&b.dir);
                reads.fetch_add(n, Ordering::Relaxed);
                if let Some(bad) = bad {
                    return Some(bad);
                }
            }
            None
        });
        // Files that grow to tens of kilobytes, rewritten hundreds of times.
        for i in 0..1500u64 {
            let s = m.get_session(&format!("s{}", i % 4)).unwrap();
            s.record_activity("tool_use", Some(json!({"i": i, "text": "x".repeat(64)})))
                .unwrap();
            if i % 7 == 0 {
                s.record_command(CommandRun::succeeded("cmd", Duration::from_millis(1)))
                    .unwrap();
            }
            if i % 50 == 0 {
                m.chain("agent")
                    .unwrap()
                    .update_session(&format!("ext-{i}"), "prompt", "response", None)
                    .unwrap();
                flush(&m);
            }
        }
        flush(&m);
        done.store(true, Ordering::Release);
        assert_eq!(reader.join().unwrap(), None, "a reader saw a torn document");
    });
    assert!(
        reads.load(Ordering::Relaxed) > 100,
        "the reader read too little"
    );
    m.close().unwrap();
}
