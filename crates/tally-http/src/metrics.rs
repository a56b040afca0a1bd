//! What the HTTP edge measures, and `GET /metrics`.
//!
//! Labels come only from bounded sets: the method (eight known ones, else `other`), the route
//! template axum matched (never the raw path; `unmatched` for everything that fell through to
//! the 404), the status class (`2xx` ... `5xx`) and a cursor's fate.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::{ApiError, AppState, Redacted};

/// The edge's metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// `tally_http_requests_total{method,route,status}` (`status` is the class: `2xx`).
    pub requests: IntCounterVec,
    /// `tally_http_request_duration_seconds{method,route}`: until the response head is ready
    /// (a stream's body is not included).
    pub duration: HistogramVec,
    /// `tally_cursor_not_found_total{reason}`: `after_guid` cursors refused because the event
    /// was `purged` or `pruned`, or never existed (`unknown`).
    pub cursor_not_found: IntCounterVec,
    /// `tally_stream_consumers`: open `/v3/app_usage_events/stream` connections.
    pub streams_open: IntGauge,
    /// `tally_stream_events_delivered_total`: usage events written to streams.
    pub stream_events: IntCounter,
    /// What the listener counts (`tally_http_connections*`).
    pub connections: crate::serve::ServeStats,
    /// `tally_forwarded_writes_total{outcome}`: writes this node passed to the node holding
    /// the lease (`answered`: it answered, whatever it said; `unreachable`: it did not, the
    /// client got 503; `no_writer`: no node held the lease, 503).
    pub forwarded: IntCounterVec,
}

/// Seconds: 0.5 ms to 30 s (a long poll may wait 30 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl HttpMetrics {
    /// Fresh, unregistered metrics.
    #[allow(clippy::expect_used)] // the names and labels are constants, checked by a test
    pub fn new() -> Self {
        Self::build().expect("the HTTP metric definitions are valid")
    }

    fn build() -> prometheus::Result<Self> {
        Ok(Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "tally_http_requests_total",
                    "HTTP requests answered, by method, route template and status class.",
                ),
                &["method", "route", "status"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "tally_http_request_duration_seconds",
                    "Time to answer an HTTP request (to the response head), by method and route.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["method", "route"],
            )?,
            cursor_not_found: IntCounterVec::new(
                Opts::new(
                    "tally_cursor_not_found_total",
                    "after_guid cursors refused, by reason (purged, pruned, unknown).",
                ),
                &["reason"],
            )?,
            streams_open: IntGauge::new(
                "tally_stream_consumers",
                "Open usage-event stream connections.",
            )?,
            stream_events: IntCounter::new(
                "tally_stream_events_delivered_total",
                "Usage events written to usage-event streams.",
            )?,
            connections: crate::serve::ServeStats {
                open: IntGauge::new(
                    "tally_http_connections",
                    "Client connections open (the main listener and the admin listener).",
                )?,
                timed_out: IntCounter::new(
                    "tally_http_connections_timed_out_total",
                    "Connections closed because they idled or sent a request head too slowly.",
                )?,
                dropped_at_shutdown: IntCounter::new(
                    "tally_http_connections_dropped_at_shutdown_total",
                    "Connections still busy when the shutdown grace ran out.",
                )?,
            },
            forwarded: IntCounterVec::new(
                Opts::new(
                    "tally_forwarded_writes_total",
                    "Writes passed to the node holding the lease, by outcome (answered, unreachable, no_writer).",
                ),
                &["outcome"],
            )?,
        })
    }

    /// Registers every metric with `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.duration.clone()))?;
        registry.register(Box::new(self.cursor_not_found.clone()))?;
        registry.register(Box::new(self.streams_open.clone()))?;
        registry.register(Box::new(self.stream_events.clone()))?;
        registry.register(Box::new(self.connections.open.clone()))?;
        registry.register(Box::new(self.connections.timed_out.clone()))?;
        registry.register(Box::new(self.connections.dropped_at_shutdown.clone()))?;
        registry.register(Box::new(self.forwarded.clone()))?;
        Ok(())
    }

    /// Counts one answered request.
    pub fn observe(&self, method: &Method, route: &str, status: StatusCode, seconds: f64) {
        let method = method_label(method);
        self.requests
            .with_label_values(&[method, route, status_class(status)])
            .inc();
        self.duration
            .with_label_values(&[method, route])
            .observe(seconds);
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What `/metrics` serves and who may read it.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Everything registered: the engine's, the edge's, the process's, build info.
    pub registry: Registry,
    /// The edge's own metrics (registered in `registry` by whoever composes tally).
    pub http: HttpMetrics,
    /// When set, `/metrics` wants `Authorization: Bearer <token>`.
    pub token: Option<Redacted>,
    /// Whether the main listener serves `/metrics` (the admin listener always does).
    pub on_main_listener: bool,
}

/// The method as a label: one of the methods tally serves, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `2xx` for 200..=299, and so on.
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The route template of the request being served, filled in once axum matched a route (so
/// the outer middleware can label requests that timed out, too).
#[derive(Debug, Clone, Default)]
pub struct RouteSlot(pub Arc<std::sync::OnceLock<String>>);

impl RouteSlot {
    /// The template, or `unmatched`.
    pub fn label(&self) -> &str {
        self.0.get().map_or("unmatched", String::as_str)
    }
}

/// A route layer: records the matched template in the request's [`RouteSlot`].
pub(crate) async fn record_route(request: Request, next: Next) -> Response {
    if let (Some(path), Some(slot)) = (
        request.extensions().get::<MatchedPath>(),
        request.extensions().get::<RouteSlot>(),
    ) {
        let _ = slot.0.set(path.as_str().to_owned());
    }
    next.run(request).await
}

/// `GET /metrics`: the Prometheus text format (version 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "metrics.token is set and the bearer token is not it", body = crate::openapi::CcError)))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(Redacted(expected)) = &state.metrics.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes()).into();
        if !matches {
            return ApiError::not_authenticated().into_response();
        }
    }
    let families = state.metrics.registry.gather();
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::new();
    if let Err(error) = encoder.encode(&families, &mut body) {
        tracing::error!(%error, "cannot encode the metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Counts an open stream for as long as it lives.
pub(crate) struct OpenStream(IntGauge);

impl OpenStream {
    pub(crate) fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_register_and_labels_are_bounded() {
        let metrics = HttpMetrics::build().unwrap();
        let registry = Registry::new();
        metrics.register(&registry).unwrap();
        assert_eq!(method_label(&Method::CONNECT), "other");
        assert_eq!(method_label(&Method::PUT), "PUT");
        assert_eq!(status_class(StatusCode::NO_CONTENT), "2xx");
        assert_eq!(status_class(StatusCode::UNPROCESSABLE_ENTITY), "4xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
        assert_eq!(RouteSlot::default().label(), "unmatched");
    }
}
