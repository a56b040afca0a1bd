//! tally's HTTP edge: axum routers that speak Cloud Controller's API, thin handlers (extract,
//! convert, call the engine, map), and the one place errors become CC bodies.
//!
//! # Layout
//! - [`router`]: the whole API; each resource module adds its own `router()`.
//! - [`error`]: [`ApiError`] and the CC error table.
//! - [`middleware`]: `X-VCAP-Request-ID`, `nosniff`, error rendering.
//! - [`json`]: the JSON body extractor (size limit, CC's parse errors).
//! - [`metrics`]: request metrics, `/metrics`.
//! - `backup`: `GET /admin/export`, a backup of the running log.
//! - `cluster`: several nodes on one PostgreSQL (reads wait for the log; writes go to the
//!   node holding the lease).
//! - `root`: `/`, `/v2/info`, `/healthz`, `/readyz`.
//! - `openapi`: the OpenAPI document's frame; every handler documents itself.
//! - [`v2`]: the v2 API (pagination, presenters, org and space roles).
//!
//! Every handler asks [`tally_domain::access`] whether the caller may do what it asks, and maps
//! the answer with one function (`deny`).

mod audit;
pub mod auth;
mod backup;
mod cluster;
pub mod error;
pub mod json;
pub mod metrics;
pub mod middleware;
mod openapi;
pub mod page;
mod render;
mod resource;
mod root;
pub mod serve;
mod staging;
pub mod usage_endpoints;
mod usage_json;
pub mod v2;
pub mod v3;

use std::sync::Arc;

use axum::Router;
use tally_engine::Engine;

pub use error::ApiError;

/// Settings the HTTP edge needs.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The URL clients reach tally at (links are built from it), without a trailing slash.
    pub external_url: String,
    /// The UAA (token issuer) URL clients are sent to.
    pub uaa_url: String,
    /// The logging and SSH endpoints `/v2/info` names.
    pub info: InfoEndpoints,
    /// Time a request may take, reading its body included.
    pub request_timeout: std::time::Duration,
    /// Largest package upload, bytes.
    pub max_upload_bytes: usize,
    /// The most bytes of resources one list answer holds.
    pub max_page_bytes: usize,
    /// Where uploaded packages are stored (`<data_dir>/packages`).
    pub packages_dir: std::path::PathBuf,
    /// The password of the staging callback (user `staging`); `None` refuses every callback.
    pub staging_callback_password: Option<Redacted>,
    /// How long a write passed to the node holding the lease may take before the client is
    /// told 503 (a writer that hangs, or was paused, loses its lease within this long).
    pub forward_timeout: std::time::Duration,
}

/// What `/v2/info` (and `/`) tell clients about logging and SSH (`[info]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoEndpoints {
    /// `doppler_logging_endpoint`.
    pub doppler_logging_endpoint: String,
    /// `app_ssh_endpoint`.
    pub app_ssh_endpoint: String,
    /// `app_ssh_host_key_fingerprint`.
    pub app_ssh_host_key_fingerprint: String,
    /// `app_ssh_oauth_client`.
    pub app_ssh_oauth_client: String,
}

/// A secret: shown as `[redacted]` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What every handler shares.
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// HTTP settings.
    pub settings: HttpSettings,
    /// Checks bearer tokens.
    pub verifier: auth::TokenVerifier,
    /// Tells long polls and streams to finish when tally shuts down.
    pub closing: Closing,
    /// The registry `/metrics` serves, and the edge's own metrics.
    pub metrics: metrics::Metrics,
}

/// Whether tally is shutting down: long polls answer at once and streams end, so a graceful
/// shutdown does not wait for them.
#[derive(Debug, Clone)]
pub struct Closing(tokio::sync::watch::Receiver<bool>);

impl Closing {
    /// A closing signal and the sender that raises it (`send(true)`).
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (sender, receiver) = tokio::sync::watch::channel(false);
        (sender, Self(receiver))
    }

    /// Whether shutdown has begun.
    pub fn is_closing(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown begins (never, if the sender is gone without raising it).
    pub async fn closed(&mut self) {
        if self.0.wait_for(|closing| *closing).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The whole API. Unknown routes and unknown methods get CC's 404 `NotFound`.
pub fn router(state: Arc<AppState>) -> Router {
    with_routes(state, Router::new())
}

/// The API plus `extra` routes (tests add probes this way).
pub(crate) fn with_routes(state: Arc<AppState>, extra: Router<Arc<AppState>>) -> Router {
    let timeout = state.settings.request_timeout;
    let (routes, document) = api(
        state.settings.max_upload_bytes,
        state.metrics.on_main_listener,
    )
    .split_for_parts();
    let document = Arc::new(document.to_pretty_json().unwrap_or_default());
    let routes = routes.merge(extra).route(
        "/openapi.json",
        axum::routing::get(move || {
            let document = document.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    document.as_str().to_owned(),
                )
            }
        }),
    );
    routes
        .route_layer(axum::middleware::from_fn(metrics::record_route))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::any_node,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(json::MAX_JSON_BODY))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |_: tower::BoxError| async { timed_out() },
                ))
                .timeout(timeout),
        )
        .layer(axum::middleware::from_fn_with_state(
            state,
            middleware::cc_headers,
        ))
}

/// Every documented route, with the OpenAPI document they make (see [`openapi`]).
fn api(
    max_upload_bytes: usize,
    metrics_on_main_listener: bool,
) -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    let api = utoipa_axum::router::OpenApiRouter::with_openapi(
        <openapi::ApiDoc as utoipa::OpenApi>::openapi(),
    )
    .merge(root::router())
    .merge(v2::router(max_upload_bytes))
    .merge(v3::router(max_upload_bytes))
    .merge(staging::router())
    .merge(backup::router());
    if metrics_on_main_listener {
        api.routes(utoipa_axum::routes!(metrics::metrics))
    } else {
        api
    }
}

/// The OpenAPI document of the API (what `GET /openapi.json` serves).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api(0, true).into_openapi()
}

/// The admin listener's routes: `/metrics`, `/healthz` and `/readyz`, nothing of the API.
pub fn admin_router(state: Arc<AppState>) -> Router {
    let (health, _) = root::health_router().split_for_parts();
    Router::new()
        .route("/metrics", axum::routing::get(metrics::metrics))
        .merge(health)
        .route_layer(axum::middleware::from_fn(metrics::record_route))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state,
            middleware::cc_headers,
        ))
}

/// A request that outlived `server.request_timeout_seconds`. A command it had already handed to
/// the writer still commits (the writer never waits for a client); the client was told 503, so
/// it cannot rely on either outcome and should look before retrying.
fn timed_out() -> ApiError {
    tracing::warn!("request timed out");
    ApiError::unavailable("The request took too long and was abandoned")
}

/// A fresh random guid for a resource a client creates.
pub(crate) fn fresh_guid() -> tally_domain::Guid {
    #[allow(clippy::disallowed_methods)] // new resources get random guids, as in CC
    let uuid = uuid::Uuid::new_v4();
    tally_domain::Guid::from_bytes(*uuid.as_bytes())
}

/// Maps a permission [`Denial`](tally_domain::access::Denial) to CC's error; `not_found` is the
/// resource's own not-found error.
pub(crate) fn deny(
    denial: tally_domain::access::Denial,
    not_found: impl FnOnce() -> ApiError,
) -> ApiError {
    use tally_domain::access::Denial;
    match denial {
        Denial::InsufficientScope => ApiError::insufficient_scope(),
        Denial::NotAuthorized => ApiError::not_authorized(),
        Denial::NotFound => not_found(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod permission_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod usage_tests;
