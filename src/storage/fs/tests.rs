use super::*;

#[test]
fn a_no_replace_rename_leaves_what_is_there_and_stat_versions_follow_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = FileStorage::new();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::write(&a, b"mine").unwrap();
    fs::write(&b, b"theirs").unwrap();
    let e = s.rename_noreplace(&a, &b).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&a).unwrap(), b"mine");
    assert_eq!(fs::read(&b).unwrap(), b"theirs");
    let c = tmp.path().join("c");
    s.rename_noreplace(&a, &c).unwrap();
    assert!(!a.exists());
    assert_eq!(fs::read(&c).unwrap(), b"mine");

    let st = s.stat(&c).unwrap().unwrap();
    assert_eq!((st.kind, st.len), (FileKind::File, 4));
    assert!(st.version.is_some());
    assert_eq!(s.stat(&c).unwrap(), Some(st), "unchanged: same version");
    // Same length, other content: ctime moves (even if mtime were set back).
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&c, b"MINE").unwrap();
    let changed = s.stat(&c).unwrap().unwrap();
    assert_eq!(changed.len, 4);
    assert_ne!(changed.version, st.version);
    assert_eq!(s.stat(&tmp.path().join("none")).unwrap(), None);
    #[cfg(unix)]
    {
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&c, &link).unwrap();
        assert_eq!(s.stat(&link).unwrap().unwrap().kind, FileKind::Symlink);
    }
}

/// A lock this process released while a forked child still held a copy of its
/// descriptors (until its `exec`) is taken once the copy closes, not refused; one
/// held by a live guard is refused.
#[test]
fn a_lock_released_while_a_fork_holds_a_copy_of_its_descriptors_is_free_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("LOCK");
    let s = FileStorage::new();
    let g = s.try_lock_once(&lock).unwrap().unwrap();
    assert!(
        s.try_lock(&lock).unwrap().is_none(),
        "a held lock was taken"
    );
    // What a fork does: copies of the descriptors (`dup`), the same open files, kept by
    // the child until its `exec`.
    let copies = (g.dir.try_clone().unwrap(), g.file.try_clone().unwrap());
    drop(g);
    let again = s.try_lock(&lock).unwrap();
    assert!(
        again.is_some(),
        "a released lock was refused while a copy of its descriptors was open"
    );
    assert!(
        s.try_lock(&lock).unwrap().is_none(),
        "the new holder's lock was taken"
    );
    // The child's copies closing (its `exec`) does not touch the new holder's lock.
    drop(copies);
    assert!(
        s.try_lock(&lock).unwrap().is_none(),
        "closing the old copies released the new holder's lock"
    );
    drop(again);
    assert!(s.try_lock(&lock).unwrap().is_some());
}

#[test]
fn is_locked_tells_a_held_lock_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("LOCK");
    let s = FileStorage::new();
    assert!(!s.is_locked(&lock).unwrap());
    assert!(!lock.exists(), "asking created the lock file");
    let g = s.try_lock(&lock).unwrap().unwrap();
    assert!(s.is_locked(&lock).unwrap());
    std::fs::remove_file(&lock).unwrap();
    assert!(
        s.is_locked(&lock).unwrap(),
        "the directory's lock is still held"
    );
    drop(g);
    assert!(!s.is_locked(&lock).unwrap());
}

#[test]
fn dropping_cached_pages_keeps_the_content_and_refuses_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let s = FileStorage::new();
    let mut f = s.open(&path, OpenMode::CreateNew).unwrap();
    f.write_at(0, b"synced").unwrap();
    f.sync_data().unwrap();
    f.write_at(6, b" and dirty").unwrap();
    s.drop_cached(&path, 2..3).unwrap();
    s.drop_cached(&path, 0..u64::MAX).unwrap();
    assert_eq!(&*s.read(&path).unwrap(), b"synced and dirty");
    let err = s
        .drop_cached(&dir.path().join("missing"), 0..1)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn the_lock_survives_removal_of_the_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("LOCK");
    let s = FileStorage::new();
    let g = s.try_lock(&lock).unwrap();
    assert!(g.is_some());
    fs::remove_file(&lock).unwrap();
    assert!(s.try_lock(&lock).unwrap().is_none());
    // An older release locks only the file: it is kept out while the lock is held...
    let old = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .unwrap();
    drop(g);
    // ...and keeps a new one out while it holds the file.
    old.try_lock().unwrap();
    assert!(s.try_lock(&lock).unwrap().is_none());
    drop(old);
    assert!(s.try_lock(&lock).unwrap().is_some());
}

#[cfg(unix)]
#[test]
fn writes_never_follow_a_link_and_folders_may_not_be_links() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::write(&outside, b"precious").unwrap();
    let data = dir.path().join("data");
    let s = FileStorage::new();
    s.create_dir_all(&data).unwrap();
    let link = data.join("link");
    symlink(&outside, &link).unwrap();
    // O_EXCL never follows a link: the name is taken.
    let err = s.open(&link, OpenMode::CreateNew).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    for mode in [OpenMode::ReadWrite, OpenMode::CreateTruncate] {
        let err = s.open(&link, mode).unwrap_err();
        assert!(
            err.to_string().contains("is a symbolic link"),
            "{mode:?}: {err}"
        );
    }
    assert_eq!(fs::read(&outside).unwrap(), b"precious");
    assert_eq!(s.kind(&link).unwrap(), Some(FileKind::Symlink));
    assert_eq!(s.kind(&data).unwrap(), Some(FileKind::Dir));
    assert_eq!(s.kind(&outside).unwrap(), Some(FileKind::File));
    assert_eq!(s.kind(&data.join("missing")).unwrap(), None);
    let sub = data.join("sub");
    symlink(dir.path(), &sub).unwrap();
    let err = s.create_dir_all(&sub).unwrap_err();
    assert!(err.to_string().contains("sub is a symbolic link"), "{err}");
    // Modes: private by default, group-readable on request.
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o077;
    s.open(&data.join("f"), OpenMode::CreateNew).unwrap();
    assert_eq!(mode(&data.join("f")), 0);
    assert_eq!(mode(&data), 0);
    let g = FileStorage::with_group_access();
    g.create_dir_all(&data.join("g/h")).unwrap();
    g.open(&data.join("g/h/f"), OpenMode::CreateNew).unwrap();
    assert_eq!(mode(&data.join("g/h/f")) & 0o007, 0);
    assert_eq!(mode(&data.join("g/h")) & 0o007, 0);
}
