//! The v3 app lifecycle (reference v3 §2, §3): the same app rows as v2, decided by CC's v3
//! rules. A v3 app and its `web` process share one guid, so every usage event is the v2 one.

use super::*;
use crate::command::{AppAction, Lifecycle, ProcessUpdate, Scale};
use crate::model::{Process, ProcessRef, DEFAULT_STACK_NAME};
use crate::usage::for_other_process;

fn find(state: &State, guid: Guid) -> Result<&App, DomainError> {
    state.app(guid).ok_or(DomainError::ResourceNotFound("App"))
}

fn unprocessable(message: impl Into<String>) -> DomainError {
    DomainError::Unprocessable(message.into())
}

/// The v3 app name rules (`AppCreateMessage`, `AppModel`).
fn check_v3_name(name: &str) -> Result<(), DomainError> {
    if name.is_empty() {
        return Err(unprocessable("Name can't be blank"));
    }
    if limits::too_long(name, limits::NAME) {
        return Err(unprocessable(
            "Name is too long (maximum is 255 characters)",
        ));
    }
    if !valid_name(name) {
        return Err(unprocessable("Name must not contain control characters"));
    }
    Ok(())
}

fn name_free(state: &State, space: Guid, name: &str, me: Guid) -> Result<(), DomainError> {
    match state.app_named(space, name) {
        Some(other) if other.guid != me => Err(DomainError::Uniqueness(name.to_owned())),
        _ => Ok(()),
    }
}

/// Applies a v3 `lifecycle` to an app (buildpack data only: tally keeps one buildpack).
fn apply_lifecycle(app: &mut App, lifecycle: &Lifecycle) -> Result<(), DomainError> {
    if let Some(docker) = lifecycle.docker {
        if docker != app.is_docker() {
            let (from, to) = if app.is_docker() {
                ("docker", "buildpack")
            } else {
                ("buildpack", "docker")
            };
            return Err(unprocessable(format!(
                "Lifecycle type cannot be changed from {from} to {to}"
            )));
        }
    }
    if let Some(stack) = &lifecycle.stack {
        if stack != DEFAULT_STACK_NAME {
            return Err(unprocessable(format!(
                "Stack must be an existing stack: '{stack}' is not ({DEFAULT_STACK_NAME} is)"
            )));
        }
        app.stack_guid = DEFAULT_STACK_GUID;
    }
    if let Some(buildpacks) = &lifecycle.buildpacks {
        if app.is_docker() && !buildpacks.is_empty() {
            return Err(unprocessable(
                "Lifecycle Buildpacks cannot be configured for a docker lifecycle app.",
            ));
        }
        if buildpacks.len() > 1 {
            return Err(unprocessable(
                "Lifecycle Buildpacks: tally keeps one buildpack per app (multi-buildpack apps are not supported)",
            ));
        }
        for buildpack in buildpacks {
            limits::app_text("buildpack", buildpack, limits::BUILDPACK)
                .and_then(|()| limits::app_single_line("buildpack", buildpack))
                .map_err(v3_message)?;
        }
        app.buildpack = buildpacks.first().filter(|b| !b.is_empty()).cloned();
    }
    Ok(())
}

/// A v2 `AppInvalid` message as v3's `UnprocessableEntity` detail.
fn v3_message(error: DomainError) -> DomainError {
    match error {
        DomainError::AppInvalid(message) => DomainError::Unprocessable(message),
        DomainError::AppMemoryInvalid => unprocessable("Memory in mb must be greater than 0"),
        other => other,
    }
}

pub(super) fn create_app_v3(
    state: &State,
    command: (Guid, &str, Guid),
    environment_json: Option<&String>,
    lifecycle: &Lifecycle,
    audit_request: &Value,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let (guid, name, space_guid) = command;
    check_v3_name(name)?;
    let space = state.space(space_guid).ok_or_else(|| {
        unprocessable("Invalid space. Ensure that the space exists and you have access to it.")
    })?;
    if let Some(env) = environment_json {
        check_environment(env)?;
    }
    if lifecycle.docker == Some(true) {
        // CC's `diego_docker` feature flag is off by default; tally has no flags to turn on.
        return Err(DomainError::FeatureDisabled("diego_docker"));
    }
    name_free(state, space_guid, name, guid)?;
    let mut app = new_app(guid, name.to_owned(), space_guid, inputs);
    apply_lifecycle(&mut app, lifecycle)?;
    if let Some(env) = environment_json {
        app.environment_json = env.clone();
    }
    out.audit(
        inputs,
        "audit.app.process.create",
        &app,
        space,
        Value::object(super::processes::web_metadata(&app)),
    );
    out.audit(
        inputs,
        "audit.app.create",
        &app,
        space,
        Value::request(audit_request.clone()),
    );
    out.events.insert(0, Event::AppCreated(app));
    Ok(())
}

/// The size limit of v2's `environment_json`, with v3's wording.
fn check_environment(env: &str) -> Result<(), DomainError> {
    if env.len() > limits::ENVIRONMENT_JSON_BYTES {
        return Err(unprocessable(format!(
            "Environment variables are too large (maximum is {} bytes as JSON)",
            limits::ENVIRONMENT_JSON_BYTES
        )));
    }
    Ok(())
}

pub(super) fn update_app_v3(
    state: &State,
    guid: Guid,
    name: Option<&String>,
    lifecycle: &Lifecycle,
    audit_request: &Value,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let current = find(state, guid)?;
    let space = find_space(state, current.space_guid)?;
    let mut app = current.clone();
    if let Some(name) = name {
        check_v3_name(name)?;
        name_free(state, app.space_guid, name, guid)?;
        app.name = name.clone();
    }
    apply_lifecycle(&mut app, lifecycle)?;
    app.updated_at = inputs.now;
    out.audit(
        inputs,
        "audit.app.update",
        &app,
        space,
        Value::request(audit_request.clone()),
    );
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

pub(super) fn set_environment(
    state: &State,
    guid: Guid,
    (expected, environment_json): (&str, &String),
    audit_request: &Value,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let current = find(state, guid)?;
    if current.environment_json != expected {
        return Err(DomainError::EnvironmentChanged);
    }
    check_environment(environment_json)?;
    let space = find_space(state, current.space_guid)?;
    let mut app = current.clone();
    app.environment_json = environment_json.clone();
    app.updated_at = inputs.now;
    out.audit(
        inputs,
        "audit.app.update",
        &app,
        space,
        Value::request(audit_request.clone()),
    );
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// Start, stop, restart (reference v3 §2.6): usage events only for what changed, the audit
/// event always.
pub(super) fn app_action(
    state: &State,
    guid: Guid,
    action: AppAction,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let current = find(state, guid)?;
    if action != AppAction::Stop && current.current_droplet().is_none() {
        return Err(unprocessable("Assign a droplet before starting this app."));
    }
    let space = find_space(state, current.space_guid)?;
    let mut app = current.clone();
    let mut usage = Vec::new();
    let mut go = |app: &mut App, to: ProcessState| {
        if app.state == to {
            return;
        }
        let before = ProcessFootprint::of(app);
        app.state = to;
        usage.push(process_event(
            UNNUMBERED,
            inputs.now,
            app,
            Placement { space },
            to.into(),
            before,
        ));
    };
    let steps: &[ProcessState] = match action {
        AppAction::Start => &[ProcessState::Started],
        AppAction::Stop => &[ProcessState::Stopped],
        AppAction::Restart => &[ProcessState::Stopped, ProcessState::Started],
    };
    for &to in steps {
        go(&mut app, to);
    }
    if !usage.is_empty() {
        app.version = inputs.ids.next_guid();
        app.updated_at = inputs.now;
    }
    for event in usage {
        out.usage(event);
    }
    super::processes::move_others(state, &app, steps, space, inputs, out);
    out.audit(inputs, action.audit_type(), &app, space, Value::empty());
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// `DELETE /v3/apps/:guid` (reference v3 §2.5): the process's delete event, its STOPPED if it
/// ran, then `audit.app.delete-request`.
pub(super) fn delete_app_v3(
    state: &State,
    guid: Guid,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let app = find(state, guid)?;
    let space = find_space(state, app.space_guid)?;
    super::apps::delete_app(state, app, space, inputs, out);
    out.audit(
        inputs,
        "audit.app.delete-request",
        app,
        space,
        Value::empty(),
    );
    Ok(())
}

/// The process `guid` names, as the app its rules apply to (for another type, the app as if
/// that process were its web one), and the other process if it is one.
fn find_process(state: &State, guid: Guid) -> Result<(App, Option<&Process>), DomainError> {
    match state.process(guid) {
        Some(ProcessRef::Web(app)) => Ok((app.clone(), None)),
        Some(ProcessRef::Other(app, p)) => Ok((super::processes::shadow(app, p), Some(p))),
        None => Err(DomainError::ResourceNotFound("Process")),
    }
}

/// `{process_guid, process_type}` of the process `find_process` found.
fn found_metadata(app: &App, other: Option<&Process>) -> Vec<(&'static str, Value)> {
    match other {
        Some(p) => super::processes::metadata(p.guid, &p.process_type),
        None => super::processes::web_metadata(app),
    }
}

/// The event that saves what a process command made of `app` (or of the other process it
/// stands for).
fn saved(app: App, other: Option<&Process>) -> Event {
    match other {
        Some(p) => Event::ProcessPut(super::processes::unshadow(&app, p)),
        None => Event::AppUpdated(app),
    }
}

pub(super) fn scale_process(
    state: &State,
    guid: Guid,
    scale: &Scale,
    audit_request: &Value,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let (current, other) = find_process(state, guid)?;
    let current = &current;
    let space = find_space(state, current.space_guid)?;
    let mut app = current.clone();
    let attributes = AppAttributes {
        instances: scale.instances,
        memory: scale.memory_mb,
        disk_quota: scale.disk_mb,
        ..AppAttributes::default()
    };
    apply_attributes(&mut app, &attributes, inputs.config, false).map_err(v3_message)?;
    if let Some(rate) = scale.log_rate_limit {
        app.log_rate_limit = rate;
    }
    let (before, after) = (ProcessFootprint::of(current), ProcessFootprint::of(&app));
    if version_changes(current, &app) {
        app.version = inputs.ids.next_guid();
    }
    app.updated_at = inputs.now;
    if process_change_emits(before, after) {
        let event = process_event(
            UNNUMBERED,
            inputs.now,
            &app,
            Placement { space },
            after.state.into(),
            before,
        );
        out.usage(match other {
            Some(p) => for_other_process(event, &super::processes::unshadow(&app, p)),
            None => event,
        });
    }
    let mut metadata = found_metadata(&app, other);
    metadata.push(("request", audit_request.clone()));
    out.audit(
        inputs,
        "audit.app.process.scale",
        &app,
        space,
        Value::object(metadata),
    );
    out.events.insert(0, saved(app, other));
    Ok(())
}

pub(super) fn update_process(
    state: &State,
    guid: Guid,
    update: &ProcessUpdate,
    audit_request: &Value,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let (current, other) = find_process(state, guid)?;
    let current = &current;
    let space = find_space(state, current.space_guid)?;
    let mut app = current.clone();
    if let Some(command) = &update.command {
        if let Some(text) = command {
            if text.is_empty() || limits::too_long(text, limits::COMMAND) {
                return Err(unprocessable(format!(
                    "Command must be between 1 and {} characters",
                    limits::COMMAND
                )));
            }
        }
        app.command = command.clone();
    }
    if let Some(kind) = &update.health_check_type {
        app.health_check_type = HealthCheckType::parse(kind)
            .filter(|k| *k != HealthCheckType::None)
            .ok_or_else(|| {
                unprocessable("Health check type must be \"port\", \"process\", or \"http\"")
            })?;
    }
    if let Some(timeout) = update.health_check_timeout {
        if let Some(t) = timeout {
            if t > inputs.config.max_health_check_timeout {
                return Err(unprocessable(format!(
                    "Health check timeout Maximum exceeded: max {}s",
                    inputs.config.max_health_check_timeout
                )));
            }
        }
        app.health_check_timeout = timeout;
    }
    if let Some(endpoint) = &update.health_check_endpoint {
        app.health_check_http_endpoint = endpoint.clone();
    }
    if app.health_check_type != HealthCheckType::Http {
        if update
            .health_check_endpoint
            .as_ref()
            .is_some_and(Option::is_some)
        {
            return Err(unprocessable(
                "Health check type must be \"http\" to set a health check HTTP endpoint",
            ));
        }
        app.health_check_http_endpoint = None;
    }
    if version_changes(current, &app) {
        app.version = inputs.ids.next_guid();
    }
    app.updated_at = inputs.now;
    let mut metadata = found_metadata(&app, other);
    metadata.push(("request", audit_request.clone()));
    out.audit(
        inputs,
        "audit.app.process.update",
        &app,
        space,
        Value::object(metadata),
    );
    out.events.insert(0, saved(app, other));
    Ok(())
}
