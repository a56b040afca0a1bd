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
        "network_policy_v0",
        "network_policy_v1",
    ] {
        assert!(links[null].is_null(), "{null}");
    }
    // Derived from the system domain (the external URL's host): 127.0.0.1 here.
    assert_eq!(links["logging"]["href"], "wss://doppler.127.0.0.1:443");
    assert_eq!(links["app_ssh"]["href"], "ssh.127.0.0.1:2222");
    assert_eq!(links["app_ssh"]["meta"]["oauth_client"], "ssh-proxy");
    app.stop().await;
}

#[tokio::test]
async fn v2_info_has_the_keys_clients_read() {
    let app = spawn_app().await;
    let body: Value = app.get("/v2/info").await.json().await.unwrap();
    assert_eq!(body["authorization_endpoint"], "http://localhost:8080/uaa");
    assert_eq!(body["token_endpoint"], "http://localhost:8080/uaa");
    assert_eq!(body["api_version"], "2.186.0");
    // Strings, never null: real clients refuse a null (PyPI `cf-api` a null doppler endpoint).
    assert_eq!(
        body["doppler_logging_endpoint"],
        "wss://doppler.127.0.0.1:443"
    );
    assert_eq!(body["app_ssh_endpoint"], "ssh.127.0.0.1:2222");
    assert_eq!(body["app_ssh_host_key_fingerprint"], "");
    assert_eq!(body["app_ssh_oauth_client"], "ssh-proxy");
    app.stop().await;
}

#[tokio::test]
async fn info_endpoints_are_configurable_and_derive_from_the_system_domain() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        (
            "TALLY_SERVER__EXTERNAL_URL".to_owned(),
            "https://api.sys.example.org".to_owned(),
        ),
        (
            "TALLY_INFO__APP_SSH_HOST_KEY_FINGERPRINT".to_owned(),
            "a6:14:c0:ea:42:07:b2:f7:53:2c:0b:60:e0:00:21:6c".to_owned(),
        ),
    ];
    let app = crate::helpers::spawn_app_in(dir, env).await;
    let body: Value = app.get("/v2/info").await.json().await.unwrap();
    assert_eq!(
        body["doppler_logging_endpoint"],
        "wss://doppler.sys.example.org:443"
    );
    assert_eq!(body["app_ssh_endpoint"], "ssh.sys.example.org:2222");
    assert_eq!(
        body["app_ssh_host_key_fingerprint"],
        "a6:14:c0:ea:42:07:b2:f7:53:2c:0b:60:e0:00:21:6c"
    );
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
