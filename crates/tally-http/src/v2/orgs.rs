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
use tally_domain::access::{Denial, Subject};
use tally_domain::model::{Org, Space};
use tally_domain::{access, Command, Guid};

use crate::auth::Caller;
use crate::json::{missing_field, CcJson};
use crate::resource::{create, target, Write};
use crate::v2::paging;
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

/// What the org and the space handlers differ in.
struct Kind {
    /// The collection's path.
    path: &'static str,
    /// The resource named by the path's text, if it exists.
    find: fn(&tally_domain::State, &str) -> Option<Guid>,
    /// Its not-found error.
    not_found: fn(&str) -> ApiError,
    /// The read rule.
    read: fn(Subject<'_>, &tally_domain::State, Option<Guid>) -> Result<(), Denial>,
    /// The write rule (`true`: deleting).
    write: fn(Subject<'_>, &tally_domain::State, Option<Guid>, bool) -> Result<(), Denial>,
    /// Its JSON as the view holds it.
    present: fn(&tally_domain::State, Guid) -> Option<Value>,
}

const ORGS: Kind = Kind {
    path: "/v2/organizations",
    find: org_guid,
    not_found: org_not_found,
    read: access::org_read,
    write: access::org_write,
    present: |table, guid| table.org(guid).map(present::org),
};

const SPACES: Kind = Kind {
    path: "/v2/spaces",
    find: space_guid,
    not_found: space_not_found,
    read: access::space_read,
    write: access::space_manage,
    present: |table, guid| table.space(guid).map(present::space),
};

impl Kind {
    /// One, as the caller may see it.
    fn show(&self, state: &AppState, caller: &Caller, guid: &str) -> Result<Json<Value>, ApiError> {
        let view = state.engine.view();
        let not_found = || (self.not_found)(guid);
        let resolve = |t: &tally_domain::State| (self.find)(t, guid);
        let target = target(&view.state, caller, resolve, self.read, not_found)?;
        Ok(Json(
            (self.present)(&view.state, target).ok_or_else(not_found)?,
        ))
    }

    /// A write of `command` to one, if the caller may (`deleting` picks the rule's variant).
    async fn write(
        &self,
        state: &AppState,
        caller: &Caller,
        guid: &str,
        deleting: bool,
        command: impl FnOnce(Guid) -> Option<Command>,
    ) -> Result<(Guid, Arc<tally_engine::View>), ApiError> {
        let write = Write::new(
            caller,
            |t: &tally_domain::State| (self.find)(t, guid),
            |who, t: &tally_domain::State, target| (self.write)(who, t, target, deleting),
            || (self.not_found)(guid),
        );
        write.run(state, |_, target| Ok(command(target))).await
    }

    /// PUT: renames one (a body without a name changes nothing); 201 with it.
    async fn rename(
        &self,
        state: &AppState,
        caller: &Caller,
        guid: &str,
        name: Option<String>,
        command: fn(Guid, String) -> Command,
    ) -> Result<Response, ApiError> {
        let (target, view) = self
            .write(state, caller, guid, false, |g| name.map(|n| command(g, n)))
            .await?;
        let body = (self.present)(&view.state, target).ok_or_else(|| (self.not_found)(guid))?;
        Ok(created(format!("{}/{target}", self.path), body))
    }

    /// DELETE: `recursive=true` takes what it holds too; 204.
    async fn delete(
        &self,
        state: &AppState,
        caller: &Caller,
        guid: &str,
        query: Option<&str>,
        command: fn(Guid, bool) -> Command,
    ) -> Result<StatusCode, ApiError> {
        let recursive = recursive(query)?;
        self.write(state, caller, guid, true, |g| Some(command(g, recursive)))
            .await?;
        Ok(StatusCode::NO_CONTENT)
    }
}

/// The organizations the caller sees, a v2 page.
#[utoipa::path(get, path = "/v2/organizations", tag = "organizations", security(("bearer" = [])), params(crate::openapi::V2ListParams), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn list_orgs(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (view, visible, paging) = paging::open(
        &state,
        &caller,
        access::org_list,
        query.as_deref(),
        &["name"],
    )?;
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
    ORGS.show(&state, &caller, &guid)
}

/// Creates an organization.
#[utoipa::path(post, path = "/v2/organizations", tag = "organizations", security(("bearer" = [])), request_body(content = serde_json::Value, content_type = "application/json", description = "name"), responses((status = 201, description = "the organization", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn create_org(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    CcJson(body): CcJson<Body>,
) -> Result<Response, ApiError> {
    let check = |_: &tally_domain::State| {
        access::org_create(caller.subject()).map_err(|d| deny(d, ApiError::not_found))?;
        body.name.ok_or_else(|| missing_field("name"))
    };
    let guid = create(&state, &caller, check, |guid, name| Command::CreateOrg {
        guid,
        name,
    })
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
    ORGS.rename(&state, &caller, &guid, body.name, |guid, name| {
        Command::RenameOrg { guid, name }
    })
    .await
}

/// Deletes an organization (recursive=true with its spaces).
#[utoipa::path(delete, path = "/v2/organizations/{guid}", tag = "organizations", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid"), ("recursive" = Option<bool>, Query, description = "delete its spaces too")), responses((status = 204, description = "deleted"), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn delete_org(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    ORGS.delete(
        &state,
        &caller,
        &guid,
        query.as_deref(),
        |guid, recursive| Command::DeleteOrg { guid, recursive },
    )
    .await
}

/// The spaces the caller sees, a v2 page.
#[utoipa::path(get, path = "/v2/spaces", tag = "spaces", security(("bearer" = [])), params(crate::openapi::V2ListParams), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn list_spaces(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let keys = ["name", "organization_guid"];
    let (view, visible, paging) =
        paging::open(&state, &caller, access::space_list, query.as_deref(), &keys)?;
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
    SPACES.show(&state, &caller, &guid)
}

/// Creates a space.
#[utoipa::path(post, path = "/v2/spaces", tag = "spaces", security(("bearer" = [])), request_body(content = serde_json::Value, content_type = "application/json", description = "name, organization_guid"), responses((status = 201, description = "the space", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn create_space(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    CcJson(body): CcJson<Body>,
) -> Result<Response, ApiError> {
    let check = |table: &tally_domain::State| {
        let org_text = body.organization_guid.unwrap_or_default();
        let org = org_guid(table, &org_text);
        match access::space_create(caller.subject(), table, org) {
            Err(access::Denial::NotFound) if org_text.is_empty() => {
                return Err(missing_field("organization_guid"))
            }
            result => result.map_err(|d| deny(d, || org_not_found(&org_text)))?,
        }
        let org = org.ok_or_else(|| org_not_found(&org_text))?;
        let name = body.name.ok_or_else(|| missing_field("name"))?;
        Ok((org, name))
    };
    let guid = create(&state, &caller, check, |guid, (org_guid, name)| {
        Command::CreateSpace {
            guid,
            org_guid,
            name,
        }
    })
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
    SPACES
        .rename(&state, &caller, &guid, body.name, |guid, name| {
            Command::RenameSpace { guid, name }
        })
        .await
}

/// Deletes a space (recursive=true with its apps).
#[utoipa::path(delete, path = "/v2/spaces/{guid}", tag = "spaces", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid"), ("recursive" = Option<bool>, Query, description = "delete its apps too")), responses((status = 204, description = "deleted"), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn delete_space(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    SPACES
        .delete(
            &state,
            &caller,
            &guid,
            query.as_deref(),
            |guid, recursive| Command::DeleteSpace { guid, recursive },
        )
        .await
}
