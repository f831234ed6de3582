//! The fuzz targets' committed inputs, replayed as ordinary tests through the same checks
//! the targets run (`tests/common/checks.rs`): every minimized crash input under
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
    let mut n = 0;
    for (target, check) in TARGETS {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            with_context(|| format!("{}", file.display()), || check(&data));
            n += 1;
        }
    }
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
    assert!(n > 0, "no seed corpus found under {}", fuzz_dir().display());
    eprintln!("{n} seed inputs replayed");
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
