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
        let outcome = if app.is_docker() {
            BuildOutcome::Staged {
                buildpack_guid: None,
                buildpack_name: None,
                detected_start_command: app.command.clone().unwrap_or_default(),
            }
        } else {
            let name = app
                .buildpack
                .clone()
                .unwrap_or_else(|| inputs.config.default_buildpack.clone());
            BuildOutcome::Staged {
                buildpack_guid: (!is_custom_buildpack(&name)).then(|| buildpack_guid(&name)),
                buildpack_name: Some(name),
                detected_start_command: app.command.clone().unwrap_or_default(),
            }
        };
        complete_build(app, space, &outcome, inputs, out);
    }
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
    app.updated_at = inputs.now;
    match outcome {
        BuildOutcome::Staged {
            buildpack_guid,
            buildpack_name,
            detected_start_command,
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
            app.current_droplet_guid = Some(droplet_guid);
            out.usage(staging_event(
                UNNUMBERED,
                inputs.now,
                app,
                Placement { space },
                UsageState::StagingStopped,
            ));
            let before = ProcessFootprint::of(app);
            out.usage(process_event(
                UNNUMBERED,
                inputs.now,
                app,
                Placement { space },
                UsageState::BuildpackSet,
                before,
            ));
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
            if app.state == ProcessState::Started {
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
    let fields: Vec<(&'static str, &str, usize)> = match outcome {
        BuildOutcome::Staged {
            buildpack_name,
            detected_start_command,
            ..
        } => buildpack_name
            .iter()
            .map(|name| ("detected_buildpack", name.as_str(), limits::STAGING_REPORT))
            .chain([(
                "process_types.web",
                detected_start_command.as_str(),
                limits::STAGING_REPORT,
            )])
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
