use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::storage::{OpenMode, Storage, StorageFile};

fn write(s: &MemStorage, path: &str, data: &[u8], sync: bool) {
    let mut f = s.open(Path::new(path), OpenMode::CreateTruncate).unwrap();
    f.write_at(0, data).unwrap();
    if sync {
        f.sync_data().unwrap();
    }
}

/// Creates directory `d` and makes its entry in the root durable.
fn durable_dir(s: &MemStorage, d: &str) {
    s.create_dir_all(Path::new(d)).unwrap();
    s.sync_dir(Path::new("")).unwrap();
}

#[test]
fn synced_data_survives_every_crash() {
    let s = MemStorage::new();
    durable_dir(&s, "d");
    write(&s, "d/a", b"hello", true);
    s.sync_dir(Path::new("d")).unwrap();
    for seed in 0..50 {
        for mode in CrashMode::ALL {
            let c = s.crash(seed, mode);
            assert_eq!(c.file_content(Path::new("d/a")).unwrap(), b"hello");
        }
    }
}

#[test]
fn unsynced_writes_are_sometimes_kept_dropped_garbled_or_zeroed() {
    let s = MemStorage::new();
    durable_dir(&s, "d");
    write(&s, "d/a", &[1u8; 4096], true);
    s.sync_dir(Path::new("d")).unwrap();
    let mut f = s.open(Path::new("d/a"), OpenMode::ReadWrite).unwrap();
    f.write_at(0, &[7u8; 4096]).unwrap();
    let (mut kept, mut dropped, mut garbled, mut zeroed) = (false, false, false, false);
    for seed in 0..200 {
        let c = s.crash(seed, CrashMode::Sectors);
        let content = c.file_content(Path::new("d/a")).unwrap();
        assert_eq!(content.len(), 4096);
        for sector in content.chunks(512) {
            if sector.iter().all(|&b| b == 7) {
                kept = true;
            } else if sector.iter().all(|&b| b == 1) {
                dropped = true;
            } else if sector.iter().all(|&b| b == 0) {
                zeroed = true;
            } else {
                garbled = true;
            }
        }
    }
    assert!(kept && dropped && garbled && zeroed);
}

#[test]
fn an_unsynced_append_may_leave_the_file_short_or_grown_with_zeros_or_garbage() {
    let s = MemStorage::new();
    durable_dir(&s, "d");
    write(&s, "d/a", b"head", true);
    s.sync_dir(Path::new("d")).unwrap();
    let mut f = s.open(Path::new("d/a"), OpenMode::ReadWrite).unwrap();
    f.write_at(4, &[9u8; 1000]).unwrap();
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let c = s.crash(seed, CrashMode::ThreeParts);
        let content = c.file_content(Path::new("d/a")).unwrap();
        assert_eq!(&content[..4], b"head", "synced bytes changed");
        let tail = &content[4..];
        seen.insert(match tail {
            [] => "short",
            t if t.iter().all(|&b| b == 9) && t.len() == 1000 => "whole",
            t if t.iter().all(|&b| b == 0) => "zeros",
            _ => "mixed",
        });
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}

#[test]
fn an_unsynced_rename_may_vanish() {
    let s = MemStorage::new();
    durable_dir(&s, "d");
    write(&s, "d/tmp", b"x", true);
    s.sync_dir(Path::new("d")).unwrap();
    s.rename(Path::new("d/tmp"), Path::new("d/final")).unwrap();
    let outcomes: BTreeSet<Vec<String>> = (0..40)
        .map(|seed| {
            s.crash(seed, CrashMode::Whole)
                .list_dir(Path::new("d"))
                .unwrap()
        })
        .collect();
    assert!(outcomes.contains(&vec!["tmp".to_string()]));
    assert!(outcomes.contains(&vec!["final".to_string()]));
    assert_eq!(outcomes.len(), 2, "a rename is atomic: {outcomes:?}");
    s.sync_dir(Path::new("d")).unwrap();
    let c = s.crash(1, CrashMode::Whole);
    assert_eq!(
        c.list_dir(Path::new("d")).unwrap(),
        vec!["final".to_string()]
    );
}

#[test]
fn unsynced_entry_changes_survive_only_as_an_ordered_prefix() {
    let s = MemStorage::new();
    durable_dir(&s, "d");
    for name in ["a", "b", "c"] {
        write(&s, &format!("d/{name}"), b"x", true);
    }
    let outcomes: BTreeSet<Vec<String>> = (0..100)
        .map(|seed| {
            s.crash(seed, CrashMode::Whole)
                .list_dir(Path::new("d"))
                .unwrap()
        })
        .collect();
    let expected: BTreeSet<Vec<String>> = [vec![], vec!["a"], vec!["a", "b"], vec!["a", "b", "c"]]
        .into_iter()
        .map(|v| v.into_iter().map(String::from).collect())
        .collect();
    assert_eq!(outcomes, expected);
}

#[test]
fn a_new_directory_and_its_files_may_vanish_until_its_parent_is_synced() {
    let s = MemStorage::new();
    s.create_dir_all(Path::new("root/sub")).unwrap();
    write(&s, "root/sub/f", b"data", true);
    s.sync_dir(Path::new("root/sub")).unwrap();
    s.sync_dir(Path::new("root")).unwrap();
    let survived = (0..40)
        .filter(|&seed| {
            s.crash(seed, CrashMode::Whole)
                .exists(Path::new("root/sub/f"))
                .unwrap()
        })
        .count();
    assert!(0 < survived && survived < 40, "{survived} of 40");
    // `.` names the root.
    s.sync_dir(Path::new(".")).unwrap();
    for seed in 0..40 {
        let c = s.crash(seed, CrashMode::Whole);
        assert_eq!(c.file_content(Path::new("root/sub/f")).unwrap(), b"data");
    }
}

#[test]
fn syncing_a_missing_directory_is_an_error() {
    let s = MemStorage::new();
    let err = s.sync_dir(Path::new("nope")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn sync_fs_makes_every_write_and_entry_durable() {
    let s = MemStorage::new();
    s.create_dir_all(Path::new("d/e")).unwrap();
    crate::storage::write_atomic_unsynced(&s, Path::new("d/e/f"), b"new").unwrap();
    let mut h = s.open(Path::new("d/g"), OpenMode::CreateNew).unwrap();
    h.write_at(0, b"gg").unwrap();
    drop(h);
    // Nothing is durable yet.
    let lost = s.crash(1, CrashMode::DurableOnly);
    assert!(!lost.exists(Path::new("d")).unwrap());
    s.sync_fs(Path::new("d")).unwrap();
    let kept = s.crash(1, CrashMode::DurableOnly);
    assert_eq!(kept.file_content(Path::new("d/e/f")).unwrap(), b"new");
    assert_eq!(kept.file_content(Path::new("d/g")).unwrap(), b"gg");
    assert_eq!(kept.list_dir(Path::new("d/e")).unwrap(), vec!["f"]);
}

#[test]
fn halting_fails_the_chosen_sync_and_everything_after() {
    let s = MemStorage::new();
    s.create_dir_all(Path::new("d")).unwrap();
    s.halt_after_syncs(1);
    write(&s, "d/a", b"1", true);
    let mut f = s.open(Path::new("d/a"), OpenMode::ReadWrite).unwrap();
    assert!(f.sync_data().is_err());
    assert!(f.write_at(0, b"2").is_err());
    assert!(s.is_halted());
}

/// A durable file `d/a` holding `old`, then `new` written at its start and lost by a
/// failed sync. Returns the open file.
fn lose_a_write(s: &MemStorage, old: &[u8]) -> Box<dyn StorageFile> {
    durable_dir(s, "d");
    write(s, "d/a", old, true);
    s.sync_dir(Path::new("d")).unwrap();
    let mut f = s.open(Path::new("d/a"), OpenMode::ReadWrite).unwrap();
    f.write_at(0, b"new").unwrap();
    s.fail_sync_losing_data(s.sync_count());
    assert!(f.sync_data().is_err());
    f
}

#[test]
fn dropping_the_cache_shows_lost_writes_gone_and_keeps_unsynced_ones() {
    let s = MemStorage::new();
    let mut f = lose_a_write(&s, b"old-old");
    // Lost, yet still shown, like Linux after a write-back error.
    assert_eq!(&*s.read(Path::new("d/a")).unwrap(), b"new-old");
    // An unsynced (dirty) write after the failure stays visible.
    f.write_at(4, b"NEW").unwrap();
    s.drop_cached(Path::new("d/a"), 1..2).unwrap();
    assert_eq!(&*s.read(Path::new("d/a")).unwrap(), b"old-NEW");
    assert!(s.drop_cached(Path::new("d/missing"), 0..1).is_err());
}

#[test]
fn a_failed_sync_can_lose_the_unsynced_writes_for_good() {
    let s = MemStorage::new();
    let mut f = lose_a_write(&s, b"old");
    assert_eq!(s.file_content(Path::new("d/a")).unwrap(), b"new");
    f.sync_data().unwrap();
    for seed in 0..20 {
        let c = s.crash(seed, CrashMode::Whole);
        assert_eq!(c.file_content(Path::new("d/a")).unwrap(), b"old");
    }
    // Writing the bytes again makes them dirty, and the next sync saves them.
    f.write_at(0, b"new").unwrap();
    f.sync_data().unwrap();
    let c = s.crash(0, CrashMode::Whole);
    assert_eq!(c.file_content(Path::new("d/a")).unwrap(), b"new");
}

#[test]
fn a_second_lock_is_refused_until_the_first_is_dropped() {
    let s = MemStorage::new();
    let g = s.try_lock(Path::new("LOCK")).unwrap();
    assert!(g.is_some());
    assert!(s.try_lock(Path::new("LOCK")).unwrap().is_none());
    drop(g);
    assert!(s.try_lock(Path::new("LOCK")).unwrap().is_some());
}

#[test]
fn deleting_lock_while_it_is_held_does_not_let_a_second_holder_in() {
    let s = MemStorage::new();
    durable_dir(&s, "d");
    let g = s.try_lock(Path::new("d/LOCK")).unwrap();
    assert!(g.is_some());
    s.remove_file(Path::new("d/LOCK")).unwrap();
    assert!(!s.exists(Path::new("d/LOCK")).unwrap());
    assert!(s.try_lock(Path::new("d/LOCK")).unwrap().is_none());
    // Another directory's lock is another lock.
    durable_dir(&s, "e");
    assert!(s.try_lock(Path::new("e/LOCK")).unwrap().is_some());
    drop(g);
    assert!(s.try_lock(Path::new("d/LOCK")).unwrap().is_some());
}

#[test]
fn is_locked_tells_a_held_lock_and_creates_nothing() {
    let s = MemStorage::new();
    durable_dir(&s, "d");
    let lock = Path::new("d/LOCK");
    assert!(!s.is_locked(lock).unwrap());
    assert!(!s.exists(lock).unwrap(), "asking created the lock file");
    let g = s.try_lock(lock).unwrap().unwrap();
    assert!(s.is_locked(lock).unwrap());
    s.remove_file(lock).unwrap();
    assert!(
        s.is_locked(lock).unwrap(),
        "the directory's lock is still held"
    );
    drop(g);
    assert!(!s.is_locked(lock).unwrap());
}
