//! W13: supervised runs (issue 17). The cost of starting a program through
//! `SessionManager::exec` (request, `started` and `exited` recorded, its own process
//! group, output pipes and a supervisor thread) against a bare `fork` + `execv` +
//! `waitpid` loop of the same program, `/bin/true`, in the same rounds.
//!
//! Each round runs `per_round` runs of every system one after the other (the order
//! rotating per round): the bare loop, `std::process::Command::status`, and
//! `exec(...).wait()` on a manager with durable (`Always`) and buffered (`None`) commits,
//! each attempt in a cgroup of its own where one can be made (the default), and durable
//! without a cgroup.
//! A system's figure is the median of its per-round times per run; the overhead is the
//! median of the per-round differences from the bare loop, the ratio the median of the
//! per-round ratios (paired). Then a burst: `burst` runs requested back to back (each
//! `exec` returns once its request is durable and its supervisor thread is started),
//! then waited for: runs started per second and runs completed per second, median over
//! the rounds.

use std::ffi::CString;
use std::path::Path;
use std::time::Instant;

use session_engine::{Durability, ExecRequest, ManagerOptions, NewSession, SessionManager};

use crate::workload::{engine_options, fresh_dir, median, remove, session_id};
use crate::{Config, Section, Unit};

const PROGRAM: &str = "/bin/true";

/// One `fork` + `execv` + `waitpid` of `PROGRAM`, its output to nowhere but inherited as
/// a bare loop would leave it.
#[allow(unsafe_code)]
fn fork_exec_wait(path: &CString, argv: &[*const libc::c_char]) {
    // SAFETY: the child calls only `execv` and `_exit`, both async-signal-safe, on
    // memory prepared before the fork; the parent waits for that child only.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            assert_eq!(
                std::io::Error::last_os_error().kind(),
                std::io::ErrorKind::Interrupted
            );
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{PROGRAM} failed"
        );
    }
}

fn manager(root: &Path, durability: Durability) -> SessionManager {
    let d = fresh_dir(root, "w13-runs");
    let m = SessionManager::open(&d, ManagerOptions::with_engine(engine_options(durability)))
        .expect("open manager");
    m.create_session(NewSession {
        id: Some(session_id(0)),
        timeout_secs: 0,
        ..NewSession::default()
    })
    .expect("create session");
    remove(&d);
    m
}

fn exec_wait(m: &SessionManager, cgroup: bool) {
    let s = session_id(0);
    let mut req = ExecRequest::new(s.as_str(), PROGRAM, &[]);
    req.cgroup = cgroup;
    let run = m.exec(req).expect("exec").wait().expect("wait");
    assert_eq!(run.status.as_str(), "completed", "{run:?}");
}

/// Microseconds per call of `f`, over `n` calls.
fn per_run_us(n: u64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

pub fn w13(cfg: &Config) -> Section {
    let rounds = cfg.n(10, 2) as usize;
    let per_round = cfg.n(50, 5);
    let burst = cfg.n(100, 10) as usize;
    let mut sec = Section::new(
        "W13",
        format!(
            "supervised runs of {PROGRAM}, {rounds} rounds of {per_round} runs per system \
             (order rotating), bursts of {burst}"
        ),
    );
    let path = CString::new(PROGRAM).unwrap();
    let argv: [*const libc::c_char; 2] = [path.as_ptr(), std::ptr::null()];
    let durable = manager(&cfg.dir, Durability::Always);
    let buffered = manager(&cfg.dir, Durability::None);
    // Warm-up: page cache, the first thread stacks, the runs/ folder.
    for _ in 0..5 {
        fork_exec_wait(&path, &argv);
        exec_wait(&durable, true);
        exec_wait(&durable, false);
        exec_wait(&buffered, true);
    }
    // times[system][round], µs per run: bare, std, durable, buffered, durable without
    // a cgroup.
    let mut times: [Vec<f64>; 5] = Default::default();
    for round in 0..rounds {
        for k in 0..5 {
            let sys = (k + round) % 5;
            let us = match sys {
                0 => per_run_us(per_round, || fork_exec_wait(&path, &argv)),
                1 => per_run_us(per_round, || {
                    let s = std::process::Command::new(PROGRAM).status().expect("spawn");
                    assert!(s.success());
                }),
                2 => per_run_us(per_round, || exec_wait(&durable, true)),
                3 => per_run_us(per_round, || exec_wait(&buffered, true)),
                _ => per_run_us(per_round, || exec_wait(&durable, false)),
            };
            times[sys].push(us);
        }
    }
    let med = |xs: &[f64]| median(&mut xs.to_vec());
    let paired = |a: usize, f: fn(f64, f64) -> f64| -> f64 {
        let mut v: Vec<f64> = (0..rounds).map(|r| f(times[a][r], times[0][r])).collect();
        median(&mut v)
    };
    let durable_us = med(&times[2]);
    sec.row(
        "engine `exec` + `wait`, durable (Always)",
        durable_us,
        Unit::Us,
        None,
    );
    sec.note(format!(
        "{:.0} runs/s one after another; {:.1}× the bare loop's time per run (paired)",
        1e6 / durable_us,
        paired(2, |a, b| a / b)
    ));
    let buffered_us = med(&times[3]);
    sec.row(
        "engine `exec` + `wait`, buffered (None)",
        buffered_us,
        Unit::Us,
        Some(buffered_us / durable_us),
    );
    sec.note(format!(
        "{:.0} runs/s; {:.1}× the bare loop's time per run (paired)",
        1e6 / buffered_us,
        paired(3, |a, b| a / b)
    ));
    let plain_us = med(&times[4]);
    sec.row(
        "engine `exec` + `wait`, durable, no cgroup",
        plain_us,
        Unit::Us,
        Some(plain_us / durable_us),
    );
    sec.note(format!(
        "{:.0} runs/s; {:.1}× the bare loop's time per run (paired)",
        1e6 / plain_us,
        paired(4, |a, b| a / b)
    ));
    let std_us = med(&times[1]);
    sec.row(
        "`std::process::Command::status`",
        std_us,
        Unit::Us,
        Some(std_us / durable_us),
    );
    let bare_us = med(&times[0]);
    sec.row(
        "bare `fork` + `execv` + `waitpid` loop",
        bare_us,
        Unit::Us,
        Some(bare_us / durable_us),
    );
    sec.note(format!("{:.0} runs/s", 1e6 / bare_us));
    sec.row_plain(
        "overhead per run, durable (engine − bare, paired)",
        paired(2, |a, b| a - b),
        Unit::Us,
    );
    sec.row_plain(
        "overhead per run, buffered (engine − bare, paired)",
        paired(3, |a, b| a - b),
        Unit::Us,
    );

    // Bursts: requests back to back, then every run waited for.
    let mut started = Vec::new();
    let mut completed = Vec::new();
    for _ in 0..rounds {
        let m = &durable;
        let s = session_id(0);
        let t = Instant::now();
        let handles: Vec<_> = (0..burst)
            .map(|_| {
                m.exec(ExecRequest::new(s.as_str(), PROGRAM, &[]))
                    .expect("exec")
            })
            .collect();
        let all_started = t.elapsed().as_secs_f64();
        for h in handles {
            let r = h.wait().expect("wait");
            assert_eq!(r.status.as_str(), "completed", "{r:?}");
        }
        let all_done = t.elapsed().as_secs_f64();
        started.push(burst as f64 / all_started);
        completed.push(burst as f64 / all_done);
    }
    sec.row_plain(
        format!("burst of {burst}, durable: runs started per second"),
        median(&mut started),
        Unit::Runs,
    );
    sec.note("`exec` returned: request durable, supervisor thread started");
    sec.row_plain(
        format!("burst of {burst}, durable: runs completed per second"),
        median(&mut completed),
        Unit::Runs,
    );
    sec.note("every run recorded `exited`");
    sec
}
