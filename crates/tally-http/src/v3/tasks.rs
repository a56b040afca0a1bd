//! Tasks (reference v3 §5): `POST /v3/apps/:guid/tasks` (202, RUNNING), `GET /v3/tasks[/:guid]`,
//! `GET /v3/apps/:guid/tasks`, cancel (202, CANCELING), and the completion a runtime reports
//! (`POST /internal/v4/tasks/:guid/completed`, authenticated as the staging callback is).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tally_domain::access::{self, Visible};
use tally_domain::model::{App, Task};
use tally_domain::{Actor, Command, Envelope, Guid, TaskSpec};
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
        .routes(routes!(show))
        .routes(routes!(app_tasks, create))
        .routes(routes!(cancel))
        .routes(routes!(cancel_deprecated))
        .routes(routes!(completed))
}

fn task_not_found() -> ApiError {
    ApiError::resource_not_found("Task not found")
}

fn bad_query(message: String) -> ApiError {
    ApiError::bad_query(message)
}

fn base(state: &AppState) -> &str {
    &state.settings.external_url
}

fn app_space(table: &tally_domain::State, task: Option<Guid>) -> Option<Guid> {
    task.and_then(|t| table.task(t))
        .and_then(|t| table.app(t.app_guid))
        .map(|a| a.space_guid)
}

const SPEC: Spec<'static> = Spec {
    lists: &[
        "names",
        "states",
        "guids",
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

/// The app-nested list takes `sequence_ids` and no app, space or org filter.
const APP_SPEC: Spec<'static> = Spec {
    lists: &["names", "states", "guids", "sequence_ids", "label_selector"],
    ..SPEC
};

/// Whether a caller may see a task's command: who may read the app's secrets.
fn shows_command(caller: &Caller, table: &tally_domain::State, app: &App) -> bool {
    access::sees_environment(caller.subject(), table, app.space_guid)
}

/// A page of tasks already in creation order, filtered by what the query asks.
fn page(
    state: &AppState,
    url: &str,
    q: &ListQuery,
    tasks: Vec<(&Task, &App)>,
    show: impl Fn(&App) -> bool,
) -> Result<Response, ApiError> {
    let labels_pass = match q.raw("label_selector") {
        Some(selector) => unlabelled_pass(selector).map_err(bad_query)?,
        None => true,
    };
    let mut tasks: Vec<(&Task, &App)> = tasks
        .into_iter()
        .filter(|(t, _)| {
            labels_pass
                && q.allows("guids", &t.guid.to_string())
                && q.allows("names", &t.name)
                && q.allows("states", t.state.as_str())
                && q.allows("sequence_ids", &t.sequence_id.to_string())
                && q.allows_time("created_ats", t.created_at)
                && q.allows_time("updated_ats", t.updated_at)
        })
        .collect();
    if q.order_by
        .as_deref()
        .is_some_and(|o| o.ends_with("updated_at"))
    {
        tasks.sort_by_key(|(t, _)| (t.updated_at, t.guid));
    }
    if q.descending() {
        tasks.reverse();
    }
    let total = tasks.len() as u64;
    let skip = usize::try_from(q.offset()).unwrap_or(usize::MAX);
    let take = usize::try_from(q.per_page).unwrap_or(usize::MAX);
    let resources = crate::page::v3(
        state,
        tasks
            .into_iter()
            .skip(skip)
            .take(take)
            .map(|(t, a)| present::task(base(state), t, a, show(a))),
        bad_query,
    )?;
    crate::page::json(|empty| q.page_envelope(url, total, empty), resources)
}

/// Tasks, a v3 page (commands left out): its cost grows with the tasks of the apps an
/// `app_guids`, `space_guids` or `organization_guids` filter (or a caller's spaces) names, else
/// with every task.
#[utoipa::path(get, path = "/v3/tasks", tag = "v3 tasks", security(("bearer" = [])), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn list(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (view, visible, q) =
        open_list(&state, &caller, access::app_list_v3, task_not_found, || {
            ListQuery::parse(query.as_deref(), &SPEC)
        })?;
    let table = &view.state;
    let guids = |key: &str| {
        q.lists.get(key).map(|values| {
            values
                .iter()
                .filter_map(|v| v.parse::<Guid>().ok())
                .collect::<Vec<_>>()
        })
    };
    let apps: Option<Vec<&App>> = if let Some(ids) = guids("app_guids") {
        Some(ids.into_iter().filter_map(|g| table.app(g)).collect())
    } else if let Some(spaces) = guids("space_guids") {
        Some(spaces.into_iter().flat_map(|s| table.apps_in(s)).collect())
    } else if let Some(orgs) = guids("organization_guids") {
        Some(
            orgs.into_iter()
                .flat_map(|o| table.spaces_in(o).flat_map(|s| table.apps_in(s.guid)))
                .collect(),
        )
    } else {
        match &visible {
            Visible::Nothing => Some(Vec::new()),
            Visible::Within(spaces) => {
                Some(spaces.iter().flat_map(|s| table.apps_in(*s)).collect())
            }
            Visible::All => None,
        }
    };
    let mut tasks: Vec<(&Task, &App)> = match apps {
        Some(apps) => apps
            .into_iter()
            .flat_map(|a| table.tasks_of(a.guid).map(move |t| (t, a)))
            .collect(),
        None => table
            .tasks_by_creation()
            .filter_map(|t| table.app(t.app_guid).map(|a| (t, a)))
            .collect(),
    };
    tasks.sort_by_key(|(t, _)| (t.created_at, t.guid));
    tasks.dedup_by_key(|(t, _)| t.guid);
    let org_of = |a: &App| table.space(a.space_guid).map(|s| s.org_guid.to_string());
    tasks.retain(|(_, a)| {
        visible.shows(Some(a.space_guid), None)
            && q.allows("app_guids", &a.guid.to_string())
            && q.allows("space_guids", &a.space_guid.to_string())
            && q.lists
                .get("organization_guids")
                .is_none_or(|orgs| org_of(a).is_some_and(|o| orgs.contains(&o)))
    });
    let url = format!("{}/v3/tasks", base(&state));
    page(&state, &url, &q, tasks, |_| false)
}

/// The task the path names, if `rule` lets the caller reach it.
fn reach_task(
    table: &tally_domain::State,
    caller: &Caller,
    guid: &str,
    rule: Rule,
) -> Result<Guid, ApiError> {
    let lookup: Lookup = |t, g| {
        let task = t.task(g)?;
        t.app(task.app_guid).map(|a| (task.guid, a.space_guid))
    };
    reach_via(table, caller, guid, lookup, rule, task_not_found)
}

fn presented(
    state: &AppState,
    caller: &Caller,
    table: &tally_domain::State,
    guid: Guid,
) -> Result<Value, ApiError> {
    let task = table.task(guid).ok_or_else(task_not_found)?;
    let app = table.app(task.app_guid).ok_or_else(task_not_found)?;
    Ok(present::task(
        base(state),
        task,
        app,
        shows_command(caller, table, app),
    ))
}

/// One task.
#[utoipa::path(get, path = "/v3/tasks/{guid}", tag = "v3 tasks", security(("bearer" = [])), params(("guid" = String, Path, description = "the task's guid")), responses((status = 200, description = "the task", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn show(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let task = reach_task(&view.state, &caller, &guid, access::app_read_v3)?;
    Ok(Json(presented(&state, &caller, &view.state, task)?))
}

/// The app's tasks.
#[utoipa::path(get, path = "/v3/apps/{guid}/tasks", tag = "v3 tasks", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn app_tasks(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let view = state.engine.view();
    let table = &view.state;
    let app = reach(table, &caller, &guid, access::app_read_v3)?;
    let q = ListQuery::parse(query.as_deref(), &APP_SPEC)?;
    let app = table.app(app).ok_or_else(crate::v3::apps::app_not_found)?;
    let tasks: Vec<(&Task, &App)> = table.tasks_of(app.guid).map(|t| (t, app)).collect();
    let url = format!("{}/v3/apps/{}/tasks", base(&state), app.guid);
    page(&state, &url, &q, tasks, |a| {
        shows_command(&caller, table, a)
    })
}

/// Parses `POST /v3/apps/:guid/tasks` (reference v3 §5.2).
fn task_body(request: &Value) -> Result<(TaskSpec, tally_domain::audit::Value), ApiError> {
    let o = body::object(request)?;
    let mut problems = body::Problems::default();
    body::only_keys(
        o,
        &[
            "name",
            "command",
            "disk_in_mb",
            "memory_in_mb",
            "log_rate_limit_in_bytes_per_second",
            "droplet_guid",
            "template",
            "user",
            "metadata",
        ],
        "",
        &mut problems,
    );
    let mut spec = TaskSpec::default();
    let text = |key: &str, name: &str, problems: &mut body::Problems| match o.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.add(format!("{name} must be a string"));
            None
        }
    };
    spec.name = text("name", "Name", &mut problems);
    spec.command = text("command", "Command", &mut problems);
    let droplet = text("droplet_guid", "Droplet guid", &mut problems);
    if o.get("user").is_some_and(|u| !u.is_null()) {
        problems.add("User is not supported: tally's tasks run as vcap");
    }
    let integer = |key: &str, name: &str, problems: &mut body::Problems| match o.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
        Some(Value::Number(_)) => {
            problems.add(format!("{name} must be an integer"));
            None
        }
        Some(_) => {
            problems.add(format!("{name} is not a number"));
            None
        }
    };
    spec.memory_mb = integer("memory_in_mb", "Memory in mb", &mut problems);
    spec.disk_mb = integer("disk_in_mb", "Disk in mb", &mut problems);
    spec.log_rate_limit = integer(
        "log_rate_limit_in_bytes_per_second",
        "Log rate limit in bytes per second",
        &mut problems,
    );
    if let Some(template) = o.get("template").filter(|t| !t.is_null()) {
        match template
            .get("process")
            .and_then(|p| p.get("guid"))
            .and_then(Value::as_str)
        {
            Some(guid) => match guid.parse::<Guid>() {
                Ok(guid) => spec.template = Some(guid),
                Err(_) => problems.add("Template process not found"),
            },
            None => problems
                .add("Template must be structured like {\"process\": {\"guid\": \"valid-guid\"}}"),
        }
    }
    body::metadata_of(o, &mut problems);
    if let Some(droplet) = droplet {
        match droplet.parse::<Guid>() {
            Ok(guid) => spec.droplet_guid = Some(guid),
            Err(_) => problems.add("Droplet not found"),
        }
    }
    // CC's audit request: the name, the memory, the command hidden.
    let mut request = serde_json::Map::new();
    for key in ["name", "memory_in_mb"] {
        if let Some(value) = o.get(key) {
            request.insert(key.to_owned(), value.clone());
        }
    }
    request.insert("command".into(), Value::String(body::PRIVATE.to_owned()));
    problems.finish((spec, tally_json::from_json(Value::Object(request))))
}

/// Runs a task (202, RUNNING): `audit.app.task.create`, then TASK_STARTED.
#[utoipa::path(post, path = "/v3/apps/{guid}/tasks", tag = "v3 tasks", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), request_body(content = serde_json::Value, content_type = "application/json", description = "command (or template.process.guid), and optionally name, memory_in_mb, disk_in_mb, log_rate_limit_in_bytes_per_second, droplet_guid"), responses((status = 202, description = "the task", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn create(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    CcJson(request): CcJson<Value>,
) -> Result<Response, ApiError> {
    write_scope(&caller)?;
    let (spec, audit_request) = task_body(&request)?;
    let task = crate::fresh_guid();
    let (_, view) = crate::v3::apps::write(&state, &caller, &guid, |_, app_guid| {
        Ok(Some(Command::CreateTask {
            guid: task,
            app_guid,
            spec,
            audit_request,
        }))
    })
    .await?;
    let body = presented(&state, &caller, &view.state, task)?;
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn cancel_task(state: &AppState, caller: &Caller, guid: &str) -> Result<Response, ApiError> {
    write_scope(caller)?;
    let found = reach_task(
        &state.engine.view().state,
        caller,
        guid,
        access::app_read_v3,
    )?;
    let (task, view) = Write::new(
        caller,
        |t: &tally_domain::State| t.task(found).map(|t| t.guid),
        |who, t: &tally_domain::State, task: Option<Guid>| {
            access::app_write_v3(who, t, app_space(t, task))
        },
        task_not_found,
    )
    .run(state, |_, guid| Ok(Some(Command::CancelTask { guid })))
    .await?;
    let body = presented(state, caller, &view.state, task)?;
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Cancels a task (202, CANCELING): `audit.app.task.cancel`; TASK_STOPPED when it ends.
#[utoipa::path(post, path = "/v3/tasks/{guid}/actions/cancel", tag = "v3 tasks", security(("bearer" = [])), params(("guid" = String, Path, description = "the task's guid")), responses((status = 202, description = "the task", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn cancel(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    cancel_task(&state, &caller, &guid).await
}

/// The deprecated form of cancel (CC still serves it).
#[utoipa::path(put, path = "/v3/tasks/{guid}/cancel", tag = "v3 tasks", security(("bearer" = [])), params(("guid" = String, Path, description = "the task's guid")), responses((status = 202, description = "the task", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn cancel_deprecated(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    cancel_task(&state, &caller, &guid).await
}

#[derive(Debug, serde::Deserialize)]
struct Completion {
    #[serde(default)]
    failed: bool,
    failure_reason: Option<String>,
}

/// A runtime reports a task's end (HTTP Basic, user `staging`, `staging.callback_password`):
/// SUCCEEDED, or FAILED with `failure_reason`; TASK_STOPPED as CC writes it. A second report
/// is CC's 400 `InvalidRequest`.
#[utoipa::path(post, path = "/internal/v4/tasks/{guid}/completed", tag = "staging",
    params(("guid" = String, Path, description = "the task")),
    request_body(content = serde_json::Value, description = "`{\"failed\": bool, \"failure_reason\": \"...\"}`", content_type = "application/json"),
    responses(
        (status = 200, description = "recorded", body = serde_json::Value),
        (status = "default", description = "Cloud Controller's error (400, 401, 404)", body = crate::openapi::CcError)))]
async fn completed(
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let password = state
        .settings
        .staging_callback_password
        .as_ref()
        .map(|p| p.0.as_str());
    if !crate::staging::authorized(&headers, password) {
        return Err(ApiError::not_authenticated());
    }
    let report: Completion = serde_json::from_slice(&body)
        .map_err(|e| crate::json::parse_error(format!("invalid completion: {e}")))?;
    let task: Guid = guid.parse().map_err(|_| task_not_found())?;
    state
        .engine
        .submit(Envelope {
            command: Command::CompleteTask {
                guid: task,
                failed: report.failed,
                failure_reason: report.failure_reason,
            },
            actor: Actor::system(),
            principal: None,
        })
        .await?;
    Ok(Json(json!({})))
}
