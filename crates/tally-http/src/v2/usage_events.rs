//! `GET /v2/app_usage_events`, `GET /v2/app_usage_events/:guid` and
//! `POST /v2/app_usage_events/destructively_purge_all_and_reseed_started_apps`
//! (reference §3.1, §3.2, §4.2), plus tally's `wait` long poll.

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tally_domain::access::{self, Api};
use tally_engine::UsageQuery;

use crate::auth::Caller;
use crate::resource::open_list;
use crate::usage_endpoints::{epoch_headers, parse_wait, poll, readable, v2_resource};
use crate::v2::events::event_not_found;
use crate::v2::paging::Paging;
use crate::{deny, ApiError, AppState};

/// This collection's page size limit (CC's "large" renderer).
pub const MAX_PER_PAGE: u64 = 10_000;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(purge))
}

/// The last value of `key` in a raw query string.
pub(crate) fn param(query: Option<&str>, key: &str) -> Result<Option<String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| ApiError::bad_query("the query string is not URL-encoded"))?;
    Ok(pairs
        .into_iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v))
}

/// Usage events of the epoch, a v2 page; follow after_guid.
#[utoipa::path(get, path = "/v2/app_usage_events", tag = "usage events", security(("bearer" = [])), params(crate::openapi::V2UsageParams), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn list(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rule = |who: access::Subject<'_>, _: &_| access::usage_list(who, Api::V2);
    let (_, _, paging) = open_list(&state, &caller, rule, ApiError::not_found, || {
        Paging::parse(query.as_deref(), MAX_PER_PAGE, &[])
    })?;
    let after_guid = param(query.as_deref(), "after_guid")?;
    let wait = parse_wait(&state, Api::V2, param(query.as_deref(), "wait")?.as_deref())?;
    let limit = usize::try_from(paging.per_page).unwrap_or(usize::MAX);
    let (view, total, resources) = poll(&state, Api::V2, after_guid.as_deref(), wait, |after| {
        UsageQuery {
            after,
            guids: None,
            created: None,
            by_created_at: false,
            descending: paging.descending,
            offset: paging.offset(),
            limit,
        }
    })
    .await?;
    let keep: Vec<(&str, String)> = after_guid.into_iter().map(|g| ("after_guid", g)).collect();
    let path = "/v2/app_usage_events";
    let page = crate::page::json(|e| paging.page_envelope(path, total, e, &keep), resources)?;
    Ok((epoch_headers(&view), page).into_response())
}

/// One usage event.
#[utoipa::path(get, path = "/v2/app_usage_events/{guid}", tag = "usage events", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn show(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    let (view, event) = readable(&state, caller.subject(), Api::V2, &guid, || {
        event_not_found(&guid)
    })
    .await?;
    Ok((epoch_headers(&view), Json(v2_resource(&event))).into_response())
}

/// Purge-and-reseed: a new epoch of one STARTED event per started app.
#[utoipa::path(post, path = "/v2/app_usage_events/destructively_purge_all_and_reseed_started_apps", tag = "usage events", security(("bearer" = [])), responses((status = 204, description = "purged"), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn purge(caller: Caller, State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    access::usage_purge(caller.subject(), Api::V2).map_err(|d| deny(d, ApiError::not_found))?;
    state.engine.purge_and_reseed().await?;
    let view = state.engine.view();
    Ok((StatusCode::NO_CONTENT, epoch_headers(&view)).into_response())
}
