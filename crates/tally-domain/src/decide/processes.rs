//! Processes other than `web` (reference v3 §2.7, §3): created STOPPED with no instances for
//! each type a staged droplet names that the app lacks, moved with their app by start, stop,
//! restart and v2's `state`, scaled and updated on their own, deleted with their app. Each
//! writes its own usage events, keyed by its own guid.

use super::*;
use crate::model::{Process, WEB_PROCESS_TYPE};
use crate::usage::for_other_process;

/// `{process_guid, process_type}`, the metadata of CC's process audit events.
pub(super) fn metadata(guid: Guid, kind: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("process_guid", Value::text(guid.to_string())),
        ("process_type", Value::text(kind)),
    ]
}

/// The same of an app's web process (its guid is the app's).
pub(super) fn web_metadata(app: &App) -> Vec<(&'static str, Value)> {
    metadata(app.process_guid(), WEB_PROCESS_TYPE)
}

/// An app's other processes in CC's order (creation).
fn others_of(state: &State, app: Guid) -> Vec<&Process> {
    let mut others: Vec<&Process> = state.other_processes_of(app).collect();
    others.sort_by_key(|p| (p.created_at, p.guid));
    others
}

/// The usage event `process` (as it is after the change, `before` what it was) writes in
/// `state`; names and package state come from its `app`.
fn usage_of(
    inputs: &Inputs<'_>,
    app: &App,
    space: &Space,
    process: &Process,
    state: UsageState,
    before: ProcessFootprint,
) -> UsageEvent {
    let event = process_event(
        UNNUMBERED,
        inputs.now,
        app,
        Placement { space },
        state,
        before,
    );
    for_other_process(event, process)
}

/// CC's `AppStart`, `AppStop` and restart run across every process: each other process of
/// `app` goes through `steps` in turn, with a usage event for each step that changed it.
/// `app` is the app as this command leaves it (names and package state come from it).
pub(super) fn move_others(
    state: &State,
    app: &App,
    steps: &[ProcessState],
    space: &Space,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    for process in others_of(state, app.guid) {
        let mut next = process.clone();
        for &to in steps {
            if next.state == to {
                continue;
            }
            let before = ProcessFootprint::of_other(&next);
            next.state = to;
            out.usage(usage_of(inputs, app, space, &next, to.into(), before));
        }
        if next.state != process.state {
            next.version = inputs.ids.next_guid();
            next.updated_at = inputs.now;
            out.events.push(Event::ProcessPut(next));
        }
    }
}

/// A v2 staging that succeeded writes BUILDPACK_SET for each process (reference §2.2), the
/// other processes' with their own footprint.
pub(super) fn buildpack_set_others(
    state: &State,
    app: &App,
    space: &Space,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    for process in others_of(state, app.guid) {
        let before = ProcessFootprint::of_other(process);
        out.usage(usage_of(
            inputs,
            app,
            space,
            process,
            UsageState::BuildpackSet,
            before,
        ));
    }
}

/// Deleting an app deletes its other processes: `audit.app.process.delete` each, STOPPED if it
/// ran, the row gone.
pub(super) fn delete_others(
    state: &State,
    app: &App,
    space: &Space,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    for process in others_of(state, app.guid) {
        out.audit(
            inputs,
            "audit.app.process.delete",
            app,
            space,
            Value::object(metadata(process.guid, &process.process_type)),
        );
        if process.state == ProcessState::Started {
            let before = ProcessFootprint::of_other(process);
            let mut stopped = process.clone();
            stopped.state = ProcessState::Stopped;
            out.usage(usage_of(
                inputs,
                app,
                space,
                &stopped,
                UsageState::Stopped,
                before,
            ));
        }
        out.events
            .push(Event::ProcessDeleted { guid: process.guid });
    }
}

/// CC's `ProcessCreateFromAppDroplet`: a process for each type of a staged droplet the app
/// lacks (`audit.app.process.create`), STOPPED with no instances and the `process` health
/// check; a type it has takes the droplet's command. No usage event: nothing started.
pub(super) fn create_from_droplet(
    state: &State,
    app: &App,
    types: &[(String, String)],
    space: &Space,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    for (kind, command) in types {
        if let Some(crate::model::ProcessRef::Other(_, existing)) =
            state.process_of_type(app.guid, kind)
        {
            if existing.detected_command != *command {
                let mut next = existing.clone();
                next.detected_command = command.clone();
                next.updated_at = inputs.now;
                out.events.push(Event::ProcessPut(next));
            }
            continue;
        }
        if kind == crate::model::WEB_PROCESS_TYPE {
            continue;
        }
        let config = inputs.config;
        let process = Process {
            guid: inputs.ids.next_guid(),
            app_guid: app.guid,
            process_type: kind.clone(),
            state: ProcessState::Stopped,
            instances: 0,
            memory_mb: config.default_memory_mb,
            disk_mb: config.default_disk_mb,
            log_rate_limit: config.default_log_rate_limit,
            command: None,
            detected_command: command.clone(),
            health_check_type: HealthCheckType::Process,
            health_check_timeout: None,
            health_check_http_endpoint: None,
            version: inputs.ids.next_guid(),
            created_at: inputs.now,
            updated_at: inputs.now,
        };
        out.audit(
            inputs,
            "audit.app.process.create",
            app,
            space,
            Value::object(metadata(process.guid, kind)),
        );
        out.events.push(Event::ProcessPut(process));
    }
}

/// The app as it would be if `process` were its web process, so that the web process's
/// attribute rules (scale, command, health check) apply to another process unchanged.
pub(super) fn shadow(app: &App, process: &Process) -> App {
    let mut shadow = app.clone();
    shadow.state = process.state;
    shadow.instances = process.instances;
    shadow.memory_mb = process.memory_mb;
    shadow.disk_quota_mb = process.disk_mb;
    shadow.log_rate_limit = process.log_rate_limit;
    shadow.command = process.command.clone();
    shadow.health_check_type = process.health_check_type;
    shadow.health_check_timeout = process.health_check_timeout;
    shadow.health_check_http_endpoint = process.health_check_http_endpoint.clone();
    shadow.version = process.version;
    shadow.production = false;
    shadow.updated_at = process.updated_at;
    shadow
}

/// The process a changed [`shadow`] describes.
pub(super) fn unshadow(shadow: &App, process: &Process) -> Process {
    Process {
        state: shadow.state,
        instances: shadow.instances,
        memory_mb: shadow.memory_mb,
        disk_mb: shadow.disk_quota_mb,
        log_rate_limit: shadow.log_rate_limit,
        command: shadow.command.clone(),
        health_check_type: shadow.health_check_type,
        health_check_timeout: shadow.health_check_timeout,
        health_check_http_endpoint: shadow.health_check_http_endpoint.clone(),
        version: shadow.version,
        updated_at: shadow.updated_at,
        ..process.clone()
    }
}
