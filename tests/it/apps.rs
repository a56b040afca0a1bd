//! `/v2/apps` through the real server: every endpoint, its errors, and the usage and audit
//! events each operation leaves in the log.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{audit_types, spawn_app, usage_events, TestApp, ADMIN};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.admin(method, path, body).await
}

/// Creates an app (the answer must be 201); its path.
async fn create(app: &TestApp, body: Value) -> String {
    let (status, created) = send(app, Method::POST, "/v2/apps", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    format!("/v2/apps/{}", created["metadata"]["guid"].as_str().unwrap())
}

/// An org and a space; returns the space guid.
async fn space(app: &TestApp) -> String {
    let (_, org) = send(
        app,
        Method::POST,
        "/v2/organizations",
        Some(json!({"name": "o"})),
    )
    .await;
    let org = org["metadata"]["guid"].as_str().unwrap().to_owned();
    let (_, space) = send(
        app,
        Method::POST,
        "/v2/spaces",
        Some(json!({"name": "s", "organization_guid": org})),
    )
    .await;
    space["metadata"]["guid"].as_str().unwrap().to_owned()
}

fn error(body: &Value) -> (&str, u64) {
    (
        body["error_code"].as_str().unwrap_or(""),
        body["code"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn apps_are_created_with_ccs_defaults_and_validated_as_cc_validates() {
    let app = spawn_app().await;
    let space = space(&app).await;
    let response = app
        .request(Method::POST, "/v2/apps", "admin", ADMIN)
        .json(&json!({"name": "web", "space_guid": space, "environment_json": {"K": "v"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let guid = created["metadata"]["guid"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v2/apps/{guid}"));
    let e = &created["entity"];
    assert_eq!(e["memory"], 1024);
    assert_eq!(e["instances"], 1);
    assert_eq!(e["disk_quota"], 1024);
    assert_eq!(e["state"], "STOPPED");
    assert_eq!(e["package_state"], "PENDING");
    assert_eq!(e["health_check_type"], "port");
    assert_eq!(e["ports"], json!([8080]));
    assert_eq!(e["diego"], true);
    assert_eq!(e["environment_json"], json!({"K": "v"}));
    assert_eq!(
        e["docker_credentials"],
        json!({"username": null, "password": null})
    );
    assert_eq!(e["detected_start_command"], "");
    assert_eq!(e["space_url"], format!("/v2/spaces/{space}"));

    // §5.4: each validation failure with CC's error and status; nothing reaches the log.
    let cases = [
        (
            json!({"space_guid": space}),
            StatusCode::BAD_REQUEST,
            ("CF-MessageParseError", 1001),
        ),
        (
            json!({"name": "x", "space_guid": space, "memory": 0}),
            StatusCode::BAD_REQUEST,
            ("CF-AppMemoryInvalid", 100006),
        ),
        (
            json!({"name": "x", "space_guid": space, "instances": -1}),
            StatusCode::BAD_REQUEST,
            ("CF-AppInvalid", 100001),
        ),
        (
            json!({"name": "x", "space_guid": space, "disk_quota": 4096}),
            StatusCode::BAD_REQUEST,
            ("CF-AppInvalid", 100001),
        ),
        (
            json!({"name": "x", "space_guid": space, "state": "RUNNING"}),
            StatusCode::BAD_REQUEST,
            ("CF-AppInvalid", 100001),
        ),
        (
            json!({"name": "x", "space_guid": space, "state": "STARTED"}),
            StatusCode::BAD_REQUEST,
            ("CF-AppPackageInvalid", 150001),
        ),
        (
            json!({"name": "x", "space_guid": space, "docker_credentials": {"username": "u", "password": "p"}}),
            StatusCode::BAD_REQUEST,
            ("CF-DockerImageMissing", 150008),
        ),
        (
            json!({"name": "x", "space_guid": space, "memory": "big"}),
            StatusCode::BAD_REQUEST,
            ("CF-MessageParseError", 1001),
        ),
        (
            json!({"name": "web", "space_guid": space}),
            StatusCode::BAD_REQUEST,
            ("CF-AppNameTaken", 100002),
        ),
        (
            json!({"name": "x", "space_guid": "00000000-0000-0000-0000-0000000000ff"}),
            StatusCode::NOT_FOUND,
            ("CF-SpaceNotFound", 40004),
        ),
        (
            json!({"name": "x", "space_guid": "nope"}),
            StatusCode::NOT_FOUND,
            ("CF-SpaceNotFound", 40004),
        ),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = send(&app, Method::POST, "/v2/apps", Some(body.clone())).await;
        assert_eq!((got, error(&answer)), (status, expected), "{body}");
    }
    let (status, answer) = send(
        &app,
        Method::GET,
        "/v2/apps/00000000-0000-0000-0000-0000000000ff",
        None,
    )
    .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::NOT_FOUND, ("CF-AppNotFound", 100004))
    );
    let (_, list) = send(&app, Method::GET, "/v2/apps", None).await;
    assert_eq!(list["total_results"], 1, "refused creates left nothing");
    let dir = app.stop().await;
    let data = dir.path().join("data");
    assert_eq!(audit_types(&data), ["audit.app.create"]);
    assert!(
        usage_events(&data).is_empty(),
        "creating a stopped app bills nothing"
    );
}

#[tokio::test]
async fn start_scale_stop_and_delete_emit_ccs_usage_events() {
    let app = spawn_app().await;
    let space = space(&app).await;
    let (status, created) = send(
        &app,
        Method::POST,
        "/v2/apps",
        Some(
            json!({"name": "d", "space_guid": space, "docker_image": "nginx",
                    "docker_credentials": {"username": "u", "password": "secret"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["entity"]["docker_credentials"]["password"], "***");
    let path = format!("/v2/apps/{}", created["metadata"]["guid"].as_str().unwrap());
    let steps = [
        json!({"state": "STARTED"}),
        json!({"instances": 3}),
        json!({"disk_quota": 2048}),
        json!({"name": "renamed"}),
        json!({"state": "STOPPED"}),
        json!({"instances": 5}),
        json!({"state": "STARTED"}),
    ];
    for body in steps {
        let response = app
            .request(Method::PUT, &path, "admin", ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{body}");
    }
    let (_, shown) = send(&app, Method::GET, &path, None).await;
    assert_eq!(shown["entity"]["instances"], 5);
    assert_eq!(shown["entity"]["name"], "renamed");
    assert_eq!(shown["entity"]["state"], "STARTED");
    // `{}` bodies on GET and DELETE are accepted, as some clients send them.
    let response = app
        .request(Method::GET, &path, "admin", ADMIN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .request(Method::DELETE, &path, "admin", ADMIN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = send(&app, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Deleting a stopped app bills nothing.
    let quiet = create(&app, json!({"name": "quiet", "space_guid": space})).await;
    let (status, _) = send(&app, Method::DELETE, &quiet, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let dir = app.stop().await;
    let events = usage_events(&dir.path().join("data"));
    let summary: Vec<(&str, Option<&str>, i64)> = events
        .iter()
        .map(|(s, p, n, _)| (s.as_str(), p.as_deref(), *n))
        .collect();
    // Start (which stages the docker package: immediate staging completes at once); scale
    // while started; nothing for disk or name; stop; nothing for a stopped scale; start again
    // at 5; delete stops it.
    assert_eq!(
        summary,
        [
            ("STARTED", Some("STOPPED"), 1),
            ("STAGING_STARTED", Some("STAGING"), 1),
            ("STAGING_STOPPED", Some("STAGING"), 1),
            ("BUILDPACK_SET", Some("STARTED"), 1),
            ("STARTED", Some("STARTED"), 3),
            ("STOPPED", Some("STARTED"), 3),
            ("STARTED", Some("STOPPED"), 5),
            ("STOPPED", Some("STARTED"), 5),
        ]
    );
    assert_eq!(events[5].3, "renamed");
    assert!(events.iter().all(|(_, _, _, name)| name != "quiet"));
}

#[tokio::test]
async fn lists_filter_with_q_and_page_until_next_url_is_null() {
    let app = spawn_app().await;
    let space = space(&app).await;
    for n in 0..7 {
        send(
            &app,
            Method::POST,
            "/v2/apps",
            Some(json!({"name": format!("app-{n}"), "space_guid": space})),
        )
        .await;
    }
    let mut next = Some("/v2/apps?results-per-page=3".to_owned());
    let mut names = Vec::new();
    while let Some(url) = next {
        let (status, page) = send(&app, Method::GET, &url, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total_pages"], 3);
        for r in page["resources"].as_array().unwrap() {
            names.push(r["entity"]["name"].as_str().unwrap().to_owned());
        }
        next = page["next_url"].as_str().map(str::to_owned);
    }
    assert_eq!(names.len(), 7);
    let (_, page) = send(
        &app,
        Method::GET,
        &format!("/v2/apps?q=name:app-3&q=space_guid:{space}"),
        None,
    )
    .await;
    assert_eq!(page["total_results"], 1);
    let (_, page) = send(
        &app,
        Method::GET,
        "/v2/apps?q=name%20IN%20app-1,app-2;diego:true",
        None,
    )
    .await;
    assert_eq!(page["total_results"], 2);
    let (_, page) = send(&app, Method::GET, "/v2/apps?q=name>=app-5", None).await;
    assert_eq!(page["total_results"], 2);
    let (status, answer) = send(&app, Method::GET, "/v2/apps?results-per-page=101", None).await;
    assert_eq!((status, error(&answer).1), (StatusCode::BAD_REQUEST, 10005));
    let (status, answer) = send(&app, Method::GET, "/v2/apps?order-by=name", None).await;
    assert_eq!(
        (status, error(&answer).1),
        (StatusCode::INTERNAL_SERVER_ERROR, 10012)
    );
    app.stop().await;
}

#[tokio::test]
async fn restage_checks_preconditions_in_ccs_order() {
    let app = spawn_app().await;
    let space = space(&app).await;
    let (status, answer) = send(
        &app,
        Method::POST,
        "/v2/apps/00000000-0000-0000-0000-0000000000ff/restage",
        None,
    )
    .await;
    assert_eq!((status, error(&answer).1), (StatusCode::NOT_FOUND, 100004));
    let (_, created) = send(
        &app,
        Method::POST,
        "/v2/apps",
        Some(json!({"name": "r", "space_guid": space, "instances": 0})),
    )
    .await;
    let path = format!(
        "/v2/apps/{}/restage",
        created["metadata"]["guid"].as_str().unwrap()
    );
    // A caller without the write scope: 403, after the app was found.
    let response = app
        .request(Method::POST, &path, "reader", &["cloud_controller.read"])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (status, answer) = send(&app, Method::POST, &path, None).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, ("CF-StagingError", 170001))
    );
    let app_path = path.trim_end_matches("/restage").to_owned();
    send(&app, Method::PUT, &app_path, Some(json!({"instances": 1}))).await;
    let (status, answer) = send(&app, Method::POST, &path, None).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, ("CF-NotStaged", 170002))
    );
    app.stop().await;
}

/// The smallest valid zip: an empty archive (its end-of-central-directory record).
fn empty_zip() -> Vec<u8> {
    let mut zip = b"PK\x05\x06".to_vec();
    zip.extend([0u8; 18]);
    zip
}

async fn upload(app: &TestApp, path: &str, bits: Vec<u8>, resources: &str) -> (StatusCode, Value) {
    let form = reqwest::multipart::Form::new()
        .text("resources", resources.to_owned())
        .part(
            "application",
            reqwest::multipart::Part::bytes(bits).file_name("app.zip"),
        );
    let response = app
        .request(Method::PUT, path, "admin", ADMIN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn uploaded_bits_stage_on_start_and_restage_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::spawn_app_in(
        dir,
        vec![("TALLY_SERVER__MAX_UPLOAD_MB".into(), "1".into())],
    )
    .await;
    let space = space(&app).await;
    let path = create(&app, json!({"name": "b", "space_guid": space})).await;
    let bits = format!("{path}/bits");
    // Refusals first: not a zip, too large, cached resources, no application part.
    let (status, answer) = upload(&app, &bits, b"not a zip".to_vec(), "[]").await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, ("CF-AppBitsUploadInvalid", 160001))
    );
    let mut big = empty_zip();
    big.resize(2 * 1024 * 1024, 0);
    let (status, _) = upload(&app, &bits, big, "[]").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = upload(
        &app,
        &bits,
        empty_zip(),
        r#"[{"fn":"a","sha1":"b","size":1}]"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, shown) = send(&app, Method::GET, &path, None).await;
    assert_eq!(
        shown["entity"]["package_updated_at"],
        Value::Null,
        "refused uploads change nothing"
    );
    let packages = app.data_dir.join("packages");
    let leftovers = std::fs::read_dir(&packages).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "partial uploads are removed");

    let (status, answer) = upload(&app, &bits, empty_zip(), "[]").await;
    assert_eq!((status, answer), (StatusCode::CREATED, json!({})));
    let stored: Vec<_> = std::fs::read_dir(&packages)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        std::fs::read(packages.join(&stored[0])).unwrap(),
        empty_zip()
    );
    let (_, shown) = send(&app, Method::GET, &path, None).await;
    assert_eq!(shown["entity"]["package_state"], "PENDING");
    assert!(shown["entity"]["package_updated_at"].is_string());

    let (status, started) = send(&app, Method::PUT, &path, Some(json!({"state": "STARTED"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(started["entity"]["package_state"], "STAGED");
    assert_eq!(started["entity"]["detected_buildpack"], "binary_buildpack");
    let response = app
        .request(Method::POST, &format!("{path}/restage"), "admin", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], path.as_str());
    let dir = app.stop().await;
    let data = dir.path().join("data");
    let states: Vec<String> = usage_events(&data)
        .into_iter()
        .map(|(s, _, _, _)| s)
        .collect();
    assert_eq!(
        states,
        [
            "STARTED",
            "STAGING_STARTED",
            "STAGING_STOPPED",
            "BUILDPACK_SET", // start
            "STOPPED",
            "STARTED",
            "STAGING_STARTED",
            "STAGING_STOPPED",
            "BUILDPACK_SET", // restage
        ]
    );
    let audits = audit_types(&data);
    for expected in [
        "audit.app.create",
        "audit.app.upload-bits",
        "audit.app.update",
        "audit.app.restage",
        "audit.app.build.create",
        "audit.app.build.staged",
    ] {
        assert!(
            audits.iter().any(|a| a == expected),
            "{expected} missing from {audits:?}"
        );
    }
}

#[tokio::test]
async fn an_external_runtime_reports_staging_through_the_authenticated_callback() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::spawn_app_in(
        dir,
        vec![
            ("TALLY_STAGING__MODE".into(), "external".into()),
            ("TALLY_STAGING__CALLBACK_PASSWORD".into(), "pw".into()),
        ],
    )
    .await;
    let space = space(&app).await;
    let mut builds = Vec::new();
    let mut paths = Vec::new();
    for name in ["ok", "broken"] {
        let (_, created) = send(
            &app,
            Method::POST,
            "/v2/apps",
            Some(json!({"name": name, "space_guid": space})),
        )
        .await;
        let path = format!("/v2/apps/{}", created["metadata"]["guid"].as_str().unwrap());
        let (status, _) = upload(&app, &format!("{path}/bits"), empty_zip(), "[]").await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, started) = send(&app, Method::PUT, &path, Some(json!({"state": "STARTED"}))).await;
        assert_eq!(
            started["entity"]["package_state"], "PENDING",
            "staging is in flight"
        );
        builds.push(
            started["entity"]["staging_task_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        paths.push(path);
    }
    let callback = |build: &str| {
        format!(
            "{}/internal/v3/staging/{build}/build_completed",
            app.address
        )
    };
    let report = |build: &str, password: Option<&'static str>, body: Value| {
        let mut request = app.client.post(callback(build)).json(&body);
        if let Some(password) = password {
            request = request.basic_auth("staging", Some(password));
        }
        async move { request.send().await.unwrap().status() }
    };
    let success = json!({"result": {"lifecycle_metadata": {"detected_buildpack": "ruby_buildpack"},
                                    "process_types": {"web": "bundle exec rackup"}}});
    // No credential, a wrong one: refused, nothing changes.
    assert_eq!(
        report(&builds[0], None, success.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        report(&builds[0], Some("nope"), success.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        report(&builds[0], Some("pw"), success.clone()).await,
        StatusCode::OK
    );
    let (_, staged) = send(&app, Method::GET, &paths[0], None).await;
    assert_eq!(staged["entity"]["package_state"], "STAGED");
    assert_eq!(staged["entity"]["detected_buildpack"], "ruby_buildpack");
    assert_eq!(
        staged["entity"]["detected_start_command"],
        "bundle exec rackup"
    );
    // A second report for the same build is refused.
    assert_eq!(
        report(&builds[0], Some("pw"), success.clone()).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(report(&builds[1], Some("pw"), json!({"failed": true, "error": {"id": "StagingError", "message": "no buildpack detected"}})).await, StatusCode::OK);
    let (_, failed) = send(&app, Method::GET, &paths[1], None).await;
    assert_eq!(failed["entity"]["package_state"], "FAILED");
    assert_eq!(failed["entity"]["state"], "STOPPED");
    assert_eq!(failed["entity"]["staging_failed_reason"], "StagingError");
    assert_eq!(
        report(
            "00000000-0000-0000-0000-0000000000ff",
            Some("pw"),
            success.clone()
        )
        .await,
        StatusCode::NOT_FOUND
    );
    let dir = app.stop().await;
    let states: Vec<(String, String)> = usage_events(&dir.path().join("data"))
        .into_iter()
        .map(|(s, _, _, name)| (s, name))
        .collect();
    let of = |app: &str| -> Vec<&str> {
        states
            .iter()
            .filter(|(_, n)| n == app || n.is_empty())
            .map(|(s, _)| s.as_str())
            .collect()
    };
    assert_eq!(
        of("ok").iter().filter(|s| **s == "BUILDPACK_SET").count(),
        1
    );
    assert!(of("broken").contains(&"STOPPED"));
}

#[tokio::test]
async fn refused_uploads_leave_nothing_and_an_oversized_length_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::spawn_app_in(
        dir,
        vec![("TALLY_SERVER__MAX_UPLOAD_MB".into(), "1".into())],
    )
    .await;
    let space = space(&app).await;
    let docker = create(
        &app,
        json!({"name": "d", "space_guid": space, "docker_image": "nginx"}),
    )
    .await;
    // A valid zip the log refuses (docker apps take no bits): its file goes too.
    let (status, answer) = upload(&app, &format!("{docker}/bits"), empty_zip(), "[]").await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, ("CF-AppPackageInvalid", 150001))
    );
    let packages = app.data_dir.join("packages");
    let left: Vec<_> = std::fs::read_dir(&packages)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refused upload left {left:?}");
    // A Content-Length beyond the limit is answered 413 without sending the body.
    let bits = format!(
        "{}/bits",
        create(&app, json!({"name": "b", "space_guid": space})).await
    );
    let address = app.address.trim_start_matches("http://").to_owned();
    let admin = vec!["cloud_controller.admin".to_owned()];
    let token = tally::auth::developer_token(&app.settings, "admin", &admin, 600).unwrap();
    let head = format!(
        "PUT {bits} HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1073741824\r\n\r\n"
    );
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(address).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        tcp.write_all(head.as_bytes()).unwrap();
        let mut answer = [0u8; 12];
        tcp.read_exact(&mut answer).unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(answer, "HTTP/1.1 413");
    // Bits a package names survive a restart; what a crash left is swept at start-up.
    let (status, _) = upload(&app, &bits, empty_zip(), "[]").await;
    assert_eq!(status, StatusCode::CREATED);
    std::fs::write(packages.join("upload-left-by-a-crash"), b"partial").unwrap();
    std::fs::write(packages.join(format!("{}.zip", "0".repeat(64))), b"PK").unwrap();
    let dir = app.stop().await;
    let again = crate::helpers::spawn_app_in(
        dir,
        vec![("TALLY_SERVER__MAX_UPLOAD_MB".into(), "1".into())],
    )
    .await;
    let left: Vec<String> = std::fs::read_dir(&packages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].ends_with(".zip") && !left[0].starts_with('0'),
        "{left:?}"
    );
    again.stop().await;
}

#[tokio::test]
async fn long_names_are_refused_and_a_page_past_max_page_mb_says_what_fits() {
    let dir = tempfile::tempdir().unwrap();
    let app =
        crate::helpers::spawn_app_in(dir, vec![("TALLY_SERVER__MAX_PAGE_MB".into(), "1".into())])
            .await;
    let space = space(&app).await;
    // One character past CC's 255, and a number past i64: refused, nothing written.
    let (status, answer) = send(
        &app,
        Method::POST,
        "/v2/apps",
        Some(json!({"name": "n".repeat(256), "space_guid": space})),
    )
    .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, ("CF-AppInvalid", 100001))
    );
    assert_eq!(
        answer["description"],
        "The app is invalid: name is too long (maximum is 255 characters)"
    );
    let (status, answer) = send(
        &app,
        Method::POST,
        "/v2/organizations",
        Some(json!({"name": "o".repeat(256)})),
    )
    .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, ("CF-OrganizationInvalid", 30001))
    );
    let big = r#"{"name":"x","space_guid":"SPACE","instances":9223372036854775808}"#
        .replace("SPACE", &space);
    let response = app
        .request(Method::POST, "/v2/apps", "admin", ADMIN)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (_, apps) = send(&app, Method::GET, "/v2/apps", None).await;
    assert_eq!(apps["total_results"], 0, "refusals wrote nothing");
    // At the limit: 255 four-byte characters. Each start/stop writes one ~1.8 KB usage event.
    let name = "😀".repeat(255);
    let path = create(
        &app,
        json!({"name": name, "space_guid": space, "docker_image": "i"}),
    )
    .await;
    for round in 0..700 {
        let state = if round % 2 == 0 { "STARTED" } else { "STOPPED" };
        let (status, _) = send(&app, Method::PUT, &path, Some(json!({"state": state}))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, answer) = send(
        &app,
        Method::GET,
        "/v3/app_usage_events?per_page=5000",
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer["errors"]
    );
    let detail = answer["errors"][0]["detail"].as_str().unwrap().to_owned();
    let fits: u64 = detail
        .rsplit("per_page=")
        .next()
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{detail}"));
    assert!(fits > 0 && fits < 700, "{detail}");
    let (status, page) = send(
        &app,
        Method::GET,
        &format!("/v3/app_usage_events?per_page={fits}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the size it names fits");
    assert_eq!(page["resources"].as_array().unwrap().len() as u64, fits);
    let (status, answer) = send(
        &app,
        Method::GET,
        "/v2/app_usage_events?results-per-page=5000",
        None,
    )
    .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, ("CF-BadQueryParameter", 10005)),
        "{}",
        answer["description"]
    );
    app.stop().await;
}
