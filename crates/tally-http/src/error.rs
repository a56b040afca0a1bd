//! The HTTP edge's one error type and the one table that maps every engine and domain error to
//! Cloud Controller's name, code and status (reference §7.2). Handlers return [`ApiError`];
//! the `cc_errors` middleware renders it as a v2 or v3 body depending on the request path.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tally_domain::access::Denial;
use tally_domain::DomainError;
use tally_engine::EngineError;

/// A Cloud Controller error: its name (without `CF-`), code, status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// CC error name, e.g. `AppNotFound`.
    pub name: &'static str,
    /// CC error code, e.g. 100004.
    pub code: u32,
    /// The message clients see.
    pub message: String,
}

/// Every Cloud Controller error tally answers: name, code, HTTP status. Only this module builds
/// an [`ApiError`], from a constructor below or from a `DomainError`, so a handler can name an
/// error but never spell a code; a test checks the table against the reference (§7).
pub const TABLE: &[(&str, u32, u16)] = &[
    ("InvalidAuthToken", 1000, 401),
    ("MessageParseError", 1001, 400),
    ("InvalidRelation", 1002, 400),
    ("NotFound", 10000, 404),
    ("UnknownError", 10001, 500),
    ("NotAuthenticated", 10002, 401),
    ("NotAuthorized", 10003, 403),
    ("InvalidRequest", 10004, 413),
    ("InvalidRequest", 10004, 400),
    ("BadQueryParameter", 10005, 400),
    ("AssociationNotEmpty", 10006, 400),
    ("InsufficientScope", 10007, 403),
    ("UnprocessableEntity", 10008, 422),
    ("ResourceNotFound", 10010, 404),
    ("OrderByParameterInvalid", 10012, 500),
    ("ServiceUnavailable", 10015, 503),
    ("UaaUnavailable", 20004, 502),
    ("OrganizationInvalid", 30001, 400),
    ("OrganizationNameTaken", 30002, 400),
    ("OrganizationNotFound", 30003, 404),
    ("SpaceInvalid", 40001, 400),
    ("SpaceNameTaken", 40002, 400),
    ("SpaceNotFound", 40004, 404),
    ("AppInvalid", 100001, 400),
    ("AppNameTaken", 100002, 400),
    ("AppNotFound", 100004, 404),
    ("AppMemoryInvalid", 100006, 400),
    ("AppPackageInvalid", 150001, 400),
    ("DockerImageMissing", 150008, 400),
    ("AppBitsUploadInvalid", 160001, 400),
    ("StagingError", 170001, 400),
    ("NotStaged", 170002, 400),
    ("EventNotFound", 230002, 404),
    ("FeatureDisabled", 330002, 403),
    ("UniquenessError", 10016, 422),
];

impl ApiError {
    /// Builds an error of the table (checked in tests).
    fn new(status: StatusCode, name: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            name,
            code,
            message: message.into(),
        }
    }

    /// CC `NotAuthenticated` (10002): no bearer token, or a wrong credential.
    pub fn not_authenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "NotAuthenticated",
            10002,
            "Authentication error",
        )
    }

    /// CC `InvalidAuthToken` (1000).
    pub fn invalid_auth_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthToken",
            1000,
            "Invalid Auth Token",
        )
    }

    /// CC `UaaUnavailable` (20004), answered 502 as CC's security middleware does.
    pub fn uaa_unavailable() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "UaaUnavailable",
            20004,
            "The UAA service is currently unavailable",
        )
    }

    /// CC `InsufficientScope` (10007).
    pub fn insufficient_scope() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "InsufficientScope",
            10007,
            "Your token lacks the necessary scopes to access this resource.",
        )
    }

    /// CC `NotAuthorized` (10003).
    pub fn not_authorized() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "NotAuthorized",
            10003,
            "You are not authorized to perform the requested action",
        )
    }

    /// CC `AppNotFound` (100004).
    pub fn app_not_found(guid: &str) -> Self {
        let message = format!("The app could not be found: {guid}");
        Self::new(StatusCode::NOT_FOUND, "AppNotFound", 100004, message)
    }

    /// CC `OrganizationNotFound` (30003).
    pub fn org_not_found(guid: &str) -> Self {
        let message = format!("The organization could not be found: {guid}");
        Self::new(
            StatusCode::NOT_FOUND,
            "OrganizationNotFound",
            30003,
            message,
        )
    }

    /// CC `SpaceNotFound` (40004).
    pub fn space_not_found(guid: &str) -> Self {
        let message = format!("The app space could not be found: {guid}");
        Self::new(StatusCode::NOT_FOUND, "SpaceNotFound", 40004, message)
    }

    /// CC `EventNotFound` (230002).
    pub fn event_not_found(guid: &str) -> Self {
        let message = format!("Event could not be found: {guid}");
        Self::new(StatusCode::NOT_FOUND, "EventNotFound", 230002, message)
    }

    /// CC `ResourceNotFound` (10010), v3's not-found (`Build not found: …`).
    pub fn resource_not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFound", 10010, message)
    }

    /// CC `BadQueryParameter` (10005).
    pub fn bad_query(what: impl std::fmt::Display) -> Self {
        let message = format!("The query parameter is invalid: {what}");
        Self::new(StatusCode::BAD_REQUEST, "BadQueryParameter", 10005, message)
    }

    /// CC `UnprocessableEntity` (10008): v3's parameter error.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnprocessableEntity",
            10008,
            message,
        )
    }

    /// CC `MessageParseError` (1001).
    pub fn parse_error(why: impl std::fmt::Display) -> Self {
        let message = format!("Request invalid due to parse error: {why}");
        Self::new(StatusCode::BAD_REQUEST, "MessageParseError", 1001, message)
    }

    /// CC `InvalidRequest` (10004), answered 413: a body past its limit (`what` says which).
    pub fn too_large(what: impl std::fmt::Display) -> Self {
        let message = format!("The request is invalid: {what}");
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "InvalidRequest",
            10004,
            message,
        )
    }

    /// CC `OrderByParameterInvalid` (10012), a 500 as CC answers it (reference §3).
    pub fn order_by_invalid(value: &str) -> Self {
        let message = format!("Cannot order by: {value}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "OrderByParameterInvalid",
            10012,
            message,
        )
    }

    /// CC `ServiceUnavailable` (10015).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            10015,
            message,
        )
    }

    /// CC `AppBitsUploadInvalid` (160001).
    pub fn bits_invalid(why: impl std::fmt::Display) -> Self {
        let message = format!("The app upload is invalid: {why}");
        Self::new(
            StatusCode::BAD_REQUEST,
            "AppBitsUploadInvalid",
            160001,
            message,
        )
    }

    /// CC `NotFound` (10000): no such route.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", 10000, "Unknown request")
    }

    /// CC's answer to anything unexpected; the cause is logged, never shown.
    pub fn unknown() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UnknownError",
            10001,
            "An unknown error occurred.",
        )
    }

    /// The v2 body: `{"description","error_code","code"}` and a newline.
    pub fn v2_body(&self) -> String {
        let error_code = if self.name == "UnknownError" {
            self.name.to_owned()
        } else {
            format!("CF-{}", self.name)
        };
        let body = serde_json::json!({
            "description": self.message,
            "error_code": error_code,
            "code": self.code,
        });
        format!("{body}\n")
    }

    /// The v3 body: `{"errors":[{"detail","title","code"}]}`.
    pub fn v3_body(&self) -> String {
        let title = if self.name == "UnknownError" {
            self.name.to_owned()
        } else {
            format!("CF-{}", self.name)
        };
        serde_json::json!({ "errors": [{ "detail": self.message, "title": title, "code": self.code }] }).to_string()
    }
}

/// Marks a response as an error for the `cc_errors` middleware to render.
#[derive(Debug, Clone)]
pub(crate) struct PendingError(pub(crate) ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(PendingError(self));
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        use StatusCode as S;
        let message = error.to_string();
        let (status, name, code) = match &error {
            DomainError::AppNotFound(_) => (S::NOT_FOUND, "AppNotFound", 100004),
            DomainError::SpaceNotFound(_) => (S::NOT_FOUND, "SpaceNotFound", 40004),
            DomainError::OrgNotFound(_) => (S::NOT_FOUND, "OrganizationNotFound", 30003),
            DomainError::BuildNotFound(_) => (S::NOT_FOUND, "ResourceNotFound", 10010),
            DomainError::AppNameTaken(_) => (S::BAD_REQUEST, "AppNameTaken", 100002),
            DomainError::OrgNameTaken(_) => (S::BAD_REQUEST, "OrganizationNameTaken", 30002),
            DomainError::SpaceNameTaken(_) => (S::BAD_REQUEST, "SpaceNameTaken", 40002),
            DomainError::AppInvalid(_) => (S::BAD_REQUEST, "AppInvalid", 100001),
            DomainError::AppMemoryInvalid => (S::BAD_REQUEST, "AppMemoryInvalid", 100006),
            DomainError::AppPackageInvalid(_) => (S::BAD_REQUEST, "AppPackageInvalid", 150001),
            DomainError::DockerImageMissing => (S::BAD_REQUEST, "DockerImageMissing", 150008),
            DomainError::NotStaged => (S::BAD_REQUEST, "NotStaged", 170002),
            DomainError::StagingError(_) => (S::BAD_REQUEST, "StagingError", 170001),
            DomainError::AssociationNotEmpty { .. } => {
                (S::BAD_REQUEST, "AssociationNotEmpty", 10006)
            }
            DomainError::MissingField(_) => (S::BAD_REQUEST, "MessageParseError", 1001),
            DomainError::TaskEnded(_) => (S::BAD_REQUEST, "InvalidRequest", 10004),
            DomainError::InvalidRelation(_) => (S::BAD_REQUEST, "InvalidRelation", 1002),
            DomainError::InvalidName("organization") => {
                (S::BAD_REQUEST, "OrganizationInvalid", 30001)
            }
            DomainError::InvalidName(_) => (S::BAD_REQUEST, "SpaceInvalid", 40001),
            DomainError::NameTooLong("organization") => {
                (S::BAD_REQUEST, "OrganizationInvalid", 30001)
            }
            DomainError::NameTooLong(_) => (S::BAD_REQUEST, "SpaceInvalid", 40001),
            DomainError::Denied(Denial::InsufficientScope) => {
                (S::FORBIDDEN, "InsufficientScope", 10007)
            }
            DomainError::Denied(Denial::NotAuthorized) => (S::FORBIDDEN, "NotAuthorized", 10003),
            DomainError::Denied(Denial::NotFound) => (S::NOT_FOUND, "NotFound", 10000),
            DomainError::ResourceNotFound(_) => (S::NOT_FOUND, "ResourceNotFound", 10010),
            DomainError::Uniqueness(_) => (S::UNPROCESSABLE_ENTITY, "UniquenessError", 10016),
            DomainError::FeatureDisabled(_) => (S::FORBIDDEN, "FeatureDisabled", 330002),
            DomainError::Unprocessable(_)
            | DomainError::EnvironmentChanged
            | DomainError::BuildNotStaging(_)
            | DomainError::ReportTooLong { .. }
            | DomainError::ReportInvalid(_) => {
                (S::UNPROCESSABLE_ENTITY, "UnprocessableEntity", 10008)
            }
        };
        Self::new(status, name, code, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Domain(domain) => domain.into(),
            EngineError::Unavailable(cause) => {
                log_outage(&cause);
                Self::unavailable("The service is currently unavailable")
            }
            EngineError::Stopped => Self::unavailable("The service is currently unavailable"),
            EngineError::Corrupt(cause) => {
                tracing::error!(%cause, "read refused: corrupt record");
                Self::unknown()
            }
        }
    }
}

/// Logs why requests get 503 because the log is out of reach: once when it starts, then at most
/// every 30 s with how many requests it refused meanwhile ([`tally_engine::Outage`]), not once
/// per request.
fn log_outage(cause: &str) {
    static REFUSING: std::sync::Mutex<tally_engine::Outage> =
        std::sync::Mutex::new(tally_engine::Outage::new());
    let Ok(mut refusing) = REFUSING.lock() else {
        return;
    };
    if let Some(refused) = refusing.failed() {
        tracing::error!(
            %cause,
            refused_since_last_line = refused,
            "requests refused: the log is out of reach (logged again every 30 s while it lasts)"
        );
    }
}

#[cfg(test)]
mod tests {
    use tally_domain::Guid;

    use super::*;

    /// Entries of the table the reference does not list, with Cloud Controller's own definition
    /// (`errors/v2.yml` of cloud_controller_ng: name, code, HTTP status).
    const FROM_CC_ERRORS_YML: &[(&str, u32, u16)] = &[
        ("InvalidRelation", 1002, 400),
        ("ServiceUnavailable", 10015, 503),
        ("OrganizationInvalid", 30001, 400),
        ("OrganizationNameTaken", 30002, 400),
        ("OrganizationNotFound", 30003, 404),
        ("SpaceInvalid", 40001, 400),
        ("SpaceNameTaken", 40002, 400),
        ("AppBitsUploadInvalid", 160001, 400),
        ("FeatureDisabled", 330002, 403),
        ("UniquenessError", 10016, 422),
    ];

    /// Where tally answers another status than CC's table says, and why.
    const DEVIATIONS: &[(&str, u16, &str)] = &[
        (
            "UaaUnavailable",
            502,
            "CC's security middleware answers 502 (reference §7.2)",
        ),
        (
            "InvalidRequest",
            413,
            "a body past its limit; CC's 10004 is 400",
        ),
    ];

    fn in_table(error: &ApiError) -> bool {
        TABLE.contains(&(error.name, error.code, error.status.as_u16()))
    }

    /// Rows `| Name | code | HTTP | message |` of the reference's §7.2.
    fn reference_rows() -> Vec<(String, u32, u16)> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/reference/cloud-controller.md"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let section = text
            .split("### 7.2")
            .nth(1)
            .unwrap()
            .split("### 7.3")
            .next()
            .unwrap();
        section
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = cells.get(2)?.parse().ok()?;
                let status = cells.get(3)?.trim_matches('*').parse().ok()?;
                Some((cells[1].to_owned(), code, status))
            })
            .collect()
    }

    #[test]
    fn every_entry_is_ccs_and_every_error_tally_builds_is_an_entry() {
        let reference = reference_rows();
        assert!(
            reference.len() >= 20,
            "the reference table was not read: {reference:?}"
        );
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/reference/cloud-controller.md"
        ))
        .unwrap();
        for &(name, code, status) in TABLE {
            if let Some((_, ref_code, ref_status)) = reference.iter().find(|(n, ..)| n == name) {
                assert_eq!(code, *ref_code, "{name}");
                let deviation = DEVIATIONS
                    .iter()
                    .find(|(n, s, _)| *n == name && *s == status);
                assert!(
                    status == *ref_status || deviation.is_some(),
                    "{name}: {status}"
                );
            } else if name == "UnknownError" {
                assert!(
                    reference.iter().any(|(_, c, _)| *c == code),
                    "10001 is CC's"
                );
            } else if !FROM_CC_ERRORS_YML.contains(&(name, code, status)) {
                // Elsewhere in the reference (the validation table of §5.4, say).
                assert!(
                    text.contains(name) && text.contains(&code.to_string()),
                    "{name} {code}"
                );
            }
        }
        let samples = [
            ApiError::not_found(),
            ApiError::unknown(),
            ApiError::not_authenticated(),
            ApiError::invalid_auth_token(),
            ApiError::uaa_unavailable(),
            ApiError::insufficient_scope(),
            ApiError::not_authorized(),
            ApiError::app_not_found("g"),
            ApiError::org_not_found("g"),
            ApiError::space_not_found("g"),
            ApiError::event_not_found("g"),
            ApiError::resource_not_found("m"),
            ApiError::bad_query("q"),
            ApiError::unprocessable("m"),
            ApiError::parse_error("w"),
            ApiError::too_large("w"),
            ApiError::order_by_invalid("v"),
            ApiError::unavailable("m"),
            ApiError::bits_invalid("w"),
        ];
        let g = Guid::from_u128(1);
        let domain = [
            DomainError::AppNotFound(g),
            DomainError::SpaceNotFound(g),
            DomainError::OrgNotFound(g),
            DomainError::BuildNotFound(g),
            DomainError::AppNameTaken("n".into()),
            DomainError::OrgNameTaken("n".into()),
            DomainError::SpaceNameTaken("n".into()),
            DomainError::AppInvalid("m".into()),
            DomainError::AppMemoryInvalid,
            DomainError::AppPackageInvalid("m".into()),
            DomainError::DockerImageMissing,
            DomainError::NotStaged,
            DomainError::StagingError("m".into()),
            DomainError::AssociationNotEmpty {
                association: "spaces",
                resource: "organization",
            },
            DomainError::InvalidRelation("m".into()),
            DomainError::MissingField("name"),
            DomainError::InvalidName("organization"),
            DomainError::InvalidName("space"),
            DomainError::NameTooLong("organization"),
            DomainError::NameTooLong("space"),
            DomainError::ReportTooLong {
                field: "error",
                max: 1,
            },
            DomainError::ReportInvalid("m"),
            DomainError::Denied(Denial::InsufficientScope),
            DomainError::Denied(Denial::NotAuthorized),
            DomainError::Denied(Denial::NotFound),
            DomainError::BuildNotStaging(g),
            DomainError::Unprocessable("m".into()),
            DomainError::Uniqueness("n".into()),
            DomainError::ResourceNotFound("App"),
            DomainError::FeatureDisabled("diego_docker"),
            DomainError::EnvironmentChanged,
            DomainError::TaskEnded("SUCCEEDED"),
        ];
        let engine = [
            EngineError::Stopped,
            EngineError::Unavailable("disk".into()),
        ];
        let built: Vec<ApiError> = samples
            .into_iter()
            .chain(domain.into_iter().map(ApiError::from))
            .chain(engine.into_iter().map(ApiError::from))
            .collect();
        for error in &built {
            assert!(in_table(error), "{error:?} is not in the table");
        }
        for &(name, ..) in TABLE {
            assert!(
                built.iter().any(|e| e.name == name),
                "{name} is never built: drop it"
            );
        }
    }
}
