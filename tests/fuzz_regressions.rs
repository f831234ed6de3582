//! The fuzz targets' committed inputs, replayed as ordinary tests through the same checks
//! the targets run (`testkit/src/checks.rs`): every minimized crash input under
//! `fuzz/regressions/<target>/` and every seed under `fuzz/corpus/<target>/`.
//!
//! `cargo test --release --test fuzz_regressions -- --ignored write_seed_corpora`
//! regenerates the seed corpora from a real log.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::checks::TARGETS;
use common::workload::*;
use session_engine::storage::{MemStorage, SplitMix64, Storage};
use session_engine::wal::record::decode_frame;
use session_engine::wal::segment::SEGMENT_HEADER_LEN;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs every file under `fuzz/<kind>/<target>/` through the target's check.
fn replay(kind: &str) -> usize {
    replay_in(&fuzz_dir(), kind)
}

/// Runs every file under `<root>/<kind>/<target>/` through the target's check, and fails
/// rather than pass without testing anything: `<root>/<kind>/` must exist; each folder in
/// it must be named after a target (a typo would never be replayed) and hold at least one
/// input; under `corpus/` every target must have its folder (a target need not have
/// regressions).
fn replay_in(root: &Path, kind: &str) -> usize {
    let base = root.join(kind);
    let every_target = kind == "corpus";
    let names: Vec<String> = std::fs::read_dir(&base)
        .unwrap_or_else(|e| panic!("cannot read the fuzz {kind} folder {}: {e}", base.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let targets: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    for name in &names {
        assert!(
            targets.contains(&name.as_str()),
            "{}: {name:?} is not a fuzz target ({}), so its inputs are never replayed",
            base.display(),
            targets.join(", ")
        );
    }
    let mut n = 0;
    for (target, check) in TARGETS {
        let dir = base.join(target);
        if !every_target && !names.iter().any(|n| n == target) {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| {
                panic!(
                    "cannot read the {target} {kind} folder {}: {e}",
                    dir.display()
                )
            })
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            !files.is_empty(),
            "the {target} {kind} folder {} holds no input, so its replay would test nothing",
            dir.display()
        );
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            with_context(|| format!("{}", file.display()), || check(&data));
            n += 1;
        }
    }
    assert!(n > 0, "no {kind} inputs under {}", base.display());
    n
}

#[test]
fn minimized_crash_inputs_replay_without_failure() {
    let n = replay("regressions");
    eprintln!("{n} regression inputs replayed");
}

#[test]
fn seed_corpora_replay_without_failure() {
    let n = replay("corpus");
    eprintln!("{n} seed inputs replayed");
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce() -> usize) -> String {
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map(|n| format!("replayed {n} inputs without complaint"))
        .expect_err("the replay passed");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Issue 12: a missing or empty corpus folder made its target's replay pass silently.
#[test]
fn a_missing_or_empty_fuzz_folder_fails_the_replay_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // No folders at all.
    let msg = panic_message(|| replay_in(root, "corpus"));
    assert!(msg.contains("corpus"), "{msg}");
    let msg = panic_message(|| replay_in(root, "regressions"));
    assert!(msg.contains("regressions"), "{msg}");
    // Every target's corpus folder holds an input but one, which is missing, then empty.
    for (target, _) in TARGETS {
        std::fs::create_dir_all(root.join("corpus").join(target)).unwrap();
        std::fs::write(root.join("corpus").join(target).join("empty"), b"").unwrap();
    }
    let last = TARGETS.last().unwrap().0;
    let last_dir = root.join("corpus").join(last);
    std::fs::remove_dir_all(&last_dir).unwrap();
    let msg = panic_message(|| replay_in(root, "corpus"));
    assert!(msg.contains(&last_dir.display().to_string()), "{msg}");
    std::fs::create_dir(&last_dir).unwrap();
    let msg = panic_message(|| replay_in(root, "corpus"));
    assert!(msg.contains(&last_dir.display().to_string()), "{msg}");
    // A regressions folder that is empty, or named after no target (a typo), fails too.
    let empty = root.join("regressions").join(TARGETS[0].0);
    std::fs::create_dir_all(&empty).unwrap();
    let msg = panic_message(|| replay_in(root, "regressions"));
    assert!(msg.contains(&empty.display().to_string()), "{msg}");
    std::fs::write(empty.join("empty"), b"").unwrap();
    assert_eq!(replay_in(root, "regressions"), 1);
    let typo = root.join("regressions").join("bundel");
    std::fs::create_dir(&typo).unwrap();
    std::fs::write(typo.join("x"), b"").unwrap();
    let msg = panic_message(|| replay_in(root, "regressions"));
    assert!(msg.contains("bundel"), "{msg}");
}

/// Every fuzz target has a check here, so its inputs are replayed.
#[test]
fn every_fuzz_target_is_replayed() {
    let mut targets: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    let mut checked: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    checked.sort();
    assert_eq!(targets, checked);
}

/// Seeds for each target, made from the log, snapshots and records of the sequential
/// workload, plus a few seeded random inputs for the structured modes.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mem = Arc::new(MemStorage::new());
    let mut run = Runner::new(mem.clone(), Some(mem.clone()), Settings::default());
    assert!(run.run(&sequential_script()));
    run.close();
    let mut out = Vec::new();
    let wal = Path::new("data/wal");
    for (i, name) in mem.list_dir(wal).unwrap().iter().enumerate() {
        let seg = mem.file_content(&wal.join(name)).unwrap();
        let mut input = vec![0u8];
        input.extend_from_slice(&seg);
        out.push(("wal_segment", format!("segment-{i}"), input));
        // A directory of this one segment, as raw bytes (recovery's raw segment kind).
        if i == 0 {
            let mut input = vec![0u8, 0, 0];
            input.extend_from_slice(&(seg.len() as u16).to_le_bytes());
            input.extend_from_slice(&seg);
            out.push(("recovery", "first-segment".into(), input));
        }
        let mut pos = SEGMENT_HEADER_LEN;
        let mut k = 0;
        while let Ok(f) = decode_frame(&seg[pos..]) {
            if k % 4 == 0 {
                out.push((
                    "event_payload",
                    format!("record-{}", f.lsn.0),
                    f.payload.to_vec(),
                ));
            }
            pos += f.len;
            k += 1;
        }
    }
    let snaps = Path::new("data/snapshots");
    for name in mem.list_dir(snaps).unwrap() {
        let file = mem.file_content(&snaps.join(&name)).unwrap();
        let mut raw = vec![0u8];
        raw.extend_from_slice(&file);
        out.push(("snapshot_file", format!("file-{}", &name[..20]), raw));
        let mut wrapped = vec![1u8, 1, 32, 0];
        wrapped.extend_from_slice(&file[64..]);
        out.push(("snapshot_file", format!("payload-{}", &name[..20]), wrapped));
    }
    let mut rng = SplitMix64::new(0xC0FFEE);
    for (target, n, len) in [
        ("wal_segment", 8, 96),
        ("recovery", 8, 600),
        ("model", 16, 300),
    ] {
        for i in 0..n {
            let mut input = vec![0u8; len];
            rng.fill(&mut input);
            if target == "wal_segment" {
                input[0] |= 1;
            }
            out.push((target, format!("random-{i}"), input));
        }
    }
    out
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand to regenerate the seeds"]
fn write_seed_corpora() {
    for (target, name, data) in seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }
}
