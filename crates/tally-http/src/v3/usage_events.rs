//! `GET /v3/app_usage_events`, `GET /v3/app_usage_events/:guid` and
//! `POST /v3/app_usage_events/actions/destructively_purge_all_and_reseed`
//! (reference §3.3, §3.4, §4.3), plus tally's `wait` long poll.

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tally_domain::access::{self, Api, Visible};
use tally_domain::{Guid, Timestamp};
use tally_engine::UsageQuery;

use crate::auth::Caller;
use crate::resource::open_list;
use crate::usage_endpoints::{
    epoch_headers, parse_wait, poll, readable, unprocessable, v3_resource,
};
use crate::v3::list::{ListQuery, Spec};
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(crate::v3::stream::stream))
        .routes(routes!(show))
        .routes(routes!(purge))
}

/// The list's parameters, in the order CC names them.
pub(crate) const SPEC: Spec<'static> = Spec {
    lists: &["guids", "after_guid"],
    times: &["created_ats"],
    order_by: &["created_at"],
    refused: &["updated_ats"],
    single: &["after_guid"],
    extensions: &["wait"],
    error: unprocessable,
};

fn not_found() -> ApiError {
    ApiError::resource_not_found("App usage event not found")
}

/// Usage events of the epoch, a v3 page; follow after_guid.
#[utoipa::path(get, path = "/v3/app_usage_events", tag = "usage events", security(("bearer" = [])), params(crate::openapi::V3UsageParams), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn list(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rule = |who: access::Subject<'_>, _: &_| access::usage_list(who, Api::V3);
    let (_, visible, q) = open_list(&state, &caller, rule, not_found, || {
        ListQuery::parse(query.as_deref(), &SPEC)
    })?;
    let base = &state.settings.external_url;
    let path = format!("{base}/v3/app_usage_events");
    if matches!(visible, Visible::Nothing) {
        // CC validates the parameters, then shows such callers nothing.
        let view = state.engine.view();
        let body = q.page_envelope(&path, 0, Vec::<()>::new());
        return Ok((epoch_headers(&view), Json(body)).into_response());
    }
    let wait = parse_wait(
        &state,
        Api::V3,
        q.extensions.get("wait").map(String::as_str),
    )?;
    let after_guid = q.lists.get("after_guid").and_then(|v| v.first()).cloned();
    let guids: Option<Vec<Guid>> = q.lists.get("guids").map(|values| {
        values
            .iter()
            .filter_map(|v| v.parse::<Guid>().ok())
            .collect()
    });
    let created = |at: Timestamp| q.allows_time("created_ats", at);
    let has_times = q.times.contains_key("created_ats");
    let limit = usize::try_from(q.per_page).unwrap_or(usize::MAX);
    let (view, total, resources) = poll(&state, Api::V3, after_guid.as_deref(), wait, |after| {
        UsageQuery {
            after,
            guids: guids.as_deref(),
            created: has_times.then_some(&created as &(dyn Fn(Timestamp) -> bool + Sync)),
            by_created_at: q.order_by.is_some(),
            descending: q.descending(),
            offset: q.offset(),
            limit,
        }
    })
    .await?;
    let page = crate::page::json(|empty| q.page_envelope(&path, total, empty), resources)?;
    Ok((epoch_headers(&view), page).into_response())
}

/// One usage event.
#[utoipa::path(get, path = "/v3/app_usage_events/{guid}", tag = "usage events", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn show(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    let (view, event) = readable(&state, caller.subject(), Api::V3, &guid, not_found).await?;
    let body = v3_resource(&state.settings.external_url, &event);
    Ok((epoch_headers(&view), Json(body)).into_response())
}

/// Purge-and-reseed: a new epoch of one STARTED event per started app.
#[utoipa::path(post, path = "/v3/app_usage_events/actions/destructively_purge_all_and_reseed", tag = "usage events", security(("bearer" = [])), responses((status = 200, description = "{}", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn purge(caller: Caller, State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    access::usage_purge(caller.subject(), Api::V3).map_err(|d| deny(d, not_found))?;
    state.engine.purge_and_reseed().await?;
    let view = state.engine.view();
    Ok((epoch_headers(&view), Json(json!({}))).into_response())
}
