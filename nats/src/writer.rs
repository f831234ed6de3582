//! The writer: one message per record, published without waiting, acknowledged at `sync`.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::time::Instant;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use session_engine::backend::{FrameBuf, LogPosition, LogWriter};
use session_engine::{Error, Lsn, Result};

use crate::{NatsLog, attempt_timeout};

/// The message id of record `lsn` of `data_set` written by the writer `writer`:
/// deterministic for that writer, so a publish it retries after a lost acknowledgement is
/// stored once (within the stream's two-minute duplicate window), and different for
/// another writer, so that writer's record with the same LSN is never taken for a
/// duplicate of this one.
pub(crate) fn msg_id(data_set: &str, lsn: u64, writer: &str) -> String {
    format!("{data_set}:{lsn}:{writer}")
}

/// A random id for a writer, 16 hex digits.
fn writer_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// The subject of a record: its session's (`.` of an id written `~`, which ids never
/// hold, so that an id is one subject token), or `x` for an event of no or several
/// sessions.
fn subject_of(prefix: &str, payload: &[u8]) -> String {
    match session_engine::codec::decode_event(payload) {
        Ok(e) => match e.body.sessions().as_slice() {
            [one] => format!("{prefix}.s.{}", one.as_str().replace('.', "~")),
            _ => format!("{prefix}.x"),
        },
        // The engine only appends what it encoded; anything else goes where it can be
        // found, and replay decodes (and refuses) it like any record.
        Err(_) => format!("{prefix}.x"),
    }
}

/// A record published and not yet acknowledged.
struct InFlight {
    lsn: Lsn,
    subject: String,
    /// The subject's previous record (0: none).
    subject_prev: u64,
    payload: Bytes,
    ack: Option<jetstream::context::PublishAckFuture>,
}

pub(crate) struct NatsWriter {
    log: NatsLog,
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
    /// This writer's part of its message ids.
    id: String,
    last: Lsn,
    /// The last record of each subject, as far as this writer knows.
    subjects: HashMap<String, u64>,
    /// Whether `subjects` knows every subject of the stream (the open replayed all of it).
    complete: bool,
    in_flight: Vec<InFlight>,
}

impl NatsWriter {
    pub(crate) fn new(
        log: NatsLog,
        js: jetstream::Context,
        stream: stream::Stream,
        last: Lsn,
        subjects: HashMap<String, u64>,
        complete: bool,
    ) -> NatsWriter {
        let prefix = log.options().subject_prefix();
        NatsWriter {
            log,
            js,
            stream,
            prefix,
            id: writer_id(),
            last,
            subjects,
            complete,
            in_flight: Vec::new(),
        }
    }

    /// The last record on `subject`, asking the stream when this writer has not seen it.
    fn subject_last(&mut self, subject: &str) -> Result<u64> {
        if let Some(&seq) = self.subjects.get(subject) {
            return Ok(seq);
        }
        if self.complete {
            return Ok(0);
        }
        use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
        let seq = match self
            .log
            .block_on(self.stream.get_last_raw_message_by_subject(subject))
        {
            Ok(m) => m.sequence,
            Err(e) if e.kind() == K::NoMessageFound => 0,
            Err(e) => {
                return Err(self
                    .log
                    .unavailable(format!("cannot read the last record of {subject}: {e}")));
            }
        };
        self.subjects.insert(subject.to_string(), seq);
        Ok(seq)
    }

    fn message(&self, r: &InFlight) -> PublishMessage {
        PublishMessage::build()
            .payload(r.payload.clone())
            .message_id(msg_id(&self.log.options().data_set, r.lsn.0, &self.id))
            .expected_last_sequence(r.lsn.0 - 1)
            .expected_last_subject_sequence(r.subject_prev)
    }

    /// Publishes `r` and waits for its acknowledgement, once.
    fn publish_and_wait(&self, r: &InFlight) -> std::result::Result<u64, Failure> {
        let msg = self.message(r);
        let subject = r.subject.clone();
        self.log.block_on(async {
            let ack = self.js.send_publish(subject, msg).await.map_err(classify)?;
            ack.into_future()
                .await
                .map(|a| a.sequence)
                .map_err(classify)
        })
    }

    /// Whether the stream's message `r.lsn` is this writer's record `r`.
    fn stored_as_ours(&self, r: &InFlight) -> Result<bool> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
        match self.log.block_on(self.stream.get_raw_message(r.lsn.0)) {
            Ok(m) => Ok(m
                .headers
                .get("Nats-Msg-Id")
                .is_some_and(|v| v.as_str() == self.message_id(r))
                && m.payload == r.payload),
            Err(e) if e.kind() == K::NoMessageFound => Ok(false),
            Err(e) => Err(self
                .log
                .unavailable(format!("cannot read message {}: {e}", r.lsn))),
        }
    }

    fn message_id(&self, r: &InFlight) -> String {
        msg_id(&self.log.options().data_set, r.lsn.0, &self.id)
    }

    fn conflict(&self, r: &InFlight, what: impl std::fmt::Display) -> Error {
        Error::LogConflict {
            log: self.log.place().display().to_string(),
            reason: format!("record {} on {}: {what}", r.lsn, r.subject),
        }
    }

    /// Whether any of `later` (published behind a refused record) may have been stored:
    /// each expected its predecessor's sequence, which another writer's record can hold.
    /// Only a refusal the server gave counts as not stored.
    fn any_stored(&self, later: &mut [InFlight]) -> bool {
        later.iter_mut().any(|r| match r.ack.take() {
            None => true,
            Some(ack) => !matches!(
                self.log.block_on(async {
                    tokio::time::timeout(attempt_timeout(self.log.options()), ack.into_future())
                        .await
                }),
                Ok(Err(e)) if matches!(
                    e.kind(),
                    PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId
                )
            ),
        })
    }

    /// After the conflict of `refused[0]`, with nothing from it on stored: the writer goes
    /// back to the record before it, and each subject to its last record before it.
    fn roll_back(&mut self, refused: &[InFlight]) {
        for r in refused.iter().rev() {
            self.subjects.insert(r.subject.clone(), r.subject_prev);
        }
        if let Some(first) = refused.first() {
            self.last = Lsn(first.lsn.0 - 1);
        }
    }

    /// Waits for every acknowledgement, retrying (with the same message ids, so nothing
    /// is stored twice) those lost to a server going away or a leader election, until the
    /// backend's time limit.
    fn wait_all(&mut self) -> Result<()> {
        let log = self.log.clone();
        let _in_runtime = log.enter();
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let deadline = Instant::now() + self.log.options().timeout;
        let mut retrying = false;
        for i in 0..in_flight.len() {
            let r = &mut in_flight[i];
            let mut outcome = match r.ack.take() {
                Some(ack) if !retrying => self
                    .log
                    .block_on(ack.into_future())
                    .map(|a| a.sequence)
                    .map_err(classify),
                _ => Err(Failure::Retry(String::new())),
            };
            loop {
                match outcome {
                    Ok(seq) if seq == r.lsn.0 => break,
                    Ok(seq) => {
                        // Stored, at another place: the log holds it, so the writer stays
                        // past it (and the engine, poisoned, reopens).
                        return Err(self.conflict(r, format!("stored as message {seq}")));
                    }
                    Err(Failure::Conflict(e)) => {
                        // A retry of a record whose first publish was stored (its
                        // acknowledgement lost) finds the log already past it.
                        if self.stored_as_ours(r)? {
                            break;
                        }
                        let err = self.conflict(r, e);
                        // Nothing of this record was stored; when nothing after it was
                        // either, the writer is back before it and the engine stays
                        // writable. Otherwise it stays past them, and the engine, which
                        // cannot tell what its state lacks, is poisoned.
                        if !self.any_stored(&mut in_flight[i + 1..]) {
                            self.roll_back(&in_flight[i..]);
                        }
                        return Err(err);
                    }
                    Err(Failure::Retry(e)) => {
                        // Later records were published behind this one: once it has to be
                        // sent again, so do they, in order.
                        retrying = true;
                        if Instant::now() >= deadline {
                            return Err(self.log.unavailable(format!(
                                "record {} was not acknowledged within {:?} (no quorum of \
                                 the stream's replicas answering?): {e}",
                                r.lsn,
                                self.log.options().timeout
                            )));
                        }
                        if !e.is_empty() {
                            // A failure that came at once (no responders while a leader
                            // is elected): pause a little before the next try.
                            std::thread::sleep(
                                attempt_timeout(self.log.options())
                                    .min(std::time::Duration::from_millis(200)),
                            );
                        }
                        self.log.count_retry();
                        outcome = self.publish_and_wait(r);
                    }
                }
            }
        }
        Ok(())
    }
}

/// What to do about a failed publish.
enum Failure {
    /// Another writer appended first: the expected sequence did not hold.
    Conflict(String),
    /// The server may not have stored it (or not answered): send it again.
    Retry(String),
}

fn classify(e: async_nats::jetstream::context::PublishError) -> Failure {
    match e.kind() {
        PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId => {
            Failure::Conflict(e.to_string())
        }
        _ => Failure::Retry(e.to_string()),
    }
}

impl LogWriter for NatsWriter {
    fn start_batch(&mut self, batch: &mut FrameBuf) {
        // Frames are only the batch's container here; each record is one message.
        batch.reset(false);
    }

    fn append(&mut self, batch: &FrameBuf) -> Result<()> {
        for frame in batch.frames() {
            if frame.lsn != self.last.next() {
                return Err(Error::Corruption {
                    file: self.log.place().to_path_buf(),
                    offset: self.last.0,
                    reason: format!(
                        "record {} does not continue the log (next is {})",
                        frame.lsn,
                        self.last.next()
                    ),
                });
            }
            let subject = subject_of(&self.prefix, frame.payload);
            let subject_prev = self.subject_last(&subject)?;
            let mut r = InFlight {
                lsn: frame.lsn,
                subject,
                subject_prev,
                payload: Bytes::copy_from_slice(frame.payload),
                ack: None,
            };
            let msg = self.message(&r);
            let subject = r.subject.clone();
            // A publish that cannot even be sent is retried at `sync` like a lost
            // acknowledgement.
            r.ack = self.log.block_on(self.js.send_publish(subject, msg)).ok();
            self.subjects.insert(r.subject.clone(), r.lsn.0);
            self.last = r.lsn;
            self.in_flight.push(r);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.wait_all()
    }

    fn caught_up(&mut self, records: &[(Lsn, &[u8])]) -> Result<()> {
        if !self.in_flight.is_empty() {
            return Err(self.log.unavailable(
                "internal error: records of other writers taken in before this writer's own \
                 were acknowledged",
            ));
        }
        let mut next = self.last.next();
        for (lsn, _) in records {
            if *lsn != next {
                return Err(Error::Corruption {
                    file: self.log.place().to_path_buf(),
                    offset: lsn.0,
                    reason: format!("record {lsn} does not continue the log (next is {next})"),
                });
            }
            next = next.next();
        }
        for (lsn, payload) in records {
            // The subject is a function of the payload, the same for every writer.
            self.subjects
                .insert(subject_of(&self.prefix, payload), lsn.0);
            self.last = *lsn;
        }
        Ok(())
    }

    fn last_lsn(&self) -> Lsn {
        self.last
    }

    fn position(&self) -> LogPosition {
        // The stream sequence of the last record (which is its LSN).
        LogPosition {
            segment: Lsn::ZERO,
            offset: self.last.0,
        }
    }
}
