//! The body of `POST /v2/apps` and `PUT /v2/apps/:guid` (reference §5.2): every recognized
//! attribute type-checked (`null` counts as absent, unknown keys are ignored), and the censored
//! `request` hash their audit events carry (§6.2).

use serde_json::{Map, Value};
use tally_domain::model::{obfuscate_url_credentials, DockerCredentials};
use tally_domain::{limits, AppAttributes};

use crate::json::parse_error;
use crate::ApiError;

/// Keys whose values audit events never show.
const PRIVATE: [&str; 5] = [
    "encrypted_environment_json",
    "command",
    "environment_json",
    "environment_variables",
    "docker_credentials",
];

/// Every attribute §5.2 recognizes (`detected_start_command` is excluded, as in CC).
const RECOGNIZED: [&str; 23] = [
    "name",
    "space_guid",
    "stack_guid",
    "memory",
    "instances",
    "disk_quota",
    "log_rate_limit",
    "state",
    "buildpack",
    "command",
    "health_check_type",
    "health_check_timeout",
    "health_check_http_endpoint",
    "diego",
    "enable_ssh",
    "docker_image",
    "docker_credentials",
    "environment_json",
    "production",
    "console",
    "debug",
    "ports",
    "route_guids",
];

/// A parsed app body.
#[derive(Debug, Clone)]
pub struct AppBody {
    /// The attributes for the domain.
    pub attributes: AppAttributes,
    /// `space_guid` as sent, when it is not a guid (it then names no space).
    pub bad_space_guid: Option<String>,
    /// The censored request hash, JSON object text.
    pub audit_request: tally_domain::audit::Value,
}

fn type_error(field: &str, expected: &str, got: &Value) -> ApiError {
    let given = match got {
        Value::Bool(_) => "TrueClass",
        Value::Number(n) if n.is_f64() => "Float",
        Value::Number(_) => "Integer",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Hash",
        Value::Null => "NilClass",
    };
    parse_error(format!(
        "Field: {field}, Error: Expected instance of {expected}, given an instance of {given}"
    ))
}

fn string(o: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(type_error(field, "String", other)),
    }
}

fn integer(o: &Map<String, Value>, field: &str) -> Result<Option<i64>, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        // Beyond i64 is refused, never saturated (the domain checks the real range).
        Some(Value::Number(n)) if n.is_u64() => Err(parse_error(format!(
            "Field: {field}, Error: {n} is out of range (at most {})",
            i64::MAX
        ))),
        Some(other) => Err(type_error(field, "Integer", other)),
    }
}

/// A string that names a guid: bounded before anything echoes it.
fn guid_text(o: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    let text = string(o, field)?;
    if let Some(text) = &text {
        limits::app_text(field, text, limits::GUID_TEXT)?;
    }
    Ok(text)
}

fn boolean(o: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(type_error(field, "TrueClass", other)),
    }
}

fn object<'a>(
    o: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(type_error(field, "Hash", other)),
    }
}

/// Parses a body; `creating` adds CC's create defaults to the audit request hash.
pub fn parse(body: &Value, creating: bool) -> Result<AppBody, ApiError> {
    let Value::Object(o) = body else {
        return Err(parse_error("the body must be a JSON object"));
    };
    let space_text = guid_text(o, "space_guid")?;
    let (space_guid, bad_space_guid) = match &space_text {
        None => (None, None),
        Some(text) => match text.parse() {
            Ok(guid) => (Some(guid), None),
            Err(_) => (None, Some(text.clone())),
        },
    };
    let docker_credentials = match object(o, "docker_credentials")? {
        None => None,
        Some(m) => Some(DockerCredentials {
            username: string(m, "username")?,
            password: string(m, "password")?,
        }),
    };
    let ports = match o.get("ports") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| match v {
                    Value::Number(n) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
                    other => Err(type_error("ports", "Integer", other)),
                })
                .collect::<Result<Vec<i64>, ApiError>>()?,
        ),
        Some(other) => return Err(type_error("ports", "Array", other)),
    };
    match o.get("route_guids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            if items.len() > limits::ROUTE_GUIDS {
                return Err(limits::app_list_too_long("route_guids", limits::ROUTE_GUIDS).into());
            }
            for item in items {
                match item {
                    Value::String(text) => {
                        limits::app_text("route_guids", text, limits::GUID_TEXT)?
                    }
                    other => return Err(type_error("route_guids", "String", other)),
                }
            }
        }
        Some(other) => return Err(type_error("route_guids", "Array", other)),
    }
    let attributes = AppAttributes {
        name: string(o, "name")?,
        space_guid,
        stack_guid: guid_text(o, "stack_guid")?.and_then(|s| s.parse().ok()),
        memory: integer(o, "memory")?,
        instances: integer(o, "instances")?,
        disk_quota: integer(o, "disk_quota")?,
        log_rate_limit: integer(o, "log_rate_limit")?,
        state: string(o, "state")?,
        buildpack: string(o, "buildpack")?,
        command: string(o, "command")?,
        health_check_type: string(o, "health_check_type")?,
        health_check_timeout: integer(o, "health_check_timeout")?,
        health_check_http_endpoint: string(o, "health_check_http_endpoint")?,
        diego: boolean(o, "diego")?,
        enable_ssh: boolean(o, "enable_ssh")?,
        docker_image: string(o, "docker_image")?,
        docker_credentials,
        environment_json: object(o, "environment_json")?
            .map(|m| Value::Object(m.clone()).to_string()),
        production: boolean(o, "production")?,
        console: boolean(o, "console")?,
        debug: string(o, "debug")?,
        ports,
    };
    Ok(AppBody {
        attributes,
        bad_space_guid,
        audit_request: audit_request(o, creating),
    })
}

/// CC's censored request hash: recognized keys only, private values hidden, buildpack URL
/// credentials obfuscated; on create, CC's defaults are part of the hash.
fn audit_request(o: &Map<String, Value>, creating: bool) -> tally_domain::audit::Value {
    let mut request = Map::new();
    for key in RECOGNIZED {
        match o.get(key) {
            None | Some(Value::Null) => {}
            Some(value) => {
                request.insert(key.to_owned(), value.clone());
            }
        }
    }
    if creating {
        let defaults = [
            ("console", Value::Bool(false)),
            ("docker_credentials", Value::Object(Map::new())),
            ("environment_json", Value::Object(Map::new())),
            ("health_check_type", Value::String("port".into())),
            ("instances", Value::from(1)),
            ("production", Value::Bool(false)),
            ("state", Value::String("STOPPED".into())),
        ];
        for (key, value) in defaults {
            request.entry(key).or_insert(value);
        }
    }
    for key in PRIVATE {
        if let Some(value) = request.get_mut(key) {
            *value = Value::String("[PRIVATE DATA HIDDEN]".into());
        }
    }
    if let Some(Value::String(buildpack)) = request.get_mut("buildpack") {
        *buildpack = obfuscate_url_credentials(buildpack);
    }
    tally_json::from_json(Value::Object(request))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn types_are_checked_and_nulls_are_absent() {
        let body = parse(
            &json!({"name": "a", "memory": null, "instances": 2, "extra": [1]}),
            false,
        )
        .unwrap();
        assert_eq!(body.attributes.name.as_deref(), Some("a"));
        assert_eq!(body.attributes.memory, None);
        assert_eq!(body.attributes.instances, Some(2));
        let error = parse(&json!({"memory": "1G"}), false).unwrap_err();
        assert_eq!(error.code, 1001);
        assert_eq!(
            error.message,
            "Request invalid due to parse error: Field: memory, Error: Expected instance of Integer, given an instance of String"
        );
        assert_eq!(parse(&json!({"diego": 1}), false).unwrap_err().code, 1001);
        assert_eq!(
            parse(&json!({"ports": [80, "x"]}), false).unwrap_err().code,
            1001
        );
        assert_eq!(parse(&json!([1]), false).unwrap_err().code, 1001);
        // Beyond i64 is refused, not saturated.
        let error = parse(&json!({"instances": 9_223_372_036_854_775_808_u64}), false).unwrap_err();
        assert_eq!(error.code, 1001);
        assert!(error
            .message
            .contains("9223372036854775808 is out of range"));
        // What only the audit request would keep is bounded too.
        let long = "g".repeat(256);
        assert_eq!(
            parse(&json!({"stack_guid": long}), false).unwrap_err().code,
            100001
        );
        assert_eq!(
            parse(&json!({"space_guid": long}), false).unwrap_err().code,
            100001
        );
        assert_eq!(
            parse(&json!({"route_guids": [long]}), false)
                .unwrap_err()
                .code,
            100001
        );
        let many: Vec<String> = (0..17).map(|i| i.to_string()).collect();
        let error = parse(&json!({"route_guids": many}), false).unwrap_err();
        assert_eq!(
            error.message,
            "The app is invalid: route_guids must have at most 16 entries"
        );
        assert_eq!(
            parse(&json!({"route_guids": [1]}), false).unwrap_err().code,
            1001
        );
        let odd = parse(&json!({"space_guid": "not-a-guid"}), false).unwrap();
        assert_eq!(odd.bad_space_guid.as_deref(), Some("not-a-guid"));
    }

    #[test]
    fn the_audit_request_is_censored_and_carries_create_defaults() {
        let body = parse(
            &json!({"name": "a", "command": "rm -rf /", "environment_json": {"SECRET": "x"},
                    "buildpack": "https://u:p@git.example.com/bp", "junk": true,
                    "docker_credentials": {"username": "u", "password": "p"}}),
            true,
        )
        .unwrap();
        let request = tally_json::to_json(&body.audit_request);
        let text = tally_json::to_text(&body.audit_request);
        assert_eq!(request["command"], "[PRIVATE DATA HIDDEN]");
        assert_eq!(request["environment_json"], "[PRIVATE DATA HIDDEN]");
        assert_eq!(request["docker_credentials"], "[PRIVATE DATA HIDDEN]");
        assert_eq!(request["buildpack"], "https://***:***@git.example.com/bp");
        assert_eq!(request["state"], "STOPPED");
        assert_eq!(request["instances"], 1);
        assert!(request.get("junk").is_none());
        assert!(!text.contains("SECRET") && !text.contains("\"p\""));
        let update = parse(&json!({"instances": 3}), false).unwrap();
        assert_eq!(
            tally_json::to_text(&update.audit_request),
            r#"{"instances":3}"#
        );
    }
}
