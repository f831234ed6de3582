//! The accept loop: hyper's HTTP/1 server under the router, with a header-read timeout.
//!
//! `axum::serve` sets no timer, so hyper would wait forever for a request's headers: a
//! client sending them a byte at a time (slowloris) would hold its connection, and its
//! task, for as long as it likes. Here each connection gets hyper's `header_read_timeout`
//! ([`crate::Limits::header_read_timeout`]): the head of every request (the first, and
//! each next one on a kept-alive connection, idle time included) must have arrived in
//! full within it, or the connection is closed. Bodies are bounded by the request timeout
//! and the size limits; streams, once answered, by nothing (they are meant to last).
//!
//! Each request carries the peer's address as [`axum::extract::ConnectInfo`] (the rate
//! limit's key). Upgrades (WebSocket) are served. At shutdown, connections finish the
//! request in flight and close; the loop returns once every connection has.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

/// Serves `app` on `listener` until `stop` becomes `true`, then answers what is in
/// flight and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Every connection task holds a receiver; the loop waits until all are dropped.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, a connection reset before accept...: the
                    // listener is still good; wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let app = app.clone();
        let mut stop = stop.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move { Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|e| match e {})) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    if let Err(e) = conn.as_mut().await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

/// Until `stop` is `true` (or its sender is gone); holds no borrow of the value after.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
