//! Apps: create, update (start, stop, scale, rename, move), delete, restage, and the
//! attribute rules of reference §5.2 with their limits.

use super::*;

/// Deleting an app (`AppDelete`, reference §2.1 and v3 §2.5), v2 and v3 alike: its tasks first,
/// then `audit.app.process.delete` for each process, STOPPED for each that ran, the row gone.
/// The caller writes `audit.app.delete-request` after it.
pub(super) fn delete_app(
    state: &State,
    app: &App,
    space: &Space,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    super::tasks::delete_tasks(state, app, space, inputs, out);
    out.audit(
        inputs,
        "audit.app.process.delete",
        app,
        space,
        Value::object(super::processes::web_metadata(app)),
    );
    super::processes::delete_others(state, app, space, inputs, out);
    remove_app(app, space, inputs, out);
}

/// The process's STOPPED if it ran, and the app row gone (its tasks are handled first).
pub(super) fn remove_app(app: &App, space: &Space, inputs: &mut Inputs<'_>, out: &mut Decision) {
    if app.state == ProcessState::Started {
        let before = ProcessFootprint::of(app);
        let mut stopped = app.clone();
        stopped.state = ProcessState::Stopped;
        out.usage(process_event(
            UNNUMBERED,
            inputs.now,
            &stopped,
            Placement { space },
            UsageState::Stopped,
            before,
        ));
    }
    out.events.push(Event::AppDeleted { guid: app.guid });
}

/// An app as a create makes it before the request's attributes: STOPPED, one instance, the
/// operator's defaults, the default stack.
pub(super) fn new_app(guid: Guid, name: String, space_guid: Guid, inputs: &mut Inputs<'_>) -> App {
    let config = inputs.config;
    App {
        guid,
        name,
        space_guid,
        stack_guid: DEFAULT_STACK_GUID,
        state: ProcessState::Stopped,
        memory_mb: config.default_memory_mb,
        instances: 1,
        disk_quota_mb: config.default_disk_mb,
        log_rate_limit: config.default_log_rate_limit,
        buildpack: None,
        command: None,
        health_check_type: HealthCheckType::Port,
        health_check_timeout: None,
        health_check_http_endpoint: None,
        diego: true,
        enable_ssh: config.default_enable_ssh,
        docker_image: None,
        docker_credentials: None,
        environment_json: "{}".to_owned(),
        production: false,
        console: false,
        debug: None,
        ports: None,
        version: inputs.ids.next_guid(),
        package: None,
        build: None,
        latest_droplet: None,
        current_droplet_guid: None,
        package_updated_at: None,
        created_at: inputs.now,
        updated_at: inputs.now,
    }
}

pub(super) fn create_app(
    state: &State,
    guid: Guid,
    attributes: &AppAttributes,
    audit_request: &Value,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let name = attributes
        .name
        .clone()
        .ok_or(DomainError::MissingField("name"))?;
    let space_guid = attributes
        .space_guid
        .ok_or(DomainError::MissingField("space_guid"))?;
    let space = find_space(state, space_guid)?;
    let config = inputs.config;
    let mut app = new_app(guid, name, space_guid, inputs);
    let requested_state = apply_attributes(&mut app, attributes, config, true)?;
    if state.app_named(space_guid, &app.name).is_some() {
        return Err(DomainError::AppNameTaken(app.name));
    }
    if app.is_docker() {
        app.package = Some(Package {
            guid: inputs.ids.next_guid(),
            state: PackageState::Ready,
            sha256: String::new(),
            size_bytes: 0,
            created_at: inputs.now,
        });
        app.package_updated_at = Some(inputs.now);
    }
    let mut usage = Vec::new();
    if requested_state == Some(ProcessState::Started) {
        // A process created already STARTED is billed from its creation: tally emits one
        // STARTED event shaped like a start from STOPPED (docs/extensions.md explains why).
        require_bits(&app)?;
        let before = ProcessFootprint {
            state: ProcessState::Stopped,
            ..ProcessFootprint::of(&app)
        };
        app.state = ProcessState::Started;
        usage.push(process_event(
            UNNUMBERED,
            inputs.now,
            &app,
            Placement { space },
            UsageState::Started,
            before,
        ));
    }
    out.audit(
        inputs,
        "audit.app.create",
        &app,
        space,
        Value::request(audit_request.clone()),
    );
    for event in usage {
        out.usage(event);
    }
    stage_if_needed(&mut app, space, inputs, out);
    out.events.insert(0, Event::AppCreated(app));
    Ok(())
}

pub(super) fn update_app(
    state: &State,
    guid: Guid,
    attributes: &AppAttributes,
    audit_request: &Value,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let current = find_app(state, guid)?;
    let mut app = current.clone();
    let requested_state = apply_attributes(&mut app, attributes, inputs.config, false)?;
    if let Some(space_guid) = attributes.space_guid {
        app.space_guid = space_guid;
    }
    let space = find_space(state, app.space_guid)?;
    if (app.space_guid != current.space_guid || app.name != current.name)
        && state
            .app_named(app.space_guid, &app.name)
            .is_some_and(|other| other.guid != guid)
    {
        return Err(DomainError::AppNameTaken(app.name));
    }
    if let Some(new_state) = requested_state {
        if new_state == ProcessState::Started {
            require_bits(&app)?;
        }
        app.state = new_state;
    }
    let before = ProcessFootprint::of(current);
    let after = ProcessFootprint::of(&app);
    if version_changes(current, &app) {
        app.version = inputs.ids.next_guid();
    }
    app.updated_at = inputs.now;
    out.audit(
        inputs,
        "audit.app.update",
        &app,
        space,
        Value::request(audit_request.clone()),
    );
    if process_change_emits(before, after) {
        out.usage(process_event(
            UNNUMBERED,
            inputs.now,
            &app,
            Placement { space },
            after.state.into(),
            before,
        ));
    }
    if let Some(to) = requested_state {
        // CC runs `AppStart` or `V2::AppStop` across every process of the app.
        super::processes::move_others(state, &app, &[to], space, inputs, out);
    }
    if requested_state == Some(ProcessState::Started) {
        stage_if_needed(&mut app, space, inputs, out);
    }
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// A new `version` whenever a started process changes state, memory, health check or ports.
pub(super) fn version_changes(before: &App, after: &App) -> bool {
    let started = before.state == ProcessState::Started || after.state == ProcessState::Started;
    started
        && (before.state != after.state
            || before.memory_mb != after.memory_mb
            || before.health_check_type != after.health_check_type
            || before.health_check_http_endpoint != after.health_check_http_endpoint
            || before.ports != after.ports)
}

pub(super) fn require_bits(app: &App) -> Result<(), DomainError> {
    if app.package.is_none() && app.latest_droplet.is_none() {
        return Err(DomainError::AppPackageInvalid(
            "bits have not been uploaded".to_owned(),
        ));
    }
    Ok(())
}

pub(super) fn restage_app(
    state: &State,
    guid: Guid,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let current = find_app(state, guid)?;
    if current.instances < 1 {
        return Err(DomainError::StagingError(
            "App must have at least 1 instance to stage.".to_owned(),
        ));
    }
    if current.package_state() == DerivedPackageState::Pending {
        return Err(DomainError::NotStaged);
    }
    if current.package.is_none() {
        return Err(DomainError::AppPackageInvalid(
            "bits have not been uploaded".to_owned(),
        ));
    }
    let space = find_space(state, current.space_guid)?;
    let mut app = current.clone();
    if app.state == ProcessState::Started {
        let before = ProcessFootprint::of(&app);
        app.state = ProcessState::Stopped;
        out.usage(process_event(
            UNNUMBERED,
            inputs.now,
            &app,
            Placement { space },
            UsageState::Stopped,
            before,
        ));
    }
    app.current_droplet_guid = None;
    let before = ProcessFootprint::of(&app);
    app.state = ProcessState::Started;
    app.version = inputs.ids.next_guid();
    app.updated_at = inputs.now;
    out.usage(process_event(
        UNNUMBERED,
        inputs.now,
        &app,
        Placement { space },
        UsageState::Started,
        before,
    ));
    out.audit(inputs, "audit.app.restage", &app, space, Value::empty());
    let steps = [ProcessState::Stopped, ProcessState::Started];
    super::processes::move_others(state, &app, &steps, space, inputs, out);
    stage_if_needed(&mut app, space, inputs, out);
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// Applies sent attributes with reference §5.2's rules; returns the requested state, if any,
/// for the caller to apply (starting has preconditions).
pub(super) fn apply_attributes(
    app: &mut App,
    attributes: &AppAttributes,
    config: &DomainConfig,
    creating: bool,
) -> Result<Option<ProcessState>, DomainError> {
    let a = attributes;
    check_lengths(a)?;
    if let Some(name) = &a.name {
        if !valid_name(name) {
            return Err(DomainError::AppInvalid("name format".to_owned()));
        }
        app.name = name.clone();
    }
    if let Some(memory) = a.memory {
        if memory <= 0 {
            return Err(DomainError::AppMemoryInvalid);
        }
        let max = config.max_memory_mb.min(limits::MAX_MEMORY_MB);
        if memory > max {
            return Err(DomainError::AppInvalid(format!(
                "memory too much memory requested (requested {memory} MB - must be less than {max} MB)"
            )));
        }
        app.memory_mb = memory;
    }
    if let Some(instances) = a.instances {
        if instances < 0 {
            return Err(DomainError::AppInvalid(
                "Number of instances less than 0".to_owned(),
            ));
        }
        if instances > limits::MAX_INSTANCES {
            return Err(DomainError::AppInvalid(format!(
                "instances must be less than or equal to {}",
                limits::MAX_INSTANCES
            )));
        }
        app.instances = instances;
    }
    if let Some(disk) = a.disk_quota {
        // CC's MinDiskQuotaPolicy and MaxDiskQuotaPolicy.
        if disk < 1 {
            return Err(DomainError::AppInvalid(
                "disk_quota too little disk requested (must be greater than zero)".to_owned(),
            ));
        }
        if disk > config.max_disk_mb {
            return Err(DomainError::AppInvalid(format!(
                "disk_quota too much disk requested (requested {disk} MB - must be less than {} MB)",
                config.max_disk_mb
            )));
        }
        app.disk_quota_mb = disk;
    }
    let requested_state = match &a.state {
        Some(text) => Some(
            ProcessState::parse(text)
                .ok_or_else(|| DomainError::AppInvalid("Invalid app state provided".to_owned()))?,
        ),
        None => None,
    };
    if let Some(kind) = &a.health_check_type {
        app.health_check_type = HealthCheckType::parse(kind).ok_or_else(|| {
            DomainError::AppInvalid(format!(
                "health_check_type must be one of port, process, http, none but was {kind}"
            ))
        })?;
    }
    if let Some(timeout) = a.health_check_timeout {
        if timeout < 1 {
            // CC's BaseHealthCheckPolicy adds the `:less_than_one` error.
            return Err(DomainError::AppInvalid(
                "health_check_timeout less_than_one".to_owned(),
            ));
        }
        if timeout > config.max_health_check_timeout {
            return Err(DomainError::AppInvalid(format!(
                "health_check_timeout Maximum exceeded: max {}s",
                config.max_health_check_timeout
            )));
        }
        app.health_check_timeout = Some(timeout);
    }
    if let Some(endpoint) = &a.health_check_http_endpoint {
        if !endpoint.starts_with('/') {
            return Err(DomainError::AppInvalid(
                "health_check_http_endpoint HTTP health check endpoint is not a valid URI path"
                    .to_owned(),
            ));
        }
        app.health_check_http_endpoint = Some(endpoint.clone());
    }
    if let Some(ports) = &a.ports {
        if ports.len() > 10 {
            return Err(DomainError::AppInvalid(
                "ports Maximum of 10 app ports allowed".to_owned(),
            ));
        }
        let mut parsed = Vec::with_capacity(ports.len());
        for port in ports {
            match u16::try_from(*port) {
                Ok(p) if p >= 1024 => parsed.push(p),
                _ => {
                    return Err(DomainError::AppInvalid(
                        "ports Ports must be in the 1024-65535 range.".to_owned(),
                    ))
                }
            }
        }
        // CC ignores `[]` on update.
        if !parsed.is_empty() || creating {
            app.ports = Some(parsed);
        }
    }
    match (&a.docker_image, app.docker_image.is_some()) {
        (Some(_), false) if !creating => {
            return Err(DomainError::AppInvalid(
                "Lifecycle type cannot be changed".to_owned(),
            ))
        }
        (Some(image), _) => app.docker_image = Some(image.clone()),
        (None, _) => {}
    }
    if let Some(credentials) = &a.docker_credentials {
        let empty = credentials.username.is_none() && credentials.password.is_none();
        if !empty && app.docker_image.is_none() {
            return Err(DomainError::DockerImageMissing);
        }
        app.docker_credentials = (!empty).then(|| credentials.clone());
    }
    if let Some(buildpack) = &a.buildpack {
        if app.is_docker() && !buildpack.is_empty() {
            return Err(DomainError::AppInvalid(
                "Lifecycle type cannot be changed".to_owned(),
            ));
        }
        app.buildpack = (!buildpack.is_empty()).then(|| buildpack.clone());
    }
    if a.stack_guid.is_some() {
        // tally has one stack; CC falls back to the default stack for unknown guids on create.
        app.stack_guid = DEFAULT_STACK_GUID;
    }
    set_if_some(&mut app.command, &a.command);
    set_if_some(&mut app.debug, &a.debug);
    if let Some(env) = &a.environment_json {
        app.environment_json = env.clone();
    }
    if let Some(v) = a.diego {
        app.diego = v;
    }
    if let Some(v) = a.enable_ssh {
        app.enable_ssh = v;
    }
    if let Some(v) = a.production {
        app.production = v;
    }
    if let Some(v) = a.console {
        app.console = v;
    }
    Ok(requested_state)
}

/// The length limits of `limits`, and one line for what is shown on one line.
pub(super) fn check_lengths(a: &AppAttributes) -> Result<(), DomainError> {
    if let Some(name) = &a.name {
        limits::app_text("name", name, limits::NAME)?;
    }
    let single_line = [
        ("buildpack", &a.buildpack, limits::BUILDPACK),
        ("docker_image", &a.docker_image, limits::DOCKER_IMAGE),
        (
            "health_check_http_endpoint",
            &a.health_check_http_endpoint,
            limits::HEALTH_CHECK_ENDPOINT,
        ),
        ("debug", &a.debug, limits::DEBUG),
    ];
    for (field, value, max) in single_line {
        if let Some(value) = value {
            limits::app_text(field, value, max)?;
            limits::app_single_line(field, value)?;
        }
    }
    if let Some(command) = &a.command {
        limits::app_text("command", command, limits::COMMAND)?;
    }
    if let Some(credentials) = &a.docker_credentials {
        if let Some(username) = &credentials.username {
            limits::app_text("docker_username", username, limits::DOCKER_USERNAME)?;
            limits::app_single_line("docker_username", username)?;
        }
        if let Some(password) = &credentials.password {
            if limits::too_long(password, limits::DOCKER_PASSWORD) {
                // CC's PackageModel message.
                return Err(DomainError::AppInvalid(
                    "docker_password can be up to 5,000 characters".to_owned(),
                ));
            }
        }
    }
    if let Some(env) = &a.environment_json {
        if env.len() > limits::ENVIRONMENT_JSON_BYTES {
            return Err(DomainError::AppInvalid(format!(
                "environment_json is too large (maximum is {} bytes as JSON)",
                limits::ENVIRONMENT_JSON_BYTES
            )));
        }
    }
    Ok(())
}

pub(super) fn set_if_some(target: &mut Option<String>, value: &Option<String>) {
    if let Some(v) = value {
        *target = Some(v.clone());
    }
}
