//! The operating system's side of supervision (Linux): resource limits set in the child
//! before `exec`, `wait4` with resource use, process-group signals and membership, a
//! process's identity (`/proc/<pid>/stat` start time and the boot id).
//!
//! The only `unsafe` of the supervisor is here: `pre_exec` (whose closures call nothing
//! but `setrlimit`, and `open`/`write`/`close` to join a cgroup, all async-signal-safe),
//! `wait4` and `kill`.
#![allow(unsafe_code)]

use std::io;
use std::process::Command;

use process_wrap::std::{CommandWrap, CommandWrapper};

use crate::run::{ExitKind, Usage};

/// Sets RLIMIT_AS and RLIMIT_CPU in the child between `fork` and `exec`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rlimits {
    /// RLIMIT_AS, bytes.
    pub memory: Option<u64>,
    /// RLIMIT_CPU soft limit, seconds (the hard limit is one second more, so SIGXCPU
    /// comes first and SIGKILL after).
    pub cpu: Option<u64>,
}

impl CommandWrapper for Rlimits {
    fn pre_spawn(&mut self, command: &mut Command, _core: &CommandWrap) -> io::Result<()> {
        use std::os::unix::process::CommandExt;
        let limits = *self;
        if limits.memory.is_none() && limits.cpu.is_none() {
            return Ok(());
        }
        // SAFETY: the closure runs in the forked child; it allocates nothing, takes no
        // lock and calls only `setrlimit`, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                if let Some(m) = limits.memory {
                    let l = libc::rlimit {
                        rlim_cur: m as libc::rlim_t,
                        rlim_max: m as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &l) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some(c) = limits.cpu {
                    let l = libc::rlimit {
                        rlim_cur: c as libc::rlim_t,
                        rlim_max: c.saturating_add(1) as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_CPU, &l) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Ok(())
    }
}

/// Moves the child into a cgroup between `fork` and `exec`: writes `0` to the cgroup's
/// `cgroup.procs`. A failure fails the spawn (nothing ran); the supervisor then spawns
/// again without the cgroup and records the fallback.
#[derive(Debug)]
pub(crate) struct JoinCgroup {
    /// The cgroup's `cgroup.procs`.
    pub procs: std::ffi::CString,
}

impl CommandWrapper for JoinCgroup {
    fn pre_spawn(&mut self, command: &mut Command, _core: &CommandWrap) -> io::Result<()> {
        use std::os::unix::process::CommandExt;
        let path = self.procs.clone();
        // SAFETY: the closure runs in the forked child and calls only `open`, `write` and
        // `close` (async-signal-safe) on a path allocated before the fork.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let error = io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(error);
                }
                Ok(())
            });
        }
        Ok(())
    }
}

/// Sends `sig` to process `pid` (never to a group, never to pid 0 or 1).
pub(crate) fn signal_pid(pid: u32, sig: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill takes plain values.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Waits for process `pid` (a child of this process) and reaps it, with its resource use.
pub(crate) fn wait4(pid: u32) -> io::Result<(ExitKind, Usage)> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    let mut status: libc::c_int = 0;
    // SAFETY: plain values, and a zeroed rusage is a valid one.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `ru` are valid for writes for the call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let exit = if libc::WIFSIGNALED(status) {
        ExitKind::Signal(libc::WTERMSIG(status))
    } else {
        ExitKind::Code(libc::WEXITSTATUS(status))
    };
    let us = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64;
    Ok((
        exit,
        Usage {
            user_us: us(ru.ru_utime),
            sys_us: us(ru.ru_stime),
            max_rss_kb: ru.ru_maxrss.max(0) as u64,
        },
    ))
}

/// Sends `sig` to every process of group `pgid`; false when the group has no process.
pub(crate) fn signal_group(pgid: u32, sig: i32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill takes plain values; a negative pid names the group.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), empty if it cannot be read.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What `/proc/<pid>/stat` says of a process: state, process group, start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3 (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Field 5.
    pub pgrp: u32,
    /// Field 22, clock ticks after boot.
    pub start_time: u64,
}

/// `/proc/<pid>/stat` of `pid`, if it exists.
pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: fields after
    // the last ')' are plain.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// The live (not zombie) processes of group `pgid`, with their start times.
pub(crate) fn group_members(pgid: u32) -> Vec<(u32, u64)> {
    if !signal_group(pgid, 0) {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let st = proc_stat(pid)?;
            (st.pgrp == pgid && st.state != 'Z').then_some((pid, st.start_time))
        })
        .collect()
}
