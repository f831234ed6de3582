//! The engine's log on NATS JetStream: a [`LogBackend`] whose records are the messages of
//! one stream per data set.
//!
//! ```text
//! data set "ds" ── stream SE_ds, subjects se.ds.> (file storage, R replicas)
//! record LSN n  ── one message, stream sequence n, on se.ds.s.<session> (an event of one
//!                  session) or se.ds.x (any other event), with the headers
//!                  Nats-Msg-Id: ds:n:<writer>                 (a retry is deduplicated)
//!                  Nats-Expected-Last-Sequence: n-1           (the log stays dense; a second
//!                                                              writer is refused)
//!                  Nats-Expected-Last-Subject-Sequence: the session's previous record
//! open          ── stream info (last sequence L), then an ordered consumer from the
//!                  snapshot's LSN + 1 until the message with sequence L (never a timeout)
//! sync          ── waits for every publish acknowledgement of the batch: stored by a
//!                  quorum of the stream's replicas (synced when the servers run with
//!                  `sync_interval: always`)
//! ```
//!
//! The LSN *is* the stream sequence, so the engine's rule that LSNs are dense from 1 is
//! the stream's own (a deleted or purged message is a hole, refused as corruption). The
//! library stays free of async runtimes: this crate keeps a small tokio runtime of its
//! own, and the engine's threads block on it.

mod node;
mod writer;

pub use node::{FOLLOW_CHECK, MAX_ATTEMPTS, Node};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use session_engine::backend::{LogBackend, Opened, ReadFn, RecordSink, Recovery, StartPoint};
use session_engine::{Error, Lsn, Result};

/// The oldest server this backend runs on: per-subject expected sequences are not
/// serialised before 2.9.20 (nats-server #4319); 2.10 is the first release line with
/// the fix throughout.
pub const MIN_SERVER_VERSION: (u64, u64, u64) = (2, 10, 0);

/// Where the log lives and how long an operation may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsOptions {
    /// `host:port` of each server (the client reconnects to another one if its server
    /// goes away).
    pub servers: Vec<String>,
    /// The data set: the stream `SE_<data_set>` on subjects `se.<data_set>.>`.
    pub data_set: String,
    /// Replicas of a stream this backend creates (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    /// The longest any one operation (connecting, an append's acknowledgement with its
    /// retries, a message of a replay) may take before it fails with
    /// [`Error::LogUnavailable`].
    pub timeout: Duration,
}

impl NatsOptions {
    /// Parses `nats://HOST:PORT[,HOST:PORT...][/DATA_SET][?replicas=N]` (data set
    /// `default`, replicas 1 when not given).
    pub fn parse(url: &str) -> Result<NatsOptions> {
        let bad = |reason: String| Error::InvalidInput {
            field: "log",
            reason,
        };
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| bad(format!("{url:?} does not start with nats://")))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (hosts, data_set) = match rest.split_once('/') {
            Some((h, d)) => (h, d),
            None => (rest, "default"),
        };
        let mut servers = Vec::new();
        for h in hosts.split(',') {
            let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && !host.contains(['/', '@', ' '])
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(bad(format!("{h:?} in {url:?} is not HOST:PORT")));
            }
            servers.push(h.to_string());
        }
        if data_set.is_empty()
            || data_set.len() > 64
            || !data_set
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad(format!(
                "data set {data_set:?} in {url:?} is not 1-64 characters of [A-Za-z0-9_-]"
            )));
        }
        let mut replicas = 1;
        for kv in query.into_iter().flat_map(|q| q.split('&')) {
            match kv.split_once('=') {
                Some(("replicas", n)) => {
                    replicas = n
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=5).contains(n))
                        .ok_or_else(|| bad(format!("replicas={n} is not 1 to 5")))?;
                }
                _ => return Err(bad(format!("unknown parameter {kv:?} in {url:?}"))),
            }
        }
        Ok(NatsOptions {
            servers,
            data_set: data_set.to_string(),
            replicas,
            timeout: Duration::from_secs(30),
        })
    }

    /// The stream's name.
    pub fn stream_name(&self) -> String {
        format!("SE_{}", self.data_set)
    }

    fn subject_prefix(&self) -> String {
        format!("se.{}", self.data_set)
    }
}

/// The log in a JetStream stream. Clones share the connection and the runtime.
#[derive(Clone)]
pub struct NatsLog {
    shared: Arc<Shared>,
}

struct Shared {
    options: NatsOptions,
    /// What stands for a file in errors: `nats://servers/data set`.
    place: PathBuf,
    runtime: tokio::runtime::Runtime,
    conn: Mutex<Option<jetstream::Context>>,
    /// Publishes sent again after a lost acknowledgement.
    retries: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for NatsLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsLog")
            .field("log", &self.shared.place)
            .finish()
    }
}

impl NatsLog {
    /// A backend for `options`; nothing is contacted before the first open or read.
    pub fn new(options: NatsOptions) -> Result<NatsLog> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("session-engine-nats")
            .enable_all()
            .build()
            .map_err(|e| Error::LogUnavailable {
                log: "nats".into(),
                reason: format!("cannot start the client's runtime: {e}"),
            })?;
        let place = PathBuf::from(format!(
            "nats://{}/{}",
            options.servers.join(","),
            options.data_set
        ));
        Ok(NatsLog {
            shared: Arc::new(Shared {
                options,
                place,
                runtime,
                conn: Mutex::new(None),
                retries: Default::default(),
            }),
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> &NatsOptions {
        &self.shared.options
    }

    /// How many publishes were sent again (with the same message id) after their
    /// acknowledgement was lost (a server gone, a leader being elected).
    pub fn retries(&self) -> u64 {
        self.shared
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_retry(&self) {
        self.shared
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The stream's last sequence now (the LSN of its last record).
    pub fn last_sequence(&self) -> Result<u64> {
        let js = self.context()?;
        self.stream(&js, false).map(|(_, last)| last)
    }

    /// `nats://servers/data set`, the place errors name.
    pub fn place(&self) -> &Path {
        &self.shared.place
    }

    fn unavailable(&self, reason: impl fmt::Display) -> Error {
        Error::LogUnavailable {
            log: self.shared.place.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.shared.runtime.enter()
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.shared.runtime
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.shared.runtime.block_on(f)
    }

    /// The JetStream context, connecting (and checking the server's version) at the first
    /// call.
    fn context(&self) -> Result<jetstream::Context> {
        let mut conn = self.shared.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(js) = &*conn {
            return Ok(js.clone());
        }
        let o = &self.shared.options;
        let addrs: Vec<async_nats::ServerAddr> = o
            .servers
            .iter()
            .map(|s| format!("nats://{s}").parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.unavailable(format!("bad server address: {e}")))?;
        let client = self
            .block_on(async {
                tokio::time::timeout(
                    o.timeout,
                    async_nats::ConnectOptions::new()
                        .connection_timeout(o.timeout.min(Duration::from_secs(5)))
                        .request_timeout(Some(attempt_timeout(o)))
                        .reconnect_delay_callback(|n| {
                            Duration::from_millis(100 * (n as u64).min(10))
                        })
                        .connect(addrs),
                )
                .await
            })
            .map_err(|_| self.unavailable("no server answered in time"))?
            .map_err(|e| self.unavailable(format!("cannot connect: {e}")))?;
        let version = client.server_info().version;
        if parse_version(&version).is_none_or(|v| v < MIN_SERVER_VERSION) {
            let (a, b, c) = MIN_SERVER_VERSION;
            return Err(self.unavailable(format!(
                "the server runs nats-server {version}; this backend needs {a}.{b}.{c} or newer \
                 (per-subject expected sequences, nats-server #4319)"
            )));
        }
        // The context spawns its acknowledgement task on the runtime.
        let _in_runtime = self.shared.runtime.enter();
        let js = jetstream::ContextBuilder::new()
            .timeout(attempt_timeout(o))
            .build(client);
        *conn = Some(js.clone());
        Ok(js)
    }

    /// The stream and its last sequence, creating the stream when `create` and it does
    /// not exist. What may pass (no server answering, a leader being elected) is tried
    /// again until the time limit.
    fn stream(&self, js: &jetstream::Context, create: bool) -> Result<(stream::Stream, u64)> {
        let deadline = std::time::Instant::now() + self.shared.options.timeout;
        loop {
            match self.try_stream(js, create) {
                Ok(found) => return Ok(found),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry(e)) if std::time::Instant::now() >= deadline => {
                    return Err(self.unavailable(e));
                }
                Err(Attempt::Retry(_)) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn try_stream(
        &self,
        js: &jetstream::Context,
        create: bool,
    ) -> std::result::Result<(stream::Stream, u64), Attempt> {
        let o = &self.shared.options;
        let name = o.stream_name();
        let mut stream = match self.block_on(js.get_stream(&name)) {
            Ok(s) => s,
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                if !create {
                    return Err(Attempt::Fail(self.unavailable(format!(
                        "the stream {name} does not exist (a writable open creates it)"
                    ))));
                }
                let config = stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{}.>", o.subject_prefix())],
                    storage: stream::StorageType::File,
                    num_replicas: o.replicas,
                    duplicate_window: Duration::from_secs(120),
                    allow_direct: true,
                    ..Default::default()
                };
                self.block_on(js.create_stream(config))
                    .map_err(|e| Attempt::Retry(format!("cannot create stream {name}: {e}")))?
            }
            Err(e) => return Err(Attempt::Retry(format!("cannot read stream {name}: {e}"))),
        };
        let info = self
            .block_on(stream.info())
            .map_err(|e| Attempt::Retry(format!("cannot read stream {name}: {e}")))?;
        let s = &info.state;
        if s.messages != s.last_sequence || (s.messages > 0 && s.first_sequence != 1) {
            return Err(Attempt::Fail(Error::Corruption {
                file: self.shared.place.clone(),
                offset: s.first_sequence,
                reason: format!(
                    "the stream {name} holds {} messages from sequence {} to {}: messages were \
                     deleted or purged, so the log has a hole",
                    s.messages, s.first_sequence, s.last_sequence
                ),
            }));
        }
        let last = s.last_sequence;
        Ok((stream, last))
    }

    /// Calls `f(seq, subject, payload)` for each message from `from` to `to` (both in the
    /// stream), in order, through an ordered consumer, until it returns `Ok(false)`.
    fn replay(
        &self,
        stream: &stream::Stream,
        from: u64,
        to: u64,
        f: &mut MessageFn<'_>,
    ) -> Result<()> {
        if from > to {
            return Ok(());
        }
        let o = &self.shared.options;
        // The consumer's stream of messages is dropped (and cleans up) in the runtime.
        let _in_runtime = self.shared.runtime.enter();
        let config = consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        };
        // Creating the consumer is a request to the stream's leader, which may be moving
        // (a node just died): tried again, as opening the stream is, until the time limit.
        let deadline = std::time::Instant::now() + o.timeout;
        let mut messages = loop {
            let created = self.block_on(async {
                let c = stream.create_consumer(config.clone()).await?;
                c.messages().await.map_err(Into::<async_nats::Error>::into)
            });
            match created {
                Ok(m) => break m,
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(self.unavailable(format!("cannot replay: {e}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let mut next = from;
        while next <= to {
            // The end is the stream's last sequence read before: a missing message is an
            // error, never the end of the log.
            let msg = match self
                .block_on(async { tokio::time::timeout(o.timeout, messages.next()).await })
            {
                Err(_) => {
                    return Err(self.unavailable(format!(
                        "no message {next} of {to} within {:?} while replaying",
                        o.timeout
                    )));
                }
                Ok(None) => return Err(self.unavailable("the replay ended early")),
                Ok(Some(Err(e))) => return Err(self.unavailable(format!("replay: {e}"))),
                Ok(Some(Ok(m))) => m,
            };
            let seq = msg
                .info()
                .map_err(|e| self.unavailable(format!("replay: {e}")))?
                .stream_sequence;
            if seq != next {
                return Err(Error::Corruption {
                    file: self.shared.place.clone(),
                    offset: next,
                    reason: format!("message {next} is missing (the next one is {seq})"),
                });
            }
            let id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_string());
            let ours = writer::msg_id(&o.data_set, seq, "");
            if !id.as_deref().is_some_and(|id| id.starts_with(&ours)) {
                return Err(Error::Corruption {
                    file: self.shared.place.clone(),
                    offset: seq,
                    reason: format!(
                        "message {seq} on {} was not written by session-engine (message id {id:?})",
                        msg.subject
                    ),
                });
            }
            if !f(seq, msg.subject.as_str(), &msg.payload)? {
                return Ok(());
            }
            next += 1;
        }
        Ok(())
    }
}

/// Why an attempt failed.
enum Attempt {
    /// For good.
    Fail(Error),
    /// Perhaps for a moment.
    Retry(String),
}

/// What [`NatsLog::replay`] calls for each message: `(sequence, subject, payload)`.
type MessageFn<'a> = dyn FnMut(u64, &str, &[u8]) -> Result<bool> + 'a;

/// How long one attempt (a request, an acknowledgement) may take before it is retried.
fn attempt_timeout(o: &NatsOptions) -> Duration {
    o.timeout.min(Duration::from_secs(2))
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

impl LogBackend for NatsLog {
    fn open(&self, start: StartPoint, writable: bool, sink: &mut dyn RecordSink) -> Result<Opened> {
        let js = self.context()?;
        let (stream, last) = self.stream(&js, writable)?;
        if start.lsn.0 > last {
            return Err(Error::Corruption {
                file: self.shared.place.clone(),
                offset: last,
                reason: format!(
                    "the stream ends at sequence {last}, before the snapshot's LSN {}",
                    start.lsn
                ),
            });
        }
        let place = self.shared.place.clone();
        let mut subjects = std::collections::HashMap::new();
        let mut replayed = 0;
        self.replay(
            &stream,
            start.lsn.0 + 1,
            last,
            &mut |seq, subject, payload| {
                sink.record(&place, seq, Lsn(seq), payload)?;
                subjects.insert(subject.to_string(), seq);
                replayed += 1;
                Ok(true)
            },
        )?;
        sink.settle()?;
        let writer = writable.then(|| {
            Box::new(writer::NatsWriter::new(
                self.clone(),
                js,
                stream,
                Lsn(last),
                subjects,
                start.lsn == Lsn::ZERO,
            )) as Box<dyn session_engine::backend::LogWriter>
        });
        Ok(Opened {
            recovery: Recovery {
                last_lsn: Lsn(last),
                replayed,
                torn: None,
                files: 0,
            },
            writer,
        })
    }

    fn read(&self, from: Lsn, to: Lsn, f: &mut ReadFn<'_>) -> Result<()> {
        let js = self.context()?;
        let (stream, last) = self.stream(&js, false)?;
        let place = self.shared.place.clone();
        self.replay(
            &stream,
            from.0.max(1),
            to.0.min(last),
            &mut |seq, _, payload| f(&place, seq, Lsn(seq), payload),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_are_refused() {
        let o = NatsOptions::parse("nats://127.0.0.1:4222").expect("parses");
        assert_eq!(o.servers, ["127.0.0.1:4222"]);
        assert_eq!((o.data_set.as_str(), o.replicas), ("default", 1));
        let o = NatsOptions::parse("nats://a:1,b:2,c:3/prod?replicas=3").expect("parses");
        assert_eq!(o.servers, ["a:1", "b:2", "c:3"]);
        assert_eq!((o.data_set.as_str(), o.replicas), ("prod", 3));
        assert_eq!(o.stream_name(), "SE_prod");
        for bad in [
            "http://a:1",
            "nats://",
            "nats://a",
            "nats://a:0",
            "nats://a:99999",
            "nats://a:1,/x",
            "nats://a:1/",
            "nats://a:1/x.y",
            "nats://a:1/x?replicas=0",
            "nats://a:1/x?replicas=9",
            "nats://a:1/x?foo=1",
        ] {
            assert!(
                matches!(NatsOptions::parse(bad), Err(Error::InvalidInput { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn versions_compare() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("v2.10.0-beta.1"), Some((2, 10, 0)));
        assert!(parse_version("2.9.10").is_some_and(|v| v < MIN_SERVER_VERSION));
        assert_eq!(parse_version("x"), None);
    }
}
