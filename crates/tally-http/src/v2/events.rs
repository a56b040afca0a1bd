//! `GET /v2/events` and `GET /v2/events/:guid` (reference §6.3): audit events, filtered with
//! `q` on `type`, `actee`, `space_guid`, `organization_guid` and `timestamp` (a second-wide
//! window, as CC widens timestamps), in log order (which is timestamp order: tally's timestamps
//! never go backwards), at most 100 per page.

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tally_domain::access::{self, Api};
use tally_domain::{AuditEvent, Timestamp};
use tally_engine::{AuditCondition, AuditField, AuditQuery, Match, TimeSpan, Window};

use crate::audit::metadata;
use crate::auth::Caller;
use crate::render::time;
use crate::resource::open_list;
use crate::v2::paging::{Paging, MAX_PER_PAGE};
use crate::v2::query::{Condition, Op};
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

pub(crate) fn event_not_found(guid: &str) -> ApiError {
    ApiError::event_not_found(guid)
}

/// One second, less a microsecond: how far CC widens a timestamp.
const WIDEN: chrono::Duration = chrono::Duration::microseconds(999_999);

pub(crate) fn parse_time(text: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The spans of time (µs, inclusive) a `timestamp` condition lets through.
fn time_spans(c: &Condition) -> Result<Vec<TimeSpan>, ApiError> {
    let times = c
        .values
        .iter()
        .map(|v| parse_time(v).ok_or_else(|| ApiError::bad_query(format!("timestamp {v}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let us = |t: Timestamp| t.timestamp_micros();
    let widen = WIDEN.num_microseconds().unwrap_or(999_999);
    let first = us(times.first().copied().unwrap_or_default());
    let span = |from, to| TimeSpan { from, to };
    Ok(match c.op {
        Op::Eq => vec![span(Some(first), Some(first + widen))],
        Op::In => times
            .iter()
            .map(|t| span(Some(us(*t)), Some(us(*t) + widen)))
            .collect(),
        Op::Ge => vec![span(Some(first), None)],
        Op::Le => vec![span(None, Some(first + widen))],
        Op::Lt => vec![span(None, Some(first - 1))],
        Op::Gt => vec![span(Some(first + widen + 1), None)],
    })
}

/// A `q` condition as the audit index takes it.
fn condition(c: &Condition) -> Result<AuditCondition, ApiError> {
    let field = match c.key.as_str() {
        "type" => AuditField::Type,
        "actee" => AuditField::Actee,
        "space_guid" => AuditField::Space,
        "organization_guid" => AuditField::Org,
        _ => return Ok(AuditCondition::Time(time_spans(c)?)),
    };
    let m = match c.op {
        Op::Eq | Op::In => Match::AnyOf(c.values.clone()),
        _ => {
            let c = c.clone();
            Match::Where(Box::new(move |value| c.matches(value)))
        }
    };
    Ok(AuditCondition::Field(field, m))
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
) -> Result<axum::response::Response, ApiError> {
    let rule = |who: access::Subject<'_>, table: &_| access::audit_list(who, table, Api::V2);
    let (view, visible, paging) = open_list(&state, &caller, rule, ApiError::not_found, || {
        let keys = [
            "timestamp",
            "type",
            "actee",
            "space_guid",
            "organization_guid",
        ];
        Paging::parse_ordered(query.as_deref(), MAX_PER_PAGE, &keys, &["timestamp", "id"])
    })?;
    let mut query = AuditQuery::showing(visible);
    for c in &paging.filter {
        query.conditions.push(condition(c)?);
    }
    let window = Window {
        offset: paging.offset(),
        limit: paging.per_page,
        descending: paging.descending,
    };
    let (total, events) = state.engine.audit_page(&view, &query, window).await?;
    let resources = crate::page::v2_all(&state, &events, |(_, e)| present(e))?;
    crate::page::json(
        |empty| paging.page_envelope("/v2/events", total, empty, &[]),
        resources,
    )
}

/// One audit event.
#[utoipa::path(get, path = "/v2/events/{guid}", tag = "events", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn show(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let found = crate::audit::find(&state, &view, &guid).await?;
    // v2 order: the token rule, then existence, then visibility.
    let visible = access::audit_list(caller.subject(), &view.state, Api::V2)
        .map_err(|d| deny(d, ApiError::not_found))?;
    let (_, event) = found.ok_or_else(|| event_not_found(&guid))?;
    if !visible.shows(event.space_guid, event.organization_guid) {
        return Err(deny(access::Denial::NotAuthorized, ApiError::not_found));
    }
    Ok(Json(present(&event)))
}
