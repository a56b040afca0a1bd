//! v3 request bodies (reference v3 §2.2, §2.4, §3.3, §3.4): only the keys a message allows
//! (anything else is `Unknown field(s)`), every value type-checked, every problem reported at
//! once as one 422 whose detail joins CC's messages with ", ". Nothing is written when a body is
//! refused.

use serde_json::{Map, Value};
use tally_domain::{Lifecycle, ProcessUpdate, Scale};

use crate::ApiError;

/// What audit events show for a private value.
pub const PRIVATE: &str = "[PRIVATE DATA HIDDEN]";

/// The problems found in one body, reported together.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, message: impl Into<String>) {
        self.0.push(message.into());
    }

    /// One more problem.
    pub fn add(&mut self, message: impl Into<String>) {
        self.push(message);
    }

    /// `Ok(value)` when nothing was wrong, else CC's 422.
    pub fn finish<T>(self, value: T) -> Result<T, ApiError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ApiError::unprocessable(self.0.join(", ")))
        }
    }
}

/// The body as an object (a body that is JSON but not an object is CC's parse error).
pub fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object()
        .ok_or_else(|| ApiError::parse_error("invalid request body"))
}

/// CC's `NoAdditionalKeysValidator`: `Unknown field(s): 'a', 'b'`.
fn only(o: &Map<String, Value>, allowed: &[&str], prefix: &str, problems: &mut Problems) {
    let unknown: Vec<String> = o
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("'{k}'"))
        .collect();
    if !unknown.is_empty() {
        problems.push(format!("{prefix}Unknown field(s): {}", unknown.join(", ")));
    }
}

/// [`only`] for the other v3 bodies.
pub fn only_keys(o: &Map<String, Value>, allowed: &[&str], prefix: &str, problems: &mut Problems) {
    only(o, allowed, prefix, problems);
}

/// [`metadata`] for the other v3 bodies.
pub fn metadata_of(o: &Map<String, Value>, problems: &mut Problems) {
    metadata(o, problems);
}

/// `metadata`: tally keeps no labels or annotations, so only empty ones are accepted.
fn metadata(o: &Map<String, Value>, problems: &mut Problems) {
    let Some(value) = o.get("metadata") else {
        return;
    };
    let Some(m) = value.as_object() else {
        problems.push("Metadata must be an object");
        return;
    };
    only(m, &["labels", "annotations"], "Metadata ", problems);
    for key in ["labels", "annotations"] {
        match m.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(entries)) if entries.is_empty() => {}
            Some(Value::Object(_)) => problems.push(format!(
                "Metadata {key} are not supported: tally stores no labels or annotations"
            )),
            Some(_) => problems.push(format!("Metadata {key} must be an object")),
        }
    }
}

fn string(
    o: &Map<String, Value>,
    key: &str,
    name: &str,
    problems: &mut Problems,
) -> Option<String> {
    match o.get(key) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push(format!("{name} must be a string"));
            None
        }
    }
}

/// `environment_variables` / `var` (CC's `EnvironmentVariablesValidator`): an object whose keys
/// are not empty, do not start with `VCAP_` or `VMC_` and are not `PORT`, with string values
/// (`null` too where `nulls` is set: it removes the variable).
fn variables(
    value: &Value,
    name: &str,
    nulls: bool,
    problems: &mut Problems,
) -> Option<Map<String, Value>> {
    let Some(vars) = value.as_object() else {
        problems.push(format!("{name} must be an object"));
        return None;
    };
    let before = problems.0.len();
    for (key, value) in vars {
        let upper = key.to_ascii_uppercase();
        if key.is_empty() {
            problems.push(format!("{name} key must be a minimum length of 1"));
        } else if upper.starts_with("VCAP_") {
            problems.push(format!("{name} cannot start with VCAP_"));
        } else if upper.starts_with("VMC_") {
            problems.push(format!("{name} cannot start with VMC_"));
        } else if upper == "PORT" {
            problems.push(format!("{name} cannot set PORT"));
        }
        match value {
            Value::String(_) => {}
            Value::Null if nulls => {}
            other => problems.push(format!(
                "{name} Non-string value in environment variable for key '{key}', value '{other}'"
            )),
        }
    }
    (problems.0.len() == before).then(|| vars.clone())
}

/// `lifecycle` as sent.
fn lifecycle(o: &Map<String, Value>, problems: &mut Problems) -> Lifecycle {
    let mut out = Lifecycle::default();
    let Some(value) = o.get("lifecycle") else {
        return out;
    };
    let Some(l) = value.as_object() else {
        problems.push("Lifecycle must be an object");
        return out;
    };
    only(l, &["type", "data"], "Lifecycle ", problems);
    let kind = match l.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => {
            problems.push("Lifecycle type is not included in the list: buildpack, docker, cnb");
            return out;
        }
    };
    match kind {
        "buildpack" => out.docker = Some(false),
        "docker" => out.docker = Some(true),
        "cnb" => {
            problems.push(
                "Lifecycle type cnb is not supported: tally stages buildpack and docker apps",
            );
            return out;
        }
        _ => {
            problems.push("Lifecycle type is not included in the list: buildpack, docker, cnb");
            return out;
        }
    }
    let data = match l.get("data") {
        None => return out,
        Some(Value::Object(data)) => data,
        Some(_) => {
            problems.push("Lifecycle data must be an object");
            return out;
        }
    };
    if kind == "docker" {
        only(data, &[], "Lifecycle ", problems);
        return out;
    }
    only(data, &["buildpacks", "stack"], "Lifecycle ", problems);
    match data.get("buildpacks") {
        None => {}
        Some(Value::Array(items)) => {
            let names: Option<Vec<String>> = items
                .iter()
                .map(|b| b.as_str().map(str::to_owned))
                .collect();
            match names {
                Some(names) => out.buildpacks = Some(names),
                None => problems.push("Lifecycle Buildpacks can only contain strings"),
            }
        }
        Some(_) => problems.push("Lifecycle Buildpacks must be an array"),
    }
    match data.get("stack") {
        None | Some(Value::Null) => {}
        Some(Value::String(stack)) => out.stack = Some(stack.clone()),
        Some(_) => problems.push("Lifecycle Stack must be a string"),
    }
    out
}

/// The audit `request` of a v3 write: the body as sent with private values hidden.
fn audit_request(o: &Map<String, Value>, private: &[&str]) -> tally_domain::audit::Value {
    let mut request = o.clone();
    for key in private {
        if let Some(value) = request.get_mut(*key) {
            *value = Value::String(PRIVATE.to_owned());
        }
    }
    tally_json::from_json(Value::Object(request))
}

/// `POST /v3/apps`.
#[derive(Debug)]
pub struct AppCreate {
    /// `name`.
    pub name: String,
    /// `relationships.space.data.guid`, as sent (the space need not exist).
    pub space: String,
    /// `environment_variables`, JSON object text.
    pub environment_json: Option<String>,
    /// `lifecycle`.
    pub lifecycle: Lifecycle,
    /// The censored request.
    pub audit_request: tally_domain::audit::Value,
}

/// Parses `POST /v3/apps`.
pub fn app_create(body: &Value) -> Result<AppCreate, ApiError> {
    let o = object(body)?;
    let mut problems = Problems::default();
    only(
        o,
        &[
            "name",
            "environment_variables",
            "relationships",
            "lifecycle",
            "metadata",
        ],
        "",
        &mut problems,
    );
    let name = match o.get("name") {
        Some(Value::String(name)) => name.clone(),
        _ => {
            problems.push("Name must be a string");
            String::new()
        }
    };
    let environment_json = match o.get("environment_variables") {
        None | Some(Value::Null) => None,
        Some(value) => variables(value, "Environment variables", false, &mut problems)
            .map(|vars| Value::Object(vars).to_string()),
    };
    let space = match o.get("relationships") {
        Some(Value::Object(r)) => {
            only(r, &["space"], "Relationships ", &mut problems);
            let guid = r
                .get("space")
                .and_then(|s| s.get("data"))
                .and_then(|d| d.get("guid"))
                .and_then(Value::as_str);
            match guid {
                Some(guid) => guid.to_owned(),
                None => {
                    problems.push("Relationships Space must be structured like this: \"space: {\"data\": {\"guid\": \"valid-guid\"}}\"");
                    String::new()
                }
            }
        }
        _ => {
            problems.push("Relationships 'relationships' is not an object");
            String::new()
        }
    };
    let lifecycle = lifecycle(o, &mut problems);
    metadata(o, &mut problems);
    problems.finish(AppCreate {
        name,
        space,
        environment_json,
        lifecycle,
        audit_request: audit_request(o, &["environment_variables"]),
    })
}

/// `PATCH /v3/apps/:guid`.
#[derive(Debug)]
pub struct AppUpdate {
    /// `name`.
    pub name: Option<String>,
    /// `lifecycle`.
    pub lifecycle: Lifecycle,
    /// The request as sent.
    pub audit_request: tally_domain::audit::Value,
}

/// Parses `PATCH /v3/apps/:guid`.
pub fn app_update(body: &Value) -> Result<AppUpdate, ApiError> {
    let o = object(body)?;
    let mut problems = Problems::default();
    only(o, &["name", "lifecycle", "metadata"], "", &mut problems);
    let name = string(o, "name", "Name", &mut problems);
    let lifecycle = lifecycle(o, &mut problems);
    metadata(o, &mut problems);
    problems.finish(AppUpdate {
        name,
        lifecycle,
        audit_request: audit_request(o, &[]),
    })
}

/// Parses `PATCH /v3/apps/:guid/environment_variables` (`{"var": {...}}`): the variables to
/// set (`null`: remove).
pub fn environment_patch(body: &Value) -> Result<Map<String, Value>, ApiError> {
    let o = object(body)?;
    let mut problems = Problems::default();
    only(o, &["var"], "", &mut problems);
    let vars = match o.get("var") {
        None => Some(Map::new()),
        Some(value) => variables(value, "Var", true, &mut problems),
    };
    problems.finish(vars.unwrap_or_default())
}

/// CC's numericality message for an integer field within `min..=max`.
fn integer(
    o: &Map<String, Value>,
    key: &str,
    name: &str,
    (min, min_text): (i64, &str),
    problems: &mut Problems,
) -> Option<i64> {
    const MAX: i64 = 2_147_483_647;
    let value = o.get(key)?;
    let Value::Number(n) = value else {
        problems.push(format!("{name} is not a number"));
        return None;
    };
    let Some(n) = n.as_i64() else {
        if n.is_f64() {
            problems.push(format!("{name} must be an integer"));
        } else {
            problems.push(format!("{name} must be less than or equal to {MAX}"));
        }
        return None;
    };
    if n < min {
        problems.push(format!("{name} must be {min_text}"));
        None
    } else if n > MAX {
        problems.push(format!("{name} must be less than or equal to {MAX}"));
        None
    } else {
        Some(n)
    }
}

/// `POST /v3/processes/:guid/actions/scale`: what to change and the request as sent.
pub fn scale(body: &Value) -> Result<(Scale, tally_domain::audit::Value), ApiError> {
    let o = object(body)?;
    let mut problems = Problems::default();
    only(
        o,
        &[
            "instances",
            "memory_in_mb",
            "disk_in_mb",
            "log_rate_limit_in_bytes_per_second",
        ],
        "",
        &mut problems,
    );
    let scale = Scale {
        instances: integer(
            o,
            "instances",
            "Instances",
            (0, "greater than or equal to 0"),
            &mut problems,
        ),
        memory_mb: integer(
            o,
            "memory_in_mb",
            "Memory in mb",
            (1, "greater than 0"),
            &mut problems,
        ),
        disk_mb: integer(
            o,
            "disk_in_mb",
            "Disk in mb",
            (1, "greater than 0"),
            &mut problems,
        ),
        log_rate_limit: integer(
            o,
            "log_rate_limit_in_bytes_per_second",
            "Log rate limit in bytes per second",
            (-1, "greater than or equal to -1"),
            &mut problems,
        ),
    };
    problems.finish((scale, audit_request(o, &[])))
}

/// `PATCH /v3/processes/:guid`: what to change and the request, `command` censored.
pub fn process_update(
    body: &Value,
) -> Result<(ProcessUpdate, tally_domain::audit::Value), ApiError> {
    let o = object(body)?;
    let mut problems = Problems::default();
    only(
        o,
        &[
            "command",
            "user",
            "health_check",
            "readiness_health_check",
            "metadata",
        ],
        "",
        &mut problems,
    );
    let mut update = ProcessUpdate::default();
    match o.get("command") {
        None => {}
        Some(Value::Null) => update.command = Some(None),
        Some(Value::String(command)) => update.command = Some(Some(command.clone())),
        Some(_) => problems.push("Command must be a string"),
    }
    match o.get("user") {
        None | Some(Value::Null) => {}
        Some(Value::String(user)) if user == "vcap" => {}
        Some(_) => problems.push("User is not supported: tally's processes run as vcap"),
    }
    if o.get("readiness_health_check")
        .is_some_and(|r| !r.is_null())
    {
        problems.push("Readiness health check is not supported: tally keeps none");
    }
    match o.get("health_check") {
        None | Some(Value::Null) => {}
        Some(Value::Object(check)) => {
            only(check, &["type", "data"], "Health check ", &mut problems);
            match check.get("type") {
                None => {}
                Some(Value::String(kind)) => update.health_check_type = Some(kind.clone()),
                Some(_) => {
                    problems.push("Health check type must be \"port\", \"process\", or \"http\"")
                }
            }
            match check.get("data") {
                None | Some(Value::Null) => {}
                Some(Value::Object(data)) => {
                    only(
                        data,
                        &["timeout", "endpoint", "invocation_timeout", "interval"],
                        "Health check ",
                        &mut problems,
                    );
                    match data.get("timeout") {
                        None => {}
                        Some(Value::Null) => update.health_check_timeout = Some(None),
                        Some(Value::Number(n)) => match n.as_i64().filter(|t| *t >= 1) {
                            Some(t) => update.health_check_timeout = Some(Some(t)),
                            None => problems
                                .push("Health check timeout must be greater than or equal to 1"),
                        },
                        Some(_) => problems.push("Health check timeout must be an integer"),
                    }
                    match data.get("endpoint") {
                        None => {}
                        Some(Value::Null) => update.health_check_endpoint = Some(None),
                        Some(Value::String(e)) => {
                            update.health_check_endpoint = Some(Some(e.clone()))
                        }
                        Some(_) => problems.push("Health check endpoint must be a string"),
                    }
                    for key in ["invocation_timeout", "interval"] {
                        if data.get(key).is_some_and(|v| !v.is_null()) {
                            problems.push(format!(
                                "Health check {key} is not supported: tally keeps none"
                            ));
                        }
                    }
                }
                Some(_) => problems.push("Health check data must be an object"),
            }
        }
        Some(_) => problems.push("Health check must be an object"),
    }
    metadata(o, &mut problems);
    problems.finish((update, audit_request(o, &["command"])))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_problem_of_a_create_is_reported_at_once() {
        let error = app_create(&json!({
            "name": 5,
            "extra": 1,
            "environment_variables": {"VCAP_X": "1", "PORT": "2"},
            "lifecycle": {"type": "rkt"},
        }))
        .unwrap_err();
        assert_eq!(error.code, 10008);
        assert_eq!(
            error.message,
            "Unknown field(s): 'extra', Name must be a string, Environment variables cannot start with VCAP_, \
             Environment variables cannot set PORT, Relationships 'relationships' is not an object, \
             Lifecycle type is not included in the list: buildpack, docker, cnb"
        );
        let ok = app_create(&json!({
            "name": "a",
            "environment_variables": {"K": "v"},
            "relationships": {"space": {"data": {"guid": "s"}}},
            "lifecycle": {"type": "buildpack", "data": {"buildpacks": ["ruby"], "stack": "cflinuxfs4"}},
            "metadata": {"labels": {}},
        }))
        .unwrap();
        assert_eq!(ok.space, "s");
        assert_eq!(ok.lifecycle.buildpacks, Some(vec!["ruby".to_owned()]));
        let request = tally_json::to_json(&ok.audit_request);
        assert_eq!(request["environment_variables"], PRIVATE);
        assert_eq!(request["name"], "a");
    }

    #[test]
    fn labels_are_refused_rather_than_dropped() {
        let error = app_update(&json!({"metadata": {"labels": {"team": "x"}}})).unwrap_err();
        assert!(
            error.message.contains("Metadata labels are not supported"),
            "{}",
            error.message
        );
    }

    #[test]
    fn scale_values_are_ccs_numbers() {
        let error = scale(&json!({"instances": -1, "memory_in_mb": "1G", "disk_in_mb": 1.5, "log_rate_limit_in_bytes_per_second": -2})).unwrap_err();
        assert_eq!(
            error.message,
            "Instances must be greater than or equal to 0, Memory in mb is not a number, \
             Disk in mb must be an integer, \
             Log rate limit in bytes per second must be greater than or equal to -1"
        );
    }

    #[test]
    fn environment_patches_allow_null_and_refuse_reserved_names() {
        let vars = environment_patch(&json!({"var": {"A": "1", "B": null}})).unwrap();
        assert_eq!(vars.len(), 2);
        let error = environment_patch(&json!({"var": {"vmc_x": "1", "A": 2}})).unwrap_err();
        assert!(
            error
                .message
                .contains("Var Non-string value in environment variable for key 'A', value '2'"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("Var cannot start with VMC_"),
            "{}",
            error.message
        );
        let error = environment_patch(&json!({"var": [1]})).unwrap_err();
        assert_eq!(error.message, "Var must be an object");
    }

    #[test]
    fn process_updates_censor_the_command_in_the_audit_request() {
        let (update, request) = process_update(&json!({"command": "rackup", "health_check": {"type": "http", "data": {"endpoint": "/h", "timeout": 10}}})).unwrap();
        assert_eq!(update.command, Some(Some("rackup".to_owned())));
        assert_eq!(update.health_check_type.as_deref(), Some("http"));
        assert_eq!(update.health_check_timeout, Some(Some(10)));
        assert_eq!(tally_json::to_json(&request)["command"], PRIVATE);
        let error =
            process_update(&json!({"user": "root", "health_check": {"data": {"interval": 3}}}))
                .unwrap_err();
        assert!(
            error.message.contains("User is not supported"),
            "{}",
            error.message
        );
        assert!(
            error
                .message
                .contains("Health check interval is not supported"),
            "{}",
            error.message
        );
    }
}
