//! App usage events (reference §1) and the rules of reference §2 that decide when they exist.

use crate::ids::{Guid, Timestamp};
use crate::model::{
    obfuscate_url_credentials, App, Process, ProcessState, Space, STAGING_MEMORY_MB,
    WEB_PROCESS_TYPE,
};

/// Every value CC writes to `state` or `previous_state` (reference §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageState {
    /// Process desired running (also footprint changes while running).
    Started,
    /// Process desired stopped.
    Stopped,
    /// Staging finished and the buildpack is known.
    BuildpackSet,
    /// A task started running.
    TaskStarted,
    /// A task ended.
    TaskStopped,
    /// Staging started.
    StagingStarted,
    /// Staging ended.
    StagingStopped,
    /// Build state before a staging event (previous_state only).
    Staging,
    /// Build state before BUILDPACK_SET from a build (previous_state only).
    Staged,
    /// Task state (previous_state only).
    Pending,
    /// Task state (previous_state only).
    Running,
    /// Task state (previous_state only).
    Canceling,
}

impl UsageState {
    /// CC's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "STARTED",
            Self::Stopped => "STOPPED",
            Self::BuildpackSet => "BUILDPACK_SET",
            Self::TaskStarted => "TASK_STARTED",
            Self::TaskStopped => "TASK_STOPPED",
            Self::StagingStarted => "STAGING_STARTED",
            Self::StagingStopped => "STAGING_STOPPED",
            Self::Staging => "STAGING",
            Self::Staged => "STAGED",
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Canceling => "CANCELING",
        }
    }

    /// All values, in a fixed order (their on-disk tags follow this order).
    pub const ALL: [UsageState; 12] = [
        Self::Started,
        Self::Stopped,
        Self::BuildpackSet,
        Self::TaskStarted,
        Self::TaskStopped,
        Self::StagingStarted,
        Self::StagingStopped,
        Self::Staging,
        Self::Staged,
        Self::Pending,
        Self::Running,
        Self::Canceling,
    ];
}

impl From<ProcessState> for UsageState {
    fn from(state: ProcessState) -> Self {
        match state {
            ProcessState::Started => Self::Started,
            ProcessState::Stopped => Self::Stopped,
        }
    }
}

/// One app usage event, with CC's columns (reference §1.1), denormalized at event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    /// Event guid (random; the process guid for reseeded events).
    pub guid: Guid,
    /// When it was written.
    pub created_at: Timestamp,
    /// `state`.
    pub state: UsageState,
    /// `previous_state`.
    pub previous_state: Option<UsageState>,
    /// `instance_count`.
    pub instance_count: i64,
    /// `previous_instance_count`.
    pub previous_instance_count: Option<i64>,
    /// `memory_in_mb_per_instance`.
    pub memory_in_mb_per_instance: i64,
    /// `previous_memory_in_mb_per_instance`.
    pub previous_memory_in_mb_per_instance: Option<i64>,
    /// Process guid as text; `""` for staging and task events.
    pub app_guid: String,
    /// Process name; `""` for staging and task events.
    pub app_name: String,
    /// Space guid.
    pub space_guid: Guid,
    /// Space name at event time.
    pub space_name: String,
    /// Org guid.
    pub org_guid: Guid,
    /// Buildpack receipt guid.
    pub buildpack_guid: Option<Guid>,
    /// Buildpack name, obfuscated.
    pub buildpack_name: Option<String>,
    /// `package_state` (derived for process events, raw for staging events).
    pub package_state: Option<String>,
    /// `previous_package_state`.
    pub previous_package_state: Option<String>,
    /// v3 app guid.
    pub parent_app_guid: Option<Guid>,
    /// v3 app name.
    pub parent_app_name: Option<String>,
    /// Process type (`web`); NULL for staging and task events.
    pub process_type: Option<String>,
    /// Task guid.
    pub task_guid: Option<Guid>,
    /// Task name.
    pub task_name: Option<String>,
}

/// The columns of a process that usage events look at (the footprint and state, §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessFootprint {
    /// Desired state.
    pub state: ProcessState,
    /// Instances.
    pub instances: i64,
    /// Memory per instance.
    pub memory_mb: i64,
    /// Legacy production flag.
    pub production: bool,
}

impl ProcessFootprint {
    /// The footprint of an app's web process.
    pub fn of(app: &App) -> Self {
        Self {
            state: app.state,
            instances: app.instances,
            memory_mb: app.memory_mb,
            production: app.production,
        }
    }
}

impl ProcessFootprint {
    /// The footprint of a process other than `web` (the legacy production flag is the web
    /// process's).
    pub fn of_other(process: &Process) -> Self {
        Self {
            state: process.state,
            instances: process.instances,
            memory_mb: process.memory_mb,
            production: false,
        }
    }
}

/// An event about the `web` process, re-addressed to another process of the same app: its
/// guid, type, instances and memory.
pub fn for_other_process(mut event: UsageEvent, process: &Process) -> UsageEvent {
    event.app_guid = process.guid.to_string();
    event.instance_count = process.instances;
    event.memory_in_mb_per_instance = process.memory_mb;
    event.process_type = Some(process.process_type.clone());
    event
}

/// Reference §2.1: whether saving a process from `before` to `after` writes a usage event.
pub fn process_change_emits(before: ProcessFootprint, after: ProcessFootprint) -> bool {
    let was_started = before.state == ProcessState::Started;
    let is_started = after.state == ProcessState::Started;
    if was_started != is_started {
        return true;
    }
    is_started
        && (before.instances != after.instances
            || before.memory_mb != after.memory_mb
            || before.production != after.production)
}

/// Where a usage event's space and org columns come from.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    /// The app's space.
    pub space: &'a Space,
}

/// A process event (`create_from_process`): `state` is the given state, `previous_*` are the
/// values before this save, package state is derived and previous package state `UNKNOWN`.
pub fn process_event(
    guid: Guid,
    now: Timestamp,
    app: &App,
    placement: Placement<'_>,
    state: UsageState,
    before: ProcessFootprint,
) -> UsageEvent {
    UsageEvent {
        guid,
        created_at: now,
        state,
        previous_state: Some(before.state.into()),
        instance_count: app.instances,
        previous_instance_count: Some(before.instances),
        memory_in_mb_per_instance: app.memory_mb,
        previous_memory_in_mb_per_instance: Some(before.memory_mb),
        app_guid: app.process_guid().to_string(),
        app_name: app.name.clone(),
        space_guid: placement.space.guid,
        space_name: placement.space.name.clone(),
        org_guid: placement.space.org_guid,
        buildpack_guid: app.usage_buildpack_guid(),
        buildpack_name: app.usage_buildpack_name(),
        package_state: Some(app.package_state().as_str().to_owned()),
        previous_package_state: Some("UNKNOWN".to_owned()),
        parent_app_guid: Some(app.guid),
        parent_app_name: Some(app.name.clone()),
        process_type: Some(WEB_PROCESS_TYPE.to_owned()),
        task_guid: None,
        task_name: None,
    }
}

/// A staging event (`create_from_build`): empty process columns, memory 1024, raw package state.
pub fn staging_event(
    guid: Guid,
    now: Timestamp,
    app: &App,
    placement: Placement<'_>,
    state: UsageState,
) -> UsageEvent {
    let package_state = app.package.as_ref().map(|p| p.state.as_str().to_owned());
    let (buildpack_guid, buildpack_name) = match &app.latest_droplet {
        Some(d)
            if app
                .build
                .as_ref()
                .is_some_and(|b| b.package_guid == d.package_guid) =>
        {
            (d.buildpack_guid, d.buildpack_name.clone())
        }
        _ if app.is_docker() => (None, None),
        _ => (
            None,
            app.buildpack.as_deref().map(obfuscate_url_credentials),
        ),
    };
    UsageEvent {
        guid,
        created_at: now,
        state,
        previous_state: Some(UsageState::Staging),
        instance_count: 1,
        previous_instance_count: Some(1),
        memory_in_mb_per_instance: STAGING_MEMORY_MB,
        previous_memory_in_mb_per_instance: Some(STAGING_MEMORY_MB),
        app_guid: String::new(),
        app_name: String::new(),
        space_guid: placement.space.guid,
        space_name: placement.space.name.clone(),
        org_guid: placement.space.org_guid,
        buildpack_guid,
        buildpack_name,
        package_state: package_state.clone(),
        previous_package_state: package_state,
        parent_app_guid: Some(app.guid),
        parent_app_name: Some(app.name.clone()),
        process_type: None,
        task_guid: None,
        task_name: None,
    }
}

/// A task event (reference §1.2 `create_from_task`): one instance of the task's memory, the
/// package `STAGED`, no process.
pub fn task_event(
    now: Timestamp,
    task: &crate::model::Task,
    app: &App,
    placement: Placement<'_>,
    (state, previous): (UsageState, UsageState),
) -> UsageEvent {
    UsageEvent {
        guid: crate::ids::UNNUMBERED,
        created_at: now,
        state,
        previous_state: Some(previous),
        instance_count: 1,
        previous_instance_count: Some(1),
        memory_in_mb_per_instance: task.memory_mb,
        previous_memory_in_mb_per_instance: Some(task.memory_mb),
        app_guid: String::new(),
        app_name: String::new(),
        space_guid: placement.space.guid,
        space_name: placement.space.name.clone(),
        org_guid: placement.space.org_guid,
        buildpack_guid: None,
        buildpack_name: None,
        package_state: Some("STAGED".to_owned()),
        previous_package_state: Some("STAGED".to_owned()),
        parent_app_guid: Some(app.guid),
        parent_app_name: Some(app.name.clone()),
        process_type: None,
        task_guid: Some(task.guid),
        task_name: Some(task.name.clone()),
    }
}

/// A reseeded event (reference §4.1): guid = process guid, previous = current,
/// previous package state `UNKNOWN`, buildpack from the desired droplet. Unlike CC, which leaves
/// `process_type` NULL by mistake, tally sets it to the process type.
pub fn reseed_event(now: Timestamp, app: &App, placement: Placement<'_>) -> UsageEvent {
    let droplet = app.current_droplet();
    UsageEvent {
        guid: app.process_guid(),
        created_at: now,
        state: UsageState::Started,
        previous_state: Some(UsageState::Started),
        instance_count: app.instances,
        previous_instance_count: Some(app.instances),
        memory_in_mb_per_instance: app.memory_mb,
        previous_memory_in_mb_per_instance: Some(app.memory_mb),
        app_guid: app.process_guid().to_string(),
        app_name: app.name.clone(),
        space_guid: placement.space.guid,
        space_name: placement.space.name.clone(),
        org_guid: placement.space.org_guid,
        buildpack_guid: droplet.and_then(|d| d.buildpack_guid),
        buildpack_name: droplet.and_then(|d| d.buildpack_name.clone()),
        package_state: Some(app.reseed_package_state().as_str().to_owned()),
        previous_package_state: Some("UNKNOWN".to_owned()),
        parent_app_guid: Some(app.guid),
        parent_app_name: Some(app.name.clone()),
        process_type: Some(WEB_PROCESS_TYPE.to_owned()),
        task_guid: None,
        task_name: None,
    }
}

/// [`reseed_event`] for a started process other than `web`.
pub fn reseed_other_event(
    now: Timestamp,
    app: &App,
    process: &Process,
    placement: Placement<'_>,
) -> UsageEvent {
    let mut event = for_other_process(reseed_event(now, app, placement), process);
    event.guid = process.guid;
    event.previous_instance_count = Some(process.instances);
    event.previous_memory_in_mb_per_instance = Some(process.memory_mb);
    event
}
