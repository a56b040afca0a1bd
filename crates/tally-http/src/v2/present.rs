//! v2 resources: `{"metadata": {...}, "entity": {...}}` for the objects served so far.

use serde::Serialize;
use serde_json::{json, Value};
use tally_domain::model::{Org, Space};
use tally_domain::{Guid, Timestamp};

use crate::render::{time, Text};

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

/// `{prefix}{guid}{suffix}`, serialized without an intermediate `String`.
struct Url(&'static str, Guid, &'static str);

impl Serialize for Url {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}{}{}", self.0, self.1, self.2))
    }
}

/// A v2 timestamp (see [`time`]).
struct Time(Timestamp);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use chrono::{Datelike, Timelike};
        let t = self.0;
        serializer.collect_str(&format_args!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ))
    }
}

/// A v2 app resource (reference §5.1), serialized straight from the app: keys in CC's order,
/// nulls included.
#[derive(Serialize)]
pub struct AppResource<'a> {
    metadata: Metadata,
    entity: AppEntity<'a>,
}

#[derive(Serialize)]
struct Metadata {
    guid: Text,
    url: Url,
    created_at: Time,
    updated_at: Time,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Environment {
    Shown(Value),
    Hidden { redacted_message: &'static str },
}

#[derive(Serialize)]
struct Credentials {
    username: Option<String>,
    password: Option<&'static str>,
}

#[derive(Serialize)]
struct AppEntity<'a> {
    name: &'a str,
    production: bool,
    space_guid: Text,
    stack_guid: Text,
    buildpack: Option<String>,
    detected_buildpack: Option<&'a str>,
    detected_buildpack_guid: Option<Text>,
    environment_json: Environment,
    memory: i64,
    instances: i64,
    disk_quota: i64,
    log_rate_limit: i64,
    state: &'static str,
    version: Text,
    command: Option<&'a str>,
    console: bool,
    debug: Option<&'a str>,
    staging_task_id: Option<Text>,
    package_state: &'static str,
    health_check_type: &'static str,
    health_check_timeout: Option<i64>,
    health_check_http_endpoint: Option<&'a str>,
    staging_failed_reason: Option<&'static str>,
    staging_failed_description: Option<&'a str>,
    diego: bool,
    docker_image: Option<&'a str>,
    docker_credentials: Credentials,
    package_updated_at: Option<Time>,
    detected_start_command: &'a str,
    enable_ssh: bool,
    ports: &'a [u16],
    space_url: Url,
    stack_url: Url,
    routes_url: Url,
    events_url: Url,
    service_bindings_url: Url,
    route_mappings_url: Url,
}

/// A v2 app (reference §5.1). `environment_json` is redacted unless `show_env` (admin,
/// admin_read_only, or a developer of the app's space); a docker password is always `***`.
pub fn app(app: &tally_domain::model::App, show_env: bool) -> AppResource<'_> {
    use tally_domain::model::BuildState;
    let environment_json = if show_env {
        Environment::Shown(
            serde_json::from_str(&app.environment_json).unwrap_or_else(|_| json!({})),
        )
    } else {
        Environment::Hidden {
            redacted_message: "[PRIVATE DATA HIDDEN]",
        }
    };
    let docker_credentials = match &app.docker_credentials {
        Some(c) => Credentials {
            username: c.username.clone(),
            password: c
                .username
                .as_ref()
                .map(|_| "***")
                .or(c.password.as_ref().map(|_| "***")),
        },
        None => Credentials {
            username: None,
            password: None,
        },
    };
    let droplet = app.current_droplet();
    let failed = app.build.as_ref().filter(|b| b.state == BuildState::Failed);
    let staging_task_id = app
        .build
        .as_ref()
        .map(|b| b.guid)
        .or(app.latest_droplet.as_ref().map(|d| d.guid))
        .map(Text);
    let guid = app.guid;
    AppResource {
        metadata: Metadata {
            guid: Text(guid),
            url: Url("/v2/apps/", guid, ""),
            created_at: Time(app.created_at),
            updated_at: Time(app.updated_at),
        },
        entity: AppEntity {
            name: &app.name,
            production: app.production,
            space_guid: Text(app.space_guid),
            stack_guid: Text(app.stack_guid),
            buildpack: app
                .buildpack
                .as_deref()
                .map(tally_domain::model::obfuscate_url_credentials),
            detected_buildpack: droplet.and_then(|d| d.buildpack_name.as_deref()),
            detected_buildpack_guid: droplet.and_then(|d| d.buildpack_guid).map(Text),
            environment_json,
            memory: app.memory_mb,
            instances: app.instances,
            disk_quota: app.disk_quota_mb,
            log_rate_limit: app.log_rate_limit,
            state: app.state.as_str(),
            version: Text(app.version),
            command: app.command.as_deref(),
            console: app.console,
            debug: app.debug.as_deref(),
            staging_task_id,
            package_state: app.package_state().as_str(),
            health_check_type: app.health_check_type.as_str(),
            health_check_timeout: app.health_check_timeout,
            health_check_http_endpoint: app.health_check_http_endpoint.as_deref(),
            staging_failed_reason: failed.map(|_| "StagingError"),
            staging_failed_description: failed.and_then(|b| b.error.as_deref()),
            diego: app.diego,
            docker_image: app.docker_image.as_deref(),
            docker_credentials,
            package_updated_at: app.package_updated_at.map(Time),
            detected_start_command: droplet.map_or("", |d| d.detected_start_command.as_str()),
            enable_ssh: app.enable_ssh,
            ports: app.ports.as_deref().unwrap_or(&[8080]),
            space_url: Url("/v2/spaces/", app.space_guid, ""),
            stack_url: Url("/v2/stacks/", app.stack_guid, ""),
            routes_url: Url("/v2/apps/", guid, "/routes"),
            events_url: Url("/v2/apps/", guid, "/events"),
            service_bindings_url: Url("/v2/apps/", guid, "/service_bindings"),
            route_mappings_url: Url("/v2/apps/", guid, "/route_mappings"),
        },
    }
}

#[cfg(test)]
mod tests {
    use tally_domain::model::{
        App, Build, BuildState, DockerCredentials, Droplet, HealthCheckType, Package, PackageState,
        ProcessState,
    };
    use tally_domain::{Guid, Timestamp};

    fn at(seconds: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap_or_default()
    }

    /// An app with every optional field set, and one with none.
    fn apps() -> (App, App) {
        let bare = App {
            guid: Guid::from_u128(1),
            name: "bare".to_owned(),
            space_guid: Guid::from_u128(2),
            stack_guid: Guid::from_u128(3),
            state: ProcessState::Stopped,
            memory_mb: 1024,
            instances: 1,
            disk_quota_mb: 1024,
            log_rate_limit: -1,
            buildpack: None,
            command: None,
            health_check_type: HealthCheckType::Port,
            health_check_timeout: None,
            health_check_http_endpoint: None,
            diego: true,
            enable_ssh: true,
            docker_image: None,
            docker_credentials: None,
            environment_json: "{}".to_owned(),
            production: false,
            console: false,
            debug: None,
            ports: None,
            version: Guid::from_u128(4),
            package: None,
            build: None,
            latest_droplet: None,
            current_droplet_guid: None,
            package_updated_at: None,
            created_at: at(0),
            updated_at: at(1),
        };
        let full = App {
            name: "full \"quoted\" ünïcode".to_owned(),
            state: ProcessState::Started,
            buildpack: Some("https://user:secret@example.com/bp.git".to_owned()),
            command: Some("bundle exec rackup".to_owned()),
            health_check_type: HealthCheckType::Http,
            health_check_timeout: Some(60),
            health_check_http_endpoint: Some("/health".to_owned()),
            docker_image: Some("cloudfoundry/diego-docker-app".to_owned()),
            docker_credentials: Some(DockerCredentials {
                username: Some("me".to_owned()),
                password: Some("pw".to_owned()),
            }),
            environment_json: r#"{"B":"2","A":{"nested":[1,2]}}"#.to_owned(),
            production: true,
            console: true,
            debug: Some("suspend".to_owned()),
            ports: Some(vec![8080, 9090]),
            package: Some(Package {
                guid: Guid::from_u128(5),
                state: PackageState::Ready,
                sha256: "ab".repeat(32),
                size_bytes: 42,
                created_at: at(2),
            }),
            build: Some(Build {
                guid: Guid::from_u128(6),
                package_guid: Guid::from_u128(5),
                state: BuildState::Failed,
                error: Some("NoAppDetectedError".to_owned()),
                created_at: at(3),
            }),
            latest_droplet: Some(Droplet {
                guid: Guid::from_u128(7),
                package_guid: Guid::from_u128(5),
                buildpack_guid: Some(Guid::from_u128(8)),
                buildpack_name: Some("ruby_buildpack".to_owned()),
                detected_start_command: "rackup -p $PORT".to_owned(),
                created_at: at(2),
            }),
            current_droplet_guid: Some(Guid::from_u128(7)),
            package_updated_at: Some(at(2)),
            ..bare.clone()
        };
        (bare, full)
    }

    /// The exact bytes (keys in CC's order) of both apps, with and without the environment.
    #[test]
    fn a_v2_app_serializes_to_exactly_these_bytes() {
        let (bare, full) = apps();
        let text = |app: &App, show_env: bool| {
            serde_json::to_string(&super::app(app, show_env)).unwrap_or_default()
        };
        // An environment that is not JSON shows as `{}`.
        let broken = App {
            environment_json: "not json".to_owned(),
            ..bare.clone()
        };
        let cases = [
            (&bare, true),
            (&bare, false),
            (&full, true),
            (&full, false),
            (&broken, true),
        ];
        let actual: Vec<String> = cases.iter().map(|(a, show)| text(a, *show)).collect();
        if std::env::var_os("TALLY_WRITE_GOLDEN").is_some() {
            std::fs::write(GOLDEN_PATH, actual.join("\n") + "\n").unwrap_or_default();
        }
        let golden: Vec<&str> = GOLDEN.lines().collect();
        assert_eq!(golden.len(), actual.len());
        for (expected, actual) in golden.iter().zip(&actual) {
            assert_eq!(*expected, actual);
        }
    }

    const GOLDEN: &str = include_str!("../../fixtures/v2-apps.jsonl");
    const GOLDEN_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/v2-apps.jsonl");
}
