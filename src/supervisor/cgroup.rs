//! A cgroup v2 per run attempt (Linux), where this process may create one.
//!
//! The attempt's cgroup is a child of this process's own cgroup (the `0::` line of
//! `/proc/self/cgroup`, under the cgroup2 mount of `/proc/self/mountinfo`), named
//! `session-engine-<tag>-r<run>-a<attempt>`, `<tag>` a hash of the data directory, so
//! that a later open can find a run's cgroups. The child joins it between `fork` and
//! `exec` (`os::JoinCgroup`), so everything it starts is in it, whatever process group
//! or session it moves to; the supervisor checks that it did. The group is then counted
//! empty only when the cgroup is too, and killed by `cgroup.kill` after SIGTERM and the
//! grace period. A memory limit goes to `memory.max` when the memory controller is
//! enabled for the cgroup (else RLIMIT_AS). Anything missing is a fallback to the
//! process group alone, with its reason recorded (`run_contained`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Prefix of the cgroups the supervisor creates.
const PREFIX: &str = "session-engine-";

/// A cgroup the supervisor created for one attempt.
#[derive(Debug)]
pub(crate) struct Cgroup {
    pub dir: PathBuf,
    /// Whether `memory.max` holds the attempt's memory limit.
    pub memory_max: bool,
}

/// This process's cgroup v2 directory.
fn own_cgroup() -> Result<PathBuf, String> {
    let cg = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("/proc/self/cgroup cannot be read ({e})"))?;
    let rel = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 hierarchy")?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo cannot be read ({e})"))?;
    // Fields: id parent major:minor root mount-point options... - type source options.
    let mount = info
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            (right.split(' ').next() == Some("cgroup2") && f.get(3) == Some(&"/"))
                .then(|| f.get(4).map(|m| PathBuf::from(*m)))
                .flatten()
        })
        .ok_or("no cgroup2 file system is mounted")?;
    let rel = rel.trim().trim_start_matches('/');
    Ok(if rel.is_empty() {
        mount
    } else {
        mount.join(rel)
    })
}

/// The tag of data directory `root` in cgroup names.
fn tag(root: &Path) -> String {
    // FNV-1a of the path: stable across processes and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn name(root: &Path, run: u64, attempt: u32) -> String {
    format!("{PREFIX}{}-r{run}-a{attempt}", tag(root))
}

/// Creates attempt `attempt` of run `run`'s cgroup under this process's own, with
/// `memory` in `memory.max` when that file exists. The error says why there is none.
pub(crate) fn create(
    root: &Path,
    run: u64,
    attempt: u32,
    memory: Option<u64>,
) -> Result<Cgroup, String> {
    create_in(&own_cgroup()?, &name(root, run, attempt), memory)
}

fn create_in(parent: &Path, name: &str, memory: Option<u64>) -> Result<Cgroup, String> {
    if !parent.join("cgroup.procs").is_file() {
        return Err(format!("{} is not a cgroup v2 directory", parent.display()));
    }
    let dir = parent.join(name);
    std::fs::create_dir(&dir)
        .map_err(|e| format!("cannot create cgroup {} ({e})", dir.display()))?;
    let cg = Cgroup {
        dir,
        memory_max: false,
    };
    if !cg.dir.join("cgroup.procs").is_file() {
        cg.remove();
        return Err(format!("{} did not become a cgroup", cg.dir.display()));
    }
    if !cg.dir.join("cgroup.kill").is_file() {
        cg.remove();
        return Err(format!(
            "cgroup {} has no cgroup.kill (Linux 5.14 or later)",
            parent.display()
        ));
    }
    let mut cg = cg;
    if let Some(bytes) = memory
        && cg.dir.join("memory.max").is_file()
    {
        match std::fs::write(cg.dir.join("memory.max"), bytes.to_string()) {
            Ok(()) => cg.memory_max = true,
            Err(e) => tracing::warn!(error = %e, "memory.max cannot be written; RLIMIT_AS is used"),
        }
    }
    Ok(cg)
}

impl Cgroup {
    /// `cgroup.procs`, for the child to join.
    pub fn procs_path(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The processes in it.
    pub fn members(&self) -> Vec<u32> {
        std::fs::read_to_string(self.procs_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Sends `sig` to every process in it.
    pub fn signal(&self, sig: i32) {
        for pid in self.members() {
            super::os::signal_pid(pid, sig);
        }
    }

    /// SIGKILL to every process in it and its descendants, atomically (`cgroup.kill`).
    pub fn kill(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
    }

    /// How many processes of it the kernel's OOM killer killed: the `oom_kill` counter
    /// of its `memory.events` (`None` when the file or the counter is missing).
    pub fn oom_kills(&self) -> Option<u64> {
        oom_kills_in(&std::fs::read_to_string(self.dir.join("memory.events")).ok()?)
    }

    /// Removes it once it is empty (waiting up to a second for the kernel to let go).
    pub fn remove(&self) {
        let until = Instant::now() + Duration::from_secs(1);
        while std::fs::remove_dir(&self.dir).is_err() && self.dir.exists() {
            if Instant::now() > until {
                tracing::warn!(cgroup = %self.dir.display(), "a run's cgroup cannot be removed");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The `oom_kill` counter of a `memory.events` text (`key value` lines).
fn oom_kills_in(events: &str) -> Option<u64> {
    events.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "oom_kill").then(|| v.trim().parse().ok()).flatten()
    })
}

/// Kills and removes what is left of run `run`'s cgroups (at a reopen); returns how many
/// processes were in them.
pub(crate) fn clean_up_run(root: &Path, run: u64) -> usize {
    let Ok(parent) = own_cgroup() else {
        return 0;
    };
    let prefix = format!("{PREFIX}{}-r{run}-a", tag(root));
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return 0;
    };
    let mut found = 0;
    for e in entries.flatten() {
        let is_ours = e.file_name().to_str().is_some_and(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
        });
        if !is_ours || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let cg = Cgroup {
            dir: e.path(),
            memory_max: false,
        };
        found += cg.members().len();
        cg.kill();
        cg.remove();
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_folder_that_is_not_a_cgroup_is_refused_with_a_reason_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let e = create_in(tmp.path(), "x", Some(1 << 20)).unwrap_err();
        assert!(e.contains("is not a cgroup v2 directory"), "{e}");
        assert!(!tmp.path().join("x").exists());
        // Files named like a cgroup's do not make a folder one: the child is no cgroup.
        std::fs::write(tmp.path().join("cgroup.procs"), "").unwrap();
        let e = create_in(tmp.path(), "x", None).unwrap_err();
        assert!(e.contains("did not become a cgroup"), "{e}");
        assert!(
            !tmp.path().join("x").exists(),
            "the folder it made is removed"
        );
    }

    /// The OOM decision reads `memory.events` of the attempt's cgroup: a fake one here
    /// (this machine may have no memory controller delegated).
    #[test]
    fn oom_kills_are_read_from_memory_events() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = Cgroup {
            dir: tmp.path().to_path_buf(),
            memory_max: true,
        };
        assert_eq!(cg.oom_kills(), None, "no memory.events");
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\noom_group_kill 0\n";
        std::fs::write(tmp.path().join("memory.events"), events).unwrap();
        assert_eq!(
            cg.oom_kills(),
            Some(0),
            "the limit was reached, nothing killed"
        );
        std::fs::write(
            tmp.path().join("memory.events"),
            events.replace("oom_kill 0", "oom_kill 2"),
        )
        .unwrap();
        assert_eq!(cg.oom_kills(), Some(2));
        // `oom_group_kill` is not `oom_kill`; garbage is no count.
        assert_eq!(oom_kills_in("oom_group_kill 3\n"), None);
        assert_eq!(oom_kills_in("oom_kill x\n"), None);
        assert_eq!(oom_kills_in(""), None);
    }

    #[test]
    fn names_are_per_data_directory_run_and_attempt() {
        let a = name(Path::new("/data/a"), 3, 1);
        assert!(
            a.starts_with("session-engine-") && a.ends_with("-r3-a1"),
            "{a}"
        );
        assert_ne!(a, name(Path::new("/data/b"), 3, 1));
        assert_eq!(a, name(Path::new("/data/a"), 3, 1));
    }
}
