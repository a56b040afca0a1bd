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

impl ApiError {
    /// Builds an error.
    pub fn new(
        status: StatusCode,
        name: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            name,
            code,
            message: message.into(),
        }
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
            DomainError::BuildNotStaging(_) | DomainError::ReportTooLong { .. } => {
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
                tracing::error!(%cause, "write refused: storage unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    10015,
                    "The service is currently unavailable",
                )
            }
            EngineError::Stopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                10015,
                "The service is currently unavailable",
            ),
            EngineError::Corrupt(cause) => {
                tracing::error!(%cause, "read refused: corrupt record");
                Self::unknown()
            }
        }
    }
}
