//! Router tests without a socket.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tally_domain::{DomainError, Guid};
use tally_engine::{Engine, EngineConfig, EngineError, RandomIds, SystemClock};
use tally_store::{LogStore, MemLog};
use tower::ServiceExt;

use crate::*;

const SECRET: &[u8] = b"router-test-secret";

fn state() -> Arc<AppState> {
    state_with_timeout(std::time::Duration::from_secs(60))
}

fn state_with_timeout(request_timeout: std::time::Duration) -> Arc<AppState> {
    let engine = Engine::start(
        Arc::new(MemLog::in_memory()),
        EngineConfig::default(),
        Box::new(SystemClock),
        Box::new(RandomIds),
    )
    .unwrap();
    test_state(
        Arc::new(engine),
        SECRET,
        "http://api.example.org",
        request_timeout,
        crate::Closing::new().1,
    )
}

/// A fresh engine over an in-memory log, with the system clock and random ids.
pub(crate) fn memory_engine() -> Arc<Engine> {
    Arc::new(
        Engine::start(
            Arc::new(tally_store::MemLog::in_memory()),
            tally_engine::EngineConfig::default(),
            Box::new(tally_engine::SystemClock),
            Box::new(tally_engine::RandomIds),
        )
        .unwrap(),
    )
}

/// The shared state of a test router over `engine`: tokens signed with the HMAC `secret`,
/// links built from `external_url`.
pub(crate) fn test_state(
    engine: Arc<Engine>,
    secret: &[u8],
    external_url: &str,
    request_timeout: std::time::Duration,
    closing: crate::Closing,
) -> Arc<AppState> {
    let verifier = auth::TokenVerifier::new(auth::AuthSettings {
        hmac_secrets: vec![secret.to_vec()],
        audience: "cloud_controller".into(),
        ..auth::AuthSettings::default()
    })
    .unwrap();
    let metrics = crate::metrics::Metrics {
        on_main_listener: true,
        ..Default::default()
    };
    metrics.http.register(&metrics.registry).unwrap();
    engine.metrics().register(&metrics.registry).unwrap();
    Arc::new(AppState {
        engine,
        settings: HttpSettings {
            external_url: external_url.into(),
            uaa_url: "http://uaa.example.org".into(),
            info: Default::default(),
            request_timeout,
            max_upload_bytes: 1 << 20,
            max_page_bytes: 16 << 20,
            packages_dir: std::env::temp_dir().join("tally-http-test-packages"),
            staging_callback_password: None,
            forward_timeout: std::time::Duration::from_secs(10),
        },
        verifier,
        closing,
        metrics,
    })
}

fn app() -> Router {
    router(state())
}

/// The API plus authenticated probes on a v2 and a v3 path.
fn app_with_probes() -> Router {
    async fn whoami(auth::Caller(identity): auth::Caller) -> String {
        identity.id
    }
    let probes = Router::new()
        .route("/v2/test_probe", axum::routing::get(whoami))
        .route("/v3/test_probe", axum::routing::get(whoami));
    with_routes(state(), probes)
}

async fn call(app: Router, path: &str, authorization: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn authenticated_routes_answer_401_as_cc_does() {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"user_id": "u-1", "aud": ["cloud_controller"], "exp": exp, "scope": ["cloud_controller.read"]});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let (status, body) = call(
        app_with_probes(),
        "/v2/test_probe",
        Some(&format!("bearer {token}")),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "u-1"));
    let (status, body) = call(app_with_probes(), "/v2/test_probe", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, "{\"description\":\"Authentication error\",\"error_code\":\"CF-NotAuthenticated\",\"code\":10002}\n");
    let (status, body) = call(app_with_probes(), "/v2/test_probe", Some("bearer garbage")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, "{\"description\":\"Invalid Auth Token\",\"error_code\":\"CF-InvalidAuthToken\",\"code\":1000}\n");
    let (status, body) = call(app_with_probes(), "/v3/test_probe", Some("bearer garbage")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, "{\"errors\":[{\"detail\":\"Invalid Auth Token\",\"title\":\"CF-InvalidAuthToken\",\"code\":1000}]}");
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

async fn post(app: Router, path: &str, body: Vec<u8>) -> (StatusCode, String) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn json_bodies_are_limited_and_bad_ones_get_ccs_parse_error() {
    async fn echo(json::CcJson(value): json::CcJson<serde_json::Value>) -> String {
        value.to_string()
    }
    let app = || {
        with_routes(
            state(),
            Router::new().route("/v2/test_echo", axum::routing::post(echo)),
        )
    };
    let (status, body) = post(app(), "/v2/test_echo", b"{\"a\":1}".to_vec()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"a\":1}"));
    let (status, body) = post(app(), "/v2/test_echo", b"{\"a\":".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("\"CF-MessageParseError\""), "{body}");
    let mut big = b"\"".to_vec();
    big.extend(std::iter::repeat_n(b'x', json::MAX_JSON_BODY));
    big.push(b'"');
    let (status, body) = post(app(), "/v2/test_echo", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.contains("\"code\":10004"), "{body}");
}

#[tokio::test]
async fn a_request_that_outlives_the_timeout_gets_a_cc_503() {
    async fn slow() -> &'static str {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        "too late"
    }
    let app = with_routes(
        state_with_timeout(std::time::Duration::from_millis(50)),
        Router::new().route("/v3/test_slow", axum::routing::get(slow)),
    );
    let (status, body) = call(app, "/v3/test_slow", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"CF-ServiceUnavailable\""), "{body}");
}

/// The API over an in-memory store the test can make fail, with its engine and the sender
/// that starts shutdown.
fn service_over_memory() -> (
    Arc<MemLog>,
    Arc<Engine>,
    Router,
    tokio::sync::watch::Sender<bool>,
) {
    let store = Arc::new(MemLog::in_memory());
    let engine = Arc::new(
        Engine::start(
            store.clone(),
            EngineConfig::default(),
            Box::new(SystemClock),
            Box::new(RandomIds),
        )
        .unwrap(),
    );
    let (close, closing) = crate::Closing::new();
    let state = test_state(
        engine.clone(),
        SECRET,
        "http://api.example.org",
        std::time::Duration::from_secs(60),
        closing,
    );
    (store, engine, router(state), close)
}

#[tokio::test]
async fn readiness_follows_the_logs_writability_and_metrics_count_the_failure() {
    let (store, engine, app, close) = service_over_memory();
    let (status, body) = call(app.clone(), "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        "{\"status\":\"ready\",\"head\":0,\"epoch\":1,\"role\":\"sole\"}"
    );

    // A disk that refuses writes: not ready, and saying why; liveness is unaffected.
    store.backend().fail_writes(1);
    let (status, body) = call(app.clone(), "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("the log is not writable") && body.contains("simulated write failure"),
        "{body}"
    );
    assert!(!engine.writable());
    assert_eq!(call(app.clone(), "/healthz", None).await.0, StatusCode::OK);
    let (_, metrics) = call(app.clone(), "/metrics", None).await;
    assert!(
        metrics.contains("tally_log_commit_failures_total 1\n"),
        "{metrics}"
    );

    // Writes work again: ready at the next probe, with nothing of the failed write visible.
    let (status, body) = call(app.clone(), "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(engine.writable());
    assert_eq!(engine.view().meta.head, 0);

    // Shutting down: not ready any more.
    close.send(true).unwrap();
    let (status, body) = call(app, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("shutting down"), "{body}");
}

#[tokio::test]
async fn a_failed_disk_write_is_a_clear_503_changes_nothing_and_writes_work_again_after() {
    let (store, engine, app, _close) = service_over_memory();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"user_id": "admin", "aud": ["cloud_controller"], "exp": exp,
                                    "scope": ["cloud_controller.admin"]});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let create = |name: &str| {
        Request::post("/v2/organizations")
            .header("Authorization", format!("bearer {token}"))
            .header("Content-Type", "application/json")
            .body(Body::from(format!("{{\"name\":\"{name}\"}}")))
            .unwrap()
    };
    let send = |request: Request<Body>| {
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };

    // The disk refuses the write: CC's 503, and nothing of it anywhere.
    store.backend().fail_writes(1);
    let (status, body) = send(create("refused")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        "{\"description\":\"The service is currently unavailable\",\"error_code\":\"CF-ServiceUnavailable\",\"code\":10015}\n"
    );
    assert_eq!(engine.view().meta.head, 0);
    assert!(engine.view().state.org_named("refused").is_none());
    assert_eq!(store.recover().unwrap().meta.head, 0);

    // Writes work again: the next one commits at position 1, densely.
    let (status, body) = send(create("accepted")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(engine.view().state.org_named("accepted").is_some());
    assert!(engine.view().state.org_named("refused").is_none());
    let recovered = store.recover().unwrap();
    assert_eq!(recovered.meta.head, engine.view().meta.head);
    assert!(store.verify().unwrap().problems.is_empty());
}

/// The (method, path template) pairs of the OpenAPI document.
fn documented() -> Vec<(String, String)> {
    let document = serde_json::to_value(crate::openapi_document()).unwrap();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

fn matches_template(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_that_exist() {
    let operations = documented();
    // Every endpoint of the permission table (which covers every endpoint tally serves) is in
    // the document.
    for (method, path, _) in crate::permission_tests::table() {
        let path = path.split('?').next().unwrap();
        assert!(
            operations
                .iter()
                .any(|(m, t)| m == method && matches_template(t, path)),
            "{method} {path} is served but not documented"
        );
    }
    // Every documented operation is routed: the router does not answer it with its fallback.
    for (method, template) in &operations {
        let path: String = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "0b2bd2d6-6a39-4a4e-9d2a-5f0a8e3c1a11"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let response = app()
            .oneshot(
                Request::builder()
                    .method(method.as_str())
                    .uri(&path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains("Unknown request"),
            "{method} {template} is documented but not routed"
        );
    }
    // The document is served, and is the one built here.
    let (status, body) = call(app(), "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    assert_eq!(
        served,
        serde_json::to_value(crate::openapi_document()).unwrap()
    );
    assert!(operations.len() >= 40, "{} operations", operations.len());
}
