//! Spawning a run's process and threads, retrying a spawn that failed for want of a resource.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use process_wrap::std::{ChildWrapper, CommandWrap, ProcessGroup};

use crate::run::{RunId, RunSpec, Stream};

use super::{Msg, cgroup, os};

/// Whether a failure of `fork`, `pipe`, `clone` or `exec` is for want of a resource that
/// other processes or threads give back when they end (EAGAIN: the process or thread
/// limit; ENOMEM; EMFILE, ENFILE: the descriptor limits; EINTR), so trying again shortly
/// may succeed, as a shell retries a `fork`.
pub(crate) fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::EINTR)
    )
}

/// The pauses between tries of an operation that failed for want of a resource:
/// about 2 s in all.
pub(crate) const RESOURCE_RETRY_MS: [u64; 10] = [5, 10, 20, 40, 80, 160, 320, 500, 500, 500];

/// Runs `op` until it succeeds, fails otherwise than [`transient`]ly, or has failed
/// transiently [`RESOURCE_RETRY_MS`]`.len() + 1` times, calling `pause` between tries.
pub(crate) fn retry_transient<T>(
    mut op: impl FnMut() -> std::io::Result<T>,
    mut pause: impl FnMut(Duration),
) -> std::io::Result<T> {
    let mut delays = RESOURCE_RETRY_MS.iter();
    loop {
        match op() {
            Err(e) if transient(&e) => match delays.next() {
                Some(ms) => pause(Duration::from_millis(*ms)),
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Starts a thread running `f`, trying again (see [`retry_transient`]) while the thread
/// limit refuses it. `stack` is its stack size (`None`: the default).
pub(crate) fn spawn_thread<T: Send + 'static>(
    name: String,
    stack: Option<usize>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<Option<T>>> {
    use std::sync::{Mutex, PoisonError};
    // A refused spawn drops the closure it was given: keep `f` outside it.
    let slot = Arc::new(Mutex::new(Some(f)));
    retry_transient(
        || {
            let slot = Arc::clone(&slot);
            let mut b = std::thread::Builder::new().name(name.clone());
            if let Some(size) = stack {
                b = b.stack_size(size);
            }
            b.spawn(move || {
                let f = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                f.map(|f| f())
            })
        },
        std::thread::sleep,
    )
}

/// Stack of the reader and waiter threads: they hold nothing big on it.
pub(super) const SMALL_STACK: usize = 128 * 1024;

pub(super) fn spawn(
    spec: &RunSpec,
    cg: Option<&cgroup::Cgroup>,
) -> std::io::Result<Box<dyn ChildWrapper>> {
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut w = CommandWrap::from(cmd);
    w.wrap(ProcessGroup::leader()).wrap(os::Rlimits {
        // memory.max holds the limit when the cgroup has it.
        memory: spec
            .limits
            .max_memory_bytes
            .filter(|_| !cg.is_some_and(|c| c.memory_max)),
        cpu: spec.limits.max_cpu_secs,
    });
    if let Some(c) = cg {
        let procs = std::ffi::CString::new(c.procs_path().into_os_string().into_encoded_bytes())
            .map_err(std::io::Error::other)?;
        w.wrap(os::JoinCgroup { procs });
    }
    w.spawn()
}

pub(super) fn reader(
    id: RunId,
    mut r: impl Read + Send + 'static,
    stream: Stream,
    tx: Sender<Msg>,
) -> std::io::Result<()> {
    spawn_thread(format!("run-{id}-out"), Some(SMALL_STACK), move || {
        let mut buf = vec![0u8; crate::run::MAX_CHUNK];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(Msg::Out(stream, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(Msg::Eof);
    })
    .map(drop)
}
