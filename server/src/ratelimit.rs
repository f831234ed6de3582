//! A per-client rate limit: a token bucket per peer IP address. Each request takes a
//! token; a bucket refills at [`RateLimit::per_second`] up to [`RateLimit::burst`]. A
//! client with an empty bucket is answered 429 in the envelope, with `Retry-After` (whole
//! seconds until a token is back), and nothing runs. Clients are told apart by IP address
//! only (every port of one machine shares a bucket; an IPv6 address is one client).
//!
//! Memory is bounded: at most [`MAX_CLIENTS`] buckets. When a new client finds the table
//! full, buckets refilled to the brim (their clients idle) are forgotten first, then the
//! least recently used one (its client starts again with a full bucket).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::error_response;

/// Buckets kept at most.
pub const MAX_CLIENTS: usize = 4096;

/// A rate limit per client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second (the sustained rate); must be above 0.
    pub per_second: f64,
    /// Largest bucket (the burst allowed after an idle time); at least 1.
    pub burst: u32,
}

impl Default for RateLimit {
    /// Generous: 1,000 requests a second per client, bursts of 2,000.
    fn default() -> Self {
        RateLimit {
            per_second: 1000.0,
            burst: 2000,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every client seen lately.
#[derive(Debug)]
pub struct Buckets {
    limit: RateLimit,
    map: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Buckets {
    /// Buckets for `limit` (a rate not above 0 is raised to one token a day, a burst of
    /// 0 to 1: the limit is always defined).
    pub fn new(limit: RateLimit) -> Buckets {
        let per_second = if limit.per_second.is_finite() && limit.per_second > 0.0 {
            limit.per_second
        } else {
            1.0 / 86_400.0
        };
        Buckets {
            limit: RateLimit {
                per_second,
                burst: limit.burst.max(1),
            },
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip` at `now`: `Err(wait)` when none is left, `wait` being the
    /// time until one is.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.limit.burst);
        let rate = self.limit.per_second;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&ip) && map.len() >= MAX_CLIENTS {
            let refill =
                |b: &Bucket| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate;
            map.retain(|_, b| refill(b) < burst);
            if map.len() >= MAX_CLIENTS
                && let Some(oldest) = map.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now.max(b.at);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - b.tokens) / rate).min(86_400.0),
            ))
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The middleware: 429 with `Retry-After` for a client out of tokens (counted in the
/// request metrics, which are outside it). Without buckets (no limit), or for a request
/// without a peer address (not from a socket), nothing is limited.
pub async fn limit(State(b): State<Option<Arc<Buckets>>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().copied();
    let (Some(b), Some(ConnectInfo(peer))) = (b, peer) else {
        return next.run(req).await;
    };
    match b.take(peer.ip(), Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let secs = secs.max(1);
            let mut r = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &format!("too many requests from this client; retry in {secs} s"),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let b = Buckets::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let t = Instant::now();
        for _ in 0..3 {
            b.take(ip(1), t).expect("within the burst");
        }
        let wait = b.take(ip(1), t).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(500));
        // Another client has its own bucket.
        b.take(ip(2), t).expect("another client");
        // Half a second later, one token is back, and only one.
        let later = t + Duration::from_millis(500);
        b.take(ip(1), later).expect("refilled");
        assert!(b.take(ip(1), later).is_err());
        // Long idle: the bucket holds its burst, no more.
        let idle = t + Duration::from_secs(3600);
        for _ in 0..3 {
            b.take(ip(1), idle).expect("full again");
        }
        assert!(b.take(ip(1), idle).is_err());
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_idle_clients_first() {
        let b = Buckets::new(RateLimit {
            per_second: 1.0,
            burst: 2,
        });
        let t = Instant::now();
        // Every client but 0 takes one token at `t`; client 0 empties its bucket later.
        for n in 1..MAX_CLIENTS as u32 {
            b.take(ip(n), t).expect("new client");
        }
        let busy = t + Duration::from_secs(1);
        b.take(ip(0), busy).expect("first");
        b.take(ip(0), busy).expect("second");
        assert_eq!(b.len(), MAX_CLIENTS);
        // Half a second on, every bucket but client 0's has refilled: those are forgotten.
        let later = busy + Duration::from_millis(500);
        b.take(ip(MAX_CLIENTS as u32), later).expect("room made");
        assert_eq!(b.len(), 2, "the idle clients were forgotten");
        // Client 0 kept its bucket (half a token): not reset to a full one.
        assert!(b.take(ip(0), later).is_err(), "client 0's bucket was reset");
    }

    #[test]
    fn a_full_table_of_busy_clients_evicts_the_least_recent() {
        let b = Buckets::new(RateLimit {
            per_second: 0.001,
            burst: 1,
        });
        let t = Instant::now();
        for n in 0..MAX_CLIENTS as u32 {
            b.take(ip(n), t + Duration::from_millis(u64::from(n)))
                .expect("new client");
        }
        b.take(ip(99_999), t + Duration::from_secs(10))
            .expect("a new client is served");
        assert_eq!(b.len(), MAX_CLIENTS);
        // Client 0 (the least recent) was forgotten; client 1 was not.
        assert!(b.take(ip(1), t + Duration::from_secs(10)).is_err());
        b.take(ip(0), t + Duration::from_secs(10))
            .expect("forgotten, so full again");
    }
}
