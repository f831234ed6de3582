//! Several engine nodes on one data set: a command that loses the race for the stream is
//! decided again against the state with the other node's records: no acknowledged
//! command is lost, none is applied twice, and a command the other node's records make
//! invalid is refused as it would be on one node.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use session_engine::{Command, Engine, Error};
use session_engine_nats::Node;

const T: Duration = Duration::from_secs(10);

fn end_cmd(id: &str) -> Command {
    Command::End(sid(id))
}

#[test]
fn a_stale_node_decides_its_command_again_against_the_other_nodes_records() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    let log = c.log("stale", 1, T);
    let a = Node::open(root.path().join("a"), options(&log), &log).unwrap();
    let b = Node::open(root.path().join("b"), options(&log), &log).unwrap();
    a.execute(create_cmd("s")).unwrap();
    // B has not seen the creation: "not found" does not hold against the stream, so B
    // catches up and decides again.
    b.execute(activity_cmd("s", "from-b")).unwrap();
    assert_eq!(b.last_lsn().0, 2);
    // A is now behind: ending the session conflicts, is decided again, and succeeds...
    a.execute(end_cmd("s")).unwrap();
    assert_eq!(a.conflicts(), 1);
    // ...after which B's next activity (accepted by B's stale state) conflicts, and
    // decided again against the ended session, is refused as on one node: nothing of it
    // is stored.
    assert_eq!(b.conflicts(), 0);
    let err = b.execute(activity_cmd("s", "after-end")).unwrap_err();
    assert!(matches!(err, Error::InvalidState { .. }), "{err:?}");
    assert_eq!(b.conflicts(), 1);
    assert_eq!(b.last_lsn().0, 3);
    let fresh = Engine::open(root.path().join("c"), options(&c.log("stale", 1, T))).unwrap();
    let state = fresh.state();
    let acts: Vec<String> = state
        .session(&sid("s"))
        .unwrap()
        .body
        .activity_log
        .iter()
        .map(|a| a.action.to_string())
        .collect();
    assert_eq!(acts, ["from-b"]);
    assert_eq!(fresh.last_lsn().0, 3);
    b.refresh().unwrap();
    assert_eq!(*b.state().unwrap(), *state);
}

#[test]
fn two_nodes_writing_one_session_at_once_lose_nothing_and_apply_nothing_twice() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    let nodes: Vec<Arc<Node>> = ["a", "b"]
        .iter()
        .map(|n| {
            let log = c.log("race", 1, T);
            Arc::new(Node::open(root.path().join(n), options(&log), &log).unwrap())
        })
        .collect();
    let start = Arc::new(Barrier::new(2));
    // Both create the same sessions (exactly one creation of each succeeds) and record
    // activities into one of them.
    let threads: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(w, node)| {
            let node = Arc::clone(node);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut created = Vec::new();
                let mut acked = Vec::new();
                for i in 0..60 {
                    if i % 6 == 0 {
                        let id = format!("c{}", i / 6);
                        match node.execute(create_cmd(&id)) {
                            Ok(_) => created.push(id),
                            Err(Error::AlreadyExists { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    let a = format!("n{w}-{i}");
                    match node.execute(activity_cmd("c0", &a)) {
                        Ok(_) => acked.push(a),
                        // Neither node has created c0 yet.
                        Err(Error::NotFound { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                (created, acked)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let conflicts: u64 = nodes.iter().map(|n| n.conflicts()).sum();
    eprintln!("commands decided again after a conflict: {conflicts}");
    let fresh = Engine::open(root.path().join("fresh"), options(&c.log("race", 1, T))).unwrap();
    let state = fresh.state();
    // Each session was created once, by one node.
    let mut created: Vec<&String> = results.iter().flat_map(|r| &r.0).collect();
    created.sort();
    let want: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    assert_eq!(created, want.iter().collect::<Vec<_>>());
    // Every acknowledged activity is in c0 exactly once, each node's in its order, and
    // nothing else is.
    let log: Vec<String> = state
        .session(&sid("c0"))
        .unwrap()
        .body
        .activity_log
        .iter()
        .map(|a| a.action.to_string())
        .collect();
    for (w, r) in results.iter().enumerate() {
        let mine: Vec<&String> = log
            .iter()
            .filter(|a| a.starts_with(&format!("n{w}-")))
            .collect();
        assert_eq!(mine, r.1.iter().collect::<Vec<_>>(), "node {w}");
    }
    assert_eq!(log.len(), results.iter().map(|r| r.1.len()).sum::<usize>());
    // Each node, caught up, has the state a fresh reader of the stream has.
    for n in &nodes {
        n.refresh().unwrap();
        assert_eq!(*n.state().unwrap(), *state);
    }
}
