//! The session-engine local service (`session-engine serve`): seed 002's REST API over a
//! [`SessionManager`], resumable event streams (Server-Sent Events and a WebSocket),
//! Prometheus metrics and a dashboard.
//!
//! Layout: `api` (envelope, errors), `guard` (token, Host/Origin), `sessions` and
//! `resources` (the handlers), `workspace` (navigate, validate-path(s), agent-types, over
//! `paths`, the path checks), `runs` (supervised runs), `events` (SSE, and the stream
//! machinery `ws`, the WebSocket, shares), `dashboard` (the page at `/`), `versions` (ETag / If-Match),
//! `idempotency` (`Idempotency-Key`), `metrics`, `ratelimit` (per-client token buckets),
//! `openapi` (`/openapi.json`), `conn` (the accept loop, header-read timeout), and
//! `adapter`, the one module that calls the engine's blocking API.

#![warn(missing_docs)]

pub mod adapter;
mod agents;
pub mod api;
mod conn;
mod dashboard;
mod events;
pub mod guard;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
mod paths;
pub mod ratelimit;
mod resources;
mod runs;
mod sessions;
pub mod versions;
mod workspace;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, put};
use session_engine::{Error, SessionManager};
use tokio::sync::watch;

/// Request limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body (413 past it), except imports.
    pub max_body: usize,
    /// Largest import bundle.
    pub max_import_body: usize,
    /// Longest time to answer a request (503 past it; streams are exempt). A write that
    /// times out may still commit: the engine call is not cancelled.
    pub request_timeout: Duration,
    /// Events an SSE connection may have queued in memory; past it the stream reads
    /// from the log instead.
    pub stream_queue: usize,
    /// Event streams open at once (503 past it): each holds a subscription and its
    /// bounded queue.
    pub max_streams: usize,
    /// How often an idle event stream gets a keep-alive (an SSE comment, a WebSocket
    /// ping).
    pub keep_alive: Duration,
    /// How long a WebSocket client has to answer the server's ping (any frame counts),
    /// and the longest a send to it may stay blocked; past it the client is taken for
    /// dead and its socket closed (it may reconnect from its last LSN).
    pub ws_dead_timeout: Duration,
    /// Longest time for a request's head (line and headers) to arrive, idle keep-alive
    /// time included; past it the connection is closed (slowloris).
    pub header_read_timeout: Duration,
    /// Idempotency keys remembered (the oldest answered one forgotten first); when this
    /// many keyed requests are in flight, the next is refused with 503 `busy`.
    pub idempotency_keys: usize,
    /// Requests per client IP address (429 past it); `None`: no limit.
    pub rate_limit: Option<ratelimit::RateLimit>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 2 << 20,
            max_import_body: 64 << 20,
            request_timeout: Duration::from_secs(30),
            stream_queue: 256,
            max_streams: 128,
            keep_alive: Duration::from_secs(15),
            ws_dead_timeout: Duration::from_secs(30),
            idempotency_keys: idempotency::CAPACITY,
            header_read_timeout: Duration::from_secs(10),
            rate_limit: Some(ratelimit::RateLimit::default()),
        }
    }
}

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The address to bind (`127.0.0.1:8082` by default; port 0 picks one).
    pub addr: SocketAddr,
    /// A file holding the bearer token. Without it, a non-loopback address uses (and
    /// first generates) `<data dir>/server-token`.
    pub token_file: Option<PathBuf>,
    /// Request limits.
    pub limits: Limits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 8082)),
            token_file: None,
            limits: Limits::default(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub manager: Arc<SessionManager>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Remembered idempotency keys.
    pub keys: Arc<idempotency::Keys>,
    /// Session versions.
    pub versions: Arc<versions::Versions>,
    /// Limits.
    pub limits: Limits,
    /// Becomes `true` at shutdown: streams end.
    pub shutdown: watch::Receiver<bool>,
    /// One permit per open event stream.
    pub streams: Arc<tokio::sync::Semaphore>,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    token_path: Option<PathBuf>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token file in use, if a token is required.
    pub fn token_path(&self) -> Option<&PathBuf> {
        self.token_path.as_ref()
    }

    /// Stops accepting connections, ends the event streams, answers the requests in
    /// flight and returns. The manager is left open (the caller closes it).
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }
}

fn io_error(op: &'static str, path: PathBuf, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path,
        source: Arc::new(source),
    }
}

/// Binds `options.addr` and serves `manager` until [`Server::shutdown`].
///
/// A non-loopback address without a token file uses `<data dir>/server-token`
/// (generated when missing); a token file given is required on every request, loopback
/// or not.
pub async fn start(manager: Arc<SessionManager>, options: ServeOptions) -> Result<Server, Error> {
    let storage = Arc::clone(&manager.engine().options().storage);
    let token_path = match &options.token_file {
        Some(p) => Some(p.clone()),
        None if !options.addr.ip().is_loopback() => {
            Some(guard::data_dir_token(&*storage, manager.data_dir())?)
        }
        None => None,
    };
    let token = token_path
        .as_deref()
        .map(|p| guard::read_token_file(&*storage, p))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|e| io_error("bind", PathBuf::from(options.addr.to_string()), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| io_error("bind", PathBuf::from(options.addr.to_string()), e))?;
    let (stop, shutdown) = watch::channel(false);
    let state = app_state(manager, options.limits, shutdown.clone());
    let header_read_timeout = options.limits.header_read_timeout;
    let app = router(state, guard::Guard::new(addr, token)).layer(axum::Extension(runs::Exec {
        allowed: addr.ip().is_loopback(),
    }));
    let task = tokio::spawn(conn::serve(listener, app, header_read_timeout, shutdown));
    Ok(Server {
        addr,
        token_path,
        stop,
        task,
    })
}

fn app_state(
    manager: Arc<SessionManager>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> AppState {
    AppState {
        versions: versions::Versions::start(&manager),
        manager,
        metrics: Arc::new(metrics::Metrics::new()),
        keys: Arc::new(idempotency::Keys::with_capacity(limits.idempotency_keys)),
        limits,
        shutdown,
        streams: Arc::new(tokio::sync::Semaphore::new(limits.max_streams)),
    }
}

/// The route patterns the router serves (`/api/claude/sessions/{id}`...), for the check
/// of `/openapi.json` against them (`server/tests/openapi.rs`). axum lists no routes, so
/// they are read from its `Debug` form of the router; call within a tokio runtime.
#[doc(hidden)]
pub fn route_patterns(manager: Arc<SessionManager>) -> Vec<String> {
    let (_stop, shutdown) = watch::channel(false);
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let app = router(
        app_state(manager, Limits::default(), shutdown),
        guard::Guard::new(addr, None),
    );
    let debug = format!("{app:?}");
    // The fallback router's own catch-all routes come after `fallback_router`.
    let routes = debug.split("fallback_router").next().unwrap_or_default();
    let mut out: Vec<String> = routes
        .split("RouteId(")
        .skip(1)
        .filter_map(|s| {
            let rest = s.split_once("): \"")?.1;
            Some(rest.split_once('"')?.0.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn router(state: AppState, guard: guard::Guard) -> Router {
    const P: &str = "/api/claude";
    let limits = state.limits;
    let api = Router::new()
        .route(
            &format!("{P}/sessions"),
            post(sessions::create).get(sessions::list),
        )
        .route(
            &format!("{P}/sessions/import"),
            post(sessions::import).layer(DefaultBodyLimit::max(limits.max_import_body)),
        )
        .route(
            &format!("{P}/sessions/{{id}}"),
            get(sessions::get)
                .put(sessions::update)
                .delete(sessions::terminate),
        )
        .route(&format!("{P}/sessions/{{id}}/clone"), post(sessions::clone))
        .route(
            &format!("{P}/sessions/{{id}}/export"),
            post(sessions::export),
        )
        .route(
            &format!("{P}/sessions/{{id}}/status"),
            get(sessions::status),
        )
        .route(
            &format!("{P}/sessions/{{id}}/metrics"),
            get(sessions::statistics),
        )
        .route(
            &format!("{P}/sessions/{{id}}/activities"),
            post(resources::add_activity).get(resources::activities),
        )
        .route(
            &format!("{P}/sessions/{{id}}/metadata"),
            get(resources::metadata),
        )
        .route(
            &format!("{P}/sessions/{{id}}/metadata/{{key}}"),
            put(resources::set_metadata).delete(resources::remove_metadata),
        )
        .route(
            &format!("{P}/sessions/{{id}}/checkpoints"),
            post(resources::save_checkpoint).get(resources::checkpoints),
        )
        .route(
            &format!("{P}/sessions/{{id}}/restore"),
            post(resources::restore),
        )
        .route(
            &format!("{P}/sessions/{{id}}/decisions"),
            post(resources::add_decision).get(resources::decisions),
        )
        .route(
            &format!("{P}/sessions/{{id}}/commands"),
            post(resources::add_command).get(resources::commands),
        )
        .route(&format!("{P}/chains"), get(resources::chains))
        .route(
            &format!("{P}/chains/{{agent}}"),
            get(resources::chain).delete(resources::reset_chain),
        )
        .route(
            &format!("{P}/chains/{{agent}}/links"),
            post(resources::link_chain),
        )
        .route(&format!("{P}/analytics"), get(resources::analytics))
        .route(&format!("{P}/system-status"), get(resources::system_status))
        .route("/api/system-status", get(resources::seed_system_status))
        .route("/health", get(resources::health))
        .route("/metrics", get(metrics::render))
        .merge(workspace::routes())
        .merge(agents::routes())
        .merge(runs::routes())
        .layer(from_fn_with_state(state.clone(), idempotency::idempotent))
        .layer(from_fn_with_state(limits.request_timeout, timeout));
    let buckets = limits
        .rate_limit
        .map(|l| Arc::new(ratelimit::Buckets::new(l)));
    Router::new()
        .route("/api/events", get(events::stream))
        .route("/ws/sessions", get(ws::sessions))
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/openapi.json", get(openapi::document))
        .merge(api)
        .fallback(resources::not_found)
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(from_fn_with_state(buckets, ratelimit::limit))
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .layer(from_fn_with_state(guard, guard::guard))
        .with_state(state)
}

/// Answers 503 in the envelope when the request takes longer than the limit.
async fn timeout(
    State(limit): State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => api::error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long; a write may still have been committed",
        ),
    }
}

/// Serves `manager` on `options.addr` until SIGINT or SIGTERM, then answers the requests
/// in flight and returns; the caller closes the manager. `ready` is called with the
/// bound address (and the token file, if any) once the server listens.
pub fn run(
    manager: Arc<SessionManager>,
    options: ServeOptions,
    ready: impl FnOnce(SocketAddr, Option<&PathBuf>),
) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("start runtime", PathBuf::new(), e))?;
    rt.block_on(async move {
        let server = start(manager, options).await?;
        ready(server.local_addr(), server.token_path());
        wait_for_signal().await;
        tracing::info!("shutting down: answering the requests in flight");
        server
            .shutdown()
            .await
            .map_err(|e| io_error("serve", PathBuf::new(), e))
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
