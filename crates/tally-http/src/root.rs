//! Discovery: `GET /` and `GET /v2/info` (unauthenticated, as in CC), and health.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::AppState;

/// CC API version tally reports on `/v2/info`.
pub const API_VERSION: &str = "2.186.0";

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(root))
        .route("/v2/info", get(info))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn root(State(state): State<Arc<AppState>>) -> Json<Value> {
    let base = &state.settings.external_url;
    let uaa = &state.settings.uaa_url;
    Json(json!({
        "links": {
            "self": { "href": base },
            "bits_service": null,
            "cloud_controller_v2": { "href": format!("{base}/v2"), "meta": { "version": API_VERSION } },
            "cloud_controller_v3": { "href": format!("{base}/v3"), "meta": { "version": "3.151.0" } },
            "network_policy_v0": null,
            "network_policy_v1": null,
            "login": { "href": uaa },
            "uaa": { "href": uaa },
            "credhub": null,
            "routing": null,
            "logging": null,
            "log_cache": null,
            "log_stream": null,
            "app_ssh": null
        }
    }))
}

async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let uaa = &state.settings.uaa_url;
    Json(json!({
        "name": "tally",
        "build": env!("CARGO_PKG_VERSION"),
        "support": "",
        "version": 0,
        "description": "tally: event-sourced usage metering with the Cloud Controller API",
        "authorization_endpoint": uaa,
        "token_endpoint": uaa,
        "min_cli_version": null,
        "min_recommended_cli_version": null,
        "app_ssh_endpoint": null,
        "app_ssh_host_key_fingerprint": null,
        "app_ssh_oauth_client": null,
        "doppler_logging_endpoint": null,
        "api_version": API_VERSION,
        "osbapi_version": "2.15",
        "routing_endpoint": null
    }))
}

/// The process is alive.
async fn healthz() -> &'static str {
    "ok"
}

/// Recovery finished and the writer runs: the log's position and epoch.
async fn readyz(State(state): State<Arc<AppState>>) -> Json<Value> {
    let view = state.engine.view();
    Json(json!({ "status": "ready", "head": view.meta.head, "epoch": view.meta.epoch }))
}
