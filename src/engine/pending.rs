//! [`Pending`]: the answer to a submitted command, waited for by blocking
//! ([`Pending::wait`]) or by awaiting it (it is a [`Future`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use super::Shared;
use super::answer::{Answer, Waited};
use super::wake::Watch;
use crate::command::Committed;
use crate::error::{Error, Result};

/// An answer that will arrive once the command is durable (or refused).
///
/// Wait for it in one of two ways:
///
/// * [`Pending::wait`] blocks the calling thread until the writer answers: asleep on a
///   condition variable, after a bounded check of at most `WAIT_SPIN` (chosen by
///   measurement, see docs/benchmarks.md);
/// * `pending.await`: `Pending` is a [`Future`] for async code. It needs no particular
///   runtime (the engine depends on none): the writer wakes the task's [`Waker`](std::task::Waker) when the
///   answer is there, so awaiting costs no thread and no polling loop.
///
/// The command was queued when [`Engine::submit`](super::Engine::submit) returned:
/// dropping a `Pending` (or a future awaiting it) does not cancel it; it is still decided
/// and, if accepted, committed. Only its answer is lost.
///
/// A `Pending` polled again after it completed yields `Err(Error::Closed)`.
///
/// # Example
///
/// Awaiting a command. Any executor will do; this one is a few lines of `std` that park
/// the thread until the waker is called.
///
/// ```
/// use std::future::Future;
/// use std::sync::Arc;
/// use std::task::{Context, Poll, Wake, Waker};
/// use session_engine::{Command, Engine, NewSession, Options, Outcome};
///
/// struct Unpark(std::thread::Thread);
/// impl Wake for Unpark {
///     fn wake(self: Arc<Self>) {
///         self.0.unpark();
///     }
/// }
///
/// fn block_on<F: Future>(f: F) -> F::Output {
///     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
///     let mut cx = Context::from_waker(&waker);
///     let mut f = std::pin::pin!(f);
///     loop {
///         match f.as_mut().poll(&mut cx) {
///             Poll::Ready(v) => return v,
///             Poll::Pending => std::thread::park(),
///         }
///     }
/// }
///
/// # fn main() -> session_engine::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let engine = Engine::open(dir.path().join("data"), Options::default())?;
/// let pending = engine.submit(Command::CreateSession(Box::default()));
/// let committed = block_on(async { pending.await })?;
/// assert!(matches!(committed.outcome, Outcome::Session(_)));
/// assert_eq!(engine.last_lsn(), committed.lsn);
///
/// // The blocking form is unchanged.
/// let again = engine.submit(Command::CreateSession(Box::new(NewSession::default())));
/// assert_eq!(again.wait()?.lsn, committed.lsn.next());
/// # Ok(())
/// # }
/// ```
#[must_use = "a pending command is only known to be durable once waited for"]
pub struct Pending(PendingInner);

enum PendingInner {
    Ready(Option<Result<Committed>>),
    Waiting(Answer<Result<Committed>>, Watch, Arc<Shared>),
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// How often a waiting caller checks whether the writer is gone.
pub(super) const WAIT_CHECK: Duration = Duration::from_millis(20);

/// Waits for an answer. A request that reached the channel after the writer's last drain
/// is never answered; once the writer thread is gone (it cannot run another batch then),
/// the wait ends with [`Error::Closed`] rather than block forever.
pub(super) fn wait_answer<T>(rx: &Answer<Result<T>>, shared: &Shared) -> Result<T> {
    loop {
        match rx.wait_timeout(WAIT_CHECK) {
            Waited::Ready(r) => return r,
            Waited::Dropped => return Err(Error::Closed),
            Waited::TimedOut => {
                if shared.writer_done.load(Ordering::SeqCst) {
                    return match rx.wait_timeout(Duration::ZERO) {
                        Waited::Ready(r) => r,
                        Waited::Dropped | Waited::TimedOut => Err(Error::Closed),
                    };
                }
            }
        }
    }
}

/// The asynchronous [`wait_answer`]: the answer's slot holds the waker, and so does the
/// writer-gone set, so the end of the writer thread also wakes the task.
pub(super) fn poll_answer<T>(
    rx: &Answer<Result<T>>,
    watch: &mut Watch,
    shared: &Shared,
    cx: &mut Context<'_>,
) -> Poll<Result<T>> {
    if let Poll::Ready(r) = rx.poll(cx) {
        watch.clear();
        return Poll::Ready(r.unwrap_or(Err(Error::Closed)));
    }
    watch.register(cx.waker());
    if shared.writer_done.load(Ordering::SeqCst) {
        watch.clear();
        return Poll::Ready(match rx.try_take() {
            Some(Some(r)) => r,
            Some(None) | None => Err(Error::Closed),
        });
    }
    Poll::Pending
}

impl Pending {
    /// An answer known at once (a refusal before queueing).
    pub(super) fn ready(r: Result<Committed>) -> Pending {
        Pending(PendingInner::Ready(Some(r)))
    }

    /// The answer the writer will send to `rx`.
    pub(super) fn waiting(rx: Answer<Result<Committed>>, shared: &Arc<Shared>) -> Pending {
        let watch = Watch::new(&shared.writer_gone);
        Pending(PendingInner::Waiting(rx, watch, Arc::clone(shared)))
    }

    /// Whether the answer has arrived (so [`Pending::wait`] will not block).
    pub fn is_ready(&self) -> bool {
        match &self.0 {
            PendingInner::Ready(_) => true,
            PendingInner::Waiting(rx, _, _) => rx.is_settled(),
        }
    }

    /// Blocks until the command is durable (or refused).
    ///
    /// On an async runtime's worker thread, `.await` the `Pending` instead.
    pub fn wait(self) -> Result<Committed> {
        match self.0 {
            PendingInner::Ready(r) => r.unwrap_or(Err(Error::Closed)),
            // The caller sleeps until the writer answers, without polling first: a durable
            // answer comes a sync (100 µs or more) after the wait starts, so polling only
            // takes CPU time the writer, the projector and the other callers need.
            PendingInner::Waiting(rx, _, shared) => {
                spin_until_settled(&rx, wait_spin());
                wait_answer(&rx, &shared)
            }
        }
    }
}

/// How long [`Pending::wait`] checks for the answer before it sleeps: [`WAIT_SPIN`], or
/// `SESSION_ENGINE_WAIT_SPIN_US` microseconds (at most 1,000) where that is set, to measure
/// another choice without a build (see docs/benchmarks.md, "Waiting for an answer").
fn wait_spin() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        std::env::var("SESSION_ENGINE_WAIT_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(WAIT_SPIN, |us| Duration::from_micros(us.min(1_000)))
    })
}

/// The bounded spin of [`Pending::wait`], chosen by measurement (docs/benchmarks.md).
pub(super) const WAIT_SPIN: Duration = Duration::ZERO;

/// Checks `rx` for up to `spin`, returning as soon as it has settled.
fn spin_until_settled<T>(rx: &Answer<T>, spin: Duration) {
    if spin.is_zero() {
        return;
    }
    let until = std::time::Instant::now() + spin;
    while !rx.is_settled() && std::time::Instant::now() < until {
        for _ in 0..32 {
            std::hint::spin_loop();
        }
    }
}

impl Future for Pending {
    type Output = Result<Committed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Committed>> {
        match &mut self.get_mut().0 {
            PendingInner::Ready(r) => Poll::Ready(r.take().unwrap_or(Err(Error::Closed))),
            PendingInner::Waiting(rx, watch, shared) => poll_answer(rx, watch, shared, cx),
        }
    }
}
