use super::*;
use crate::types::{JsonText, Lsn, SessionId, Timestamp};

/// Takes `room` bytes, then fails every write with a full disk.
struct FullAfter {
    room: usize,
}

impl Write for FullAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left",
            ));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_write_while_encoding_a_state_is_an_io_encode_error_with_its_kind() {
    let st = State::new();
    let mut whole = Vec::new();
    encode_state(&st, &mut whole).unwrap();
    // At the version byte, and inside the encoder's own writes.
    assert!(whole.len() > 2);
    for room in [0, 1, whole.len() - 1] {
        match encode_state(&st, &mut FullAfter { room }) {
            Err(EncodeError::Io(io)) => {
                assert_eq!(io.kind(), std::io::ErrorKind::StorageFull, "room {room}")
            }
            other => panic!("room {room}: {other:?}"),
        }
    }
    assert!(encode_state(&st, &mut FullAfter { room: whole.len() }).is_ok());
}

#[test]
fn events_round_trip() {
    let e = Event {
        at: Timestamp(1_700_000_000_000_000),
        body: EventBody::ActivityRecorded {
            session: SessionId::new("abc").unwrap(),
            action: "user_input".into(),
            details: Some(JsonText::parse(r#"{"message":"Hello"}"#).unwrap()),
        },
    };
    let bytes = event_to_vec(&e).unwrap();
    assert_eq!(
        bytes[0], 1,
        "an event schema 1 holds is written as schema 1"
    );
    assert_eq!(decode_event(&bytes).unwrap(), e);
}

fn adoption() -> Event {
    use crate::event::{AdoptedSession, AmplihackAdoption};
    use crate::state::{AmplihackDocuments, SessionConfig, Status};
    Event {
        at: Timestamp(1_700_000_000_000_000),
        body: EventBody::SessionsAdopted(Box::new(AmplihackAdoption {
            source: ".claude/runtime".into(),
            sessions: vec![AdoptedSession {
                session: SessionId::new("claude_session_1_0a1b2c3d").unwrap(),
                name: "task".into(),
                created_at: Timestamp(1),
                last_activity: Timestamp(2),
                status: Status::Active,
                timeout_secs: 300,
                config: SessionConfig::default(),
                metadata: vec![],
                commands: vec![],
                documents: AmplihackDocuments {
                    file: Some(JsonText::parse(r#"{"saved_at":1.5}"#).unwrap()),
                    archive_ts: None,
                    registry_entry: None,
                    registry_rest: None,
                },
                log: None,
            }],
        })),
    }
}

#[test]
fn adoptions_are_schema_2_and_a_schema_1_payload_may_not_hold_one() {
    let e = adoption();
    let bytes = event_to_vec(&e).unwrap();
    assert_eq!(bytes[0], 2);
    assert_eq!(decode_event(&bytes).unwrap(), e);
    let mut as_1 = bytes.clone();
    as_1[0] = 1;
    let err = decode_event(&as_1).unwrap_err();
    assert!(
        err.to_string()
            .contains("event schema 1 has no sessions_adopted event"),
        "{err}"
    );
    let mut st = State::new();
    st.apply(Lsn(1), &e).unwrap();
    let mut snap = Vec::new();
    encode_state(&st, &mut snap).unwrap();
    assert_eq!(snap[0], 2);
    assert_eq!(decode_state(&snap).unwrap(), st);
    snap[0] = 1;
    assert!(decode_state(&snap).is_err());
    let mut plain = Vec::new();
    encode_state(&State::new(), &mut plain).unwrap();
    assert_eq!(plain[0], 1);
}

#[test]
fn run_events_are_schema_3_and_a_state_with_runs_is_state_schema_3() {
    use crate::run::{Limits, RetryPolicy, RunId, RunSpec, RunStatus, Started, Stream};
    let mut st = State::new();
    let at = Timestamp(1_700_000_000_000_000);
    let create = Event {
        at,
        body: EventBody::ChainReset {
            agent: crate::types::AgentId::new("a").unwrap(),
        },
    };
    st.apply(Lsn(1), &create).unwrap();
    let mut plain = Vec::new();
    encode_state(&st, &mut plain).unwrap();
    assert_eq!(plain[0], 1, "a state without runs stays schema 1");
    let s = adoption();
    st.apply(Lsn(2), &s).unwrap();
    let spec = RunSpec {
        program: "sh".into(),
        args: vec!["-c".into(), "true".into()],
        cwd: None,
        env: vec![("API_TOKEN".into(), "hunter2".into())],
        limits: Limits::default(),
        retry: RetryPolicy::default(),
    };
    let bodies = vec![
        EventBody::RunRequested {
            run: RunId(1),
            session: SessionId::new("claude_session_1_0a1b2c3d").unwrap(),
            spec: Box::new(spec.redacted()),
        },
        EventBody::RunStarted(Box::new(Started {
            run: RunId(1),
            attempt: 1,
            pid: 42,
            pgid: 42,
            start_time: 7,
            boot_id: "b".into(),
        })),
        EventBody::RunOutput {
            run: RunId(1),
            attempt: 1,
            stream: Stream::Stdout,
            offset: 0,
            bytes: vec![0xff; 300],
        },
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        let e = Event { at, body };
        let bytes = event_to_vec(&e).unwrap();
        assert_eq!(bytes[0], 3);
        assert_eq!(decode_event(&bytes).unwrap(), e);
        let mut as_2 = bytes.clone();
        as_2[0] = 2;
        assert!(decode_event(&as_2).is_err(), "schema 2 took a run event");
        if let EventBody::RunOutput { .. } = e.body {
            assert!(
                bytes.len() < 330,
                "bytes are stored one byte each: {}",
                bytes.len()
            );
        }
        if let EventBody::RunOutput { .. } = e.body {
            // Before any output, the state is schema 3.
            let mut snap = Vec::new();
            encode_state(&st, &mut snap).unwrap();
            assert_eq!(snap[0], 3, "a state whose runs never printed is schema 3");
            assert_eq!(decode_state(&snap).unwrap(), st);
            snap[0] = 2;
            assert!(decode_state(&snap).is_err(), "state schema 2 took runs");
        }
        st.apply(Lsn(3 + i as u64), &e).unwrap();
    }
    let run = st.run(RunId(1)).unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.spec.env[0].1, crate::run::REDACTED);
    assert_eq!(run.output_kept, 300);
    assert_eq!(run.last_output_at, Some(at));
    // The last output time is state schema 4's part.
    let mut snap = Vec::new();
    encode_state(&st, &mut snap).unwrap();
    assert_eq!(snap[0], 4);
    let back = decode_state(&snap).unwrap();
    assert_eq!(back, st);
    assert_eq!(back.run(RunId(1)).unwrap().last_output_at, Some(at));
    snap[0] = 3;
    assert!(
        decode_state(&snap).is_err(),
        "state schema 3 took a last output time"
    );
    // A time naming no run is a decode error.
    let mut bad = Vec::new();
    encode_state(&st, &mut bad).unwrap();
    let times =
        bincode::serde::encode_to_vec(vec![(RunId(1), at)], bincode::config::standard()).unwrap();
    let other =
        bincode::serde::encode_to_vec(vec![(RunId(2), at)], bincode::config::standard()).unwrap();
    // After the times come the transcripts and the agents: two empty lists.
    let tail = [0u8, 0u8];
    assert!(bad.ends_with(&tail));
    bad.truncate(bad.len() - tail.len());
    assert!(bad.ends_with(&times));
    bad.truncate(bad.len() - times.len());
    bad.extend_from_slice(&other);
    bad.extend_from_slice(&tail);
    assert!(decode_state(&bad).is_err(), "a time for run 2 was accepted");
}

#[test]
fn run_contained_alone_is_event_schema_4_and_changes_no_state() {
    use crate::run::RunId;
    let e = Event {
        at: Timestamp(7),
        body: EventBody::RunContained {
            run: RunId(1),
            attempt: 1,
            cgroup: Some("/sys/fs/cgroup/x".into()),
            memory_max: false,
            fallback: Some("memory.max is not available".into()),
        },
    };
    let bytes = event_to_vec(&e).unwrap();
    assert_eq!(bytes[0], 4);
    assert_eq!(decode_event(&bytes).unwrap(), e);
    let mut as_3 = bytes.clone();
    as_3[0] = 3;
    let err = decode_event(&as_3).unwrap_err();
    assert!(err.0.contains("schema 4 added it"), "{err:?}");
    // The other run events stay schema 3.
    let exited = EventBody::RunInterrupted {
        run: RunId(1),
        reason: "r".into(),
        cancelled: false,
    };
    assert_eq!(event_schema_of(&exited), 3);
}

#[test]
fn only_a_run_ended_by_memory_is_event_schema_5() {
    use crate::run::{EndedBy, ExitKind, Exited, RunId, Usage};
    let exited = |ended_by| Event {
        at: Timestamp(9),
        body: EventBody::RunExited(Box::new(Exited {
            run: RunId(1),
            attempt: 1,
            exit: ExitKind::Signal(9),
            ended_by,
            duration_ms: 3,
            usage: Usage::default(),
            output_bytes: 0,
            output_dropped: 0,
            retry: false,
        })),
    };
    let memory = exited(Some(EndedBy::Memory));
    let bytes = event_to_vec(&memory).unwrap();
    assert_eq!(bytes[0], 5);
    assert_eq!(decode_event(&bytes).unwrap(), memory);
    let mut as_4 = bytes.clone();
    as_4[0] = 4;
    let err = decode_event(&as_4).unwrap_err();
    assert!(err.0.contains("schema 5 added it"), "{err:?}");
    // Every other end of a run is still schema 3, byte for byte.
    for other in [
        None,
        Some(EndedBy::Cpu),
        Some(EndedBy::Timeout),
        Some(EndedBy::Cancel),
    ] {
        let e = exited(other);
        let b = event_to_vec(&e).unwrap();
        assert_eq!(b[0], 3, "{other:?}");
        assert_eq!(decode_event(&b).unwrap(), e);
    }
}

#[test]
fn garbage_and_unknown_versions_are_errors() {
    assert!(decode_event(&[]).is_err());
    assert!(decode_event(&[9, 1, 2, 3]).is_err());
    assert!(decode_event(&[1, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    let e = Event {
        at: Timestamp(5),
        body: EventBody::ChainReset {
            agent: crate::types::AgentId::new("a").unwrap(),
        },
    };
    let mut bytes = event_to_vec(&e).unwrap();
    bytes.push(0);
    assert!(decode_event(&bytes).is_err(), "trailing byte accepted");
}

/// Found by the `snapshot_file` and `event_payload` fuzz targets: `imbl`'s visitors
/// preallocated the claimed length, and this 11-byte payload (a state whose session
/// map claims ~8.7e18 entries) aborted the process asking for 80 GB. The event case is
/// replayed from `fuzz/regressions/event_payload/` by `tests/fuzz_regressions.rs`.
#[test]
fn a_garbage_collection_length_is_a_decode_error_not_a_huge_allocation() {
    let payload = [
        1, 0x54, 0xfd, 0x00, 0xa1, 0xb1, 0x8b, 0x7b, 0x22, 0x61, 0x78,
    ];
    assert!(decode_state(&payload).is_err());
    // A session whose name claims ~9.3e17 bytes: bincode allocated the string before
    // reading it.
    let mut payload = vec![1, 0, 1, 2, b's', b'1', 2, b's', b'1', 0xfd];
    payload.extend_from_slice(&930_000_000_000_000_000u64.to_le_bytes());
    assert!(decode_state(&payload).is_err());
}

#[test]
fn states_round_trip_through_every_decoding_limit() {
    let mut st = State::new();
    for n in [10usize, 2 << 20] {
        let e = Event {
            at: Timestamp(1),
            body: EventBody::ChainLinked {
                agent: crate::types::AgentId::new(&format!("a{n}")).unwrap(),
                external_id: "x".repeat(n),
                prompt: String::new(),
                response: String::new(),
                metadata: None,
            },
        };
        let lsn = st.last_lsn.next();
        st.apply(lsn, &e).unwrap();
        let mut bytes = Vec::new();
        encode_state(&st, &mut bytes).unwrap();
        assert_eq!(decode_state(&bytes).unwrap(), st);
    }
}

#[test]
fn json_text_serialises_raw_in_json_and_as_a_string_in_bincode() {
    let j = JsonText::parse(r#"{"k":1}"#).unwrap();
    assert_eq!(serde_json::to_string(&j).unwrap(), r#"{"k":1}"#);
    let bytes = bincode::serde::encode_to_vec(&j, bincode::config::standard()).unwrap();
    let (back, _): (JsonText, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!(back, j);
}

#[test]
fn only_a_run_left_recovering_is_event_schema_6() {
    use crate::run::RunId;
    let e = Event {
        at: Timestamp(9),
        body: EventBody::RunRecovering {
            run: RunId(1),
            reason: "it will be repeated".into(),
        },
    };
    let bytes = event_to_vec(&e).unwrap();
    assert_eq!(bytes[0], 6);
    assert_eq!(decode_event(&bytes).unwrap(), e);
    let mut as_5 = bytes.clone();
    as_5[0] = 5;
    let err = decode_event(&as_5).unwrap_err();
    assert!(err.0.contains("schema 6 added it"), "{err:?}");
    // A schema past the newest is refused (schema 7 came after this test was written).
    let mut past = bytes;
    past[0] = NEWEST_EVENT_SCHEMA_VERSION + 1;
    let err = decode_event(&past).unwrap_err();
    assert!(
        err.0
            .contains(&format!("up to {NEWEST_EVENT_SCHEMA_VERSION}")),
        "{err:?}"
    );
}

#[test]
fn details_in_the_log_are_state_schema_5_and_inline_details_encode_as_before() {
    use crate::state::{Activity, Details};
    // `None` and `Inline` are bincode's `Option` tags: what schemas 1 to 4 stored.
    #[derive(serde::Serialize)]
    struct Old {
        action: &'static str,
        timestamp: Timestamp,
        details: Option<JsonText>,
    }
    let text = JsonText::parse(r#"{"k":1}"#).unwrap();
    for (old, new) in [
        (None, Details::None),
        (Some(text.clone()), Details::Inline(text)),
    ] {
        let a = Activity {
            action: "a".into(),
            timestamp: Timestamp(7),
            details: new,
        };
        let o = Old {
            action: "a",
            timestamp: Timestamp(7),
            details: old,
        };
        let cfg = bincode::config::standard();
        let a_bytes = bincode::serde::encode_to_vec(&a, cfg).unwrap();
        assert_eq!(a_bytes, bincode::serde::encode_to_vec(&o, cfg).unwrap());
        let (back, _): (Activity, usize) =
            bincode::serde::decode_from_slice(&a_bytes, cfg).unwrap();
        assert_eq!(back, a);
    }
    // A state whose activity's details are in the log is schema 5, refused as schema 4.
    let mut st = State::new();
    let create = Event {
        at: Timestamp(1),
        body: EventBody::SessionCreated(Box::new(crate::event::SessionCreated {
            session: SessionId::new("s").unwrap(),
            name: "s".into(),
            agent: None,
            working_dir: None,
            timeout_secs: 0,
            config: crate::state::SessionConfig::default(),
            metadata: vec![],
        })),
    };
    st.apply(Lsn(1), &create).unwrap();
    let activity = |details: Option<JsonText>| Event {
        at: Timestamp(2),
        body: EventBody::ActivityRecorded {
            session: SessionId::new("s").unwrap(),
            action: "a".into(),
            details,
        },
    };
    st.apply(Lsn(2), &activity(None)).unwrap();
    let mut plain = Vec::new();
    encode_state(&st, &mut plain).unwrap();
    assert_eq!(plain[0], 1, "no details: no position to keep");
    st.apply(Lsn(3), &activity(Some(JsonText::parse("[1]").unwrap())))
        .unwrap();
    let s = st.session(&SessionId::new("s").unwrap()).unwrap();
    assert_eq!(s.body.activity_log[1].details, Details::InLog(Lsn(3)));
    let mut snap = Vec::new();
    encode_state(&st, &mut snap).unwrap();
    assert_eq!(snap[0], 5);
    assert_eq!(decode_state(&snap).unwrap(), st);
    snap[0] = 4;
    let err = decode_state(&snap).unwrap_err();
    assert!(err.0.contains("details in the log"), "{err:?}");
    // No event may carry a position: a clone's session carries its details.
    let clone = Event {
        at: Timestamp(3),
        body: EventBody::SessionCloned {
            session: SessionId::new("t").unwrap(),
            source: SessionId::new("s").unwrap(),
            data: Box::new((**s).clone()),
        },
    };
    assert!(matches!(
        event_to_vec(&clone),
        Err(EncodeError::Unencodable(_))
    ));
}
