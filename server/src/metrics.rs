//! `/metrics` in Prometheus text format (`prometheus-client`). Label sets are bounded:
//! routes are the router's patterns (`/api/claude/sessions/{id}`), never raw paths.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use session_engine::EngineStats;
use session_engine::engine::Histogram as EngineHistogram;

use crate::AppState;

/// The engine's own counters (its writer's), read at each scrape from
/// `Engine::stats` and encoded as they are: `render` stores the latest reading here.
#[derive(Debug, Default)]
struct EngineCollector(Mutex<Option<EngineStats>>);

fn encode_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &EngineHistogram,
    scale: f64,
) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = h
        .bounds
        .iter()
        .map(|b| *b as f64 * scale)
        .chain([f64::MAX])
        .zip(h.counts.iter().copied())
        .collect();
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(h.sum as f64 * scale, h.count(), &buckets, None)
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        for (name, help, v) in [
            (
                "engine_records",
                "Records (events) the engine appended to its log since it opened",
                s.records,
            ),
            (
                "engine_appends",
                "Appends to the log (one per group commit) since the engine opened",
                s.appends,
            ),
            (
                "engine_log_syncs",
                "Syncs of the log (fdatasync on the file log) since the engine opened",
                s.syncs,
            ),
        ] {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        encode_histogram(
            &mut encoder,
            "engine_group_commit_size",
            "Records per append (group-commit size)",
            &s.batch_size,
            1.0,
        )?;
        encode_histogram(
            &mut encoder,
            "engine_append_duration_seconds",
            "Time from the start of an append until its records are durable as the \
             durability mode asks (write and fdatasync with durability always)",
            &s.append_latency_us,
            1e-6,
        )?;
        let g = ConstGauge::new(s.open_time.as_secs_f64());
        g.encode(encoder.encode_descriptor(
            "engine_open_duration_seconds",
            "How long the engine's open took, recovery (snapshot load and replay) included",
            None,
            g.metric_type(),
        )?)?;
        let g = ConstGauge::new(i64::try_from(s.replayed).unwrap_or(i64::MAX));
        g.encode(encoder.encode_descriptor(
            "engine_replayed_records",
            "Records the open replayed after its snapshot",
            None,
            g.metric_type(),
        )?)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Time a write to a session took in the engine, to its durable commit (writes that
    /// appended an event only).
    pub write_latency: Histogram,
    /// Commands the service committed (each an appended event).
    pub commits: Counter,
    /// Event streams open now.
    pub open_streams: Gauge,
    /// Times an event stream's subscription was cut loose for lagging and read what it
    /// missed from the log.
    pub stream_log_fallbacks: Counter,
    last_lsn: Gauge,
    engine: Arc<EngineCollector>,
    projected_lsn: Gauge,
    projection_lag: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("session_engine");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let commits = Counter::default();
        let write_latency = latency_histogram();
        let open_streams = Gauge::default();
        let stream_log_fallbacks = Counter::default();
        let last_lsn = Gauge::default();
        let projected_lsn = Gauge::default();
        let projection_lag = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to the first byte of a stream)",
            latency.clone(),
        );
        registry.register("commits", "Commands the service committed", commits.clone());
        registry.register(
            "write_duration_seconds",
            "Time a write to a session (an activity, metadata, a checkpoint, a decision, a \
             command, an agent change, an update) took in the engine until durable",
            write_latency.clone(),
        );
        registry.register(
            "open_streams",
            "Event streams (SSE) open now",
            open_streams.clone(),
        );
        registry.register(
            "stream_log_fallbacks",
            "Times an event stream fell behind the live feed and read from the log instead",
            stream_log_fallbacks.clone(),
        );
        registry.register("last_lsn", "The last committed LSN", last_lsn.clone());
        let engine = Arc::new(EngineCollector::default());
        registry.register_collector(Box::new(Arc::clone(&engine)));
        registry.register(
            "projected_lsn",
            "Every projection file reflects the log up to this LSN",
            projected_lsn.clone(),
        );
        registry.register(
            "projection_lag",
            "Committed events the projection files do not show yet",
            projection_lag.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            commits,
            write_latency,
            open_streams,
            stream_log_fallbacks,
            last_lsn,
            engine,
            projected_lsn,
            projection_lag,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counts and times every request by its route pattern.
pub async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &s.metrics;
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status: resp.status().as_u16(),
        })
        .inc();
    m.latency
        .get_or_create(&RouteLabels { route })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "system", summary = "Metrics in Prometheus text format",
    responses((status = 200, description = "OpenMetrics text",
        content_type = "application/openmetrics-text", body = String)))]
pub async fn render(State(s): State<AppState>) -> Response {
    let m: &Arc<Metrics> = &s.metrics;
    let last = s.manager.last_lsn().0;
    m.last_lsn.set(i64::try_from(last).unwrap_or(i64::MAX));
    *m.engine.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.manager.engine().stats());
    if let Some(p) = s.manager.projection_status() {
        m.projected_lsn
            .set(i64::try_from(p.projected.0).unwrap_or(i64::MAX));
        m.projection_lag
            .set(i64::try_from(last.saturating_sub(p.projected.0)).unwrap_or(i64::MAX));
    }
    let mut out = String::new();
    if encode(&mut out, &m.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
