//! `/v2/events` and `/v3/audit_events` through the real server.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, ADMIN};

async fn get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    app.admin(Method::GET, path, None).await
}

async fn post(app: &TestApp, method: Method, path: &str, body: Value) -> Value {
    let response = app
        .request(method, path, "admin", ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn audit_events_are_listed_filtered_and_paged_in_v2_and_v3() {
    let app = spawn_app().await;
    let org = post(
        &app,
        Method::POST,
        "/v2/organizations",
        json!({"name": "o"}),
    )
    .await;
    let org = org["metadata"]["guid"].as_str().unwrap().to_owned();
    let space = post(
        &app,
        Method::POST,
        "/v2/spaces",
        json!({"name": "s", "organization_guid": org}),
    )
    .await;
    let space = space["metadata"]["guid"].as_str().unwrap().to_owned();
    let mut apps = Vec::new();
    for n in 0..3 {
        let created = post(
            &app,
            Method::POST,
            "/v2/apps",
            json!({"name": format!("a{n}"), "space_guid": space, "command": "secret-cmd"}),
        )
        .await;
        apps.push(created["metadata"]["guid"].as_str().unwrap().to_owned());
    }
    post(
        &app,
        Method::PUT,
        &format!("/v2/apps/{}", apps[0]),
        json!({"instances": 2}),
    )
    .await;

    let (status, page) = get(
        &app,
        "/v2/events?q=type:audit.app.create&results-per-page=2",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total_results"], 3);
    assert_eq!(page["total_pages"], 2);
    assert!(page["next_url"]
        .as_str()
        .unwrap()
        .contains("q=type%3Aaudit.app.create"));
    let first = &page["resources"][0];
    assert_eq!(first["entity"]["actor"], "admin");
    assert_eq!(first["entity"]["actor_type"], "user");
    assert_eq!(first["entity"]["actee_type"], "app");
    assert_eq!(first["entity"]["space_guid"], space.as_str());
    assert_eq!(
        first["entity"]["metadata"]["request"]["command"],
        "[PRIVATE DATA HIDDEN]"
    );
    let (_, page) = get(&app, &format!("/v2/events?q=actee:{}", apps[0])).await;
    let types: Vec<&str> = page["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["entity"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["audit.app.create", "audit.app.update"]);
    assert_eq!(
        page["resources"][1]["entity"]["metadata"],
        json!({"request": {"instances": 2}})
    );
    // Timestamps: everything happened after 2020 and before 2100.
    let (_, page) = get(
        &app,
        "/v2/events?q=timestamp>2020-01-01T00:00:00Z&q=timestamp<2100-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(page["total_results"], 4);
    let (status, _) = get(&app, "/v2/events?q=timestamp>yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let guid = page["resources"][0]["metadata"]["guid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, one) = get(&app, &format!("/v2/events/{guid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["metadata"]["guid"], guid.as_str());
    let (status, missing) = get(&app, "/v2/events/00000000-0000-0000-0000-0000000000ff").await;
    assert_eq!(
        (status, missing["code"].as_u64()),
        (StatusCode::NOT_FOUND, Some(230002))
    );

    // v3.
    let (status, page) = get(&app, &format!("/v3/audit_events?types=audit.app.create,audit.app.update&target_guids={}&per_page=1&order_by=-created_at", apps[0])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["pagination"]["total_results"], 2);
    assert_eq!(page["resources"][0]["type"], "audit.app.update");
    assert_eq!(page["resources"][0]["target"]["guid"], apps[0].as_str());
    assert_eq!(page["resources"][0]["data"]["request"]["instances"], 2);
    assert_eq!(page["resources"][0]["space"]["guid"], space.as_str());
    let next = page["pagination"]["next"]["href"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{}/v3/audit_events?", app.address)),
        "{next}"
    );
    assert!(
        next.contains("order_by=-created_at") && next.contains("page=2"),
        "{next}"
    );
    let (_, page) = get(
        &app,
        &format!("/v3/audit_events?target_guids[not]={}", apps[0]),
    )
    .await;
    assert_eq!(page["pagination"]["total_results"], 2);
    let (status, error) = get(&app, "/v3/audit_events?garbage=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["errors"][0]["title"], "CF-BadQueryParameter");
    let v3_guid = page["resources"][0]["guid"].as_str().unwrap().to_owned();
    let (status, one) = get(&app, &format!("/v3/audit_events/{v3_guid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        one["links"]["self"]["href"],
        format!("{}/v3/audit_events/{v3_guid}", app.address)
    );
    // A space developer sees the events of their space; a stranger with read scope sees none.
    post(
        &app,
        Method::PUT,
        &format!("/v2/organizations/{org}/users/dev"),
        json!({}),
    )
    .await;
    post(
        &app,
        Method::PUT,
        &format!("/v2/spaces/{space}/developers/dev"),
        json!({}),
    )
    .await;
    let seen = |user: &'static str| {
        let app = &app;
        async move {
            let response = app
                .request(
                    Method::GET,
                    "/v3/audit_events?types=audit.app.create",
                    user,
                    &["cloud_controller.read"],
                )
                .send()
                .await
                .unwrap();
            let page: Value = response.json().await.unwrap();
            page["pagination"]["total_results"].as_u64().unwrap()
        }
    };
    assert_eq!(seen("dev").await, 3);
    assert_eq!(seen("stranger").await, 0);
    app.stop().await;
}
