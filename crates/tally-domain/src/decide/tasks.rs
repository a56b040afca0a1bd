//! Tasks (reference v3 §5, cloud-controller.md §2.2): RUNNING when created, with TASK_STARTED;
//! TASK_STOPPED when they end, only while their TASK_STARTED is in the usage table (not before
//! the current epoch); an app's delete cancels its running tasks and stops every one that has
//! not ended, unconditionally, as CC's `TaskDelete` does.

use super::*;
use crate::command::TaskSpec;
use crate::model::{Task, TaskState};
use crate::usage::task_event;

fn unprocessable(message: impl Into<String>) -> DomainError {
    DomainError::Unprocessable(message.into())
}

fn usage_state(state: TaskState) -> UsageState {
    match state {
        TaskState::Pending => UsageState::Pending,
        TaskState::Running => UsageState::Running,
        TaskState::Canceling => UsageState::Canceling,
        // Terminal tasks write no more events; a stop is the last word.
        TaskState::Succeeded | TaskState::Failed => UsageState::TaskStopped,
    }
}

/// The most characters a failure reason keeps.
const FAILURE_REASON: usize = 4096;

/// A task's audit event: its app is the target, `task_guid` (and what was asked) the metadata.
fn audit_task(
    kind: &str,
    task: &Task,
    app: &App,
    space: &Space,
    request: Option<&Value>,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    let mut metadata = vec![("task_guid", Value::text(task.guid.to_string()))];
    if let Some(request) = request {
        metadata.push(("request", request.clone()));
    }
    out.audit(inputs, kind, app, space, Value::object(metadata));
}

pub(super) fn create_task(
    state: &State,
    (guid, app_guid): (Guid, Guid),
    spec: &TaskSpec,
    audit_request: &Value,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let app = state
        .app(app_guid)
        .ok_or(DomainError::ResourceNotFound("App"))?;
    let space = find_space(state, app.space_guid)?;
    let config = inputs.config;
    let template = match spec.template {
        Some(process) if process == app.process_guid() => Some(app),
        Some(_) => return Err(unprocessable("Template process not found")),
        None => None,
    };
    let command = match (&spec.command, template) {
        (Some(command), _) => command.clone(),
        (None, Some(process)) => process
            .command
            .clone()
            .or_else(|| {
                process
                    .current_droplet()
                    .map(|d| d.detected_start_command.clone())
            })
            .unwrap_or_default(),
        (None, None) => return Err(unprocessable("Command No command or template provided")),
    };
    if command.is_empty() || limits::too_long(&command, limits::COMMAND) {
        return Err(unprocessable(format!(
            "Command must be between 1 and {} characters",
            limits::COMMAND
        )));
    }
    let droplet_guid = match spec.droplet_guid {
        Some(d) if app.latest_droplet.as_ref().is_some_and(|l| l.guid == d) => d,
        Some(_) => return Err(unprocessable("Droplet not found")),
        None => app.current_droplet_guid.ok_or_else(|| {
            unprocessable(
                "Task must have a droplet. Specify droplet or assign current droplet to app.",
            )
        })?,
    };
    let memory_mb = spec
        .memory_mb
        .unwrap_or(template.map_or(config.default_memory_mb, |p| p.memory_mb));
    if memory_mb < 1 || memory_mb > config.max_memory_mb {
        return Err(unprocessable(format!(
            "Memory in mb must be between 1 and {}",
            config.max_memory_mb
        )));
    }
    let disk_mb = spec
        .disk_mb
        .unwrap_or(template.map_or(config.default_disk_mb, |p| p.disk_quota_mb));
    if disk_mb < 1 || disk_mb > config.max_disk_mb {
        return Err(unprocessable(format!(
            "Disk in mb must be between 1 and {}",
            config.max_disk_mb
        )));
    }
    let log_rate_limit = spec
        .log_rate_limit
        .unwrap_or(template.map_or(config.default_log_rate_limit, |p| p.log_rate_limit));
    if log_rate_limit < -1 {
        return Err(unprocessable(
            "Log rate limit in bytes per second must be greater than or equal to -1",
        ));
    }
    let name = match &spec.name {
        Some(name) => {
            if name.is_empty() || limits::too_long(name, limits::NAME) || !valid_name(name) {
                return Err(unprocessable(
                    "Name must be between 1 and 255 characters, without control characters",
                ));
            }
            name.clone()
        }
        None => guid.to_string().chars().take(8).collect(),
    };
    let sequence_id = state
        .tasks_of(app_guid)
        .map(|t| t.sequence_id)
        .max()
        .unwrap_or(0)
        + 1;
    let mut task = Task {
        guid,
        app_guid,
        name,
        command,
        state: TaskState::Running,
        memory_mb,
        disk_mb,
        log_rate_limit,
        sequence_id,
        droplet_guid,
        failure_reason: None,
        started_at: Some(inputs.now),
        created_at: inputs.now,
        updated_at: inputs.now,
    };
    audit_task(
        "audit.app.task.create",
        &task,
        app,
        space,
        Some(audit_request),
        inputs,
        out,
    );
    out.usage(task_event(
        inputs.now,
        &task,
        app,
        Placement { space },
        (UsageState::TaskStarted, UsageState::Pending),
    ));
    if config.staging_mode == StagingMode::Immediate && config.immediate_task_seconds == 0 {
        out.usage(task_event(
            inputs.now,
            &task,
            app,
            Placement { space },
            (UsageState::TaskStopped, UsageState::Running),
        ));
        task.state = TaskState::Succeeded;
    }
    out.events.insert(0, Event::TaskPut(task));
    Ok(())
}

fn find_task(state: &State, guid: Guid) -> Result<(&Task, &App, &Space), DomainError> {
    let task = state
        .task(guid)
        .ok_or(DomainError::ResourceNotFound("Task"))?;
    let app = find_app(state, task.app_guid)?;
    let space = find_space(state, app.space_guid)?;
    Ok((task, app, space))
}

/// `CANCELING` and `audit.app.task.cancel`; TASK_STOPPED comes when the task ends.
pub(super) fn cancel_task(
    state: &State,
    guid: Guid,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let (task, app, space) = find_task(state, guid)?;
    if task.state.is_terminal() {
        return Err(unprocessable(format!(
            "Task state is {} and therefore cannot be canceled",
            task.state.as_str()
        )));
    }
    let mut task = task.clone();
    task.state = TaskState::Canceling;
    task.updated_at = inputs.now;
    audit_task(
        "audit.app.task.cancel",
        &task,
        app,
        space,
        None,
        inputs,
        out,
    );
    out.events.insert(0, Event::TaskPut(task));
    Ok(())
}

/// Whether a task's TASK_STARTED is still in the usage table (written in this epoch).
fn started_in_this_epoch(task: &Task, inputs: &Inputs<'_>) -> bool {
    match (task.started_at, inputs.epoch_started_at) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(started), Some(epoch)) => started >= epoch,
    }
}

/// The end of a task: SUCCEEDED or FAILED (with its reason), TASK_STOPPED if its TASK_STARTED is
/// in the usage table; a second end is CC's 400 `InvalidRequest`.
pub(super) fn complete_task(
    state: &State,
    guid: Guid,
    (failed, failure_reason): (bool, Option<&str>),
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let (task, app, space) = find_task(state, guid)?;
    if task.state.is_terminal() {
        return Err(DomainError::TaskEnded(task.state.as_str()));
    }
    if let Some(reason) = failure_reason {
        if limits::too_long(reason, FAILURE_REASON) {
            return Err(DomainError::ReportTooLong {
                field: "failure_reason",
                max: FAILURE_REASON,
            });
        }
    }
    let previous = task.state;
    let mut task = task.clone();
    task.state = if failed {
        TaskState::Failed
    } else {
        TaskState::Succeeded
    };
    task.failure_reason = failed.then(|| failure_reason.unwrap_or("task failed").to_owned());
    task.updated_at = inputs.now;
    if started_in_this_epoch(&task, inputs) {
        out.usage(task_event(
            inputs.now,
            &task,
            app,
            Placement { space },
            (UsageState::TaskStopped, usage_state(previous)),
        ));
    }
    out.events.insert(0, Event::TaskPut(task));
    Ok(())
}

/// An app's delete (CC's `TaskDelete`): each running task's cancel event, then TASK_STOPPED for
/// every task that had not ended (unconditionally, as CC's `after_destroy` writes it), and
/// every task of the app removed.
pub(super) fn delete_tasks(
    state: &State,
    app: &App,
    space: &Space,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    for task in state.tasks_of(app.guid) {
        if task.state == TaskState::Running {
            audit_task("audit.app.task.cancel", task, app, space, None, inputs, out);
        }
        if !task.state.is_terminal() {
            out.usage(task_event(
                inputs.now,
                task,
                app,
                Placement { space },
                (UsageState::TaskStopped, usage_state(task.state)),
            ));
        }
        out.events.push(Event::TaskDeleted { guid: task.guid });
    }
}
