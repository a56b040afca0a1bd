//! Processes other than `web` (reference v3 §2.7, §3): where they come from, how they move
//! with their app, and that each bills under its own guid.

use super::*;
use crate::command::{AppAction, Scale};
use crate::model::Process;

/// An app whose external staging is in flight.
fn staging_app() -> Fixture {
    let setup = [
        org_and_space(),
        vec![create_app(AppAttributes::default()), upload(), start()],
    ]
    .concat();
    given_with(external(), &setup)
}

fn staged_with(types: &[(&str, &str)]) -> BuildOutcome {
    BuildOutcome::Staged {
        buildpack_guid: None,
        buildpack_name: Some("ruby_buildpack".into()),
        detected_start_command: "rackup".into(),
        other_process_types: types
            .iter()
            .map(|(k, c)| ((*k).to_owned(), (*c).to_owned()))
            .collect(),
    }
}

fn build_of(f: &Fixture) -> Guid {
    f.app()
        .build
        .clone()
        .map_or(crate::ids::UNNUMBERED, |b| b.guid)
}

fn complete(f: &mut Fixture, outcome: BuildOutcome) -> Result<Vec<Event>, DomainError> {
    let build = build_of(f);
    f.when(&Command::CompleteBuild {
        build_guid: build,
        outcome,
    })
}

fn worker(f: &Fixture) -> Process {
    f.state
        .other_processes_of(APP)
        .find(|p| p.process_type == "worker")
        .cloned()
        .unwrap()
}

fn scale(guid: Guid, instances: i64) -> Command {
    Command::ScaleProcess {
        guid,
        scale: Scale {
            instances: Some(instances),
            ..Scale::default()
        },
        audit_request: Value::empty(),
    }
}

/// `(state, previous, app_guid, process_type, instances)` of each usage event.
fn billed(events: &[Event]) -> Vec<(&'static str, Option<&'static str>, String, String, i64)> {
    usage(events)
        .iter()
        .map(|u| {
            (
                u.state.as_str(),
                u.previous_state.map(UsageState::as_str),
                u.app_guid.clone(),
                u.process_type.clone().unwrap_or_default(),
                u.instance_count,
            )
        })
        .collect()
}

#[test]
fn a_staged_droplets_other_types_become_stopped_processes_with_no_instances() {
    let mut f = staging_app();
    let events = complete(&mut f, staged_with(&[("worker", "bin/work")])).unwrap();
    assert_eq!(
        audit_types(&events),
        ["audit.app.build.staged", "audit.app.process.create"]
    );
    // Nothing of the new worker is billed: it is STOPPED with no instances.
    let web = APP.to_string();
    assert_eq!(
        billed(&events),
        [
            (
                "STAGING_STOPPED",
                Some("STAGING"),
                String::new(),
                String::new(),
                1
            ),
            (
                "BUILDPACK_SET",
                Some("STARTED"),
                web.clone(),
                "web".into(),
                1
            ),
        ]
    );
    let w = worker(&f);
    assert_ne!(w.guid, APP);
    assert_eq!(
        (w.state, w.instances, w.detected_command.as_str()),
        (ProcessState::Stopped, 0, "bin/work")
    );
    assert_eq!(w.health_check_type, model::HealthCheckType::Process);
    let Some(Event::AuditRecorded(created)) = events.iter().find(
        |e| matches!(e, Event::AuditRecorded(a) if a.event_type == "audit.app.process.create"),
    ) else {
        panic!("{events:?}");
    };
    assert_eq!(
        created.metadata.get("process_guid"),
        Some(&Value::text(w.guid.to_string()))
    );
    assert_eq!(created.actee, web);
    let types: Vec<&str> = f
        .state
        .processes_of(APP)
        .iter()
        .map(|p| p.process_type())
        .collect();
    assert_eq!(types, ["web", "worker"]);
}

#[test]
fn other_processes_start_stop_scale_reseed_and_delete_under_their_own_guid() {
    let mut f = staging_app();
    complete(&mut f, staged_with(&[("worker", "bin/work")])).unwrap();
    let w = worker(&f).guid.to_string();
    let web = APP.to_string();
    // Scaling the stopped worker bills nothing; its audit event names it.
    let events = f.when(&scale(worker(&f).guid, 2)).unwrap();
    assert!(usage(&events).is_empty());
    assert_eq!(audit_types(&events), ["audit.app.process.scale"]);
    assert_eq!(worker(&f).instances, 2);
    assert_eq!(f.app().instances, 1);
    // v2's state runs across every process: the worker starts with the app.
    f.when(&stop()).unwrap();
    let events = f.when(&start()).unwrap();
    assert_eq!(
        billed(&events),
        [
            ("STARTED", Some("STOPPED"), web.clone(), "web".into(), 1),
            ("STARTED", Some("STOPPED"), w.clone(), "worker".into(), 2),
        ]
    );
    assert_eq!(worker(&f).state, ProcessState::Started);
    // A started worker's scale is billed as the web process's is.
    let events = f.when(&scale(worker(&f).guid, 3)).unwrap();
    assert_eq!(
        billed(&events),
        [("STARTED", Some("STARTED"), w.clone(), "worker".into(), 3)]
    );
    assert_eq!(usage(&events)[0].previous_instance_count, Some(2));
    // v3 restart: each process stops, then starts.
    let events = f
        .when(&Command::AppAction {
            guid: APP,
            action: AppAction::Restart,
        })
        .unwrap();
    assert_eq!(
        billed(&events),
        [
            ("STOPPED", Some("STARTED"), web.clone(), "web".into(), 1),
            ("STARTED", Some("STOPPED"), web.clone(), "web".into(), 1),
            ("STOPPED", Some("STARTED"), w.clone(), "worker".into(), 3),
            ("STARTED", Some("STOPPED"), w.clone(), "worker".into(), 3),
        ]
    );
    // Purge-and-reseed: one STARTED per started process, each under its own guid.
    let seeded = reseed(&f.state, at(59));
    let seeded: Vec<(String, String, i64)> = seeded
        .iter()
        .map(|u| {
            (
                u.guid.to_string(),
                u.process_type.clone().unwrap_or_default(),
                u.previous_instance_count.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seeded,
        [
            (web.clone(), "web".into(), 1),
            (w.clone(), "worker".into(), 3)
        ]
    );
    // Deleting the app deletes the worker: its audit event, its STOPPED, its row.
    let events = f
        .when(&Command::DeleteApp {
            guid: APP,
            recursive: false,
        })
        .unwrap();
    assert_eq!(
        audit_types(&events),
        [
            "audit.app.process.delete",
            "audit.app.process.delete",
            "audit.app.delete-request"
        ]
    );
    assert_eq!(
        billed(&events),
        [
            ("STOPPED", Some("STARTED"), w.clone(), "worker".into(), 3),
            ("STOPPED", Some("STARTED"), web, "web".into(), 1),
        ]
    );
    let deleted: Vec<Option<&Value>> = events
        .iter()
        .filter_map(|e| match e {
            Event::AuditRecorded(a) if a.event_type == "audit.app.process.delete" => {
                Some(a.metadata.get("process_type"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted,
        [Some(&Value::text("web")), Some(&Value::text("worker"))]
    );
    assert_eq!(f.state.other_processes().count(), 0);
}

#[test]
fn a_later_droplet_adds_missing_types_keeps_the_others_and_updates_their_commands() {
    let mut f = staging_app();
    complete(&mut f, staged_with(&[("worker", "bin/work")])).unwrap();
    let first = worker(&f);
    f.when(&upload()).unwrap();
    f.when(&stop()).unwrap();
    f.when(&start()).unwrap();
    let events = complete(
        &mut f,
        staged_with(&[("worker", "bin/work --fast"), ("clock", "bin/clock")]),
    )
    .unwrap();
    assert_eq!(
        audit_types(&events),
        ["audit.app.build.staged", "audit.app.process.create"]
    );
    let again = worker(&f);
    assert_eq!(again.guid, first.guid);
    assert_eq!(again.detected_command, "bin/work --fast");
    let types: Vec<&str> = f
        .state
        .processes_of(APP)
        .iter()
        .map(|p| p.process_type())
        .collect();
    assert_eq!(types, ["web", "worker", "clock"]);
}

#[test]
fn a_report_with_types_tally_cannot_keep_is_refused_and_changes_nothing() {
    let mut f = staging_app();
    f.refuses(
        &Command::CompleteBuild {
            build_guid: build_of(&f),
            outcome: staged_with(&[("", "x")]),
        },
        DomainError::ReportInvalid("a process type is empty or holds control characters"),
    );
    let many: Vec<(String, String)> = (0..40).map(|i| (format!("t{i}"), "x".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, c)| (k.as_str(), c.as_str())).collect();
    f.refuses(
        &Command::CompleteBuild {
            build_guid: build_of(&f),
            outcome: staged_with(&many),
        },
        DomainError::ReportInvalid("process_types names more than 32 types"),
    );
    let long = "w".repeat(limits::NAME + 1);
    f.refuses(
        &Command::CompleteBuild {
            build_guid: build_of(&f),
            outcome: staged_with(&[(long.as_str(), "x")]),
        },
        DomainError::ReportTooLong {
            field: "process_types (a type)",
            max: limits::NAME,
        },
    );
}
