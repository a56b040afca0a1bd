//! `GET /v2/events` and `GET /v2/events/:guid` (reference §6.3): audit events, filtered with
//! `q` on `type`, `actee`, `space_guid`, `organization_guid` and `timestamp` (a second-wide
//! window, as CC widens timestamps), in log order (which is timestamp order: tally's timestamps
//! never go backwards), at most 100 per page.

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tally_domain::access::{self, Api};
use tally_domain::{AuditEvent, Guid, Timestamp};

use crate::auth::Caller;
use crate::v2::paging::{bad_query, Paging, MAX_PER_PAGE};
use crate::v2::present::time;
use crate::v2::query::{Condition, Op};
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// Audit events read from the log per step when listing.
const CHUNK: usize = 10_000;

pub(crate) fn event_not_found(guid: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "EventNotFound",
        230002,
        format!("Event could not be found: {guid}"),
    )
}

/// Every durable audit event, in log order.
pub(crate) async fn all_audit_events(
    state: &AppState,
    view: &tally_engine::View,
) -> Result<Vec<AuditEvent>, ApiError> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let chunk = state.engine.audit_after(view, after, CHUNK).await?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        after = *last;
        events.extend(chunk.into_iter().map(|(_, e)| e));
    }
    Ok(events)
}

/// One second, less a microsecond: how far CC widens a timestamp.
const WIDEN: chrono::Duration = chrono::Duration::microseconds(999_999);

pub(crate) fn parse_time(text: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn time_matches(c: &Condition, at: Timestamp) -> Result<bool, ApiError> {
    let times = c
        .values
        .iter()
        .map(|v| parse_time(v).ok_or_else(|| bad_query(format!("timestamp {v}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let first = times.first().copied().unwrap_or_default();
    Ok(match c.op {
        Op::Eq => first <= at && at <= first + WIDEN,
        Op::In => times.iter().any(|t| *t <= at && at <= *t + WIDEN),
        Op::Ge => at >= first,
        Op::Le => at <= first + WIDEN,
        Op::Lt => at < first,
        Op::Gt => at > first + WIDEN,
    })
}

fn matches(c: &Condition, e: &AuditEvent) -> Result<bool, ApiError> {
    Ok(match c.key.as_str() {
        "type" => c.matches(&e.event_type),
        "actee" => c.matches(&e.actee),
        "space_guid" => c.matches(&e.space_guid.map(|g| g.to_string()).unwrap_or_default()),
        "organization_guid" => c.matches(
            &e.organization_guid
                .map(|g| g.to_string())
                .unwrap_or_default(),
        ),
        _ => time_matches(c, e.created_at)?,
    })
}

/// The metadata column as JSON (it is stored as JSON object text).
pub(crate) fn metadata(e: &AuditEvent) -> Value {
    serde_json::from_str(&e.metadata).unwrap_or_else(|_| json!({}))
}

fn present(e: &AuditEvent) -> Value {
    json!({
        "metadata": {
            "guid": e.guid.to_string(),
            "url": format!("/v2/events/{}", e.guid),
            "created_at": time(e.created_at),
            "updated_at": time(e.created_at),
        },
        "entity": {
            "type": e.event_type,
            "actor": e.actor.guid,
            "actor_type": e.actor.kind,
            "actor_name": e.actor.name,
            "actor_username": e.actor.username,
            "actee": e.actee,
            "actee_type": e.actee_type,
            "actee_name": e.actee_name,
            "timestamp": time(e.created_at),
            "metadata": metadata(e),
            "space_guid": e.space_guid.map(|g| g.to_string()).unwrap_or_default(),
            "organization_guid": e.organization_guid.map(|g| g.to_string()).unwrap_or_default(),
        }
    })
}

/// Audit events, a v2 page.
#[utoipa::path(get, path = "/v2/events", tag = "events", security(("bearer" = [])), params(crate::openapi::V2ListParams), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn list(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let visible = access::audit_list(caller.subject(), &view.state, Api::V2)
        .map_err(|d| deny(d, ApiError::not_found))?;
    let paging = Paging::parse_ordered(
        query.as_deref(),
        MAX_PER_PAGE,
        &[
            "timestamp",
            "type",
            "actee",
            "space_guid",
            "organization_guid",
        ],
        &["timestamp", "id"],
    )?;
    let mut shown = Vec::new();
    for e in all_audit_events(&state, &view).await? {
        if !visible.shows(e.space_guid, e.organization_guid) {
            continue;
        }
        let mut keep = true;
        for c in &paging.filter {
            keep &= matches(c, &e)?;
        }
        if keep {
            shown.push(e);
        }
    }
    Ok(Json(paging.envelope("/v2/events", shown, |e| present(&e))))
}

/// One audit event.
#[utoipa::path(get, path = "/v2/events/{guid}", tag = "events", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn show(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let found = match guid.parse::<Guid>() {
        Ok(g) => state.engine.audit_event(&view, g).await?,
        Err(_) => None,
    };
    // v2 order: the token rule, then existence, then visibility.
    let visible = access::audit_list(caller.subject(), &view.state, Api::V2)
        .map_err(|d| deny(d, ApiError::not_found))?;
    let (_, event) = found.ok_or_else(|| event_not_found(&guid))?;
    if !visible.shows(event.space_guid, event.organization_guid) {
        return Err(deny(access::Denial::NotAuthorized, ApiError::not_found));
    }
    Ok(Json(present(&event)))
}
