//! Format version 1. Frozen: append new variants at the end of an enum only; never reorder,
//! remove or retype a field. Guids are raw UUID bytes; times are microseconds since the Unix
//! epoch, UTC; small enums are `u8` tags whose meaning is listed on the field.

use bincode::{Decode, Encode};

/// A raw guid.
pub type GuidV1 = [u8; 16];

/// The store's bookkeeping, under one key.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MetaV1 {
    /// Last committed (and flushed) sequence number; 0 for an empty log.
    pub head: u64,
    /// Current epoch, starting at 1; each purge-and-reseed adds one.
    pub epoch: u64,
    /// When the current epoch started (µs), 0 for the first epoch.
    pub epoch_started_at_micros: i64,
    /// First sequence number of the retained entity log; the base snapshot is the table just before it.
    pub log_start: u64,
    /// Usage events below this sequence number are unreachable (purged).
    pub usage_floor: u64,
    /// The persisted table reflects every entity record up to this sequence number. When it is
    /// below `log_start`, recovery starts from the base snapshot instead.
    pub checkpoint: u64,
    /// How many reseeded usage events open the current epoch (at `usage_floor`).
    pub reseeded: u64,
}

/// The records of one stream written by one group commit, in sequence order. Stored under the
/// sequence number of its first record.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BlockV1 {
    /// The records; their sequence numbers increase but need not be consecutive (the other
    /// streams' records of the same commit fill the gaps).
    pub records: Vec<LogRecordV1>,
}

/// The persisted table rows whose guids fall in one bucket (the top 12 bits of the guid).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TableBucketV1 {
    /// The rows, by guid.
    pub rows: Vec<TableRowV1>,
}

/// One log record: its sequence number and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LogRecordV1 {
    /// Its position in the log.
    pub seq: u64,
    /// The fact.
    pub body: RecordBodyV1,
}

/// What a log record says. Append-only.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum RecordBodyV1 {
    /// tag 0
    OrgCreated(OrgV1),
    /// tag 1
    OrgUpdated(OrgV1),
    /// tag 2
    OrgDeleted(GuidV1),
    /// tag 3
    SpaceCreated(SpaceV1),
    /// tag 4
    SpaceUpdated(SpaceV1),
    /// tag 5
    SpaceDeleted(GuidV1),
    /// tag 6
    AppCreated(Box<AppV1>),
    /// tag 7
    AppUpdated(Box<AppV1>),
    /// tag 8
    AppDeleted(GuidV1),
    /// tag 9
    Usage(UsageEventV1),
    /// tag 10
    Audit(AuditEventV1),
    /// tag 11: a user was given an org or space role.
    RoleGranted(MembershipV1),
    /// tag 12: a user lost an org or space role.
    RoleRevoked(MembershipV1),
    /// tag 13: an audit event whose actee is not a guid (a user id such as a UAA client id).
    AuditTextActee(AuditTextActeeV1),
    /// tag 14: a usage event removed by retention. It keeps its position (the log stays
    /// dense) and enough to tell a consumer whose cursor points here what happened.
    UsagePruned(UsagePrunedV1),
    /// tag 15: a task was created or changed (since v3 tasks; older logs never hold it).
    TaskPut(TaskV1),
    /// tag 16: a task was deleted with its app.
    TaskDeleted(GuidV1),
    /// tag 17: a process other than `web` was created or changed (since process types; older
    /// logs never hold it).
    ProcessPut(ProcessV1),
    /// tag 18: a process other than `web` was deleted with its app.
    ProcessDeleted(GuidV1),
}

/// A row of the persisted app table.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum TableRowV1 {
    /// tag 0
    Org(OrgV1),
    /// tag 1
    Space(SpaceV1),
    /// tag 2
    App(Box<AppV1>),
    /// tag 3: the members of an org or space (stored beside the org or space row).
    Members(MembersV1),
    /// tag 4: a task (since v3 tasks).
    Task(TaskV1),
    /// tag 5: a process other than `web` (since process types).
    Process(ProcessV1),
}

/// A piece of the base snapshot: the table as it was just before `log_start`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotChunkV1 {
    /// The `log_start` this snapshot belongs to.
    pub log_start: u64,
    /// Its rows.
    pub rows: Vec<TableRowV1>,
}

/// An org.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct OrgV1 {
    /// guid
    pub guid: GuidV1,
    /// name
    pub name: String,
    /// µs
    pub created_at: i64,
    /// µs
    pub updated_at: i64,
}

/// A space.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SpaceV1 {
    /// guid
    pub guid: GuidV1,
    /// name
    pub name: String,
    /// org guid
    pub org_guid: GuidV1,
    /// µs
    pub created_at: i64,
    /// µs
    pub updated_at: i64,
}

/// Docker credentials.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DockerCredentialsV1 {
    /// user
    pub username: Option<String>,
    /// password
    pub password: Option<String>,
}

/// A package.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct PackageV1 {
    /// guid
    pub guid: GuidV1,
    /// 0 READY, 1 FAILED, 2 AWAITING_UPLOAD (since v3 packages; older logs never hold it)
    pub state: u8,
    /// hex sha256
    pub sha256: String,
    /// bytes
    pub size_bytes: u64,
    /// µs
    pub created_at: i64,
}

/// A build.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BuildV1 {
    /// guid
    pub guid: GuidV1,
    /// package guid
    pub package_guid: GuidV1,
    /// 0 STAGING, 1 STAGED, 2 FAILED
    pub state: u8,
    /// failure reason
    pub error: Option<String>,
    /// µs
    pub created_at: i64,
}

/// A droplet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DropletV1 {
    /// guid
    pub guid: GuidV1,
    /// package guid
    pub package_guid: GuidV1,
    /// receipt guid
    pub buildpack_guid: Option<GuidV1>,
    /// receipt name
    pub buildpack_name: Option<String>,
    /// detected start command
    pub detected_start_command: String,
    /// µs
    pub created_at: i64,
}

/// An app with its web process.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AppV1 {
    /// guid
    pub guid: GuidV1,
    /// name
    pub name: String,
    /// space
    pub space_guid: GuidV1,
    /// stack
    pub stack_guid: GuidV1,
    /// 0 STARTED, 1 STOPPED
    pub state: u8,
    /// MB
    pub memory_mb: i64,
    /// instances
    pub instances: i64,
    /// MB
    pub disk_quota_mb: i64,
    /// bytes/s
    pub log_rate_limit: i64,
    /// requested buildpack
    pub buildpack: Option<String>,
    /// start command
    pub command: Option<String>,
    /// 0 port, 1 process, 2 http, 3 none
    pub health_check_type: u8,
    /// s
    pub health_check_timeout: Option<i64>,
    /// path
    pub health_check_http_endpoint: Option<String>,
    /// diego
    pub diego: bool,
    /// ssh
    pub enable_ssh: bool,
    /// docker image
    pub docker_image: Option<String>,
    /// docker credentials
    pub docker_credentials: Option<DockerCredentialsV1>,
    /// JSON object text
    pub environment_json: String,
    /// production
    pub production: bool,
    /// console
    pub console: bool,
    /// debug
    pub debug: Option<String>,
    /// ports
    pub ports: Option<Vec<u16>>,
    /// version guid
    pub version: GuidV1,
    /// latest package
    pub package: Option<PackageV1>,
    /// latest build
    pub build: Option<BuildV1>,
    /// latest droplet
    pub latest_droplet: Option<DropletV1>,
    /// desired droplet guid
    pub current_droplet_guid: Option<GuidV1>,
    /// µs
    pub package_updated_at: Option<i64>,
    /// µs
    pub created_at: i64,
    /// µs
    pub updated_at: i64,
}

/// An app usage event (reference §1.1).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct UsageEventV1 {
    /// guid
    pub guid: GuidV1,
    /// µs
    pub created_at: i64,
    /// state tag: 0 STARTED, 1 STOPPED, 2 BUILDPACK_SET, 3 TASK_STARTED, 4 TASK_STOPPED,
    /// 5 STAGING_STARTED, 6 STAGING_STOPPED, 7 STAGING, 8 STAGED, 9 PENDING, 10 RUNNING, 11 CANCELING
    pub state: u8,
    /// same tags
    pub previous_state: Option<u8>,
    /// instance_count
    pub instance_count: i64,
    /// previous_instance_count
    pub previous_instance_count: Option<i64>,
    /// memory_in_mb_per_instance
    pub memory_in_mb_per_instance: i64,
    /// previous_memory_in_mb_per_instance
    pub previous_memory_in_mb_per_instance: Option<i64>,
    /// process guid text or ""
    pub app_guid: String,
    /// process name or ""
    pub app_name: String,
    /// space guid
    pub space_guid: GuidV1,
    /// space name
    pub space_name: String,
    /// org guid
    pub org_guid: GuidV1,
    /// buildpack guid
    pub buildpack_guid: Option<GuidV1>,
    /// buildpack name
    pub buildpack_name: Option<String>,
    /// package_state
    pub package_state: Option<String>,
    /// previous_package_state
    pub previous_package_state: Option<String>,
    /// parent app guid
    pub parent_app_guid: Option<GuidV1>,
    /// parent app name
    pub parent_app_name: Option<String>,
    /// process type
    pub process_type: Option<String>,
    /// task guid
    pub task_guid: Option<GuidV1>,
    /// task name
    pub task_name: Option<String>,
}

/// An audit event (reference §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AuditEventV1 {
    /// guid
    pub guid: GuidV1,
    /// µs
    pub created_at: i64,
    /// type
    pub event_type: String,
    /// actor id
    pub actor: String,
    /// actor type
    pub actor_type: String,
    /// actor name
    pub actor_name: String,
    /// actor username
    pub actor_username: String,
    /// actee guid
    pub actee: GuidV1,
    /// actee type
    pub actee_type: String,
    /// actee name
    pub actee_name: String,
    /// metadata JSON text
    pub metadata: String,
    /// space guid
    pub space_guid: Option<GuidV1>,
    /// org guid
    pub organization_guid: Option<GuidV1>,
}

/// A role: which user holds it in which org or space.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MembershipV1 {
    /// org or space guid
    pub resource: GuidV1,
    /// 0 org user, 1 org manager, 2 org auditor, 3 org billing manager, 4 space developer,
    /// 5 space manager, 6 space auditor
    pub role: u8,
    /// user id (UAA `user_id` or `client_id`)
    pub user: String,
}

/// One member of an org or space.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MemberV1 {
    /// role tag, as in [`MembershipV1`]
    pub role: u8,
    /// user id
    pub user: String,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TaskV1 {
    /// guid
    pub guid: GuidV1,
    /// its app
    pub app_guid: GuidV1,
    /// name
    pub name: String,
    /// command
    pub command: String,
    /// 0 PENDING, 1 RUNNING, 2 CANCELING, 3 SUCCEEDED, 4 FAILED
    pub state: u8,
    /// MB
    pub memory_mb: i64,
    /// MB
    pub disk_mb: i64,
    /// bytes/s
    pub log_rate_limit: i64,
    /// the app's counter
    pub sequence_id: u64,
    /// the droplet it runs
    pub droplet_guid: GuidV1,
    /// why it failed
    pub failure_reason: Option<String>,
    /// µs, when its TASK_STARTED was written
    pub started_at: Option<i64>,
    /// µs
    pub created_at: i64,
    /// µs
    pub updated_at: i64,
}

/// A process other than an app's `web` process.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ProcessV1 {
    /// guid
    pub guid: GuidV1,
    /// its app
    pub app_guid: GuidV1,
    /// its type (`worker`, ...)
    pub process_type: String,
    /// 0 STARTED, 1 STOPPED (as `AppV1::state`)
    pub state: u8,
    /// desired instances
    pub instances: i64,
    /// MB per instance
    pub memory_mb: i64,
    /// MB per instance
    pub disk_mb: i64,
    /// bytes/s
    pub log_rate_limit: i64,
    /// custom command
    pub command: Option<String>,
    /// the command the latest droplet gave this type
    pub detected_command: String,
    /// as `AppV1::health_check_type`
    pub health_check_type: u8,
    /// seconds
    pub health_check_timeout: Option<i64>,
    /// for `http`
    pub health_check_http_endpoint: Option<String>,
    /// changes with its started footprint
    pub version: GuidV1,
    /// µs
    pub created_at: i64,
    /// µs
    pub updated_at: i64,
}

/// The members of one org or space, by role then user.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MembersV1 {
    /// org or space guid
    pub resource: GuidV1,
    /// members
    pub members: Vec<MemberV1>,
}

/// An audit event whose actee is text: `event.actee` is all zeros and `actee` holds the id.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AuditTextActeeV1 {
    /// the event, actee zeroed
    pub event: AuditEventV1,
    /// actee id
    pub actee: String,
}

/// What is left of a usage event that retention removed.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct UsagePrunedV1 {
    /// The event's guid.
    pub guid: GuidV1,
    /// When the event was written (µs).
    pub created_at: i64,
    /// The cutoff of the prune that removed it (µs): events older than this were pruned.
    pub cutoff: i64,
}

/// The reseeded usage events of an epoch: app guid and sequence number, sorted by guid.
/// Written with the purge that reseeds them, so start-up finds them without decoding the events.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReseedIndexV1 {
    /// The epoch the index belongs to.
    pub epoch: u64,
    /// `(guid, seq)`, sorted by guid.
    pub entries: Vec<(GuidV1, u64)>,
}
