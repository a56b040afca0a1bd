//! `/v3/processes` and `/v3/apps/:guid/processes` (reference v3 §3): every app has a `web`
//! process, whose guid is the app's, and may have others (`worker`, ...) that a staged
//! droplet named; reads, update, and scale by either route.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use tally_domain::access::{self, Visible};
use tally_domain::model::{App, ProcessRef};
use tally_domain::{Command, Guid};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::json::CcJson;
use crate::resource::{open_list, Write};
use crate::v3::apps::{reach, reach_via, write_scope, Lookup, Rule};
use crate::v3::list::{unlabelled_pass, ListQuery, Spec};
use crate::v3::{body, present};
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, update))
        .routes(routes!(scale))
        .routes(routes!(app_processes))
        .routes(routes!(app_process))
        .routes(routes!(app_scale))
}

fn process_not_found() -> ApiError {
    ApiError::resource_not_found("Process not found")
}

fn bad_query(message: String) -> ApiError {
    ApiError::bad_query(message)
}

const SPEC: Spec<'static> = Spec {
    lists: &[
        "guids",
        "types",
        "app_guids",
        "space_guids",
        "organization_guids",
        "label_selector",
    ],
    times: &["created_ats", "updated_ats"],
    order_by: &["created_at", "updated_at"],
    refused: &[],
    single: &[],
    extensions: &[],
    error: bad_query,
};

/// The app-nested list takes no app, space or org filter (reference v3 §3.2).
const APP_SPEC: Spec<'static> = Spec {
    lists: &["guids", "types", "label_selector"],
    ..SPEC
};

fn space_of(table: &tally_domain::State, app: Option<Guid>) -> Option<Guid> {
    app.and_then(|a| table.app(a)).map(|a| a.space_guid)
}

/// The process a guid names, if the v3 `rule` lets the caller reach it.
fn reach_process(
    table: &tally_domain::State,
    caller: &Caller,
    guid: &str,
    rule: Rule,
) -> Result<Guid, ApiError> {
    let lookup: Lookup = |t, g| t.process(g).map(|p| (p.guid(), p.app().space_guid));
    reach_via(table, caller, guid, lookup, rule, process_not_found)
}

/// The app-nested form: the app (its own not-found), then its process of the type.
fn reach_typed(
    table: &tally_domain::State,
    caller: &Caller,
    guid: &str,
    kind: &str,
) -> Result<Guid, ApiError> {
    let app = reach(table, caller, guid, access::app_read_v3)?;
    table
        .process_of_type(app, kind)
        .map(ProcessRef::guid)
        .ok_or_else(process_not_found)
}

/// A v3 page of processes already in creation order, filtered by what the query asks.
fn page(
    state: &AppState,
    url: &str,
    q: &ListQuery,
    processes: Vec<ProcessRef<'_>>,
) -> Result<Response, ApiError> {
    let labels_pass = match q.raw("label_selector") {
        Some(selector) => unlabelled_pass(selector).map_err(bad_query)?,
        None => true,
    };
    let mut processes: Vec<ProcessRef<'_>> = processes
        .into_iter()
        .filter(|p| {
            labels_pass
                && q.allows("guids", &p.guid().to_string())
                && q.allows("types", p.process_type())
                && q.allows_time("created_ats", p.created_at())
                && q.allows_time("updated_ats", p.updated_at())
        })
        .collect();
    if q.order_by
        .as_deref()
        .is_some_and(|o| o.ends_with("updated_at"))
    {
        processes.sort_by_key(|p| (p.updated_at(), p.guid()));
    }
    if q.descending() {
        processes.reverse();
    }
    let total = processes.len() as u64;
    let skip = usize::try_from(q.offset()).unwrap_or(usize::MAX);
    let take = usize::try_from(q.per_page).unwrap_or(usize::MAX);
    let base = &state.settings.external_url;
    let resources = crate::page::v3(
        state,
        processes
            .into_iter()
            .skip(skip)
            .take(take)
            .map(|p| present::process(base, p, true)),
        bad_query,
    )?;
    crate::page::json(|empty| q.page_envelope(url, total, empty), resources)
}

/// Every process of `apps`, in creation order (`web` is an app's first).
fn processes_of<'s>(table: &'s tally_domain::State, apps: &[&App]) -> Vec<ProcessRef<'s>> {
    let mut processes: Vec<ProcessRef<'s>> = apps
        .iter()
        .flat_map(|a| table.processes_of(a.guid))
        .collect();
    processes.sort_by_key(|p| (p.created_at(), p.guid()));
    processes
}

/// Processes, a v3 page (`command` hidden): what it costs grows with the apps a `guids`,
/// `app_guids`, `space_guids` or `organization_guids` filter (or a caller's spaces) names, else
/// with the table.
#[utoipa::path(get, path = "/v3/processes", tag = "v3 processes", security(("bearer" = [])), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn list(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (view, visible, q) = open_list(
        &state,
        &caller,
        access::app_list_v3,
        process_not_found,
        || ListQuery::parse(query.as_deref(), &SPEC),
    )?;
    let table = &view.state;
    let guids = |key: &str| {
        q.lists
            .get(key)
            .map(|values| values.iter().filter_map(|v| v.parse::<Guid>().ok()))
    };
    let mut apps: Vec<&App> = if let Some(ids) = guids("guids") {
        ids.filter_map(|g| table.process(g).map(ProcessRef::app))
            .collect()
    } else if let Some(ids) = guids("app_guids") {
        ids.filter_map(|g| table.app(g)).collect()
    } else if let Some(spaces) = guids("space_guids") {
        spaces.flat_map(|s| table.apps_in(s)).collect()
    } else if let Some(orgs) = guids("organization_guids") {
        orgs.flat_map(|o| table.spaces_in(o).flat_map(|s| table.apps_in(s.guid)))
            .collect()
    } else {
        match &visible {
            Visible::Nothing => Vec::new(),
            Visible::Within(spaces) => spaces.iter().flat_map(|s| table.apps_in(*s)).collect(),
            Visible::All => table.apps_by_creation().collect(),
        }
    };
    apps.sort_by_key(|a| (a.created_at, a.guid));
    apps.dedup_by_key(|a| a.guid);
    let org_of = |a: &App| table.space(a.space_guid).map(|s| s.org_guid.to_string());
    apps.retain(|a| {
        visible.shows(Some(a.space_guid), None)
            && q.allows("app_guids", &a.guid.to_string())
            && q.allows("space_guids", &a.space_guid.to_string())
            && q.lists
                .get("organization_guids")
                .is_none_or(|orgs| org_of(a).is_some_and(|o| orgs.contains(&o)))
    });
    let url = format!("{}/v3/processes", state.settings.external_url);
    page(&state, &url, &q, processes_of(table, &apps))
}

/// One process.
#[utoipa::path(get, path = "/v3/processes/{guid}", tag = "v3 processes", security(("bearer" = [])), params(("guid" = String, Path, description = "the process's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn show(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let process = reach_process(&view.state, &caller, &guid, access::app_read_v3)?;
    let process = view.state.process(process).ok_or_else(process_not_found)?;
    Ok(Json(present::process(
        &state.settings.external_url,
        process,
        false,
    )))
}

/// Submits what `command` makes of the process `found` names, if the caller may write to it.
async fn write_process(
    state: &AppState,
    caller: &Caller,
    found: impl FnOnce(&tally_domain::State) -> Result<Guid, ApiError>,
    command: impl FnOnce(Guid) -> Command,
) -> Result<Json<Value>, ApiError> {
    let process = found(&state.engine.view().state)?;
    let (_, view) = Write::new(
        caller,
        |t: &tally_domain::State| t.process(process).map(|p| p.app().guid),
        |who, t: &tally_domain::State, app: Option<Guid>| {
            access::app_write_v3(who, t, space_of(t, app))
        },
        process_not_found,
    )
    .run(state, |_, _| Ok(Some(command(process))))
    .await?;
    let found = view.state.process(process).ok_or_else(process_not_found)?;
    Ok(Json(present::process(
        &state.settings.external_url,
        found,
        false,
    )))
}

/// Changes a process's command or health check: `audit.app.process.update`, no usage event.
#[utoipa::path(patch, path = "/v3/processes/{guid}", tag = "v3 processes", security(("bearer" = [])), params(("guid" = String, Path, description = "the process's guid")), request_body(content = serde_json::Value, content_type = "application/json", description = "command, health_check"), responses((status = 200, description = "the process", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn update(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    CcJson(body): CcJson<Value>,
) -> Result<Json<Value>, ApiError> {
    write_scope(&caller)?;
    let (update, audit_request) = body::process_update(&body)?;
    let found = |t: &tally_domain::State| reach_process(t, &caller, &guid, access::app_read_v3);
    write_process(&state, &caller, found, |guid| Command::UpdateProcess {
        guid,
        update,
        audit_request,
    })
    .await
}

async fn scaled(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    found: impl FnOnce(&tally_domain::State) -> Result<Guid, ApiError>,
) -> Result<Response, ApiError> {
    write_scope(caller)?;
    let (scale, audit_request) = body::scale(body)?;
    let process = write_process(state, caller, found, |guid| Command::ScaleProcess {
        guid,
        scale,
        audit_request,
    })
    .await?;
    Ok((StatusCode::ACCEPTED, process).into_response())
}

/// Scales a process (202): a usage event when a started process's instances or memory change,
/// `audit.app.process.scale` always.
#[utoipa::path(post, path = "/v3/processes/{guid}/actions/scale", tag = "v3 processes", security(("bearer" = [])), params(("guid" = String, Path, description = "the process's guid")), request_body(content = serde_json::Value, content_type = "application/json", description = "instances, memory_in_mb, disk_in_mb, log_rate_limit_in_bytes_per_second"), responses((status = 202, description = "the process", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn scale(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    CcJson(body): CcJson<Value>,
) -> Result<Response, ApiError> {
    let found = |t: &tally_domain::State| reach_process(t, &caller, &guid, access::app_read_v3);
    scaled(&state, &caller, &body, found).await
}

/// The app's processes (`web` first).
#[utoipa::path(get, path = "/v3/apps/{guid}/processes", tag = "v3 processes", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn app_processes(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let view = state.engine.view();
    let app = reach(&view.state, &caller, &guid, access::app_read_v3)?;
    let q = ListQuery::parse(query.as_deref(), &APP_SPEC)?;
    let url = format!("{}/v3/apps/{app}/processes", state.settings.external_url);
    page(&state, &url, &q, view.state.processes_of(app))
}

/// The app's process of a type.
#[utoipa::path(get, path = "/v3/apps/{guid}/processes/{type}", tag = "v3 processes", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid"), ("type" = String, Path, description = "the process type (web, worker, ...)")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn app_process(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path((guid, kind)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let process = reach_typed(&view.state, &caller, &guid, &kind)?;
    let process = view.state.process(process).ok_or_else(process_not_found)?;
    Ok(Json(present::process(
        &state.settings.external_url,
        process,
        false,
    )))
}

/// Scales the app's process of a type (the cf CLI's route; 202).
#[utoipa::path(post, path = "/v3/apps/{guid}/processes/{type}/actions/scale", tag = "v3 processes", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid"), ("type" = String, Path, description = "the process type (web, worker, ...)")), request_body(content = serde_json::Value, content_type = "application/json", description = "instances, memory_in_mb, disk_in_mb, log_rate_limit_in_bytes_per_second"), responses((status = 202, description = "the process", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn app_scale(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path((guid, kind)): Path<(String, String)>,
    CcJson(body): CcJson<Value>,
) -> Result<Response, ApiError> {
    let found = |t: &tally_domain::State| reach_typed(t, &caller, &guid, &kind);
    scaled(&state, &caller, &body, found).await
}
