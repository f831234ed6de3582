//! The manifest's format: parsing, damage, versions, compaction.
use super::*;
use crate::storage::temp_name;

fn image(records: &[(&str, Option<Entry>)]) -> Vec<u8> {
    let mut out = Vec::new();
    push_line(&mut out, &header_json());
    for (rel, e) in records {
        push_line(&mut out, &record_json(rel, *e));
    }
    out
}

const W: Entry = Entry::Written {
    len: 10,
    crc: 7,
    version: Some(u64::MAX),
};

#[test]
fn records_parse_back_and_the_last_about_a_path_wins() {
    let bytes = image(&[
        ("sessions/a.json", Some(Entry::Reserved)),
        ("sessions/b.json", Some(Entry::Reserved)),
        ("sessions/a.json", Some(W)),
        ("sessions/b.json", None),
        (
            "logs/x.log",
            Some(Entry::Written {
                len: 3,
                crc: 4,
                version: None,
            }),
        ),
    ]);
    let p = parse(&bytes, &|_| true).ok().unwrap();
    assert_eq!(p.damaged, 0);
    assert_eq!(p.lines, 6);
    assert_eq!(p.complete, bytes.len() as u64);
    assert_eq!(p.entries.len(), 2);
    assert_eq!(p.entries["sessions/a.json"], W);
    assert_eq!(
        p.entries["logs/x.log"],
        Entry::Written {
            len: 3,
            crc: 4,
            version: None
        }
    );
}

#[test]
fn torn_garbled_or_misnamed_lines_are_ignored_and_counted() {
    let mut bytes = image(&[("sessions/a.json", Some(W))]);
    let good = bytes.len();
    // A line whose checksum does not match (one byte of its JSON changed).
    let mut bad = Vec::new();
    push_line(
        &mut bad,
        &record_json("sessions/b.json", Some(Entry::Reserved)),
    );
    let n = bad.len();
    bad[n - 4] ^= 1;
    bytes.extend_from_slice(&bad);
    // Records naming paths outside the projections.
    for rel in [
        "../etc/passwd",
        "/abs",
        "sessions//a",
        "sessions/./a",
        "wal/x",
    ] {
        push_line(&mut bytes, &record_json(rel, Some(Entry::Reserved)));
    }
    bytes.extend_from_slice(b"\x00\x00\x00garbage\n");
    push_line(
        &mut bytes,
        &record_json("sessions/c.json", Some(Entry::Reserved)),
    );
    // A torn last line.
    bytes.extend_from_slice(b"0123abcd {\"new\":\"sess");
    let p = parse(&bytes, &|rel| !rel.starts_with("wal/")).ok().unwrap();
    assert_eq!(p.damaged, 1 + 5 + 1 + 1);
    assert_eq!(
        p.entries
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        ["sessions/a.json", "sessions/c.json"].into()
    );
    assert!(p.complete > good as u64 && p.complete < bytes.len() as u64);
}

#[test]
fn a_newer_manifest_is_refused() {
    let mut bytes = Vec::new();
    push_line(
        &mut bytes,
        &format!("{{\"format\":\"{FORMAT}\",\"version\":{}}}", VERSION + 1),
    );
    assert!(matches!(
        parse(&bytes, &|_| true),
        Err(LoadError::Version(v)) if v == VERSION + 1
    ));
}

#[test]
fn only_the_engines_own_temporary_names_count() {
    assert_eq!(
        own_temp_target("session_a.json.0123456789abcdef.tmp"),
        Some("session_a.json")
    );
    let fresh = temp_name("registry.json".as_ref());
    assert_eq!(
        own_temp_target(fresh.to_str().unwrap()),
        Some("registry.json")
    );
    for other in [
        "session_a.json.tmp",
        ".registry.json.abcd1234.tmp",
        "x.0123456789ABCDEF.tmp",
        ".0123456789abcdef.tmp",
        "notes.tmp",
    ] {
        assert_eq!(own_temp_target(other), None, "{other}");
    }
}

#[test]
fn a_compacted_manifest_holds_one_record_per_path() {
    let s = crate::storage::MemStorage::new();
    let path = Path::new("m");
    let mut m = Manifest::create(&s, path, HashMap::new()).unwrap();
    for i in 0..50 {
        m.set(
            "sessions/a.json",
            Some(Entry::Written {
                len: i,
                crc: 1,
                version: None,
            }),
        );
        m.set(&format!("logs/{i}.log"), Some(Entry::Reserved));
        m.commit(&s, false).unwrap();
    }
    m.set("logs/0.log", None);
    assert!(!m.wants_compaction());
    m.write_whole(&s, false).unwrap();
    let bytes = s.file_content(path).unwrap();
    let p = parse(&bytes, &|_| true).ok().unwrap();
    assert_eq!(p.lines, 1 + 50);
    assert_eq!(p.entries, m.entries);
    // Appends go on after the rewritten image.
    m.set("logs/0.log", Some(Entry::Reserved));
    m.commit(&s, true).unwrap();
    let p = parse(&s.file_content(path).unwrap(), &|_| true)
        .ok()
        .unwrap();
    assert_eq!((p.lines, p.damaged), (52, 0));
    assert_eq!(p.entries, m.entries);
}
