//! The engine on a single JetStream server: what is written is what a reopen reads, a
//! second writer is refused with a typed error, faults are errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use session_engine::backend::LogBackend;
use session_engine::{Engine, Error, Lsn};

const T: Duration = Duration::from_secs(10);

#[test]
fn what_is_written_is_what_a_reopen_reads_with_or_without_a_snapshot() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    let log = c.log("reopen", 1, T);
    let e = Engine::open(root.path().join("a"), options(&log)).unwrap();
    for s in ["s1", "s.2", "s3"] {
        e.execute(create_cmd(s)).unwrap();
    }
    // A batch of many records (submitted together) and single commits.
    let pending: Vec<_> = (0..50)
        .map(|i| e.submit(activity_cmd(["s1", "s.2", "s3"][i % 3], &format!("a{i}"))))
        .collect();
    for p in pending {
        p.wait().unwrap();
    }
    e.execute(activity_cmd("s1", "last")).unwrap();
    assert_eq!(e.last_lsn(), Lsn(54));
    let written = e.state();
    e.close().unwrap();
    drop(e);

    // Reopened in the same data directory and in a fresh one (nothing local at all): the
    // whole state comes from the stream.
    for dir in ["a", "fresh"] {
        let e = Engine::open(root.path().join(dir), options(&c.log("reopen", 1, T))).unwrap();
        assert_eq!(*e.state(), *written, "{dir}");
        assert_eq!(e.recovery_report().replayed, 54);
        e.close().unwrap();
    }

    // After a snapshot, the open replays only the tail, and the writer goes on with the
    // sessions it did not see in the tail (their last records are looked up).
    let e = Engine::open(root.path().join("a"), options(&c.log("reopen", 1, T))).unwrap();
    e.snapshot().unwrap();
    e.close().unwrap();
    drop(e);
    let e = Engine::open(root.path().join("a"), options(&c.log("reopen", 1, T))).unwrap();
    assert_eq!(e.recovery_report().replayed, 0);
    e.execute(activity_cmd("s.2", "after-snapshot")).unwrap();
    e.execute(activity_cmd("s3", "after-snapshot")).unwrap();
    let written = e.state();
    e.close().unwrap();
    drop(e);
    let e = Engine::open(root.path().join("fresh2"), options(&c.log("reopen", 1, T))).unwrap();
    assert_eq!(*e.state(), *written);
    assert_eq!(e.last_lsn(), Lsn(56));
    // Readers (subscriptions, read_log) go through the stream too.
    let mut n = 0;
    e.read_log(Lsn(1), Lsn(56), |lsn, _| {
        n += 1;
        assert_eq!(lsn, Lsn(n));
        Ok(true)
    })
    .unwrap();
    assert_eq!(n, 56);
    let mut sub = e.subscribe(Lsn(50));
    assert_eq!(sub.recv().unwrap().lsn, Lsn(50));
}

#[test]
fn a_second_writer_on_the_same_stream_gets_a_typed_conflict_and_stores_nothing() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    let a = Engine::open(root.path().join("a"), options(&c.log("conflict", 1, T))).unwrap();
    a.execute(create_cmd("s")).unwrap();
    let b = Engine::open(root.path().join("b"), options(&c.log("conflict", 1, T))).unwrap();
    // Both have read LSN 1; A appends first.
    a.execute(activity_cmd("s", "from-a")).unwrap();
    let err = b.execute(activity_cmd("s", "from-b")).unwrap_err();
    assert!(matches!(err, Error::LogConflict { .. }), "{err:?}");
    assert_eq!(err.kind(), "log_conflict");
    // Nothing of B's batch was stored, so B is not poisoned: it is only behind, and its
    // next command conflicts again until it catches up.
    assert!(b.poisoned().is_none());
    assert_eq!(b.stats().conflicts, 1);
    let err = b.execute(activity_cmd("s", "from-b")).unwrap_err();
    assert!(matches!(err, Error::LogConflict { .. }), "{err:?}");
    // A catch-up takes in A's record in place: B's state is then A's.
    assert_eq!(b.catch_up().unwrap(), Lsn(2));
    assert_eq!(b.stats().caught_up, 1);
    assert_eq!(*b.state(), *a.state());
    let state = b.state();
    let acts = &state.session(&sid("s")).unwrap().body.activity_log;
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].action.as_ref(), "from-a");
    // And B now writes after A, which A's catch-up takes in.
    b.execute(activity_cmd("s", "from-b")).unwrap();
    assert_eq!(a.catch_up().unwrap(), Lsn(3));
    assert_eq!(*a.state(), *b.state());
    // A reopen reads what the log holds: the same.
    drop(b);
    let b = Engine::open(root.path().join("b"), options(&c.log("conflict", 1, T))).unwrap();
    assert_eq!(*b.state(), *a.state());
}

#[test]
fn a_missing_stream_an_unreachable_server_and_a_hole_are_errors() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    // Read-only, the stream is not created.
    let err = Engine::open_read_only(root.path(), options(&c.log("missing", 1, T))).unwrap_err();
    assert!(matches!(err, Error::LogUnavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = session_engine_nats::NatsLog::new(session_engine_nats::NatsOptions {
        servers: vec![format!("127.0.0.1:{port}")],
        data_set: "x".into(),
        replicas: 1,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let err = Engine::open(root.path().join("n"), options(&nowhere)).unwrap_err();
    assert!(matches!(err, Error::LogUnavailable { .. }), "{err:?}");

    // A message deleted from the stream is a hole: refused as corruption naming it.
    let log = c.log("hole", 1, T);
    let e = Engine::open(root.path().join("h"), options(&log)).unwrap();
    e.execute(create_cmd("s")).unwrap();
    for i in 0..3 {
        e.execute(activity_cmd("s", &format!("a{i}"))).unwrap();
    }
    e.close().unwrap();
    drop(e);
    delete_message(&c, "SE_hole", 3);
    let err = Engine::open(root.path().join("h2"), options(&c.log("hole", 1, T))).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err:?}");
    let mut n = 0;
    let err = log
        .read(Lsn(1), Lsn(4), &mut |_, _, _, _| {
            n += 1;
            Ok(true)
        })
        .unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err:?}");
}

fn delete_message(c: &Cluster, stream: &str, seq: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(c.servers()[0].as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let s = js.get_stream(stream).await.unwrap();
        assert!(s.delete_message(seq).await.unwrap());
    });
}
