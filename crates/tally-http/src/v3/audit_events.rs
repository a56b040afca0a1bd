//! `GET /v3/audit_events` and `GET /v3/audit_events/:guid` (reference §6.4).

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use tally_domain::access::{self, Api};
use tally_domain::{AuditEvent, Guid};

use crate::auth::Caller;
use crate::v3::list::{ListQuery, Spec};
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

fn bad_query(message: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "BadQueryParameter",
        10005,
        format!("The query parameter is invalid: {message}"),
    )
}

const SPEC: Spec<'static> = Spec {
    lists: &[
        "types",
        "target_guids",
        "target_guids[not]",
        "space_guids",
        "organization_guids",
        "guids",
    ],
    times: &["created_ats", "updated_ats"],
    order_by: &["created_at", "updated_at"],
    refused: &[],
    single: &[],
    extensions: &[],
    error: bad_query,
};

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        10010,
        "Event not found",
    )
}

fn present(base: &str, e: &AuditEvent) -> Value {
    let at = e.created_at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    json!({
        "guid": e.guid.to_string(),
        "created_at": at,
        "updated_at": at,
        "type": e.event_type,
        "actor": if e.actor.guid.is_empty() { Value::Null } else {
            json!({"guid": e.actor.guid, "type": e.actor.kind, "name": e.actor.name})
        },
        "target": if e.actee.is_empty() { Value::Null } else {
            json!({"guid": e.actee, "type": e.actee_type, "name": e.actee_name})
        },
        "data": crate::v2::events::metadata(e),
        "space": e.space_guid.map(|g| json!({"guid": g.to_string()})),
        "organization": e.organization_guid.map(|g| json!({"guid": g.to_string()})),
        "links": { "self": { "href": format!("{base}/v3/audit_events/{}", e.guid) } },
    })
}

/// Audit events, a v3 page.
#[utoipa::path(get, path = "/v3/audit_events", tag = "audit events", security(("bearer" = [])), params(crate::openapi::V3AuditParams), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn list(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let visible = access::audit_list(caller.subject(), &view.state, Api::V3)
        .map_err(|d| deny(d, not_found))?;
    let q = ListQuery::parse(query.as_deref(), &SPEC)?;
    let opt = |g: Option<Guid>| g.map(|g| g.to_string()).unwrap_or_default();
    let mut shown: Vec<AuditEvent> = crate::v2::events::all_audit_events(&state, &view)
        .await?
        .into_iter()
        .filter(|e| visible.shows(e.space_guid, e.organization_guid))
        .filter(|e| {
            q.allows("types", &e.event_type)
                && q.allows("target_guids", &e.actee)
                && q.allows_not("target_guids", &e.actee)
                && q.allows("space_guids", &opt(e.space_guid))
                && q.allows("organization_guids", &opt(e.organization_guid))
                && q.allows("guids", &e.guid.to_string())
                && q.allows_time("created_ats", e.created_at)
                && q.allows_time("updated_ats", e.created_at)
        })
        .collect();
    if q.order_by.is_some() {
        // Log order is creation order; guid breaks ties as CC's secondary key does.
        shown.sort_by_key(|e| (e.created_at, e.guid));
    }
    if q.descending() {
        shown.reverse();
    }
    let base = &state.settings.external_url;
    Ok(Json(q.envelope(
        &format!("{base}/v3/audit_events"),
        shown,
        |e| present(base, &e),
    )))
}

/// One audit event.
#[utoipa::path(get, path = "/v3/audit_events/{guid}", tag = "audit events", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn show(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let visible = access::audit_list(caller.subject(), &view.state, Api::V3)
        .map_err(|d| deny(d, not_found))?;
    let found = match guid.parse::<Guid>() {
        Ok(g) => state.engine.audit_event(&view, g).await?,
        Err(_) => None,
    };
    match found {
        Some((_, e)) if visible.shows(e.space_guid, e.organization_guid) => {
            Ok(Json(present(&state.settings.external_url, &e)))
        }
        _ => Err(not_found()),
    }
}
