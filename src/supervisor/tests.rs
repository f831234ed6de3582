use super::attempt::limit_that_ended;
use super::spawn::{RESOURCE_RETRY_MS, retry_transient};
use super::*;
use crate::run::EndedBy;

/// The decision on what ended an attempt, from a fake cgroup directory's
/// `memory.events` (this machine may have no memory controller delegated).
#[test]
fn an_oom_kill_counted_by_the_runs_cgroup_ends_a_failed_attempt_by_memory() {
    use crate::run::Limits;
    let tmp = tempfile::tempdir().unwrap();
    let cg = |memory_max| cgroup::Cgroup {
        dir: tmp.path().to_path_buf(),
        memory_max,
    };
    let events = |kills: u32| {
        std::fs::write(
            tmp.path().join("memory.events"),
            format!("low 0\nhigh 0\nmax 3\noom 1\noom_kill {kills}\n"),
        )
        .unwrap();
    };
    let killed = ExitKind::Signal(libc::SIGKILL);
    let memory = Limits {
        max_memory_bytes: Some(1 << 20),
        ..Limits::default()
    };
    events(1);
    assert_eq!(
        limit_that_ended(killed, &memory, Some(&cg(true))),
        Some(EndedBy::Memory)
    );
    // A leader that exits non-zero after a child of it was killed: memory too.
    assert_eq!(
        limit_that_ended(ExitKind::Code(137), &memory, Some(&cg(true))),
        Some(EndedBy::Memory)
    );
    // An attempt that succeeded anyway was not ended by the limit.
    assert_eq!(
        limit_that_ended(ExitKind::Code(0), &memory, Some(&cg(true))),
        None
    );
    // No kill counted, no memory.max of the run's, or no cgroup: not memory.
    events(0);
    assert_eq!(limit_that_ended(killed, &memory, Some(&cg(true))), None);
    events(4);
    assert_eq!(limit_that_ended(killed, &memory, Some(&cg(false))), None);
    assert_eq!(limit_that_ended(killed, &memory, None), None);
    std::fs::remove_file(tmp.path().join("memory.events")).unwrap();
    assert_eq!(limit_that_ended(killed, &memory, Some(&cg(true))), None);
    // An OOM kill outranks the CPU limit's guess from a SIGKILL.
    let both = Limits {
        max_cpu_secs: Some(1),
        ..memory.clone()
    };
    assert_eq!(limit_that_ended(killed, &both, None), Some(EndedBy::Cpu));
    events(1);
    assert_eq!(
        limit_that_ended(killed, &both, Some(&cg(true))),
        Some(EndedBy::Memory)
    );
    assert_eq!(
        limit_that_ended(ExitKind::Signal(libc::SIGXCPU), &both, None),
        Some(EndedBy::Cpu)
    );
}

fn os_error(code: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(code)
}

/// A fork or thread refused for want of a resource (the 50-run burst's failure under
/// load) is tried again; any other failure is final at once.
#[test]
fn a_spawn_refused_for_want_of_a_resource_is_tried_again_and_others_are_not() {
    let mut tries = 0;
    let mut paused = Vec::new();
    let r = retry_transient(
        || {
            tries += 1;
            if tries < 4 {
                Err(os_error(libc::EAGAIN))
            } else {
                Ok(7)
            }
        },
        |d| paused.push(d),
    );
    assert_eq!(r.unwrap(), 7);
    assert_eq!(tries, 4);
    assert_eq!(paused, [5, 10, 20].map(Duration::from_millis));
    for code in [libc::ENOMEM, libc::EMFILE, libc::ENFILE] {
        let mut tries = 0;
        let r: std::io::Result<()> = retry_transient(
            || {
                tries += 1;
                Err(os_error(code))
            },
            |_| {},
        );
        assert_eq!(r.unwrap_err().raw_os_error(), Some(code));
        assert_eq!(tries, RESOURCE_RETRY_MS.len() + 1);
    }
    for code in [libc::ENOENT, libc::EACCES, libc::ENOEXEC] {
        let mut tries = 0;
        let r: std::io::Result<()> = retry_transient(
            || {
                tries += 1;
                Err(os_error(code))
            },
            |_| panic!("paused for a final error"),
        );
        assert!(r.is_err());
        assert_eq!(tries, 1, "errno {code} was tried again");
    }
}
