//! Claude Code transcripts, what `claude import` does past the bytes: search across the
//! imported sessions, resumed sessions linked into seed 003 chains, `claude follow`
//! seeing a rewrite that does not grow the file, and the protocol's transcript ops.
#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use session_engine::claude::import::{self, Follower};
use session_engine::claude::search::{self, SearchQuery};
use session_engine::protocol::{self, Request};
use session_engine::storage::{FileKind, FileStat, LockGuard, OpenMode, StorageFile};
use session_engine::{AgentId, Engine, FileStorage, SessionId, Storage};

fn write(path: &Path, lines: &[&str]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn engine() -> (std::sync::Arc<session_engine::MemStorage>, Engine) {
    let (m, s) = common::mem();
    let e = common::open(&s, &common::clock());
    (m, e)
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude")
        .join(rel)
}

/// A project of two sessions, the second resumed from the first, and a third resuming
/// the second; plus a subagent and an unrelated session.
fn resumed_project(root: &Path) -> PathBuf {
    let p = root.join("-home-dev-proj");
    write(
        &p.join("aaaa.jsonl"),
        &[
            r#"{"type":"user","uuid":"a1","parentUuid":null,"sessionId":"aaaa","cwd":"/home/dev/proj","timestamp":"2026-01-01T10:00:00Z","message":{"role":"user","content":"Find the Flaky TEST in ci.yml"}}"#,
            r#"{"type":"assistant","uuid":"a2","parentUuid":"a1","sessionId":"aaaa","timestamp":"2026-01-01T10:00:05Z","message":{"id":"m1","role":"assistant","content":[{"type":"text","text":"The flaky test is test_login."},{"type":"tool_use","id":"flaky-id","name":"Read","input":{"file_path":"/home/dev/proj/ci.yml"}}]}}"#,
        ],
    );
    // Resumed: copies nothing, its first record continues a2 (another file's record).
    write(
        &p.join("bbbb.jsonl"),
        &[
            r#"{"type":"summary","summary":"Flaky test hunt","leafUuid":"a2"}"#,
            r#"{"type":"user","uuid":"b1","parentUuid":"a2","sessionId":"bbbb","cwd":"/home/dev/proj","timestamp":"2026-01-02T09:00:00Z","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"Über 3 failures in tëst_login"}]}}"#,
        ],
    );
    // Resumed again, its history copied with the earlier session id (no parentUuid out).
    write(
        &p.join("cccc.jsonl"),
        &[
            r#"{"type":"user","uuid":"c0","parentUuid":null,"sessionId":"bbbb","cwd":"/home/dev/proj","timestamp":"2026-01-03T09:00:00Z","message":{"role":"user","content":"copied"}}"#,
            r#"{"type":"user","uuid":"c1","parentUuid":"c0","sessionId":"cccc","timestamp":"2026-01-03T09:00:01Z","message":{"role":"user","content":"go on"}}"#,
        ],
    );
    write(
        &p.join("aaaa/subagents/agent-s1.jsonl"),
        &[
            r#"{"type":"user","uuid":"s1","parentUuid":"a2","sessionId":"aaaa","isSidechain":true,"timestamp":"2026-01-01T10:01:00Z","message":{"role":"user","content":"flaky subagent"}}"#,
        ],
    );
    write(
        &root.join("-home-dev-other/dddd.jsonl"),
        &[
            r#"{"type":"user","uuid":"d1","parentUuid":null,"sessionId":"dddd","cwd":"/home/dev/other","timestamp":"2026-01-04T09:00:00Z","message":{"role":"user","content":"flaky elsewhere"}}"#,
        ],
    );
    root.to_path_buf()
}

fn q(text: &str) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        ..SearchQuery::default()
    }
}

fn hits(engine: &Engine, query: &SearchQuery) -> Vec<(String, u64, Option<String>)> {
    search::search(engine, query)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| (h.session.to_string(), h.line, h.uuid))
        .collect()
}

#[test]
fn search_finds_words_in_every_session_case_insensitively_ranked() {
    let dir = tempfile::tempdir().unwrap();
    let root = resumed_project(dir.path());
    let (_m, engine) = engine();
    let run = import::import_paths(&engine, &FileStorage::new(), &[root]);
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    let r = search::search(&engine, &q("FLAKY")).unwrap();
    // a1 (prompt), a2 (answer), bbbb's summary, s1, d1; not the tool_use id "flaky-id".
    assert_eq!(r.total, 5, "{:#?}", r.hits);
    let got: Vec<_> = r
        .hits
        .iter()
        .map(|h| (h.session.as_str(), h.line, h.kind.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("dddd", 1, Some("user")),
            ("aaaa.agent-s1", 1, Some("user")),
            ("bbbb", 1, Some("summary")),
            ("aaaa", 1, Some("user")),
            ("aaaa", 2, Some("assistant")),
        ],
        "best first (bm25: the shorter text ranks higher), ties newest first"
    );
    assert!(r.hits.windows(2).all(|p| p[0].score >= p[1].score));
    assert!(r.hits[0].score > r.hits[4].score);
    let a2 = &r.hits[4];
    assert_eq!(a2.uuid.as_deref(), Some("a2"));
    assert_eq!(a2.claude_session.as_deref(), Some("aaaa"));
    assert_eq!(
        a2.timestamp.unwrap().to_iso8601_micros(),
        "2026-01-01T10:00:05.000000Z"
    );
    // FTS5's snippet of the record's text (its strings, whitespace runs one space).
    assert_eq!(
        a2.snippet,
        "The flaky test is test_login. Read /home/dev/proj/ci.yml"
    );
    // Non-ASCII, folded: "über" finds "Über"; a tool result is text.
    assert_eq!(
        hits(&engine, &q("über 3")),
        vec![("bbbb".into(), 2, Some("b1".into()))]
    );
    // Diacritics are folded too: "tëst_login" and "test_login".
    assert_eq!(hits(&engine, &q("TËST_LOGIN")).len(), 2);
    // Keys, ids and paths inside non-text fields are not text.
    assert!(hits(&engine, &q("parentUuid")).is_empty());
    assert!(hits(&engine, &q("flaky-id")).is_empty());
    // A query with characters JSON escapes is matched on the parsed text.
    assert_eq!(hits(&engine, &q("proj/ci.yml")).len(), 1, "tool input");
}

#[test]
fn search_filters_by_project_session_type_since_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let root = resumed_project(dir.path());
    let (_m, engine) = engine();
    import::import_paths(&engine, &FileStorage::new(), &[root]);
    let with = |f: &dyn Fn(&mut SearchQuery)| {
        let mut query = q("flaky");
        f(&mut query);
        hits(&engine, &query)
            .into_iter()
            .map(|(s, l, _)| format!("{s}:{l}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        with(&|x| x.project = Some("/home/dev/other".into())),
        ["dddd:1"]
    );
    assert_eq!(
        with(&|x| x.project = Some("-home-dev-other".into())),
        ["dddd:1"],
        "the folder name works as the cwd"
    );
    assert_eq!(
        with(&|x| x.session = Some("aaaa".into())),
        ["aaaa.agent-s1:1", "aaaa:1", "aaaa:2"],
        "a Claude Code session id takes its subagents"
    );
    assert_eq!(
        with(&|x| x.session = Some("aaaa.agent-s1".into())),
        ["aaaa.agent-s1:1"]
    );
    assert_eq!(
        with(&|x| x.kinds = vec!["assistant".into(), "summary".into()]),
        ["bbbb:1", "aaaa:2"]
    );
    assert_eq!(
        with(&|x| x.since = Some(search::parse_since("2026-01-01T10:00:30Z").unwrap())),
        ["dddd:1", "aaaa.agent-s1:1"],
        "a record without timestamp is not since anything"
    );
    assert_eq!(
        with(&|x| x.limit = 2),
        ["dddd:1", "aaaa.agent-s1:1"],
        "the best two"
    );
    let r = search::search(
        &engine,
        &SearchQuery {
            limit: 1,
            ..q("flaky")
        },
    )
    .unwrap();
    assert_eq!((r.hits.len(), r.total), (1, 5));
    assert!(search::search(&engine, &q("  ")).is_err(), "empty query");
    assert!(search::parse_since("yesterday").is_err());
    assert_eq!(
        search::parse_since("2026-01-05").unwrap().to_iso8601(),
        "2026-01-05T00:00:00Z"
    );
}

#[test]
fn search_reads_the_real_fixtures_and_agrees_with_a_plain_scan() {
    // Every line of the real transcripts, searched through the index, agrees with parsing
    // every line and looking for the word.
    let (_m, engine) = engine();
    import::import_paths(&engine, &FileStorage::new(), &[fixture("real")]);
    let mut matched = 0;
    for word in ["the", "README", "error", "test", "fn ", "claude"] {
        let r = search::search(
            &engine,
            &SearchQuery {
                limit: 100_000,
                ..q(word)
            },
        )
        .unwrap();
        // A record matches when a text string holds the word: counted with serde_json.
        let mut expected = 0u64;
        let found =
            session_engine::claude::find_transcripts(&FileStorage::new(), &[fixture("real")]);
        for f in found.files {
            for line in std::fs::read_to_string(&f).unwrap().lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let mut texts = Vec::new();
                collect(v.pointer("/message/content"), &mut texts);
                collect(v.get("summary"), &mut texts);
                collect(v.get("content"), &mut texts);
                // A word of the text: a run of letters and digits, case folded.
                let w = word.trim().to_lowercase();
                if texts.iter().any(|t| {
                    t.split(|c: char| !c.is_alphanumeric())
                        .any(|x| x.to_lowercase() == w)
                }) {
                    expected += 1;
                }
            }
        }
        assert_eq!(r.total, expected, "{word:?}");
        assert!(
            r.hits.windows(2).all(|p| p[0].score >= p[1].score),
            "best first"
        );
        matched += expected;
    }
    assert!(matched > 100, "the words are in the fixtures: {matched}");
}

fn collect(v: Option<&serde_json::Value>, out: &mut Vec<String>) {
    match v {
        Some(serde_json::Value::String(s)) => out.push(s.clone()),
        Some(serde_json::Value::Array(a)) => a.iter().for_each(|x| collect(Some(x), out)),
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .filter(|(k, _)| {
                ![
                    "type",
                    "id",
                    "tool_use_id",
                    "signature",
                    "media_type",
                    "source",
                ]
                .contains(&k.as_str())
            })
            .for_each(|(_, x)| collect(Some(x), out)),
        _ => {}
    }
}

fn chain(engine: &Engine, agent: &str) -> Vec<String> {
    engine
        .state()
        .chain(&AgentId::new(agent).unwrap())
        .map(|c| {
            c.sessions
                .iter()
                .map(|l| l.session_id.to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn resumed_sessions_become_chain_links_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = resumed_project(dir.path());
    let (m, engine) = engine();
    let run = import::import_paths(&engine, &FileStorage::new(), std::slice::from_ref(&root));
    assert!(run.chain_error.is_none(), "{:?}", run.chain_error);
    assert_eq!(
        chain(&engine, "claude-aaaa"),
        ["aaaa", "bbbb", "cccc"],
        "bbbb continues a2 of aaaa; cccc's copied records are of bbbb"
    );
    assert_eq!(run.chained.len(), 3);
    assert_eq!(run.chained[1].continues.as_deref(), Some("aaaa"));
    assert_eq!(
        run.chained[2].transcript.as_ref().map(|s| s.as_str()),
        Some("cccc")
    );
    let st = engine.state();
    let c = st.chain(&AgentId::new("claude-aaaa").unwrap()).unwrap();
    assert_eq!(c.current_session_id.as_deref(), Some("cccc"));
    assert_eq!(c.interaction_count, 3);
    let meta: serde_json::Value =
        serde_json::from_str(c.sessions[1].metadata.as_ref().unwrap().as_str()).unwrap();
    assert_eq!(meta["continues"], "aaaa");
    assert_eq!(meta["transcript"], "bbbb");
    assert!(
        st.chains.len() == 1,
        "dddd and the subagent are no resumed sessions"
    );
    drop(st);
    // Importing again, and a new line, links nothing twice.
    let lsn = engine.last_lsn();
    let again = import::import_paths(&engine, &FileStorage::new(), std::slice::from_ref(&root));
    assert!(again.chained.is_empty());
    assert_eq!(engine.last_lsn(), lsn, "nothing new, nothing written");
    let p = root.join("-home-dev-proj/cccc.jsonl");
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str(r#"{"type":"user","uuid":"c2","parentUuid":"c1","sessionId":"cccc"}"#);
    text.push('\n');
    std::fs::write(&p, text).unwrap();
    let more = import::import_paths(&engine, &FileStorage::new(), std::slice::from_ref(&root));
    assert!(more.chained.is_empty());
    assert_eq!(chain(&engine, "claude-aaaa"), ["aaaa", "bbbb", "cccc"]);
    // The links replay from the log as ChainLinked events.
    let (m2, s2) = common::killed(&m, engine);
    let _ = m2;
    let reopened = common::open(&s2, &common::clock());
    assert_eq!(chain(&reopened, "claude-aaaa"), ["aaaa", "bbbb", "cccc"]);
}

#[test]
fn a_resumed_session_joins_the_chain_that_already_holds_the_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = resumed_project(dir.path());
    let (_m, engine) = engine();
    // An agent ran aaaa through `exec --claude` (or `chain --link`) before the import.
    engine
        .execute(session_engine::Command::LinkChain {
            agent: AgentId::new("architect").unwrap(),
            external_id: "aaaa".into(),
            prompt: "p".into(),
            response: "r".into(),
            metadata: None,
        })
        .unwrap();
    let run = import::import_paths(
        &engine,
        &FileStorage::new(),
        &[
            root.join("-home-dev-proj/aaaa.jsonl"),
            root.join("-home-dev-proj/bbbb.jsonl"),
        ],
    );
    assert!(run.chain_error.is_none());
    assert_eq!(chain(&engine, "architect"), ["aaaa", "bbbb"]);
    assert!(
        engine
            .state()
            .chain(&AgentId::new("claude-aaaa").unwrap())
            .is_none()
    );
}

#[test]
fn a_first_session_whose_transcript_is_gone_still_starts_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let root = resumed_project(dir.path());
    let (_m, engine) = engine();
    // cccc alone: its copied records name bbbb, whose file is not imported.
    let run = import::import_paths(
        &engine,
        &FileStorage::new(),
        &[root.join("-home-dev-proj/cccc.jsonl")],
    );
    assert_eq!(chain(&engine, "claude-bbbb"), ["bbbb", "cccc"]);
    assert_eq!(run.chained[0].transcript, None);
}

/// A file system whose stat versions can be frozen: what a write in the same tick of
/// the clock as the stat before it looks like (the modification time does not move).
#[derive(Debug, Default)]
struct Frozen {
    fs: FileStorage,
    freeze: AtomicBool,
    versions: std::sync::Mutex<std::collections::HashMap<PathBuf, Option<u64>>>,
}

impl Storage for Frozen {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        self.fs.create_dir_all(p)
    }
    fn list_dir(&self, p: &Path) -> io::Result<Vec<String>> {
        self.fs.list_dir(p)
    }
    fn exists(&self, p: &Path) -> io::Result<bool> {
        self.fs.exists(p)
    }
    fn kind(&self, p: &Path) -> io::Result<Option<FileKind>> {
        self.fs.kind(p)
    }
    fn kind_following(&self, p: &Path) -> io::Result<Option<FileKind>> {
        self.fs.kind_following(p)
    }
    fn open(&self, p: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        self.fs.open(p, mode)
    }
    fn read(&self, p: &Path) -> io::Result<session_engine::storage::Bytes> {
        self.fs.read(p)
    }
    fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.fs.rename(a, b)
    }
    fn rename_noreplace(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.fs.rename_noreplace(a, b)
    }
    fn remove_file(&self, p: &Path) -> io::Result<()> {
        self.fs.remove_file(p)
    }
    fn sync_dir(&self, p: &Path) -> io::Result<()> {
        self.fs.sync_dir(p)
    }
    fn sync_fs(&self, p: &Path) -> io::Result<()> {
        self.fs.sync_fs(p)
    }
    fn try_lock(&self, p: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.fs.try_lock(p)
    }
    fn drop_cached(&self, p: &Path, range: std::ops::Range<u64>) -> io::Result<()> {
        self.fs.drop_cached(p, range)
    }
    fn stat(&self, p: &Path) -> io::Result<Option<FileStat>> {
        let mut s = self.fs.stat(p)?;
        let mut versions = self.versions.lock().unwrap();
        if let Some(s) = &mut s {
            if self.freeze.load(Ordering::SeqCst) {
                if let Some(v) = versions.get(p) {
                    s.version = *v;
                }
            } else {
                versions.insert(p.to_path_buf(), s.version);
            }
        }
        Ok(s)
    }
}

/// The same length, the same last line, one byte of the first line changed.
fn rewrite_keeping_length_and_last_line(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.iter().position(|&b| b == b'1').unwrap();
    bytes[i] = b'9';
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn follow_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("ffff.jsonl");
    write(
        &path,
        &[
            r#"{"type":"user","uuid":"f1","sessionId":"ffff"}"#,
            r#"{"type":"assistant","uuid":"f2","parentUuid":"f1","sessionId":"ffff"}"#,
        ],
    );
    path
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

#[test]
fn follow_sees_a_rewrite_of_the_same_length_with_the_same_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = follow_fixture(dir.path());
    let (_m, engine) = engine();
    let fs = FileStorage::new();
    let mut f = Follower::with_settle(std::time::Duration::ZERO);
    let paths = [dir.path().to_path_buf()];
    f.poll(&engine, &fs, &paths);
    // Whether or not the stat version moved (the rewrite may fall in the same tick of
    // the file system's clock), the rewrite is seen.
    let rewritten = rewrite_keeping_length_and_last_line(&path);
    let run = f.poll(&engine, &fs, &paths);
    assert_eq!(run.files.len(), 1);
    assert_eq!(
        run.files[0].session.as_str(),
        "ffff.v2",
        "{:?}",
        run.files[0]
    );
    assert!(run.files[0].new_version.is_some());
    assert_eq!(exported(&engine, "ffff.v2"), rewritten);
}

#[test]
fn follow_sees_a_rewrite_in_the_same_tick_as_the_import_before_it_then_settles() {
    let dir = tempfile::tempdir().unwrap();
    let path = follow_fixture(dir.path());
    let (_m, engine) = engine();
    let fs = Frozen::default();
    let mut f = Follower::with_settle(std::time::Duration::ZERO);
    let paths = [dir.path().to_path_buf()];
    f.poll(&engine, &fs, &paths);
    // Rewritten right after the import's stat: the stat version stays the same.
    fs.freeze.store(true, Ordering::SeqCst);
    let rewritten = rewrite_keeping_length_and_last_line(&path);
    let run = f.poll(&engine, &fs, &paths);
    assert_eq!(run.files.len(), 1);
    assert_eq!(run.files[0].session.as_str(), "ffff.v2");
    assert_eq!(exported(&engine, "ffff.v2"), rewritten);
    // One more full look finds nothing new; then the quiet file is skipped unread.
    let run = f.poll(&engine, &fs, &paths);
    assert_eq!((run.files.len(), run.files[0].bytes), (1, 0));
    assert!(f.poll(&engine, &fs, &paths).files.is_empty());
}

#[test]
fn follow_waits_for_the_settle_time_before_trusting_an_unchanged_stat() {
    let dir = tempfile::tempdir().unwrap();
    follow_fixture(dir.path());
    let (_m, engine) = engine();
    let fs = Frozen::default();
    let mut f = Follower::with_settle(std::time::Duration::from_secs(3600));
    let paths = [dir.path().to_path_buf()];
    assert_eq!(f.poll(&engine, &fs, &paths).files.len(), 1);
    // Unchanged and not yet settled: not read again before the hour is up.
    assert!(f.poll(&engine, &fs, &paths).files.is_empty());
}

#[test]
fn protocol_transcript_ops_import_show_and_search() {
    let dir = tempfile::tempdir().unwrap();
    let root = resumed_project(dir.path());
    let manager = common::Backend::mem().open(&common::clock());
    let answer = |line: &str| -> serde_json::Value {
        match protocol::parse_request(line) {
            Ok(req @ Request::Claude(_)) => protocol::answer_run_op(&manager, &req),
            Ok(other) => panic!("{line}: {other:?}"),
            Err(e) => protocol::answer_err(&e),
        }
    };
    let line = serde_json::json!({"op": "claude_import", "paths": [root.to_string_lossy()]});
    let a = answer(&line.to_string());
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["files"].as_array().unwrap().len(), 5);
    assert_eq!(a["chained"].as_array().unwrap().len(), 3);
    let a = answer(r#"{"op":"claude_show","id":"bbbb"}"#);
    assert_eq!(a["transcript"]["continues"], "aaaa", "{a}");
    assert_eq!(a["transcript"]["lines"], 2);
    let a = answer(r#"{"op":"claude_search","query":"FLAKY","type":["assistant"],"limit":5}"#);
    assert_eq!(a["total"], 1, "{a}");
    assert_eq!(a["hits"][0]["uuid"], "a2");
    assert_eq!(a["hits"][0]["type"], "assistant");
    assert!(a["hits"][0]["score"].as_f64().unwrap() > 0.0, "{a}");
    assert_eq!(a["hits"][0]["line"], 2);
    assert_eq!(a["hits"][0]["timestamp"], "2026-01-01T10:00:05.000000Z");
    // Bad lines: typed errors, nothing done.
    for bad in [
        r#"{"op":"claude_search"}"#,
        r#"{"op":"claude_search","query":"x","limit":0}"#,
        r#"{"op":"claude_search","query":"x","since":"soon"}"#,
        r#"{"op":"claude_search","query":"x","typo":1}"#,
        r#"{"op":"claude_import"}"#,
        r#"{"op":"claude_import","paths":[1]}"#,
        r#"{"op":"claude_show"}"#,
    ] {
        let a = answer(bad);
        assert_eq!(a["kind"], "invalid_input", "{bad}: {a}");
    }
    assert_eq!(
        answer(r#"{"op":"claude_show","id":"nope"}"#)["kind"],
        "not_found"
    );
    assert!(protocol::parse_line(r#"{"op":"claude_show","id":"bbbb"}"#).is_err());
    manager.close().unwrap();
}

/// `claude_validate`, `claude_info`, `claude_export` and `chain_summary` through the
/// protocol: the answers are what the CLI's `--json` prints (one builder), the export is
/// the file byte for byte and never replaces a file, bad lines are typed errors.
#[test]
fn protocol_transcript_ops_validate_info_export_and_chain_summary() {
    let dir = tempfile::tempdir().unwrap();
    let root = resumed_project(dir.path());
    let elsewhere = tempfile::tempdir().unwrap();
    let bad = elsewhere.path().join("bad/eeee.jsonl");
    write(
        &bad,
        &["{\"type\":\"user\"}", "not json", "{\"type\":\"user\"}"],
    );
    let manager = common::Backend::mem().open(&common::clock());
    let answer = |line: &str| -> serde_json::Value {
        match protocol::parse_request(line) {
            Ok(req @ Request::Claude(_)) => protocol::answer_run_op(&manager, &req),
            Ok(other) => panic!("{line}: {other:?}"),
            Err(e) => protocol::answer_err(&e),
        }
    };
    let aaaa = root.join("-home-dev-proj/aaaa.jsonl");
    let line = serde_json::json!({"op": "claude_validate", "paths": aaaa.to_string_lossy()});
    let a = answer(&line.to_string());
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["valid"], true, "{a}");
    assert_eq!(a["files"][0]["session_id"], "aaaa");
    assert_eq!(a["files"][0]["message_count"], 2);
    assert_eq!(
        a["files"][0]["size_bytes"],
        std::fs::metadata(&aaaa).unwrap().len()
    );
    // A transcript with a bad line: the op worked, the file is not valid, by line.
    let line = serde_json::json!({"op": "claude_validate", "paths": [bad.to_string_lossy()]});
    let a = answer(&line.to_string());
    assert_eq!(
        (a["ok"].clone(), a["valid"].clone()),
        (true.into(), false.into()),
        "{a}"
    );
    assert_eq!(a["files"][0]["bad_lines"], 1, "{a}");
    assert_eq!(a["files"][0]["problems"][0]["line"], 2, "{a}");
    let line = serde_json::json!({"op": "claude_info", "paths": [root.to_string_lossy()]});
    let a = answer(&line.to_string());
    assert_eq!(a["totals"]["files"], 5, "{a}");
    assert_eq!(a["files"][1]["session_id"], "aaaa", "{a}");
    assert_eq!(a["files"][1]["first_timestamp"], "2026-01-01T10:00:00Z");
    assert!(a["files"][0]["records_by_type"].is_object(), "{a}");
    // Nothing was imported by those.
    assert!(manager.state().sessions.is_empty());

    let line = serde_json::json!({"op": "claude_import", "paths": [root.to_string_lossy()]});
    let a = answer(&line.to_string());
    let agent = a["chained"][0]["agent"].as_str().unwrap().to_owned();
    let out = dir.path().join("out.jsonl");
    let line =
        serde_json::json!({"op": "claude_export", "id": "aaaa", "path": out.to_string_lossy()});
    let a = answer(&line.to_string());
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&aaaa).unwrap());
    assert_eq!(a["bytes"], std::fs::read(&aaaa).unwrap().len());
    // A second export to the same path is refused and the file is left as it is.
    std::fs::write(&out, b"mine").unwrap();
    let a = answer(&line.to_string());
    assert_eq!(a["ok"], false, "{a}");
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    let line = serde_json::json!({"op": "chain_summary", "agent": agent});
    let a = answer(&line.to_string());
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["summary"]["total_sessions"], 3, "{a}");
    assert_eq!(a["summary"]["first_session"], "aaaa", "{a}");
    assert_eq!(a["summary"]["current_session"], "cccc", "{a}");

    let lsn = manager.last_lsn();
    for bad in [
        r#"{"op":"claude_validate"}"#,
        r#"{"op":"claude_info","paths":[]}"#,
        r#"{"op":"claude_export","id":"aaaa"}"#,
        r#"{"op":"claude_export","path":"/tmp/x"}"#,
        r#"{"op":"claude_export","id":"aaaa","path":""}"#,
        r#"{"op":"chain_summary"}"#,
        r#"{"op":"chain_summary","agent":""}"#,
        r#"{"op":"claude_validate","paths":["a"],"typo":1}"#,
    ] {
        let a = answer(bad);
        assert_eq!(a["kind"], "invalid_input", "{bad}: {a}");
    }
    let line = serde_json::json!({"op": "claude_export", "id": "nope", "path": dir.path().join("n").to_string_lossy()});
    assert_eq!(answer(&line.to_string())["kind"], "not_found");
    assert!(!dir.path().join("n").exists());
    assert_eq!(manager.last_lsn(), lsn);
    manager.close().unwrap();
}

/// A folder whose name is not UTF-8 (a file system allows any bytes) among the projects:
/// reported as skipped, by its path written lossily, never passed over in silence; the
/// rest is imported. The op and the CLI's `--json` report are the same JSON
/// (`ImportRun::to_json`, one builder for both).
#[cfg(target_os = "linux")]
#[test]
fn a_folder_whose_name_is_not_utf8_is_reported_as_skipped_and_the_rest_imported() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"-home-dev-caf\xe9"));
    let line = r#"{"type":"user","uuid":"d1","parentUuid":null,"sessionId":"dddd","timestamp":"2026-01-01T10:00:00Z","message":{"role":"user","content":"hello"}}"#;
    write(&odd.join("dddd.jsonl"), &[line]);
    write(
        &dir.path().join("-home-dev-cafe").join("eeee.jsonl"),
        &[line],
    );
    let manager = common::Backend::mem().open(&common::clock());
    let req = serde_json::json!({"op": "claude_import", "paths": [dir.path().to_string_lossy()]});
    let a = match protocol::parse_request(&req.to_string()) {
        Ok(req @ Request::Claude(_)) => protocol::answer_run_op(&manager, &req),
        other => panic!("{other:?}"),
    };
    assert_eq!(a["ok"], true, "{a}");
    let files = a["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{a}");
    assert!(
        files[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("-home-dev-cafe/eeee.jsonl")
    );
    let skipped = a["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{a}");
    assert!(
        skipped[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("-home-dev-caf\u{fffd}"),
        "{a}"
    );
    assert!(skipped[0]["reason"].as_str().unwrap().contains("not UTF-8"));
    // The library's report is the op's answer without "ok".
    let run = import::import_paths(
        manager.engine(),
        &FileStorage::new(),
        &[dir.path().to_path_buf()],
    );
    let again = run.to_json();
    assert_eq!(again["skipped"], a["skipped"]);
    assert_eq!(again["files"][0]["path"], files[0]["path"]);
    assert_eq!(again["files"][0]["bytes"], 0, "imported twice: {again}");
    assert!(again.get("ok").is_none());
    manager.close().unwrap();
}
