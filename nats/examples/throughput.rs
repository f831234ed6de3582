//! Durable commits per second on the JetStream backend against the file WAL, and
//! JetStream's own publish rate with the same message sizes (its ceiling here).
//!
//! `cargo run --release -p session-engine-nats --example throughput -- nats://HOST:PORT[,...] [SECONDS]`
//! (the servers with `sync_interval: always`; a stream `SE_bench_<pid>` is created).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_engine::{Command, Durability, Engine, JsonText, NewSession, Options, SessionId};
use session_engine_nats::{NatsLog, NatsOptions};

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn activity(s: &str, i: u64) -> Command {
    Command::RecordActivity {
        session: sid(s),
        action: "api_call".into(),
        details: Some(
            JsonText::parse(&format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(64))).unwrap(),
        ),
    }
}

/// Commits per second of `writers` threads, each on its own session, for `secs`.
fn engine_rate(options: Options, dir: &std::path::Path, writers: usize, secs: f64) -> f64 {
    let e = Arc::new(Engine::open(dir, options).unwrap());
    for w in 0..writers {
        e.execute(Command::CreateSession(Box::new(NewSession {
            id: Some(sid(&format!("w{w}"))),
            timeout_secs: 0,
            ..NewSession::default()
        })))
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (e, stop, done) = (Arc::clone(&e), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    e.execute(activity(&format!("w{w}"), i)).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    e.close().unwrap();
    rate
}

/// JetStream's own rate: `writers` publishers, each waiting for its acknowledgement
/// before the next publish, messages of `size` bytes.
fn publish_rate(nats: &NatsOptions, stream: &str, writers: usize, size: usize, secs: f64) -> f64 {
    let servers = &nats.servers;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(servers.to_vec()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let subject = format!("raw.{stream}");
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.into(),
            subjects: vec![format!("{subject}.>")],
            num_replicas: nats.replicas,
            ..Default::default()
        })
        .await
        .unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let (js, done, subject) = (js.clone(), Arc::clone(&done), subject.clone());
                tokio::spawn(async move {
                    let payload = bytes::Bytes::from(vec![b'x'; size]);
                    while Instant::now() < deadline {
                        js.publish(format!("{subject}.{w}"), payload.clone())
                            .await
                            .unwrap()
                            .await
                            .unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .expect("usage: throughput nats://HOST:PORT[,...] [SECONDS]");
    let secs: f64 = args.get(2).map_or(3.0, |s| s.parse().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let mut nats = NatsOptions::parse(url).unwrap();
    if nats.servers.len() >= 3 {
        nats.replicas = 3;
    }
    // The size of one record of this workload, for the raw publishes.
    let size = session_engine::codec::event_to_vec(&session_engine::Event {
        at: session_engine::Timestamp::from_secs(0),
        body: session_engine::EventBody::ActivityRecorded {
            session: sid("w0"),
            action: "api_call".into(),
            details: Some(
                JsonText::parse(&format!(r#"{{"i":1000,"pad":"{}"}}"#, "x".repeat(64))).unwrap(),
            ),
        },
    })
    .map_or(120, |v| v.len());
    println!(
        "record size about {size} bytes; {secs} s per figure; replicas {}",
        nats.replicas
    );
    for writers in [1, 16] {
        let base = Options {
            durability: Durability::Always,
            watchdog_interval: None,
            ..Options::default()
        };
        let file = engine_rate(
            base.clone(),
            &tmp.path().join(format!("file{writers}")),
            writers,
            secs,
        );
        let mut o = nats.clone();
        o.data_set = format!("bench_{pid}_{writers}");
        let log = NatsLog::new(o).unwrap();
        let on_nats = engine_rate(
            Options {
                log: Some(Arc::new(log)),
                ..base
            },
            &tmp.path().join(format!("nats{writers}")),
            writers,
            secs,
        );
        let raw = publish_rate(&nats, &format!("RAW_{pid}_{writers}"), writers, size, secs);
        println!(
            "{writers:>2} writers: file WAL {file:>8.0}/s   JetStream backend {on_nats:>8.0}/s   raw JetStream publish+ack {raw:>8.0}/s"
        );
    }
}
