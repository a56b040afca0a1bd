//! `/v3/apps` (reference v3 §2): list, create, get, update, delete (a job that is complete at
//! once), the environment, start/stop/restart, and the current droplet. A v3 app is the v2
//! app of the same guid, decided by v3's rules (`tally_domain::decide::v3`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tally_domain::access::{self, Denial, Subject, Visible};
use tally_domain::model::App;
use tally_domain::{AppAction, Command, DomainError, Guid};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::json::CcJson;
use crate::resource::{create as create_resource, open_list, target, Write};
use crate::v3::list::{unlabelled_pass, ListQuery, Spec};
use crate::v3::{body, present};
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, delete))
        .routes(routes!(env))
        .routes(routes!(environment_variables, patch_environment_variables))
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(restart))
        .routes(routes!(current_droplet))
        .routes(routes!(droplet))
}

/// CC's v3 `ResourceNotFound` for apps.
pub(crate) fn app_not_found() -> ApiError {
    ApiError::resource_not_found("App not found")
}

fn droplet_not_found() -> ApiError {
    ApiError::resource_not_found("Droplet not found")
}

fn bad_query(message: String) -> ApiError {
    ApiError::bad_query(message)
}

fn space_of(table: &tally_domain::State, app: Option<Guid>) -> Option<Guid> {
    app.and_then(|a| table.app(a)).map(|a| a.space_guid)
}

fn find(table: &tally_domain::State, guid: &str) -> Option<Guid> {
    guid.parse::<Guid>()
        .ok()
        .and_then(|g| table.app(g))
        .map(|a| a.guid)
}

/// A v3 permission rule of `tally_domain::access`, given the space of the object.
pub(crate) type Rule = fn(Subject<'_>, &tally_domain::State, Option<Guid>) -> Result<(), Denial>;

/// How a path's guid leads to what it names: `(its guid, the space it lives in)`.
pub(crate) type Lookup = fn(&tally_domain::State, Guid) -> Option<(Guid, Guid)>;

/// What the path's `guid` names through `lookup` (an app, or its process, package, build,
/// droplet or task), if `rule` lets the caller reach it; else `not_found`, the resource's own
/// error (or CC's refusal).
pub(crate) fn reach_via(
    table: &tally_domain::State,
    caller: &Caller,
    guid: &str,
    lookup: Lookup,
    rule: Rule,
    not_found: fn() -> ApiError,
) -> Result<Guid, ApiError> {
    let found = guid.parse::<Guid>().ok().and_then(|g| lookup(table, g));
    target(
        table,
        caller,
        |_| found.map(|(g, _)| g),
        |who, t, _| rule(who, t, found.map(|(_, space)| space)),
        not_found,
    )
}

/// The app the path names, if the v3 `rule` lets the caller reach it.
pub(crate) fn reach(
    table: &tally_domain::State,
    caller: &Caller,
    guid: &str,
    rule: Rule,
) -> Result<Guid, ApiError> {
    let lookup: Lookup = |t, g| t.app(g).map(|a| (a.guid, a.space_guid));
    reach_via(table, caller, guid, lookup, rule, app_not_found)
}

/// Submits what `command` makes of the app the path names, if the caller may write to it;
/// the view after the commit.
pub(crate) async fn write(
    state: &AppState,
    caller: &Caller,
    guid: &str,
    command: impl FnOnce(&tally_domain::State, Guid) -> Result<Option<Command>, ApiError>,
) -> Result<(Guid, Arc<tally_engine::View>), ApiError> {
    Write::new(
        caller,
        |table: &tally_domain::State| find(table, guid),
        |who, table: &tally_domain::State, app: Option<Guid>| {
            access::app_write_v3(who, table, space_of(table, app))
        },
        app_not_found,
    )
    .run(state, command)
    .await
}

/// v3's first check of a write: the write scope (reference v3 §8), before the body is read.
pub(crate) fn write_scope(caller: &Caller) -> Result<(), ApiError> {
    access::v3_write_scope(caller.subject()).map_err(|d| deny(d, app_not_found))
}

fn base(state: &AppState) -> &str {
    &state.settings.external_url
}

/// The app `guid` as it is in `view`, presented.
fn presented(state: &AppState, view: &tally_engine::View, guid: Guid) -> Result<Value, ApiError> {
    let app = view.state.app(guid).ok_or_else(app_not_found)?;
    Ok(present::app(base(state), app))
}

/// `include=space|org|space.organization` (reference v3 §2.3): which of spaces and orgs to add.
#[derive(Debug, Clone, Copy, Default)]
struct Include {
    spaces: bool,
    orgs: bool,
}

impl Include {
    fn parse(values: Option<&Vec<String>>) -> Result<Self, ApiError> {
        let mut include = Self::default();
        for value in values.into_iter().flatten() {
            match value.as_str() {
                "space" => include.spaces = true,
                "org" => include.orgs = true,
                "space.organization" => {
                    include.spaces = true;
                    include.orgs = true;
                }
                other => {
                    return Err(bad_query(format!(
                        "Invalid included resource: '{other}'. Valid included resources are: 'space', 'org', 'space.organization'"
                    )))
                }
            }
        }
        Ok(include)
    }

    /// `included` for these apps, or `None` when nothing was asked for.
    fn included<'a>(
        self,
        state: &AppState,
        table: &tally_domain::State,
        apps: impl IntoIterator<Item = &'a App>,
    ) -> Option<Value> {
        if !self.spaces && !self.orgs {
            return None;
        }
        let mut spaces = BTreeMap::new();
        for app in apps {
            if let Some(space) = table.space(app.space_guid) {
                spaces.entry(space.guid).or_insert(space);
            }
        }
        let mut included = Map::new();
        if self.spaces {
            let list: Vec<Value> = spaces
                .values()
                .map(|s| present::space(base(state), s))
                .collect();
            included.insert("spaces".into(), Value::Array(list));
        }
        if self.orgs {
            let mut orgs = BTreeMap::new();
            for space in spaces.values() {
                if let Some(org) = table.org(space.org_guid) {
                    orgs.entry(org.guid).or_insert(org);
                }
            }
            let list: Vec<Value> = orgs
                .values()
                .map(|o| present::org(base(state), o))
                .collect();
            included.insert("organizations".into(), Value::Array(list));
        }
        Some(Value::Object(included))
    }
}

const SPEC: Spec<'static> = Spec {
    lists: &[
        "names",
        "guids",
        "space_guids",
        "organization_guids",
        "stacks",
        "lifecycle_type",
        "label_selector",
        "include",
    ],
    times: &["created_ats", "updated_ats"],
    order_by: &["created_at", "updated_at", "name", "state"],
    refused: &[],
    single: &[],
    extensions: &[],
    error: bad_query,
};

/// The apps a filter or the caller's visibility names through an index (names, guids, spaces,
/// orgs), or `None` when none does and the list starts from every app.
fn candidates<'a>(
    table: &'a tally_domain::State,
    q: &ListQuery,
    visible: &Visible,
) -> Option<Vec<&'a App>> {
    let guids = |key: &str| {
        q.lists
            .get(key)
            .map(|values| values.iter().filter_map(|v| v.parse::<Guid>().ok()))
    };
    let mut apps: Vec<&App> = if let Some(ids) = guids("guids") {
        ids.filter_map(|g| table.app(g)).collect()
    } else if let Some(names) = q.lists.get("names") {
        names.iter().flat_map(|n| table.apps_named(n)).collect()
    } else if let Some(spaces) = guids("space_guids") {
        spaces.flat_map(|s| table.apps_in(s)).collect()
    } else if let Some(orgs) = guids("organization_guids") {
        orgs.flat_map(|o| table.spaces_in(o).flat_map(|s| table.apps_in(s.guid)))
            .collect()
    } else if let Visible::Within(spaces) = visible {
        spaces.iter().flat_map(|s| table.apps_in(*s)).collect()
    } else {
        return None;
    };
    apps.sort_by_key(|a| (a.created_at, a.guid));
    apps.dedup_by_key(|a| a.guid);
    Some(apps)
}

/// Apps, a v3 page: what it costs grows with the apps a `names`, `guids`, `space_guids` or
/// `organization_guids` filter (or a caller's spaces) names, else with the page for the default
/// order and unfiltered, else with the table.
#[utoipa::path(get, path = "/v3/apps", tag = "v3 apps", security(("bearer" = [])), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn list(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (view, visible, q) =
        open_list(&state, &caller, access::app_list_v3, app_not_found, || {
            ListQuery::parse(query.as_deref(), &SPEC)
        })?;
    let include = Include::parse(q.lists.get("include"))?;
    if let Some(kinds) = q.lists.get("lifecycle_type") {
        if let Some(bad) = kinds
            .iter()
            .find(|k| !matches!(k.as_str(), "buildpack" | "docker" | "cnb"))
        {
            return Err(bad_query(format!(
                "Lifecycle type is not included in the list: buildpack, docker, cnb ('{bad}')"
            )));
        }
    }
    let labels_pass = match q.raw("label_selector") {
        Some(selector) => unlabelled_pass(selector).map_err(bad_query)?,
        None => true,
    };
    let table = &view.state;
    let base_url = format!("{}/v3/apps", base(&state));
    if matches!(visible, Visible::Nothing) || !labels_pass {
        let page = q.page_envelope(&base_url, 0, Vec::<Value>::new());
        return Ok(Json(page).into_response());
    }
    let org_of = |a: &App| table.space(a.space_guid).map(|s| s.org_guid.to_string());
    let passes = |a: &App| {
        visible.shows(Some(a.space_guid), None)
            && q.allows("guids", &a.guid.to_string())
            && q.lists
                .get("names")
                .is_none_or(|names| names.contains(&a.name))
            && q.allows("space_guids", &a.space_guid.to_string())
            && q.lists
                .get("organization_guids")
                .is_none_or(|orgs| org_of(a).is_some_and(|o| orgs.contains(&o)))
            && q.lists.get("stacks").is_none_or(|stacks| {
                !a.is_docker()
                    && stacks
                        .iter()
                        .any(|s| s == tally_domain::model::DEFAULT_STACK_NAME)
            })
            && q.allows(
                "lifecycle_type",
                if a.is_docker() { "docker" } else { "buildpack" },
            )
            && q.allows_time("created_ats", a.created_at)
            && q.allows_time("updated_ats", a.updated_at)
    };
    let default_order = matches!(
        q.order_by.as_deref(),
        None | Some("+created_at" | "-created_at")
    );
    let filtered = ["stacks", "lifecycle_type"]
        .iter()
        .any(|k| q.lists.contains_key(*k))
        || !q.times.is_empty();
    // One space, in the default order: its own creation-order index, walked up to the page.
    let one_space = q
        .lists
        .get("space_guids")
        .filter(|spaces| spaces.len() == 1)
        .and_then(|spaces| spaces[0].parse::<Guid>().ok())
        .filter(|_| {
            default_order
                && !filtered
                && ["guids", "names", "organization_guids"]
                    .iter()
                    .all(|k| !q.lists.contains_key(*k))
        });
    let skip = usize::try_from(q.offset()).unwrap_or(usize::MAX);
    let take = usize::try_from(q.per_page).unwrap_or(usize::MAX);
    let (total, page): (u64, Vec<&App>) = if let Some(space) = one_space {
        if visible.shows(Some(space), None) {
            let page = table.apps_in_page(space, skip, take, q.descending());
            (table.app_count_in(space) as u64, page)
        } else {
            (0, Vec::new())
        }
    } else {
        match candidates(table, &q, &visible) {
            None if default_order && !filtered => {
                // Every app in creation order: the page is found by walking the index up to it.
                let page = table.apps_page(skip, take, q.descending());
                (table.app_count() as u64, page)
            }
            found => {
                let mut apps: Vec<&App> = match found {
                    Some(apps) => apps.into_iter().filter(|a| passes(a)).collect(),
                    None => table.apps_by_creation().filter(|a| passes(a)).collect(),
                };
                sort(&mut apps, q.order_by.as_deref());
                let total = apps.len() as u64;
                (total, apps.into_iter().skip(skip).take(take).collect())
            }
        }
    };
    let resources = crate::page::v3(
        &state,
        page.iter().map(|a| present::app(base(&state), a)),
        bad_query,
    )?;
    let mut envelope = serde_json::to_value(q.page_envelope(&base_url, total, resources))
        .map_err(|_| ApiError::unknown())?;
    if let (Some(included), Some(o)) = (
        include.included(&state, table, page.iter().copied()),
        envelope.as_object_mut(),
    ) {
        o.insert("included".into(), included);
    }
    Ok(Json(envelope).into_response())
}

/// Sorts apps already in creation order by `order_by` (guid breaks ties, as CC's does).
fn sort(apps: &mut [&App], order_by: Option<&str>) {
    let descending = order_by.is_some_and(|o| o.starts_with('-'));
    match order_by.map(|o| o.trim_start_matches(['+', '-'])) {
        Some("updated_at") => apps.sort_by_key(|a| (a.updated_at, a.guid)),
        Some("name") => apps.sort_by(|a, b| (&a.name, a.guid).cmp(&(&b.name, b.guid))),
        Some("state") => apps.sort_by_key(|a| (a.state.as_str(), a.guid)),
        _ => {}
    }
    if descending {
        apps.reverse();
    }
}

/// `include` on a single resource: the only query parameter it takes.
fn single_include(query: Option<&str>) -> Result<Include, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| bad_query("The query string is not URL-encoded".to_owned()))?;
    let mut values = Vec::new();
    for (key, value) in pairs {
        if key != "include" {
            return Err(bad_query(format!(
                "Unknown query parameter(s): '{key}'. Valid parameters are: 'include'"
            )));
        }
        values.extend(value.split(',').map(str::to_owned));
    }
    Include::parse(Some(&values))
}

/// One app.
#[utoipa::path(get, path = "/v3/apps/{guid}", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn show(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let view = state.engine.view();
    let app = reach(&view.state, &caller, &guid, access::app_read_v3)?;
    let include = single_include(query.as_deref())?;
    let mut body = presented(&state, &view, app)?;
    let found = view.state.app(app);
    if let (Some(included), Some(o)) = (
        include.included(&state, &view.state, found),
        body.as_object_mut(),
    ) {
        o.insert("included".into(), included);
    }
    Ok(Json(body).into_response())
}

/// Creates an app (201): `audit.app.process.create` then `audit.app.create`, no usage event.
#[utoipa::path(post, path = "/v3/apps", tag = "v3 apps", security(("bearer" = [])), request_body(content = serde_json::Value, content_type = "application/json", description = "name, relationships.space, and optionally environment_variables, lifecycle"), responses((status = 201, description = "the app", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn create(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    CcJson(body): CcJson<Value>,
) -> Result<Response, ApiError> {
    write_scope(&caller)?;
    let body = body::app_create(&body)?;
    let invalid_space = || {
        ApiError::unprocessable(
            "Invalid space. Ensure that the space exists and you have access to it.",
        )
    };
    let check = |table: &tally_domain::State| {
        let space = body
            .space
            .parse::<Guid>()
            .ok()
            .filter(|s| table.space(*s).is_some());
        access::app_write_v3(caller.subject(), table, space).map_err(|d| deny(d, invalid_space))?;
        space.ok_or_else(invalid_space)
    };
    let guid = create_resource(&state, &caller, check, |guid, space_guid| {
        Command::CreateAppV3 {
            guid,
            name: body.name,
            space_guid,
            environment_json: body.environment_json,
            lifecycle: body.lifecycle,
            audit_request: body.audit_request,
        }
    })
    .await?;
    let view = state.engine.view();
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("{}/v3/apps/{guid}", base(&state)))],
        Json(presented(&state, &view, guid)?),
    )
        .into_response())
}

/// Renames an app or changes its buildpack: `audit.app.update`, no usage event.
#[utoipa::path(patch, path = "/v3/apps/{guid}", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), request_body(content = serde_json::Value, content_type = "application/json", description = "name, lifecycle"), responses((status = 200, description = "the app", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn update(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    CcJson(body): CcJson<Value>,
) -> Result<Response, ApiError> {
    write_scope(&caller)?;
    let body = body::app_update(&body)?;
    let (app, view) = write(&state, &caller, &guid, |_, guid| {
        Ok(Some(Command::UpdateAppV3 {
            guid,
            name: body.name,
            lifecycle: body.lifecycle,
            audit_request: body.audit_request,
        }))
    })
    .await?;
    Ok(Json(presented(&state, &view, app)?).into_response())
}

/// The operation of the job a v3 app delete leaves (reference v3 §2.5).
pub(crate) const DELETE_JOB: &str = "app.delete";

/// Deletes an app at once: 202, no body, `Location` of a job that is already `COMPLETE` (its
/// guid is that of the `audit.app.delete-request` event).
#[utoipa::path(delete, path = "/v3/apps/{guid}", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 202, description = "deleted; Location names the job"), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn delete(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    write_scope(&caller)?;
    let app = {
        let view = state.engine.view();
        reach(&view.state, &caller, &guid, access::app_write_v3)?
    };
    let committed = state
        .engine
        .submit(caller.envelope(Command::DeleteAppV3 { guid: app }))
        .await?;
    let job = committed
        .records
        .iter()
        .find_map(|(_, event)| match event {
            tally_domain::Event::AuditRecorded(a) if a.event_type == "audit.app.delete-request" => {
                Some(a.guid)
            }
            _ => None,
        })
        .ok_or_else(|| {
            tracing::error!("an app delete committed without its delete-request event");
            ApiError::unknown()
        })?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("{}/v3/jobs/{job}", base(&state)))],
    )
        .into_response())
}

/// The app's variables, parsed (what is stored is always a JSON object).
fn variables(app: &App) -> Map<String, Value> {
    serde_json::from_str::<Map<String, Value>>(&app.environment_json).unwrap_or_default()
}

/// The app, if the caller may read its secrets (space developers and global readers): v3
/// answers others `NotAuthorized` once the app is visible.
fn secrets_of<'a>(
    caller: &Caller,
    view: &'a tally_engine::View,
    guid: &str,
) -> Result<&'a App, ApiError> {
    let app = reach(&view.state, caller, guid, access::app_read_v3)?;
    let app = view.state.app(app).ok_or_else(app_not_found)?;
    if access::sees_environment(caller.subject(), &view.state, app.space_guid) {
        Ok(app)
    } else {
        Err(ApiError::not_authorized())
    }
}

/// The app's environment as CC shows it (no services, no running or staging groups).
#[utoipa::path(get, path = "/v3/apps/{guid}/env", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn env(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let app = secrets_of(&caller, &view, &guid)?;
    let space = view.state.space(app.space_guid);
    let org = space.and_then(|s| view.state.org(s.org_guid));
    Ok(Json(json!({
        "staging_env_json": {},
        "running_env_json": {},
        "environment_variables": variables(app),
        "system_env_json": { "VCAP_SERVICES": {} },
        "application_env_json": {
            "VCAP_APPLICATION": {
                "application_id": app.guid.to_string(),
                "application_name": app.name,
                "application_uris": [],
                "cf_api": base(&state),
                "limits": { "fds": 16384 },
                "name": app.name,
                "organization_id": org.map(|o| o.guid.to_string()),
                "organization_name": org.map(|o| o.name.clone()),
                "space_id": app.space_guid.to_string(),
                "space_name": space.map(|s| s.name.clone()),
                "uris": [],
                "users": null,
            }
        },
    })))
}

fn variables_body(state: &AppState, app: &App) -> Value {
    let at = format!("{}/v3/apps/{}", base(state), app.guid);
    json!({
        "var": variables(app),
        "links": {
            "self": { "href": format!("{at}/environment_variables") },
            "app": { "href": at },
        },
    })
}

/// The app's own variables.
#[utoipa::path(get, path = "/v3/apps/{guid}/environment_variables", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn environment_variables(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let app = secrets_of(&caller, &view, &guid)?;
    Ok(Json(variables_body(&state, app)))
}

/// How often a variables patch is merged again when another write changed them first.
const MERGE_ATTEMPTS: usize = 8;

/// Sets (a string) or removes (`null`) variables: merged onto the app's as they are when the
/// write commits; `audit.app.update`, no usage event.
#[utoipa::path(patch, path = "/v3/apps/{guid}/environment_variables", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), request_body(content = serde_json::Value, content_type = "application/json", description = "{\"var\": {\"NAME\": \"value\" or null}}"), responses((status = 200, description = "the variables", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn patch_environment_variables(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    CcJson(body): CcJson<Value>,
) -> Result<Json<Value>, ApiError> {
    write_scope(&caller)?;
    let patch = body::environment_patch(&body)?;
    let audit_request = tally_json::from_json(json!({ "environment_variables": body::PRIVATE }));
    for _ in 0..MERGE_ATTEMPTS {
        let attempt = write(&state, &caller, &guid, |table, app| {
            let expected = table
                .app(app)
                .map(|a| a.environment_json.clone())
                .ok_or_else(app_not_found)?;
            let mut vars =
                serde_json::from_str::<Map<String, Value>>(&expected).unwrap_or_default();
            for (key, value) in &patch {
                if value.is_null() {
                    vars.remove(key);
                } else {
                    vars.insert(key.clone(), value.clone());
                }
            }
            Ok(Some(Command::SetEnvironment {
                guid: app,
                expected,
                environment_json: Value::Object(vars).to_string(),
                audit_request: audit_request.clone(),
            }))
        })
        .await;
        match attempt {
            Ok((app, view)) => {
                let app = view.state.app(app).ok_or_else(app_not_found)?;
                return Ok(Json(variables_body(&state, app)));
            }
            Err(error) if error == ApiError::from(DomainError::EnvironmentChanged) => continue,
            Err(error) => return Err(error),
        }
    }
    Err(ApiError::unavailable(
        "The app's environment kept changing; try again",
    ))
}

/// Start, stop or restart: start and restart need a current droplet (checked before the
/// caller's right to write, as CC does), usage events only for what changed, the audit event
/// always; 200 with the app.
async fn act(
    state: &AppState,
    caller: &Caller,
    guid: &str,
    action: AppAction,
) -> Result<Response, ApiError> {
    write_scope(caller)?;
    {
        let view = state.engine.view();
        let app = reach(&view.state, caller, guid, access::app_read_v3)?;
        let startable = view
            .state
            .app(app)
            .is_some_and(|a| a.current_droplet().is_some());
        if action != AppAction::Stop && !startable {
            return Err(ApiError::unprocessable(
                "Assign a droplet before starting this app.",
            ));
        }
    }
    let (app, view) = write(state, caller, guid, |_, guid| {
        Ok(Some(Command::AppAction { guid, action }))
    })
    .await?;
    Ok(Json(presented(state, &view, app)?).into_response())
}

/// Starts the app's processes.
#[utoipa::path(post, path = "/v3/apps/{guid}/actions/start", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "the app", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn start(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    act(&state, &caller, &guid, AppAction::Start).await
}

/// Stops the app's processes.
#[utoipa::path(post, path = "/v3/apps/{guid}/actions/stop", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "the app", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn stop(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    act(&state, &caller, &guid, AppAction::Stop).await
}

/// Stops (if started) and starts the app's processes in one write.
#[utoipa::path(post, path = "/v3/apps/{guid}/actions/restart", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "the app", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn restart(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    act(&state, &caller, &guid, AppAction::Restart).await
}

/// The app's current droplet.
#[utoipa::path(get, path = "/v3/apps/{guid}/droplets/current", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "the droplet", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn current_droplet(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let app = reach(&view.state, &caller, &guid, access::app_read_v3)?;
    let app = view.state.app(app).ok_or_else(app_not_found)?;
    app.current_droplet()
        .and_then(|_| present::droplet(base(&state), &view.state, app))
        .map(Json)
        .ok_or_else(droplet_not_found)
}

/// A droplet (tally keeps each app's latest).
#[utoipa::path(get, path = "/v3/droplets/{guid}", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the droplet's guid")), responses((status = 200, description = "the droplet", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn droplet(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let table = &view.state;
    let lookup: Lookup = |t, d| t.app_of_droplet(d).map(|a| (a.guid, a.space_guid));
    let app = reach_via(
        table,
        &caller,
        &guid,
        lookup,
        access::app_read_v3,
        droplet_not_found,
    )?;
    let app = table.app(app).ok_or_else(droplet_not_found)?;
    present::droplet(base(&state), table, app)
        .map(Json)
        .ok_or_else(droplet_not_found)
}
