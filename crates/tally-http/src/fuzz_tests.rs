//! Property-based fuzzing of every decoder of untrusted input at the HTTP edge: bearer tokens,
//! query strings and JSON bodies, through the whole router. Whatever arrives, tally never
//! panics and never answers 500, and a refused request (4xx) leaves the log as it was.
//! (Stored records have their own property in `proto-schemas`, backup files in `tally-store`.)

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use tally_domain::{Actor, AppAttributes, Command, Envelope, Guid};
use tally_engine::Engine;
use tower::ServiceExt;

use crate::*;

const SECRET: &[u8] = b"fuzz-test-secret";
const ORG: Guid = Guid::from_u128(0x0A);
const SPACE: Guid = Guid::from_u128(0x0B);
const APP: Guid = Guid::from_u128(0x0D);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A service with an org, a space and an app, and its engine.
fn service(runtime: &tokio::runtime::Runtime) -> (Router, Arc<Engine>) {
    runtime.block_on(async {
        let engine = crate::tests::memory_engine();
        for command in [
            Command::CreateOrg {
                guid: ORG,
                name: "org".into(),
            },
            Command::CreateSpace {
                guid: SPACE,
                org_guid: ORG,
                name: "space".into(),
            },
            Command::CreateApp {
                guid: APP,
                attributes: AppAttributes {
                    name: Some("app".into()),
                    space_guid: Some(SPACE),
                    docker_image: Some("nginx".into()),
                    ..Default::default()
                },
                audit_request: tally_domain::audit::Value::empty(),
            },
        ] {
            engine
                .submit(Envelope {
                    command,
                    actor: Actor::system(),
                    principal: None,
                })
                .await
                .unwrap();
        }
        let state = crate::tests::test_state(
            engine.clone(),
            SECRET,
            "http://api.example.org",
            std::time::Duration::from_secs(5),
            crate::Closing::new().1,
        );
        (router(state), engine)
    })
}

fn admin_token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"user_id": "admin", "aud": ["cloud_controller"],
                                    "exp": exp, "scope": ["cloud_controller.admin"]});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// Sends one request; its status and body (a panic inside the service fails the test).
fn send(
    runtime: &tokio::runtime::Runtime,
    app: &Router,
    method: &str,
    uri: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> Option<(StatusCode, String)> {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    // Some generated URIs are not valid URIs at all: the HTTP layer refuses those first.
    let request = request
        .header("Content-Type", "application/json")
        .body(Body::from(body))
        .ok()?;
    let app = app.clone();
    Some(runtime.block_on(async move {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }))
}

/// Whether an answer is a server error. Cloud Controller answers one client mistake with a
/// 500 of its own (reference §3: any `order-by` on a v2 list is `OrderByParameterInvalid`,
/// 10012, HTTP 500, sic); tally reproduces it, and it is the only one allowed.
fn server_error(status: StatusCode, body: &str) -> bool {
    status.is_server_error()
        && !(status == StatusCode::INTERNAL_SERVER_ERROR
            && body.contains("\"error_code\":\"CF-OrderByParameterInvalid\",\"code\":10012"))
}

/// The readable endpoints, with real guids in their paths.
fn read_paths() -> Vec<String> {
    let (org, space, app) = (ORG.to_string(), SPACE.to_string(), APP.to_string());
    vec![
        "/v2/organizations".into(),
        format!("/v2/organizations/{org}"),
        format!("/v2/organizations/{org}/users"),
        "/v2/spaces".into(),
        format!("/v2/spaces/{space}"),
        format!("/v2/spaces/{space}/developers"),
        "/v2/apps".into(),
        format!("/v2/apps/{app}"),
        "/v2/events".into(),
        "/v2/app_usage_events".into(),
        "/v3/audit_events".into(),
        "/v3/app_usage_events".into(),
    ]
}

/// The write endpoints that take a JSON body, with real guids in their paths.
fn write_paths() -> Vec<(&'static str, String)> {
    let (org, space, app) = (ORG.to_string(), SPACE.to_string(), APP.to_string());
    vec![
        ("POST", "/v2/organizations".into()),
        ("PUT", format!("/v2/organizations/{org}")),
        ("POST", "/v2/spaces".into()),
        ("PUT", format!("/v2/spaces/{space}")),
        ("POST", "/v2/apps".into()),
        ("PUT", format!("/v2/apps/{app}")),
        ("PUT", format!("/v2/organizations/{org}/users/u-1")),
        ("PUT", format!("/v2/spaces/{space}/developers/u-1")),
        ("POST", format!("/v2/apps/{app}/restage")),
    ]
}

/// JSON values of any shape, with the keys tally's bodies use among the random ones.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("name".to_owned()),
        Just("space_guid".to_owned()),
        Just("organization_guid".to_owned()),
        Just("state".to_owned()),
        Just("instances".to_owned()),
        Just("memory".to_owned()),
        Just("disk_quota".to_owned()),
        Just("docker_image".to_owned()),
        Just("environment_json".to_owned()),
        Just("username".to_owned()),
        Just("buildpack".to_owned()),
        Just("health_check_type".to_owned()),
        "[a-z_]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        Just(serde_json::Value::from(SPACE.to_string())),
        Just(serde_json::Value::from("STARTED")),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One query parameter: a `q` filter in CC's grammar with odd fields, operators and values, or
/// a known or unknown key with a random or typical value.
fn parameter() -> impl Strategy<Value = (String, String)> {
    let fixed =
        |words: &[&'static str]| prop::sample::select(words.to_vec()).prop_map(str::to_owned);
    let q = (
        prop_oneof![
            fixed(&[
                "name",
                "space_guid",
                "organization_guid",
                "stack_guid",
                "guid",
                "timestamp",
                "type",
                "actee",
                "state"
            ]),
            "[a-z_]{0,10}",
        ],
        fixed(&[":", ">=", "<=", "<", ">", " IN ", ""]),
        prop_oneof![
            "[ -~]{0,30}",
            Just(APP.to_string()),
            Just("2026-01-01T00:00:00Z".to_owned()),
            Just("a,b,,".to_owned()),
        ],
    )
        .prop_map(|(field, op, value)| ("q".to_owned(), format!("{field}{op}{value}")));
    let other = (
        prop_oneof![
            fixed(&[
                "page",
                "results-per-page",
                "per_page",
                "order-direction",
                "order_by",
                "order-by",
                "after_guid",
                "guids",
                "created_ats",
                "created_ats[gte]",
                "created_ats[lt]",
                "updated_ats",
                "inline-relations-depth",
                "types",
                "target_guids",
                "space_guids",
                "organization_guids",
                "recursive",
                "async"
            ]),
            "[a-z_]{1,12}",
        ],
        prop_oneof![
            "[ -~]{0,40}",
            "-?[0-9]{1,25}",
            fixed(&[
                "asc",
                "desc",
                "-created_at",
                "created_at",
                "true",
                "2026-01-01T00:00:00Z,2026-02-01T00:00:00Z",
                "%ZZ%00%ff"
            ]),
            Just(APP.to_string()),
        ],
    );
    prop_oneof![q, other]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_authorization_header_is_refused_without_a_panic(
        header in prop_oneof![
            ".{0,200}",
            "(bearer|Bearer|BEARER) [A-Za-z0-9_.=-]{0,300}",
            // Three base64url segments: a JWT's shape with arbitrary contents.
            ("[A-Za-z0-9_-]{0,80}", "[A-Za-z0-9_-]{0,200}", "[A-Za-z0-9_-]{0,90}")
                .prop_map(|(h, c, s)| format!("bearer {h}.{c}.{s}")),
            (any::<Vec<u8>>(), any::<Vec<u8>>()).prop_map(|(h, c)| {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                format!("bearer {}.{}.", b64.encode(h), b64.encode(c))
            }),
        ],
    ) {
        let runtime = runtime();
        let (app, _) = service(&runtime);
        for path in read_paths() {
            if let Some((status, _)) = send(&runtime, &app, "GET", &path, Some(&header), Vec::new()) {
                prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "{} with {:?}", path, header);
            }
        }
    }

    #[test]
    fn any_query_string_gets_an_answer_that_is_not_a_server_error(
        query in prop_oneof![
            1 => "[ -~]{0,120}",
            3 => prop::collection::vec(parameter(), 1..4).prop_map(|pairs| pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", v.replace(['&', '#', ' '], "%20")))
                .collect::<Vec<_>>()
                .join("&")),
        ],
    ) {
        let runtime = runtime();
        let (app, engine) = service(&runtime);
        let head = engine.view().meta.head;
        let token = format!("bearer {}", admin_token());
        // `wait` is capped: the long poll must not hold the test up much.
        let query = query.replace("wait=", "wait_=");
        for path in read_paths() {
            let uri = format!("{path}?{query}");
            if let Some((status, body)) = send(&runtime, &app, "GET", &uri, Some(&token), Vec::new()) {
                prop_assert!(!server_error(status, &body), "{} answered {}: {}", uri, status, body);
            }
        }
        prop_assert_eq!(engine.view().meta.head, head, "a read changed the log");
    }

    #[test]
    fn any_json_body_gets_a_client_error_or_a_change_never_a_server_error(
        body in prop_oneof![
            json_value().prop_map(|v| v.to_string().into_bytes()),
            any::<Vec<u8>>(),
            ".{0,200}".prop_map(String::into_bytes),
        ],
    ) {
        let runtime = runtime();
        let (app, engine) = service(&runtime);
        let token = format!("bearer {}", admin_token());
        for (method, path) in write_paths() {
            let before = engine.view();
            if let Some((status, answer)) = send(&runtime, &app, method, &path, Some(&token), body.clone()) {
                prop_assert!(
                    !server_error(status, &answer),
                    "{} {} answered {} to {:?}", method, path, status, String::from_utf8_lossy(&body)
                );
                if status.is_client_error() {
                    let after = engine.view();
                    prop_assert_eq!(after.meta.head, before.meta.head, "a refused request wrote");
                    prop_assert!(after.state == before.state);
                }
            }
        }
    }
}

/// A string of `len` copies of one of the characters that cost JSON the most bytes (4-byte
/// UTF-8, escaped quotes and backslashes) or the least.
fn worst_text(len: usize) -> impl Strategy<Value = String> {
    prop::sample::select(vec!['a', '😀', '😀', '😀', '"', '\\', 'é'])
        .prop_map(move |c| c.to_string().repeat(len))
}

/// A length at, just below or just past `limit`, or small.
fn around(limit: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(limit),
        Just(limit + 1),
        Just(limit.saturating_sub(1)),
        0..8usize
    ]
}

/// An app body whose every string is at or near its limit, in the costliest characters.
fn large_app_body() -> impl Strategy<Value = serde_json::Value> {
    use tally_domain::limits as l;
    (
        (around(l::NAME), around(l::NAME)).prop_flat_map(|(n, _)| worst_text(n.max(1))),
        around(l::BUILDPACK).prop_flat_map(worst_text),
        around(l::COMMAND).prop_flat_map(worst_text),
        around(l::DEBUG).prop_flat_map(worst_text),
        around(l::HEALTH_CHECK_ENDPOINT - 1).prop_flat_map(worst_text),
        around(l::DOCKER_IMAGE).prop_flat_map(worst_text),
        around(l::GUID_TEXT).prop_flat_map(worst_text),
        prop::collection::vec(
            around(l::GUID_TEXT).prop_flat_map(worst_text),
            0..=l::ROUTE_GUIDS + 1,
        ),
        any::<bool>(),
    )
        .prop_map(
            |(name, buildpack, command, debug, endpoint, image, stack, routes, docker)| {
                let mut body = serde_json::json!({
                    "name": name, "space_guid": SPACE.to_string(), "command": command,
                    "debug": debug, "health_check_http_endpoint": format!("/{endpoint}"),
                    "stack_guid": stack, "route_guids": routes, "instances": 2,
                    "environment_json": {"K": "v".repeat(1000)},
                });
                if docker {
                    body["docker_image"] = serde_json::json!(image);
                    body["docker_credentials"] =
                        serde_json::json!({"username": "u", "password": "p"});
                } else {
                    body["buildpack"] = serde_json::json!(buildpack);
                }
                body
            },
        )
}

/// A token whose identity is as long as tally accepts, in 4-byte characters.
fn largest_identity_token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let long = "😀".repeat(tally_domain::limits::IDENTITY);
    let claims = serde_json::json!({"user_id": long, "user_name": long, "email": long,
                                    "aud": ["cloud_controller"], "exp": exp,
                                    "scope": ["cloud_controller.admin"]});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The limits make every event bounded: whatever a client stores, no usage event or audit
    /// event, as any list shows it, is larger than `page::MAX_*_EVENT_BYTES`.
    #[test]
    fn no_accepted_write_makes_an_event_larger_than_its_bound(
        create in large_app_body(),
        update in large_app_body(),
        space_name in worst_text(tally_domain::limits::NAME),
    ) {
        let runtime = runtime();
        let (app, engine) = service(&runtime);
        let token = format!("bearer {}", largest_identity_token());
        let send_json = |method: &str, uri: &str, body: &serde_json::Value| {
            send(&runtime, &app, method, uri, Some(&token), body.to_string().into_bytes())
        };
        let renamed = send_json("PUT", &format!("/v2/spaces/{SPACE}"), &serde_json::json!({"name": space_name}));
        prop_assert_eq!(renamed.map(|(s, _)| s), Some(StatusCode::CREATED));
        let mut accepted = 0;
        if let Some((StatusCode::CREATED, body)) = send_json("POST", "/v2/apps", &create) {
            accepted += 1;
            let created: serde_json::Value = serde_json::from_str(&body).unwrap();
            let path = format!("/v2/apps/{}", created["metadata"]["guid"].as_str().unwrap());
            if create.get("docker_image").is_none() {
                // Bits, so the start stages and BUILDPACK_SET carries the buildpack's name.
                let guid: Guid = created["metadata"]["guid"].as_str().unwrap().parse().unwrap();
                runtime.block_on(engine.submit(Envelope {
                    command: Command::UploadPackage { app_guid: guid, sha256: "ab".repeat(32), size_bytes: 10 },
                    actor: Actor::system(),
                    principal: None,
                })).unwrap();
            }
            let started = send_json("PUT", &path, &serde_json::json!({"state": "STARTED"}));
            prop_assert_eq!(started.map(|(s, _)| s), Some(StatusCode::CREATED));
            let mut update = update.clone();
            if let Some(map) = update.as_object_mut() {
                // The lifecycle cannot change; everything else may.
                map.remove("docker_image");
                map.remove("buildpack");
                map.remove("space_guid");
            }
            if let Some((StatusCode::CREATED, _)) = send_json("PUT", &path, &update) {
                accepted += 1;
            }
            let _ = send_json("PUT", &path, &serde_json::json!({"instances": 3}));
            let _ = send_json("DELETE", &path, &serde_json::json!({}));
        }
        let lists = [
            ("/v3/app_usage_events?per_page=5000", "resources", crate::page::MAX_USAGE_EVENT_BYTES),
            ("/v2/app_usage_events?results-per-page=10000", "resources", crate::page::MAX_USAGE_EVENT_BYTES),
            ("/v3/audit_events?per_page=5000", "resources", crate::page::MAX_AUDIT_EVENT_BYTES),
            ("/v2/events?results-per-page=100", "resources", crate::page::MAX_AUDIT_EVENT_BYTES),
        ];
        for (uri, key, bound) in lists {
            let (status, body) = send(&runtime, &app, "GET", uri, Some(&token), Vec::new()).unwrap();
            prop_assert_eq!(status, StatusCode::OK, "{}: {}", uri, body);
            let page: serde_json::Value = serde_json::from_str(&body).unwrap();
            for event in page[key].as_array().unwrap() {
                let size = event.to_string().len();
                if std::env::var_os("TALLY_PRINT_EVENT_SIZES").is_some() {
                    println!("{uri} {size}");
                }
                prop_assert!(size <= bound, "{} holds an event of {} bytes > {}", uri, size, bound);
            }
        }
        let _ = accepted;
    }
}
