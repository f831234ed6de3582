//! `claude search` through its full-text index on the real file system: ranking, filters,
//! the index caught up incrementally, rebuilt when deleted, damaged, of another version
//! or of another log, a foreign file at its path refused, FTS5 syntax in a query taken
//! as text, and a catch-up stopped before its commit.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use session_engine::claude::import;
use session_engine::claude::index::{self, INDEX_DIR, INDEX_FILE, OWNER_FILE};
use session_engine::claude::search::{self, SearchQuery, SearchResult};
use session_engine::{Engine, Error, FileStorage, Options};

fn write(path: &Path, lines: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn append(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// A `user` record of session `sid` with `text` as its prompt.
fn user(sid: &str, uuid: &str, ts: &str, text: &str) -> String {
    serde_json::json!({
        "type": "user", "uuid": uuid, "sessionId": sid, "cwd": "/home/dev/proj",
        "timestamp": ts, "message": {"role": "user", "content": text},
    })
    .to_string()
}

fn assistant(sid: &str, uuid: &str, ts: &str, text: &str) -> String {
    serde_json::json!({
        "type": "assistant", "uuid": uuid, "sessionId": sid, "timestamp": ts,
        "message": {"id": uuid, "role": "assistant", "content": [{"type": "text", "text": text}]},
    })
    .to_string()
}

fn long_text(word: &str) -> String {
    let filler: Vec<String> = (0..120).map(|i| format!("filler{i}")).collect();
    format!(
        "{} {word} {}",
        filler[..60].join(" "),
        filler[60..].join(" ")
    )
}

/// Two transcripts of project `-home-dev-proj`: `aaaa` and `bbbb`.
fn project(root: &Path) -> PathBuf {
    let p = root.join("-home-dev-proj");
    write(
        &p.join("aaaa.jsonl"),
        &[
            user(
                "aaaa",
                "a1",
                "2026-01-01T10:00:00Z",
                "deploy deploy deploy now",
            ),
            assistant("aaaa", "a2", "2026-01-01T10:00:05Z", "Über alles: the café"),
        ],
    );
    write(
        &p.join("bbbb.jsonl"),
        &[
            // Newer, and the word once in a long text: ranked below a1.
            user("bbbb", "b1", "2026-01-02T09:00:00Z", &long_text("deploy")),
            assistant("bbbb", "b2", "2026-01-02T09:00:05Z", "nothing to see"),
        ],
    );
    root.to_path_buf()
}

fn open(dir: &Path) -> Engine {
    Engine::open(dir, Options::default()).unwrap()
}

fn q(text: &str) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        ..SearchQuery::default()
    }
}

fn find(engine: &Engine, text: &str) -> SearchResult {
    search::search(engine, &q(text)).unwrap()
}

/// The hits as `session:line uuid`, in order.
fn keys(r: &SearchResult) -> Vec<String> {
    r.hits
        .iter()
        .map(|h| {
            format!(
                "{}:{} {}",
                h.session,
                h.line,
                h.uuid.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

fn index_file(data: &Path) -> PathBuf {
    data.join(INDEX_DIR).join(INDEX_FILE)
}

#[test]
fn the_word_often_in_a_short_text_ranks_above_it_once_in_a_long_one() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine = open(data.path());
    import::import_paths(&engine, &FileStorage::new(), &[project(src.path())]);
    let r = find(&engine, "DEPLOY");
    assert_eq!(r.total, 2);
    assert_eq!(keys(&r), ["aaaa:1 a1", "bbbb:1 b1"], "{:#?}", r.hits);
    assert!(r.hits[0].score > r.hits[1].score, "{:#?}", r.hits);
    assert_eq!(r.hits[0].snippet, "deploy deploy deploy now");
    assert!(
        r.hits[1].snippet.contains("deploy"),
        "{}",
        r.hits[1].snippet
    );
    assert!(r.hits[1].snippet.chars().count() <= search::SNIPPET_CHARS);
    assert!(index_file(data.path()).exists(), "the index is a file");
    // Every word is required.
    assert_eq!(keys(&find(&engine, "deploy now")), ["aaaa:1 a1"]);
    assert_eq!(find(&engine, "deploy absent").total, 0);
}

#[test]
fn filters_match_exactly_and_an_earlier_version_only_when_named() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine = open(data.path());
    let root = project(src.path());
    import::import_paths(&engine, &FileStorage::new(), std::slice::from_ref(&root));
    let with = |f: &dyn Fn(&mut SearchQuery)| {
        let mut query = q("deploy");
        f(&mut query);
        keys(&search::search(&engine, &query).unwrap())
    };
    assert_eq!(with(&|x| x.session = Some("bbbb".into())), ["bbbb:1 b1"]);
    assert_eq!(
        with(&|x| x.since = Some(search::parse_since("2026-01-02").unwrap())),
        ["bbbb:1 b1"]
    );
    assert_eq!(
        with(&|x| x.since = Some(search::parse_since("2026-01-03").unwrap())),
        Vec::<String>::new()
    );
    assert!(with(&|x| x.kinds = vec!["assistant".into()]).is_empty());
    assert_eq!(
        with(&|x| x.project = Some("/home/dev/proj".into())).len(),
        2
    );
    assert!(with(&|x| x.project = Some("/elsewhere".into())).is_empty());
    let r = search::search(
        &engine,
        &SearchQuery {
            limit: 1,
            ..q("deploy")
        },
    )
    .unwrap();
    assert_eq!((keys(&r), r.total), (vec!["aaaa:1 a1".to_string()], 2));
    // Rewrite aaaa: a new version, aaaa.v2; the first is searched only when named.
    write(
        &root.join("-home-dev-proj/aaaa.jsonl"),
        &[user(
            "aaaa",
            "x1",
            "2026-01-05T10:00:00Z",
            "deploy rewritten",
        )],
    );
    import::import_paths(&engine, &FileStorage::new(), std::slice::from_ref(&root));
    assert_eq!(
        keys(&find(&engine, "deploy")),
        ["aaaa.v2:1 x1", "bbbb:1 b1"]
    );
    assert_eq!(
        with(&|x| x.session = Some("aaaa".into())),
        ["aaaa:1 a1", "aaaa.v2:1 x1"],
        "named by its Claude Code id: both versions"
    );
}

#[test]
fn the_index_is_caught_up_from_the_new_events_only() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine = open(data.path());
    let root = project(src.path());
    import::import_paths(&engine, &FileStorage::new(), std::slice::from_ref(&root));
    let first = find(&engine, "deploy");
    assert_eq!(first.indexed, 4, "every record of the log");
    assert!(first.rebuilt.as_deref().unwrap().contains("missing"));
    let lsn = engine.last_lsn();
    assert_eq!(first.events, lsn.0);
    // Nothing new: nothing read.
    let again = find(&engine, "deploy");
    assert_eq!((again.indexed, again.events, &again.rebuilt), (0, 0, &None));
    assert_eq!(keys(&again), keys(&first));
    // Two more lines in aaaa, and a new transcript.
    let p = root.join("-home-dev-proj");
    append(
        &p.join("aaaa.jsonl"),
        &[
            user("aaaa", "a3", "2026-01-03T10:00:00Z", "deploy again"),
            assistant("aaaa", "a4", "2026-01-03T10:00:01Z", "done"),
        ],
    );
    write(
        &p.join("cccc.jsonl"),
        &[user("cccc", "c1", "2026-01-04T10:00:00Z", "deploy deploy")],
    );
    import::import_paths(&engine, &FileStorage::new(), std::slice::from_ref(&root));
    let new_events = engine.last_lsn().0 - lsn.0;
    let r = find(&engine, "deploy");
    assert_eq!(r.rebuilt, None);
    assert_eq!(
        (r.indexed, r.events),
        (3, new_events),
        "only the new events"
    );
    assert!(new_events < engine.last_lsn().0);
    assert_eq!(r.total, 4);
    let mut got = keys(&r);
    got.sort();
    assert_eq!(got, ["aaaa:1 a1", "aaaa:3 a3", "bbbb:1 b1", "cccc:1 c1"]);
    // The same as an index built from nothing.
    std::fs::remove_file(index_file(data.path())).unwrap();
    let fresh = find(&engine, "deploy");
    assert_eq!(fresh.indexed, 7);
    assert_eq!(fresh.hits, r.hits);
}

#[test]
fn a_deleted_damaged_old_or_foreign_log_index_is_rebuilt_with_the_same_results() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine = open(data.path());
    import::import_paths(&engine, &FileStorage::new(), &[project(src.path())]);
    let before = find(&engine, "deploy");
    let file = index_file(data.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.path().join(INDEX_DIR)), 0o700);
        assert_eq!(mode(&file), 0o600);
    }
    // Deleted.
    std::fs::remove_file(&file).unwrap();
    let r = find(&engine, "deploy");
    assert!(r.rebuilt.as_deref().unwrap().contains("missing"), "{r:?}");
    assert_eq!((r.indexed, &r.hits), (4, &before.hits));
    // Overwritten with garbage.
    std::fs::write(&file, vec![0xA5u8; 8192]).unwrap();
    let r = find(&engine, "deploy");
    assert!(r.rebuilt.as_deref().unwrap().contains("damaged"), "{r:?}");
    assert_eq!((r.indexed, &r.hits), (4, &before.hits));
    // Of another format version.
    {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.execute("UPDATE meta SET version = 99", []).unwrap();
    }
    let r = find(&engine, "deploy");
    assert!(
        r.rebuilt.as_deref().unwrap().contains("version 99"),
        "{r:?}"
    );
    assert_eq!(r.hits, before.hits);
    // Ahead of the log: an index of another, longer log copied here.
    {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.execute("UPDATE meta SET last_lsn = last_lsn + 5", [])
            .unwrap();
    }
    let r = find(&engine, "deploy");
    assert!(r.rebuilt.as_deref().unwrap().contains("ahead"), "{r:?}");
    assert_eq!(r.hits, before.hits);
    // Its last event is not the log's.
    {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.execute("UPDATE meta SET last_at = last_at + 1", [])
            .unwrap();
    }
    let r = find(&engine, "deploy");
    assert!(
        r.rebuilt.as_deref().unwrap().contains("not of this log"),
        "{r:?}"
    );
    assert_eq!(r.hits, before.hits);
    assert_eq!(find(&engine, "deploy").rebuilt, None, "then kept");
}

#[test]
fn a_file_the_engine_did_not_create_at_the_index_path_is_refused_and_untouched() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine = open(data.path());
    import::import_paths(&engine, &FileStorage::new(), &[project(src.path())]);
    let file = index_file(data.path());
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"another tool's database").unwrap();
    let e = search::search(&engine, &q("deploy")).unwrap_err();
    match &e {
        Error::ForeignFiles { files } => assert_eq!(files, std::slice::from_ref(&file)),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"another tool's database");
    assert!(!file.with_file_name(OWNER_FILE).exists(), "nothing written");
    let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn fts_syntax_in_a_query_is_text_and_words_fold_case_and_accents() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine = open(data.path());
    import::import_paths(&engine, &FileStorage::new(), &[project(src.path())]);
    for text in [
        "\"",
        "\"deploy",
        "deploy\"",
        "*",
        "deploy*",
        "NEAR(",
        "NEAR(deploy",
        "-",
        "-deploy",
        ":",
        "text:deploy",
        "^deploy",
        "deploy AND",
        "OR",
        "NOT deploy",
        "(",
        ")",
        "{text}",
        "deploy + now",
        "'",
        ";",
        "\\",
        "\u{93e}",
        "a\u{0}b",
        "deploy\"); DROP TABLE records;--",
    ] {
        let r = search::search(&engine, &q(text));
        assert!(r.is_ok(), "{text:?}: {r:?}");
    }
    // The syntax characters are separators: the words around them are found.
    assert_eq!(find(&engine, "\"deploy\"").total, 2);
    assert_eq!(find(&engine, "-deploy").total, 2, "not a negation");
    assert_eq!(find(&engine, "NEAR(deploy").total, 0, "near is a word");
    assert_eq!(find(&engine, "deploy*").total, 2, "not a prefix");
    assert_eq!(find(&engine, "depl*").total, 0);
    assert_eq!(find(&engine, "*").total, 0);
    assert_eq!(find(&engine, "deploy\"); DROP TABLE records;--").total, 0);
    assert_eq!(find(&engine, "deploy").total, 2, "nothing dropped");
    // Non-ASCII words, case and accents folded.
    assert_eq!(keys(&find(&engine, "über")), ["aaaa:2 a2"]);
    assert_eq!(keys(&find(&engine, "ÜBER")), ["aaaa:2 a2"]);
    assert_eq!(keys(&find(&engine, "uber cafe")), ["aaaa:2 a2"]);
    // An empty query is refused.
    for text in ["", "  \t"] {
        let e = search::search(&engine, &q(text)).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    }
}

#[test]
fn a_catch_up_stopped_before_its_commit_loses_and_doubles_nothing() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine = open(data.path());
    let root = project(src.path());
    import::import_paths(&engine, &FileStorage::new(), std::slice::from_ref(&root));
    assert_eq!(find(&engine, "deploy").indexed, 4);
    // Appended to the log after the index's last catch-up: the index is behind.
    let p = root.join("-home-dev-proj");
    append(
        &p.join("bbbb.jsonl"),
        &[
            user("bbbb", "b3", "2026-01-03T10:00:00Z", "deploy three"),
            user("bbbb", "b4", "2026-01-03T10:00:01Z", "deploy four"),
            user("bbbb", "b5", "2026-01-03T10:00:02Z", "deploy five"),
        ],
    );
    import::import_paths(&engine, &FileStorage::new(), std::slice::from_ref(&root));
    // The next catch-up dies after writing two of its three records.
    index::fail_catch_up_after(Some(2));
    let e = search::search(&engine, &q("deploy"));
    index::fail_catch_up_after(None);
    assert!(e.is_err(), "{e:?}");
    let r = find(&engine, "deploy");
    assert_eq!(r.rebuilt, None, "caught up, not rebuilt");
    assert_eq!(r.indexed, 3, "the three records, once");
    assert_eq!(r.total, 5);
    let mut got = keys(&r);
    got.sort();
    assert_eq!(
        got,
        [
            "aaaa:1 a1",
            "bbbb:1 b1",
            "bbbb:3 b3",
            "bbbb:4 b4",
            "bbbb:5 b5"
        ]
    );
    std::fs::remove_file(index_file(data.path())).unwrap();
    assert_eq!(find(&engine, "deploy").hits, r.hits, "as a fresh index");
}

#[test]
fn a_read_only_engine_keeps_the_index_up_to_date_too() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    {
        let engine = open(data.path());
        import::import_paths(&engine, &FileStorage::new(), &[project(src.path())]);
        engine.close().unwrap();
    }
    let reader = Engine::open_read_only(data.path(), Options::default()).unwrap();
    let r = find(&reader, "deploy");
    assert_eq!((r.total, r.indexed), (2, 4));
    assert_eq!(find(&reader, "deploy").indexed, 0, "kept in the file");
}

#[test]
fn update_index_brings_the_index_up_to_date_without_a_query() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine = open(data.path());
    let root = project(src.path());
    import::import_paths(&engine, &FileStorage::new(), std::slice::from_ref(&root));
    assert!(
        !index_file(data.path()).exists(),
        "an import alone makes no index"
    );
    let u = search::update_index(&engine).unwrap();
    assert_eq!((u.indexed, u.events), (4, engine.last_lsn().0), "{u:?}");
    assert!(u.rebuilt.as_deref().unwrap().contains("missing"), "{u:?}");
    assert!(index_file(data.path()).is_file());
    // Then the search reads nothing.
    let r = find(&engine, "deploy");
    assert_eq!((r.indexed, r.events, &r.rebuilt), (0, 0, &None));
    assert_eq!(r.total, 2);
    // Current already: nothing to do.
    let u = search::update_index(&engine).unwrap();
    assert_eq!(u, search::IndexUpdate::default());
}
