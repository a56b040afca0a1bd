//! `GET /v3/audit_events` and `GET /v3/audit_events/:guid` (reference §6.4).

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde_json::{json, Value};
use tally_domain::access::{self, Api};
use tally_domain::AuditEvent;
use tally_engine::{AuditCondition, AuditField, AuditQuery, Match, Window};

use crate::auth::Caller;
use crate::resource::open_list;
use crate::v3::list::{ListQuery, Spec};
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

fn bad_query(message: String) -> ApiError {
    ApiError::bad_query(message)
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
    ApiError::resource_not_found("Event not found")
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
        "data": crate::audit::metadata(e),
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
) -> Result<axum::response::Response, ApiError> {
    let rule = |who: access::Subject<'_>, table: &_| access::audit_list(who, table, Api::V3);
    let (view, visible, q) = open_list(&state, &caller, rule, not_found, || {
        ListQuery::parse(query.as_deref(), &SPEC)
    })?;
    let mut audit = AuditQuery::showing(visible);
    for (key, field) in [
        ("types", AuditField::Type),
        ("target_guids", AuditField::Actee),
        ("space_guids", AuditField::Space),
        ("organization_guids", AuditField::Org),
    ] {
        if let Some(values) = q.lists.get(key) {
            let m = Match::AnyOf(values.clone());
            audit.conditions.push(AuditCondition::Field(field, m));
        }
    }
    if let Some(values) = q.lists.get("target_guids[not]") {
        audit
            .conditions
            .push(AuditCondition::NotActee(values.clone()));
    }
    if let Some(values) = q.lists.get("guids") {
        let seqs = crate::audit::seqs_of_guids(&state, &view, values).await?;
        audit.conditions.push(AuditCondition::Seqs(seqs));
    }
    for key in ["created_ats", "updated_ats"] {
        if let Some(filter) = q.times.get(key) {
            audit.conditions.push(AuditCondition::Time(filter.spans()));
        }
    }
    // Log order is creation order (guid breaks ties as CC's secondary key does, and event
    // guids sort by position), so either order is the index's, forward or reversed.
    let window = Window {
        offset: q.offset(),
        limit: q.per_page,
        descending: q.descending(),
    };
    let (total, events) = state.engine.audit_page(&view, &audit, window).await?;
    let base = &state.settings.external_url;
    let resources = crate::page::v3_all(&state, &events, |(_, e)| present(base, e), bad_query)?;
    let path = format!("{base}/v3/audit_events");
    crate::page::json(|empty| q.page_envelope(&path, total, empty), resources)
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
    let found = crate::audit::find(&state, &view, &guid).await?;
    match found {
        Some((_, e)) if visible.shows(e.space_guid, e.organization_guid) => {
            Ok(Json(present(&state.settings.external_url, &e)))
        }
        _ => Err(not_found()),
    }
}
