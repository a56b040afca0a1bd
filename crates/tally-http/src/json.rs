//! JSON request bodies: at most [`MAX_JSON_BODY`] bytes, parsed as JSON whatever the
//! `Content-Type` says (one real client labels JSON as form data), and every way a body can be
//! wrong answered in Cloud Controller's format (`MessageParseError`, 1001), never axum's text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// The largest JSON body accepted (package uploads have their own limit).
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// A JSON body, or CC's error.
#[derive(Debug, Clone)]
pub struct CcJson<T>(pub T);

/// CC `MessageParseError` (1001).
pub fn parse_error(why: impl std::fmt::Display) -> ApiError {
    ApiError::parse_error(why)
}

/// CC's message for a required field that is missing.
pub fn missing_field(field: &str) -> ApiError {
    parse_error(format!("Field: {field}, Error: Missing field {field}"))
}

impl<S, T> FromRequest<S> for CcJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // v3 says `invalid request body` for every body it cannot parse (reference v3 §8).
        let v3 = request.uri().path().starts_with("/v3/");
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(format!("the body is larger than {MAX_JSON_BODY} bytes"))
                } else if v3 {
                    parse_error("invalid request body")
                } else {
                    parse_error("the body could not be read")
                }
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text).map(Self).map_err(|e| {
            if v3 {
                parse_error("invalid request body")
            } else {
                parse_error(describe(&e))
            }
        })
    }
}

fn describe(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => error.to_string(),
        Category::Syntax | Category::Eof | Category::Io => "invalid JSON".to_owned(),
    }
}
