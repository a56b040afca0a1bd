//! `/v2/organizations` and `/v2/spaces`: create, get, list (`q=name:`, pages), rename, delete
//! (refused while non-empty unless `recursive=true`).

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use tally_domain::model::{Org, Space};
use tally_domain::{access, Command, Guid};

use crate::auth::Caller;
use crate::json::{missing_field, CcJson};
use crate::resource::{target, Write};
use crate::v2::paging::{Paging, MAX_PER_PAGE};
use crate::v2::{present, recursive};
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_orgs, create_org))
        .routes(routes!(get_org, rename_org, delete_org))
        .routes(routes!(list_spaces, create_space))
        .routes(routes!(get_space, rename_space, delete_space))
}

/// The body of org and space requests: `name`, and for spaces `organization_guid`. Other keys
/// are ignored, as CC ignores keys it does not know.
#[derive(Debug, Deserialize)]
struct Body {
    name: Option<String>,
    organization_guid: Option<String>,
}

pub(crate) fn org_not_found(guid: &str) -> ApiError {
    ApiError::org_not_found(guid)
}

pub(crate) fn space_not_found(guid: &str) -> ApiError {
    ApiError::space_not_found(guid)
}

fn org_guid(table: &tally_domain::State, text: &str) -> Option<Guid> {
    text.parse().ok().filter(|g| table.org(*g).is_some())
}

fn space_guid(table: &tally_domain::State, text: &str) -> Option<Guid> {
    text.parse().ok().filter(|g| table.space(*g).is_some())
}

fn created(location: String, body: Value) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// The organizations the caller sees, a v2 page.
#[utoipa::path(get, path = "/v2/organizations", tag = "organizations", security(("bearer" = [])), params(crate::openapi::V2ListParams), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn list_orgs(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let visible = access::org_list(caller.subject(), &view.state)
        .map_err(|d| deny(d, ApiError::not_found))?;
    let paging = Paging::parse(query.as_deref(), MAX_PER_PAGE, &["name"])?;
    let mut orgs: Vec<&Org> = view
        .state
        .orgs()
        .filter(|o| visible.shows(None, Some(o.guid)))
        .filter(|o| paging.filter.iter().all(|c| c.matches_name(&o.name)))
        .collect();
    orgs.sort_by_key(|o| (o.created_at, o.guid));
    Ok(Json(paging.envelope(
        "/v2/organizations",
        orgs,
        present::org,
    )))
}

/// One organization.
#[utoipa::path(get, path = "/v2/organizations/{guid}", tag = "organizations", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn get_org(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let not_found = || org_not_found(&guid);
    let org = target(
        &view.state,
        &caller,
        |t| org_guid(t, &guid),
        access::org_read,
        not_found,
    )?;
    let org = view.state.org(org).ok_or_else(not_found)?;
    Ok(Json(present::org(org)))
}

/// Creates an organization.
#[utoipa::path(post, path = "/v2/organizations", tag = "organizations", security(("bearer" = [])), request_body(content = serde_json::Value, content_type = "application/json", description = "name"), responses((status = 201, description = "the organization", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn create_org(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    CcJson(body): CcJson<Body>,
) -> Result<Response, ApiError> {
    access::org_create(caller.subject()).map_err(|d| deny(d, ApiError::not_found))?;
    let name = body.name.ok_or_else(|| missing_field("name"))?;
    let guid = crate::fresh_guid();
    state
        .engine
        .submit(caller.envelope(Command::CreateOrg { guid, name }))
        .await?;
    let view = state.engine.view();
    let org = view
        .state
        .org(guid)
        .ok_or_else(|| org_not_found(&guid.to_string()))?;
    Ok(created(
        format!("/v2/organizations/{guid}"),
        present::org(org),
    ))
}

/// Renames an organization.
#[utoipa::path(put, path = "/v2/organizations/{guid}", tag = "organizations", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), request_body(content = serde_json::Value, content_type = "application/json", description = "name"), responses((status = 201, description = "the organization", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn rename_org(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    CcJson(body): CcJson<Body>,
) -> Result<Response, ApiError> {
    let write = Write {
        resolve: |table: &tally_domain::State| org_guid(table, &guid),
        rule: |who, table, org| access::org_write(who, table, org, false),
        not_found: || org_not_found(&guid),
        caller: &caller,
    };
    let (target, view) = write
        .run(&state, |guid| {
            body.name.map(|name| Command::RenameOrg { guid, name })
        })
        .await?;
    let org = view.state.org(target).ok_or_else(|| org_not_found(&guid))?;
    Ok(created(
        format!("/v2/organizations/{target}"),
        present::org(org),
    ))
}

/// Deletes an organization (recursive=true with its spaces).
#[utoipa::path(delete, path = "/v2/organizations/{guid}", tag = "organizations", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid"), ("recursive" = Option<bool>, Query, description = "delete its spaces too")), responses((status = 204, description = "deleted"), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn delete_org(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let recursive = recursive(query.as_deref())?;
    let write = Write {
        resolve: |table: &tally_domain::State| org_guid(table, &guid),
        rule: |who, table, org| access::org_write(who, table, org, true),
        not_found: || org_not_found(&guid),
        caller: &caller,
    };
    write
        .run(&state, |guid| Some(Command::DeleteOrg { guid, recursive }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The spaces the caller sees, a v2 page.
#[utoipa::path(get, path = "/v2/spaces", tag = "spaces", security(("bearer" = [])), params(crate::openapi::V2ListParams), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn list_spaces(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let visible = access::space_list(caller.subject(), &view.state)
        .map_err(|d| deny(d, ApiError::not_found))?;
    let paging = Paging::parse(
        query.as_deref(),
        MAX_PER_PAGE,
        &["name", "organization_guid"],
    )?;
    let mut spaces: Vec<&Space> = view
        .state
        .spaces()
        .filter(|s| visible.shows(Some(s.guid), None))
        .filter(|s| {
            paging.filter.iter().all(|c| match c.key.as_str() {
                "name" => c.matches_name(&s.name),
                _ => c.matches(&s.org_guid.to_string()),
            })
        })
        .collect();
    spaces.sort_by_key(|s| (s.created_at, s.guid));
    Ok(Json(paging.envelope("/v2/spaces", spaces, present::space)))
}

/// One space.
#[utoipa::path(get, path = "/v2/spaces/{guid}", tag = "spaces", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn get_space(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let not_found = || space_not_found(&guid);
    let resolve = |t: &tally_domain::State| space_guid(t, &guid);
    let space = target(&view.state, &caller, resolve, access::space_read, not_found)?;
    let space = view.state.space(space).ok_or_else(not_found)?;
    Ok(Json(present::space(space)))
}

/// Creates a space.
#[utoipa::path(post, path = "/v2/spaces", tag = "spaces", security(("bearer" = [])), request_body(content = serde_json::Value, content_type = "application/json", description = "name, organization_guid"), responses((status = 201, description = "the space", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn create_space(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    CcJson(body): CcJson<Body>,
) -> Result<Response, ApiError> {
    let view = state.engine.view();
    let org_text = body.organization_guid.unwrap_or_default();
    let org = org_guid(&view.state, &org_text);
    match access::space_create(caller.subject(), &view.state, org) {
        Err(access::Denial::NotFound) if org_text.is_empty() => {
            return Err(missing_field("organization_guid"))
        }
        result => result.map_err(|d| deny(d, || org_not_found(&org_text)))?,
    }
    let org = org.ok_or_else(|| org_not_found(&org_text))?;
    let name = body.name.ok_or_else(|| missing_field("name"))?;
    let guid = crate::fresh_guid();
    state
        .engine
        .submit(caller.envelope(Command::CreateSpace {
            guid,
            org_guid: org,
            name,
        }))
        .await?;
    let view = state.engine.view();
    let space = view
        .state
        .space(guid)
        .ok_or_else(|| space_not_found(&guid.to_string()))?;
    Ok(created(format!("/v2/spaces/{guid}"), present::space(space)))
}

/// Renames a space.
#[utoipa::path(put, path = "/v2/spaces/{guid}", tag = "spaces", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), request_body(content = serde_json::Value, content_type = "application/json", description = "name"), responses((status = 201, description = "the space", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn rename_space(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    CcJson(body): CcJson<Body>,
) -> Result<Response, ApiError> {
    let write = Write {
        resolve: |table: &tally_domain::State| space_guid(table, &guid),
        rule: |who, table, space| access::space_manage(who, table, space, false),
        not_found: || space_not_found(&guid),
        caller: &caller,
    };
    let (target, view) = write
        .run(&state, |guid| {
            body.name.map(|name| Command::RenameSpace { guid, name })
        })
        .await?;
    let space = view
        .state
        .space(target)
        .ok_or_else(|| space_not_found(&guid))?;
    Ok(created(
        format!("/v2/spaces/{target}"),
        present::space(space),
    ))
}

/// Deletes a space (recursive=true with its apps).
#[utoipa::path(delete, path = "/v2/spaces/{guid}", tag = "spaces", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid"), ("recursive" = Option<bool>, Query, description = "delete its apps too")), responses((status = 204, description = "deleted"), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn delete_space(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let recursive = recursive(query.as_deref())?;
    let write = Write {
        resolve: |table: &tally_domain::State| space_guid(table, &guid),
        rule: |who, table, space| access::space_manage(who, table, space, true),
        not_found: || space_not_found(&guid),
        caller: &caller,
    };
    write
        .run(&state, |guid| {
            Some(Command::DeleteSpace { guid, recursive })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
