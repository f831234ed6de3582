//! An attempt's output: written to the run's log file and cut into output events, the
//! head and the tail kept above the cap, the bytes between them counted exactly.

use std::collections::VecDeque;
use std::io::Write;

use crate::event::EventBody;
use crate::run::{MAX_CHUNK, RunId, Stream};

/// One attempt's output so far.
pub(crate) struct Capture {
    run: RunId,
    attempt: u32,
    head_cap: u64,
    tail_cap: u64,
    total: u64,
    head: u64,
    tail: VecDeque<(Stream, u64, Vec<u8>)>,
    tail_len: u64,
    pending: Option<(Stream, u64, Vec<u8>)>,
    /// Output events ready to record, in order.
    pub ready: Vec<EventBody>,
}

impl Capture {
    pub(crate) fn new(run: RunId, attempt: u32, cap: u64) -> Capture {
        let head_cap = cap.div_ceil(2);
        Capture {
            run,
            attempt,
            head_cap,
            tail_cap: cap - head_cap,
            total: 0,
            head: 0,
            tail: VecDeque::new(),
            tail_len: 0,
            pending: None,
            ready: Vec::new(),
        }
    }

    fn emit(&mut self, stream: Stream, offset: u64, bytes: &[u8]) {
        if let Some((s, o, b)) = &mut self.pending
            && *s == stream
            && *o + b.len() as u64 == offset
            && b.len() + bytes.len() <= MAX_CHUNK
        {
            b.extend_from_slice(bytes);
            return;
        }
        self.flush();
        self.pending = Some((stream, offset, bytes.to_vec()));
    }

    /// Moves the chunk being gathered to `ready`.
    pub(crate) fn flush(&mut self) {
        if let Some((stream, offset, bytes)) = self.pending.take() {
            self.ready.push(EventBody::RunOutput {
                run: self.run,
                attempt: self.attempt,
                stream,
                offset,
                bytes,
            });
        }
    }

    /// Takes `bytes` the program wrote on `stream`; the head goes to `log` at once.
    pub(crate) fn push(
        &mut self,
        log: &mut impl Write,
        stream: Stream,
        mut bytes: &[u8],
    ) -> std::io::Result<()> {
        if self.head < self.head_cap {
            let n = (self.head_cap - self.head).min(bytes.len() as u64) as usize;
            log.write_all(&bytes[..n])?;
            for c in bytes[..n].chunks(MAX_CHUNK) {
                self.emit(stream, self.total, c);
                self.total += c.len() as u64;
            }
            self.head += n as u64;
            bytes = &bytes[n..];
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.tail.push_back((stream, self.total, bytes.to_vec()));
        self.tail_len += bytes.len() as u64;
        self.total += bytes.len() as u64;
        while self.tail_len > self.tail_cap {
            let excess = self.tail_len - self.tail_cap;
            let Some(front) = self.tail.front_mut() else {
                break;
            };
            if front.2.len() as u64 <= excess {
                self.tail_len -= front.2.len() as u64;
                self.tail.pop_front();
            } else {
                front.2.drain(..excess as usize);
                front.1 += excess;
                self.tail_len -= excess;
            }
        }
        Ok(())
    }

    /// Ends the attempt's output: the tail goes to `log` (after a line saying how many
    /// bytes were dropped, if any) and to `ready`. Returns (bytes written, bytes dropped).
    pub(crate) fn finish(&mut self, log: &mut impl Write) -> std::io::Result<(u64, u64)> {
        let dropped = self.total - self.head - self.tail_len;
        if dropped > 0 {
            writeln!(log, "\n[session-engine: {dropped} bytes dropped]")?;
        }
        let tail = std::mem::take(&mut self.tail);
        for (stream, offset, bytes) in tail {
            log.write_all(&bytes)?;
            let mut at = offset;
            for c in bytes.chunks(MAX_CHUNK) {
                self.emit(stream, at, c);
                at += c.len() as u64;
            }
        }
        self.tail_len = 0;
        self.flush();
        log.flush()?;
        Ok((self.total, dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_tail_are_kept_and_the_drop_is_exact() {
        let mut c = Capture::new(RunId(1), 1, 10);
        let mut log = Vec::new();
        c.push(&mut log, Stream::Stdout, b"0123").unwrap();
        c.push(&mut log, Stream::Stderr, b"456789abcdef").unwrap();
        c.push(&mut log, Stream::Stdout, b"ghij").unwrap();
        let (total, dropped) = c.finish(&mut log).unwrap();
        assert_eq!((total, dropped), (20, 10));
        let mut kept = Vec::new();
        for e in &c.ready {
            if let EventBody::RunOutput { offset, bytes, .. } = e {
                kept.push((*offset, bytes.clone()));
            }
        }
        assert_eq!(
            kept,
            vec![
                (0, b"0123".to_vec()),
                (4, b"4".to_vec()),
                (15, b"f".to_vec()),
                (16, b"ghij".to_vec())
            ]
        );
        assert_eq!(
            String::from_utf8(log).unwrap(),
            "01234\n[session-engine: 10 bytes dropped]\nfghij"
        );
    }
}
