//! Domain values ↔ version-1 record types. The only place that knows both.

use chrono::{DateTime, Utc};
use proto_schemas::v1::*;
use tally_domain::audit::{Actor, AuditEvent};
use tally_domain::model::*;
use tally_domain::{Event, Guid, Membership, RoleKind, Timestamp, UsageEvent, UsageState};

use crate::TableRow;

/// A stored value decoded to something that cannot be a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(pub String);

type R<T> = Result<T, MappingError>;

fn g(guid: Guid) -> GuidV1 {
    guid.to_bytes()
}

fn guid(raw: GuidV1) -> Guid {
    Guid::from_bytes(raw)
}

pub(crate) fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn time(us: i64) -> R<Timestamp> {
    DateTime::<Utc>::from_timestamp_micros(us)
        .ok_or_else(|| MappingError(format!("timestamp out of range: {us}")))
}

fn tag_error(what: &str, tag: u8) -> MappingError {
    MappingError(format!("unknown {what} tag {tag}"))
}

pub(crate) fn usage_state_tag(state: UsageState) -> u8 {
    // Tags are positions in UsageState::ALL, which is append-only like the format.
    UsageState::ALL
        .iter()
        .position(|s| *s == state)
        .map_or(u8::MAX, |i| i as u8)
}

fn usage_state(tag: u8) -> R<UsageState> {
    UsageState::ALL
        .get(usize::from(tag))
        .copied()
        .ok_or_else(|| tag_error("usage state", tag))
}

fn role_tag(role: RoleKind) -> u8 {
    // Tags are positions in RoleKind::ALL, which is append-only like the format.
    RoleKind::ALL
        .iter()
        .position(|r| *r == role)
        .map_or(u8::MAX, |i| i as u8)
}

fn role(tag: u8) -> R<RoleKind> {
    RoleKind::ALL
        .get(usize::from(tag))
        .copied()
        .ok_or_else(|| tag_error("role", tag))
}

fn membership_to(m: &Membership) -> MembershipV1 {
    MembershipV1 {
        resource: g(m.resource),
        role: role_tag(m.role),
        user: m.user.clone(),
    }
}

fn membership_from(m: MembershipV1) -> R<Membership> {
    Ok(Membership {
        resource: guid(m.resource),
        role: role(m.role)?,
        user: m.user,
    })
}

fn org_to(o: &Org) -> OrgV1 {
    OrgV1 {
        guid: g(o.guid),
        name: o.name.clone(),
        created_at: micros(o.created_at),
        updated_at: micros(o.updated_at),
    }
}

fn org_from(o: OrgV1) -> R<Org> {
    Ok(Org {
        guid: guid(o.guid),
        name: o.name,
        created_at: time(o.created_at)?,
        updated_at: time(o.updated_at)?,
    })
}

fn space_to(s: &Space) -> SpaceV1 {
    SpaceV1 {
        guid: g(s.guid),
        name: s.name.clone(),
        org_guid: g(s.org_guid),
        created_at: micros(s.created_at),
        updated_at: micros(s.updated_at),
    }
}

fn space_from(s: SpaceV1) -> R<Space> {
    Ok(Space {
        guid: guid(s.guid),
        name: s.name,
        org_guid: guid(s.org_guid),
        created_at: time(s.created_at)?,
        updated_at: time(s.updated_at)?,
    })
}

fn process_state_to(state: ProcessState) -> u8 {
    match state {
        ProcessState::Started => 0,
        ProcessState::Stopped => 1,
    }
}

fn process_state_from(tag: u8) -> R<ProcessState> {
    match tag {
        0 => Ok(ProcessState::Started),
        1 => Ok(ProcessState::Stopped),
        t => Err(tag_error("process state", t)),
    }
}

fn health_check_to(kind: HealthCheckType) -> u8 {
    match kind {
        HealthCheckType::Port => 0,
        HealthCheckType::Process => 1,
        HealthCheckType::Http => 2,
        HealthCheckType::None => 3,
    }
}

fn health_check_from(tag: u8) -> R<HealthCheckType> {
    match tag {
        0 => Ok(HealthCheckType::Port),
        1 => Ok(HealthCheckType::Process),
        2 => Ok(HealthCheckType::Http),
        3 => Ok(HealthCheckType::None),
        t => Err(tag_error("health check type", t)),
    }
}

pub(crate) fn app_to(a: &App) -> AppV1 {
    AppV1 {
        guid: g(a.guid),
        name: a.name.clone(),
        space_guid: g(a.space_guid),
        stack_guid: g(a.stack_guid),
        state: process_state_to(a.state),
        memory_mb: a.memory_mb,
        instances: a.instances,
        disk_quota_mb: a.disk_quota_mb,
        log_rate_limit: a.log_rate_limit,
        buildpack: a.buildpack.clone(),
        command: a.command.clone(),
        health_check_type: health_check_to(a.health_check_type),
        health_check_timeout: a.health_check_timeout,
        health_check_http_endpoint: a.health_check_http_endpoint.clone(),
        diego: a.diego,
        enable_ssh: a.enable_ssh,
        docker_image: a.docker_image.clone(),
        docker_credentials: a.docker_credentials.as_ref().map(|c| DockerCredentialsV1 {
            username: c.username.clone(),
            password: c.password.clone(),
        }),
        environment_json: a.environment_json.clone(),
        production: a.production,
        console: a.console,
        debug: a.debug.clone(),
        ports: a.ports.clone(),
        version: g(a.version),
        package: a.package.as_ref().map(|p| PackageV1 {
            guid: g(p.guid),
            state: match p.state {
                PackageState::Ready => 0,
                PackageState::Failed => 1,
                PackageState::AwaitingUpload => 2,
            },
            sha256: p.sha256.clone(),
            size_bytes: p.size_bytes,
            created_at: micros(p.created_at),
        }),
        build: a.build.as_ref().map(|b| BuildV1 {
            guid: g(b.guid),
            package_guid: g(b.package_guid),
            state: match b.state {
                BuildState::Staging => 0,
                BuildState::Staged => 1,
                BuildState::Failed => 2,
            },
            error: b.error.clone(),
            created_at: micros(b.created_at),
        }),
        latest_droplet: a.latest_droplet.as_ref().map(|d| DropletV1 {
            guid: g(d.guid),
            package_guid: g(d.package_guid),
            buildpack_guid: d.buildpack_guid.map(g),
            buildpack_name: d.buildpack_name.clone(),
            detected_start_command: d.detected_start_command.clone(),
            created_at: micros(d.created_at),
        }),
        current_droplet_guid: a.current_droplet_guid.map(g),
        package_updated_at: a.package_updated_at.map(micros),
        created_at: micros(a.created_at),
        updated_at: micros(a.updated_at),
    }
}

pub(crate) fn app_from(a: AppV1) -> R<App> {
    Ok(App {
        guid: guid(a.guid),
        name: a.name,
        space_guid: guid(a.space_guid),
        stack_guid: guid(a.stack_guid),
        state: process_state_from(a.state)?,
        memory_mb: a.memory_mb,
        instances: a.instances,
        disk_quota_mb: a.disk_quota_mb,
        log_rate_limit: a.log_rate_limit,
        buildpack: a.buildpack,
        command: a.command,
        health_check_type: health_check_from(a.health_check_type)?,
        health_check_timeout: a.health_check_timeout,
        health_check_http_endpoint: a.health_check_http_endpoint,
        diego: a.diego,
        enable_ssh: a.enable_ssh,
        docker_image: a.docker_image,
        docker_credentials: a.docker_credentials.map(|c| DockerCredentials {
            username: c.username,
            password: c.password,
        }),
        environment_json: a.environment_json,
        production: a.production,
        console: a.console,
        debug: a.debug,
        ports: a.ports,
        version: guid(a.version),
        package: match a.package {
            Some(p) => Some(Package {
                guid: guid(p.guid),
                state: match p.state {
                    0 => PackageState::Ready,
                    1 => PackageState::Failed,
                    2 => PackageState::AwaitingUpload,
                    t => return Err(tag_error("package state", t)),
                },
                sha256: p.sha256,
                size_bytes: p.size_bytes,
                created_at: time(p.created_at)?,
            }),
            None => None,
        },
        build: match a.build {
            Some(b) => Some(Build {
                guid: guid(b.guid),
                package_guid: guid(b.package_guid),
                state: match b.state {
                    0 => BuildState::Staging,
                    1 => BuildState::Staged,
                    2 => BuildState::Failed,
                    t => return Err(tag_error("build state", t)),
                },
                error: b.error,
                created_at: time(b.created_at)?,
            }),
            None => None,
        },
        latest_droplet: match a.latest_droplet {
            Some(d) => Some(Droplet {
                guid: guid(d.guid),
                package_guid: guid(d.package_guid),
                buildpack_guid: d.buildpack_guid.map(guid),
                buildpack_name: d.buildpack_name,
                detected_start_command: d.detected_start_command,
                created_at: time(d.created_at)?,
            }),
            None => None,
        },
        current_droplet_guid: a.current_droplet_guid.map(guid),
        package_updated_at: a.package_updated_at.map(time).transpose()?,
        created_at: time(a.created_at)?,
        updated_at: time(a.updated_at)?,
    })
}

pub(crate) fn usage_to(u: &UsageEvent) -> UsageEventV1 {
    UsageEventV1 {
        guid: g(u.guid),
        created_at: micros(u.created_at),
        state: usage_state_tag(u.state),
        previous_state: u.previous_state.map(usage_state_tag),
        instance_count: u.instance_count,
        previous_instance_count: u.previous_instance_count,
        memory_in_mb_per_instance: u.memory_in_mb_per_instance,
        previous_memory_in_mb_per_instance: u.previous_memory_in_mb_per_instance,
        app_guid: u.app_guid.clone(),
        app_name: u.app_name.clone(),
        space_guid: g(u.space_guid),
        space_name: u.space_name.clone(),
        org_guid: g(u.org_guid),
        buildpack_guid: u.buildpack_guid.map(g),
        buildpack_name: u.buildpack_name.clone(),
        package_state: u.package_state.clone(),
        previous_package_state: u.previous_package_state.clone(),
        parent_app_guid: u.parent_app_guid.map(g),
        parent_app_name: u.parent_app_name.clone(),
        process_type: u.process_type.clone(),
        task_guid: u.task_guid.map(g),
        task_name: u.task_name.clone(),
    }
}

pub(crate) fn usage_from(u: UsageEventV1) -> R<UsageEvent> {
    Ok(UsageEvent {
        guid: guid(u.guid),
        created_at: time(u.created_at)?,
        state: usage_state(u.state)?,
        previous_state: u.previous_state.map(usage_state).transpose()?,
        instance_count: u.instance_count,
        previous_instance_count: u.previous_instance_count,
        memory_in_mb_per_instance: u.memory_in_mb_per_instance,
        previous_memory_in_mb_per_instance: u.previous_memory_in_mb_per_instance,
        app_guid: u.app_guid,
        app_name: u.app_name,
        space_guid: guid(u.space_guid),
        space_name: u.space_name,
        org_guid: guid(u.org_guid),
        buildpack_guid: u.buildpack_guid.map(guid),
        buildpack_name: u.buildpack_name,
        package_state: u.package_state,
        previous_package_state: u.previous_package_state,
        parent_app_guid: u.parent_app_guid.map(guid),
        parent_app_name: u.parent_app_name,
        process_type: u.process_type,
        task_guid: u.task_guid.map(guid),
        task_name: u.task_name,
    })
}

pub(crate) fn pruned_from(p: UsagePrunedV1) -> R<crate::PrunedUsage> {
    Ok(crate::PrunedUsage {
        guid: guid(p.guid),
        created_at: time(p.created_at)?,
        cutoff: time(p.cutoff)?,
    })
}

fn audit_to(a: &AuditEvent) -> AuditEventV1 {
    AuditEventV1 {
        guid: g(a.guid),
        created_at: micros(a.created_at),
        event_type: a.event_type.clone(),
        actor: a.actor.guid.clone(),
        actor_type: a.actor.kind.clone(),
        actor_name: a.actor.name.clone(),
        actor_username: a.actor.username.clone(),
        actee: [0; 16],
        actee_type: a.actee_type.clone(),
        actee_name: a.actee_name.clone(),
        metadata: tally_json::to_text(&a.metadata),
        space_guid: a.space_guid.map(g),
        organization_guid: a.organization_guid.map(g),
    }
}

/// The metadata column, JSON object text in every version tally wrote. Text that does not parse
/// (none is known) reads as `{}`, as the API has always shown it, and is reported; the log's
/// bytes are never rewritten, so the text stays for a later version to read.
fn metadata_from(text: &str) -> tally_domain::audit::Value {
    tally_json::from_text(text).unwrap_or_else(|error| {
        tracing::warn!(%error, "an audit event's metadata is not JSON; shown as {{}}");
        tally_domain::audit::Value::empty()
    })
}

fn audit_from(a: AuditEventV1) -> R<AuditEvent> {
    Ok(AuditEvent {
        guid: guid(a.guid),
        created_at: time(a.created_at)?,
        event_type: a.event_type,
        actor: Actor {
            guid: a.actor,
            kind: a.actor_type,
            name: a.actor_name,
            username: a.actor_username,
        },
        actee: guid(a.actee).to_string(),
        actee_type: a.actee_type,
        actee_name: a.actee_name,
        metadata: metadata_from(&a.metadata),
        space_guid: a.space_guid.map(guid),
        organization_guid: a.organization_guid.map(guid),
    })
}

pub(crate) fn event_to(event: &Event) -> RecordBodyV1 {
    match event {
        Event::OrgCreated(o) => RecordBodyV1::OrgCreated(org_to(o)),
        Event::OrgUpdated(o) => RecordBodyV1::OrgUpdated(org_to(o)),
        Event::OrgDeleted { guid } => RecordBodyV1::OrgDeleted(g(*guid)),
        Event::SpaceCreated(s) => RecordBodyV1::SpaceCreated(space_to(s)),
        Event::SpaceUpdated(s) => RecordBodyV1::SpaceUpdated(space_to(s)),
        Event::SpaceDeleted { guid } => RecordBodyV1::SpaceDeleted(g(*guid)),
        Event::AppCreated(a) => RecordBodyV1::AppCreated(Box::new(app_to(a))),
        Event::AppUpdated(a) => RecordBodyV1::AppUpdated(Box::new(app_to(a))),
        Event::AppDeleted { guid } => RecordBodyV1::AppDeleted(g(*guid)),
        Event::UsageRecorded(u) => RecordBodyV1::Usage(usage_to(u)),
        Event::AuditRecorded(a) => {
            let mut event = audit_to(a);
            // Guid actees (apps, most users) keep the compact original layout.
            match a.actee.parse::<Guid>() {
                Ok(actee) if actee.to_string() == a.actee => {
                    event.actee = g(actee);
                    RecordBodyV1::Audit(event)
                }
                _ => RecordBodyV1::AuditTextActee(AuditTextActeeV1 {
                    event,
                    actee: a.actee.clone(),
                }),
            }
        }
        Event::RoleGranted(m) => RecordBodyV1::RoleGranted(membership_to(m)),
        Event::RoleRevoked(m) => RecordBodyV1::RoleRevoked(membership_to(m)),
        Event::TaskPut(t) => RecordBodyV1::TaskPut(task_to(t)),
        Event::TaskDeleted { guid } => RecordBodyV1::TaskDeleted(g(*guid)),
        Event::ProcessPut(p) => RecordBodyV1::ProcessPut(process_to(p)),
        Event::ProcessDeleted { guid } => RecordBodyV1::ProcessDeleted(g(*guid)),
    }
}

pub(crate) fn event_from(body: RecordBodyV1) -> R<Event> {
    Ok(match body {
        RecordBodyV1::OrgCreated(o) => Event::OrgCreated(org_from(o)?),
        RecordBodyV1::OrgUpdated(o) => Event::OrgUpdated(org_from(o)?),
        RecordBodyV1::OrgDeleted(id) => Event::OrgDeleted { guid: guid(id) },
        RecordBodyV1::SpaceCreated(s) => Event::SpaceCreated(space_from(s)?),
        RecordBodyV1::SpaceUpdated(s) => Event::SpaceUpdated(space_from(s)?),
        RecordBodyV1::SpaceDeleted(id) => Event::SpaceDeleted { guid: guid(id) },
        RecordBodyV1::AppCreated(a) => Event::AppCreated(app_from(*a)?),
        RecordBodyV1::AppUpdated(a) => Event::AppUpdated(app_from(*a)?),
        RecordBodyV1::AppDeleted(id) => Event::AppDeleted { guid: guid(id) },
        RecordBodyV1::Usage(u) => Event::UsageRecorded(usage_from(u)?),
        RecordBodyV1::Audit(a) => Event::AuditRecorded(audit_from(a)?),
        RecordBodyV1::AuditTextActee(a) => Event::AuditRecorded(AuditEvent {
            actee: a.actee,
            ..audit_from(a.event)?
        }),
        RecordBodyV1::RoleGranted(m) => Event::RoleGranted(membership_from(m)?),
        RecordBodyV1::RoleRevoked(m) => Event::RoleRevoked(membership_from(m)?),
        RecordBodyV1::TaskPut(t) => Event::TaskPut(task_from(t)?),
        RecordBodyV1::TaskDeleted(id) => Event::TaskDeleted { guid: guid(id) },
        RecordBodyV1::ProcessPut(p) => Event::ProcessPut(process_from(p)?),
        RecordBodyV1::ProcessDeleted(id) => Event::ProcessDeleted { guid: guid(id) },
        RecordBodyV1::UsagePruned(_) => {
            return Err(MappingError(
                "a pruned usage event is not a fact of the log".to_owned(),
            ))
        }
    })
}

pub(crate) fn row_to(row: &TableRow) -> TableRowV1 {
    match row {
        TableRow::Org(o) => TableRowV1::Org(org_to(o)),
        TableRow::Space(s) => TableRowV1::Space(space_to(s)),
        TableRow::App(a) => TableRowV1::App(Box::new(app_to(a))),
        TableRow::Members(resource, members) => TableRowV1::Members(MembersV1 {
            resource: g(*resource),
            members: members
                .iter()
                .map(|(role, user)| MemberV1 {
                    role: role_tag(*role),
                    user: user.clone(),
                })
                .collect(),
        }),
        TableRow::Task(t) => TableRowV1::Task(task_to(t)),
        TableRow::Process(p) => TableRowV1::Process(process_to(p)),
    }
}

pub(crate) fn row_from(row: TableRowV1) -> R<TableRow> {
    Ok(match row {
        TableRowV1::Org(o) => TableRow::Org(org_from(o)?),
        TableRowV1::Space(s) => TableRow::Space(space_from(s)?),
        TableRowV1::App(a) => TableRow::App(Box::new(app_from(*a)?)),
        TableRowV1::Members(m) => TableRow::Members(
            guid(m.resource),
            m.members
                .into_iter()
                .map(|member| Ok((role(member.role)?, member.user)))
                .collect::<R<_>>()?,
        ),
        TableRowV1::Task(t) => TableRow::Task(Box::new(task_from(t)?)),
        TableRowV1::Process(p) => TableRow::Process(Box::new(process_from(p)?)),
    })
}

fn task_to(t: &Task) -> TaskV1 {
    TaskV1 {
        guid: g(t.guid),
        app_guid: g(t.app_guid),
        name: t.name.clone(),
        command: t.command.clone(),
        state: match t.state {
            TaskState::Pending => 0,
            TaskState::Running => 1,
            TaskState::Canceling => 2,
            TaskState::Succeeded => 3,
            TaskState::Failed => 4,
        },
        memory_mb: t.memory_mb,
        disk_mb: t.disk_mb,
        log_rate_limit: t.log_rate_limit,
        sequence_id: t.sequence_id,
        droplet_guid: g(t.droplet_guid),
        failure_reason: t.failure_reason.clone(),
        started_at: t.started_at.map(micros),
        created_at: micros(t.created_at),
        updated_at: micros(t.updated_at),
    }
}

fn task_from(t: TaskV1) -> R<Task> {
    Ok(Task {
        guid: guid(t.guid),
        app_guid: guid(t.app_guid),
        name: t.name,
        command: t.command,
        state: match t.state {
            0 => TaskState::Pending,
            1 => TaskState::Running,
            2 => TaskState::Canceling,
            3 => TaskState::Succeeded,
            4 => TaskState::Failed,
            tag => return Err(tag_error("task state", tag)),
        },
        memory_mb: t.memory_mb,
        disk_mb: t.disk_mb,
        log_rate_limit: t.log_rate_limit,
        sequence_id: t.sequence_id,
        droplet_guid: guid(t.droplet_guid),
        failure_reason: t.failure_reason,
        started_at: t.started_at.map(time).transpose()?,
        created_at: time(t.created_at)?,
        updated_at: time(t.updated_at)?,
    })
}

fn process_to(p: &Process) -> ProcessV1 {
    ProcessV1 {
        guid: g(p.guid),
        app_guid: g(p.app_guid),
        process_type: p.process_type.clone(),
        state: process_state_to(p.state),
        instances: p.instances,
        memory_mb: p.memory_mb,
        disk_mb: p.disk_mb,
        log_rate_limit: p.log_rate_limit,
        command: p.command.clone(),
        detected_command: p.detected_command.clone(),
        health_check_type: health_check_to(p.health_check_type),
        health_check_timeout: p.health_check_timeout,
        health_check_http_endpoint: p.health_check_http_endpoint.clone(),
        version: g(p.version),
        created_at: micros(p.created_at),
        updated_at: micros(p.updated_at),
    }
}

fn process_from(p: ProcessV1) -> R<Process> {
    Ok(Process {
        guid: guid(p.guid),
        app_guid: guid(p.app_guid),
        process_type: p.process_type,
        state: process_state_from(p.state)?,
        instances: p.instances,
        memory_mb: p.memory_mb,
        disk_mb: p.disk_mb,
        log_rate_limit: p.log_rate_limit,
        command: p.command,
        detected_command: p.detected_command,
        health_check_type: health_check_from(p.health_check_type)?,
        health_check_timeout: p.health_check_timeout,
        health_check_http_endpoint: p.health_check_http_endpoint,
        version: guid(p.version),
        created_at: time(p.created_at)?,
        updated_at: time(p.updated_at)?,
    })
}
