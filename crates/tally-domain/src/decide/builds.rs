//! Packages and builds: uploads, staging (immediate or by a runtime), and its completion.

use super::*;

pub(super) fn upload_package(
    state: &State,
    guid: Guid,
    sha256: &str,
    size_bytes: u64,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let current = find_app(state, guid)?;
    if current.is_docker() {
        return Err(DomainError::AppPackageInvalid(
            "bits cannot be uploaded for an app with a docker image".to_owned(),
        ));
    }
    let space = find_space(state, current.space_guid)?;
    let mut app = current.clone();
    app.package = Some(Package {
        guid: inputs.ids.next_guid(),
        state: PackageState::Ready,
        sha256: sha256.to_owned(),
        size_bytes,
        created_at: inputs.now,
    });
    app.package_updated_at = Some(inputs.now);
    app.updated_at = inputs.now;
    out.audit(inputs, "audit.app.upload-bits", &app, space, Value::empty());
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// Starts a build when a started app's latest package is not staged (reference §2.2, v2 flow),
/// and completes it at once in immediate staging mode.
pub(super) fn stage_if_needed(
    app: &mut App,
    space: &Space,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    if app.state != ProcessState::Started || !app.needs_staging() {
        return;
    }
    let Some(package_guid) = app.package.as_ref().map(|p| p.guid) else {
        return;
    };
    let build_guid = inputs.ids.next_guid();
    app.build = Some(Build {
        guid: build_guid,
        package_guid,
        state: BuildState::Staging,
        error: None,
        created_at: inputs.now,
    });
    out.usage(staging_event(
        UNNUMBERED,
        inputs.now,
        app,
        Placement { space },
        UsageState::StagingStarted,
    ));
    out.audit(
        inputs,
        "audit.app.build.create",
        app,
        space,
        Value::object([
            ("build_guid", Value::text(build_guid.to_string())),
            ("package_guid", Value::text(package_guid.to_string())),
        ]),
    );
    if inputs.config.staging_mode == StagingMode::Immediate {
        let outcome = immediate_outcome(app, inputs.config);
        complete_build(app, space, &outcome, inputs, out);
    }
}

/// How staging ends at once in immediate mode: the app's buildpack (or the default) detected,
/// its command the start command.
fn immediate_outcome(app: &App, config: &DomainConfig) -> BuildOutcome {
    if app.is_docker() {
        BuildOutcome::Staged {
            buildpack_guid: None,
            buildpack_name: None,
            detected_start_command: app.command.clone().unwrap_or_default(),
            other_process_types: Vec::new(),
        }
    } else {
        let name = app
            .buildpack
            .clone()
            .unwrap_or_else(|| config.default_buildpack.clone());
        BuildOutcome::Staged {
            buildpack_guid: (!is_custom_buildpack(&name)).then(|| buildpack_guid(&name)),
            buildpack_name: Some(name),
            detected_start_command: app.command.clone().unwrap_or_default(),
            other_process_types: Vec::new(),
        }
    }
}

fn unprocessable(message: impl Into<String>) -> DomainError {
    DomainError::Unprocessable(message.into())
}

/// `POST /v3/packages` (reference v3 §4.2): bits await their upload; a docker package is ready
/// at once and names the image the app runs. Tally keeps each app's latest package.
pub(super) fn create_package(
    state: &State,
    (guid, app_guid): (Guid, Guid),
    docker_image: Option<&str>,
    audit_request: &Value,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let current = state.app(app_guid).ok_or_else(|| {
        unprocessable("App is invalid. Ensure it exists and you have access to it.")
    })?;
    let space = find_space(state, current.space_guid)?;
    match (docker_image, current.is_docker()) {
        (Some(_), false) => {
            return Err(unprocessable(
                "Type must be bits for an app with a buildpack lifecycle",
            ))
        }
        (None, true) => {
            return Err(unprocessable(
                "Type must be docker for an app with a docker lifecycle",
            ))
        }
        _ => {}
    }
    let mut app = current.clone();
    if let Some(image) = docker_image {
        limits::app_text("docker_image", image, limits::DOCKER_IMAGE).map_err(|e| match e {
            DomainError::AppInvalid(m) => DomainError::Unprocessable(m),
            other => other,
        })?;
        app.docker_image = Some(image.to_owned());
    }
    app.package = Some(Package {
        guid,
        state: if docker_image.is_some() {
            PackageState::Ready
        } else {
            PackageState::AwaitingUpload
        },
        sha256: String::new(),
        size_bytes: 0,
        created_at: inputs.now,
    });
    app.package_updated_at = Some(inputs.now);
    app.updated_at = inputs.now;
    out.audit(
        inputs,
        "audit.app.package.create",
        &app,
        space,
        Value::object([
            ("package_guid", Value::text(guid.to_string())),
            ("request", audit_request.clone()),
        ]),
    );
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// `POST /v3/packages/:guid/upload`: the stored bits of a package that awaits them.
pub(super) fn upload_package_bits(
    state: &State,
    guid: Guid,
    (sha256, size_bytes): (&str, u64),
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let current = state
        .app_of_package(guid)
        .ok_or(DomainError::ResourceNotFound("Package"))?;
    let space = find_space(state, current.space_guid)?;
    let mut app = current.clone();
    let Some(package) = app.package.as_mut().filter(|p| p.guid == guid) else {
        return Err(DomainError::ResourceNotFound("Package"));
    };
    if current.is_docker() {
        return Err(unprocessable("Package type must be bits."));
    }
    if package.state != PackageState::AwaitingUpload {
        return Err(unprocessable(format!(
            "Package state must be AWAITING_UPLOAD to upload bits (it is {})",
            package.state.as_str()
        )));
    }
    package.state = PackageState::Ready;
    package.sha256 = sha256.to_owned();
    package.size_bytes = size_bytes;
    app.package_updated_at = Some(inputs.now);
    app.updated_at = inputs.now;
    out.audit(
        inputs,
        "audit.app.package.upload",
        &app,
        space,
        Value::object([("package_guid", Value::text(guid.to_string()))]),
    );
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// `POST /v3/builds` (reference v3 §4.3): STAGING_STARTED and `audit.app.build.create`; in
/// immediate mode staged at once, as a v3 build ends (the droplet is not assigned).
pub(super) fn create_build(
    state: &State,
    guid: Guid,
    package_guid: Guid,
    audit_request: &Value,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let current = state.app_of_package(package_guid).ok_or_else(|| {
        unprocessable(
            "Unable to use package. Ensure that the package exists and you have access to it.",
        )
    })?;
    let space = find_space(state, current.space_guid)?;
    if current
        .package
        .as_ref()
        .is_none_or(|p| p.state != PackageState::Ready)
    {
        return Err(unprocessable(
            "Cannot stage package whose state is not ready.",
        ));
    }
    if current.staging_in_flight() {
        return Err(unprocessable(
            "The app has a build staging: tally stages one build per app at a time",
        ));
    }
    let mut app = current.clone();
    app.build = Some(Build {
        guid,
        package_guid,
        state: BuildState::Staging,
        error: None,
        created_at: inputs.now,
    });
    app.updated_at = inputs.now;
    out.usage(staging_event(
        UNNUMBERED,
        inputs.now,
        &app,
        Placement { space },
        UsageState::StagingStarted,
    ));
    let mut metadata = vec![
        ("build_guid", Value::text(guid.to_string())),
        ("package_guid", Value::text(package_guid.to_string())),
    ];
    if !matches!(audit_request, Value::Null) {
        metadata.push(("request", audit_request.clone()));
    }
    out.audit(
        inputs,
        "audit.app.build.create",
        &app,
        space,
        Value::object(metadata),
    );
    if inputs.config.staging_mode == StagingMode::Immediate {
        let outcome = immediate_outcome(&app, inputs.config);
        complete_build(&mut app, space, &outcome, inputs, out);
    }
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// `PATCH /v3/apps/:guid/relationships/current_droplet`: the app's latest droplet becomes the
/// one it runs; `audit.app.droplet.mapped`, no usage event.
pub(super) fn set_current_droplet(
    state: &State,
    app_guid: Guid,
    droplet_guid: Guid,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let current = state
        .app(app_guid)
        .ok_or(DomainError::ResourceNotFound("App"))?;
    let space = find_space(state, current.space_guid)?;
    if current
        .latest_droplet
        .as_ref()
        .is_none_or(|d| d.guid != droplet_guid)
    {
        return Err(unprocessable(
            "Unable to assign current droplet. Ensure the droplet exists and belongs to this app.",
        ));
    }
    let mut app = current.clone();
    app.current_droplet_guid = Some(droplet_guid);
    app.updated_at = inputs.now;
    out.audit(
        inputs,
        "audit.app.droplet.mapped",
        &app,
        space,
        Value::object([(
            "request",
            Value::object([("droplet_guid", Value::text(droplet_guid.to_string()))]),
        )]),
    );
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// A stable guid for an admin buildpack name, so one buildpack always reports one guid.
pub fn buildpack_guid(name: &str) -> Guid {
    Guid::from_bytes(*uuid::Uuid::new_v5(&BUILDPACK_NAMESPACE, name.as_bytes()).as_bytes())
}

pub(super) const BUILDPACK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7a11_b0c0_5eed_4b1d_8000_0000_0000_0b9d);

/// Reference §2.2: success writes STAGING_STOPPED then BUILDPACK_SET for the process; failure
/// writes STAGING_STOPPED and stops the app (STOPPED if it was started).
pub(super) fn complete_build(
    app: &mut App,
    space: &Space,
    outcome: &BuildOutcome,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    let Some(mut build) = app.build.clone() else {
        return;
    };
    // A v3 build ends as CC's v3 builds do: no droplet assigned, no start, no stop.
    let v3 = crate::is_v3_build(build.guid);
    app.updated_at = inputs.now;
    match outcome {
        BuildOutcome::Staged {
            buildpack_guid,
            buildpack_name,
            detected_start_command,
            ..
        } => {
            build.state = BuildState::Staged;
            let droplet = Droplet {
                guid: inputs.ids.next_guid(),
                package_guid: build.package_guid,
                buildpack_guid: *buildpack_guid,
                buildpack_name: buildpack_name.as_deref().map(obfuscate_url_credentials),
                detected_start_command: detected_start_command.clone(),
                created_at: inputs.now,
            };
            let droplet_guid = droplet.guid;
            app.build = Some(build.clone());
            app.latest_droplet = Some(droplet);
            if !v3 {
                app.current_droplet_guid = Some(droplet_guid);
            }
            out.usage(staging_event(
                UNNUMBERED,
                inputs.now,
                app,
                Placement { space },
                UsageState::StagingStopped,
            ));
            if v3 {
                // One BUILDPACK_SET built from the build (reference §2.2).
                let mut set = staging_event(
                    UNNUMBERED,
                    inputs.now,
                    app,
                    Placement { space },
                    UsageState::BuildpackSet,
                );
                set.previous_state = Some(UsageState::Staged);
                out.usage(set);
            } else {
                let before = ProcessFootprint::of(app);
                out.usage(process_event(
                    UNNUMBERED,
                    inputs.now,
                    app,
                    Placement { space },
                    UsageState::BuildpackSet,
                    before,
                ));
            }
            out.audit(
                inputs,
                "audit.app.build.staged",
                app,
                space,
                Value::object([
                    ("build_guid", Value::text(build.guid.to_string())),
                    ("package_guid", Value::text(build.package_guid.to_string())),
                    ("droplet_guid", Value::text(droplet_guid.to_string())),
                ]),
            );
        }
        BuildOutcome::Failed { reason } => {
            build.state = BuildState::Failed;
            build.error = Some(reason.clone());
            app.build = Some(build.clone());
            out.usage(staging_event(
                UNNUMBERED,
                inputs.now,
                app,
                Placement { space },
                UsageState::StagingStopped,
            ));
            if !v3 && app.state == ProcessState::Started {
                let before = ProcessFootprint::of(app);
                app.state = ProcessState::Stopped;
                app.version = inputs.ids.next_guid();
                out.usage(process_event(
                    UNNUMBERED,
                    inputs.now,
                    app,
                    Placement { space },
                    UsageState::Stopped,
                    before,
                ));
            }
            out.audit(
                inputs,
                "audit.app.build.failed",
                app,
                space,
                Value::object([
                    ("build_guid", Value::text(build.guid.to_string())),
                    ("package_guid", Value::text(build.package_guid.to_string())),
                    ("error_message", Value::text(reason.clone())),
                ]),
            );
        }
    }
}

/// A staging runtime's report is bounded like what a client sends.
pub(super) fn check_report(outcome: &BuildOutcome) -> Result<(), DomainError> {
    if let BuildOutcome::Staged {
        other_process_types,
        ..
    } = outcome
    {
        if other_process_types.len() >= limits::PROCESS_TYPES {
            return Err(DomainError::ReportInvalid(
                "process_types names more than 32 types",
            ));
        }
        if other_process_types
            .iter()
            .any(|(kind, _)| kind.is_empty() || kind.chars().any(char::is_control))
        {
            return Err(DomainError::ReportInvalid(
                "a process type is empty or holds control characters",
            ));
        }
    }
    let fields: Vec<(&'static str, &str, usize)> = match outcome {
        BuildOutcome::Staged {
            buildpack_name,
            detected_start_command,
            other_process_types,
            ..
        } => buildpack_name
            .iter()
            .map(|name| ("detected_buildpack", name.as_str(), limits::STAGING_REPORT))
            .chain([(
                "process_types.web",
                detected_start_command.as_str(),
                limits::STAGING_REPORT,
            )])
            .chain(other_process_types.iter().flat_map(|(kind, command)| {
                [
                    ("process_types (a type)", kind.as_str(), limits::NAME),
                    (
                        "process_types (a command)",
                        command.as_str(),
                        limits::STAGING_REPORT,
                    ),
                ]
            }))
            .collect(),
        BuildOutcome::Failed { reason } => vec![("error", reason.as_str(), limits::STAGING_ERROR)],
    };
    match fields
        .into_iter()
        .find(|(_, value, max)| limits::too_long(value, *max))
    {
        Some((field, _, max)) => Err(DomainError::ReportTooLong { field, max }),
        None => Ok(()),
    }
}
