//! The most a client may store: every string has a maximum length (Cloud Controller's where it
//! has one) and every integer a range. Lengths count characters, as Cloud Controller's
//! validators do; a character is at most 4 bytes of UTF-8. `docs/api.md` ("Limits") lists them.
//!
//! These bounds are what makes one usage event or audit event bounded in size (the bound is
//! checked by a property test over the HTTP API), so a list page of `per_page` events is too.

use crate::error::DomainError;

/// Org, space and app names: CC's `length: { maximum: 255 }` (`varchar(255)` columns).
pub const NAME: usize = 255;
/// A start command: CC's `command` column (`size: 4096`) and its process message.
pub const COMMAND: usize = 4096;
/// A buildpack (an admin buildpack name or a git URL).
pub const BUILDPACK: usize = 4096;
/// A docker image reference.
pub const DOCKER_IMAGE: usize = 4096;
/// A docker registry user name.
pub const DOCKER_USERNAME: usize = 255;
/// A docker registry password: CC's package model allows "up to 5,000 characters".
pub const DOCKER_PASSWORD: usize = 5000;
/// The HTTP health check endpoint: CC's process message (`length: { maximum: 255 }`).
pub const HEALTH_CHECK_ENDPOINT: usize = 255;
/// The deprecated `debug` attribute.
pub const DEBUG: usize = 255;
/// `environment_json`, as compact JSON text, in bytes.
pub const ENVIRONMENT_JSON_BYTES: usize = 65_536;
/// Guid-valued strings a client sends (`space_guid`, `stack_guid`, `route_guids` entries).
pub const GUID_TEXT: usize = 255;
/// How many `route_guids` one app body may name.
pub const ROUTE_GUIDS: usize = 16;
/// What a token names (`user_id` or `client_id`, `email`, `user_name`): UAA's 255.
pub const IDENTITY: usize = 255;
/// What a staging runtime reports: the detected buildpack and the detected start command.
pub const STAGING_REPORT: usize = 4096;
/// How many process types one staging report may name (`web` included).
pub const PROCESS_TYPES: usize = 32;
/// A staging failure's reason, as the runtime reported it.
pub const STAGING_ERROR: usize = 4096;

/// The largest `instances`: CC's `MAX_DB_INT`, the range of its `integer` column.
pub const MAX_INSTANCES: i64 = 2_147_483_647;
/// The largest `memory` (MB) a setting may allow: CC's `MAX_DB_INT`.
pub const MAX_MEMORY_MB: i64 = 2_147_483_647;
/// The largest `log_rate_limit` (bytes per second): CC's `MAX_DB_BIGINT`.
pub const MAX_LOG_RATE_LIMIT: i64 = i64::MAX;

/// Refuses `value` when it is longer than `max` characters, as the app error CC answers
/// ("The app is invalid: command is too long (maximum is 4096 characters)").
pub fn app_text(field: &str, value: &str, max: usize) -> Result<(), DomainError> {
    if too_long(value, max) {
        return Err(DomainError::AppInvalid(format!(
            "{field} is too long (maximum is {max} characters)"
        )));
    }
    Ok(())
}

/// The app error for a list longer than `max` entries.
pub fn app_list_too_long(field: &str, max: usize) -> DomainError {
    DomainError::AppInvalid(format!("{field} must have at most {max} entries"))
}

/// Whether `value` holds more than `max` characters (counting only as far as needed).
pub fn too_long(value: &str, max: usize) -> bool {
    // A string of at most `max` bytes has at most `max` characters.
    value.len() > max && value.chars().nth(max).is_some()
}

/// Refuses text that must stay on one line (control characters would break log lines,
/// headers and terminals that show it).
pub fn app_single_line(field: &str, value: &str) -> Result<(), DomainError> {
    if value.chars().any(char::is_control) {
        return Err(DomainError::AppInvalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert!(!too_long(&"a".repeat(255), NAME));
        assert!(too_long(&"a".repeat(256), NAME));
        // 255 four-byte characters are 1,020 bytes and still within the limit.
        assert!(!too_long(&"😀".repeat(255), NAME));
        assert!(too_long(&"😀".repeat(256), NAME));
        let error = app_text("command", &"x".repeat(4097), COMMAND).unwrap_err();
        assert_eq!(
            error.to_string(),
            "The app is invalid: command is too long (maximum is 4096 characters)"
        );
        assert!(app_single_line("buildpack", "a\nb").is_err());
        assert!(app_single_line("buildpack", "https://example.com/bp").is_ok());
    }
}
