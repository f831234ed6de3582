//! The Claude Code transcript reader and its summaries (`session_engine::claude`), on the
//! generated edge cases and real public transcripts in `tests/fixtures/claude/`.
#![allow(clippy::unwrap_used)]

use std::io;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use session_engine::claude::{
    self, Entry, LineProblem, MAX_LINE_BYTES, ProblemKind, Record, RecordKind, TokenUsage, Totals,
    TranscriptInfo, TranscriptReader,
};
use session_engine::storage::StorageFile;
use session_engine::{Error, FileStorage, MemStorage, Storage};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude")
        .join(rel)
}

fn info(rel: &str) -> TranscriptInfo {
    claude::summarize(&FileStorage::new(), &fixture(rel)).unwrap()
}

fn entries(path: &Path) -> Vec<Entry> {
    TranscriptReader::open(&FileStorage::new(), path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn usage(i: u64, o: u64, cc: u64, cr: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: i,
        output_tokens: o,
        cache_creation_input_tokens: cc,
        cache_read_input_tokens: cr,
    }
}

/// The byte offset of line `n` (from 1) of `bytes`.
fn line_offset(bytes: &[u8], n: usize) -> u64 {
    let mut seen = 1;
    for (i, b) in bytes.iter().enumerate() {
        if seen == n {
            return i as u64;
        }
        if *b == b'\n' {
            seen += 1;
        }
    }
    if seen == n {
        bytes.len() as u64
    } else {
        panic!("no line {n}")
    }
}

#[test]
fn an_empty_file_is_valid_with_no_records() {
    let i = info("generated/empty.jsonl");
    assert!(i.valid);
    assert_eq!(
        (i.lines, i.message_count, i.size_bytes, i.bad_lines),
        (0, 0, 0, 0)
    );
    assert_eq!(i.session_id, "empty");
    assert_eq!(i.first_timestamp, None);
    assert!(i.in_progress.is_none());
    assert!(entries(&fixture("generated/empty.jsonl")).is_empty());
}

#[test]
fn a_streamed_message_is_counted_once_per_message_id_with_its_last_usage() {
    let i = info("generated/streamed.jsonl");
    assert!(i.valid);
    assert_eq!(i.message_count, 8);
    assert_eq!(i.records_by_type.get("assistant"), Some(&6));
    assert_eq!(i.records_by_type.get("user"), Some(&2));
    // msg_A (3 lines, last usage 10/30/100/1000), msg_B (2 lines, 20/8/0/2000), and one
    // assistant record without an id (5/2/0/0).
    assert_eq!(i.assistant_messages, 3);
    assert_eq!(i.usage, usage(35, 40, 100, 3000));
    // Summing every line, as tools that over-count do, gives far more.
    let mut naive = TokenUsage::default();
    for e in entries(&fixture("generated/streamed.jsonl")) {
        let Entry::Record(r) = e else { panic!() };
        if let Some(u) = r.value.pointer("/message/usage") {
            naive.add(&TokenUsage::of(u));
        }
    }
    assert_eq!(naive, usage(75, 56, 300, 7000));
    assert_eq!(
        i.models,
        [
            "claude-opus-4-5-20251101",
            "claude-haiku-4-5-20251001",
            "<synthetic>"
        ]
    );
    assert_eq!(i.session_ids, ["11111111-2222-4333-8444-555555555555"]);
    assert_eq!(i.cwds, ["/home/dev/proj"]);
    assert_eq!(i.versions, ["2.0.74"]);
    assert_eq!(
        i.first_timestamp.as_deref(),
        Some("2025-12-20T10:00:00.000Z")
    );
    assert_eq!(
        i.last_timestamp.as_deref(),
        Some("2025-12-20T10:00:07.000Z")
    );
}

#[test]
fn a_bad_line_in_the_middle_is_reported_by_number_and_the_rest_is_read() {
    let path = fixture("generated/bad_middle.jsonl");
    let bytes = std::fs::read(&path).unwrap();
    let i = info("generated/bad_middle.jsonl");
    assert!(!i.valid);
    assert_eq!((i.lines, i.message_count, i.bad_lines), (5, 4, 1));
    assert_eq!(i.problems.len(), 1);
    let p = &i.problems[0];
    assert_eq!(p.line, 3);
    assert_eq!(p.offset, line_offset(&bytes, 3));
    assert_eq!(p.len, 53);
    assert!(
        matches!(&p.kind, ProblemKind::InvalidJson { reason, column: 53 } if reason.contains("EOF")),
        "{p:?}"
    );
    assert!(p.kind.is_damage());
    // The lines after it are records, at their own numbers.
    let lines: Vec<u64> = entries(&path)
        .iter()
        .filter_map(|e| match e {
            Entry::Record(r) => Some(r.line),
            Entry::Problem(_) => None,
        })
        .collect();
    assert_eq!(lines, [1, 2, 4, 5]);
    assert_eq!(
        i.last_timestamp.as_deref(),
        Some("2025-12-20T11:00:04.000Z")
    );
}

#[test]
fn a_cut_last_line_is_a_write_in_progress_and_is_read_once_complete() {
    let path = fixture("generated/cut_last.jsonl");
    let bytes = std::fs::read(&path).unwrap();
    let i = info("generated/cut_last.jsonl");
    assert!(i.valid, "a write in progress is not damage");
    assert_eq!((i.lines, i.message_count, i.bad_lines), (3, 2, 0));
    let p = i.in_progress.clone().unwrap();
    assert_eq!(p.line, 3);
    assert_eq!(p.kind, ProblemKind::Incomplete);
    assert!(!p.kind.is_damage());
    assert_eq!(p.offset, line_offset(&bytes, 3));
    assert_eq!(p.offset + p.len, bytes.len() as u64);
    assert_eq!(
        i.last_timestamp.as_deref(),
        Some("2025-12-20T12:00:01.000Z")
    );

    // The writer finishes the line: it is then a record, terminated.
    let dir = tempfile::tempdir().unwrap();
    let grown = dir.path().join("grown.jsonl");
    let mut full = bytes.clone();
    let line3 = &bytes[p.offset as usize..];
    let whole = br#"{"sessionId":"11111111-2222-4333-8444-555555555555","cwd":"/home/dev/proj","version":"2.0.74","type":"user","uuid":"u3","parentUuid":"u2","timestamp":"2025-12-20T12:00:02.000Z","message":{"role":"user","content":"three, cut"}}"#;
    assert!(whole.starts_with(line3));
    full.extend_from_slice(&whole[line3.len()..]);
    std::fs::write(&grown, &full).unwrap();
    // Complete JSON without a newline yet: a record whose end is still open.
    let e = entries(&grown);
    let Entry::Record(r) = &e[2] else {
        panic!("{e:?}")
    };
    assert!(!r.terminated);
    assert_eq!(r.bytes, whole);
    full.push(b'\n');
    std::fs::write(&grown, &full).unwrap();
    let g = claude::summarize(&FileStorage::new(), &grown).unwrap();
    assert!(g.valid && g.in_progress.is_none());
    assert_eq!((g.lines, g.message_count), (3, 3));
    assert_eq!(
        g.last_timestamp.as_deref(),
        Some("2025-12-20T12:00:02.000Z")
    );
}

#[test]
fn summary_records_and_system_subtypes_are_counted() {
    let i = info("generated/summary.jsonl");
    assert!(i.valid);
    assert_eq!(i.records_by_type.get("summary"), Some(&2));
    assert_eq!(i.records_by_type.get("system"), Some(&3));
    assert_eq!(i.system_subtypes.get("compact_boundary"), Some(&1));
    assert_eq!(i.system_subtypes.get("local_command"), Some(&1));
    assert_eq!(i.system_subtypes.get(claude::summary::UNTYPED), Some(&1));
    // A summary has no timestamp: the first one is the user record's.
    assert_eq!(
        i.first_timestamp.as_deref(),
        Some("2025-12-20T13:00:00.000Z")
    );
    let kinds: Vec<String> = entries(&fixture("generated/summary.jsonl"))
        .iter()
        .map(|e| match e {
            Entry::Record(r) => format!("{:?}", r.kind()),
            Entry::Problem(p) => panic!("{p}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Summary",
            "Summary",
            "User",
            "System { subtype: Some(\"compact_boundary\") }",
            "System { subtype: Some(\"local_command\") }",
            "System { subtype: None }",
        ]
    );
}

#[test]
fn unknown_record_types_are_kept_as_they_are() {
    let path = fixture("generated/unknown_type.jsonl");
    let records: Vec<Record> = entries(&path)
        .into_iter()
        .map(|e| match e {
            Entry::Record(r) => r,
            Entry::Problem(p) => panic!("{p}"),
        })
        .collect();
    let kinds: Vec<RecordKind<'_>> = records.iter().map(Record::kind).collect();
    assert_eq!(
        kinds,
        [
            RecordKind::FileHistorySnapshot,
            RecordKind::QueueOperation,
            RecordKind::User,
            RecordKind::Progress,
            RecordKind::Other("custom-title"),
            RecordKind::Other("hologram"),
            RecordKind::Untyped,
            RecordKind::Untyped,
        ]
    );
    assert_eq!(records[5].value["future"]["field"][2], 3);
    let i = info("generated/unknown_type.jsonl");
    assert!(i.valid);
    assert_eq!(i.message_count, 8);
    assert_eq!(i.records_by_type.get("hologram"), Some(&1));
    assert_eq!(i.records_by_type.get("custom-title"), Some(&1));
    assert_eq!(i.records_by_type.get(claude::summary::UNTYPED), Some(&2));
}

#[test]
fn invalid_utf8_is_reported_by_line_and_byte() {
    let i = info("generated/invalid_utf8.jsonl");
    assert!(!i.valid);
    assert_eq!((i.lines, i.message_count, i.bad_lines), (4, 2, 2));
    let at: Vec<(u64, ProblemKind)> = i
        .problems
        .iter()
        .map(|p| (p.line, p.kind.clone()))
        .collect();
    assert_eq!(
        at,
        [
            (2, ProblemKind::InvalidUtf8 { at: 26 }),
            (4, ProblemKind::InvalidUtf8 { at: 26 })
        ]
    );
}

#[test]
fn every_record_keeps_its_bytes_and_offset_so_the_file_can_be_rebuilt() {
    let mut checked = 0;
    let found = claude::find_transcripts(&FileStorage::new(), &[fixture("")]);
    for path in &found.files {
        let bytes = std::fs::read(path).unwrap();
        let mut rebuilt = Vec::new();
        let mut all_records = true;
        for e in entries(path) {
            match e {
                Entry::Record(r) => {
                    assert_eq!(r.offset, rebuilt.len() as u64, "{}", path.display());
                    assert_eq!(&bytes[r.offset as usize..][..r.bytes.len()], &r.bytes[..]);
                    rebuilt.extend_from_slice(&r.bytes);
                    if r.terminated {
                        rebuilt.push(b'\n');
                    }
                }
                Entry::Problem(p) => {
                    all_records = false;
                    rebuilt.extend_from_slice(&bytes[p.offset as usize..][..p.len as usize]);
                    if (p.offset + p.len) < bytes.len() as u64 {
                        rebuilt.push(b'\n');
                    }
                }
            }
        }
        assert_eq!(rebuilt, bytes, "{}", path.display());
        checked += usize::from(all_records);
    }
    // Every fixture but the bad ones and the cut one is all records.
    assert_eq!(found.files.len(), 16);
    assert_eq!(checked, 13);
    // A CRLF line keeps its \r.
    let e = entries(&fixture("generated/crlf.jsonl"));
    assert_eq!(e.len(), 2);
    for e in e {
        let Entry::Record(r) = e else { panic!() };
        assert_eq!(r.bytes.last(), Some(&b'\r'));
    }
}

#[test]
fn real_transcripts_are_summarised_as_an_independent_parse_counts_them() {
    // Expected values from Python's json module over the same files.
    let k = "real/kfischer-okarin-scripts-and-tools/-Users-user-project/";
    let main = info(&format!("{k}b3edadab-bca0-4054-9b41-f7ffa6941260.jsonl"));
    assert!(main.valid);
    assert_eq!(
        (main.lines, main.message_count, main.size_bytes),
        (60, 60, 73_349)
    );
    assert_eq!(main.records_by_type.get("assistant"), Some(&32));
    assert_eq!(main.records_by_type.get("file-history-snapshot"), Some(&10));
    assert_eq!(main.records_by_type.get("summary"), Some(&1));
    assert_eq!(main.records_by_type.get("user"), Some(&17));
    assert_eq!(main.assistant_messages, 15);
    assert_eq!(main.usage, usage(138, 1443, 32_421, 290_391));
    assert_eq!(main.models, ["claude-opus-4-5-20251101"]);
    assert_eq!(main.session_id, "b3edadab-bca0-4054-9b41-f7ffa6941260");
    assert_eq!(main.session_ids, ["b3edadab-bca0-4054-9b41-f7ffa6941260"]);
    assert_eq!(
        main.first_timestamp.as_deref(),
        Some("2025-12-20T08:57:00.189Z")
    );
    assert_eq!(
        main.last_timestamp.as_deref(),
        Some("2025-12-20T09:23:01.555Z")
    );

    let agent = info(&format!("{k}agent-a434715.jsonl"));
    assert_eq!(agent.usage, usage(15, 297, 13_142, 25_277));
    assert_eq!(agent.assistant_messages, 3);
    // A subagent's records carry its parent's session id.
    assert_eq!(agent.session_id, "agent-a434715");
    assert_eq!(agent.session_ids, ["b3edadab-bca0-4054-9b41-f7ffa6941260"]);

    let titles = info(&format!("{k}a751b8dd-6b29-4eed-8cb9-64bc9a916a39.jsonl"));
    assert_eq!(titles.records_by_type.get("summary"), Some(&3));
    assert_eq!(
        titles.records_by_type.get("file-history-snapshot"),
        Some(&5)
    );
    assert_eq!(titles.first_timestamp, None);

    let empty = info(&format!("{k}0f13eeba-e6ed-42ea-ad8c-d8db37e1304e.jsonl"));
    assert!(empty.valid && empty.lines == 0);

    let short = info("real/marot-spotter/short.jsonl");
    assert_eq!((short.lines, short.message_count), (15, 15));
    // Five assistant lines, one message.
    assert_eq!(short.records_by_type.get("assistant"), Some(&5));
    assert_eq!(short.assistant_messages, 1);
    assert_eq!(short.usage, usage(3, 13, 13_835, 11_515));
    assert_eq!(short.system_subtypes.get("local_command"), Some(&2));
    assert_eq!(short.records_by_type.get("progress"), Some(&3));

    let tools = info("real/marot-spotter/tool_heavy.jsonl");
    assert_eq!((tools.lines, tools.assistant_messages), (39, 4));
    assert_eq!(tools.records_by_type.get("queue-operation"), Some(&2));
    assert_eq!(tools.usage, usage(54, 212, 17_696, 88_231));
    assert_eq!(tools.models, ["claude-opus-4-6"]);
}

#[test]
fn a_directory_is_walked_for_jsonl_files_in_both_subagent_layouts() {
    let found = claude::find_transcripts(&FileStorage::new(), &[fixture("real")]);
    let names: Vec<String> = found
        .files
        .iter()
        .map(|p| {
            p.strip_prefix(fixture("real"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "kfischer-okarin-scripts-and-tools/-Users-user-project/0d3b22c1-ba90-4fd3-b8d2-056ffc626725.jsonl",
            "kfischer-okarin-scripts-and-tools/-Users-user-project/0f13eeba-e6ed-42ea-ad8c-d8db37e1304e.jsonl",
            "kfischer-okarin-scripts-and-tools/-Users-user-project/a751b8dd-6b29-4eed-8cb9-64bc9a916a39.jsonl",
            "kfischer-okarin-scripts-and-tools/-Users-user-project/agent-a434715.jsonl",
            "kfischer-okarin-scripts-and-tools/-Users-user-project/b3edadab-bca0-4054-9b41-f7ffa6941260.jsonl",
            "marot-spotter/short.jsonl",
            "marot-spotter/tool_heavy.jsonl",
            "marot-spotter/ae4a77f8-aedd-4bc1-888f-c94edc91af04/subagents/agent-acompact-946d2b.jsonl",
        ]
    );
    assert!(found.skipped.is_empty() && found.unreadable.is_empty());
}

#[cfg(unix)]
#[test]
fn symbolic_links_inside_a_directory_are_reported_not_followed_and_a_loop_ends() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    std::fs::create_dir_all(root.join("p")).unwrap();
    std::fs::write(root.join("p/s.jsonl"), b"{\"type\":\"user\"}\n").unwrap();
    std::os::unix::fs::symlink(&root, root.join("p/loop")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("p/out.jsonl")).unwrap();
    std::fs::create_dir(root.join("dir.jsonl")).unwrap();
    let found = claude::find_transcripts(&FileStorage::new(), std::slice::from_ref(&root));
    assert_eq!(found.files, [root.join("p/s.jsonl")]);
    let skipped: Vec<_> = found.skipped.iter().map(|s| s.path.clone()).collect();
    assert_eq!(skipped, [root.join("p/loop"), root.join("p/out.jsonl")]);
    assert!(found.skipped[0].reason.contains("not followed"));
    // A link the user names is followed: to a file, or to a directory (whose links are
    // still not followed).
    let named = claude::find_transcripts(
        &FileStorage::new(),
        &[root.join("p/loop"), dir.path().join("missing.jsonl")],
    );
    assert_eq!(named.files, [root.join("p/loop/p/s.jsonl")]);
    assert_eq!(named.skipped.len(), 2);
    assert_eq!(named.unreadable.len(), 1);
    assert!(named.unreadable[0].named);
    assert!(matches!(&named.unreadable[0].error,
        Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound));
}

#[test]
fn totals_count_a_message_repeated_in_two_files_once() {
    let a = info("generated/streamed.jsonl");
    let mut t = Totals::default();
    t.add(&a);
    t.add(&a);
    assert_eq!(t.files, 2);
    assert_eq!(t.message_count, 16);
    assert_eq!(
        t.assistant_messages,
        3 + 1,
        "the record without an id counts twice"
    );
    assert_eq!(t.usage, usage(35 + 5, 40 + 2, 100, 3000));
    t.add(&info("generated/bad_middle.jsonl"));
    assert_eq!((t.valid_files, t.bad_lines), (2, 1));
}

#[test]
fn project_folders_are_named_as_claude_code_names_them() {
    assert_eq!(
        claude::project_dir_name("/home/a/my.proj_x"),
        "-home-a-my-proj-x"
    );
    assert_eq!(
        claude::transcript_path(Path::new("/p"), "/Users/user/project", "abc"),
        Path::new("/p/-Users-user-project/abc.jsonl")
    );
}

#[test]
fn a_line_longer_than_the_limit_is_reported_and_skipped_in_bounded_memory() {
    // A real line over the default 64 MiB limit, made here (never committed), between two
    // records, and another as the unterminated last line.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jsonl");
    let first = b"{\"type\":\"user\",\"n\":1}\n";
    let huge_len = MAX_LINE_BYTES + 3 * claude::CHUNK_BYTES + 17;
    let mut huge = Vec::with_capacity(huge_len);
    huge.extend_from_slice(b"{\"type\":\"user\",\"x\":\"");
    huge.resize(huge_len - 2, b'a');
    huge.extend_from_slice(b"\"}");
    let mut data = first.to_vec();
    data.extend_from_slice(&huge);
    data.push(b'\n');
    data.extend_from_slice(b"{\"type\":\"assistant\"}\n");
    let tail_at = data.len() as u64;
    data.extend_from_slice(&huge);
    std::fs::write(&path, &data).unwrap();
    drop(huge);
    let e = entries(&path);
    assert_eq!(e.len(), 4);
    let too_long = |line, offset| {
        Entry::Problem(LineProblem {
            line,
            offset,
            len: huge_len as u64,
            kind: ProblemKind::TooLong {
                limit: MAX_LINE_BYTES as u64,
            },
        })
    };
    assert!(matches!(&e[0], Entry::Record(r) if r.line == 1));
    assert_eq!(e[1], too_long(2, first.len() as u64));
    assert!(
        matches!(&e[2], Entry::Record(r) if r.line == 3 && r.record_type() == Some("assistant"))
    );
    assert_eq!(e[3], too_long(4, tail_at));
    let i = claude::summarize(&FileStorage::new(), &path).unwrap();
    assert!(!i.valid);
    assert_eq!((i.bad_lines, i.message_count), (2, 2));
    assert_eq!(i.size_bytes, data.len() as u64);
}

#[test]
fn a_line_over_several_chunks_under_the_limit_is_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.jsonl");
    let mut line = b"{\"type\":\"user\",\"x\":\"".to_vec();
    line.resize(2 * claude::CHUNK_BYTES + 5, b'b');
    line.extend_from_slice(b"\"}");
    let mut data = line.clone();
    data.extend_from_slice(b"\n{\"type\":\"user\"}\n");
    std::fs::write(&path, &data).unwrap();
    let e = entries(&path);
    assert_eq!(e.len(), 2);
    assert!(matches!(&e[0], Entry::Record(r) if r.bytes == line));
    assert!(matches!(&e[1], Entry::Record(r) if r.line == 2 && r.offset == line.len() as u64 + 1));
}

/// A file in memory that answers at most `step` bytes per read and fails at `fail_at`.
#[derive(Debug)]
struct Slow {
    data: Vec<u8>,
    step: usize,
    fail_at: Option<u64>,
}

impl StorageFile for Slow {
    fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("read only"))
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if self.fail_at.is_some_and(|f| offset >= f) {
            return Err(io::Error::other("injected read failure"));
        }
        let start = (offset as usize).min(self.data.len());
        let n = buf.len().min(self.step).min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(n)
    }
    fn len(&mut self) -> io::Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn set_len(&mut self, _: u64) -> io::Result<()> {
        Err(io::Error::other("read only"))
    }
    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn sync_all(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_read_error_is_a_typed_error_and_ends_the_reading() {
    let data = b"{\"type\":\"user\"}\n{\"type\":\"user\"}\n".repeat(4);
    let file = Slow {
        data,
        step: 16,
        fail_at: Some(32),
    };
    let mut r = TranscriptReader::new(Box::new(file), Path::new("t.jsonl"));
    assert!(matches!(r.next(), Some(Ok(Entry::Record(_)))));
    assert!(matches!(r.next(), Some(Ok(Entry::Record(_)))));
    match r.next() {
        Some(Err(Error::Io { op, path, .. })) => {
            assert_eq!(op, "read transcript");
            assert_eq!(path, Path::new("t.jsonl"));
        }
        other => panic!("{other:?}"),
    }
    assert!(r.next().is_none());
}

#[test]
fn a_missing_file_is_a_typed_error() {
    let err = claude::summarize(&MemStorage::new(), Path::new("/nowhere/s.jsonl")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                op: "open transcript",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        MemStorage::new().kind_following(Path::new("/x")).unwrap(),
        None
    );
}

/// What the reader must say about `data`, from a plain split on `\n` and serde_json.
fn model(data: &[u8], max_line: usize) -> Vec<(u64, u64, &'static str)> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut parts: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let last_terminated = parts.last().is_some_and(|l| l.is_empty());
    if last_terminated {
        parts.pop();
    }
    let n = parts.len();
    for (i, l) in parts.into_iter().enumerate() {
        let terminated = i + 1 < n || last_terminated;
        let kind = if l.len() > max_line {
            "too_long"
        } else {
            match std::str::from_utf8(l) {
                Err(_) if !terminated => "incomplete",
                Err(_) => "utf8",
                Ok(s) => match serde_json::from_str::<serde_json::Value>(s) {
                    Ok(_) => "record",
                    Err(_) if !terminated => "incomplete",
                    Err(_) => "json",
                },
            }
        };
        out.push((i as u64 + 1, offset, kind));
        offset += l.len() as u64 + 1;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_bytes_read_in_any_pieces_give_what_a_plain_split_gives(
        lines in prop::collection::vec(
            prop_oneof![
                Just(b"{\"type\":\"user\",\"a\":[1,2]}".to_vec()),
                Just(b"{\"type\":\"assistant\",\"message\":{\"id\":\"m\"}}".to_vec()),
                Just(b"[]".to_vec()),
                Just(Vec::new()),
                Just(b"{\"cut".to_vec()),
                Just(vec![0xff, b'{']),
                prop::collection::vec(any::<u8>(), 0..40),
            ],
            0..12,
        ),
        terminated in any::<bool>(),
        step in 1usize..9,
        max_line in 1usize..60,
    ) {
        let mut data = lines.join(&b'\n');
        if terminated && !data.is_empty() {
            data.push(b'\n');
        }
        let expect = model(&data, max_line);
        let file = Slow { data: data.clone(), step, fail_at: None };
        let got: Vec<(u64, u64, &'static str)> =
            TranscriptReader::new(Box::new(file), Path::new("p.jsonl"))
                .with_max_line(max_line)
                .map(|e| match e.unwrap() {
                    Entry::Record(r) => {
                        assert_eq!(&data[r.offset as usize..][..r.bytes.len()], &r.bytes[..]);
                        (r.line, r.offset, "record")
                    }
                    Entry::Problem(p) => (p.line, p.offset, match p.kind {
                        ProblemKind::InvalidUtf8 { .. } => "utf8",
                        ProblemKind::InvalidJson { .. } => "json",
                        ProblemKind::TooLong { .. } => "too_long",
                        ProblemKind::Incomplete => "incomplete",
                        _ => "other",
                    }),
                })
                .collect();
        prop_assert_eq!(got, expect);
    }
}
