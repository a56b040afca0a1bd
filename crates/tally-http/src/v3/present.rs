//! v3 resources (reference v3 §2.1, §3.1, §4.2): apps, processes, droplets, spaces, orgs and
//! jobs as Cloud Controller presents them. Links are absolute and name only endpoints tally
//! serves; a link that would be `null` is left out, as CC does (a `null` link crashes the PyPI
//! client, reference v3 §9.1).

use serde_json::{json, Map, Value};
use tally_domain::model::{
    App, HealthCheckType, Org, ProcessRef, Space, DEFAULT_STACK_NAME, WEB_PROCESS_TYPE,
};
use tally_domain::{Guid, Timestamp};

use crate::render::time;

/// What lists show in place of a process's command (reference v3 §3.1).
pub const HIDDEN_IN_LISTS: &str = "[PRIVATE DATA HIDDEN IN LISTS]";

fn link(href: String) -> Value {
    json!({ "href": href })
}

fn post(href: String) -> Value {
    json!({ "href": href, "method": "POST" })
}

/// `metadata`: tally stores no labels or annotations (a write that sets one is refused).
fn metadata() -> Value {
    json!({ "labels": {}, "annotations": {} })
}

fn lifecycle(app: &App) -> Value {
    if app.is_docker() {
        json!({ "type": "docker", "data": {} })
    } else {
        let buildpacks: Vec<&str> = app.buildpack.as_deref().into_iter().collect();
        json!({
            "type": "buildpack",
            "data": { "buildpacks": buildpacks, "stack": DEFAULT_STACK_NAME },
        })
    }
}

/// A v3 app.
pub fn app(base: &str, app: &App) -> Value {
    let g = app.guid;
    let at = format!("{base}/v3/apps/{g}");
    json!({
        "guid": g.to_string(),
        "created_at": time(app.created_at),
        "updated_at": time(app.updated_at),
        "name": app.name,
        "state": app.state.as_str(),
        "lifecycle": lifecycle(app),
        "relationships": {
            "space": { "data": { "guid": app.space_guid.to_string() } },
            "current_droplet": { "data": { "guid": app.current_droplet_guid.map(|d| d.to_string()) } },
        },
        "metadata": metadata(),
        "links": {
            "self": link(at.clone()),
            "environment_variables": link(format!("{at}/environment_variables")),
            "space": link(format!("{base}/v3/spaces/{}", app.space_guid)),
            "processes": link(format!("{at}/processes")),
            "packages": link(format!("{at}/packages")),
            "current_droplet": link(format!("{at}/droplets/current")),
            "droplets": link(format!("{at}/droplets")),
            "tasks": link(format!("{at}/tasks")),
            "start": post(format!("{at}/actions/start")),
            "stop": post(format!("{at}/actions/stop")),
        },
    })
}

/// The command a process runs: its own, else what the droplet detected.
/// A v3 process (the app's `web` process, whose guid is the app's, or another type);
/// `in_list` hides the command as CC's lists do.
pub fn process(base: &str, p: ProcessRef<'_>, in_list: bool) -> Value {
    let app = p.app();
    let g = p.guid();
    let at = format!("{base}/v3/processes/{g}");
    let command = if in_list {
        Value::String(HIDDEN_IN_LISTS.to_owned())
    } else {
        p.command().map_or(Value::Null, Value::String)
    };
    let (check_type, timeout, endpoint) = p.health_check();
    let mut check = Map::new();
    check.insert("timeout".into(), json!(timeout));
    check.insert("invocation_timeout".into(), Value::Null);
    check.insert("interval".into(), Value::Null);
    if check_type == HealthCheckType::Http {
        check.insert("endpoint".into(), json!(endpoint.unwrap_or("/")));
    }
    json!({
        "guid": g.to_string(),
        "type": p.process_type(),
        "command": command,
        "user": "vcap",
        "instances": p.instances(),
        "memory_in_mb": p.memory_mb(),
        "disk_in_mb": p.disk_mb(),
        "log_rate_limit_in_bytes_per_second": p.log_rate_limit(),
        "version": p.version().to_string(),
        "health_check": { "type": check_type.as_str(), "data": check },
        "readiness_health_check": {
            "type": "process",
            "data": { "invocation_timeout": null, "interval": null },
        },
        "relationships": {
            "app": { "data": { "guid": app.guid.to_string() } },
            "revision": null,
        },
        "metadata": metadata(),
        "created_at": time(p.created_at()),
        "updated_at": time(p.updated_at()),
        "links": {
            "self": link(at.clone()),
            "scale": post(format!("{at}/actions/scale")),
            "app": link(format!("{base}/v3/apps/{}", app.guid)),
            "space": link(format!("{base}/v3/spaces/{}", app.space_guid)),
        },
    })
}

/// The app's current droplet, if it has one.
/// Its `process_types` are `web` and the other types of the app's processes with the commands
/// the droplet gave them.
pub fn droplet(base: &str, table: &tally_domain::State, app: &App) -> Option<Value> {
    let d = app.latest_droplet.as_ref()?;
    let g = d.guid;
    let buildpacks: Vec<Value> = d
        .buildpack_name
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "detect_output": null,
                "buildpack_name": name,
                "version": null,
            })
        })
        .collect();
    let (lifecycle, image) = if app.is_docker() {
        (
            json!({ "type": "docker", "data": {} }),
            json!(app.docker_image),
        )
    } else {
        (json!({ "type": "buildpack", "data": {} }), Value::Null)
    };
    let mut process_types = Map::new();
    process_types.insert(WEB_PROCESS_TYPE.into(), json!(d.detected_start_command));
    for other in table.other_processes_of(app.guid) {
        process_types.insert(other.process_type.clone(), json!(other.detected_command));
    }
    Some(json!({
        "guid": g.to_string(),
        "state": "STAGED",
        "error": null,
        "lifecycle": lifecycle,
        "execution_metadata": "",
        "process_types": process_types,
        "checksum": if app.is_docker() { Value::Null } else { json!({ "type": "sha256", "value": null }) },
        "buildpacks": buildpacks,
        "stack": if app.is_docker() { Value::Null } else { json!(DEFAULT_STACK_NAME) },
        "image": image,
        "created_at": time(d.created_at),
        "updated_at": time(d.created_at),
        "relationships": { "app": { "data": { "guid": app.guid.to_string() } } },
        "metadata": metadata(),
        "links": {
            "self": link(format!("{base}/v3/droplets/{g}")),
            "app": link(format!("{base}/v3/apps/{}", app.guid)),
        },
    }))
}

/// A v3 space.
pub fn space(base: &str, space: &Space) -> Value {
    json!({
        "guid": space.guid.to_string(),
        "created_at": time(space.created_at),
        "updated_at": time(space.updated_at),
        "name": space.name,
        "relationships": {
            "organization": { "data": { "guid": space.org_guid.to_string() } },
            "quota": { "data": null },
        },
        "metadata": metadata(),
        "links": {
            "self": link(format!("{base}/v3/spaces/{}", space.guid)),
            "organization": link(format!("{base}/v3/organizations/{}", space.org_guid)),
        },
    })
}

/// A v3 organization.
pub fn org(base: &str, org: &Org) -> Value {
    json!({
        "guid": org.guid.to_string(),
        "created_at": time(org.created_at),
        "updated_at": time(org.updated_at),
        "name": org.name,
        "suspended": false,
        "relationships": { "quota": { "data": null } },
        "metadata": metadata(),
        "links": { "self": link(format!("{base}/v3/organizations/{}", org.guid)) },
    })
}

/// A finished job (tally deletes synchronously, so a job is `COMPLETE` once it exists).
pub fn job(base: &str, guid: Guid, operation: &str, at: Timestamp) -> Value {
    json!({
        "guid": guid.to_string(),
        "created_at": time(at),
        "updated_at": time(at),
        "operation": operation,
        "state": "COMPLETE",
        "errors": [],
        "warnings": [],
        "links": { "self": link(format!("{base}/v3/jobs/{guid}")) },
    })
}

/// The app's latest package.
pub fn package(base: &str, app: &App) -> Option<Value> {
    let p = app.package.as_ref()?;
    let g = p.guid;
    let mut links = Map::new();
    links.insert("self".into(), link(format!("{base}/v3/packages/{g}")));
    let (kind, data) = if app.is_docker() {
        let data = json!({ "image": app.docker_image, "username": null, "password": null });
        ("docker", data)
    } else {
        links.insert(
            "upload".into(),
            post(format!("{base}/v3/packages/{g}/upload")),
        );
        let sha = (!p.sha256.is_empty()).then(|| p.sha256.clone());
        let data = json!({ "checksum": { "type": "sha256", "value": sha }, "error": null });
        ("bits", data)
    };
    links.insert("app".into(), link(format!("{base}/v3/apps/{}", app.guid)));
    Some(json!({
        "guid": g.to_string(),
        "type": kind,
        "data": data,
        "state": p.state.as_str(),
        "created_at": time(p.created_at),
        "updated_at": time(app.package_updated_at.unwrap_or(p.created_at)),
        "relationships": { "app": { "data": { "guid": app.guid.to_string() } } },
        "metadata": metadata(),
        "links": links,
    }))
}

/// The app's latest build. `created_by` is empty: tally's builds do not keep who made them
/// (their `audit.app.build.create` event does).
pub fn build(base: &str, app: &App) -> Option<Value> {
    let b = app.build.as_ref()?;
    let g = b.guid;
    let droplet = app.latest_droplet.as_ref().filter(|d| {
        b.state == tally_domain::model::BuildState::Staged && d.package_guid == b.package_guid
    });
    let mut links = Map::new();
    links.insert("self".into(), link(format!("{base}/v3/builds/{g}")));
    links.insert("app".into(), link(format!("{base}/v3/apps/{}", app.guid)));
    if let Some(d) = droplet {
        links.insert(
            "droplet".into(),
            link(format!("{base}/v3/droplets/{}", d.guid)),
        );
    }
    Some(json!({
        "guid": g.to_string(),
        "created_at": time(b.created_at),
        "updated_at": time(app.updated_at.max(b.created_at)),
        "state": b.state.as_str(),
        "staging_memory_in_mb": tally_domain::model::STAGING_MEMORY_MB,
        "staging_disk_in_mb": 1024,
        "staging_log_rate_limit_bytes_per_second": -1,
        "error": b.error,
        "lifecycle": lifecycle(app),
        "package": { "guid": b.package_guid.to_string() },
        "droplet": droplet.map(|d| json!({ "guid": d.guid.to_string() })),
        "created_by": {},
        "relationships": { "app": { "data": { "guid": app.guid.to_string() } } },
        "metadata": metadata(),
        "links": links,
    }))
}

/// `relationships/current_droplet`.
pub fn current_droplet_relationship(base: &str, app: &App) -> Value {
    let at = format!("{base}/v3/apps/{}", app.guid);
    json!({
        "data": app.current_droplet_guid.map(|d| json!({ "guid": d.to_string() })),
        "links": {
            "self": link(format!("{at}/relationships/current_droplet")),
            "related": link(format!("{at}/droplets/current")),
        },
    })
}

/// A v3 task; `show_command` is false in `GET /v3/tasks` and for callers who may not read the
/// app's secrets, and the `command` key is then left out, as CC does.
pub fn task(base: &str, task: &tally_domain::model::Task, app: &App, show_command: bool) -> Value {
    let g = task.guid;
    let mut links = Map::new();
    links.insert("self".into(), link(format!("{base}/v3/tasks/{g}")));
    links.insert(
        "app".into(),
        link(format!("{base}/v3/apps/{}", task.app_guid)),
    );
    links.insert(
        "cancel".into(),
        post(format!("{base}/v3/tasks/{g}/actions/cancel")),
    );
    if app
        .latest_droplet
        .as_ref()
        .is_some_and(|d| d.guid == task.droplet_guid)
    {
        links.insert(
            "droplet".into(),
            link(format!("{base}/v3/droplets/{}", task.droplet_guid)),
        );
    }
    let mut body = json!({
        "guid": g.to_string(),
        "sequence_id": task.sequence_id,
        "name": task.name,
        "user": null,
        "state": task.state.as_str(),
        "memory_in_mb": task.memory_mb,
        "disk_in_mb": task.disk_mb,
        "log_rate_limit_in_bytes_per_second": task.log_rate_limit,
        "result": { "failure_reason": task.failure_reason },
        "droplet_guid": task.droplet_guid.to_string(),
        "relationships": { "app": { "data": { "guid": task.app_guid.to_string() } } },
        "metadata": metadata(),
        "created_at": time(task.created_at),
        "updated_at": time(task.updated_at),
        "links": links,
    });
    if show_command {
        if let Some(o) = body.as_object_mut() {
            o.insert("command".into(), Value::String(task.command.clone()));
        }
    }
    body
}
