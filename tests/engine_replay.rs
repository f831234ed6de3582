//! Property: the state rebuilt from the log equals the live state, for random command
//! sequences, with and without snapshots.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use session_engine::{AgentId, Command, Engine, JsonText, NewSession, SessionConfig};

#[derive(Clone, Debug)]
enum Op {
    Create(u8),
    Activity(u8, u8),
    SetMeta(u8, u8, u16),
    RemoveMeta(u8, u8),
    Pause(u8),
    Resume(u8),
    End(u8),
    Archive(u8),
    Cleanup(u8),
    Expire,
    Record(u8, bool),
    Save(u8),
    Restore(u8, Option<u8>),
    Decide(u8),
    Link(u8, u8),
    ResetChain(u8),
    Clone(u8, u8),
    Advance(u16),
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0u8..6;
    prop_oneof![
        3 => s.clone().prop_map(Op::Create),
        6 => (s.clone(), any::<u8>()).prop_map(|(a, b)| Op::Activity(a, b)),
        2 => (s.clone(), 0u8..4, any::<u16>()).prop_map(|(a, b, c)| Op::SetMeta(a, b, c)),
        1 => (s.clone(), 0u8..4).prop_map(|(a, b)| Op::RemoveMeta(a, b)),
        1 => s.clone().prop_map(Op::Pause),
        1 => s.clone().prop_map(Op::Resume),
        1 => s.clone().prop_map(Op::End),
        1 => s.clone().prop_map(Op::Archive),
        1 => (0u8..3).prop_map(Op::Cleanup),
        1 => Just(Op::Expire),
        2 => (s.clone(), any::<bool>()).prop_map(|(a, b)| Op::Record(a, b)),
        1 => s.clone().prop_map(Op::Save),
        1 => (s.clone(), proptest::option::of(0u8..3)).prop_map(|(a, b)| Op::Restore(a, b)),
        1 => s.clone().prop_map(Op::Decide),
        1 => (0u8..3, any::<u8>()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => (0u8..3).prop_map(Op::ResetChain),
        1 => (s.clone(), s).prop_map(|(a, b)| Op::Clone(a, b)),
        2 => any::<u16>().prop_map(Op::Advance),
        1 => Just(Op::Snapshot),
    ]
}

fn sid(n: u8) -> session_engine::SessionId {
    id(&format!("s{n}"))
}

fn command(op: &Op) -> Option<Command> {
    Some(match op {
        Op::Create(n) => Command::CreateSession(Box::new(NewSession {
            id: Some(sid(*n)),
            name: Some(format!("session {n}")),
            timeout_secs: 600,
            config: SessionConfig {
                max_retries: u32::from(*n),
                ..SessionConfig::default()
            },
            ..NewSession::default()
        })),
        Op::Activity(n, a) => Command::RecordActivity {
            session: sid(*n),
            action: format!("action-{a}"),
            details: (a % 2 == 0).then(|| JsonText::parse(&format!("{{\"a\":{a}}}")).unwrap()),
        },
        Op::SetMeta(n, k, v) => Command::SetMetadata {
            session: sid(*n),
            key: format!("k{k}"),
            value: JsonText::parse(&v.to_string()).unwrap(),
        },
        Op::RemoveMeta(n, k) => Command::RemoveMetadata {
            session: sid(*n),
            key: format!("k{k}"),
        },
        Op::Pause(n) => Command::Pause(sid(*n)),
        Op::Resume(n) => Command::Resume(sid(*n)),
        Op::End(n) => Command::End(sid(*n)),
        Op::Archive(n) => Command::Archive(sid(*n)),
        Op::Cleanup(d) => Command::CleanupOldSessions {
            max_age_days: u32::from(*d),
        },
        Op::Expire => Command::ExpireIdle,
        Op::Record(n, ok) => Command::RecordCommand {
            session: sid(*n),
            command: "cargo test".into(),
            args: None,
            success: *ok,
            error: (!ok).then(|| "exit 101".to_string()),
            duration_ms: 12,
        },
        Op::Save(n) => Command::SaveCheckpoint {
            session: sid(*n),
            label: None,
        },
        Op::Restore(n, i) => Command::RestoreCheckpoint {
            session: sid(*n),
            index: i.map(u32::from),
        },
        Op::Decide(n) => Command::LogDecision {
            session: sid(*n),
            what: "use the engine".into(),
            why: "crash safety".into(),
            alternatives: Some("json files".into()),
        },
        Op::Link(a, x) => Command::LinkChain {
            agent: AgentId::new(&format!("agent{a}")).unwrap(),
            external_id: format!("ext-{x}"),
            prompt: "p".repeat(usize::from(*x)),
            response: "r".into(),
            metadata: None,
        },
        Op::ResetChain(a) => Command::ResetChain(AgentId::new(&format!("agent{a}")).unwrap()),
        Op::Clone(a, b) => Command::Clone {
            source: sid(*a),
            new_id: Some(id(&format!("c{a}-{b}"))),
        },
        Op::Advance(_) | Op::Snapshot => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn replay_equals_live_state_for_random_command_sequences(ops in proptest::collection::vec(op(), 1..120)) {
        let (m, s) = mem();
        let clock = clock();
        let e = open(&s, &clock);
        let mut accepted = 0u64;
        for op in &ops {
            match op {
                Op::Advance(secs) => clock.advance_secs(u64::from(*secs)),
                Op::Snapshot => { e.snapshot().unwrap(); }
                other => {
                    if e.execute(command(other).unwrap()).is_ok_and(|c| c.appended) {
                        accepted += 1;
                    }
                }
            }
        }
        let live = e.state();
        prop_assert_eq!(live.last_lsn.0, accepted);
        e.close().unwrap();

        // Snapshot (if any) plus tail.
        let e = open(&s, &clock);
        prop_assert_eq!(&*e.state(), &*live);
        e.close().unwrap();

        // Full replay without any snapshot.
        let snaps = std::path::Path::new("data/snapshots");
        if let Ok(names) = session_engine::Storage::list_dir(&*m, snaps) {
            for n in names {
                session_engine::Storage::remove_file(&*m, &snaps.join(n)).unwrap();
            }
        }
        let e = Engine::open("data", options(Arc::clone(&s), &clock)).unwrap();
        prop_assert_eq!(&*e.state(), &*live);
    }
}
