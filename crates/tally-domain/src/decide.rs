//! `decide`: a command, the current table and its inputs (time, ids, actor, settings) in; the
//! events to append, or the reason for refusal, out. Pure and synchronous. This file holds the
//! dispatch (the caller's rights first, then the command's rules) and what every rule shares;
//! the rules live by resource in `decide/`.

use crate::access::{self, Denial, Principal};
use crate::audit::{Actor, AuditEvent, Value};
use crate::command::{AppAttributes, BuildOutcome, Command};
use crate::error::DomainError;
use crate::event::Event;
use crate::ids::{Guid, IdGen, Timestamp, UNNUMBERED};
use crate::limits;
use crate::model::{
    is_custom_buildpack, obfuscate_url_credentials, App, Build, BuildState, DerivedPackageState,
    Droplet, HealthCheckType, Org, Package, PackageState, ProcessRef, ProcessState, Space,
    DEFAULT_STACK_GUID,
};
use crate::role::{valid_user_id, Membership, RoleKind};
use crate::state::State;
use crate::usage::{
    process_change_emits, process_event, reseed_event, reseed_other_event, staging_event,
    Placement, ProcessFootprint, UsageEvent, UsageState,
};

mod apps;
mod builds;
mod orgs;
mod processes;
mod roles;
mod spaces;
mod tasks;
mod v3;

use apps::*;
use builds::*;
use orgs::*;
use roles::*;
use spaces::*;
use v3::*;

pub use builds::buildpack_guid;

/// When staging completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagingMode {
    /// In the same command that starts it (a single node with no runtime).
    Immediate,
    /// When a runtime reports it (`CompleteBuild`).
    External,
}

/// Operator settings the rules depend on (CC's config defaults in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// `default_app_memory` [1024].
    pub default_memory_mb: i64,
    /// `default_app_disk_in_mb` [1024].
    pub default_disk_mb: i64,
    /// `maximum_app_disk_in_mb` [2048].
    pub max_disk_mb: i64,
    /// `maximum_health_check_timeout` [180].
    pub max_health_check_timeout: i64,
    /// The most memory (MB) one instance may ask for [1048576]; at most
    /// [`limits::MAX_MEMORY_MB`].
    pub max_memory_mb: i64,
    /// Default log rate limit [1048576].
    pub default_log_rate_limit: i64,
    /// `default_app_ssh_access` [true].
    pub default_enable_ssh: bool,
    /// When builds complete.
    pub staging_mode: StagingMode,
    /// Buildpack immediate staging reports when the app requested none.
    pub default_buildpack: String,
    /// In immediate mode, seconds a task runs before tally completes it (0: it succeeds in the
    /// command that creates it; otherwise tally's task clock completes it).
    pub immediate_task_seconds: u64,
}

impl Default for DomainConfig {
    fn default() -> Self {
        Self {
            default_memory_mb: 1024,
            default_disk_mb: 1024,
            max_disk_mb: 2048,
            max_health_check_timeout: 180,
            max_memory_mb: 1_048_576,
            default_log_rate_limit: 1_048_576,
            default_enable_ssh: true,
            staging_mode: StagingMode::Immediate,
            default_buildpack: "binary_buildpack".to_owned(),
            immediate_task_seconds: 0,
        }
    }
}

/// The inputs of a decision besides the table and the command.
pub struct Inputs<'a> {
    /// Now.
    pub now: Timestamp,
    /// Where fresh guids come from.
    pub ids: &'a mut dyn IdGen,
    /// Who asked.
    pub actor: &'a Actor,
    /// Operator settings.
    pub config: &'a DomainConfig,
    /// The caller whose rights the command needs, or `None` for tally itself.
    pub principal: Option<&'a Principal>,
    /// When the current usage epoch began (the last purge-and-reseed), if one did: usage events
    /// from before it are gone.
    pub epoch_started_at: Option<Timestamp>,
}

/// Decides a command against the table. A refusal changes nothing.
pub fn decide(
    state: &State,
    command: &Command,
    inputs: &mut Inputs<'_>,
) -> Result<Vec<Event>, DomainError> {
    if let Some(principal) = inputs.principal {
        match access::authorize(principal.subject(), state, command) {
            // A missing object: the rules below name it (AppNotFound, SpaceNotFound, ...).
            Ok(()) | Err(Denial::NotFound) => {}
            Err(denial) => return Err(DomainError::Denied(denial)),
        }
    }
    let mut out = Decision { events: Vec::new() };
    match command {
        Command::CreateOrg { guid, name } => create_org(state, *guid, name, inputs, &mut out)?,
        Command::RenameOrg { guid, name } => rename_org(state, *guid, name, inputs, &mut out)?,
        Command::DeleteOrg { guid, recursive } => {
            delete_org(state, *guid, *recursive, inputs, &mut out)?
        }
        Command::CreateSpace {
            guid,
            org_guid,
            name,
        } => create_space(state, *guid, *org_guid, name, inputs, &mut out)?,
        Command::RenameSpace { guid, name } => rename_space(state, *guid, name, inputs, &mut out)?,
        Command::DeleteSpace { guid, recursive } => {
            delete_space(state, *guid, *recursive, inputs, &mut out)?
        }
        Command::CreateApp {
            guid,
            attributes,
            audit_request,
        } => create_app(state, *guid, attributes, audit_request, inputs, &mut out)?,
        Command::UpdateApp {
            guid,
            attributes,
            audit_request,
        } => update_app(state, *guid, attributes, audit_request, inputs, &mut out)?,
        Command::DeleteApp { guid, recursive } => {
            let app = find_app(state, *guid)?;
            let space = find_space(state, app.space_guid)?;
            delete_app(state, app, space, inputs, &mut out);
            out.audit(
                inputs,
                "audit.app.delete-request",
                app,
                space,
                Value::request(Value::object([("recursive", Value::Bool(*recursive))])),
            );
        }
        Command::RestageApp { guid } => restage_app(state, *guid, inputs, &mut out)?,
        Command::UploadPackage {
            app_guid,
            sha256,
            size_bytes,
        } => upload_package(state, *app_guid, sha256, *size_bytes, inputs, &mut out)?,
        Command::GrantRole(membership) => grant_role(state, membership, inputs, &mut out)?,
        Command::RevokeRole {
            membership,
            recursive,
        } => revoke_role(state, membership, *recursive, inputs, &mut out)?,
        Command::CreateAppV3 {
            guid,
            name,
            space_guid,
            environment_json,
            lifecycle,
            audit_request,
        } => create_app_v3(
            state,
            (*guid, name, *space_guid),
            environment_json.as_ref(),
            lifecycle,
            audit_request,
            inputs,
            &mut out,
        )?,
        Command::UpdateAppV3 {
            guid,
            name,
            lifecycle,
            audit_request,
        } => update_app_v3(
            state,
            *guid,
            name.as_ref(),
            lifecycle,
            audit_request,
            inputs,
            &mut out,
        )?,
        Command::SetEnvironment {
            guid,
            expected,
            environment_json,
            audit_request,
        } => set_environment(
            state,
            *guid,
            (expected, environment_json),
            audit_request,
            inputs,
            &mut out,
        )?,
        Command::AppAction { guid, action } => app_action(state, *guid, *action, inputs, &mut out)?,
        Command::DeleteAppV3 { guid } => delete_app_v3(state, *guid, inputs, &mut out)?,
        Command::ScaleProcess {
            guid,
            scale,
            audit_request,
        } => scale_process(state, *guid, scale, audit_request, inputs, &mut out)?,
        Command::UpdateProcess {
            guid,
            update,
            audit_request,
        } => update_process(state, *guid, update, audit_request, inputs, &mut out)?,
        Command::CreatePackage {
            guid,
            app_guid,
            docker_image,
            audit_request,
        } => create_package(
            state,
            (*guid, *app_guid),
            docker_image.as_deref(),
            audit_request,
            inputs,
            &mut out,
        )?,
        Command::UploadPackageBits {
            guid,
            sha256,
            size_bytes,
        } => upload_package_bits(state, *guid, (sha256, *size_bytes), inputs, &mut out)?,
        Command::CreateBuild {
            guid,
            package_guid,
            audit_request,
        } => create_build(state, *guid, *package_guid, audit_request, inputs, &mut out)?,
        Command::SetCurrentDroplet {
            app_guid,
            droplet_guid,
        } => set_current_droplet(state, *app_guid, *droplet_guid, inputs, &mut out)?,
        Command::CreateTask {
            guid,
            app_guid,
            spec,
            audit_request,
        } => tasks::create_task(
            state,
            (*guid, *app_guid),
            spec,
            audit_request,
            inputs,
            &mut out,
        )?,
        Command::CancelTask { guid } => tasks::cancel_task(state, *guid, inputs, &mut out)?,
        Command::CompleteTask {
            guid,
            failed,
            failure_reason,
        } => tasks::complete_task(
            state,
            *guid,
            (*failed, failure_reason.as_deref()),
            inputs,
            &mut out,
        )?,
        Command::CompleteBuild {
            build_guid,
            outcome,
        } => {
            let app = state
                .app_of_build(*build_guid)
                .ok_or(DomainError::BuildNotFound(*build_guid))?;
            let space = find_space(state, app.space_guid)?;
            let mut app = app.clone();
            if app
                .build
                .as_ref()
                .is_none_or(|b| b.state != BuildState::Staging)
            {
                return Err(DomainError::BuildNotStaging(*build_guid));
            }
            check_report(outcome)?;
            let was_started = app.state == ProcessState::Started;
            complete_build(&mut app, space, outcome, inputs, &mut out);
            let v2 = !crate::is_v3_build(*build_guid);
            match outcome {
                BuildOutcome::Staged {
                    other_process_types,
                    ..
                } => {
                    if v2 {
                        // CC's v2 `start_process` writes BUILDPACK_SET for every process.
                        processes::buildpack_set_others(state, &app, space, inputs, &mut out);
                    }
                    processes::create_from_droplet(
                        state,
                        &app,
                        other_process_types,
                        space,
                        inputs,
                        &mut out,
                    );
                }
                BuildOutcome::Failed { .. } if v2 && was_started => {
                    // A failed v2 staging stops the app (`V2::AppStop`): every process.
                    let steps = [ProcessState::Stopped];
                    processes::move_others(state, &app, &steps, space, inputs, &mut out);
                }
                BuildOutcome::Failed { .. } => {}
            }
            out.events.insert(0, Event::AppUpdated(app));
        }
    }
    Ok(out.events)
}

/// Reference §4.1: one STARTED event per started process, all with one `created_at`, in the
/// order processes were created (guid breaks ties).
pub fn reseed(state: &State, now: Timestamp) -> Vec<UsageEvent> {
    let mut started: Vec<ProcessRef<'_>> = state
        .apps()
        .filter(|app| app.state == ProcessState::Started)
        .map(ProcessRef::Web)
        .chain(state.other_processes().filter_map(|p| {
            let app = state.app(p.app_guid)?;
            (p.state == ProcessState::Started).then_some(ProcessRef::Other(app, p))
        }))
        .collect();
    started.sort_by_key(|p| (p.created_at(), p.guid()));
    started
        .into_iter()
        .filter_map(|p| {
            let space = state.space(p.app().space_guid)?;
            Some(match p {
                ProcessRef::Web(app) => reseed_event(now, app, Placement { space }),
                ProcessRef::Other(app, other) => {
                    reseed_other_event(now, app, other, Placement { space })
                }
            })
        })
        .collect()
}

struct Decision {
    events: Vec<Event>,
}

impl Decision {
    fn usage(&mut self, event: UsageEvent) {
        self.events.push(Event::UsageRecorded(event));
    }

    fn audit(
        &mut self,
        inputs: &mut Inputs<'_>,
        kind: &str,
        app: &App,
        space: &Space,
        metadata: Value,
    ) {
        self.events.push(Event::AuditRecorded(AuditEvent {
            guid: UNNUMBERED,
            created_at: inputs.now,
            event_type: kind.to_owned(),
            actor: inputs.actor.clone(),
            actee: app.guid.to_string(),
            actee_type: "app".to_owned(),
            actee_name: app.name.clone(),
            metadata,
            space_guid: Some(space.guid),
            organization_guid: Some(space.org_guid),
        }));
    }
}

fn find_app(state: &State, guid: Guid) -> Result<&App, DomainError> {
    state.app(guid).ok_or(DomainError::AppNotFound(guid))
}

fn find_space(state: &State, guid: Guid) -> Result<&Space, DomainError> {
    state.space(guid).ok_or(DomainError::SpaceNotFound(guid))
}

/// CC's name rule `/\A[[:alnum:][:punct:][:print:]]+\Z/` (non-empty, printable) and its
/// length limit, for an org or a space.
fn check_name(name: &str, resource: &'static str) -> Result<(), DomainError> {
    if !valid_name(name) {
        return Err(DomainError::InvalidName(resource));
    }
    if limits::too_long(name, limits::NAME) {
        return Err(DomainError::NameTooLong(resource));
    }
    Ok(())
}

/// CC's name format: non-empty, printable.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_control)
}
