//! tally's HTTP edge: axum routers that speak Cloud Controller's API, thin handlers (extract,
//! convert, call the engine, map), and the one place errors become CC bodies.
//!
//! # Layout
//! - [`router`]: the whole API; each resource module adds its own `router()`.
//! - [`error`]: [`ApiError`] and the CC error table.
//! - [`middleware`]: `X-VCAP-Request-ID`, `nosniff`, error rendering.
//! - `root`: `/`, `/v2/info`, `/healthz`, `/readyz`.

pub mod auth;
pub mod error;
pub mod middleware;
mod root;

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
}

/// What every handler shares.
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// HTTP settings.
    pub settings: HttpSettings,
    /// Checks bearer tokens.
    pub verifier: auth::TokenVerifier,
}

/// The whole API. Unknown routes and unknown methods get CC's 404 `NotFound`.
pub fn router(state: Arc<AppState>) -> Router {
    with_routes(state, Router::new())
}

/// The API plus `extra` routes (tests add probes this way).
pub(crate) fn with_routes(state: Arc<AppState>, extra: Router<Arc<AppState>>) -> Router {
    Router::new()
        .merge(root::router())
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(middleware::cc_headers))
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

#[cfg(test)]
mod tests;
