//! Router tests without a socket.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tally_domain::{DomainError, Guid};
use tally_engine::{Engine, EngineConfig, EngineError, RandomIds, SystemClock};
use tally_store::MemLog;
use tower::ServiceExt;

use crate::*;

fn app() -> Router {
    let engine = Engine::start(
        Arc::new(MemLog::in_memory()),
        EngineConfig::default(),
        Box::new(SystemClock),
        Box::new(RandomIds),
    )
    .unwrap();
    router(Arc::new(AppState {
        engine: Arc::new(engine),
        settings: HttpSettings {
            external_url: "http://api.example.org".into(),
            uaa_url: "http://uaa.example.org".into(),
        },
    }))
}

async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn unknown_routes_get_ccs_not_found_in_the_paths_version() {
    let (status, headers, body) = get("/v2/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        "{\"description\":\"Unknown request\",\"error_code\":\"CF-NotFound\",\"code\":10000}\n"
    );
    assert_eq!(headers["content-type"], "application/json;charset=utf-8");
    let (status, _, body) = get("/v3/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        "{\"errors\":[{\"detail\":\"Unknown request\",\"title\":\"CF-NotFound\",\"code\":10000}]}"
    );
}

#[tokio::test]
async fn every_response_has_a_request_id_and_nosniff() {
    for path in ["/", "/v2/info", "/nothing", "/healthz"] {
        let (_, headers, _) = get(path).await;
        let id = headers["x-vcap-request-id"].to_str().unwrap();
        assert!(id.parse::<Guid>().is_ok(), "{path}: {id}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
}

#[tokio::test]
async fn other_methods_on_known_routes_are_not_found() {
    let response = app()
        .oneshot(Request::post("/v2/info").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[test]
fn engine_and_domain_errors_map_to_cc_codes() {
    let e: ApiError = EngineError::Domain(DomainError::AppNotFound(Guid::from_u128(1))).into();
    assert_eq!(
        (e.status, e.name, e.code),
        (StatusCode::NOT_FOUND, "AppNotFound", 100004)
    );
    assert_eq!(
        e.message,
        "The app could not be found: 00000000-0000-0000-0000-000000000001"
    );
    let e: ApiError = EngineError::Unavailable("disk full".into()).into();
    assert_eq!((e.status, e.code), (StatusCode::SERVICE_UNAVAILABLE, 10015));
    assert!(!e.message.contains("disk"), "causes are logged, not shown");
    let e: ApiError = EngineError::Corrupt("seq 4".into()).into();
    assert_eq!(e.v2_body(), "{\"description\":\"An unknown error occurred.\",\"error_code\":\"UnknownError\",\"code\":10001}\n");
}

#[tokio::test]
async fn v2_json_is_labelled_as_cc_labels_it() {
    for path in ["/", "/v2/info", "/readyz"] {
        let (status, headers, _) = get(path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers["content-type"], "application/json;charset=utf-8",
            "{path}"
        );
    }
    let (_, headers, _) = get("/healthz").await;
    assert_eq!(
        headers["content-type"], "text/plain; charset=utf-8",
        "plain text stays plain"
    );
}
