//! JSON request bodies: at most [`MAX_JSON_BODY`] bytes, and every way a body can be wrong is
//! answered in Cloud Controller's format (`MessageParseError`, 1001), never axum's plain text.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// The largest JSON body accepted (package uploads have their own limit).
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// A JSON body, or CC's error.
#[derive(Debug, Clone)]
pub struct CcJson<T>(pub T);

impl<S, T> FromRequest<S> for CcJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejected(rejection)),
        }
    }
}

fn rejected(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "InvalidRequest",
            10004,
            format!("The request is invalid: the body is larger than {MAX_JSON_BODY} bytes"),
        );
    }
    let why = match &rejection {
        JsonRejection::MissingJsonContentType(_) | JsonRejection::JsonSyntaxError(_) => {
            "invalid JSON".to_owned()
        }
        JsonRejection::JsonDataError(e) => e.body_text(),
        other => other.body_text(),
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "MessageParseError",
        1001,
        format!("Request invalid due to parse error: {why}"),
    )
}
