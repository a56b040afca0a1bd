//! `/v2/apps` (reference §5.3): create, list, get, update (start, stop, scale, every §5.2
//! attribute), delete, restage.

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use tally_domain::access::{Denial, Subject};
use tally_domain::model::App;
use tally_domain::{access, Command, Guid};

use crate::auth::Caller;
use crate::json::CcJson;
use crate::resource::{create as create_resource, target, Write};
use crate::v2::orgs::space_not_found;
use crate::v2::paging::{self, Paging};
use crate::v2::query::Op;
use crate::v2::{app_body, present, recursive};
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, delete))
        .routes(routes!(restage))
}

/// CC `AppNotFound` (100004).
pub(crate) fn app_not_found(guid: &str) -> ApiError {
    ApiError::app_not_found(guid)
}

fn find<'a>(table: &'a tally_domain::State, guid: &str) -> Option<&'a App> {
    guid.parse::<Guid>().ok().and_then(|g| table.app(g))
}

/// The app the path names, if the space `rule` lets the caller reach it.
pub(crate) fn reach(
    table: &tally_domain::State,
    caller: &Caller,
    guid: &str,
    rule: fn(Subject<'_>, &tally_domain::State, Option<Guid>) -> Result<(), Denial>,
) -> Result<Guid, ApiError> {
    target(
        table,
        caller,
        |t| find(t, guid).map(|a| a.guid),
        |who, t, app| rule(who, t, space_of(t, app)),
        || app_not_found(guid),
    )
}

fn space_of(table: &tally_domain::State, app: Option<Guid>) -> Option<Guid> {
    app.and_then(|a| table.app(a)).map(|a| a.space_guid)
}

/// A write to the app the path names, if the caller is a developer in its space; the rest
/// (instances, package state, bits) is the domain's.
async fn write(
    state: &AppState,
    caller: &Caller,
    guid: &str,
    command: impl FnOnce(&tally_domain::State, Guid) -> Result<Option<Command>, ApiError>,
) -> Result<Guid, ApiError> {
    let write = Write::new(
        caller,
        |table: &tally_domain::State| find(table, guid).map(|a| a.guid),
        |who, table: &tally_domain::State, app: Option<Guid>| {
            access::space_write(who, table, space_of(table, app))
        },
        || app_not_found(guid),
    );
    Ok(write.run(state, command).await?.0)
}

fn render<'a>(
    caller: &Caller,
    table: &tally_domain::State,
    app: &'a App,
) -> present::AppResource<'a> {
    let show_env = access::sees_environment(caller.subject(), table, app.space_guid);
    present::app(app, show_env)
}

/// 201 with `Location` and the app as it is after the write.
fn created(state: &AppState, caller: &Caller, guid: Guid) -> Result<Response, ApiError> {
    let view = state.engine.view();
    let app = view
        .state
        .app(guid)
        .ok_or_else(|| app_not_found(&guid.to_string()))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v2/apps/{guid}"))],
        Json(render(caller, &view.state, app)),
    )
        .into_response())
}

/// The apps the caller sees, a v2 page.
#[utoipa::path(get, path = "/v2/apps", tag = "apps", security(("bearer" = [])), params(crate::openapi::V2ListParams), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn list(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let keys = [
        "name",
        "space_guid",
        "organization_guid",
        "stack_guid",
        "diego",
    ];
    let (view, visible, paging) =
        paging::open(&state, &caller, access::space_list, query.as_deref(), &keys)?;
    let table = &view.state;
    let passes = |a: &App| {
        visible.shows(Some(a.space_guid), None)
            && paging.filter.iter().all(|c| match c.key.as_str() {
                "name" => c.matches_name(&a.name),
                "space_guid" => c.matches(&a.space_guid.to_string()),
                "organization_guid" => c.matches_opt(
                    table
                        .space(a.space_guid)
                        .map(|s| s.org_guid.to_string())
                        .as_deref(),
                ),
                "stack_guid" => c.matches(&a.stack_guid.to_string()),
                _ => c.matches(if a.diego { "true" } else { "false" }),
            })
    };
    let render = |a: &App| serde_json::to_value(render(&caller, table, a)).unwrap_or(Value::Null);
    if let Some(candidates) = candidates(table, &paging, &visible) {
        let apps: Vec<&App> = candidates.into_values().filter(|a| passes(a)).collect();
        return Ok(Json(paging.envelope("/v2/apps", apps, render)));
    }
    if !paging.filter.is_empty() {
        // Only filters no index answers (stack_guid, diego, relations): every app is tested.
        let apps: Vec<&App> = table.apps_by_creation().filter(|a| passes(a)).collect();
        return Ok(Json(paging.envelope("/v2/apps", apps, render)));
    }
    // Every app, in list order: the page is found by walking the index up to it.
    let skip = usize::try_from(paging.offset()).unwrap_or(usize::MAX);
    let take = usize::try_from(paging.per_page).unwrap_or(usize::MAX);
    let page: Vec<Value> = table
        .apps_page(skip, take, paging.descending)
        .into_iter()
        .map(render)
        .collect();
    let total = table.app_count() as u64;
    Ok(Json(
        serde_json::to_value(paging.page_envelope("/v2/apps", total, page, &[]))
            .unwrap_or(Value::Null),
    ))
}

/// The apps a list can start from when a filter or the caller's visibility names them (a
/// name, a space or an org, compared for equality), in list order; `None` when none does. A
/// superset of the result: each is still tested against every filter.
fn candidates<'a>(
    table: &'a tally_domain::State,
    paging: &Paging,
    visible: &access::Visible,
) -> Option<std::collections::BTreeMap<(tally_domain::Timestamp, Guid), &'a App>> {
    let equal = |key: &str| {
        paging
            .filter
            .iter()
            .find(|c| c.key == key && matches!(c.op, Op::Eq | Op::In))
            .map(|c| c.values.iter().filter_map(|v| v.parse::<Guid>().ok()))
    };
    let apps: Box<dyn Iterator<Item = &App>> = if let Some(c) = paging
        .filter
        .iter()
        .find(|c| c.key == "name" && matches!(c.op, Op::Eq | Op::In))
    {
        Box::new(c.values.iter().flat_map(|name| table.apps_named(name)))
    } else if let Some(spaces) = equal("space_guid") {
        Box::new(spaces.flat_map(|space| table.apps_in(space)))
    } else if let Some(orgs) = equal("organization_guid") {
        Box::new(orgs.flat_map(|org| table.spaces_in(org).flat_map(|s| table.apps_in(s.guid))))
    } else if let access::Visible::Within(spaces) = visible {
        Box::new(spaces.iter().flat_map(|space| table.apps_in(*space)))
    } else {
        return None;
    };
    Some(apps.map(|a| ((a.created_at, a.guid), a)).collect())
}

/// One app.
#[utoipa::path(get, path = "/v2/apps/{guid}", tag = "apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn show(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    let view = state.engine.view();
    let app = reach(&view.state, &caller, &guid, access::space_read)?;
    let app = view.state.app(app).ok_or_else(|| app_not_found(&guid))?;
    Ok(Json(render(&caller, &view.state, app)).into_response())
}

/// Creates an app.
#[utoipa::path(post, path = "/v2/apps", tag = "apps", security(("bearer" = [])), request_body(content = serde_json::Value, content_type = "application/json", description = "name, space_guid and CC's optional app fields"), responses((status = 201, description = "the app", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn create(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    CcJson(body): CcJson<Value>,
) -> Result<Response, ApiError> {
    let body = app_body::parse(&body, true)?;
    let (named, bad_space_guid) = (body.attributes.space_guid, body.bad_space_guid);
    let check = |table: &tally_domain::State| {
        let space = named.filter(|s| table.space(*s).is_some());
        match access::space_write(caller.subject(), table, space) {
            // No such space, or none named: the domain says which (missing field or 404).
            Err(access::Denial::NotFound) => match &bad_space_guid {
                Some(text) => Err(space_not_found(text)),
                None => Ok(()),
            },
            result => result.map_err(|d| deny(d, ApiError::not_found)),
        }
    };
    let guid = create_resource(&state, &caller, check, |guid, ()| Command::CreateApp {
        guid,
        attributes: body.attributes,
        audit_request: body.audit_request,
    })
    .await?;
    created(&state, &caller, guid)
}

/// Updates an app: start, stop, scale, rename, ...
#[utoipa::path(put, path = "/v2/apps/{guid}", tag = "apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), request_body(content = serde_json::Value, content_type = "application/json", description = "CC's app fields to change"), responses((status = 201, description = "the app", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn update(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    CcJson(body): CcJson<Value>,
) -> Result<Response, ApiError> {
    let body = app_body::parse(&body, false)?;
    let target = write(&state, &caller, &guid, |table, app| {
        if let Some(text) = &body.bad_space_guid {
            return Err(space_not_found(text));
        }
        // Moving an app needs the same right in the space it moves to.
        let here = table.app(app).map(|a| a.space_guid);
        if let Some(to) = body.attributes.space_guid.filter(|s| Some(*s) != here) {
            let exists = table.space(to).map(|s| s.guid);
            access::space_write(caller.subject(), table, exists)
                .map_err(|d| deny(d, || space_not_found(&to.to_string())))?;
        }
        Ok(Some(Command::UpdateApp {
            guid: app,
            attributes: body.attributes,
            audit_request: body.audit_request,
        }))
    })
    .await?;
    created(&state, &caller, target)
}

/// Deletes an app.
#[utoipa::path(delete, path = "/v2/apps/{guid}", tag = "apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), responses((status = 204, description = "deleted"), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn delete(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let recursive = recursive(query.as_deref())?;
    write(&state, &caller, &guid, |_, guid| {
        Ok(Some(Command::DeleteApp { guid, recursive }))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restages an app.
#[utoipa::path(post, path = "/v2/apps/{guid}/restage", tag = "apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the resource's guid")), responses((status = 201, description = "the app", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
async fn restage(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    // CC's restage (§5.3) answers an unknown app 404 before it looks at the token's scopes.
    if find(&state.engine.view().state, &guid).is_none() {
        return Err(app_not_found(&guid));
    }
    let target = write(&state, &caller, &guid, |_, guid| {
        Ok(Some(Command::RestageApp { guid }))
    })
    .await?;
    created(&state, &caller, target)
}
