//! Roles through the real server: given, listed, kept across a restart; RS256 tokens checked
//! against a UAA `token_keys` endpoint served by the test.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_in, write_history, ADMIN};

const ORG: &str = "00000000-0000-0000-0000-000000000001";
const SPACE: &str = "00000000-0000-0000-0000-000000000002";

#[tokio::test]
async fn roles_given_over_http_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_history(&dir.path().join("data"), 0).await;
    let app = spawn_app_in(dir, Vec::new()).await;
    for path in [
        format!("/v2/organizations/{ORG}/users/alice"),
        format!("/v2/spaces/{SPACE}/developers/alice"),
    ] {
        let response = app
            .request(Method::PUT, &path, "admin", ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{path}");
        assert_eq!(response.headers()["x-user-guid"], "admin");
    }
    // alice, a developer now, may list her space's developers with a read token.
    let list = app
        .request(
            Method::GET,
            &format!("/v2/spaces/{SPACE}/developers"),
            "alice",
            &["cloud_controller.read"],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    let dir = app.stop().await;
    let app = spawn_app_in(dir, Vec::new()).await;
    let list: Value = app
        .request(
            Method::GET,
            &format!("/v2/spaces/{SPACE}/developers"),
            "admin",
            ADMIN,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total_results"], 1);
    assert_eq!(list["resources"][0]["metadata"]["guid"], "alice");
    app.stop().await;
}

#[tokio::test]
async fn rs256_tokens_are_checked_against_the_uaa_token_keys() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let public = std::fs::read_to_string(format!(
        "{manifest}/crates/tally-http/testdata/test_rsa.pub.pem"
    ))
    .unwrap();
    let private = std::fs::read(format!(
        "{manifest}/crates/tally-http/testdata/test_rsa.pem"
    ))
    .unwrap();
    let uaa =
        axum::Router::new().route(
            "/token_keys",
            axum::routing::get(move || {
                let public = public.clone();
                async move {
                    axum::Json(json!({"keys": [{"kty": "RSA", "kid": "k1", "value": public}]}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let keys_url = format!("http://{}/token_keys", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, uaa).await });

    let dir = tempfile::tempdir().unwrap();
    write_history(&dir.path().join("data"), 0).await;
    let app = spawn_app_in(dir, vec![("TALLY_AUTH__TOKEN_KEYS_URL".into(), keys_url)]).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"user_id": "rsa-admin", "scope": ["cloud_controller.admin"], "aud": ["cloud_controller"], "exp": exp, "jti": "j"});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let response = app
        .client
        .get(format!("{}/v2/organizations/{ORG}/users", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-user-guid"], "rsa-admin");
    // With a key URL configured, no development secret is made: HS256 has no key.
    assert!(!app.data_dir.join("auth").exists());
    let forged = app
        .client
        .get(format!("{}/v2/organizations/{ORG}/users", app.address))
        .bearer_auth(forge(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error_code"], "CF-InvalidAuthToken");
    app.stop().await;
}

/// The token with one signature character changed.
fn forge(token: &str) -> String {
    let at = token.rfind('.').unwrap() + 10;
    let replacement = if &token[at..=at] == "A" { "B" } else { "A" };
    format!("{}{replacement}{}", &token[..at], &token[at + 1..])
}
