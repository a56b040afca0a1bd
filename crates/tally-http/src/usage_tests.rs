//! The usage-event endpoints through the router: shapes, parameters, errors, cursors, purge,
//! pruning, the long poll and the stream (reference §1, §3, §4; docs/extensions.md).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tally_domain::{Actor, AppAttributes, Command, Envelope, Guid, Timestamp};
use tally_engine::{Clock, Engine, EngineConfig, RandomIds};
use tally_store::MemLog;
use tower::ServiceExt;

use crate::*;

const SECRET: &[u8] = b"usage-test-secret";
const ORG: Guid = Guid::from_u128(0xA);
const SPACE: Guid = Guid::from_u128(0xB);
const BASE: &str = "https://api.example.org";

fn app_guid(n: u128) -> Guid {
    Guid::from_u128(0x5000 + n)
}

#[derive(Clone)]
struct TestClock(Arc<Mutex<Timestamp>>);

impl Clock for TestClock {
    fn now(&mut self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

fn at(seconds: i64, micros: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(1_714_557_600 + seconds, 0).unwrap()
        + chrono::Duration::microseconds(micros)
}

struct Harness {
    app: Router,
    state: Arc<AppState>,
    clock: TestClock,
    close: tokio::sync::watch::Sender<bool>,
}

fn token(scopes: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"user_id": "u", "aud": ["cloud_controller"], "exp": exp, "jti": "j", "scope": scopes});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

const ADMIN: &[&str] = &["cloud_controller.admin"];

impl Harness {
    /// An org, a space and three stopped docker apps, at 2024-05-01T10:00:00Z.
    async fn new() -> Self {
        let clock = TestClock(Arc::new(Mutex::new(at(0, 0))));
        let engine = Engine::start(
            Arc::new(MemLog::in_memory()),
            EngineConfig::default(),
            Box::new(clock.clone()),
            Box::new(RandomIds),
        )
        .unwrap();
        let (close, closing) = Closing::new();
        let state = crate::tests::test_state(
            Arc::new(engine),
            SECRET,
            BASE,
            Duration::from_secs(60),
            closing,
        );
        let harness = Self {
            app: router(state.clone()),
            state,
            clock,
            close,
        };
        harness
            .submit(Command::CreateOrg {
                guid: ORG,
                name: "o".into(),
            })
            .await;
        harness
            .submit(Command::CreateSpace {
                guid: SPACE,
                org_guid: ORG,
                name: "dev".into(),
            })
            .await;
        for n in 0..3 {
            harness
                .submit(Command::CreateApp {
                    guid: app_guid(n),
                    attributes: AppAttributes {
                        name: Some(format!("app-{n}")),
                        space_guid: Some(SPACE),
                        docker_image: Some("nginx".into()),
                        ..Default::default()
                    },
                    audit_request: tally_domain::audit::Value::empty(),
                })
                .await;
        }
        harness
    }

    async fn submit(&self, command: Command) {
        self.state
            .engine
            .submit(Envelope {
                command,
                actor: Actor::system(),
                principal: None,
            })
            .await
            .unwrap();
    }

    async fn update(&self, n: u128, attributes: AppAttributes) {
        self.submit(Command::UpdateApp {
            guid: app_guid(n),
            attributes,
            audit_request: tally_domain::audit::Value::empty(),
        })
        .await;
    }

    /// Starting a docker app writes STARTED, STAGING_STARTED, STAGING_STOPPED, BUILDPACK_SET.
    async fn start(&self, n: u128) {
        self.update(
            n,
            AppAttributes {
                state: Some("STARTED".into()),
                ..Default::default()
            },
        )
        .await;
    }

    async fn scale(&self, n: u128, instances: i64) {
        self.update(
            n,
            AppAttributes {
                instances: Some(instances),
                ..Default::default()
            },
        )
        .await;
    }

    fn set_time(&self, t: Timestamp) {
        *self.clock.0.lock().unwrap() = t;
    }

    async fn call(
        &self,
        scopes: &[&str],
        method: &str,
        path: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("bearer {}", token(scopes)))
            .body(Body::empty())
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.call(ADMIN, "GET", path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// The bytes of a 200 answer.
    async fn raw(&self, path: &str) -> Vec<u8> {
        let request = Request::builder()
            .uri(path)
            .header("Authorization", format!("bearer {}", token(ADMIN)))
            .body(Body::empty())
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    /// Every usage event, in order, through v2.
    async fn all_v2(&self) -> Vec<Value> {
        let body = self
            .get("/v2/app_usage_events?results-per-page=10000")
            .await;
        body["resources"].as_array().unwrap().clone()
    }
}

fn guids_v2(page: &Value) -> Vec<String> {
    page["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metadata"]["guid"].as_str().unwrap().to_owned())
        .collect()
}

fn guids_v3(page: &Value) -> Vec<String> {
    page["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["guid"].as_str().unwrap().to_owned())
        .collect()
}

fn error(body: &Value) -> (u64, String) {
    match body.get("errors") {
        Some(errors) => (
            errors[0]["code"].as_u64().unwrap(),
            errors[0]["detail"].as_str().unwrap().to_owned(),
        ),
        None => (
            body["code"].as_u64().unwrap(),
            body["description"].as_str().unwrap().to_owned(),
        ),
    }
}

#[tokio::test]
async fn v2_lists_pages_and_reads_usage_events_as_cloud_controller_does() {
    let h = Harness::new().await;
    let (status, headers, empty) = h.call(ADMIN, "GET", "/v2/app_usage_events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"], "application/json;charset=utf-8",
        "v2 content type"
    );
    assert_eq!(headers["x-tally-epoch"], "1");
    assert_eq!(
        empty,
        json!({"total_results": 0, "total_pages": 0, "prev_url": null, "next_url": null, "resources": []})
    );
    h.start(0).await;
    h.set_time(at(5, 250_000));
    h.scale(0, 3).await;
    let all = h.all_v2().await;
    assert_eq!(all.len(), 5, "start (4 events with staging) and scale");
    // The scale event, every key in CC's order.
    let scale = &all[4];
    let keys: Vec<&String> = scale["entity"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "state",
            "previous_state",
            "memory_in_mb_per_instance",
            "previous_memory_in_mb_per_instance",
            "instance_count",
            "previous_instance_count",
            "app_guid",
            "app_name",
            "space_guid",
            "space_name",
            "org_guid",
            "buildpack_guid",
            "buildpack_name",
            "package_state",
            "previous_package_state",
            "parent_app_guid",
            "parent_app_name",
            "process_type",
            "task_name",
            "task_guid"
        ]
    );
    let guid = scale["metadata"]["guid"].as_str().unwrap();
    assert_eq!(
        scale["metadata"],
        json!({"guid": guid, "url": format!("/v2/app_usage_events/{guid}"), "created_at": "2024-05-01T10:00:05Z"})
    );
    let app = app_guid(0).to_string();
    assert_eq!(
        scale["entity"],
        json!({
            "state": "STARTED", "previous_state": "STARTED",
            "memory_in_mb_per_instance": 1024, "previous_memory_in_mb_per_instance": 1024,
            "instance_count": 3, "previous_instance_count": 1,
            "app_guid": app, "app_name": "app-0",
            "space_guid": SPACE.to_string(), "space_name": "dev", "org_guid": ORG.to_string(),
            "buildpack_guid": null, "buildpack_name": null,
            "package_state": "STAGED", "previous_package_state": "UNKNOWN",
            "parent_app_guid": app, "parent_app_name": "app-0",
            "process_type": "web", "task_name": null, "task_guid": null,
        })
    );
    // A staging event: empty process columns, as v2 shows them.
    assert_eq!(all[1]["entity"]["state"], "STAGING_STARTED");
    assert_eq!(all[1]["entity"]["app_guid"], "");
    assert_eq!(all[1]["entity"]["process_type"], Value::Null);
    // GET one.
    assert_eq!(h.get(&format!("/v2/app_usage_events/{guid}")).await, *scale);
    let nowhere = "00000000-0000-4000-8000-000000000000";
    let (status, _, body) = h
        .call(ADMIN, "GET", &format!("/v2/app_usage_events/{nowhere}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"description": format!("Event could not be found: {nowhere}"), "error_code": "CF-EventNotFound", "code": 230002})
    );
    // Pages: after_guid is kept in the links, whose keys are sorted.
    let first = all[0]["metadata"]["guid"].as_str().unwrap();
    let page = h
        .get(&format!(
            "/v2/app_usage_events?after_guid={first}&results-per-page=2&page=2&inline-relations-depth=1"
        ))
        .await;
    assert_eq!(
        (page["total_results"].as_u64(), page["total_pages"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(
        page["prev_url"],
        format!(
            "/v2/app_usage_events?after_guid={first}&order-direction=asc&page=1&results-per-page=2"
        )
    );
    assert_eq!(page["next_url"], Value::Null);
    let expected: Vec<String> = all[3..5]
        .iter()
        .map(|r| r["metadata"]["guid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(guids_v2(&page), expected);
    // Newest first.
    let desc = h
        .get("/v2/app_usage_events?order-direction=desc&results-per-page=2")
        .await;
    assert_eq!(guids_v2(&desc)[0], guid);
    assert_eq!(
        desc["next_url"],
        "/v2/app_usage_events?order-direction=desc&page=2&results-per-page=2"
    );
    // Past the end: nothing, but a link back.
    let past = h.get("/v2/app_usage_events?page=9").await;
    assert_eq!(past["resources"], json!([]));
    assert!(past["prev_url"].is_string());
}

fn written_ahead(h: &Harness) -> u64 {
    h.state
        .engine
        .metrics()
        .read_ahead
        .with_label_values(&["written"])
        .get()
}

/// A consumer reading pages of 1000 in order gets each page after the first written ahead;
/// those answers are, byte for byte, what the same request gets when nothing was written
/// ahead, in both APIs; a v2 page is never answered with what was written for v3.
#[tokio::test]
async fn pages_written_ahead_are_the_pages_a_request_writes_itself() {
    let h = Harness::new().await;
    h.start(0).await;
    for i in 0..2600 {
        h.scale(0, 2 + i % 2).await;
    }
    for (first, next, guids) in [
        (
            "/v3/app_usage_events?per_page=1000",
            "/v3/app_usage_events?per_page=1000&after_guid=",
            guids_v3 as fn(&Value) -> Vec<String>,
        ),
        (
            "/v2/app_usage_events?results-per-page=1000",
            "/v2/app_usage_events?results-per-page=1000&after_guid=",
            guids_v2,
        ),
    ] {
        let before = written_ahead(&h);
        let one: Value = serde_json::from_slice(&h.raw(first).await).unwrap();
        assert_eq!(written_ahead(&h), before, "nothing was read ahead yet");
        let second = format!("{next}{}", guids(&one).last().unwrap());
        let ahead = h.raw(&second).await;
        assert_eq!(written_ahead(&h), before + 1, "{second}: written ahead");
        // Asked again, the page is written by the request (what was read ahead is page 3).
        let itself = h.raw(&second).await;
        assert_eq!(written_ahead(&h), before + 1, "{second}: written again");
        assert_eq!(
            String::from_utf8(ahead.clone()).unwrap(),
            String::from_utf8(itself).unwrap()
        );
        let two: Value = serde_json::from_slice(&ahead).unwrap();
        assert_eq!(guids(&two).len(), 1000);
    }
    // Page 2 of v3 read ahead page 3 for v3; v2 asking for the same events writes its own.
    let one = h.get("/v3/app_usage_events?per_page=1000").await;
    let two = h
        .get(&format!(
            "/v3/app_usage_events?per_page=1000&after_guid={}",
            guids_v3(&one).last().unwrap()
        ))
        .await;
    let before = written_ahead(&h);
    let three = h
        .get(&format!(
            "/v2/app_usage_events?results-per-page=1000&after_guid={}",
            guids_v3(&two).last().unwrap()
        ))
        .await;
    assert_eq!(written_ahead(&h), before, "v3's writing is not v2's");
    let v3_three = h
        .get(&format!(
            "/v3/app_usage_events?per_page=1000&after_guid={}",
            guids_v3(&two).last().unwrap()
        ))
        .await;
    assert!(!guids_v2(&three).is_empty());
    assert_eq!(guids_v2(&three), guids_v3(&v3_three));
}

#[tokio::test]
async fn v2_list_parameters_fail_as_cloud_controller_does() {
    let h = Harness::new().await;
    h.start(0).await;
    for (query, status, code, message) in [
        (
            "results-per-page=10001",
            400,
            10005,
            "The query parameter is invalid: results_per_page must be <= 10000",
        ),
        (
            "order-direction=sideways",
            400,
            10005,
            "The query parameter is invalid: order_direction must be 'asc' or 'desc' but was 'sideways'",
        ),
        ("order-by=id", 500, 10012, "Cannot order by: id"),
        ("q=app_guid:x", 400, 10005, "The query parameter is invalid: app_guid"),
        (
            "after_guid=00000000-0000-4000-8000-000000000000",
            400,
            10005,
            "The query parameter is invalid: 00000000-0000-4000-8000-000000000000",
        ),
        (
            "after_guid=not-a-guid",
            400,
            10005,
            "The query parameter is invalid: not-a-guid",
        ),
        (
            "wait=soon",
            400,
            10005,
            "The query parameter is invalid: wait must be a whole number of seconds but was 'soon'",
        ),
    ] {
        let (got, _, body) = h
            .call(ADMIN, "GET", &format!("/v2/app_usage_events?{query}"))
            .await;
        assert_eq!(got.as_u16(), status, "{query}: {body}");
        assert_eq!(error(&body), (code, message.to_owned()), "{query}");
    }
    // The largest page is allowed.
    let page = h.get("/v2/app_usage_events?results-per-page=10000").await;
    assert_eq!(page["total_results"], 4);
}

#[tokio::test]
async fn v3_lists_filter_order_and_link_as_cloud_controller_does() {
    let h = Harness::new().await;
    h.start(0).await; // 4 events at 10:00:00.000000
    h.set_time(at(1, 500_000));
    h.scale(0, 2).await; // 10:00:01.5
    h.set_time(at(2, 0));
    h.scale(0, 3).await; // 10:00:02.0
    h.set_time(at(3, 999_999));
    h.scale(0, 4).await; // 10:00:03.999999
    let all = h.get("/v3/app_usage_events?per_page=5000").await;
    let guids = guids_v3(&all);
    assert_eq!(guids.len(), 7);
    let scale = &all["resources"][4];
    let app = app_guid(0).to_string();
    assert_eq!(
        *scale,
        json!({
            "guid": guids[4],
            "created_at": "2024-05-01T10:00:01Z",
            "updated_at": "2024-05-01T10:00:01Z",
            "state": {"current": "STARTED", "previous": "STARTED"},
            "app": {"guid": app, "name": "app-0"},
            "process": {"guid": app, "type": "web"},
            "space": {"guid": SPACE.to_string(), "name": "dev"},
            "organization": {"guid": ORG.to_string()},
            "buildpack": {"guid": null, "name": null},
            "task": {"guid": null, "name": null},
            "memory_in_mb_per_instance": {"current": 1024, "previous": 1024},
            "instance_count": {"current": 2, "previous": 1},
            "links": {"self": {"href": format!("{BASE}/v3/app_usage_events/{}", guids[4])}},
        })
    );
    // A staging event has neither a process nor a task.
    assert_eq!(
        all["resources"][1]["process"],
        json!({"guid": null, "type": null})
    );
    assert_eq!(
        h.get(&format!("/v3/app_usage_events/{}", guids[4])).await,
        *scale
    );
    // Envelope: absolute links, sorted keys, order_by only when sent (normalized).
    let page = h
        .get(&format!(
            "/v3/app_usage_events?per_page=2&after_guid={}&order_by=created_at",
            guids[0]
        ))
        .await;
    assert_eq!(page["pagination"]["total_results"], 6);
    assert_eq!(page["pagination"]["total_pages"], 3);
    assert_eq!(
        page["pagination"]["next"]["href"],
        format!(
            "{BASE}/v3/app_usage_events?after_guid={}&order_by=%2Bcreated_at&page=2&per_page=2",
            guids[0]
        )
    );
    assert_eq!(page["pagination"]["previous"], Value::Null);
    assert_eq!(guids_v3(&page), guids[1..3]);
    let empty = h
        .get(&format!("/v3/app_usage_events?after_guid={}", guids[6]))
        .await;
    assert_eq!(
        empty["pagination"]["total_pages"], 1,
        "v3 reports at least one page"
    );
    // -created_at: newest first.
    let newest = h
        .get("/v3/app_usage_events?order_by=-created_at&per_page=1")
        .await;
    assert_eq!(guids_v3(&newest), [guids[6].clone()]);
    assert!(newest["pagination"]["next"]["href"]
        .as_str()
        .unwrap()
        .contains("order_by=-created_at"));
    // guids.
    let some = h
        .get(&format!(
            "/v3/app_usage_events?guids={},{},nonsense",
            guids[5], guids[2]
        ))
        .await;
    assert_eq!(guids_v3(&some), [guids[2].clone(), guids[5].clone()]);
    // created_ats, with CC's sub-second widening (reference §3.3).
    for (filter, expected) in [
        ("created_ats=2024-05-01T10:00:01Z", &guids[4..5]),
        (
            "created_ats=2024-05-01T10:00:00Z,2024-05-01T10:00:03Z",
            &[guids[0..4].to_vec(), guids[6..7].to_vec()].concat()[..],
        ),
        ("created_ats[lt]=2024-05-01T10:00:02Z", &guids[0..5]),
        ("created_ats[lte]=2024-05-01T10:00:01Z", &guids[0..5]),
        ("created_ats[gt]=2024-05-01T10:00:01Z", &guids[5..7]),
        ("created_ats[gte]=2024-05-01T10:00:02Z", &guids[5..7]),
        ("created_ats[gt]=2024-05-01T10:00:03Z", &[][..]),
    ] {
        let page = h.get(&format!("/v3/app_usage_events?{filter}")).await;
        assert_eq!(guids_v3(&page), expected, "{filter}");
        assert_eq!(
            page["pagination"]["total_results"],
            expected.len(),
            "{filter}"
        );
    }
    // Users with read or write scope but no global role: an empty list, whatever the
    // filters (even a cursor that does not exist), and 404 for one event.
    let rw = &["cloud_controller.read", "cloud_controller.write"];
    let (status, _, body) = h
        .call(
            rw,
            "GET",
            "/v3/app_usage_events?after_guid=00000000-0000-4000-8000-000000000000",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["pagination"]["total_results"], 0);
    assert_eq!(body["resources"], json!([]));
    let (status, _, body) = h
        .call(rw, "GET", &format!("/v3/app_usage_events/{}", guids[0]))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"errors": [{"detail": "App usage event not found", "title": "CF-ResourceNotFound", "code": 10010}]})
    );
}

#[tokio::test]
async fn v3_list_parameters_are_checked_all_at_once_with_422() {
    let h = Harness::new().await;
    h.start(0).await;
    let (status, _, body) = h
        .call(
            ADMIN,
            "GET",
            "/v3/app_usage_events?garbage=1&per_page=5001&updated_ats=2024-05-01T10:00:00Z&after_guid=a,b",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (code, detail) = error(&body);
    assert_eq!(code, 10008);
    for part in [
        "Unknown query parameter(s): 'garbage'. Valid parameters are: 'page', 'per_page', 'order_by', 'created_ats', 'updated_ats', 'guids', 'after_guid'",
        "Per page must be between 1 and 5000",
        "Filtering by 'updated_ats' is not allowed on this resource.",
        "After guid filter accepts only one guid",
    ] {
        assert!(detail.contains(part), "{part} missing from {detail}");
    }
    for (query, detail) in [
        ("page=0", "Page must be a positive integer"),
        ("per_page=x", "Per page must be a positive integer"),
        ("order_by=guid", "Order by can only be: 'created_at'"),
        (
            "created_ats=2024-05-01",
            "Created ats has an invalid timestamp format. Timestamps should be formatted as 'YYYY-MM-DDThh:mm:ssZ'",
        ),
        ("created_ats[on]=2024-05-01T10:00:00Z", "Created ats Invalid relational operator: 'on'"),
        (
            "created_ats[lt]=2024-05-01T10:00:00Z,2024-05-01T10:00:01Z",
            "Created ats only accepts one value when using a relational operator",
        ),
        (
            "after_guid=00000000-0000-4000-8000-000000000000",
            "After guid filter must be a valid app usage event guid.",
        ),
        ("wait=-1", "Wait must be a whole number of seconds but was '-1'"),
    ] {
        let (status, _, body) = h
            .call(ADMIN, "GET", &format!("/v3/app_usage_events?{query}"))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(error(&body), (10008, detail.to_owned()), "{query}");
    }
}

#[tokio::test]
async fn purge_reseeds_started_apps_and_old_cursors_say_they_were_purged() {
    let h = Harness::new().await;
    h.start(0).await;
    h.start(2).await;
    h.scale(2, 2).await;
    let before = h.all_v2().await;
    let old = before[0]["metadata"]["guid"].as_str().unwrap().to_owned();
    h.set_time(at(60, 0));
    let (status, headers, body) = h
        .call(
            ADMIN,
            "POST",
            "/v2/app_usage_events/destructively_purge_all_and_reseed_started_apps",
        )
        .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(headers["x-tally-epoch"], "2");
    assert_eq!(headers["x-tally-epoch-started-at"], "2024-05-01T10:01:00Z");
    // One STARTED event per started app, shaped as CC shapes them (reference §4.1).
    let reseeded = h.all_v2().await;
    assert_eq!(reseeded.len(), 2);
    for (event, n, instances) in [(&reseeded[0], 0, 1), (&reseeded[1], 2, 2)] {
        let app = app_guid(n).to_string();
        assert_eq!(event["metadata"]["guid"], app, "guid = process guid");
        assert_eq!(event["metadata"]["created_at"], "2024-05-01T10:01:00Z");
        let e = &event["entity"];
        assert_eq!(
            (e["state"].as_str(), e["previous_state"].as_str()),
            (Some("STARTED"), Some("STARTED"))
        );
        assert_eq!(e["instance_count"], instances);
        assert_eq!(e["previous_instance_count"], instances);
        assert_eq!(e["previous_package_state"], "UNKNOWN");
        assert_eq!(e["parent_app_guid"], app);
    }
    // An old cursor: CC's error, saying what happened.
    let (status, _, body) = h
        .call(
            ADMIN,
            "GET",
            &format!("/v2/app_usage_events?after_guid={old}"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (code, message) = error(&body);
    assert_eq!(code, 10005);
    assert!(message.starts_with(&format!("The query parameter is invalid: {old} (")));
    assert!(
        message.contains("purged") && message.contains("epoch 2 at 2024-05-01T10:01:00Z"),
        "{message}"
    );
    let (status, _, body) = h
        .call(
            ADMIN,
            "GET",
            &format!("/v3/app_usage_events?after_guid={old}"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (code, detail) = error(&body);
    assert_eq!(code, 10008);
    assert!(detail.starts_with("After guid filter must be a valid app usage event guid. ("));
    assert!(detail.contains("purged"), "{detail}");
    // A reseeded event is a cursor like any other, and later changes follow it.
    h.scale(0, 5).await;
    let after = h
        .get(&format!("/v3/app_usage_events?after_guid={}", app_guid(2)))
        .await;
    assert_eq!(after["resources"][0]["instance_count"]["current"], 5);
    // v3 purge: 200 {} and a third epoch.
    let (status, headers, body) = h
        .call(
            ADMIN,
            "POST",
            "/v3/app_usage_events/actions/destructively_purge_all_and_reseed",
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert_eq!(headers["x-tally-epoch"], "3");
    assert_eq!(h.all_v2().await.len(), 2);
}

#[tokio::test]
async fn pruned_cursors_say_they_were_pruned_and_since_when() {
    let h = Harness::new().await;
    h.start(0).await;
    h.start(1).await;
    let old = h.all_v2().await;
    // App 0's start stays (app 0 still runs); its staging events go.
    assert_eq!(old[1]["entity"]["state"], "STAGING_STARTED");
    let first = old[1]["metadata"]["guid"].as_str().unwrap().to_owned();
    h.set_time(at(40 * 86_400, 0));
    h.scale(1, 2).await;
    let cutoff = at(31 * 86_400, 0);
    let pruned = h.state.engine.prune(cutoff).await.unwrap();
    assert_eq!(pruned, old.len() - 1, "all but app 0's start");
    let left = h.all_v2().await;
    assert_eq!(left.len(), 2);
    assert_eq!(left[0]["entity"]["app_guid"], app_guid(0).to_string());
    for (path, status, code) in [
        (
            format!("/v2/app_usage_events?after_guid={first}"),
            400,
            10005,
        ),
        (
            format!("/v3/app_usage_events?after_guid={first}"),
            422,
            10008,
        ),
    ] {
        let (got, _, body) = h.call(ADMIN, "GET", &path).await;
        assert_eq!(got.as_u16(), status);
        let (got_code, message) = error(&body);
        assert_eq!(got_code, code);
        assert!(
            message.contains(&format!(
                "event {first} was pruned: it was written at 2024-05-01T10:00:00Z, and retention removed the events written before 2024-06-01T10:00:00Z"
            )),
            "{message}"
        );
    }
    let (status, _, _) = h
        .call(ADMIN, "GET", &format!("/v2/app_usage_events/{first}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_waiting_list_answers_as_soon_as_an_event_is_durable() {
    let h = Arc::new(Harness::new().await);
    h.start(0).await;
    for version in ["v2", "v3"] {
        let last = h.all_v2().await.pop().unwrap()["metadata"]["guid"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = format!("/{version}/app_usage_events?after_guid={last}&wait=20");
        let waiting = {
            let h = h.clone();
            let path = path.clone();
            tokio::spawn(async move { h.call(ADMIN, "GET", &path).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "{path} did not wait");
        let started = std::time::Instant::now();
        h.scale(0, 2).await;
        let (status, _, body) = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting request answers once an event is durable")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let total = body["total_results"]
            .as_u64()
            .or(body["pagination"]["total_results"].as_u64());
        assert_eq!(total, Some(1), "{path}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let new = h.all_v2().await.pop().unwrap();
        assert_eq!(new["entity"]["instance_count"], 2);
        h.scale(0, 1).await;
    }
    // With nothing new, the wait ends empty; a shutdown ends it early.
    let everything = h.all_v2().await;
    let newest = everything.last().unwrap()["metadata"]["guid"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = h
        .get(&format!("/v2/app_usage_events?after_guid={newest}&wait=1"))
        .await;
    assert_eq!(body["total_results"], 0);
    let waiting = {
        let h = h.clone();
        let path = format!("/v3/app_usage_events?after_guid={newest}&wait=30");
        tokio::spawn(async move { h.call(ADMIN, "GET", &path).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.close.send(true).unwrap();
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("shutdown ends a long poll")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// Reads a streaming response chunk by chunk until `done` says enough.
async fn read_stream(body: Body, done: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut body = body;
    let mut out = Vec::new();
    read_more(&mut body, &mut out, done).await;
    out
}

/// Reads more of a streaming response into `out` until `done` says enough.
async fn read_more(body: &mut Body, out: &mut Vec<u8>, mut done: impl FnMut(&[u8]) -> bool) {
    use http_body_util::BodyExt;
    while !done(out) {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the stream delivers within 10 s")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
}

async fn open_stream(h: &Harness, query: &str, accept: &str) -> (StatusCode, HeaderMap, Body) {
    let request = Request::get(format!("/v3/app_usage_events/stream{query}"))
        .header("Authorization", format!("bearer {}", token(ADMIN)))
        .header("Accept", accept)
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body)
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn the_stream_resumes_from_a_cursor_and_follows_an_epoch_change() {
    let h = Harness::new().await;
    h.start(0).await;
    let events = h.all_v2().await;
    let second = events[1]["metadata"]["guid"].as_str().unwrap().to_owned();
    let (status, headers, body) =
        open_stream(&h, &format!("?after_guid={second}"), "application/x-ndjson").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(headers["x-tally-epoch"], "1");
    let count = |n: usize| move |bytes: &[u8]| bytes.iter().filter(|b| **b == b'\n').count() >= n;
    // Epoch frame, then the events after the cursor, then what commits while it is open ...
    let mut body = body;
    let mut out = Vec::new();
    read_more(&mut body, &mut out, count(3)).await;
    h.scale(0, 2).await;
    read_more(&mut body, &mut out, count(4)).await;
    // ... then a purge's new epoch and its reseed.
    h.set_time(at(60, 0));
    h.state.engine.purge_and_reseed().await.unwrap();
    read_more(&mut body, &mut out, count(6)).await;
    let frames = lines(&out);
    assert_eq!(
        frames[0],
        json!({"type": "epoch", "epoch": 1, "epoch_started_at": null})
    );
    let streamed: Vec<&str> = frames[1..3]
        .iter()
        .map(|f| f["event"]["guid"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = events[2..4]
        .iter()
        .map(|e| e["metadata"]["guid"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, expected);
    assert_eq!(frames[3]["type"], "usage_event");
    assert_eq!(frames[3]["event"]["instance_count"]["current"], 2);
    assert_eq!(
        frames[4],
        json!({"type": "epoch", "epoch": 2, "epoch_started_at": "2024-05-01T10:01:00Z"})
    );
    assert_eq!(frames[5]["event"]["guid"], app_guid(0).to_string());
    assert_eq!(frames[5]["event"]["state"]["previous"], "STARTED");
    // A cursor from the old epoch is refused before the stream starts.
    let (status, _, body) = open_stream(&h, &format!("?after_guid={second}"), "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("was purged"));
}

#[tokio::test]
async fn the_stream_speaks_server_sent_events_and_protobuf() {
    use prost::Message;
    let h = Harness::new().await;
    h.start(0).await;
    let events = h.all_v2().await;
    let guid = |i: usize| events[i]["metadata"]["guid"].as_str().unwrap().to_owned();
    // SSE: resumes after Last-Event-ID, each event carries its id.
    let request = Request::get("/v3/app_usage_events/stream")
        .header("Authorization", format!("bearer {}", token(ADMIN)))
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", guid(2))
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = read_stream(response.into_body(), |b| {
        String::from_utf8_lossy(b).matches("\n\n").count() >= 2
    })
    .await;
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.starts_with("event: epoch\ndata: {\"type\":\"epoch\",\"epoch\":1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "event: usage_event\nid: {}\ndata: {{\"guid\":\"{}\"",
            guid(3),
            guid(3)
        )),
        "{text}"
    );
    // Protobuf: length-delimited StreamFrames.
    let (status, headers, body) = open_stream(&h, "?format=protobuf", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let mut frames = Vec::new();
    let _ = read_stream(body, |bytes| {
        let mut buffer = bytes;
        frames.clear();
        while let Ok(frame) = proto_schemas::wire::StreamFrame::decode_length_delimited(&mut buffer)
        {
            frames.push(frame);
        }
        frames.len() >= 5
    })
    .await;
    use proto_schemas::wire::stream_frame::Frame;
    assert!(
        matches!(&frames[0].frame, Some(Frame::Epoch(e)) if e.epoch == 1 && e.started_at_micros.is_none())
    );
    let Some(Frame::Event(first)) = &frames[1].frame else {
        panic!("an event frame: {:?}", frames[1]);
    };
    assert_eq!(first.guid, guid(0));
    assert_eq!(first.state, "STARTED");
    assert_eq!(first.previous_state.as_deref(), Some("STOPPED"));
    assert_eq!(first.app_guid, app_guid(0).to_string());
    assert_eq!(first.created_at_micros / 1_000_000, at(0, 0).timestamp());
    assert_eq!(first.process_type.as_deref(), Some("web"));
    // Unknown parameters and formats: 422, as the list.
    let (status, _, _) = open_stream(&h, "?format=xml", "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for query in ["?page=2", "?garbage=1", "?after_guid=a,b"] {
        let (status, _, body) = open_stream(&h, query, "").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error(&body).0, 10008);
    }
}
