//! v2 resources: `{"metadata": {...}, "entity": {...}}` for the objects served so far.

use serde_json::{json, Value};
use tally_domain::model::{Org, Space};
use tally_domain::Timestamp;

/// v2 timestamps: ISO 8601, seconds, `Z`.
pub fn time(t: Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn metadata(
    kind: &str,
    guid: impl std::fmt::Display,
    created: Timestamp,
    updated: Timestamp,
) -> Value {
    json!({
        "guid": guid.to_string(),
        "url": format!("/v2/{kind}/{guid}"),
        "created_at": time(created),
        "updated_at": time(updated),
    })
}

/// An org.
pub fn org(org: &Org) -> Value {
    let url = format!("/v2/organizations/{}", org.guid);
    json!({
        "metadata": metadata("organizations", org.guid, org.created_at, org.updated_at),
        "entity": {
            "name": org.name,
            "billing_enabled": false,
            "status": "active",
            "spaces_url": format!("{url}/spaces"),
            "users_url": format!("{url}/users"),
            "managers_url": format!("{url}/managers"),
            "billing_managers_url": format!("{url}/billing_managers"),
            "auditors_url": format!("{url}/auditors"),
        }
    })
}

/// A space.
pub fn space(space: &Space) -> Value {
    let url = format!("/v2/spaces/{}", space.guid);
    json!({
        "metadata": metadata("spaces", space.guid, space.created_at, space.updated_at),
        "entity": {
            "name": space.name,
            "organization_guid": space.org_guid.to_string(),
            "allow_ssh": true,
            "organization_url": format!("/v2/organizations/{}", space.org_guid),
            "developers_url": format!("{url}/developers"),
            "managers_url": format!("{url}/managers"),
            "auditors_url": format!("{url}/auditors"),
            "apps_url": format!("{url}/apps"),
        }
    })
}

/// A user, as far as tally knows one: its id. CC fills `username` from UAA; tally has no user
/// table, so it is null, as are the timestamps.
pub fn user(id: &str) -> Value {
    json!({
        "metadata": {
            "guid": id,
            "url": format!("/v2/users/{id}"),
            "created_at": null,
            "updated_at": null,
        },
        "entity": {
            "admin": false,
            "active": true,
            "default_space_guid": null,
            "username": null,
        }
    })
}

/// A v2 app (reference §5.1). `environment_json` is redacted unless `show_env` (admin,
/// admin_read_only, or a developer of the app's space); a docker password is always `***`.
pub fn app(app: &tally_domain::model::App, show_env: bool) -> Value {
    use tally_domain::model::BuildState;
    let url = format!("/v2/apps/{}", app.guid);
    let environment = if show_env {
        serde_json::from_str(&app.environment_json).unwrap_or_else(|_| json!({}))
    } else {
        json!({"redacted_message": "[PRIVATE DATA HIDDEN]"})
    };
    let docker_credentials = match &app.docker_credentials {
        Some(c) => json!({
            "username": c.username,
            "password": c.username.as_ref().map(|_| "***").or(c.password.as_ref().map(|_| "***")),
        }),
        None => json!({"username": null, "password": null}),
    };
    let droplet = app.current_droplet();
    let failed = app.build.as_ref().filter(|b| b.state == BuildState::Failed);
    let staging_task_id = app
        .build
        .as_ref()
        .map(|b| b.guid)
        .or(app.latest_droplet.as_ref().map(|d| d.guid))
        .map(|g| g.to_string());
    let ports: Vec<u16> = app.ports.clone().unwrap_or_else(|| vec![8080]);
    json!({
        "metadata": metadata("apps", app.guid, app.created_at, app.updated_at),
        "entity": {
            "name": app.name,
            "production": app.production,
            "space_guid": app.space_guid.to_string(),
            "stack_guid": app.stack_guid.to_string(),
            "buildpack": app.buildpack.as_deref().map(tally_domain::model::obfuscate_url_credentials),
            "detected_buildpack": droplet.and_then(|d| d.buildpack_name.clone()),
            "detected_buildpack_guid": droplet.and_then(|d| d.buildpack_guid).map(|g| g.to_string()),
            "environment_json": environment,
            "memory": app.memory_mb,
            "instances": app.instances,
            "disk_quota": app.disk_quota_mb,
            "log_rate_limit": app.log_rate_limit,
            "state": app.state.as_str(),
            "version": app.version.to_string(),
            "command": app.command,
            "console": app.console,
            "debug": app.debug,
            "staging_task_id": staging_task_id,
            "package_state": app.package_state().as_str(),
            "health_check_type": app.health_check_type.as_str(),
            "health_check_timeout": app.health_check_timeout,
            "health_check_http_endpoint": app.health_check_http_endpoint,
            "staging_failed_reason": failed.map(|_| "StagingError"),
            "staging_failed_description": failed.and_then(|b| b.error.clone()),
            "diego": app.diego,
            "docker_image": app.docker_image,
            "docker_credentials": docker_credentials,
            "package_updated_at": app.package_updated_at.map(time),
            "detected_start_command": droplet.map(|d| d.detected_start_command.clone()).unwrap_or_default(),
            "enable_ssh": app.enable_ssh,
            "ports": ports,
            "space_url": format!("/v2/spaces/{}", app.space_guid),
            "stack_url": format!("/v2/stacks/{}", app.stack_guid),
            "routes_url": format!("{url}/routes"),
            "events_url": format!("{url}/events"),
            "service_bindings_url": format!("{url}/service_bindings"),
            "route_mappings_url": format!("{url}/route_mappings"),
        }
    })
}
