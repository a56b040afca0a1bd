//! given/when/then tests for every command and every v2 usage-event rule of reference §2.2.

use chrono::TimeZone;
use proptest::prelude::*;

use crate::audit::Value;
use crate::model::{App, BuildState, DerivedPackageState, ProcessState};
use crate::*;

const ORG: Guid = Guid::from_u128(0xA);
const SPACE: Guid = Guid::from_u128(0xB);
const APP: Guid = Guid::from_u128(0xC);

fn at(second: u32) -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, second)
        .single()
        .unwrap_or_default()
}

/// A table built from commands, plus the inputs the next decision gets.
struct Fixture {
    state: State,
    ids: SequentialIds,
    config: DomainConfig,
    clock: u32,
    log: Vec<Event>,
    /// When the current usage epoch began (a purge), if one did.
    epoch_started_at: Option<crate::Timestamp>,
}

fn given(commands: &[Command]) -> Fixture {
    given_with(DomainConfig::default(), commands)
}

fn given_with(config: DomainConfig, commands: &[Command]) -> Fixture {
    let mut fixture = Fixture {
        state: State::default(),
        ids: SequentialIds::starting_at(1000),
        config,
        clock: 0,
        log: Vec::new(),
        epoch_started_at: None,
    };
    for command in commands {
        if let Err(error) = fixture.when(command) {
            panic!("given command {command:?} was refused: {error}");
        }
    }
    fixture
}

impl Fixture {
    fn when(&mut self, command: &Command) -> Result<Vec<Event>, DomainError> {
        self.clock += 1;
        let actor = Actor::system();
        let mut inputs = Inputs {
            now: at(self.clock),
            ids: &mut self.ids,
            actor: &actor,
            config: &self.config,
            principal: None,
            epoch_started_at: self.epoch_started_at,
        };
        let events = decide(&self.state, command, &mut inputs)?;
        self.state.evolve_all(&events);
        self.log.extend(events.iter().cloned());
        Ok(events)
    }

    /// The command must be refused with `expected`, and change nothing.
    fn refuses(&mut self, command: &Command, expected: DomainError) {
        let before = self.state.clone();
        assert_eq!(self.when(command), Err(expected));
        assert_eq!(self.state, before);
    }

    fn app(&self) -> &model::App {
        self.state.app(APP).unwrap()
    }
}

fn usage(events: &[Event]) -> Vec<&UsageEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::UsageRecorded(u) => Some(u),
            _ => None,
        })
        .collect()
}

fn audit_types(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AuditRecorded(a) => Some(a.event_type.as_str()),
            _ => None,
        })
        .collect()
}

fn states(events: &[Event]) -> Vec<(&'static str, Option<&'static str>)> {
    usage(events)
        .iter()
        .map(|u| (u.state.as_str(), u.previous_state.map(UsageState::as_str)))
        .collect()
}

fn org_and_space() -> Vec<Command> {
    vec![
        Command::CreateOrg {
            guid: ORG,
            name: "acme".into(),
        },
        Command::CreateSpace {
            guid: SPACE,
            org_guid: ORG,
            name: "dev".into(),
        },
    ]
}

fn create_app(attributes: AppAttributes) -> Command {
    Command::CreateApp {
        guid: APP,
        attributes: AppAttributes {
            name: Some("web".into()),
            space_guid: Some(SPACE),
            ..attributes
        },
        audit_request: Value::empty(),
    }
}

fn update(attributes: AppAttributes) -> Command {
    Command::UpdateApp {
        guid: APP,
        attributes,
        audit_request: Value::empty(),
    }
}

fn start() -> Command {
    update(AppAttributes {
        state: Some("STARTED".into()),
        ..Default::default()
    })
}

fn stop() -> Command {
    update(AppAttributes {
        state: Some("STOPPED".into()),
        ..Default::default()
    })
}

fn upload() -> Command {
    Command::UploadPackage {
        app_guid: APP,
        sha256: "ab".repeat(32),
        size_bytes: 10,
    }
}

/// An app with bits, started and staged (immediate staging).
fn running_app() -> Vec<Command> {
    let mut commands = org_and_space();
    commands.extend([create_app(AppAttributes::default()), upload(), start()]);
    commands
}

fn external() -> DomainConfig {
    DomainConfig {
        staging_mode: StagingMode::External,
        ..DomainConfig::default()
    }
}

// ---- orgs and spaces ----

#[test]
fn org_and_space_names_are_unique_where_cc_says() {
    let mut f = given(&org_and_space());
    f.refuses(
        &Command::CreateOrg {
            guid: Guid::from_u128(1),
            name: "acme".into(),
        },
        DomainError::OrgNameTaken("acme".into()),
    );
    f.refuses(
        &Command::CreateSpace {
            guid: Guid::from_u128(2),
            org_guid: ORG,
            name: "dev".into(),
        },
        DomainError::SpaceNameTaken("dev".into()),
    );
    f.refuses(
        &Command::CreateSpace {
            guid: Guid::from_u128(2),
            org_guid: Guid::from_u128(99),
            name: "x".into(),
        },
        DomainError::OrgNotFound(Guid::from_u128(99)),
    );
    f.refuses(
        &Command::CreateOrg {
            guid: Guid::from_u128(1),
            name: String::new(),
        },
        DomainError::InvalidName("organization"),
    );
    // The same space name in another org is fine.
    f.when(&Command::CreateOrg {
        guid: Guid::from_u128(3),
        name: "other".into(),
    })
    .unwrap();
    f.when(&Command::CreateSpace {
        guid: Guid::from_u128(4),
        org_guid: Guid::from_u128(3),
        name: "dev".into(),
    })
    .unwrap();
}

#[test]
fn renames_keep_names_unique_and_free_the_old_name() {
    let mut f = given(&org_and_space());
    f.when(&Command::CreateOrg {
        guid: Guid::from_u128(3),
        name: "other".into(),
    })
    .unwrap();
    f.refuses(
        &Command::RenameOrg {
            guid: ORG,
            name: "other".into(),
        },
        DomainError::OrgNameTaken("other".into()),
    );
    f.when(&Command::RenameOrg {
        guid: ORG,
        name: "acme2".into(),
    })
    .unwrap();
    assert!(f.state.org_named("acme").is_none());
    assert_eq!(f.state.org_named("acme2").unwrap().guid, ORG);
    f.when(&Command::RenameSpace {
        guid: SPACE,
        name: "prod".into(),
    })
    .unwrap();
    assert_eq!(f.state.space_named(ORG, "prod").unwrap().guid, SPACE);
}

#[test]
fn deleting_non_empty_org_or_space_needs_recursive_and_stops_started_apps() {
    let mut f = given(&running_app());
    f.refuses(
        &Command::DeleteOrg {
            guid: ORG,
            recursive: false,
        },
        DomainError::AssociationNotEmpty {
            association: "spaces",
            resource: "organization",
        },
    );
    f.refuses(
        &Command::DeleteSpace {
            guid: SPACE,
            recursive: false,
        },
        DomainError::AssociationNotEmpty {
            association: "apps",
            resource: "space",
        },
    );
    let events = f
        .when(&Command::DeleteOrg {
            guid: ORG,
            recursive: true,
        })
        .unwrap();
    assert_eq!(states(&events), vec![("STOPPED", Some("STARTED"))]);
    assert!(
        f.state.app(APP).is_none() && f.state.space(SPACE).is_none() && f.state.org(ORG).is_none()
    );
}

// ---- app creation and validation (reference §5.2, §5.4) ----

#[test]
fn create_applies_cc_defaults_and_emits_no_usage_event() {
    let mut f = given(&org_and_space());
    let events = f.when(&create_app(AppAttributes::default())).unwrap();
    assert!(usage(&events).is_empty());
    assert_eq!(audit_types(&events), vec!["audit.app.create"]);
    let app = f.app();
    assert_eq!(
        (app.memory_mb, app.instances, app.disk_quota_mb),
        (1024, 1, 1024)
    );
    assert_eq!(app.state, ProcessState::Stopped);
    assert_eq!(app.log_rate_limit, 1_048_576);
    assert_eq!(app.health_check_type, model::HealthCheckType::Port);
    assert_eq!(app.package_state(), DerivedPackageState::Pending);
    assert!(app.diego && app.enable_ssh && !app.production);
}

#[test]
fn create_validates_every_attribute_with_ccs_errors() {
    let mut f = given(&org_and_space());
    let cases: Vec<(AppAttributes, DomainError)> = vec![
        (AppAttributes { memory: Some(0), ..Default::default() }, DomainError::AppMemoryInvalid),
        (
            AppAttributes { instances: Some(-1), ..Default::default() },
            DomainError::AppInvalid("Number of instances less than 0".into()),
        ),
        (
            AppAttributes { disk_quota: Some(4096), ..Default::default() },
            DomainError::AppInvalid(
                "disk_quota too much disk requested (requested 4096 MB - must be less than 2048 MB)".into(),
            ),
        ),
        (
            AppAttributes { state: Some("RUNNING".into()), ..Default::default() },
            DomainError::AppInvalid("Invalid app state provided".into()),
        ),
        (
            AppAttributes { state: Some("STARTED".into()), ..Default::default() },
            DomainError::AppPackageInvalid("bits have not been uploaded".into()),
        ),
        (
            AppAttributes {
                docker_credentials: Some(model::DockerCredentials { username: Some("u".into()), password: None }),
                ..Default::default()
            },
            DomainError::DockerImageMissing,
        ),
        (
            AppAttributes { ports: Some(vec![80]), ..Default::default() },
            DomainError::AppInvalid("ports Ports must be in the 1024-65535 range.".into()),
        ),
        (
            AppAttributes { health_check_timeout: Some(181), ..Default::default() },
            DomainError::AppInvalid("health_check_timeout Maximum exceeded: max 180s".into()),
        ),
        (
            AppAttributes { name: Some("bad\nname".into()), ..Default::default() },
            DomainError::AppInvalid("name format".into()),
        ),
    ];
    for (attributes, expected) in cases {
        let name = attributes.name.clone().unwrap_or_else(|| "web".into());
        let command = Command::CreateApp {
            guid: APP,
            attributes: AppAttributes {
                name: Some(name),
                space_guid: Some(SPACE),
                ..attributes
            },
            audit_request: Value::empty(),
        };
        f.refuses(&command, expected);
    }
    f.refuses(
        &Command::CreateApp {
            guid: APP,
            attributes: AppAttributes::default(),
            audit_request: Value::empty(),
        },
        DomainError::MissingField("name"),
    );
    f.refuses(
        &Command::CreateApp {
            guid: APP,
            attributes: AppAttributes {
                name: Some("x".into()),
                space_guid: Some(Guid::from_u128(77)),
                ..Default::default()
            },
            audit_request: Value::empty(),
        },
        DomainError::SpaceNotFound(Guid::from_u128(77)),
    );
}

#[test]
fn every_string_and_integer_has_a_limit_and_the_limit_itself_is_accepted() {
    let mut f = given(&org_and_space());
    let long = |n: usize| "x".repeat(n);
    let too_long = |field: &str, max: usize| {
        DomainError::AppInvalid(format!("{field} is too long (maximum is {max} characters)"))
    };
    let cases: Vec<(AppAttributes, DomainError)> = vec![
        (AppAttributes { name: Some(long(256)), ..Default::default() }, too_long("name", 255)),
        (AppAttributes { command: Some(long(4097)), ..Default::default() }, too_long("command", 4096)),
        (AppAttributes { buildpack: Some(long(4097)), ..Default::default() }, too_long("buildpack", 4096)),
        (
            AppAttributes { buildpack: Some("https://a.example/\r\nX: y".into()), ..Default::default() },
            DomainError::AppInvalid("buildpack must not contain control characters".into()),
        ),
        (AppAttributes { debug: Some(long(256)), ..Default::default() }, too_long("debug", 255)),
        (
            AppAttributes { health_check_http_endpoint: Some(format!("/{}", long(255))), ..Default::default() },
            too_long("health_check_http_endpoint", 255),
        ),
        (
            AppAttributes { docker_image: Some(long(4097)), ..Default::default() },
            too_long("docker_image", 4096),
        ),
        (
            AppAttributes {
                docker_image: Some("img".into()),
                docker_credentials: Some(model::DockerCredentials { username: Some("u".into()), password: Some(long(5001)) }),
                ..Default::default()
            },
            DomainError::AppInvalid("docker_password can be up to 5,000 characters".into()),
        ),
        (
            AppAttributes { environment_json: Some(format!("{{\"A\":\"{}\"}}", long(65_536))), ..Default::default() },
            DomainError::AppInvalid("environment_json is too large (maximum is 65536 bytes as JSON)".into()),
        ),
        (
            AppAttributes { instances: Some(limits::MAX_INSTANCES + 1), ..Default::default() },
            DomainError::AppInvalid("instances must be less than or equal to 2147483647".into()),
        ),
        (
            AppAttributes { memory: Some(1_048_577), ..Default::default() },
            DomainError::AppInvalid(
                "memory too much memory requested (requested 1048577 MB - must be less than 1048576 MB)".into(),
            ),
        ),
        (
            AppAttributes { memory: Some(i64::MAX), ..Default::default() },
            DomainError::AppInvalid(format!(
                "memory too much memory requested (requested {} MB - must be less than 1048576 MB)",
                i64::MAX
            )),
        ),
        (
            AppAttributes { disk_quota: Some(-5), ..Default::default() },
            DomainError::AppInvalid("disk_quota too little disk requested (must be greater than zero)".into()),
        ),
        (
            AppAttributes { health_check_timeout: Some(-1), ..Default::default() },
            DomainError::AppInvalid("health_check_timeout less_than_one".into()),
        ),
    ];
    for (attributes, expected) in cases {
        let name = attributes.name.clone().unwrap_or_else(|| "web".into());
        let attributes = AppAttributes {
            name: Some(name),
            space_guid: Some(SPACE),
            ..attributes
        };
        f.refuses(
            &Command::CreateApp {
                guid: APP,
                attributes: attributes.clone(),
                audit_request: Value::empty(),
            },
            expected,
        );
    }
    // At the limits, everything is accepted, on create and on update.
    f.when(&create_app(AppAttributes {
        name: Some("n".repeat(255)),
        command: Some(long(4096)),
        buildpack: Some(long(4096)),
        debug: Some(long(255)),
        health_check_http_endpoint: Some(format!("/{}", long(254))),
        instances: Some(limits::MAX_INSTANCES),
        memory: Some(1_048_576),
        environment_json: Some(format!("{{\"A\":\"{}\"}}", long(65_536 - 8))),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(f.app().instances, limits::MAX_INSTANCES);
    f.refuses(
        &update(AppAttributes {
            name: Some("😀".repeat(256)),
            ..Default::default()
        }),
        too_long("name", 255),
    );
    f.when(&update(AppAttributes {
        name: Some("😀".repeat(255)),
        ..Default::default()
    }))
    .unwrap();
}

#[test]
fn org_and_space_names_are_at_most_255_characters() {
    let mut f = given(&org_and_space());
    f.refuses(
        &Command::CreateOrg {
            guid: Guid::from_u128(0x70),
            name: "o".repeat(256),
        },
        DomainError::NameTooLong("organization"),
    );
    f.refuses(
        &Command::RenameOrg {
            guid: ORG,
            name: "o".repeat(256),
        },
        DomainError::NameTooLong("organization"),
    );
    f.refuses(
        &Command::CreateSpace {
            guid: Guid::from_u128(0x71),
            org_guid: ORG,
            name: "s".repeat(256),
        },
        DomainError::NameTooLong("space"),
    );
    f.refuses(
        &Command::RenameSpace {
            guid: SPACE,
            name: "s".repeat(256),
        },
        DomainError::NameTooLong("space"),
    );
    f.when(&Command::RenameSpace {
        guid: SPACE,
        name: "s".repeat(255),
    })
    .unwrap();
    assert_eq!(
        DomainError::NameTooLong("space").to_string(),
        "The app space info is invalid: name is too long (maximum is 255 characters)"
    );
}

#[test]
fn app_names_are_unique_per_space() {
    let mut f = given(&org_and_space());
    f.when(&create_app(AppAttributes::default())).unwrap();
    f.refuses(
        &Command::CreateApp {
            guid: Guid::from_u128(5),
            attributes: AppAttributes {
                name: Some("web".into()),
                space_guid: Some(SPACE),
                ..Default::default()
            },
            audit_request: Value::empty(),
        },
        DomainError::AppNameTaken("web".into()),
    );
}

#[test]
fn lifecycle_type_cannot_change() {
    let mut f = given(&org_and_space());
    f.when(&create_app(AppAttributes::default())).unwrap();
    f.refuses(
        &update(AppAttributes {
            docker_image: Some("nginx".into()),
            ..Default::default()
        }),
        DomainError::AppInvalid("Lifecycle type cannot be changed".into()),
    );
}

// ---- usage-event rules (reference §2.1, §2.2) ----

#[test]
fn start_of_unstaged_app_writes_started_then_staging_events_in_order() {
    let mut f = given(
        &[
            org_and_space(),
            vec![create_app(AppAttributes::default()), upload()],
        ]
        .concat(),
    );
    let events = f.when(&start()).unwrap();
    assert_eq!(
        states(&events),
        vec![
            ("STARTED", Some("STOPPED")),
            ("STAGING_STARTED", Some("STAGING")),
            ("STAGING_STOPPED", Some("STAGING")),
            ("BUILDPACK_SET", Some("STARTED")),
        ]
    );
    let u = usage(&events);
    assert_eq!(u[0].package_state.as_deref(), Some("PENDING"));
    assert_eq!(u[0].previous_package_state.as_deref(), Some("UNKNOWN"));
    assert_eq!(u[0].app_guid, APP.to_string());
    assert_eq!(u[0].process_type.as_deref(), Some("web"));
    // Staging events: empty process columns, constant 1024 MB, raw package state.
    assert_eq!((u[1].app_guid.as_str(), u[1].app_name.as_str()), ("", ""));
    assert_eq!(u[1].memory_in_mb_per_instance, 1024);
    assert_eq!(u[1].package_state.as_deref(), Some("READY"));
    assert_eq!(u[1].process_type, None);
    assert_eq!(u[1].buildpack_name.as_deref(), None);
    assert_eq!(u[2].buildpack_name.as_deref(), Some("binary_buildpack"));
    assert_eq!(u[3].package_state.as_deref(), Some("STAGED"));
    assert_eq!(u[3].buildpack_name.as_deref(), Some("binary_buildpack"));
    assert_eq!(f.app().package_state(), DerivedPackageState::Staged);
    assert_eq!(
        audit_types(&events),
        vec![
            "audit.app.update",
            "audit.app.build.create",
            "audit.app.build.staged"
        ]
    );
}

#[test]
fn stop_then_start_of_a_staged_app() {
    let mut f = given(&running_app());
    assert_eq!(
        states(&f.when(&stop()).unwrap()),
        vec![("STOPPED", Some("STARTED"))]
    );
    let events = f.when(&start()).unwrap();
    assert_eq!(
        states(&events),
        vec![("STARTED", Some("STOPPED"))],
        "staged app needs no new build"
    );
    // Stopping a stopped app or starting a started one writes nothing.
    assert!(usage(&f.when(&start()).unwrap()).is_empty());
}

#[test]
fn scale_while_started_writes_started_with_old_and_new_values() {
    let mut f = given(&running_app());
    let events = f
        .when(&update(AppAttributes {
            instances: Some(3),
            memory: Some(512),
            ..Default::default()
        }))
        .unwrap();
    let u = usage(&events);
    assert_eq!(states(&events), vec![("STARTED", Some("STARTED"))]);
    assert_eq!(
        (u[0].instance_count, u[0].previous_instance_count),
        (3, Some(1))
    );
    assert_eq!(
        (
            u[0].memory_in_mb_per_instance,
            u[0].previous_memory_in_mb_per_instance
        ),
        (512, Some(1024))
    );
}

#[test]
fn scale_while_stopped_writes_nothing_and_the_next_start_carries_new_values() {
    let mut f = given(&running_app());
    f.when(&stop()).unwrap();
    assert!(usage(
        &f.when(&update(AppAttributes {
            instances: Some(4),
            ..Default::default()
        }))
        .unwrap()
    )
    .is_empty());
    let events = f.when(&start()).unwrap();
    let u = usage(&events);
    assert_eq!(
        (u[0].instance_count, u[0].previous_instance_count),
        (4, Some(4))
    );
}

#[test]
fn disk_name_env_command_and_health_check_changes_write_nothing() {
    let mut f = given(&running_app());
    for attributes in [
        AppAttributes {
            disk_quota: Some(2048),
            ..Default::default()
        },
        AppAttributes {
            name: Some("renamed".into()),
            ..Default::default()
        },
        AppAttributes {
            environment_json: Some("{\"A\":\"1\"}".into()),
            ..Default::default()
        },
        AppAttributes {
            command: Some("./run".into()),
            ..Default::default()
        },
        AppAttributes {
            health_check_type: Some("process".into()),
            ..Default::default()
        },
        AppAttributes {
            log_rate_limit: Some(5),
            ..Default::default()
        },
    ] {
        let events = f.when(&update(attributes)).unwrap();
        assert!(usage(&events).is_empty());
        assert_eq!(audit_types(&events), vec!["audit.app.update"]);
    }
    assert_eq!(f.app().name, "renamed");
    assert_eq!(
        f.app().log_rate_limit,
        1_048_576,
        "CC ignores log_rate_limit on v2 input"
    );
}

#[test]
fn production_change_on_a_started_app_is_a_footprint_change() {
    let mut f = given(&running_app());
    let events = f
        .when(&update(AppAttributes {
            production: Some(true),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(states(&events), vec![("STARTED", Some("STARTED"))]);
}

#[test]
fn state_and_instances_in_one_update_write_one_event() {
    let mut f = given(&running_app());
    f.when(&stop()).unwrap();
    let events = f
        .when(&update(AppAttributes {
            state: Some("STARTED".into()),
            instances: Some(2),
            ..Default::default()
        }))
        .unwrap();
    let u = usage(&events);
    assert_eq!(states(&events), vec![("STARTED", Some("STOPPED"))]);
    assert_eq!(
        (u[0].instance_count, u[0].previous_instance_count),
        (2, Some(1))
    );
}

#[test]
fn delete_writes_stopped_only_for_a_started_app() {
    let mut f = given(&running_app());
    let events = f
        .when(&Command::DeleteApp {
            guid: APP,
            recursive: false,
        })
        .unwrap();
    assert_eq!(states(&events), vec![("STOPPED", Some("STARTED"))]);
    // CC's `AppDelete`: the process's delete event first, then the request's (v2 as v3).
    assert_eq!(
        audit_types(&events),
        vec!["audit.app.process.delete", "audit.app.delete-request"]
    );
    let mut f = given(&[org_and_space(), vec![create_app(AppAttributes::default())]].concat());
    let events = f
        .when(&Command::DeleteApp {
            guid: APP,
            recursive: true,
        })
        .unwrap();
    assert!(usage(&events).is_empty());
    assert!(f.state.app(APP).is_none());
    f.refuses(
        &Command::DeleteApp {
            guid: APP,
            recursive: false,
        },
        DomainError::AppNotFound(APP),
    );
}

#[test]
fn start_without_bits_is_refused() {
    let mut f = given(&[org_and_space(), vec![create_app(AppAttributes::default())]].concat());
    f.refuses(
        &start(),
        DomainError::AppPackageInvalid("bits have not been uploaded".into()),
    );
}

#[test]
fn external_staging_success_and_failure() {
    let mut f = given_with(
        external(),
        &[
            org_and_space(),
            vec![create_app(AppAttributes::default()), upload()],
        ]
        .concat(),
    );
    let events = f.when(&start()).unwrap();
    assert_eq!(
        states(&events),
        vec![
            ("STARTED", Some("STOPPED")),
            ("STAGING_STARTED", Some("STAGING"))
        ]
    );
    let build = f.app().build.clone().unwrap();
    assert_eq!(build.state, BuildState::Staging);
    // A second start while staging starts no second build.
    assert!(usage(&f.when(&start()).unwrap()).is_empty());
    let staged = BuildOutcome::Staged {
        buildpack_guid: None,
        buildpack_name: Some("https://user:pw@git.example.com/bp.git".into()),
        detected_start_command: "./go".into(),
        other_process_types: Vec::new(),
    };
    let events = f
        .when(&Command::CompleteBuild {
            build_guid: build.guid,
            outcome: staged.clone(),
        })
        .unwrap();
    assert_eq!(
        states(&events),
        vec![
            ("STAGING_STOPPED", Some("STAGING")),
            ("BUILDPACK_SET", Some("STARTED"))
        ]
    );
    assert_eq!(
        usage(&events)[0].buildpack_name.as_deref(),
        Some("https://***:***@git.example.com/bp.git")
    );
    f.refuses(
        &Command::CompleteBuild {
            build_guid: build.guid,
            outcome: staged,
        },
        DomainError::BuildNotStaging(build.guid),
    );

    // Failure: a new package, restart, fail.
    f.when(&upload()).unwrap();
    f.when(&stop()).unwrap();
    f.when(&start()).unwrap();
    let build = f.app().build.clone().unwrap();
    let events = f
        .when(&Command::CompleteBuild {
            build_guid: build.guid,
            outcome: BuildOutcome::Failed {
                reason: "no \"go\"".into(),
            },
        })
        .unwrap();
    assert_eq!(
        states(&events),
        vec![
            ("STAGING_STOPPED", Some("STAGING")),
            ("STOPPED", Some("STARTED"))
        ]
    );
    assert_eq!(f.app().state, ProcessState::Stopped);
    assert_eq!(f.app().package_state(), DerivedPackageState::Failed);
    assert_eq!(audit_types(&events), vec!["audit.app.build.failed"]);
    f.refuses(
        &Command::CompleteBuild {
            build_guid: Guid::from_u128(4242),
            outcome: BuildOutcome::Failed {
                reason: String::new(),
            },
        },
        DomainError::BuildNotFound(Guid::from_u128(4242)),
    );
}

#[test]
fn restage_of_a_started_app_stops_starts_and_stages() {
    let mut f = given(&running_app());
    let events = f.when(&Command::RestageApp { guid: APP }).unwrap();
    assert_eq!(
        states(&events),
        vec![
            ("STOPPED", Some("STARTED")),
            ("STARTED", Some("STOPPED")),
            ("STAGING_STARTED", Some("STAGING")),
            ("STAGING_STOPPED", Some("STAGING")),
            ("BUILDPACK_SET", Some("STARTED")),
        ]
    );
    assert_eq!(usage(&events)[1].package_state.as_deref(), Some("PENDING"));
    assert_eq!(
        audit_types(&events),
        vec![
            "audit.app.restage",
            "audit.app.build.create",
            "audit.app.build.staged"
        ]
    );
}

#[test]
fn restage_of_a_stopped_app_starts_it() {
    let mut f = given(&running_app());
    f.when(&stop()).unwrap();
    let events = f.when(&Command::RestageApp { guid: APP }).unwrap();
    assert_eq!(states(&events)[0], ("STARTED", Some("STOPPED")));
    assert_eq!(f.app().state, ProcessState::Started);
}

#[test]
fn restage_preconditions_in_ccs_order() {
    let mut f = given(
        &[
            org_and_space(),
            vec![create_app(AppAttributes {
                instances: Some(0),
                ..Default::default()
            })],
        ]
        .concat(),
    );
    f.refuses(
        &Command::RestageApp {
            guid: Guid::from_u128(9),
        },
        DomainError::AppNotFound(Guid::from_u128(9)),
    );
    f.refuses(
        &Command::RestageApp { guid: APP },
        DomainError::StagingError("App must have at least 1 instance to stage.".into()),
    );
    f.when(&update(AppAttributes {
        instances: Some(1),
        ..Default::default()
    }))
    .unwrap();
    f.refuses(&Command::RestageApp { guid: APP }, DomainError::NotStaged);
}

#[test]
fn docker_app_created_started_is_billed_from_creation() {
    let mut f = given(&org_and_space());
    let events = f
        .when(&create_app(AppAttributes {
            docker_image: Some("nginx".into()),
            state: Some("STARTED".into()),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(
        states(&events),
        vec![
            ("STARTED", Some("STOPPED")),
            ("STAGING_STARTED", Some("STAGING")),
            ("STAGING_STOPPED", Some("STAGING")),
            ("BUILDPACK_SET", Some("STARTED")),
        ]
    );
    assert_eq!(
        usage(&events)[2].buildpack_name,
        None,
        "docker builds have no buildpack"
    );
    f.refuses(
        &upload(),
        DomainError::AppPackageInvalid(
            "bits cannot be uploaded for an app with a docker image".into(),
        ),
    );
}

#[test]
fn usage_events_denormalize_space_and_org_at_event_time() {
    let mut f = given(&running_app());
    f.when(&Command::RenameSpace {
        guid: SPACE,
        name: "prod".into(),
    })
    .unwrap();
    let events = f.when(&stop()).unwrap();
    let u = usage(&events)[0];
    assert_eq!(
        (u.space_guid, u.space_name.as_str(), u.org_guid),
        (SPACE, "prod", ORG)
    );
    assert_eq!(
        (u.parent_app_guid, u.parent_app_name.as_deref()),
        (Some(APP), Some("web"))
    );
}

#[test]
fn custom_buildpack_url_is_reported_obfuscated_on_process_events() {
    let mut f = given(&running_app());
    let events = f
        .when(&update(AppAttributes {
            buildpack: Some("https://u:p@example.com/bp".into()),
            instances: Some(2),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(
        usage(&events)[0].buildpack_name.as_deref(),
        Some("https://***:***@example.com/bp")
    );
}

// ---- reseed (reference §4.1) ----

#[test]
fn reseed_writes_one_started_event_per_started_process_shaped_as_cc() {
    let mut f = given(&running_app());
    f.when(&Command::CreateApp {
        guid: Guid::from_u128(0xD),
        attributes: AppAttributes {
            name: Some("stopped".into()),
            space_guid: Some(SPACE),
            ..Default::default()
        },
        audit_request: Value::empty(),
    })
    .unwrap();
    f.when(&update(AppAttributes {
        instances: Some(3),
        ..Default::default()
    }))
    .unwrap();
    let seeded = reseed(&f.state, at(59));
    assert_eq!(seeded.len(), 1);
    let e = &seeded[0];
    assert_eq!(e.guid, APP, "guid = process guid");
    assert_eq!(e.app_guid, APP.to_string());
    assert_eq!(
        (e.state, e.previous_state),
        (UsageState::Started, Some(UsageState::Started))
    );
    assert_eq!((e.instance_count, e.previous_instance_count), (3, Some(3)));
    assert_eq!(e.previous_package_state.as_deref(), Some("UNKNOWN"));
    assert_eq!(e.package_state.as_deref(), Some("STAGED"));
    assert_eq!(
        e.process_type.as_deref(),
        Some("web"),
        "tally sets process_type; CC leaves it NULL"
    );
    assert_eq!(e.created_at, at(59));
    assert_eq!(e.buildpack_name.as_deref(), Some("binary_buildpack"));
}

#[test]
fn obfuscation_only_touches_credentials() {
    assert_eq!(
        model::obfuscate_url_credentials("https://a:b@h/x@y"),
        "https://***:***@h/x@y"
    );
    assert_eq!(
        model::obfuscate_url_credentials("https://h/p"),
        "https://h/p"
    );
    assert_eq!(
        model::obfuscate_url_credentials("ruby_buildpack"),
        "ruby_buildpack"
    );
}

// ---- properties ----

fn arbitrary_command() -> impl Strategy<Value = Command> {
    let app = (0u128..4).prop_map(|n| Guid::from_u128(0x100 + n));
    prop_oneof![
        (app.clone(), 0u8..3).prop_map(|(guid, n)| Command::CreateApp {
            guid,
            attributes: AppAttributes {
                name: Some(format!("app{n}")),
                space_guid: Some(SPACE),
                ..Default::default()
            },
            audit_request: Value::empty(),
        }),
        app.clone().prop_map(|guid| Command::UploadPackage {
            app_guid: guid,
            sha256: String::new(),
            size_bytes: 1
        }),
        (app.clone(), prop::bool::ANY).prop_map(|(guid, started)| Command::UpdateApp {
            guid,
            attributes: AppAttributes {
                state: Some(if started { "STARTED" } else { "STOPPED" }.into()),
                ..Default::default()
            },
            audit_request: Value::empty(),
        }),
        (app.clone(), -1i64..4, 0i64..3).prop_map(|(guid, instances, memory)| Command::UpdateApp {
            guid,
            attributes: AppAttributes {
                instances: Some(instances),
                memory: Some(memory * 256),
                ..Default::default()
            },
            audit_request: Value::empty(),
        }),
        (app.clone(), 0u8..3).prop_map(|(guid, n)| Command::UpdateApp {
            guid,
            attributes: AppAttributes {
                name: Some(format!("app{n}")),
                ..Default::default()
            },
            audit_request: Value::empty(),
        }),
        app.clone().prop_map(|guid| Command::RestageApp { guid }),
        (app, prop::bool::ANY).prop_map(|(guid, recursive)| Command::DeleteApp { guid, recursive }),
    ]
}

proptest! {
    /// Folding the log in any chunking gives the table the writer had.
    #[test]
    fn replay_in_any_chunking_gives_the_same_table(
        commands in prop::collection::vec(arbitrary_command(), 0..40),
        chunk in 1usize..7,
    ) {
        let mut f = given(&org_and_space());
        for command in &commands {
            let _ = f.when(command);
        }
        let mut replayed = State::default();
        for piece in f.log.chunks(chunk) {
            let mut copy = replayed.clone();
            copy.evolve_all(piece);
            replayed = copy;
        }
        prop_assert_eq!(&replayed, &f.state);
    }

    /// The list indexes agree with the table whatever was created, renamed or deleted: every
    /// app once in creation order, and each name's apps.
    #[test]
    fn app_list_indexes_follow_the_table(
        commands in prop::collection::vec(arbitrary_command(), 0..40),
    ) {
        let mut f = given(&org_and_space());
        for command in &commands {
            let _ = f.when(command);
        }
        let mut expected: Vec<&App> = f.state.apps().collect();
        expected.sort_by_key(|a| (a.created_at, a.guid));
        let listed: Vec<&App> = f.state.apps_by_creation().collect();
        prop_assert_eq!(&listed, &expected);
        for (offset, limit) in [(0, 2), (1, 2), (3, 10)] {
            let page: Vec<&App> = expected.iter().skip(offset).take(limit).copied().collect();
            prop_assert_eq!(f.state.apps_page(offset, limit, false), page);
            let newest: Vec<&App> = expected.iter().rev().skip(offset).take(limit).copied().collect();
            prop_assert_eq!(f.state.apps_page(offset, limit, true), newest);
        }
        for n in 0..3 {
            let name = format!("app{n}");
            let mut named: Vec<&App> =
                f.state.apps().filter(|a| a.name.to_lowercase() == name).collect();
            named.sort_by_key(|a| a.guid);
            prop_assert_eq!(f.state.apps_named(&name).collect::<Vec<_>>(), named);
        }
    }

    /// Every usage event obeys reference §2.1: a process event is a state change or a footprint
    /// change of a started process; a STOPPED is never preceded by a STOPPED for the same process.
    #[test]
    fn process_events_alternate_and_stop_after_start(
        commands in prop::collection::vec(arbitrary_command(), 0..60),
    ) {
        let mut f = given(&org_and_space());
        for command in &commands {
            let _ = f.when(command);
        }
        let mut last: std::collections::HashMap<String, UsageState> = Default::default();
        for event in usage(&f.log) {
            if event.app_guid.is_empty() || event.state == UsageState::BuildpackSet {
                continue;
            }
            if event.state == UsageState::Stopped {
                prop_assert_eq!(last.get(&event.app_guid), Some(&UsageState::Started));
            }
            last.insert(event.app_guid.clone(), event.state);
        }
    }
}

proptest! {
    /// An event guid gives back its sequence number; ordinary guids give none.
    #[test]
    fn event_guids_carry_their_sequence_number(seq in 1u64..(1 << 48), random in any::<u128>()) {
        let guid = event_guid(seq, Guid::from_u128(random));
        prop_assert_eq!(event_guid_seq(guid), Some(seq));
        let text = guid.to_string();
        prop_assert_eq!(&text[14..15], "8", "a version-8 UUID");
        prop_assert_eq!(text.parse::<Guid>().ok(), Some(guid));
        let mut buffer = [0; 36];
        prop_assert_eq!(guid.encode(&mut buffer), text.as_str(), "encode writes what Display does");
    }
}

#[test]
fn random_v4_guids_are_not_event_guids() {
    assert_eq!(
        event_guid_seq("0f5c3a38-7d6d-4a8e-9a55-4b6f0a1c2d11".parse().unwrap()),
        None
    );
    assert_eq!(event_guid_seq(APP), None);
}

fn grant(role: RoleKind, resource: Guid, user: &str) -> Command {
    Command::GrantRole(Membership {
        resource,
        role,
        user: user.to_owned(),
    })
}

fn revoke(role: RoleKind, resource: Guid, user: &str, recursive: bool) -> Command {
    Command::RevokeRole {
        membership: Membership {
            resource,
            role,
            user: user.to_owned(),
        },
        recursive,
    }
}

#[test]
fn granting_a_role_records_it_with_an_audit_event() {
    let mut f = given(&org_and_space());
    let events = f.when(&grant(RoleKind::OrgUser, ORG, "alice")).unwrap();
    assert!(f.state.has_role("alice", ORG, RoleKind::OrgUser));
    assert_eq!(audit_types(&events), ["audit.user.organization_user_add"]);
    let events = f
        .when(&grant(RoleKind::SpaceDeveloper, SPACE, "alice"))
        .unwrap();
    assert_eq!(audit_types(&events), ["audit.user.space_developer_add"]);
    let Some(Event::AuditRecorded(audit)) = events.last() else {
        panic!("no audit event: {events:?}");
    };
    assert_eq!(audit.actee, "alice");
    assert_eq!(audit.actee_type, "user");
    assert_eq!(audit.space_guid, Some(SPACE));
    assert_eq!(audit.organization_guid, Some(ORG));
    assert_eq!(audit.metadata, Value::request(Value::empty()));
    assert_eq!(
        f.state.roles_of("alice").collect::<Vec<_>>(),
        [(ORG, RoleKind::OrgUser), (SPACE, RoleKind::SpaceDeveloper)]
    );
    assert_eq!(
        f.state.members_of(SPACE).collect::<Vec<_>>(),
        [(RoleKind::SpaceDeveloper, "alice")]
    );
    // Again: nothing changes, nothing is written.
    assert_eq!(
        f.when(&grant(RoleKind::SpaceDeveloper, SPACE, "alice")),
        Ok(vec![])
    );
}

#[test]
fn role_grants_are_validated() {
    let mut f = given(&org_and_space());
    let nowhere = Guid::from_u128(0xFFFF);
    f.refuses(
        &grant(RoleKind::SpaceDeveloper, nowhere, "alice"),
        DomainError::SpaceNotFound(nowhere),
    );
    f.refuses(
        &grant(RoleKind::OrgManager, nowhere, "alice"),
        DomainError::OrgNotFound(nowhere),
    );
    // A space role for a space guid given as an org, and the other way round.
    f.refuses(
        &grant(RoleKind::OrgAuditor, SPACE, "alice"),
        DomainError::OrgNotFound(SPACE),
    );
    // Space roles need org membership first (CC InvalidRelation).
    assert!(matches!(
        f.when(&grant(RoleKind::SpaceAuditor, SPACE, "alice")),
        Err(DomainError::InvalidRelation(_))
    ));
    for bad in ["", "a b", "tab\there", &"x".repeat(256)] {
        let before = f.state.clone();
        assert!(
            matches!(
                f.when(&grant(RoleKind::OrgUser, ORG, bad)),
                Err(DomainError::InvalidRelation(_))
            ),
            "{bad:?}"
        );
        assert_eq!(f.state, before);
    }
}

#[test]
fn removing_an_org_user_with_space_roles_needs_recursive() {
    let mut f = given(&org_and_space());
    f.when(&grant(RoleKind::OrgUser, ORG, "bob")).unwrap();
    f.when(&grant(RoleKind::OrgManager, ORG, "bob")).unwrap();
    f.when(&grant(RoleKind::SpaceManager, SPACE, "bob"))
        .unwrap();
    f.when(&grant(RoleKind::SpaceAuditor, SPACE, "bob"))
        .unwrap();
    f.refuses(
        &revoke(RoleKind::OrgUser, ORG, "bob", false),
        DomainError::AssociationNotEmpty {
            association: "user",
            resource: "spaces in the org",
        },
    );
    let events = f
        .when(&revoke(RoleKind::OrgUser, ORG, "bob", true))
        .unwrap();
    assert_eq!(
        audit_types(&events),
        [
            "audit.user.space_manager_remove",
            "audit.user.space_auditor_remove",
            "audit.user.organization_user_remove"
        ]
    );
    // The org manager role is not a space role: it stays.
    assert_eq!(
        f.state.roles_of("bob").collect::<Vec<_>>(),
        [(ORG, RoleKind::OrgManager)]
    );
    // Revoking what is not held changes nothing.
    assert_eq!(
        f.when(&revoke(RoleKind::OrgUser, ORG, "bob", false)),
        Ok(vec![])
    );
    let nowhere = Guid::from_u128(0xFFFF);
    f.refuses(
        &revoke(RoleKind::SpaceDeveloper, nowhere, "bob", false),
        DomainError::SpaceNotFound(nowhere),
    );
}

#[test]
fn deleting_a_space_or_org_drops_its_members() {
    let mut f = given(&org_and_space());
    f.when(&grant(RoleKind::OrgUser, ORG, "carol")).unwrap();
    f.when(&grant(RoleKind::SpaceDeveloper, SPACE, "carol"))
        .unwrap();
    f.when(&Command::DeleteSpace {
        guid: SPACE,
        recursive: false,
    })
    .unwrap();
    assert_eq!(
        f.state.roles_of("carol").collect::<Vec<_>>(),
        [(ORG, RoleKind::OrgUser)]
    );
    f.when(&Command::DeleteOrg {
        guid: ORG,
        recursive: false,
    })
    .unwrap();
    assert_eq!(f.state.roles_of("carol").count(), 0);
    assert_eq!(f.state.membership_count(), 0);
}

#[test]
fn only_the_canonical_guid_spelling_names_a_resource() {
    let canonical = "0190a4b2-7c1e-4d3f-9a8b-5e6f7a8b9c0d";
    let guid: Guid = canonical.parse().unwrap();
    assert_eq!(guid.to_string(), canonical);
    for other in [
        "{0190a4b2-7c1e-4d3f-9a8b-5e6f7a8b9c0d}",
        "0190a4b27c1e4d3f9a8b5e6f7a8b9c0d",
        "0190A4B2-7C1E-4D3F-9A8B-5E6F7A8B9C0D",
        "urn:uuid:0190a4b2-7c1e-4d3f-9a8b-5e6f7a8b9c0d",
        "0190a4b2-7c1e-4d3f-9a8b-5e6f7a8b9c0",
        "0190a4b2-7c1e-4d3f-9a8b_5e6f7a8b9c0d",
        "",
    ] {
        assert!(other.parse::<Guid>().is_err(), "{other} parsed");
    }
}

#[test]
fn names_are_unique_without_regard_to_case_and_keep_their_case() {
    let mut f = given(&org_and_space());
    f.refuses(
        &Command::CreateOrg {
            guid: Guid::from_u128(0x80),
            name: "ACME".into(),
        },
        DomainError::OrgNameTaken("ACME".into()),
    );
    f.refuses(
        &Command::CreateSpace {
            guid: Guid::from_u128(0x81),
            org_guid: ORG,
            name: "Dev".into(),
        },
        DomainError::SpaceNameTaken("Dev".into()),
    );
    f.when(&create_app(AppAttributes {
        name: Some("Web".into()),
        ..Default::default()
    }))
    .unwrap();
    let twin = Command::CreateApp {
        guid: Guid::from_u128(0x82),
        attributes: AppAttributes {
            name: Some("wEB".into()),
            space_guid: Some(SPACE),
            ..Default::default()
        },
        audit_request: Value::empty(),
    };
    f.refuses(&twin, DomainError::AppNameTaken("wEB".into()));
    // A change of case only is a rename to the same name: allowed, and kept as written.
    f.when(&update(AppAttributes {
        name: Some("WEB".into()),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(f.app().name, "WEB");
    assert_eq!(f.state.app_named(SPACE, "web").map(|a| a.guid), Some(APP));
    assert_eq!(f.state.apps_named("Web").count(), 1);
    f.when(&Command::RenameOrg {
        guid: ORG,
        name: "Acme".into(),
    })
    .unwrap();
    assert_eq!(
        f.state.org_named("ACME").map(|o| o.name.as_str()),
        Some("Acme")
    );
    // Deleting frees the name in every case.
    f.when(&Command::DeleteApp {
        guid: APP,
        recursive: false,
    })
    .unwrap();
    f.when(&Command::CreateApp {
        guid: Guid::from_u128(0x82),
        attributes: AppAttributes {
            name: Some("web".into()),
            space_guid: Some(SPACE),
            ..Default::default()
        },
        audit_request: Value::empty(),
    })
    .unwrap();
}

mod processes;
mod v3;
