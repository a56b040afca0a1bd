//! `/v2/organizations` and `/v2/spaces` through the real server.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, ADMIN};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.admin(method, path, body).await
}

/// Follows `next_url` from `path` until it is null; returns every resource's name.
pub async fn all_names(app: &TestApp, path: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut next = Some(path.to_owned());
    let mut pages = 0;
    while let Some(url) = next {
        pages += 1;
        assert!(pages < 100, "next_url never ends");
        let (status, page) = send(app, Method::GET, &url, None).await;
        assert_eq!(status, StatusCode::OK, "{url}: {page}");
        for resource in page["resources"].as_array().unwrap() {
            names.push(resource["entity"]["name"].as_str().unwrap().to_owned());
        }
        next = page["next_url"].as_str().map(str::to_owned);
    }
    names
}

#[tokio::test]
async fn orgs_and_spaces_are_created_listed_renamed_and_deleted() {
    let app = spawn_app().await;
    let response = app
        .request(Method::POST, "/v2/organizations", "admin", ADMIN)
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let org: Value = response.json().await.unwrap();
    let org_guid = org["metadata"]["guid"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v2/organizations/{org_guid}"));
    assert_eq!(org["entity"]["name"], "acme");
    assert_eq!(org["entity"]["status"], "active");
    // The name is unique.
    let (status, error) = send(
        &app,
        Method::POST,
        "/v2/organizations",
        Some(json!({"name": "acme"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error_code"], "CF-OrganizationNameTaken");
    assert_eq!(error["code"], 30002);
    // JSON labelled as form data is still JSON; malformed JSON is a parse error.
    let response = app
        .request(Method::POST, "/v2/organizations", "admin", ADMIN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"name":"beta"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = app
        .request(Method::POST, "/v2/organizations", "admin", ADMIN)
        .body(r#"{"name":"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        (error["error_code"].as_str(), error["code"].as_u64()),
        (Some("CF-MessageParseError"), Some(1001))
    );
    for n in 0..5 {
        send(
            &app,
            Method::POST,
            "/v2/organizations",
            Some(json!({"name": format!("org-{n}")})),
        )
        .await;
    }
    // Paging: following next_url visits every org once, in creation order.
    let names = all_names(&app, "/v2/organizations?results-per-page=2").await;
    assert_eq!(
        names,
        ["acme", "beta", "org-0", "org-1", "org-2", "org-3", "org-4"]
    );
    let (_, page) = send(&app, Method::GET, "/v2/organizations?q=name:org-3", None).await;
    assert_eq!(page["total_results"], 1);
    let (_, page) = send(
        &app,
        Method::GET,
        "/v2/organizations?q=name%20IN%20acme,beta",
        None,
    )
    .await;
    assert_eq!(page["total_results"], 2);
    let (status, _) = send(&app, Method::GET, "/v2/organizations?q=colour:red", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A space in it, renamed.
    let (status, space) = send(
        &app,
        Method::POST,
        "/v2/spaces",
        Some(json!({"name": "dev", "organization_guid": org_guid})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{space}");
    let space_guid = space["metadata"]["guid"].as_str().unwrap().to_owned();
    assert_eq!(space["entity"]["organization_guid"], org_guid.as_str());
    let (status, space) = send(
        &app,
        Method::PUT,
        &format!("/v2/spaces/{space_guid}"),
        Some(json!({"name": "prod"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(space["entity"]["name"], "prod");
    let (_, page) = send(
        &app,
        Method::GET,
        &format!("/v2/spaces?q=organization_guid:{org_guid}"),
        None,
    )
    .await;
    assert_eq!(page["total_results"], 1);
    let (status, error) = send(
        &app,
        Method::POST,
        "/v2/spaces",
        Some(json!({"name": "x", "organization_guid": "00000000-0000-0000-0000-000000000009"})),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (StatusCode::NOT_FOUND, Some(30003))
    );

    // Deleting the org: refused while it has a space, unless recursive.
    let (status, error) = send(
        &app,
        Method::DELETE,
        &format!("/v2/organizations/{org_guid}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error_code"], "CF-AssociationNotEmpty");
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/v2/organizations/{org_guid}?recursive=true"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, error) = send(&app, Method::GET, &format!("/v2/spaces/{space_guid}"), None).await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (StatusCode::NOT_FOUND, Some(40004))
    );
    app.stop().await;
}
