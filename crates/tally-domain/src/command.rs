//! Commands: what a client asks for, already parsed from its request but not yet validated
//! against the rules of reference §5.2 (that is `decide`'s job).

use crate::access::Principal;
use crate::audit::Actor;
use crate::ids::Guid;
use crate::model::DockerCredentials;
use crate::role::Membership;

/// App attributes as a client sent them (reference §5.2); `None` means "not sent".
/// Numbers are wide and signed so that out-of-range input reaches validation intact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppAttributes {
    /// `name`.
    pub name: Option<String>,
    /// `space_guid`.
    pub space_guid: Option<Guid>,
    /// `stack_guid` (an unknown guid falls back to the default stack on create).
    pub stack_guid: Option<Guid>,
    /// `memory`, MB.
    pub memory: Option<i64>,
    /// `instances`.
    pub instances: Option<i64>,
    /// `disk_quota`, MB.
    pub disk_quota: Option<i64>,
    /// `log_rate_limit`: accepted and ignored, as CC does.
    pub log_rate_limit: Option<i64>,
    /// `state`, as sent.
    pub state: Option<String>,
    /// `buildpack`.
    pub buildpack: Option<String>,
    /// `command`.
    pub command: Option<String>,
    /// `health_check_type`, as sent.
    pub health_check_type: Option<String>,
    /// `health_check_timeout`.
    pub health_check_timeout: Option<i64>,
    /// `health_check_http_endpoint`.
    pub health_check_http_endpoint: Option<String>,
    /// `diego`.
    pub diego: Option<bool>,
    /// `enable_ssh`.
    pub enable_ssh: Option<bool>,
    /// `docker_image`.
    pub docker_image: Option<String>,
    /// `docker_credentials`.
    pub docker_credentials: Option<DockerCredentials>,
    /// `environment_json`, as JSON object text.
    pub environment_json: Option<String>,
    /// `production`.
    pub production: Option<bool>,
    /// `console`.
    pub console: Option<bool>,
    /// `debug`.
    pub debug: Option<String>,
    /// `ports`.
    pub ports: Option<Vec<i64>>,
}

/// How a build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    /// Staged: the droplet's buildpack receipt and detected start command.
    Staged {
        /// Buildpack receipt guid.
        buildpack_guid: Option<Guid>,
        /// Buildpack receipt name.
        buildpack_name: Option<String>,
        /// Start command the buildpack detected.
        detected_start_command: String,
        /// The droplet's other process types and their commands (`worker`, ...), by type.
        other_process_types: Vec<(String, String)>,
    },
    /// Failed with a reason.
    Failed {
        /// Why.
        reason: String,
    },
}

/// `POST /v3/apps/:guid/actions/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppAction {
    /// `start`: needs a current droplet.
    Start,
    /// `stop`.
    Stop,
    /// `restart`: stop (if started), then start; needs a current droplet.
    Restart,
}

impl AppAction {
    /// The audit event it writes (`audit.app.start`, ...).
    pub fn audit_type(self) -> &'static str {
        match self {
            Self::Start => "audit.app.start",
            Self::Stop => "audit.app.stop",
            Self::Restart => "audit.app.restart",
        }
    }
}

/// A task as `POST /v3/apps/:guid/tasks` asks for it (`None`: the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSpec {
    /// `name` (default: 8 hex digits of the guid).
    pub name: Option<String>,
    /// `command` (else the template process's).
    pub command: Option<String>,
    /// `template.process.guid`: the process whose command and footprint are the defaults.
    pub template: Option<Guid>,
    /// `memory_in_mb`.
    pub memory_mb: Option<i64>,
    /// `disk_in_mb`.
    pub disk_mb: Option<i64>,
    /// `log_rate_limit_in_bytes_per_second`.
    pub log_rate_limit: Option<i64>,
    /// `droplet_guid` (default: the app's current droplet).
    pub droplet_guid: Option<Guid>,
}

/// A v3 app's `lifecycle` as sent (`None`: not sent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// `type`: `buildpack` or `docker`.
    pub docker: Option<bool>,
    /// `data.buildpacks` (tally keeps at most one).
    pub buildpacks: Option<Vec<String>>,
    /// `data.stack`.
    pub stack: Option<String>,
}

/// `POST /v3/processes/:guid/actions/scale` as sent, already range-checked by its message
/// rules; the model's rules (the operator's memory and disk limits) are `decide`'s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scale {
    /// `instances`.
    pub instances: Option<i64>,
    /// `memory_in_mb`.
    pub memory_mb: Option<i64>,
    /// `disk_in_mb`.
    pub disk_mb: Option<i64>,
    /// `log_rate_limit_in_bytes_per_second`.
    pub log_rate_limit: Option<i64>,
}

/// `PATCH /v3/processes/:guid` as sent: `Some(None)` clears a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessUpdate {
    /// `command`.
    pub command: Option<Option<String>>,
    /// `health_check.type`.
    pub health_check_type: Option<String>,
    /// `health_check.data.timeout`.
    pub health_check_timeout: Option<Option<i64>>,
    /// `health_check.data.endpoint`.
    pub health_check_endpoint: Option<Option<String>>,
}

/// A state change request. Every variant is decided against the current state by `decide`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create an org.
    CreateOrg {
        /// Its guid (chosen by the caller's id source).
        guid: Guid,
        /// Its name.
        name: String,
    },
    /// Rename an org.
    RenameOrg {
        /// Which.
        guid: Guid,
        /// New name.
        name: String,
    },
    /// Delete an org; refused while it has spaces unless `recursive`.
    DeleteOrg {
        /// Which.
        guid: Guid,
        /// Delete its spaces and apps too.
        recursive: bool,
    },
    /// Create a space.
    CreateSpace {
        /// Its guid.
        guid: Guid,
        /// Its org.
        org_guid: Guid,
        /// Its name.
        name: String,
    },
    /// Rename a space.
    RenameSpace {
        /// Which.
        guid: Guid,
        /// New name.
        name: String,
    },
    /// Delete a space; refused while it has apps unless `recursive`.
    DeleteSpace {
        /// Which.
        guid: Guid,
        /// Delete its apps too.
        recursive: bool,
    },
    /// `POST /v2/apps`.
    CreateApp {
        /// The new app's guid.
        guid: Guid,
        /// Attributes as sent (`name` and `space_guid` required).
        attributes: AppAttributes,
        /// The audit event's `request`, censored.
        audit_request: crate::audit::Value,
    },
    /// `PUT /v2/apps/:guid`.
    UpdateApp {
        /// Which.
        guid: Guid,
        /// Attributes as sent.
        attributes: AppAttributes,
        /// The audit event's `request`, censored.
        audit_request: crate::audit::Value,
    },
    /// `DELETE /v2/apps/:guid`.
    DeleteApp {
        /// Which.
        guid: Guid,
        /// `recursive` as sent.
        recursive: bool,
    },
    /// `POST /v2/apps/:guid/restage`.
    RestageApp {
        /// Which.
        guid: Guid,
    },
    /// `PUT /v2/apps/:guid/bits`: bits already stored, checksummed by the caller.
    UploadPackage {
        /// Which app.
        app_guid: Guid,
        /// Hex SHA-256 of the bits.
        sha256: String,
        /// Size in bytes.
        size_bytes: u64,
    },
    /// `PUT /v2/spaces/:guid/developers/:user_guid` and the like: give a user a role. Giving a
    /// role the user already holds changes nothing.
    GrantRole(Membership),
    /// `DELETE /v2/spaces/:guid/developers/:user_guid` and the like: take a role away. Taking
    /// away a role the user does not hold changes nothing.
    RevokeRole {
        /// Which role of whom, where.
        membership: Membership,
        /// For org users: also take away the user's roles in the org's spaces (otherwise
        /// refused while there are any).
        recursive: bool,
    },
    /// `POST /v3/apps`: the app and its `web` process (same guid), created STOPPED.
    CreateAppV3 {
        /// The new app's guid.
        guid: Guid,
        /// `name`.
        name: String,
        /// `relationships.space.data.guid`.
        space_guid: Guid,
        /// `environment_variables`, as JSON object text.
        environment_json: Option<String>,
        /// `lifecycle`.
        lifecycle: Lifecycle,
        /// The audit event's `request`, censored.
        audit_request: crate::audit::Value,
    },
    /// `PATCH /v3/apps/:guid`.
    UpdateAppV3 {
        /// Which.
        guid: Guid,
        /// `name`.
        name: Option<String>,
        /// `lifecycle`.
        lifecycle: Lifecycle,
        /// The audit event's `request`, censored.
        audit_request: crate::audit::Value,
    },
    /// `PATCH /v3/apps/:guid/environment_variables`: the merged variables, written only if the
    /// app's variables are still `expected` (the edge merged onto them; on a refusal it merges
    /// again onto the newer ones).
    SetEnvironment {
        /// Which app.
        guid: Guid,
        /// The variables the merge started from, as JSON object text.
        expected: String,
        /// The merged variables, as JSON object text.
        environment_json: String,
        /// The audit event's `request`, censored.
        audit_request: crate::audit::Value,
    },
    /// `POST /v3/apps/:guid/actions/start|stop|restart`.
    AppAction {
        /// Which app.
        guid: Guid,
        /// What to do.
        action: AppAction,
    },
    /// `DELETE /v3/apps/:guid`.
    DeleteAppV3 {
        /// Which.
        guid: Guid,
    },
    /// `POST /v3/processes/:guid/actions/scale` and the app-nested form.
    ScaleProcess {
        /// The process (its guid is its app's for `web`).
        guid: Guid,
        /// What to change.
        scale: Scale,
        /// The audit event's `request`, as sent.
        audit_request: crate::audit::Value,
    },
    /// `PATCH /v3/processes/:guid`.
    UpdateProcess {
        /// The process.
        guid: Guid,
        /// What to change.
        update: ProcessUpdate,
        /// The audit event's `request`, censored.
        audit_request: crate::audit::Value,
    },
    /// `POST /v3/packages`: a bits package awaiting its upload, or a docker image (ready).
    CreatePackage {
        /// The new package's guid.
        guid: Guid,
        /// Its app.
        app_guid: Guid,
        /// `data.image` of a docker package (`None`: bits).
        docker_image: Option<String>,
        /// The audit event's `request`, censored.
        audit_request: crate::audit::Value,
    },
    /// `POST /v3/packages/:guid/upload`: the bits of a package awaiting them, stored.
    UploadPackageBits {
        /// Which package.
        guid: Guid,
        /// Hex SHA-256 of the stored zip.
        sha256: String,
        /// Its size.
        size_bytes: u64,
    },
    /// `POST /v3/builds`: stage a ready package (its guid from [`crate::v3_build_guid`]).
    CreateBuild {
        /// The new build's guid.
        guid: Guid,
        /// The package to stage.
        package_guid: Guid,
        /// The audit event's `request`.
        audit_request: crate::audit::Value,
    },
    /// `PATCH /v3/apps/:guid/relationships/current_droplet`.
    SetCurrentDroplet {
        /// Which app.
        app_guid: Guid,
        /// The droplet (the app's latest).
        droplet_guid: Guid,
    },
    /// `POST /v3/apps/:guid/tasks`: run a task now (RUNNING at once, as CC answers).
    CreateTask {
        /// The new task's guid.
        guid: Guid,
        /// Its app.
        app_guid: Guid,
        /// What was asked.
        spec: TaskSpec,
        /// The audit event's `request`, censored.
        audit_request: crate::audit::Value,
    },
    /// `POST /v3/tasks/:guid/actions/cancel`.
    CancelTask {
        /// Which task.
        guid: Guid,
    },
    /// A runtime (or immediate mode's clock) reports a task's end.
    CompleteTask {
        /// Which task.
        guid: Guid,
        /// Whether it failed.
        failed: bool,
        /// Why, when it failed.
        failure_reason: Option<String>,
    },
    /// A runtime reports a build's end.
    CompleteBuild {
        /// Which build.
        build_guid: Guid,
        /// How it ended.
        outcome: BuildOutcome,
    },
}

/// A command with who asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The command.
    pub command: Command,
    /// Who asked (what audit events name).
    pub actor: Actor,
    /// The caller's identity and scopes, checked by `decide` against the table it decides on;
    /// `None` for tally itself (staging completion, operator commands), which may do anything.
    pub principal: Option<Principal>,
}

impl Envelope {
    /// A command tally gives itself.
    pub fn system(command: Command) -> Self {
        Self {
            command,
            actor: Actor::system(),
            principal: None,
        }
    }
}
