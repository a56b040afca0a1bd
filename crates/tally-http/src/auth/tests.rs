//! Every kind of token a client may send, and what CC answers to it (reference §8.1).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const SECRET: &[u8] = b"tally-test-secret";
const OLD_SECRET: &[u8] = b"the-secret-before-rotation";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn pem(name: &str) -> String {
    std::fs::read_to_string(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn verifier() -> TokenVerifier {
    TokenVerifier::new(AuthSettings {
        hmac_secrets: vec![SECRET.to_vec(), OLD_SECRET.to_vec()],
        rsa_public_keys_pem: vec![pem("test_rsa.pub.pem")],
        audience: "cloud_controller".into(),
        issuer: None,
        leeway_seconds: 5,
        token_keys_url: None,
    })
    .unwrap()
}

fn claims(scopes: &[&str]) -> Value {
    json!({
        "user_id": "uaa-id-107",
        "email": "email-89@somedomain.com",
        "user_name": "user-89",
        "scope": scopes,
        "aud": ["cloud_controller"],
        "exp": now() + 600,
        "jti": "abc123",
    })
}

fn hs(alg: Algorithm, claims: &Value, secret: &[u8]) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn rs(alg: Algorithm, claims: &Value, key: &str) -> String {
    encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_rsa_pem(pem(key).as_bytes()).unwrap(),
    )
    .unwrap()
}

fn bearer(token: &str) -> String {
    format!("bearer {token}")
}

fn invalid(result: Result<Identity, AuthError>) -> bool {
    matches!(result, Err(AuthError::Invalid(_)))
}

#[test]
fn hmac_tokens_of_every_allowed_algorithm_are_accepted_with_roles() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = hs(alg, &claims(&["cloud_controller.admin", "openid"]), SECRET);
        let identity = verifier().verify(Some(&bearer(&token))).unwrap();
        assert_eq!(identity.id, "uaa-id-107");
        assert!(!identity.is_client);
        assert_eq!(identity.email.as_deref(), Some("email-89@somedomain.com"));
        assert_eq!(identity.roles, [Role::Admin].into_iter().collect());
    }
}

#[test]
fn rsa_tokens_with_a_configured_public_key_are_accepted() {
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        let token = rs(
            alg,
            &claims(&["cloud_controller.read", "cloud_controller.write"]),
            "test_rsa.pem",
        );
        let identity = verifier().verify(Some(&bearer(&token))).unwrap();
        assert!(
            identity.has(Role::Read) && identity.has(Role::Write) && !identity.has(Role::Admin)
        );
    }
    let forged = rs(
        Algorithm::RS256,
        &claims(&["cloud_controller.admin"]),
        "other_rsa.pem",
    );
    assert!(invalid(verifier().verify(Some(&bearer(&forged)))));
}

#[test]
fn a_rotated_secret_still_verifies_and_a_wrong_one_does_not() {
    let old = hs(Algorithm::HS256, &claims(&[]), OLD_SECRET);
    assert!(verifier().verify(Some(&bearer(&old))).is_ok());
    let wrong = hs(Algorithm::HS256, &claims(&[]), b"not-our-secret");
    assert!(invalid(verifier().verify(Some(&bearer(&wrong)))));
}

#[test]
fn missing_header_and_other_schemes_are_not_authenticated() {
    assert_eq!(verifier().verify(None), Err(AuthError::Missing));
    assert_eq!(
        verifier().verify(Some("Basic dXNlcjpwdw==")),
        Err(AuthError::Missing)
    );
    let token = hs(Algorithm::HS256, &claims(&[]), SECRET);
    assert_eq!(
        verifier().verify(Some(&token)),
        Err(AuthError::Missing),
        "a bare JWT has no scheme"
    );
}

#[test]
fn the_scheme_is_case_insensitive() {
    let token = hs(Algorithm::HS256, &claims(&[]), SECRET);
    for scheme in ["bearer", "Bearer", "BEARER"] {
        assert!(
            verifier()
                .verify(Some(&format!("{scheme} {token}")))
                .is_ok(),
            "{scheme}"
        );
    }
}

#[test]
fn every_defect_is_an_invalid_token() {
    let v = verifier();
    let expired = hs(
        Algorithm::HS256,
        &json!({"user_id": "u", "aud": ["cloud_controller"], "exp": now() - 60}),
        SECRET,
    );
    let not_yet = hs(
        Algorithm::HS256,
        &json!({"user_id": "u", "aud": ["cloud_controller"], "exp": now() + 600, "nbf": now() + 300}),
        SECRET,
    );
    let wrong_audience = hs(
        Algorithm::HS256,
        &json!({"user_id": "u", "aud": ["uaa"], "exp": now() + 600}),
        SECRET,
    );
    let no_exp = hs(
        Algorithm::HS256,
        &json!({"user_id": "u", "aud": ["cloud_controller"]}),
        SECRET,
    );
    let refresh = hs(
        Algorithm::HS256,
        &json!({"user_id": "u", "aud": ["cloud_controller"], "exp": now() + 600, "jti": "abc-r"}),
        SECRET,
    );
    let nobody = hs(
        Algorithm::HS256,
        &json!({"aud": ["cloud_controller"], "exp": now() + 600}),
        SECRET,
    );
    let valid = hs(Algorithm::HS256, &claims(&[]), SECRET);
    let truncated = &valid[..valid.len() - 10];
    // alg "none": header {"alg":"none","typ":"JWT"}, no signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ1c2VyX2lkIjoidSIsImF1ZCI6WyJjbG91ZF9jb250cm9sbGVyIl0sImV4cCI6OTk5OTk5OTk5OX0.";
    // The token of the seed documents: HS256, another secret, expired in 2014.
    let seed = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoidWFhLWlkLTEwNyIsImVtYWlsIjoiZW1haWwtODlAc29tZWRvbWFpbi5jb20iLCJzY29wZSI6WyJjbG91ZF9jb250cm9sbGVyLmFkbWluIl0sImF1ZCI6WyJjbG91ZF9jb250cm9sbGVyIl0sImV4cCI6MTQwMzgyODM0Nn0.XbuB6Idj7kMo-xPwklbvOem7TyMdrQgUmw-evttQ670";
    for (name, token) in [
        ("expired", expired.as_str()),
        ("not yet valid", not_yet.as_str()),
        ("wrong audience", wrong_audience.as_str()),
        ("no exp", no_exp.as_str()),
        ("refresh token", refresh.as_str()),
        ("no user or client id", nobody.as_str()),
        ("truncated", truncated),
        ("alg none", none),
        ("garbage", "not.a.jwt"),
        ("seed document token", seed),
    ] {
        assert!(
            invalid(v.verify(Some(&bearer(token)))),
            "{name} was accepted"
        );
    }
    assert!(invalid(v.verify(Some("bearer"))), "bearer without a token");
    assert!(
        invalid(v.verify(Some(&format!("bearer {valid} extra")))),
        "three parts"
    );
}

#[test]
fn expiry_has_a_small_leeway() {
    let just_expired = hs(
        Algorithm::HS256,
        &json!({"user_id": "u", "aud": ["cloud_controller"], "exp": now() - 2}),
        SECRET,
    );
    assert!(verifier().verify(Some(&bearer(&just_expired))).is_ok());
}

#[test]
fn client_tokens_identify_the_client_and_the_issuer_is_checked_when_set() {
    let client = hs(
        Algorithm::HS256,
        &json!({"client_id": "billing", "aud": ["cloud_controller"], "exp": now() + 600, "iss": "https://uaa.example.com/oauth/token", "scope": ["cloud_controller.global_auditor"]}),
        SECRET,
    );
    let identity = verifier().verify(Some(&bearer(&client))).unwrap();
    assert_eq!(
        (identity.id.as_str(), identity.is_client),
        ("billing", true)
    );
    assert!(identity.has(Role::GlobalAuditor));
    let strict = TokenVerifier::new(AuthSettings {
        hmac_secrets: vec![SECRET.to_vec()],
        audience: "cloud_controller".into(),
        issuer: Some("https://uaa.other.com/oauth/token".into()),
        ..AuthSettings::default()
    })
    .unwrap();
    assert!(invalid(strict.verify(Some(&bearer(&client)))));
}

#[test]
fn an_hmac_token_is_refused_when_only_rsa_keys_are_configured() {
    let rsa_only = TokenVerifier::new(AuthSettings {
        rsa_public_keys_pem: vec![pem("test_rsa.pub.pem")],
        audience: "cloud_controller".into(),
        ..AuthSettings::default()
    })
    .unwrap();
    let token = hs(Algorithm::HS256, &claims(&[]), SECRET);
    assert!(invalid(rsa_only.verify(Some(&bearer(&token)))));
}

#[test]
fn secrets_never_show_in_debug_output() {
    let settings = AuthSettings {
        hmac_secrets: vec![SECRET.to_vec()],
        ..AuthSettings::default()
    };
    assert!(!format!("{settings:?}").contains("tally-test-secret"));
}

/// A UAA stand-in serving `GET /token_keys` with whatever keys the test puts there, counting
/// the fetches.
struct FakeUaa {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn fake_uaa(pems: &[&str]) -> FakeUaa {
    use std::sync::atomic::Ordering;
    let keys = std::sync::Arc::new(std::sync::Mutex::new(
        pems.iter().map(|name| pem(name)).collect::<Vec<_>>(),
    ));
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (served, counted) = (keys.clone(), hits.clone());
    let app = axum::Router::new().route(
        "/token_keys",
        axum::routing::get(move || {
            let served = served.clone();
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let keys: Vec<Value> = served
                    .lock()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, pem)| {
                        json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": format!("key-{i}"), "value": pem})
                    })
                    .collect();
                axum::Json(json!({ "keys": keys }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token_keys", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeUaa { url, keys, hits }
}

impl FakeUaa {
    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn remote_verifier(url: &str, pems: &[&str]) -> TokenVerifier {
    TokenVerifier::new(AuthSettings {
        hmac_secrets: vec![SECRET.to_vec()],
        rsa_public_keys_pem: pems.iter().map(|name| pem(name)).collect(),
        audience: "cloud_controller".into(),
        issuer: None,
        leeway_seconds: 5,
        token_keys_url: Some(url.to_owned()),
    })
    .unwrap()
}

#[tokio::test]
async fn rsa_tokens_verify_against_the_token_keys_endpoint_cached_and_rotated() {
    let uaa = fake_uaa(&["test_rsa.pub.pem"]).await;
    let verifier = remote_verifier(&uaa.url, &[]);
    let token = rs(
        Algorithm::RS256,
        &claims(&["cloud_controller.read"]),
        "test_rsa.pem",
    );
    let identity = verifier.authenticate(Some(&bearer(&token))).await.unwrap();
    assert_eq!(identity.id, "uaa-id-107");
    assert_eq!(uaa.hits(), 1);
    // Cached: no second fetch within 30 s.
    verifier.authenticate(Some(&bearer(&token))).await.unwrap();
    assert_eq!(uaa.hits(), 1);
    // UAA rotates to a new key: the first token signed with it fails against the cache, the
    // keys are fetched again once, and it verifies.
    *uaa.keys.lock().unwrap() = vec![pem("other_rsa.pub.pem")];
    let rotated = rs(Algorithm::RS512, &claims(&[]), "other_rsa.pem");
    verifier
        .authenticate(Some(&bearer(&rotated)))
        .await
        .unwrap();
    assert_eq!(uaa.hits(), 2);
    // The retired key no longer verifies; forged tokens force at most one fetch per 5 s.
    assert!(invalid(verifier.authenticate(Some(&bearer(&token))).await));
    assert!(invalid(verifier.authenticate(Some(&bearer(&token))).await));
    assert_eq!(
        uaa.hits(),
        2,
        "the forced fetch of the rotation was too recent"
    );
    // HMAC tokens never ask UAA.
    let hmac = hs(Algorithm::HS256, &claims(&[]), SECRET);
    verifier.authenticate(Some(&bearer(&hmac))).await.unwrap();
    assert_eq!(uaa.hits(), 2);
    // Token problems that no key can fix are not retried: expired.
    let mut old = claims(&[]);
    old["exp"] = json!(now() - 60);
    let expired = rs(Algorithm::RS256, &old, "other_rsa.pem");
    assert!(invalid(
        verifier.authenticate(Some(&bearer(&expired))).await
    ));
    assert_eq!(uaa.hits(), 2);
}

#[tokio::test]
async fn an_unreachable_uaa_without_other_keys_is_uaa_unavailable() {
    // Port 0, which nothing can listen on: connecting is refused at once. (A port freed by
    // this test could be taken by another test's UAA running beside it.)
    let url = "http://127.0.0.1:0/token_keys".to_owned();
    let token = rs(Algorithm::RS256, &claims(&[]), "test_rsa.pem");
    let verifier = remote_verifier(&url, &[]);
    assert_eq!(
        verifier.authenticate(Some(&bearer(&token))).await,
        Err(AuthError::Unavailable)
    );
    // HMAC tokens do not need UAA.
    let hmac = hs(Algorithm::HS256, &claims(&[]), SECRET);
    assert!(verifier.authenticate(Some(&bearer(&hmac))).await.is_ok());
    // With a configured PEM key, RSA tokens verify without UAA.
    let verifier = remote_verifier(&url, &["test_rsa.pub.pem"]);
    assert!(verifier.authenticate(Some(&bearer(&token))).await.is_ok());
    // A missing header is still "missing", not "unavailable".
    assert_eq!(verifier.authenticate(None).await, Err(AuthError::Missing));
}

#[test]
fn a_token_keys_url_must_be_http() {
    let settings = |url: &str| AuthSettings {
        token_keys_url: Some(url.to_owned()),
        ..AuthSettings::default()
    };
    assert!(TokenVerifier::new(settings("ftp://uaa/token_keys")).is_err());
    assert!(TokenVerifier::new(settings("not a url")).is_err());
    assert!(TokenVerifier::new(settings("https://uaa.example.com/token_keys")).is_ok());
}

#[test]
fn unknown_critical_headers_and_identities_with_control_characters_are_refused() {
    let v = verifier();
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp-ext".into()]);
    let token = encode(&header, &claims(&[]), &EncodingKey::from_secret(SECRET)).unwrap();
    assert!(invalid(v.verify(Some(&bearer(&token)))));
    // An empty `crit` names nothing to understand.
    header.crit = Some(Vec::new());
    let token = encode(&header, &claims(&[]), &EncodingKey::from_secret(SECRET)).unwrap();
    assert!(v.verify(Some(&bearer(&token))).is_ok());
    for (claim, value) in [
        ("user_id", "uaa\r\nX-Admin: yes".to_owned()),
        ("user_id", "uaa\0id".to_owned()),
        ("user_id", String::new()),
        ("user_id", "u".repeat(256)),
        ("email", "a\n@b.c".to_owned()),
        ("user_name", "n".repeat(256)),
    ] {
        let mut c = claims(&[]);
        c[claim] = json!(value);
        let token = hs(Algorithm::HS256, &c, SECRET);
        assert!(
            invalid(v.verify(Some(&bearer(&token)))),
            "{claim}: {value:?}"
        );
    }
    let mut c = claims(&[]);
    c["user_id"] = json!("u".repeat(255));
    assert!(v
        .verify(Some(&bearer(&hs(Algorithm::HS256, &c, SECRET))))
        .is_ok());
}

fn trusted(identity: &str, exp: f64, verified: std::time::Instant) -> std::sync::Arc<Trusted> {
    std::sync::Arc::new(Trusted {
        identity: Identity {
            id: identity.to_owned(),
            is_client: false,
            email: None,
            user_name: None,
            roles: HashSet::new(),
        },
        exp,
        nbf: None,
        verified,
        keys: None,
    })
}

#[tokio::test]
async fn a_token_that_verified_is_taken_again_only_while_it_holds() {
    let verifier = verifier();
    let token = hs(
        Algorithm::HS256,
        &claims(&["cloud_controller.read"]),
        SECRET,
    );
    let identity = verifier.authenticate(Some(&bearer(&token))).await.unwrap();
    let remembered = verifier.trusted.get(token.as_str()).unwrap();
    assert_eq!(remembered.identity, identity);
    let (at, instant) = (now() as f64, std::time::Instant::now());
    assert!(remembered.holds(at, instant));
    // Not past `exp` (without leeway), not past its time, not before `nbf`.
    assert!(!remembered.holds(remembered.exp, instant));
    assert!(!remembered.holds(at, remembered.verified + TRUSTED_FOR));
    let early = Trusted {
        nbf: Some(at + 1.0),
        keys: None,
        ..Trusted::clone(&remembered)
    };
    assert!(!early.holds(at, instant));
    // What the request path does with it: a token whose signature is wrong is refused on its
    // own, taken while an entry for it holds, and refused again once the entry expired.
    let forged = hs(Algorithm::HS256, &claims(&[]), b"not-the-secret");
    assert!(invalid(verifier.authenticate(Some(&bearer(&forged))).await));
    assert!(verifier.trusted.get(forged.as_str()).is_none());
    verifier.trusted.insert(
        forged.clone(),
        trusted("planted", at + 600.0, std::time::Instant::now()),
    );
    let taken = verifier.authenticate(Some(&bearer(&forged))).await.unwrap();
    assert_eq!(taken.id, "planted");
    verifier.trusted.insert(
        forged.clone(),
        trusted("planted", at - 1.0, std::time::Instant::now()),
    );
    assert!(invalid(verifier.authenticate(Some(&bearer(&forged))).await));
    let long_ago = std::time::Instant::now().checked_sub(TRUSTED_FOR).unwrap();
    verifier
        .trusted
        .insert(forged.clone(), trusted("planted", at + 600.0, long_ago));
    assert!(invalid(verifier.authenticate(Some(&bearer(&forged))).await));
}

#[tokio::test]
async fn a_token_checked_with_uaas_keys_is_trusted_only_while_that_key_set_is_current() {
    let uaa = fake_uaa(&["test_rsa.pub.pem"]).await;
    let verifier = remote_verifier(&uaa.url, &[]);
    let token = rs(Algorithm::RS256, &claims(&[]), "test_rsa.pem");
    verifier.authenticate(Some(&bearer(&token))).await.unwrap();
    let remembered = verifier.trusted.get(token.as_str()).unwrap();
    assert!(remembered.keys.is_some());
    assert!(verifier.trusted(Some(&bearer(&token))).await.is_some());
    // Another key set (a rotation fetched it): the token is checked again, and refused.
    *uaa.keys.lock().unwrap() = vec![pem("other_rsa.pub.pem")];
    let rotated = rs(Algorithm::RS256, &claims(&[]), "other_rsa.pem");
    verifier
        .authenticate(Some(&bearer(&rotated)))
        .await
        .unwrap();
    assert!(verifier.trusted(Some(&bearer(&token))).await.is_none());
    assert!(invalid(verifier.authenticate(Some(&bearer(&token))).await));
}
