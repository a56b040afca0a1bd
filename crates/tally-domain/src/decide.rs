//! `decide`: a command, the current table and its inputs (time, ids, actor, settings) in; the
//! events to append, or the reason for refusal, out. Pure and synchronous.

use crate::access::{self, Denial, Principal};
use crate::audit::{Actor, AuditEvent};
use crate::command::{AppAttributes, BuildOutcome, Command};
use crate::error::DomainError;
use crate::event::Event;
use crate::ids::{Guid, IdGen, Timestamp, UNNUMBERED};
use crate::limits;
use crate::model::{
    is_custom_buildpack, obfuscate_url_credentials, App, Build, BuildState, DerivedPackageState,
    Droplet, HealthCheckType, Org, Package, PackageState, ProcessState, Space, DEFAULT_STACK_GUID,
};
use crate::role::{valid_user_id, Membership, RoleKind};
use crate::state::State;
use crate::usage::{
    process_change_emits, process_event, reseed_event, staging_event, Placement, ProcessFootprint,
    UsageEvent, UsageState,
};

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
            delete_app(app, space, inputs, &mut out);
            out.audit(
                inputs,
                "audit.app.delete-request",
                app,
                space,
                format!("{{\"request\":{{\"recursive\":{recursive}}}}}"),
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
            complete_build(&mut app, space, outcome, inputs, &mut out);
            out.events.insert(0, Event::AppUpdated(app));
        }
    }
    Ok(out.events)
}

/// Reference §4.1: one STARTED event per started process, all with one `created_at`, in the
/// order processes were created (guid breaks ties).
pub fn reseed(state: &State, now: Timestamp) -> Vec<UsageEvent> {
    let mut started: Vec<&App> = state
        .apps()
        .filter(|app| app.state == ProcessState::Started)
        .collect();
    started.sort_by_key(|app| (app.created_at, app.guid));
    started
        .into_iter()
        .filter_map(|app| {
            let space = state.space(app.space_guid)?;
            Some(reseed_event(now, app, Placement { space }))
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
        metadata: String,
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

/// The org a role's resource belongs to (the org itself for org roles), and the space for
/// space roles. Fails when the resource does not exist.
fn role_placement(state: &State, m: &Membership) -> Result<(Guid, Option<Guid>), DomainError> {
    if m.role.is_org_role() {
        state
            .org(m.resource)
            .ok_or(DomainError::OrgNotFound(m.resource))?;
        Ok((m.resource, None))
    } else {
        let space = find_space(state, m.resource)?;
        Ok((space.org_guid, Some(space.guid)))
    }
}

fn role_audit(
    inputs: &mut Inputs<'_>,
    m: &Membership,
    placement: (Guid, Option<Guid>),
    change: &str,
    metadata: &str,
) -> Event {
    Event::AuditRecorded(AuditEvent {
        guid: UNNUMBERED,
        created_at: inputs.now,
        event_type: format!("audit.user.{}_{change}", m.role.audit_name()),
        actor: inputs.actor.clone(),
        actee: m.user.clone(),
        actee_type: "user".to_owned(),
        actee_name: String::new(),
        metadata: metadata.to_owned(),
        space_guid: placement.1,
        organization_guid: Some(placement.0),
    })
}

fn grant_role(
    state: &State,
    m: &Membership,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let placement = role_placement(state, m)?;
    if !valid_user_id(&m.user) {
        return Err(DomainError::InvalidRelation(format!(
            "Invalid user id: {:?}",
            m.user
        )));
    }
    if !m.role.is_org_role() && !state.has_role(&m.user, placement.0, RoleKind::OrgUser) {
        return Err(DomainError::InvalidRelation(format!(
            "The user {} is not a member of the space's organization {}",
            m.user, placement.0
        )));
    }
    if state.has_role(&m.user, m.resource, m.role) {
        return Ok(());
    }
    out.events.push(Event::RoleGranted(m.clone()));
    out.events
        .push(role_audit(inputs, m, placement, "add", "{\"request\":{}}"));
    Ok(())
}

fn revoke_role(
    state: &State,
    m: &Membership,
    recursive: bool,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let placement = role_placement(state, m)?;
    if !state.has_role(&m.user, m.resource, m.role) {
        return Ok(());
    }
    let metadata = format!("{{\"request\":{{\"recursive\":{recursive}}}}}");
    if m.role == RoleKind::OrgUser {
        let space_roles: Vec<Membership> = state
            .roles_of(&m.user)
            .filter(|(resource, role)| {
                !role.is_org_role()
                    && state
                        .space(*resource)
                        .is_some_and(|space| space.org_guid == m.resource)
            })
            .map(|(resource, role)| Membership {
                resource,
                role,
                user: m.user.clone(),
            })
            .collect();
        if !space_roles.is_empty() && !recursive {
            return Err(DomainError::AssociationNotEmpty {
                association: "user",
                resource: "spaces in the org",
            });
        }
        for space_role in space_roles {
            let space_placement = (m.resource, Some(space_role.resource));
            out.events.push(Event::RoleRevoked(space_role.clone()));
            out.events.push(role_audit(
                inputs,
                &space_role,
                space_placement,
                "remove",
                &metadata,
            ));
        }
    }
    out.events.push(Event::RoleRevoked(m.clone()));
    out.events
        .push(role_audit(inputs, m, placement, "remove", &metadata));
    Ok(())
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

fn create_org(
    state: &State,
    guid: Guid,
    name: &str,
    inputs: &Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    check_name(name, "organization")?;
    if state.org_named(name).is_some() {
        return Err(DomainError::OrgNameTaken(name.to_owned()));
    }
    out.events.push(Event::OrgCreated(Org {
        guid,
        name: name.to_owned(),
        created_at: inputs.now,
        updated_at: inputs.now,
    }));
    Ok(())
}

fn rename_org(
    state: &State,
    guid: Guid,
    name: &str,
    inputs: &Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let org = state.org(guid).ok_or(DomainError::OrgNotFound(guid))?;
    check_name(name, "organization")?;
    if state
        .org_named(name)
        .is_some_and(|other| other.guid != guid)
    {
        return Err(DomainError::OrgNameTaken(name.to_owned()));
    }
    out.events.push(Event::OrgUpdated(Org {
        name: name.to_owned(),
        updated_at: inputs.now,
        ..org.clone()
    }));
    Ok(())
}

fn delete_org(
    state: &State,
    guid: Guid,
    recursive: bool,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    state.org(guid).ok_or(DomainError::OrgNotFound(guid))?;
    let spaces: Vec<&Space> = state.spaces_in(guid).collect();
    if !spaces.is_empty() && !recursive {
        return Err(DomainError::AssociationNotEmpty {
            association: "spaces",
            resource: "organization",
        });
    }
    for space in spaces {
        delete_space_contents(state, space, inputs, out);
        out.events.push(Event::SpaceDeleted { guid: space.guid });
    }
    out.events.push(Event::OrgDeleted { guid });
    Ok(())
}

fn create_space(
    state: &State,
    guid: Guid,
    org_guid: Guid,
    name: &str,
    inputs: &Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    state
        .org(org_guid)
        .ok_or(DomainError::OrgNotFound(org_guid))?;
    check_name(name, "space")?;
    if state.space_named(org_guid, name).is_some() {
        return Err(DomainError::SpaceNameTaken(name.to_owned()));
    }
    out.events.push(Event::SpaceCreated(Space {
        guid,
        name: name.to_owned(),
        org_guid,
        created_at: inputs.now,
        updated_at: inputs.now,
    }));
    Ok(())
}

fn rename_space(
    state: &State,
    guid: Guid,
    name: &str,
    inputs: &Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let space = find_space(state, guid)?;
    check_name(name, "space")?;
    if state
        .space_named(space.org_guid, name)
        .is_some_and(|other| other.guid != guid)
    {
        return Err(DomainError::SpaceNameTaken(name.to_owned()));
    }
    out.events.push(Event::SpaceUpdated(Space {
        name: name.to_owned(),
        updated_at: inputs.now,
        ..space.clone()
    }));
    Ok(())
}

fn delete_space(
    state: &State,
    guid: Guid,
    recursive: bool,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let space = find_space(state, guid)?;
    if state.apps_in(guid).next().is_some() && !recursive {
        return Err(DomainError::AssociationNotEmpty {
            association: "apps",
            resource: "space",
        });
    }
    delete_space_contents(state, space, inputs, out);
    out.events.push(Event::SpaceDeleted { guid });
    Ok(())
}

fn delete_space_contents(
    state: &State,
    space: &Space,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    for app in state.apps_in(space.guid) {
        delete_app(app, space, inputs, out);
        out.audit(
            inputs,
            "audit.app.delete-request",
            app,
            space,
            "{\"request\":{\"recursive\":true}}".to_owned(),
        );
    }
}

/// Deleting a started process stops it first (reference §2.1), so it emits STOPPED.
fn delete_app(app: &App, space: &Space, inputs: &mut Inputs<'_>, out: &mut Decision) {
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

fn create_app(
    state: &State,
    guid: Guid,
    attributes: &AppAttributes,
    audit_request: &str,
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
    let mut app = App {
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
    };
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
        format!("{{\"request\":{audit_request}}}"),
    );
    for event in usage {
        out.usage(event);
    }
    stage_if_needed(&mut app, space, inputs, out);
    out.events.insert(0, Event::AppCreated(app));
    Ok(())
}

fn update_app(
    state: &State,
    guid: Guid,
    attributes: &AppAttributes,
    audit_request: &str,
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
        format!("{{\"request\":{audit_request}}}"),
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
    if requested_state == Some(ProcessState::Started) {
        stage_if_needed(&mut app, space, inputs, out);
    }
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// A new `version` whenever a started process changes state, memory, health check or ports.
fn version_changes(before: &App, after: &App) -> bool {
    let started = before.state == ProcessState::Started || after.state == ProcessState::Started;
    started
        && (before.state != after.state
            || before.memory_mb != after.memory_mb
            || before.health_check_type != after.health_check_type
            || before.health_check_http_endpoint != after.health_check_http_endpoint
            || before.ports != after.ports)
}

fn require_bits(app: &App) -> Result<(), DomainError> {
    if app.package.is_none() && app.latest_droplet.is_none() {
        return Err(DomainError::AppPackageInvalid(
            "bits have not been uploaded".to_owned(),
        ));
    }
    Ok(())
}

fn restage_app(
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
    out.audit(inputs, "audit.app.restage", &app, space, "{}".to_owned());
    stage_if_needed(&mut app, space, inputs, out);
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

fn upload_package(
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
    out.audit(
        inputs,
        "audit.app.upload-bits",
        &app,
        space,
        "{}".to_owned(),
    );
    out.events.insert(0, Event::AppUpdated(app));
    Ok(())
}

/// Starts a build when a started app's latest package is not staged (reference §2.2, v2 flow),
/// and completes it at once in immediate staging mode.
fn stage_if_needed(app: &mut App, space: &Space, inputs: &mut Inputs<'_>, out: &mut Decision) {
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
        format!("{{\"build_guid\":\"{build_guid}\",\"package_guid\":\"{package_guid}\"}}"),
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

const BUILDPACK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7a11_b0c0_5eed_4b1d_8000_0000_0000_0b9d);

/// Reference §2.2: success writes STAGING_STOPPED then BUILDPACK_SET for the process; failure
/// writes STAGING_STOPPED and stops the app (STOPPED if it was started).
fn complete_build(
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
                format!(
                    "{{\"build_guid\":\"{}\",\"package_guid\":\"{}\",\"droplet_guid\":\"{}\"}}",
                    build.guid, build.package_guid, droplet_guid
                ),
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
                format!(
                    "{{\"build_guid\":\"{}\",\"package_guid\":\"{}\",\"error_message\":{}}}",
                    build.guid,
                    build.package_guid,
                    json_string(reason)
                ),
            );
        }
    }
}

/// A JSON string literal (the domain writes a few metadata objects by hand).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Applies sent attributes with reference §5.2's rules; returns the requested state, if any,
/// for the caller to apply (starting has preconditions).
fn apply_attributes(
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

/// A staging runtime's report is bounded like what a client sends.
fn check_report(outcome: &BuildOutcome) -> Result<(), DomainError> {
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

/// The length limits of `limits`, and one line for what is shown on one line.
fn check_lengths(a: &AppAttributes) -> Result<(), DomainError> {
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

fn set_if_some(target: &mut Option<String>, value: &Option<String>) {
    if let Some(v) = value {
        *target = Some(v.clone());
    }
}
