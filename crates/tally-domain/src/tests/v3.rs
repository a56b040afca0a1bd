//! The v3 lifecycle's rules (reference v3 §6): what each action writes, to which stream, and
//! what it refuses without changing anything.

use super::*;
use crate::command::{AppAction, Lifecycle, ProcessUpdate, Scale};

fn create_v3(name: &str) -> Command {
    Command::CreateAppV3 {
        guid: APP,
        name: name.into(),
        space_guid: SPACE,
        environment_json: None,
        lifecycle: Lifecycle::default(),
        audit_request: Value::empty(),
    }
}

fn action(action: AppAction) -> Command {
    Command::AppAction { guid: APP, action }
}

fn scale(scale: Scale) -> Command {
    Command::ScaleProcess {
        guid: APP,
        scale,
        audit_request: Value::empty(),
    }
}

#[test]
fn a_v3_create_is_a_stopped_web_process_with_two_audit_events_and_no_usage() {
    let mut f = given(&org_and_space());
    let events = f.when(&create_v3("a1")).unwrap();
    assert!(usage(&events).is_empty());
    assert_eq!(
        audit_types(&events),
        ["audit.app.process.create", "audit.app.create"]
    );
    let app = f.app();
    assert_eq!((app.state, app.instances), (ProcessState::Stopped, 1));
    assert_eq!(app.memory_mb, DomainConfig::default().default_memory_mb);
    let Some(Event::AuditRecorded(process)) = events.get(1) else {
        panic!("{events:?}");
    };
    assert_eq!(
        process.metadata.get("process_guid"),
        Some(&Value::text(APP.to_string()))
    );
    assert_eq!(
        process.metadata.get("process_type"),
        Some(&Value::text("web"))
    );
}

#[test]
fn names_are_unique_per_space_with_v3s_error_and_lifecycles_do_not_change() {
    let mut f = given(&org_and_space());
    f.when(&create_v3("a1")).unwrap();
    let mut other = create_v3("a1");
    if let Command::CreateAppV3 { guid, .. } = &mut other {
        *guid = Guid::from_u128(0xC2);
    }
    f.refuses(&other, DomainError::Uniqueness("a1".into()));
    f.refuses(
        &create_v3(""),
        DomainError::Unprocessable("Name can't be blank".into()),
    );
    let docker = Command::UpdateAppV3 {
        guid: APP,
        name: None,
        lifecycle: Lifecycle {
            docker: Some(true),
            ..Lifecycle::default()
        },
        audit_request: Value::empty(),
    };
    f.refuses(
        &docker,
        DomainError::Unprocessable(
            "Lifecycle type cannot be changed from buildpack to docker".into(),
        ),
    );
    let two = Command::UpdateAppV3 {
        guid: APP,
        name: Some("a2".into()),
        lifecycle: Lifecycle {
            buildpacks: Some(vec!["a".into(), "b".into()]),
            ..Lifecycle::default()
        },
        audit_request: Value::empty(),
    };
    assert!(matches!(f.when(&two), Err(DomainError::Unprocessable(_))));
    let rename = Command::UpdateAppV3 {
        guid: APP,
        name: Some("a2".into()),
        lifecycle: Lifecycle {
            buildpacks: Some(vec!["ruby_buildpack".into()]),
            ..Lifecycle::default()
        },
        audit_request: Value::empty(),
    };
    let events = f.when(&rename).unwrap();
    assert_eq!(audit_types(&events), ["audit.app.update"]);
    assert!(usage(&events).is_empty());
    assert_eq!(f.app().name, "a2");
    assert_eq!(f.app().buildpack.as_deref(), Some("ruby_buildpack"));
}

#[test]
fn start_needs_a_droplet_and_writes_nothing_without_one() {
    let mut f = given(&org_and_space());
    f.when(&create_v3("a1")).unwrap();
    let refusal = DomainError::Unprocessable("Assign a droplet before starting this app.".into());
    f.refuses(&action(AppAction::Start), refusal.clone());
    f.refuses(&action(AppAction::Restart), refusal);
    let events = f.when(&action(AppAction::Stop)).unwrap();
    assert!(usage(&events).is_empty());
    assert_eq!(audit_types(&events), ["audit.app.stop"]);
}

#[test]
fn start_stop_and_restart_write_usage_only_for_what_changed_and_audit_always() {
    let mut f = given(&running_app());
    let events = f.when(&action(AppAction::Stop)).unwrap();
    assert_eq!(states(&events), [("STOPPED", Some("STARTED"))]);
    assert_eq!(audit_types(&events), ["audit.app.stop"]);
    let events = f.when(&action(AppAction::Stop)).unwrap();
    assert!(usage(&events).is_empty());
    assert_eq!(audit_types(&events), ["audit.app.stop"]);
    let version = f.app().version;
    let events = f.when(&action(AppAction::Start)).unwrap();
    assert_eq!(states(&events), [("STARTED", Some("STOPPED"))]);
    assert_eq!(usage(&events)[0].app_guid, APP.to_string());
    assert_ne!(f.app().version, version, "a start is a new version");
    let events = f.when(&action(AppAction::Start)).unwrap();
    assert!(usage(&events).is_empty());
    assert_eq!(audit_types(&events), ["audit.app.start"]);
    let events = f.when(&action(AppAction::Restart)).unwrap();
    assert_eq!(
        states(&events),
        [("STOPPED", Some("STARTED")), ("STARTED", Some("STOPPED"))]
    );
    assert_eq!(audit_types(&events), ["audit.app.restart"]);
    f.when(&action(AppAction::Stop)).unwrap();
    let events = f.when(&action(AppAction::Restart)).unwrap();
    assert_eq!(states(&events), [("STARTED", Some("STOPPED"))]);
}

#[test]
fn scale_writes_usage_only_for_instances_or_memory_of_a_started_process() {
    let mut f = given(&running_app());
    let events = f
        .when(&scale(Scale {
            instances: Some(3),
            ..Scale::default()
        }))
        .unwrap();
    let rows = usage(&events);
    assert_eq!(states(&events), [("STARTED", Some("STARTED"))]);
    assert_eq!(
        (rows[0].instance_count, rows[0].previous_instance_count),
        (3, Some(1))
    );
    assert_eq!(audit_types(&events), ["audit.app.process.scale"]);
    let events = f
        .when(&scale(Scale {
            disk_mb: Some(512),
            log_rate_limit: Some(-1),
            ..Scale::default()
        }))
        .unwrap();
    assert!(usage(&events).is_empty());
    assert_eq!(audit_types(&events), ["audit.app.process.scale"]);
    assert_eq!((f.app().disk_quota_mb, f.app().log_rate_limit), (512, -1));
    f.refuses(
        &scale(Scale {
            disk_mb: Some(4096),
            ..Scale::default()
        }),
        DomainError::Unprocessable(
            "disk_quota too much disk requested (requested 4096 MB - must be less than 2048 MB)"
                .into(),
        ),
    );
    f.when(&action(AppAction::Stop)).unwrap();
    let events = f
        .when(&scale(Scale {
            instances: Some(5),
            ..Scale::default()
        }))
        .unwrap();
    assert!(usage(&events).is_empty(), "a stopped process bills nothing");
}

#[test]
fn a_v3_delete_of_a_started_app_stops_it_between_its_audit_events() {
    let mut f = given(&running_app());
    let events = f.when(&Command::DeleteAppV3 { guid: APP }).unwrap();
    assert_eq!(states(&events), [("STOPPED", Some("STARTED"))]);
    assert_eq!(
        audit_types(&events),
        ["audit.app.process.delete", "audit.app.delete-request"]
    );
    let order: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Event::AuditRecorded(a) => a.event_type.as_str(),
            Event::UsageRecorded(_) => "usage",
            Event::AppDeleted { .. } => "deleted",
            _ => "other",
        })
        .collect();
    assert_eq!(
        order,
        [
            "audit.app.process.delete",
            "usage",
            "deleted",
            "audit.app.delete-request"
        ]
    );
    assert!(f.state.app(APP).is_none());
    f.refuses(
        &Command::DeleteAppV3 { guid: APP },
        DomainError::ResourceNotFound("App"),
    );
}

#[test]
fn environment_writes_only_onto_the_variables_it_was_merged_from() {
    let mut f = given(&org_and_space());
    f.when(&create_v3("a1")).unwrap();
    let set = |expected: &str, env: &str| Command::SetEnvironment {
        guid: APP,
        expected: expected.into(),
        environment_json: env.into(),
        audit_request: Value::empty(),
    };
    let events = f.when(&set("{}", r#"{"A":"1"}"#)).unwrap();
    assert_eq!(audit_types(&events), ["audit.app.update"]);
    f.refuses(&set("{}", r#"{"B":"2"}"#), DomainError::EnvironmentChanged);
    assert_eq!(f.app().environment_json, r#"{"A":"1"}"#);
}

#[test]
fn process_updates_check_the_health_check_and_write_one_audit_event() {
    let mut f = given(&running_app());
    let update = |u: ProcessUpdate| Command::UpdateProcess {
        guid: APP,
        update: u,
        audit_request: Value::empty(),
    };
    f.refuses(
        &update(ProcessUpdate {
            health_check_endpoint: Some(Some("/health".into())),
            ..ProcessUpdate::default()
        }),
        DomainError::Unprocessable(
            "Health check type must be \"http\" to set a health check HTTP endpoint".into(),
        ),
    );
    let version = f.app().version;
    let events = f
        .when(&update(ProcessUpdate {
            command: Some(Some("./run".into())),
            health_check_type: Some("http".into()),
            health_check_endpoint: Some(Some("/health".into())),
            ..ProcessUpdate::default()
        }))
        .unwrap();
    assert!(usage(&events).is_empty());
    assert_eq!(audit_types(&events), ["audit.app.process.update"]);
    assert_eq!(f.app().command.as_deref(), Some("./run"));
    assert_ne!(
        f.app().version,
        version,
        "a started process's health check is its version"
    );
    f.refuses(
        &Command::UpdateProcess {
            guid: Guid::from_u128(0xFF),
            update: ProcessUpdate::default(),
            audit_request: Value::empty(),
        },
        DomainError::ResourceNotFound("Process"),
    );
}

#[test]
fn a_spaces_apps_are_paged_in_creation_order_and_counted_as_they_come_and_go() {
    let mut f = given(&org_and_space());
    let guids: Vec<Guid> = (1..=3u128).map(|n| Guid::from_u128(0xA000 + n)).collect();
    for (n, guid) in guids.iter().enumerate() {
        let mut create = create_v3(&format!("a{n}"));
        if let Command::CreateAppV3 { guid: g, .. } = &mut create {
            *g = *guid;
        }
        f.when(&create).unwrap();
    }
    let page = |f: &Fixture, skip, take, desc| -> Vec<Guid> {
        f.state
            .apps_in_page(SPACE, skip, take, desc)
            .iter()
            .map(|a| a.guid)
            .collect()
    };
    assert_eq!(f.state.app_count_in(SPACE), 3);
    assert_eq!(page(&f, 1, 5, false), guids[1..]);
    assert_eq!(page(&f, 0, 2, true), [guids[2], guids[1]]);
    assert!(f
        .state
        .apps_in_page(Guid::from_u128(0xBAD), 0, 5, false)
        .is_empty());
    f.when(&Command::DeleteAppV3 { guid: guids[1] }).unwrap();
    assert_eq!(f.state.app_count_in(SPACE), 2);
    assert_eq!(page(&f, 0, 5, false), [guids[0], guids[2]]);
}

#[test]
fn a_v2_delete_stops_running_tasks_first_and_a_finished_task_writes_nothing_more() {
    let mut f = started_docker_app();
    let task = |n: u128| Command::CreateTask {
        guid: Guid::from_u128(0x7A5C + n),
        app_guid: APP,
        spec: crate::TaskSpec {
            command: Some("run".into()),
            ..Default::default()
        },
        audit_request: Value::empty(),
    };
    f.when(&task(1)).unwrap();
    f.when(&task(2)).unwrap();
    let done = Command::CompleteTask {
        guid: Guid::from_u128(0x7A5C + 2),
        failed: false,
        failure_reason: None,
    };
    let events = f.when(&done).unwrap();
    assert_eq!(
        usage(&events).len(),
        1,
        "TASK_STOPPED for the finished task"
    );
    assert!(matches!(
        f.when(&done),
        Err(DomainError::TaskEnded("SUCCEEDED"))
    ));
    let events = f
        .when(&Command::DeleteApp {
            guid: APP,
            recursive: false,
        })
        .unwrap();
    let states: Vec<UsageState> = usage(&events).iter().map(|u| u.state).collect();
    assert_eq!(states, [UsageState::TaskStopped, UsageState::Stopped]);
    assert_eq!(
        audit_types(&events),
        [
            "audit.app.task.cancel",
            "audit.app.process.delete",
            "audit.app.delete-request"
        ]
    );
    assert!(
        f.state.tasks().next().is_none(),
        "the app's tasks went with it"
    );
}

#[test]
fn a_task_started_before_a_purge_stops_without_a_task_stopped() {
    let mut f = started_docker_app();
    let guid = Guid::from_u128(0x7A5C);
    f.when(&Command::CreateTask {
        guid,
        app_guid: APP,
        spec: crate::TaskSpec {
            command: Some("run".into()),
            ..Default::default()
        },
        audit_request: Value::empty(),
    })
    .unwrap();
    // A purge after the task started: the epoch began later than its TASK_STARTED.
    f.epoch_started_at = Some(at(f.clock + 1));
    f.clock += 1;
    let events = f
        .when(&Command::CompleteTask {
            guid,
            failed: true,
            failure_reason: Some("exit 1".into()),
        })
        .unwrap();
    assert!(usage(&events).is_empty(), "{events:?}");
    assert_eq!(
        f.state.task(guid).map(|t| t.state),
        Some(crate::model::TaskState::Failed)
    );
}

/// A started docker app (staged at once, so it has a droplet); tasks run for a minute.
fn started_docker_app() -> Fixture {
    let config = DomainConfig {
        immediate_task_seconds: 60,
        ..DomainConfig::default()
    };
    let mut setup = org_and_space();
    setup.push(Command::CreateApp {
        guid: APP,
        attributes: AppAttributes {
            name: Some("d".into()),
            space_guid: Some(SPACE),
            docker_image: Some("nginx".into()),
            state: Some("STARTED".into()),
            ..AppAttributes::default()
        },
        audit_request: Value::empty(),
    });
    given_with(config, &setup)
}
