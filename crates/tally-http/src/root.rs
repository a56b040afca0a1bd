//! Discovery: `GET /` and `GET /v2/info` (unauthenticated, as in CC), and health.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

/// CC API version tally reports on `/v2/info`.
pub const API_VERSION: &str = "2.186.0";

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(info))
        .merge(health_router())
}

/// `/healthz` and `/readyz` (served on the admin listener too).
pub(crate) fn health_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Cloud Controller's root document.
#[utoipa::path(get, path = "/", tag = "discovery",
    responses((status = 200, description = "links to the v2 and v3 APIs and the UAA", body = serde_json::Value)))]
async fn root(State(state): State<Arc<AppState>>) -> Json<Value> {
    let base = &state.settings.external_url;
    let uaa = &state.settings.uaa_url;
    let info = &state.settings.info;
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
            "logging": { "href": info.doppler_logging_endpoint },
            "log_cache": null,
            "log_stream": null,
            "app_ssh": {
                "href": info.app_ssh_endpoint,
                "meta": {
                    "host_key_fingerprint": info.app_ssh_host_key_fingerprint,
                    "oauth_client": info.app_ssh_oauth_client,
                }
            }
        }
    }))
}

/// `/v2/info`.
#[utoipa::path(get, path = "/v2/info", tag = "discovery",
    responses((status = 200, description = "API version, token endpoints", body = serde_json::Value)))]
async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let uaa = &state.settings.uaa_url;
    let info = &state.settings.info;
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
        "app_ssh_endpoint": info.app_ssh_endpoint,
        "app_ssh_host_key_fingerprint": info.app_ssh_host_key_fingerprint,
        "app_ssh_oauth_client": info.app_ssh_oauth_client,
        "doppler_logging_endpoint": info.doppler_logging_endpoint,
        "api_version": API_VERSION,
        "osbapi_version": "2.15",
        "routing_endpoint": null
    }))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Ready to take writes: recovery finished (the router only exists after it), tally is not
/// shutting down, and the log takes an fsynced write now (a probe rewrites the meta, so a
/// full or failing disk shows here, and shows as recovered as soon as writes work again).
/// 200 with the durable head and epoch, or 503 saying why.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "ready: the durable head and epoch", body = serde_json::Value),
        (status = 503, description = "not ready, and why", body = serde_json::Value)))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let unready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": reason })),
        )
            .into_response()
    };
    if state.closing.is_closing() {
        return unready("tally is shutting down".to_owned());
    }
    // The writer proves the log takes a write; a follower that it reaches the database and
    // has caught up with the log.
    let ready = async {
        state.engine.probe().await?;
        state.engine.sync().await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, ready).await {
        Ok(Ok(view)) => {
            let role = match state.engine.role() {
                tally_engine::Role::Sole => "sole",
                tally_engine::Role::Writer { .. } => "writer",
                tally_engine::Role::Follower { .. } => "follower",
            };
            Json(json!({
                "status": "ready",
                "head": view.meta.head,
                "epoch": view.meta.epoch,
                "role": role,
            }))
            .into_response()
        }
        Ok(Err(error)) => unready(format!("the log is not writable: {error}")),
        Err(_) => unready(format!(
            "the log did not take a write within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// How long readiness waits for its probe write (behind the commands queued before it).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
