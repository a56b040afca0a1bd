//! The v3 app lifecycle through the real server (reference v3 §6): what each call answers and
//! the usage and audit events it leaves, on the same rows the v2 API serves.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

async fn v3(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    app.admin(method, path, body).await
}

/// Usage events after `after` as `(state, previous_state, instances, previous_instances)`.
async fn usage(app: &TestApp) -> Vec<(String, Value, i64, Value)> {
    let (_, page) = v3(app, Method::GET, "/v3/app_usage_events?per_page=5000", None).await;
    page["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["state"]["current"].as_str().unwrap().to_owned(),
                e["state"]["previous"].clone(),
                e["instance_count"]["current"].as_i64().unwrap(),
                e["instance_count"]["previous"].clone(),
            )
        })
        .collect()
}

async fn audit(app: &TestApp, target: &str) -> Vec<String> {
    let path = format!("/v3/audit_events?target_guids={target}&per_page=5000");
    let (_, page) = v3(app, Method::GET, &path, None).await;
    page["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

fn error(body: &Value) -> (&str, u64, &str) {
    let e = &body["errors"][0];
    (
        e["title"].as_str().unwrap_or(""),
        e["code"].as_u64().unwrap_or(0),
        e["detail"].as_str().unwrap_or(""),
    )
}

#[tokio::test]
async fn a_v3_app_is_the_v2_app_and_writes_ccs_events_only() {
    let app = spawn_app().await;
    let (org, space) = app.org_and_space().await;
    let response = app
        .request(Method::POST, "/v3/apps", "admin", crate::helpers::ADMIN)
        .json(
            &json!({"name": "a1", "relationships": {"space": {"data": {"guid": space}}},
                      "environment_variables": {"K": "v"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let guid = created["guid"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("{}/v3/apps/{guid}", app.address));
    assert_eq!(created["state"], "STOPPED");
    assert_eq!(
        created["lifecycle"],
        json!({"type": "buildpack", "data": {"buildpacks": [], "stack": "cflinuxfs4"}})
    );
    assert_eq!(
        created["relationships"]["current_droplet"],
        json!({"data": {"guid": null}})
    );
    let links = created["links"].as_object().unwrap();
    assert!(links.values().all(|l| l["href"].is_string()), "{created}");
    assert_eq!(links["start"]["method"], "POST");
    // One guid: the v2 app and the web process.
    let (status, v2) = v3(&app, Method::GET, &format!("/v2/apps/{guid}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v2["entity"]["name"], "a1");
    assert_eq!(v2["entity"]["environment_json"], json!({"K": "v"}));
    let (_, process) = v3(
        &app,
        Method::GET,
        &format!("/v3/apps/{guid}/processes/web"),
        None,
    )
    .await;
    assert_eq!(process["guid"], guid.as_str());
    assert_eq!(
        (
            process["instances"].as_i64(),
            process["health_check"]["type"].as_str()
        ),
        (Some(1), Some("port"))
    );
    // Rule 1: no usage event; the process's audit event, then the app's (variables censored).
    assert!(usage(&app).await.is_empty());
    assert_eq!(
        audit(&app, &guid).await,
        ["audit.app.process.create", "audit.app.create"]
    );
    let (_, events) = v3(
        &app,
        Method::GET,
        "/v3/audit_events?types=audit.app.create",
        None,
    )
    .await;
    assert_eq!(
        events["resources"][0]["data"]["request"]["environment_variables"],
        "[PRIVATE DATA HIDDEN]"
    );
    // Rule 2: start without a droplet is 422 and writes nothing.
    let (status, body) = v3(
        &app,
        Method::POST,
        &format!("/v3/apps/{guid}/actions/start"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error(&body),
        (
            "CF-UnprocessableEntity",
            10008,
            "Assign a droplet before starting this app."
        )
    );
    assert_eq!(audit(&app, &guid).await.len(), 2);
    // Errors in CC's v3 shapes; nothing changes.
    let dup = json!({"name": "A1", "relationships": {"space": {"data": {"guid": space}}}});
    let (status, body) = v3(&app, Method::POST, "/v3/apps", Some(dup)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error(&body),
        (
            "CF-UniquenessError",
            10016,
            "App with the name 'A1' already exists."
        )
    );
    let nowhere = json!({"name": "b", "relationships": {"space": {"data": {"guid": org}}}});
    let (status, body) = v3(&app, Method::POST, "/v3/apps", Some(nowhere)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error(&body).2,
        "Invalid space. Ensure that the space exists and you have access to it."
    );
    let (status, body) = v3(
        &app,
        Method::PATCH,
        &format!("/v3/apps/{guid}"),
        Some(json!({"name": 1, "color": "red"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error(&body).2,
        "Unknown field(s): 'color', Name must be a string"
    );
    let raw = app
        .request(
            Method::PATCH,
            &format!("/v3/apps/{guid}"),
            "admin",
            crate::helpers::ADMIN,
        )
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let raw: Value = raw.json().await.unwrap();
    assert_eq!(
        error(&raw),
        (
            "CF-MessageParseError",
            1001,
            "Request invalid due to parse error: invalid request body"
        )
    );
    let (status, body) = v3(&app, Method::GET, "/v3/apps?colors=red", None).await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::BAD_REQUEST, "CF-BadQueryParameter")
    );
    assert_eq!(audit(&app, &guid).await.len(), 2);
    // Rename: audit.app.update with the request as sent, no usage event.
    let (status, renamed) = v3(
        &app,
        Method::PATCH,
        &format!("/v3/apps/{guid}"),
        Some(json!({"name": "a2"})),
    )
    .await;
    assert_eq!(
        (status, renamed["name"].as_str()),
        (StatusCode::OK, Some("a2"))
    );
    // Variables: set, remove with null, merged onto the others.
    let path = format!("/v3/apps/{guid}/environment_variables");
    let (status, vars) = v3(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"var": {"A": "1", "K": null}})),
    )
    .await;
    assert_eq!((status, &vars["var"]), (StatusCode::OK, &json!({"A": "1"})));
    let (status, body) = v3(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"var": {"VCAP_X": "1"}})),
    )
    .await;
    assert_eq!(
        (status, error(&body).2),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Var cannot start with VCAP_"
        )
    );
    let (_, env) = v3(&app, Method::GET, &format!("/v3/apps/{guid}/env"), None).await;
    assert_eq!(env["environment_variables"], json!({"A": "1"}));
    assert_eq!(
        env["application_env_json"]["VCAP_APPLICATION"]["application_name"],
        "a2"
    );
    assert!(usage(&app).await.is_empty());
    assert_eq!(
        audit(&app, &guid).await[2..],
        ["audit.app.update", "audit.app.update"]
    );
    // Lists: by name and space (indexes), include, and the process list hides commands.
    let (_, list) = v3(
        &app,
        Method::GET,
        &format!("/v3/apps?names=a2&space_guids={space}&include=space.organization"),
        None,
    )
    .await;
    assert_eq!(list["pagination"]["total_results"], 1);
    assert_eq!(list["included"]["spaces"][0]["guid"], space.as_str());
    assert_eq!(list["included"]["organizations"][0]["guid"], org.as_str());
    // One space, default order: that space's own index, paged.
    for order in ["", "&order_by=-created_at"] {
        let path = format!("/v3/apps?space_guids={space}&per_page=1{order}");
        let (_, page) = v3(&app, Method::GET, &path, None).await;
        assert_eq!(page["pagination"]["total_results"], 1, "{page}");
        assert_eq!(page["resources"][0]["guid"], guid.as_str());
    }
    let stranger = app
        .request(
            Method::GET,
            &format!("/v3/apps?space_guids={space}"),
            "stranger",
            &["cloud_controller.read"],
        )
        .send()
        .await
        .unwrap();
    let stranger: Value = stranger.json().await.unwrap();
    assert_eq!(stranger["pagination"]["total_results"], 0, "{stranger}");
    let (_, none) = v3(
        &app,
        Method::GET,
        "/v3/apps?label_selector=env%3Dprod",
        None,
    )
    .await;
    assert_eq!(none["pagination"]["total_results"], 0);
    let (_, processes) = v3(
        &app,
        Method::GET,
        &format!("/v3/processes?app_guids={guid}"),
        None,
    )
    .await;
    assert_eq!(
        processes["resources"][0]["command"],
        "[PRIVATE DATA HIDDEN IN LISTS]"
    );
    // Delete: 202, no body, a Location whose job is COMPLETE; the v2 app is gone too.
    let response = app
        .request(
            Method::DELETE,
            &format!("/v3/apps/{guid}"),
            "admin",
            crate::helpers::ADMIN,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(response.text().await.unwrap().is_empty());
    let job_path = job.trim_start_matches(app.address.as_str()).to_owned();
    let (status, job) = v3(&app, Method::GET, &job_path, None).await;
    assert_eq!(status, StatusCode::OK, "{job_path}");
    assert_eq!(
        (job["state"].as_str(), job["operation"].as_str()),
        (Some("COMPLETE"), Some("app.delete"))
    );
    let (status, _) = v3(&app, Method::GET, &format!("/v2/apps/{guid}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = v3(&app, Method::GET, &format!("/v3/apps/{guid}"), None).await;
    assert_eq!(
        (status, error(&body).2),
        (StatusCode::NOT_FOUND, "App not found")
    );
    assert_eq!(
        audit(&app, &guid).await[4..],
        ["audit.app.process.delete", "audit.app.delete-request"]
    );
    assert!(
        usage(&app).await.is_empty(),
        "a stopped app's delete writes no usage event"
    );
}

#[tokio::test]
async fn start_stop_restart_and_scale_write_usage_only_for_what_changed() {
    let app = spawn_app().await;
    let (_, space) = app.org_and_space().await;
    // A docker app staged through v2 has a droplet.
    let (status, created) = v3(
        &app,
        Method::POST,
        "/v2/apps",
        Some(
            json!({"name": "d", "space_guid": space, "docker_image": "nginx", "state": "STARTED"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let guid = created["metadata"]["guid"].as_str().unwrap().to_owned();
    let staged = usage(&app).await.len();
    let (status, droplet) = v3(
        &app,
        Method::GET,
        &format!("/v3/apps/{guid}/droplets/current"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, same) = v3(
        &app,
        Method::GET,
        &format!("/v3/droplets/{}", droplet["guid"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!((status, &same["guid"]), (StatusCode::OK, &droplet["guid"]));
    // Rule 3: start again: no usage row, a second audit event.
    let action = |a: &str| format!("/v3/apps/{guid}/actions/{a}");
    let (status, body) = v3(&app, Method::POST, &action("start"), None).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("STARTED"))
    );
    assert_eq!(usage(&app).await.len(), staged);
    // Rule 4: instances 1 → 3 while started; disk alone writes no usage row.
    let scale = format!("/v3/processes/{guid}/actions/scale");
    let (status, process) = v3(&app, Method::POST, &scale, Some(json!({"instances": 3}))).await;
    assert_eq!(
        (status, process["instances"].as_i64()),
        (StatusCode::ACCEPTED, Some(3))
    );
    let nested = format!("/v3/apps/{guid}/processes/web/actions/scale");
    let (status, _) = v3(
        &app,
        Method::POST,
        &nested,
        Some(json!({"disk_in_mb": 512})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = v3(&app, Method::POST, &scale, Some(json!({"instances": -1}))).await;
    assert_eq!(
        (status, error(&body).2),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Instances must be greater than or equal to 0"
        )
    );
    // Rule 5: restart while started: STOPPED then STARTED; rule 6: stop, then stop again.
    let (status, _) = v3(&app, Method::POST, &action("restart"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = v3(&app, Method::POST, &action("stop"), None).await;
    assert_eq!(body["state"], "STOPPED");
    let (_, _) = v3(&app, Method::POST, &action("stop"), None).await;
    let events = usage(&app).await;
    let tail: Vec<(&str, Value, i64, Value)> = events[staged..]
        .iter()
        .map(|(s, p, n, pn)| (s.as_str(), p.clone(), *n, pn.clone()))
        .collect();
    assert_eq!(
        tail,
        [
            ("STARTED", json!("STARTED"), 3, json!(1)),
            ("STOPPED", json!("STARTED"), 3, json!(3)),
            ("STARTED", json!("STOPPED"), 3, json!(3)),
            ("STOPPED", json!("STARTED"), 3, json!(3)),
        ]
    );
    let types = audit(&app, &guid).await;
    let after_staging = types.iter().position(|t| t == "audit.app.start").unwrap();
    assert_eq!(
        types[after_staging..],
        [
            "audit.app.start",
            "audit.app.process.scale",
            "audit.app.process.scale",
            "audit.app.restart",
            "audit.app.stop",
            "audit.app.stop",
        ]
    );
    // The v2 view follows.
    let (_, v2) = v3(&app, Method::GET, &format!("/v2/apps/{guid}"), None).await;
    assert_eq!(
        (
            v2["entity"]["state"].as_str(),
            v2["entity"]["instances"].as_i64(),
            v2["entity"]["disk_quota"].as_i64()
        ),
        (Some("STOPPED"), Some(3), Some(512))
    );
    // A process update: audit only, command shown on the single read.
    let (status, process) = v3(&app, Method::PATCH, &format!("/v3/processes/{guid}"), Some(json!({"command": "run", "health_check": {"type": "http", "data": {"endpoint": "/up"}}}))).await;
    assert_eq!(status, StatusCode::OK, "{process}");
    assert_eq!(
        (
            process["command"].as_str(),
            process["health_check"]["data"]["endpoint"].as_str()
        ),
        (Some("run"), Some("/up"))
    );
    assert_eq!(
        audit(&app, &guid).await.last().map(String::as_str),
        Some("audit.app.process.update")
    );
    assert_eq!(usage(&app).await.len(), events.len());
}

/// An empty zip: its end-of-central-directory record.
fn empty_zip() -> Vec<u8> {
    let mut zip = b"PK\x05\x06".to_vec();
    zip.extend([0u8; 18]);
    zip
}

#[tokio::test]
async fn the_v3_push_flow_stages_a_package_assigns_its_droplet_and_starts() {
    let app = spawn_app().await;
    let (_, space) = app.org_and_space().await;
    let body = json!({"name": "p", "relationships": {"space": {"data": {"guid": space}}}});
    let (_, created) = v3(&app, Method::POST, "/v3/apps", Some(body)).await;
    let guid = created["guid"].as_str().unwrap().to_owned();
    let rel = json!({"app": {"data": {"guid": guid}}});
    let (status, package) = v3(
        &app,
        Method::POST,
        "/v3/packages",
        Some(json!({"type": "bits", "relationships": rel})),
    )
    .await;
    assert_eq!(
        (status, package["state"].as_str()),
        (StatusCode::CREATED, Some("AWAITING_UPLOAD")),
        "{package}"
    );
    let package_guid = package["guid"].as_str().unwrap().to_owned();
    assert!(package["links"]["upload"]["href"]
        .as_str()
        .unwrap()
        .ends_with("/upload"));
    // Staging a package without bits is refused and writes nothing.
    let build = json!({"package": {"guid": package_guid}});
    let (status, body) = v3(&app, Method::POST, "/v3/builds", Some(build.clone())).await;
    assert_eq!(
        (status, error(&body).2),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Cannot stage package whose state is not ready."
        )
    );
    // The upload: field `bits`, READY.
    let form = reqwest::multipart::Form::new()
        .text("resources", "[]")
        .part(
            "bits",
            reqwest::multipart::Part::bytes(empty_zip()).file_name("app.zip"),
        );
    let response = app
        .request(
            Method::POST,
            &format!("/v3/packages/{package_guid}/upload"),
            "admin",
            crate::helpers::ADMIN,
        )
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!(uploaded["state"], "READY");
    assert_eq!(uploaded["data"]["checksum"]["type"], "sha256");
    // A second upload into the same package is refused.
    let form = reqwest::multipart::Form::new().part(
        "bits",
        reqwest::multipart::Part::bytes(empty_zip()).file_name("app.zip"),
    );
    let again = app
        .request(
            Method::POST,
            &format!("/v3/packages/{package_guid}/upload"),
            "admin",
            crate::helpers::ADMIN,
        )
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The build stages at once (immediate mode) and leaves the droplet unassigned.
    let (status, build) = v3(&app, Method::POST, "/v3/builds", Some(build)).await;
    assert_eq!(
        (status, build["state"].as_str()),
        (StatusCode::CREATED, Some("STAGED")),
        "{build}"
    );
    let (_, fetched) = v3(
        &app,
        Method::GET,
        &format!("/v3/builds/{}", build["guid"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(fetched["guid"], build["guid"]);
    let droplet = build["droplet"]["guid"].as_str().unwrap().to_owned();
    let (status, _) = v3(
        &app,
        Method::GET,
        &format!("/v3/apps/{guid}/droplets/current"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, droplets) = v3(
        &app,
        Method::GET,
        &format!("/v3/apps/{guid}/droplets"),
        None,
    )
    .await;
    assert_eq!(droplets["resources"][0]["guid"], droplet.as_str());
    // Staging events as CC's v3 build writes them: STAGING_STARTED, STAGING_STOPPED,
    // BUILDPACK_SET from the build (previous STAGED), none for the process.
    let staged = usage(&app).await;
    let states: Vec<(&str, &Value)> = staged.iter().map(|(s, p, ..)| (s.as_str(), p)).collect();
    assert_eq!(
        states,
        [
            ("STAGING_STARTED", &json!("STAGING")),
            ("STAGING_STOPPED", &json!("STAGING")),
            ("BUILDPACK_SET", &json!("STAGED")),
        ]
    );
    // Assign, then start: one STARTED for the web process.
    let path = format!("/v3/apps/{guid}/relationships/current_droplet");
    let (status, body) = v3(&app, Method::PATCH, &path, Some(json!({"data": null}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = v3(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"data": {"guid": guid}})),
    )
    .await;
    assert_eq!(
        (status, error(&body).2),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unable to assign current droplet. Ensure the droplet exists and belongs to this app."
        )
    );
    let (status, body) = v3(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"data": {"guid": droplet}})),
    )
    .await;
    assert_eq!(
        (status, &body["data"]["guid"]),
        (StatusCode::OK, &json!(droplet))
    );
    let (status, started) = v3(
        &app,
        Method::POST,
        &format!("/v3/apps/{guid}/actions/start"),
        None,
    )
    .await;
    assert_eq!(
        (status, started["state"].as_str()),
        (StatusCode::OK, Some("STARTED"))
    );
    let events = usage(&app).await;
    assert_eq!(events.len(), 4);
    assert_eq!(
        (events[3].0.as_str(), &events[3].1),
        ("STARTED", &json!("STOPPED"))
    );
    let (_, v2) = v3(&app, Method::GET, &format!("/v2/apps/{guid}"), None).await;
    assert_eq!(v2["entity"]["package_state"], "STAGED");
    assert_eq!(
        audit(&app, &guid).await,
        [
            "audit.app.process.create",
            "audit.app.create",
            "audit.app.package.create",
            "audit.app.package.upload",
            "audit.app.build.create",
            "audit.app.build.staged",
            "audit.app.droplet.mapped",
            "audit.app.start",
        ]
    );
}

/// Usage events of tasks: `(state, previous_state, task_guid)`.
async fn task_usage(app: &TestApp) -> Vec<(String, String, String)> {
    let (_, page) = v3(app, Method::GET, "/v3/app_usage_events?per_page=5000", None).await;
    page["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["task"]["guid"].is_string())
        .map(|e| {
            assert!(
                e["process"]["guid"].is_null() && e["process"]["type"].is_null(),
                "{e}"
            );
            (
                e["state"]["current"].as_str().unwrap().to_owned(),
                e["state"]["previous"].as_str().unwrap_or("").to_owned(),
                e["task"]["guid"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn docker_app(app: &TestApp, space: &str) -> String {
    let body =
        json!({"name": "t", "space_guid": space, "docker_image": "nginx", "state": "STARTED"});
    let (status, created) = v3(app, Method::POST, "/v2/apps", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["metadata"]["guid"].as_str().unwrap().to_owned()
}

async fn report(app: &TestApp, task: &str, body: Value) -> StatusCode {
    app.client
        .post(format!(
            "{}/internal/v4/tasks/{task}/completed",
            app.address
        ))
        .basic_auth("staging", Some("runtime-secret"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn tasks_start_stop_cancel_and_go_with_their_app_as_cc_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("TALLY_STAGING__TASK_SECONDS".to_owned(), "3600".to_owned()),
        (
            "TALLY_STAGING__CALLBACK_PASSWORD".to_owned(),
            "runtime-secret".to_owned(),
        ),
    ];
    let app = crate::helpers::spawn_app_in(dir, env).await;
    let (_, space) = app.org_and_space().await;
    let guid = docker_app(&app, &space).await;
    let tasks = format!("/v3/apps/{guid}/tasks");
    // Refused: no command; an unknown app.
    let (status, body) = v3(&app, Method::POST, &tasks, Some(json!({"name": "x"}))).await;
    assert_eq!(
        (status, error(&body).2),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Command No command or template provided"
        )
    );
    let (status, _) = v3(
        &app,
        Method::POST,
        "/v3/apps/00000000-0000-4000-8000-000000000000/tasks",
        Some(json!({"command": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Created RUNNING (202), with TASK_STARTED after the audit event.
    let (status, first) = v3(
        &app,
        Method::POST,
        &tasks,
        Some(json!({"command": "rake db:migrate", "name": "migrate", "memory_in_mb": 256})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(
        (
            first["state"].as_str(),
            first["sequence_id"].as_u64(),
            first["command"].as_str()
        ),
        (Some("RUNNING"), Some(1), Some("rake db:migrate"))
    );
    assert!(first["links"]["cancel"]["href"]
        .as_str()
        .unwrap()
        .ends_with("/actions/cancel"));
    let t1 = first["guid"].as_str().unwrap().to_owned();
    assert_eq!(
        task_usage(&app).await,
        [("TASK_STARTED".to_owned(), "PENDING".to_owned(), t1.clone())]
    );
    let (_, events) = v3(
        &app,
        Method::GET,
        "/v3/audit_events?types=audit.app.task.create",
        None,
    )
    .await;
    let data = &events["resources"][0]["data"];
    assert_eq!(
        (
            data["task_guid"].as_str(),
            data["request"]["command"].as_str()
        ),
        (Some(t1.as_str()), Some("[PRIVATE DATA HIDDEN]"))
    );
    // GET /v3/tasks never shows commands; the app's list shows them to who may read secrets.
    let (_, all) = v3(&app, Method::GET, "/v3/tasks", None).await;
    assert!(all["resources"][0].get("command").is_none(), "{all}");
    let (_, own) = v3(&app, Method::GET, &tasks, None).await;
    assert_eq!(own["resources"][0]["command"], "rake db:migrate");
    // The runtime reports a failure: TASK_STOPPED; a second report is CC's 400.
    assert_eq!(
        report(
            &app,
            &t1,
            json!({"failed": true, "failure_reason": "exit 1"})
        )
        .await,
        StatusCode::OK
    );
    let (_, ended) = v3(&app, Method::GET, &format!("/v3/tasks/{t1}"), None).await;
    assert_eq!(
        (
            ended["state"].as_str(),
            ended["result"]["failure_reason"].as_str()
        ),
        (Some("FAILED"), Some("exit 1"))
    );
    assert_eq!(
        report(&app, &t1, json!({"failed": false})).await,
        StatusCode::BAD_REQUEST
    );
    let (status, body) = v3(
        &app,
        Method::POST,
        &format!("/v3/tasks/{t1}/actions/cancel"),
        None,
    )
    .await;
    assert_eq!(
        (status, error(&body).2),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Task state is FAILED and therefore cannot be canceled"
        )
    );
    // Cancel: CANCELING at once; tally's task clock ends it FAILED with TASK_STOPPED.
    let (_, second) = v3(
        &app,
        Method::POST,
        &tasks,
        Some(json!({"command": "sleep 100"})),
    )
    .await;
    let t2 = second["guid"].as_str().unwrap().to_owned();
    assert_eq!(second["sequence_id"], 2);
    let (status, canceling) = v3(
        &app,
        Method::POST,
        &format!("/v3/tasks/{t2}/actions/cancel"),
        None,
    )
    .await;
    assert_eq!(
        (status, canceling["state"].as_str()),
        (StatusCode::ACCEPTED, Some("CANCELING"))
    );
    let mut state = String::new();
    for _ in 0..100 {
        let (_, now) = v3(&app, Method::GET, &format!("/v3/tasks/{t2}"), None).await;
        state = now["state"].as_str().unwrap().to_owned();
        if state == "FAILED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state, "FAILED");
    // A task running across a purge has no TASK_STARTED any more, so no TASK_STOPPED.
    let (_, third) = v3(
        &app,
        Method::POST,
        &tasks,
        Some(json!({"command": "sleep 100"})),
    )
    .await;
    let t3 = third["guid"].as_str().unwrap().to_owned();
    app.purge().await;
    assert!(
        task_usage(&app).await.is_empty(),
        "reseed writes no task events"
    );
    assert_eq!(
        report(&app, &t3, json!({"failed": false})).await,
        StatusCode::OK
    );
    assert!(task_usage(&app).await.is_empty());
    // The app's delete: the running task's cancel, its TASK_STOPPED, then the process's.
    let (_, fourth) = v3(
        &app,
        Method::POST,
        &tasks,
        Some(json!({"command": "sleep 100"})),
    )
    .await;
    let t4 = fourth["guid"].as_str().unwrap().to_owned();
    let (status, _) = v3(&app, Method::DELETE, &format!("/v3/apps/{guid}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let usage = task_usage(&app).await;
    assert_eq!(
        usage.last(),
        Some(&("TASK_STOPPED".to_owned(), "RUNNING".to_owned(), t4.clone()))
    );
    let all = audit(&app, &guid).await;
    assert_eq!(
        all[all.len() - 3..],
        [
            "audit.app.task.cancel",
            "audit.app.process.delete",
            "audit.app.delete-request"
        ]
    );
    let (status, _) = v3(&app, Method::GET, &format!("/v3/tasks/{t4}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, left) = v3(&app, Method::GET, "/v3/tasks", None).await;
    assert_eq!(left["pagination"]["total_results"], 0);
    // The table on disk (tasks included) is the table the log replays to.
    let data_dir = app.data_dir.clone();
    let _dir = app.stop().await;
    let (ok, printed) = crate::helpers::verify(&data_dir);
    assert!(ok, "{printed}");
}

#[tokio::test]
async fn by_default_an_immediate_task_succeeds_in_the_request_that_creates_it() {
    let app = spawn_app().await;
    let (_, space) = app.org_and_space().await;
    let guid = docker_app(&app, &space).await;
    let (status, task) = v3(
        &app,
        Method::POST,
        &format!("/v3/apps/{guid}/tasks"),
        Some(json!({"command": "true"})),
    )
    .await;
    assert_eq!(
        (status, task["state"].as_str()),
        (StatusCode::ACCEPTED, Some("SUCCEEDED"))
    );
    let t = task["guid"].as_str().unwrap().to_owned();
    assert_eq!(
        task_usage(&app).await,
        [
            ("TASK_STARTED".to_owned(), "PENDING".to_owned(), t.clone()),
            ("TASK_STOPPED".to_owned(), "RUNNING".to_owned(), t),
        ]
    );
}

/// Usage events as `(state, app_guid, process_type, instances)`, the columns that say which
/// process is billed.
async fn billed(app: &TestApp) -> Vec<(String, String, String, i64)> {
    let (_, page) = v3(app, Method::GET, "/v3/app_usage_events?per_page=5000", None).await;
    page["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["process"]["type"].is_string())
        .map(|e| {
            (
                e["state"]["current"].as_str().unwrap().to_owned(),
                e["process"]["guid"].as_str().unwrap_or("").to_owned(),
                e["process"]["type"].as_str().unwrap_or("").to_owned(),
                e["instance_count"]["current"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// A v3 app with bits whose build an external runtime is staging; its guid and the build's.
async fn staging_v3_app(app: &TestApp, space: &str) -> (String, String) {
    let body = json!({"name": "procs", "relationships": {"space": {"data": {"guid": space}}}});
    let (_, created) = v3(app, Method::POST, "/v3/apps", Some(body)).await;
    let guid = created["guid"].as_str().unwrap().to_owned();
    let rel = json!({"app": {"data": {"guid": guid}}});
    let (_, package) = v3(
        app,
        Method::POST,
        "/v3/packages",
        Some(json!({"type": "bits", "relationships": rel})),
    )
    .await;
    let package = package["guid"].as_str().unwrap().to_owned();
    let form = reqwest::multipart::Form::new().part(
        "bits",
        reqwest::multipart::Part::bytes(empty_zip()).file_name("app.zip"),
    );
    let uploaded = app
        .request(
            Method::POST,
            &format!("/v3/packages/{package}/upload"),
            "admin",
            crate::helpers::ADMIN,
        )
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), StatusCode::OK);
    let build = json!({"package": {"guid": package}});
    let (status, build) = v3(app, Method::POST, "/v3/builds", Some(build)).await;
    assert_eq!(
        (status, build["state"].as_str()),
        (StatusCode::CREATED, Some("STAGING")),
        "{build}"
    );
    (guid, build["guid"].as_str().unwrap().to_owned())
}

async fn staging_report(app: &TestApp, build: &str, body: Value) -> StatusCode {
    app.client
        .post(format!(
            "{}/internal/v3/staging/{build}/build_completed",
            app.address
        ))
        .basic_auth("staging", Some("runtime-secret"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

fn external_staging() -> Vec<(String, String)> {
    vec![
        ("TALLY_STAGING__MODE".to_owned(), "external".to_owned()),
        (
            "TALLY_STAGING__CALLBACK_PASSWORD".to_owned(),
            "runtime-secret".to_owned(),
        ),
    ]
}

#[tokio::test]
async fn a_droplets_worker_type_is_a_process_of_its_own_billed_under_its_own_guid() {
    let app = crate::helpers::spawn_app_in(tempfile::tempdir().unwrap(), external_staging()).await;
    let (_, space) = app.org_and_space().await;
    let (guid, build) = staging_v3_app(&app, &space).await;
    // A report naming a type tally cannot keep is refused and changes nothing.
    let bad = json!({"result": {"process_types": {"web": "rackup", "": "x"}}});
    assert_eq!(
        staging_report(&app, &build, bad).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (_, listed) = v3(
        &app,
        Method::GET,
        &format!("/v3/apps/{guid}/processes"),
        None,
    )
    .await;
    assert_eq!(listed["pagination"]["total_results"], 1);
    let report = json!({"result": {"lifecycle_metadata": {"detected_buildpack": "ruby_buildpack"},
                                   "process_types": {"web": "rackup", "worker": "bin/work"}}});
    assert_eq!(staging_report(&app, &build, report).await, StatusCode::OK);
    // The droplet names both types; the app has both processes, web first.
    let (_, build) = v3(&app, Method::GET, &format!("/v3/builds/{build}"), None).await;
    let droplet = build["droplet"]["guid"].as_str().unwrap().to_owned();
    let (_, shown) = v3(&app, Method::GET, &format!("/v3/droplets/{droplet}"), None).await;
    assert_eq!(
        shown["process_types"],
        json!({"web": "rackup", "worker": "bin/work"})
    );
    let (_, listed) = v3(
        &app,
        Method::GET,
        &format!("/v3/apps/{guid}/processes"),
        None,
    )
    .await;
    let types: Vec<&str> = listed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["web", "worker"]);
    let path = format!("/v3/apps/{guid}/processes/worker");
    let (status, worker) = v3(&app, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{worker}");
    let worker_guid = worker["guid"].as_str().unwrap().to_owned();
    assert_ne!(worker_guid, guid);
    assert_eq!(
        (
            &worker["instances"],
            &worker["command"],
            &worker["health_check"]["type"]
        ),
        (&json!(0), &json!("bin/work"), &json!("process"))
    );
    assert_eq!(
        worker["relationships"]["app"]["data"]["guid"],
        guid.as_str()
    );
    let (status, by_guid) = v3(
        &app,
        Method::GET,
        &format!("/v3/processes/{worker_guid}"),
        None,
    )
    .await;
    assert_eq!(
        (status, &by_guid["type"]),
        (StatusCode::OK, &json!("worker"))
    );
    let (_, workers) = v3(&app, Method::GET, "/v3/processes?types=worker", None).await;
    assert_eq!(workers["pagination"]["total_results"], 1);
    assert_eq!(workers["resources"][0]["guid"], worker_guid.as_str());
    let (_, by_guids) = v3(
        &app,
        Method::GET,
        &format!("/v3/processes?guids={worker_guid}"),
        None,
    )
    .await;
    assert_eq!(by_guids["pagination"]["total_results"], 1);
    // The worker is not an app: v2 does not know it.
    let (status, _) = v3(&app, Method::GET, &format!("/v2/apps/{worker_guid}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = v3(
        &app,
        Method::GET,
        &format!("/v3/apps/{guid}/processes/clock"),
        None,
    )
    .await;
    assert_eq!(
        (status, error(&body).2),
        (StatusCode::NOT_FOUND, "Process not found")
    );
    // Scaled while stopped (the CLI's route): nothing billed yet.
    let scale = format!("{path}/actions/scale");
    let (status, scaled) = v3(&app, Method::POST, &scale, Some(json!({"instances": 2}))).await;
    assert_eq!(
        (status, &scaled["instances"]),
        (StatusCode::ACCEPTED, &json!(2))
    );
    assert!(billed(&app).await.is_empty());
    // Assign and start: one STARTED per process, each under its own guid.
    let current = format!("/v3/apps/{guid}/relationships/current_droplet");
    let (status, _) = v3(
        &app,
        Method::PATCH,
        &current,
        Some(json!({"data": {"guid": droplet}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = v3(
        &app,
        Method::POST,
        &format!("/v3/apps/{guid}/actions/start"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let started = |process: &str, kind: &str, n: i64| {
        ("STARTED".to_owned(), process.to_owned(), kind.to_owned(), n)
    };
    assert_eq!(
        billed(&app).await,
        [started(&guid, "web", 1), started(&worker_guid, "worker", 2)]
    );
    // Scaled while started (the process route): billed as the web process's scale is.
    let scale = format!("/v3/processes/{worker_guid}/actions/scale");
    let (status, _) = v3(&app, Method::POST, &scale, Some(json!({"instances": 3}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        billed(&app).await.last(),
        Some(&started(&worker_guid, "worker", 3))
    );
    // Bad input is CC's 422 and changes nothing.
    let (status, body) = v3(&app, Method::POST, &scale, Some(json!({"instances": -1}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // It survives a restart (the log and the table checkpoint both hold it).
    let dir = app.stop().await;
    let (ok, report) = crate::helpers::verify(&dir.path().join("data"));
    assert!(ok, "{report}");
    let app = crate::helpers::spawn_app_in(dir, external_staging()).await;
    let (_, again) = v3(
        &app,
        Method::GET,
        &format!("/v3/processes/{worker_guid}"),
        None,
    )
    .await;
    assert_eq!(again["instances"], 3);
    // Purge-and-reseed: one STARTED per started process, the reseeded event's guid the process's.
    app.purge().await;
    let (_, page) = v3(
        &app,
        Method::GET,
        "/v3/app_usage_events?per_page=5000",
        None,
    )
    .await;
    let seeded: Vec<(&str, &str, i64)> = page["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["guid"].as_str().unwrap(),
                e["process"]["type"].as_str().unwrap_or(""),
                e["instance_count"]["current"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seeded,
        [
            (guid.as_str(), "web", 1),
            (worker_guid.as_str(), "worker", 3)
        ]
    );
    // Deleting the app deletes the worker, with its audit event and its STOPPED.
    let (status, _) = v3(&app, Method::DELETE, &format!("/v3/apps/{guid}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = v3(
        &app,
        Method::GET,
        &format!("/v3/processes/{worker_guid}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stopped: Vec<(String, String)> = billed(&app)
        .await
        .into_iter()
        .filter(|(state, ..)| state == "STOPPED")
        .map(|(_, process, kind, _)| (process, kind))
        .collect();
    assert_eq!(
        stopped,
        [
            (worker_guid.clone(), "worker".to_owned()),
            (guid.clone(), "web".to_owned())
        ]
    );
    let deletes = audit(&app, &guid)
        .await
        .into_iter()
        .filter(|t| t == "audit.app.process.delete")
        .count();
    assert_eq!(deletes, 2);
}
