//! `POST /internal/v3/staging/:build_guid/build_completed`: a runtime reports a build's end
//! (`staging.mode = "external"`). Authenticated by HTTP Basic, user `staging` and
//! `staging.callback_password`, compared in constant time; with no password configured every
//! report is refused. The body follows the shape of CC's staging completion:
//! success `{"result": {"lifecycle_metadata": {"detected_buildpack", "buildpack_key"},
//! "process_types": {"web": "<start command>"}}}`, failure `{"failed": true, "error": {"id",
//! "message"}}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine as _;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tally_domain::{Actor, BuildOutcome, Command, Envelope, Guid};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(build_completed))
}

#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    failed: bool,
    error: Option<StagingError>,
    result: Option<StagingResult>,
}

#[derive(Debug, Deserialize)]
struct StagingError {
    id: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StagingResult {
    lifecycle_metadata: Option<LifecycleMetadata>,
    #[serde(default)]
    process_types: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct LifecycleMetadata {
    detected_buildpack: Option<String>,
    buildpack_key: Option<String>,
}

fn unauthenticated() -> ApiError {
    ApiError::not_authenticated()
}

pub(crate) fn authorized(headers: &HeaderMap, password: Option<&str>) -> bool {
    let Some(password) = password else {
        return false;
    };
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("staging:{password}");
    bool::from(decoded.as_slice().ct_eq(expected.as_bytes()))
}

/// A runtime reports the end of a build (HTTP Basic, user `staging`).
#[utoipa::path(post, path = "/internal/v3/staging/{build_guid}/build_completed", tag = "staging",
    params(("build_guid" = String, Path, description = "the build")),
    request_body(content = serde_json::Value, description = "`{\"result\": {...}}` or `{\"failed\": true, \"error\": {...}}`", content_type = "application/json"),
    responses(
        (status = 200, description = "recorded"),
        (status = "default", description = "Cloud Controller's error (401, 404, 422)", body = crate::openapi::CcError)))]
async fn build_completed(
    State(state): State<Arc<AppState>>,
    Path(build_guid): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let password = state
        .settings
        .staging_callback_password
        .as_ref()
        .map(|p| p.0.as_str());
    if !authorized(&headers, password) {
        return Err(unauthenticated());
    }
    let body: Completion = serde_json::from_slice(&body)
        .map_err(|e| crate::json::parse_error(format!("invalid completion: {e}")))?;
    let not_found = || ApiError::resource_not_found(format!("Build not found: {build_guid}"));
    let build: Guid = build_guid.parse().map_err(|_| not_found())?;
    let outcome = if body.failed {
        let error = body.error.unwrap_or(StagingError {
            id: None,
            message: None,
        });
        BuildOutcome::Failed {
            reason: match (error.id, error.message) {
                (Some(id), Some(message)) => format!("{id}: {message}"),
                (Some(text), None) | (None, Some(text)) => text,
                (None, None) => "StagingError".to_owned(),
            },
        }
    } else {
        let result = body
            .result
            .ok_or_else(|| crate::json::missing_field("result"))?;
        let metadata = result.lifecycle_metadata;
        BuildOutcome::Staged {
            buildpack_guid: metadata
                .as_ref()
                .and_then(|m| m.buildpack_key.as_deref())
                .and_then(|k| k.parse().ok()),
            buildpack_name: metadata.and_then(|m| m.detected_buildpack),
            detected_start_command: result.process_types.get("web").cloned().unwrap_or_default(),
            other_process_types: result
                .process_types
                .into_iter()
                .filter(|(kind, _)| kind != tally_domain::model::WEB_PROCESS_TYPE)
                .collect(),
        }
    };
    state
        .engine
        .submit(Envelope {
            command: Command::CompleteBuild {
                build_guid: build,
                outcome,
            },
            actor: Actor::system(),
            principal: None,
        })
        .await?;
    Ok(StatusCode::OK)
}
