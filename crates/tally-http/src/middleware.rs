//! Headers every response carries, and the rendering of [`ApiError`]s, in one middleware.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::UserSlot;
use crate::error::PendingError;
use crate::metrics::RouteSlot;
use crate::AppState;

/// `X-VCAP-Request-ID`.
pub static VCAP_REQUEST_ID: HeaderName = HeaderName::from_static("x-vcap-request-id");
/// `X-USER-GUID`: the caller's `user_id` or `client_id`, once its token checked out.
pub static USER_GUID: HeaderName = HeaderName::from_static("x-user-guid");
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of reference §7.3: the client's id (from `X-Vcap-Request-Id` or
/// `X-Request-Id`), stripped of everything outside `[A-Za-z0-9_-]` and cut to 255 characters,
/// then `::` and a fresh uuid; or just a fresh uuid.
pub fn request_id(client: Option<&str>, fresh: uuid::Uuid) -> String {
    let cleaned: Option<String> = client.map(|id| {
        id.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .take(255)
            .collect()
    });
    match cleaned {
        Some(id) if !id.is_empty() => format!("{id}::{fresh}"),
        _ => fresh.to_string(),
    }
}

/// The id of the request being served, for logs.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Sets `X-VCAP-Request-ID` and `X-Content-Type-Options`, renders a pending [`ApiError`]
/// as Cloud Controller's v2 or v3 body (v3 for `/v3/...`, v2 otherwise), and measures and
/// logs the request: one span per request (method, route template, path, request id, user),
/// one line when it is answered (status, latency), counted by method, route and status class.
pub async fn cc_headers(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let client = request
        .headers()
        .get(&VCAP_REQUEST_ID)
        .or_else(|| request.headers().get(&REQUEST_ID))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    #[allow(clippy::disallowed_methods)] // request ids are random by definition
    let id = request_id(client.as_deref(), uuid::Uuid::new_v4());
    let v3 = request.uri().path().starts_with("/v3");
    request.extensions_mut().insert(RequestId(id.clone()));
    let user = UserSlot::default();
    request.extensions_mut().insert(user.clone());
    let route = RouteSlot::default();
    request.extensions_mut().insert(route.clone());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = tracing::field::Empty,
        path = %request.uri().path(),
        request_id = %id,
        user_id = tracing::field::Empty,
    );
    let mut response = {
        let _entered = span.enter();
        tracing::debug!("request received");
        drop(_entered);
        tracing::Instrument::instrument(next.run(request), span.clone()).await
    };
    // Cloud Controller labels every v2 JSON body `application/json;charset=utf-8`.
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !v3 && is_json {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=utf-8"),
        );
    }
    if let Some(PendingError(error)) = response.extensions_mut().remove::<PendingError>() {
        let (body, content_type) = if v3 {
            (error.v3_body(), "application/json; charset=utf-8")
        } else {
            (error.v2_body(), "application/json;charset=utf-8")
        };
        *response.body_mut() = Body::from(body);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(VCAP_REQUEST_ID.clone(), value);
    }
    if let Some(value) = user.0.get().and_then(|u| HeaderValue::from_str(u).ok()) {
        response.headers_mut().insert(USER_GUID.clone(), value);
    }
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let elapsed = started.elapsed();
    let status = response.status();
    state
        .metrics
        .http
        .observe(&method, route.label(), status, elapsed.as_secs_f64());
    span.record("route", route.label());
    let _entered = span.enter();
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    // Levels by operator impact: a 5xx is tally failing a client; the rest is the access log.
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), latency_ms, "request failed");
    } else {
        tracing::info!(status = status.as_u16(), latency_ms, "request served");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::request_id;

    #[test]
    fn client_request_ids_are_cleaned_cut_and_suffixed() {
        let fresh = uuid::Uuid::from_u128(7);
        assert_eq!(request_id(None, fresh), fresh.to_string());
        assert_eq!(
            request_id(Some("abc-1_2"), fresh),
            format!("abc-1_2::{fresh}")
        );
        assert_eq!(request_id(Some("a b/c;d"), fresh), format!("abcd::{fresh}"));
        assert_eq!(request_id(Some("!!!"), fresh), fresh.to_string());
        let long = "x".repeat(300);
        assert_eq!(
            request_id(Some(&long), fresh),
            format!("{}::{fresh}", "x".repeat(255))
        );
    }
}
