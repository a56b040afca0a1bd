//! `GET /`, `GET /v2/info`, health, and what every response carries.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn root_links_point_at_this_tally_and_the_uaa() {
    let app = spawn_app().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let links = &body["links"];
    assert_eq!(links["self"]["href"], app.address.as_str());
    assert_eq!(
        links["cloud_controller_v2"]["href"],
        format!("{}/v2", app.address).as_str()
    );
    assert_eq!(
        links["cloud_controller_v3"]["href"],
        format!("{}/v3", app.address).as_str()
    );
    assert_eq!(links["uaa"]["href"], "http://localhost:8080/uaa");
    assert_eq!(links["login"]["href"], "http://localhost:8080/uaa");
    for null in [
        "bits_service",
        "credhub",
        "routing",
        "logging",
        "network_policy_v0",
        "network_policy_v1",
        "app_ssh",
    ] {
        assert!(links[null].is_null(), "{null}");
    }
    app.stop().await;
}

#[tokio::test]
async fn v2_info_has_the_keys_clients_read() {
    let app = spawn_app().await;
    let body: Value = app.get("/v2/info").await.json().await.unwrap();
    assert_eq!(body["authorization_endpoint"], "http://localhost:8080/uaa");
    assert_eq!(body["token_endpoint"], "http://localhost:8080/uaa");
    assert_eq!(body["api_version"], "2.186.0");
    for key in [
        "app_ssh_endpoint",
        "app_ssh_host_key_fingerprint",
        "app_ssh_oauth_client",
        "doppler_logging_endpoint",
    ] {
        assert!(body.as_object().unwrap().contains_key(key), "{key}");
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_get_ccs_404_with_request_id_and_nosniff() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/v2/apps_nope", app.address))
        .header("X-Vcap-Request-Id", "client/id 7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let id = response.headers()["x-vcap-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("clientid7::"), "{id}");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], "CF-NotFound");
    assert_eq!(body["code"], 10000);
    assert_eq!(body["description"], "Unknown request");
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.text().await.unwrap(), "ok");
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(
        (
            ready["status"].as_str(),
            ready["head"].as_u64(),
            ready["epoch"].as_u64()
        ),
        (Some("ready"), Some(0), Some(1))
    );
    app.stop().await;
}
