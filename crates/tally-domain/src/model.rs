//! The Cloud Controller resources tally keeps: orgs, spaces, apps (each with its one `web`
//! process), and the package, build and droplet that staging needs.

use crate::ids::{Guid, Timestamp};

/// The guid tally reports for its one stack, `cflinuxfs4`.
pub const DEFAULT_STACK_GUID: Guid = Guid::from_u128(0x5e6f_2d4a_8b1c_4f00_9a00_c0ff_ee00_0001);
/// The name of the default stack.
pub const DEFAULT_STACK_NAME: &str = "cflinuxfs4";
/// Memory CC books for every staging event, whatever the real staging memory (reference §1.2).
pub const STAGING_MEMORY_MB: i64 = 1024;
/// The process type of the one process every app has.
pub const WEB_PROCESS_TYPE: &str = "web";

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    /// Its guid.
    pub guid: Guid,
    /// Unique across orgs.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A space inside an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// Its guid.
    pub guid: Guid,
    /// Unique inside its org.
    pub name: String,
    /// The org it belongs to.
    pub org_guid: Guid,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// Desired state of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Desired running.
    Started,
    /// Desired not running.
    Stopped,
}

impl ProcessState {
    /// CC's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "STARTED",
            Self::Stopped => "STOPPED",
        }
    }

    /// Parses CC's spelling exactly.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "STARTED" => Some(Self::Started),
            "STOPPED" => Some(Self::Stopped),
            _ => None,
        }
    }
}

/// How the platform checks an instance is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckType {
    /// TCP port check (CC's default).
    Port,
    /// Process is alive.
    Process,
    /// HTTP GET on an endpoint.
    Http,
    /// Legacy alias of `process`.
    None,
}

impl HealthCheckType {
    /// CC's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Port => "port",
            Self::Process => "process",
            Self::Http => "http",
            Self::None => "none",
        }
    }

    /// Parses CC's spelling exactly.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "port" => Some(Self::Port),
            "process" => Some(Self::Process),
            "http" => Some(Self::Http),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// Docker registry credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerCredentials {
    /// Registry user.
    pub username: Option<String>,
    /// Registry password (redacted whenever shown).
    pub password: Option<String>,
}

/// State of an uploaded package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageState {
    /// Bits are uploaded and usable.
    Ready,
    /// The upload failed.
    Failed,
    /// Created through v3, its bits not uploaded yet.
    AwaitingUpload,
}

impl PackageState {
    /// CC's spelling of the raw package state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "READY",
            Self::Failed => "FAILED",
            Self::AwaitingUpload => "AWAITING_UPLOAD",
        }
    }
}

/// The app's latest package: uploaded bits, or a docker image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Its guid.
    pub guid: Guid,
    /// Raw state.
    pub state: PackageState,
    /// Hex SHA-256 of the bits (empty for docker packages).
    pub sha256: String,
    /// Size of the bits in bytes (0 for docker packages).
    pub size_bytes: u64,
    /// When it was created.
    pub created_at: Timestamp,
}

/// State of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildState {
    /// Staging in progress.
    Staging,
    /// Staging succeeded and produced a droplet.
    Staged,
    /// Staging failed.
    Failed,
}

impl BuildState {
    /// CC's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staging => "STAGING",
            Self::Staged => "STAGED",
            Self::Failed => "FAILED",
        }
    }
}

/// The app's latest build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// Its guid.
    pub guid: Guid,
    /// The package it stages.
    pub package_guid: Guid,
    /// Its state.
    pub state: BuildState,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A staged droplet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Droplet {
    /// Its guid.
    pub guid: Guid,
    /// The package it was staged from.
    pub package_guid: Guid,
    /// Buildpack receipt guid.
    pub buildpack_guid: Option<Guid>,
    /// Buildpack receipt name, already obfuscated.
    pub buildpack_name: Option<String>,
    /// Start command the buildpack detected.
    pub detected_start_command: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A v2 app: the v3 app and its one `web` process, whose guid equals the app's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// App guid (= web process guid).
    pub guid: Guid,
    /// Name, unique in the space.
    pub name: String,
    /// The space it lives in.
    pub space_guid: Guid,
    /// Its stack.
    pub stack_guid: Guid,
    /// Desired state of the web process.
    pub state: ProcessState,
    /// Memory per instance, MB.
    pub memory_mb: i64,
    /// Desired instance count.
    pub instances: i64,
    /// Disk per instance, MB.
    pub disk_quota_mb: i64,
    /// Log rate limit, bytes/s (CC ignores it on v2 input; always the default).
    pub log_rate_limit: i64,
    /// Requested buildpack: an admin buildpack name or a git URL.
    pub buildpack: Option<String>,
    /// Custom start command.
    pub command: Option<String>,
    /// Health check type.
    pub health_check_type: HealthCheckType,
    /// Health check timeout, s.
    pub health_check_timeout: Option<i64>,
    /// Health check endpoint for `http`.
    pub health_check_http_endpoint: Option<String>,
    /// Legacy flag, always true in practice.
    pub diego: bool,
    /// Whether SSH is enabled.
    pub enable_ssh: bool,
    /// Docker image, for docker-lifecycle apps.
    pub docker_image: Option<String>,
    /// Docker credentials.
    pub docker_credentials: Option<DockerCredentials>,
    /// Environment variables as a JSON object text (opaque to the domain).
    pub environment_json: String,
    /// Legacy v2 boolean, still a footprint column for usage events.
    pub production: bool,
    /// Legacy flag.
    pub console: bool,
    /// Legacy debug mode.
    pub debug: Option<String>,
    /// Open ports; `None` means CC's default (`[8080]` for web).
    pub ports: Option<Vec<u16>>,
    /// Changes whenever a started process changes state, memory, health check or ports.
    pub version: Guid,
    /// The latest package.
    pub package: Option<Package>,
    /// The latest build.
    pub build: Option<Build>,
    /// The latest droplet.
    pub latest_droplet: Option<Droplet>,
    /// The desired (current) droplet's guid.
    pub current_droplet_guid: Option<Guid>,
    /// When the package last changed.
    pub package_updated_at: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// State of a task (reference v3 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Created, not running yet.
    Pending,
    /// Running.
    Running,
    /// Asked to stop; the runtime has not said it did.
    Canceling,
    /// Ended well.
    Succeeded,
    /// Ended badly, or was canceled.
    Failed,
}

impl TaskState {
    /// CC's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Canceling => "CANCELING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// A one-off task run with an app's droplet (reference v3 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Its guid.
    pub guid: Guid,
    /// Its app.
    pub app_guid: Guid,
    /// Its name.
    pub name: String,
    /// What it runs.
    pub command: String,
    /// Its state.
    pub state: TaskState,
    /// Memory, MB.
    pub memory_mb: i64,
    /// Disk, MB.
    pub disk_mb: i64,
    /// Log rate limit, bytes/s.
    pub log_rate_limit: i64,
    /// The app's counter: 1 for its first task.
    pub sequence_id: u64,
    /// The droplet it runs.
    pub droplet_guid: Guid,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// When its TASK_STARTED usage event was written (its TASK_STOPPED is written only while
    /// that event is in the usage table, i.e. not before the current epoch began).
    pub started_at: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A process of a type other than `web` (reference v3 §2.7: created, STOPPED with no instances,
/// for each type a staged droplet names that the app lacks). The `web` process is the app row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Its guid (not the app's).
    pub guid: Guid,
    /// Its app.
    pub app_guid: Guid,
    /// Its type (`worker`, ...; never `web`).
    pub process_type: String,
    /// Desired state.
    pub state: ProcessState,
    /// Desired instance count (0 when created).
    pub instances: i64,
    /// Memory per instance, MB.
    pub memory_mb: i64,
    /// Disk per instance, MB.
    pub disk_mb: i64,
    /// Log rate limit, bytes/s.
    pub log_rate_limit: i64,
    /// Custom command.
    pub command: Option<String>,
    /// The command the latest droplet gave this type.
    pub detected_command: String,
    /// Health check type (`process` when created).
    pub health_check_type: HealthCheckType,
    /// Health check timeout, s.
    pub health_check_timeout: Option<i64>,
    /// Health check endpoint for `http`.
    pub health_check_http_endpoint: Option<String>,
    /// Changes whenever the started process changes state, memory or health check.
    pub version: Guid,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// One process of an app as the v3 API shows it: the `web` process (the app row) or another.
#[derive(Debug, Clone, Copy)]
pub enum ProcessRef<'a> {
    /// The app's `web` process, whose guid is the app's.
    Web(&'a App),
    /// Another type.
    Other(&'a App, &'a Process),
}

impl<'a> ProcessRef<'a> {
    /// Its app.
    pub fn app(self) -> &'a App {
        match self {
            Self::Web(app) | Self::Other(app, _) => app,
        }
    }

    /// Its guid.
    pub fn guid(self) -> Guid {
        match self {
            Self::Web(app) => app.process_guid(),
            Self::Other(_, p) => p.guid,
        }
    }

    /// Its type.
    pub fn process_type(self) -> &'a str {
        match self {
            Self::Web(_) => WEB_PROCESS_TYPE,
            Self::Other(_, p) => &p.process_type,
        }
    }

    /// Desired state.
    pub fn state(self) -> ProcessState {
        match self {
            Self::Web(app) => app.state,
            Self::Other(_, p) => p.state,
        }
    }

    /// Instances.
    pub fn instances(self) -> i64 {
        match self {
            Self::Web(app) => app.instances,
            Self::Other(_, p) => p.instances,
        }
    }

    /// Memory per instance, MB.
    pub fn memory_mb(self) -> i64 {
        match self {
            Self::Web(app) => app.memory_mb,
            Self::Other(_, p) => p.memory_mb,
        }
    }

    /// Disk per instance, MB.
    pub fn disk_mb(self) -> i64 {
        match self {
            Self::Web(app) => app.disk_quota_mb,
            Self::Other(_, p) => p.disk_mb,
        }
    }

    /// Log rate limit, bytes/s.
    pub fn log_rate_limit(self) -> i64 {
        match self {
            Self::Web(app) => app.log_rate_limit,
            Self::Other(_, p) => p.log_rate_limit,
        }
    }

    /// The command it runs: its own, else what the droplet detected (`None` if neither).
    pub fn command(self) -> Option<String> {
        let (own, detected) = match self {
            Self::Web(app) => (
                app.command.clone(),
                app.current_droplet()
                    .map(|d| d.detected_start_command.clone()),
            ),
            Self::Other(_, p) => (p.command.clone(), Some(p.detected_command.clone())),
        };
        own.or(detected.filter(|c| !c.is_empty()))
    }

    /// Health check: type, timeout, endpoint.
    pub fn health_check(self) -> (HealthCheckType, Option<i64>, Option<&'a str>) {
        match self {
            Self::Web(app) => (
                app.health_check_type,
                app.health_check_timeout,
                app.health_check_http_endpoint.as_deref(),
            ),
            Self::Other(_, p) => (
                p.health_check_type,
                p.health_check_timeout,
                p.health_check_http_endpoint.as_deref(),
            ),
        }
    }

    /// Its version.
    pub fn version(self) -> Guid {
        match self {
            Self::Web(app) => app.version,
            Self::Other(_, p) => p.version,
        }
    }

    /// When it was created.
    pub fn created_at(self) -> Timestamp {
        match self {
            Self::Web(app) => app.created_at,
            Self::Other(_, p) => p.created_at,
        }
    }

    /// When it last changed.
    pub fn updated_at(self) -> Timestamp {
        match self {
            Self::Web(app) => app.updated_at,
            Self::Other(_, p) => p.updated_at,
        }
    }
}

/// The derived package state of reference §1.4, as v2 apps and process usage events show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivedPackageState {
    /// Not staged yet.
    Pending,
    /// Staged and current.
    Staged,
    /// Staging or upload failed.
    Failed,
}

impl DerivedPackageState {
    /// CC's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Staged => "STAGED",
            Self::Failed => "FAILED",
        }
    }
}

impl App {
    /// The guid of the app's web process (equal to the app guid).
    pub fn process_guid(&self) -> Guid {
        self.guid
    }

    /// Whether the app runs a docker image.
    pub fn is_docker(&self) -> bool {
        self.docker_image.is_some()
    }

    /// The desired droplet, if one is assigned.
    pub fn current_droplet(&self) -> Option<&Droplet> {
        let current = self.current_droplet_guid?;
        self.latest_droplet.as_ref().filter(|d| d.guid == current)
    }

    /// Reference §1.4.
    pub fn package_state(&self) -> DerivedPackageState {
        if self.package.is_none() && self.latest_droplet.is_none() {
            return DerivedPackageState::Pending;
        }
        let build_failed = self
            .build
            .as_ref()
            .is_some_and(|b| b.state == BuildState::Failed);
        let package_failed = self.package.as_ref().is_some_and(|p| {
            p.state == PackageState::Failed
                && self
                    .latest_droplet
                    .as_ref()
                    .is_none_or(|d| d.package_guid == p.guid || p.created_at >= d.created_at)
        });
        if build_failed || package_failed {
            return DerivedPackageState::Failed;
        }
        let build_ok = self
            .build
            .as_ref()
            .is_none_or(|b| b.state == BuildState::Staged);
        let newer_package = match (&self.package, &self.latest_droplet) {
            (Some(p), Some(d)) => p.guid != d.package_guid,
            _ => false,
        };
        let droplet_is_current = match &self.latest_droplet {
            Some(d) => self.current_droplet_guid == Some(d.guid),
            None => false,
        };
        if build_ok && droplet_is_current && !newer_package {
            DerivedPackageState::Staged
        } else {
            DerivedPackageState::Pending
        }
    }

    /// Reference §4.1's SQL CASE for reseeded rows (close to §1.4, but builds are ignored).
    pub fn reseed_package_state(&self) -> DerivedPackageState {
        let droplet_current = match &self.latest_droplet {
            Some(d) => self.current_droplet_guid == Some(d.guid),
            None => false,
        };
        if droplet_current {
            DerivedPackageState::Staged
        } else if self
            .package
            .as_ref()
            .is_some_and(|p| p.state == PackageState::Failed)
        {
            DerivedPackageState::Failed
        } else {
            DerivedPackageState::Pending
        }
    }

    /// Whether starting this app has to stage its latest package first.
    pub fn needs_staging(&self) -> bool {
        let Some(package) = &self.package else {
            return false;
        };
        let staging_in_flight = self
            .build
            .as_ref()
            .is_some_and(|b| b.state == BuildState::Staging && b.package_guid == package.guid);
        !staging_in_flight
            && package.state == PackageState::Ready
            && self.package_state() == DerivedPackageState::Pending
    }

    /// Whether a build for the latest package is in flight.
    pub fn staging_in_flight(&self) -> bool {
        self.build
            .as_ref()
            .is_some_and(|b| b.state == BuildState::Staging)
    }

    /// The buildpack name process usage events carry: the app's custom buildpack URL if any,
    /// else the desired droplet's receipt (reference §1.2), obfuscated.
    pub fn usage_buildpack_name(&self) -> Option<String> {
        match &self.buildpack {
            Some(bp) if is_custom_buildpack(bp) => Some(obfuscate_url_credentials(bp)),
            _ => self
                .current_droplet()
                .and_then(|d| d.buildpack_name.clone()),
        }
    }

    /// The buildpack guid process usage events carry: the desired droplet's receipt guid.
    pub fn usage_buildpack_guid(&self) -> Option<Guid> {
        self.current_droplet().and_then(|d| d.buildpack_guid)
    }
}

/// Whether a requested buildpack is a URL rather than an admin buildpack name.
pub fn is_custom_buildpack(buildpack: &str) -> bool {
    buildpack.contains("://") || buildpack.starts_with("git@")
}

/// Replaces URL credentials with `***:***`, as CC does: `https://u:p@host` → `https://***:***@host`.
pub fn obfuscate_url_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => format!("{}://***:***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_owned(),
    }
}
