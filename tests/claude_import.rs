//! `claude::import`: Claude Code transcripts imported as events, exported back byte for
//! byte, incrementally and crash-safely (engine on `MemStorage`, transcripts on real
//! files in a temporary folder or the fixtures).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use session_engine::claude::events::{ClaudeEvent, ClaudePiece, PIECE_BYTES};
use session_engine::claude::import::{self, Check, FileImport};
use session_engine::storage::CrashMode;
use session_engine::{Command, Engine, Error, FileStorage, Lsn, SessionId, Storage};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude")
        .join(rel)
}

fn every_fixture() -> Vec<PathBuf> {
    let found = session_engine::claude::find_transcripts(
        &FileStorage::new(),
        &[fixture("real"), fixture("generated")],
    );
    assert!(found.files.len() >= 15, "{:?}", found.files);
    found.files
}

fn exported(engine: &Engine, id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    import::export(engine, &SessionId::new(id).unwrap(), |b| {
        out.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    out
}

fn import(engine: &Engine, path: &Path) -> FileImport {
    import::import_file(engine, &FileStorage::new(), path, Check::Full).unwrap()
}

/// The bytes up to and including the last `\n`.
fn complete_prefix(bytes: &[u8]) -> &[u8] {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &[],
    }
}

#[test]
fn every_fixture_exports_back_byte_for_byte_and_a_second_import_adds_nothing() {
    let (_m, s) = common::mem();
    let clock = common::clock();
    let engine = common::open(&s, &clock);
    let files = every_fixture();
    for f in &files {
        let r = import(&engine, f);
        let original = std::fs::read(f).unwrap();
        assert_eq!(
            exported(&engine, r.session.as_str()),
            complete_prefix(&original),
            "{}",
            f.display()
        );
        assert_eq!(r.imported_to, complete_prefix(&original).len() as u64);
        assert_eq!(
            r.incomplete_bytes as usize,
            original.len() - r.imported_to as usize
        );
    }
    let last = engine.last_lsn();
    for f in &files {
        let r = import(&engine, f);
        assert_eq!(
            (r.bytes, r.lines, r.opened),
            (0, 0, false),
            "{}",
            f.display()
        );
    }
    assert_eq!(engine.last_lsn(), last, "a second import appended events");
    // Every record type, unknown ones included, bad lines kept as bytes.
    let st = engine.state();
    let unknown = st
        .transcript(&SessionId::new("unknown_type").unwrap())
        .unwrap();
    assert_eq!(
        (unknown.lines, unknown.records, unknown.bad_lines),
        (8, 8, 0)
    );
    let bad = st
        .transcript(&SessionId::new("bad_middle").unwrap())
        .unwrap();
    assert_eq!((bad.lines, bad.records, bad.bad_lines), (5, 4, 1));
    let utf8 = import(&engine, &fixture("generated/invalid_utf8.jsonl"));
    assert_eq!(utf8.bad_line_count, 0, "nothing new, nothing reported");
}

#[test]
fn bad_lines_are_reported_by_line_and_kept() {
    let (_m, s) = common::mem();
    let engine = common::open(&s, &common::clock());
    let r = import(&engine, &fixture("generated/bad_middle.jsonl"));
    assert_eq!(r.bad_line_count, 1);
    assert_eq!(r.bad_lines[0].line, 3);
    assert_eq!(r.bad_lines[0].offset, 440);
    assert!(
        r.bad_lines[0].reason.contains("invalid JSON"),
        "{:?}",
        r.bad_lines
    );
    assert_eq!(r.lines, 5);
}

#[test]
fn an_appended_file_imports_only_its_new_complete_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("11111111-2222-4333-8444-555555555555.jsonl");
    let line = |i: u32| {
        format!(
            "{{\"type\":\"user\",\"uuid\":\"u{i}\",\"parentUuid\":{},\"sessionId\":\"s\",\
             \"message\":{{\"content\":\"line {i}\"}}}}\n",
            if i == 0 {
                "null".to_string()
            } else {
                format!("\"u{}\"", i - 1)
            }
        )
    };
    let mut data: Vec<u8> = (0..3).flat_map(|i| line(i).into_bytes()).collect();
    std::fs::write(&path, &data).unwrap();
    let (_m, s) = common::mem();
    let engine = common::open(&s, &common::clock());
    let r = import(&engine, &path);
    assert_eq!((r.lines, r.opened), (3, true));
    // Two more lines and half of a third: the half waits.
    data.extend_from_slice(line(3).as_bytes());
    data.extend_from_slice(line(4).as_bytes());
    let five = line(5);
    data.extend_from_slice(&five.as_bytes()[..10]);
    std::fs::write(&path, &data).unwrap();
    let before = engine.last_lsn();
    let r = import(&engine, &path);
    assert_eq!((r.lines, r.opened, r.incomplete_bytes), (2, false, 10));
    assert_eq!(
        engine.last_lsn().get(),
        before.get() + 2,
        "one event per line"
    );
    data.extend_from_slice(&five.as_bytes()[10..]);
    std::fs::write(&path, &data).unwrap();
    let r = import(&engine, &path);
    assert_eq!((r.lines, r.incomplete_bytes), (1, 0));
    let id = r.session.as_str().to_string();
    assert_eq!(exported(&engine, &id), data);
    let st = engine.state();
    let t = st.transcript(&r.session).unwrap();
    assert_eq!(t.leaf.as_deref(), Some("u5"));
    assert_eq!(t.lines, 6);
}

#[test]
fn a_rewritten_or_truncated_file_becomes_a_new_version_and_the_old_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sess.jsonl");
    let original = b"{\"type\":\"user\",\"uuid\":\"a\"}\n{\"type\":\"assistant\",\"uuid\":\"b\"}\n";
    std::fs::write(&path, original).unwrap();
    let (_m, s) = common::mem();
    let engine = common::open(&s, &common::clock());
    import(&engine, &path);
    // Same length, one byte changed in the first line.
    let mut changed = original.to_vec();
    changed[21] = b'x';
    std::fs::write(&path, &changed).unwrap();
    let r = import(&engine, &path);
    assert_eq!(r.session.as_str(), "sess.v2");
    assert_eq!(r.replaces.as_ref().map(|s| s.as_str()), Some("sess"));
    assert!(
        r.new_version.as_deref().unwrap().contains("rewritten"),
        "{r:?}"
    );
    assert_eq!(
        exported(&engine, "sess"),
        original,
        "the first version stays"
    );
    assert_eq!(exported(&engine, "sess.v2"), changed);
    // Truncated: a third version.
    std::fs::write(&path, &changed[..27]).unwrap();
    let r = import(&engine, &path);
    assert_eq!(r.session.as_str(), "sess.v3");
    assert!(
        r.new_version.as_deref().unwrap().contains("truncated"),
        "{r:?}"
    );
    assert_eq!(exported(&engine, "sess.v3"), &changed[..27]);
    // Appending to the newest version goes on in it.
    let mut more = changed[..27].to_vec();
    more.extend_from_slice(b"{\"type\":\"user\"}\n");
    std::fs::write(&path, &more).unwrap();
    let r = import(&engine, &path);
    assert_eq!(
        (r.session.as_str(), r.lines, r.new_version.is_none()),
        ("sess.v3", 1, true)
    );
    let st = engine.state();
    let links = st.transcript_links(&SessionId::new("sess.v3").unwrap());
    assert_eq!(links[0].kind, "replaces");
    assert_eq!(links[0].session.as_ref().unwrap().as_str(), "sess.v2");
}

#[test]
fn the_quick_check_sees_a_changed_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.jsonl");
    std::fs::write(&path, b"{\"a\":1}\n{\"b\":2}\n").unwrap();
    let (_m, s) = common::mem();
    let engine = common::open(&s, &common::clock());
    import(&engine, &path);
    std::fs::write(&path, b"{\"a\":1}\n{\"b\":3}\n{\"c\":4}\n").unwrap();
    let r = import::import_file(&engine, &FileStorage::new(), &path, Check::Quick).unwrap();
    assert_eq!(r.session.as_str(), "q.v2");
}

#[test]
fn a_line_longer_than_a_piece_is_cut_and_exported_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.jsonl");
    let mut data =
        b"{\"type\":\"user\",\"uuid\":\"a\"}\n{\"type\":\"assistant\",\"text\":\"".to_vec();
    data.resize(data.len() + 2 * PIECE_BYTES + 100, b'z');
    data.extend_from_slice(b"\"}\n{\"type\":\"user\",\"uuid\":\"c\"}\n");
    std::fs::write(&path, &data).unwrap();
    let (_m, s) = common::mem();
    let mut o = common::options(Arc::clone(&s), &common::clock());
    o.segment_bytes = 32 << 20;
    let engine = Engine::open("data", o).unwrap();
    let r = import(&engine, &path);
    assert_eq!(r.lines, 3);
    assert_eq!(r.bad_line_count, 1, "too long to parse: {r:?}");
    assert_eq!(r.bad_lines[0].line, 2);
    assert_eq!(exported(&engine, "long"), data);
    let t = engine.state().transcript(&r.session).unwrap().clone();
    assert_eq!((t.lines, t.pieces, t.records), (3, 5, 2));
}

#[test]
fn a_piece_that_does_not_continue_its_transcript_is_refused_and_changes_nothing() {
    let (_m, s) = common::mem();
    let engine = common::open(&s, &common::clock());
    let r = import(&engine, &fixture("generated/streamed.jsonl"));
    let last = engine.last_lsn();
    for offset in [0, r.imported_to - 1, r.imported_to + 1] {
        let piece = ClaudePiece {
            session: r.session.clone(),
            offset,
            bytes: b"{}\n".to_vec(),
            refs: None,
            problem: None,
        };
        let e = engine
            .execute(Command::Claude(Box::new(ClaudeEvent::Piece(Box::new(
                piece,
            )))))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidState { .. }), "{e}");
    }
    assert_eq!(engine.last_lsn(), last);
}

#[test]
fn links_follow_resumed_sessions_summaries_compactions_and_subagents() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("-home-dev-proj");
    std::fs::create_dir_all(project.join("aaaa/subagents")).unwrap();
    let w = |rel: &str, lines: &[&str]| {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(project.join(rel), text).unwrap();
    };
    w(
        "aaaa.jsonl",
        &[
            r#"{"type":"user","uuid":"a1","parentUuid":null,"sessionId":"aaaa","cwd":"/home/dev/proj"}"#,
            r#"{"type":"assistant","uuid":"a2","parentUuid":"a1","sessionId":"aaaa"}"#,
            r#"{"type":"user","uuid":"a3","parentUuid":"a1","sessionId":"aaaa"}"#,
        ],
    );
    // Resumed: continues a2, titled by a summary of a3, compacted from a2.
    w(
        "bbbb.jsonl",
        &[
            r#"{"type":"summary","summary":"t","leafUuid":"a3"}"#,
            r#"{"type":"user","uuid":"b1","parentUuid":"a2","sessionId":"bbbb"}"#,
            r#"{"type":"system","subtype":"compact_boundary","uuid":"b2","parentUuid":null,"logicalParentUuid":"a2","sessionId":"bbbb"}"#,
            r#"{"type":"user","uuid":"b3","parentUuid":"b2","sessionId":"aaaa"}"#,
        ],
    );
    w(
        "agent-x1.jsonl",
        &[r#"{"type":"user","uuid":"x","parentUuid":null,"sessionId":"aaaa","isSidechain":true}"#],
    );
    w(
        "aaaa/subagents/agent-y2.jsonl",
        &[r#"{"type":"user","uuid":"y","parentUuid":null,"sessionId":"aaaa","isSidechain":true}"#],
    );
    let (_m, s) = common::mem();
    let engine = common::open(&s, &common::clock());
    let run = import::import_paths(&engine, &FileStorage::new(), &[dir.path().to_path_buf()]);
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_eq!(run.files.len(), 4);
    let st = engine.state();
    let links = |id: &str| {
        st.transcript_links(&SessionId::new(id).unwrap())
            .into_iter()
            .map(|l| (l.kind, l.target, l.session.map(|s| s.to_string())))
            .collect::<Vec<_>>()
    };
    let a = Some("aaaa".to_string());
    assert_eq!(
        links("bbbb"),
        vec![
            ("summary_leaf", "a3".into(), a.clone()),
            ("parent", "a2".into(), a.clone()),
            ("logical_parent", "a2".into(), a.clone()),
            ("session_id", "aaaa".into(), a.clone()),
        ]
    );
    assert_eq!(
        links("agent-x1"),
        vec![("subagent_of", "aaaa".into(), a.clone())]
    );
    assert_eq!(
        links("aaaa.agent-y2"),
        vec![("subagent_of", "aaaa".into(), a.clone())]
    );
    assert!(links("aaaa").is_empty());
    let t = st.transcript(&SessionId::new("aaaa").unwrap()).unwrap();
    assert_eq!(t.branch_points, 1, "a1 has two children (a rewind)");
    assert_eq!(t.leaf.as_deref(), Some("a3"), "the leaf the file ends on");
    assert_eq!(t.opened.cwd.as_deref(), Some("/home/dev/proj"));
    let session = st.session(&SessionId::new("aaaa").unwrap()).unwrap();
    assert_eq!(session.working_dir.as_deref(), Some("/home/dev/proj"));
}

#[test]
fn transcripts_survive_a_snapshot_and_a_power_cut_without_loss_or_duplicates() {
    let files = every_fixture();
    let (m, s) = common::mem();
    let clock = common::clock();
    let engine = common::open(&s, &clock);
    for f in &files[..files.len() / 2] {
        import(&engine, f);
    }
    engine.snapshot().unwrap();
    let half = engine.last_lsn();
    for f in &files[files.len() / 2..] {
        import(&engine, f);
    }
    let full = engine.state();
    // After a power cut at any point, the next import completes what is missing.
    for seed in 0..6u64 {
        let image: Arc<dyn Storage> = Arc::new(m.crash(seed, CrashMode::ThreeParts));
        let reopened = common::open(&image, &clock);
        assert!(reopened.last_lsn() >= half, "a durable record was lost");
        for f in &files {
            import(&reopened, f);
        }
        let st = reopened.state();
        assert_eq!(st.claude.len(), full.claude.len());
        for (id, t) in full.claude.iter() {
            assert_eq!(st.transcript(id).unwrap().hash, t.hash, "{id}");
            assert_eq!(
                exported(&reopened, id.as_str()),
                exported(&engine, id.as_str())
            );
        }
        reopened.close().unwrap();
    }
    engine.close().unwrap();
    // And it all replays from the snapshot and the log.
    let again = common::open(&s, &clock);
    assert_eq!(again.state().claude, full.claude);
    assert!(again.last_lsn() > Lsn(0));
}

#[test]
fn session_ids_follow_claude_codes_layout() {
    let id = |p: &str| {
        let (id, layout, parent) = import::session_id_for(Path::new(p)).unwrap();
        (id.to_string(), format!("{layout:?}"), parent)
    };
    assert_eq!(
        id("/p/-home-a/0d3b22c1-ba90.jsonl"),
        ("0d3b22c1-ba90".into(), "Session".into(), None)
    );
    assert_eq!(
        id("/p/-home-a/agent-a43.jsonl"),
        ("agent-a43".into(), "AgentBeside".into(), None)
    );
    assert_eq!(
        id("/p/-home-a/ae4a/subagents/agent-b1.jsonl"),
        (
            "ae4a.agent-b1".into(),
            "AgentNested".into(),
            Some("ae4a".into())
        )
    );
    assert!(import::session_id_for(Path::new("/p/x/.hidden.jsonl")).is_err());
    assert!(import::session_id_for(Path::new("/p/x/a b.jsonl")).is_err());
}

#[test]
fn only_transcript_events_and_states_with_transcripts_use_schema_4() {
    use session_engine::codec;
    let (_m, s) = common::mem();
    let engine = common::open(&s, &common::clock());
    common::create(&engine, "plain");
    let plain_state = engine.state();
    let mut bytes = Vec::new();
    codec::encode_state(&plain_state, &mut bytes).unwrap();
    assert_eq!(
        bytes[0], 1,
        "a state without transcripts is written as before"
    );
    import(&engine, &fixture("generated/summary.jsonl"));
    let mut schemas = Vec::new();
    engine
        .read_log(Lsn(1), engine.last_lsn(), |_, e| {
            let payload = codec::event_to_vec(&e).unwrap();
            assert_eq!(codec::decode_event(&payload).unwrap(), e);
            schemas.push((e.body.type_name(), payload[0]));
            Ok(true)
        })
        .unwrap();
    assert_eq!(schemas[0], ("session_created", 1));
    assert_eq!(schemas[1], ("claude_opened", 4));
    assert!(
        schemas[2..].iter().all(|s| *s == ("claude_piece", 4)),
        "{schemas:?}"
    );
    // A schema 3 payload holding a transcript event is refused, not misread.
    let mut payload = Vec::new();
    engine
        .read_log(Lsn(2), Lsn(2), |_, e| {
            payload = codec::event_to_vec(&e).unwrap();
            Ok(true)
        })
        .unwrap();
    payload[0] = 3;
    assert!(codec::decode_event(&payload).is_err());
    let st = engine.state();
    let mut bytes = Vec::new();
    codec::encode_state(&st, &mut bytes).unwrap();
    assert_eq!(bytes[0], 4);
    let back = codec::decode_state(&bytes).unwrap();
    assert_eq!(back.claude, st.claude);
    bytes[0] = 3;
    assert!(
        codec::decode_state(&bytes).is_err(),
        "schema 3 has no transcripts"
    );
}

#[test]
fn a_transcript_session_exports_as_a_bundle_and_imports_again_under_a_new_id() {
    let (_m, s) = common::mem();
    let clock = common::clock();
    let manager =
        session_engine::SessionManager::open("data", common::manager_options(&s, &clock)).unwrap();
    let r = import(manager.engine(), &fixture("generated/streamed.jsonl"));
    let bundle = manager.export_bundle(r.session.as_str()).unwrap();
    let copy = manager.import_bundle(bundle).unwrap();
    let new_id = copy.session_id().clone();
    assert_ne!(
        new_id, r.session,
        "the id is taken, so the copy gets a new one"
    );
    let st = manager.state();
    let t = st.transcript(&new_id).unwrap();
    assert_eq!(t.hash, st.transcript(&r.session).unwrap().hash);
    assert!(
        exported(manager.engine(), new_id.as_str())
            == std::fs::read(fixture("generated/streamed.jsonl")).unwrap(),
        "the copy does not export the transcript"
    );
    manager.close().unwrap();
}
