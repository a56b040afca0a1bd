//! Packages, builds and droplets (reference v3 §4): `POST /v3/packages` (bits awaiting their
//! upload, or a docker image), the upload (streamed to the package store as v2 bits are),
//! `POST /v3/builds` (staged through the same immediate or external mode as a v2 start),
//! the app's packages and droplets, and its current droplet. Tally keeps each app's latest
//! package, build and droplet.

use std::sync::Arc;

use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use tally_domain::access;
use tally_domain::model::App;
use tally_domain::{Command, Guid};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::json::CcJson;
use crate::resource::create as create_resource;
use crate::v3::apps::{reach, reach_via, write_scope, Lookup, Rule};
use crate::v3::list::{ListQuery, Spec};
use crate::v3::{body, present};
use crate::{deny, ApiError, AppState};

/// The upload route, with the package size limit of v2 bits.
pub(crate) fn upload_router(max_upload_bytes: usize) -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(axum::extract::DefaultBodyLimit::max(
            max_upload_bytes.saturating_add(crate::v2::bits::MULTIPART_FRAMING),
        ))
}

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_package))
        .routes(routes!(show_package))
        .routes(routes!(app_packages))
        .routes(routes!(create_build))
        .routes(routes!(show_build))
        .routes(routes!(app_droplets))
        .routes(routes!(current_droplet, set_current_droplet))
}

fn package_not_found() -> ApiError {
    ApiError::resource_not_found("Package not found")
}

fn build_not_found() -> ApiError {
    ApiError::resource_not_found("Build not found")
}

fn bad_query(message: String) -> ApiError {
    ApiError::bad_query(message)
}

fn base(state: &AppState) -> &str {
    &state.settings.external_url
}

fn space_of(table: &tally_domain::State, app: Option<Guid>) -> Option<Guid> {
    app.and_then(|a| table.app(a)).map(|a| a.space_guid)
}

/// The app whose latest package `guid` names, if `rule` lets the caller reach it.
fn reach_package(
    table: &tally_domain::State,
    caller: &Caller,
    guid: &str,
    rule: Rule,
) -> Result<Guid, ApiError> {
    let lookup: Lookup = |t, p| t.app_of_package(p).map(|a| (a.guid, a.space_guid));
    reach_via(table, caller, guid, lookup, rule, package_not_found)
}

/// A relationship's `data.guid` as sent.
fn relationship_guid(value: Option<&Value>) -> Option<&str> {
    value?.get("data")?.get("guid")?.as_str()
}

/// Creates a package (201): bits `AWAITING_UPLOAD`, docker `READY`; `audit.app.package.create`.
#[utoipa::path(post, path = "/v3/packages", tag = "v3 apps", security(("bearer" = [])), request_body(content = serde_json::Value, content_type = "application/json", description = "type (bits or docker), relationships.app, data.image for docker"), responses((status = 201, description = "the package", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn create_package(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    CcJson(request): CcJson<Value>,
) -> Result<Response, ApiError> {
    write_scope(&caller)?;
    let o = body::object(&request)?;
    let mut problems = body::Problems::default();
    body::only_keys(
        o,
        &["type", "relationships", "data", "metadata"],
        "",
        &mut problems,
    );
    let docker = match o.get("type").and_then(Value::as_str) {
        Some("bits") => false,
        Some("docker") => true,
        _ => {
            problems.add("Type must be one of 'bits, docker'");
            false
        }
    };
    let app_text = relationship_guid(o.get("relationships").and_then(|r| r.get("app")));
    if app_text.is_none() {
        problems.add("Relationships 'relationships' must include one or more valid relationships");
    }
    let image = match (docker, o.get("data")) {
        (true, Some(data)) => match data.get("image").and_then(Value::as_str) {
            Some(image) if !image.is_empty() => Some(image.to_owned()),
            _ => {
                problems.add("Data Image required");
                None
            }
        },
        (true, None) => {
            problems.add("Data Image required");
            None
        }
        (false, Some(data)) if !data.as_object().is_some_and(|d| d.is_empty()) => {
            problems.add("Data Bits packages take no data");
            None
        }
        (false, _) => None,
    };
    body::metadata_of(o, &mut problems);
    problems.finish(())?;
    let invalid_app =
        || ApiError::unprocessable("App is invalid. Ensure it exists and you have access to it.");
    let check = |table: &tally_domain::State| {
        let app = app_text
            .and_then(|g| g.parse::<Guid>().ok())
            .filter(|g| table.app(*g).is_some());
        access::app_write_v3(caller.subject(), table, space_of(table, app))
            .map_err(|d| deny(d, invalid_app))?;
        app.ok_or_else(invalid_app)
    };
    let mut audit = request.clone();
    if let Some(password) = audit.pointer_mut("/data/password") {
        *password = Value::String(body::PRIVATE.to_owned());
    }
    let audit_request = tally_json::from_json(audit);
    let guid = crate::fresh_guid();
    create_resource(&state, &caller, check, |_, app_guid| {
        Command::CreatePackage {
            guid,
            app_guid,
            docker_image: image,
            audit_request,
        }
    })
    .await?;
    let view = state.engine.view();
    let app = view
        .state
        .app_of_package(guid)
        .ok_or_else(package_not_found)?;
    let package = present::package(base(&state), app).ok_or_else(package_not_found)?;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("{}/v3/packages/{guid}", base(&state)),
        )],
        Json(package),
    )
        .into_response())
}

/// One package.
#[utoipa::path(get, path = "/v3/packages/{guid}", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the package's guid")), responses((status = 200, description = "the package", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn show_package(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let app = reach_package(&view.state, &caller, &guid, access::app_read_v3)?;
    let app = view.state.app(app).ok_or_else(package_not_found)?;
    present::package(base(&state), app)
        .map(Json)
        .ok_or_else(package_not_found)
}

/// Uploads a bits package's zip (multipart field `bits`, `resources` empty): `READY` once
/// stored and recorded (200); `audit.app.package.upload`.
#[utoipa::path(post, path = "/v3/packages/{guid}/upload", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the package's guid")), request_body(content = String, content_type = "multipart/form-data", description = "`bits` (a zip) and `resources` (must be `[]`)"), responses((status = 200, description = "the package", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn upload(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    write_scope(&caller)?;
    let (app, package) = {
        let view = state.engine.view();
        let app = reach_package(&view.state, &caller, &guid, access::app_write_v3)?;
        let package = view
            .state
            .app(app)
            .and_then(|a| a.package.as_ref())
            .map(|p| p.guid)
            .ok_or_else(package_not_found)?;
        (app, package)
    };
    let received = crate::v2::bits::receive(&state, &headers, multipart, "bits").await?;
    crate::v2::bits::keep(&state, &caller, received, |sha256, size_bytes| {
        Command::UploadPackageBits {
            guid: package,
            sha256,
            size_bytes,
        }
    })
    .await?;
    let view = state.engine.view();
    let app = view.state.app(app).ok_or_else(package_not_found)?;
    present::package(base(&state), app)
        .map(Json)
        .ok_or_else(package_not_found)
}

const NESTED: Spec<'static> = Spec {
    lists: &["guids", "states"],
    times: &["created_ats", "updated_ats"],
    order_by: &["created_at", "updated_at"],
    refused: &[],
    single: &[],
    extensions: &[],
    error: bad_query,
};

/// How a nested list presents the app's one resource of its kind.
type Presenter = fn(&str, &tally_domain::State, &App) -> Option<Value>;

/// A page of what `present` makes of the app (at most one: tally keeps the latest).
fn nested_page(
    state: &AppState,
    caller: &Caller,
    guid: &str,
    query: Option<&str>,
    (path, present): (&str, Presenter),
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let app = reach(&view.state, caller, guid, access::app_read_v3)?;
    let q = ListQuery::parse(query, &NESTED)?;
    let app = view
        .state
        .app(app)
        .ok_or_else(crate::v3::apps::app_not_found)?;
    let found: Vec<Value> = present(base(state), &view.state, app)
        .into_iter()
        .filter(|r| {
            r["guid"].as_str().is_some_and(|g| q.allows("guids", g))
                && r["state"].as_str().is_some_and(|s| q.allows("states", s))
        })
        .collect();
    let url = format!("{}/v3/apps/{}/{path}", base(state), app.guid);
    Ok(Json(q.envelope(&url, found, |r| r)))
}

/// The app's packages (its latest).
#[utoipa::path(get, path = "/v3/apps/{guid}/packages", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn app_packages(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    nested_page(
        &state,
        &caller,
        &guid,
        query.as_deref(),
        ("packages", |base, _, app| present::package(base, app)),
    )
}

/// The app's droplets (its latest).
#[utoipa::path(get, path = "/v3/apps/{guid}/droplets", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "ok", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn app_droplets(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    nested_page(
        &state,
        &caller,
        &guid,
        query.as_deref(),
        ("droplets", present::droplet),
    )
}

/// Stages a ready package (201): STAGING_STARTED and `audit.app.build.create`; in immediate
/// mode the build is STAGED by the time it is answered (STAGING_STOPPED, BUILDPACK_SET,
/// `audit.app.build.staged`), and its droplet is not assigned (as in CC).
#[utoipa::path(post, path = "/v3/builds", tag = "v3 apps", security(("bearer" = [])), request_body(content = serde_json::Value, content_type = "application/json", description = "package.guid"), responses((status = 201, description = "the build", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn create_build(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    CcJson(request): CcJson<Value>,
) -> Result<Response, ApiError> {
    write_scope(&caller)?;
    let o = body::object(&request)?;
    let mut problems = body::Problems::default();
    body::only_keys(
        o,
        &[
            "package",
            "lifecycle",
            "staging_memory_in_mb",
            "staging_disk_in_mb",
            "staging_log_rate_limit_bytes_per_second",
            "metadata",
        ],
        "",
        &mut problems,
    );
    let package_text = o
        .get("package")
        .and_then(|p| p.get("guid"))
        .and_then(Value::as_str);
    if package_text.is_none() {
        problems.add("Package guid must be a string");
    }
    if o.get("lifecycle").is_some_and(|l| !l.is_null()) {
        problems.add("Lifecycle is not supported: a build stages with its app's lifecycle");
    }
    body::metadata_of(o, &mut problems);
    problems.finish(())?;
    let invalid_package = || {
        ApiError::unprocessable(
            "Unable to use package. Ensure that the package exists and you have access to it.",
        )
    };
    let check = |table: &tally_domain::State| {
        let package = package_text
            .and_then(|g| g.parse::<Guid>().ok())
            .filter(|p| table.app_of_package(*p).is_some());
        let app = package
            .and_then(|p| table.app_of_package(p))
            .map(|a| a.space_guid);
        access::app_write_v3(caller.subject(), table, app).map_err(|d| deny(d, invalid_package))?;
        package.ok_or_else(invalid_package)
    };
    let guid = tally_domain::v3_build_guid(crate::fresh_guid());
    let audit_request = tally_json::from_json(request.clone());
    create_resource(&state, &caller, check, |_, package_guid| {
        Command::CreateBuild {
            guid,
            package_guid,
            audit_request,
        }
    })
    .await?;
    let view = state.engine.view();
    let app = view.state.app_of_build(guid).ok_or_else(build_not_found)?;
    let build = present::build(base(&state), app).ok_or_else(build_not_found)?;
    Ok((StatusCode::CREATED, Json(build)).into_response())
}

/// One build (an app's latest).
#[utoipa::path(get, path = "/v3/builds/{guid}", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the build's guid")), responses((status = 200, description = "the build", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn show_build(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let table = &view.state;
    let lookup: Lookup = |t, b| t.app_of_build(b).map(|a| (a.guid, a.space_guid));
    let app = reach_via(
        table,
        &caller,
        &guid,
        lookup,
        access::app_read_v3,
        build_not_found,
    )?;
    let app = table.app(app).ok_or_else(build_not_found)?;
    present::build(base(&state), app)
        .map(Json)
        .ok_or_else(build_not_found)
}

/// The app's current droplet relationship.
#[utoipa::path(get, path = "/v3/apps/{guid}/relationships/current_droplet", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), responses((status = 200, description = "the relationship", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn current_droplet(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let app = reach(&view.state, &caller, &guid, access::app_read_v3)?;
    let app = view
        .state
        .app(app)
        .ok_or_else(crate::v3::apps::app_not_found)?;
    Ok(Json(present::current_droplet_relationship(
        base(&state),
        app,
    )))
}

/// Makes the app's latest droplet the one it runs (200): `audit.app.droplet.mapped`, no usage
/// event (the next start carries the droplet's buildpack).
#[utoipa::path(patch, path = "/v3/apps/{guid}/relationships/current_droplet", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the app's guid")), request_body(content = serde_json::Value, content_type = "application/json", description = "{\"data\": {\"guid\": droplet}}"), responses((status = 200, description = "the relationship", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn set_current_droplet(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    CcJson(request): CcJson<Value>,
) -> Result<Json<Value>, ApiError> {
    write_scope(&caller)?;
    let o = body::object(&request)?;
    let mut problems = body::Problems::default();
    body::only_keys(o, &["data"], "", &mut problems);
    let droplet = match o.get("data") {
        Some(Value::Null) => {
            problems.add("Current droplet cannot be removed. Replace it with a preferred droplet.");
            None
        }
        Some(data) => match data.get("guid").and_then(Value::as_str) {
            Some(text) => Some(text.parse::<Guid>().map_err(|_| {
                ApiError::unprocessable(
                    "Unable to assign current droplet. Ensure the droplet exists and belongs to this app.",
                )
            })?),
            None => {
                problems.add("Data guid must be a string");
                None
            }
        },
        None => {
            problems.add("Data must be an object");
            None
        }
    };
    let droplet = problems.finish(droplet)?;
    let (app, view) = crate::v3::apps::write(&state, &caller, &guid, |_, app| {
        Ok(droplet.map(|droplet_guid| Command::SetCurrentDroplet {
            app_guid: app,
            droplet_guid,
        }))
    })
    .await?;
    let app = view
        .state
        .app(app)
        .ok_or_else(crate::v3::apps::app_not_found)?;
    Ok(Json(present::current_droplet_relationship(
        base(&state),
        app,
    )))
}
