//! Bearer tokens as Cloud Controller checks them (reference §8.1): `Authorization: bearer <JWT>`,
//! HS256/384/512 against shared secrets (several, for rotation) or RS256/384/512 against public
//! keys; `aud` must include the resource id, `exp` must lie ahead (with a small leeway), refresh
//! tokens (`jti` ending in `-r`) are refused, the issuer is checked when configured. Identity is
//! `user_id`, else `client_id`; scopes map to the global roles of §8.1. Signature checks are the
//! `jsonwebtoken` crate's; nothing here is hand-written cryptography.

use std::collections::HashSet;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

mod remote;
use serde::Deserialize;
use tally_domain::access::{Scopes, Subject};

/// How tokens are checked.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// HMAC secrets, tried in order (the first signs developer tokens).
    pub hmac_secrets: Vec<Vec<u8>>,
    /// RSA public keys, PEM.
    pub rsa_public_keys_pem: Vec<String>,
    /// The resource id `aud` must include (CC: `cloud_controller`).
    pub audience: String,
    /// The issuer `iss` must equal, when set.
    pub issuer: Option<String>,
    /// Seconds of clock skew allowed on `exp`.
    pub leeway_seconds: u64,
    /// UAA's `token_keys` URL: RSA public keys fetched at run time, cached for 30 s.
    pub token_keys_url: Option<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach a log line.
        f.debug_struct("AuthSettings")
            .field(
                "hmac_secrets",
                &format_args!("[{} redacted]", self.hmac_secrets.len()),
            )
            .field("rsa_public_keys_pem", &self.rsa_public_keys_pem.len())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("token_keys_url", &self.token_keys_url)
            .finish()
    }
}

/// A global role from a `cloud_controller.*` scope (§8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `cloud_controller.admin`
    Admin,
    /// `cloud_controller.admin_read_only`
    AdminReadOnly,
    /// `cloud_controller.global_auditor`
    GlobalAuditor,
    /// `cloud_controller.read`
    Read,
    /// `cloud_controller.write`
    Write,
}

impl Role {
    fn from_scope(scope: &str) -> Option<Self> {
        match scope {
            "cloud_controller.admin" => Some(Self::Admin),
            "cloud_controller.admin_read_only" => Some(Self::AdminReadOnly),
            "cloud_controller.global_auditor" => Some(Self::GlobalAuditor),
            "cloud_controller.read" => Some(Self::Read),
            "cloud_controller.write" => Some(Self::Write),
            _ => None,
        }
    }
}

/// Who a valid token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `user_id`, else `client_id`.
    pub id: String,
    /// A client token (`client_id` without `user_id`).
    pub is_client: bool,
    /// `email`, if any.
    pub email: Option<String>,
    /// `user_name`, if any.
    pub user_name: Option<String>,
    /// Global roles from the scopes.
    pub roles: HashSet<Role>,
}

impl Identity {
    /// Whether the caller has this global role.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The global roles as the permission rules take them.
    pub fn scopes(&self) -> Scopes {
        Scopes {
            admin: self.has(Role::Admin),
            admin_read_only: self.has(Role::AdminReadOnly),
            global_auditor: self.has(Role::GlobalAuditor),
            read: self.has(Role::Read),
            write: self.has(Role::Write),
        }
    }
}

/// Why a request is not authenticated. The reason is for logs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: bearer …` header (CC `NotAuthenticated`, 10002).
    Missing,
    /// A bearer token that is not valid (CC `InvalidAuthToken`, 1000).
    Invalid(String),
    /// No key to check an RSA token with: the key URL cannot be reached and no PEM key is
    /// configured (CC `UaaUnavailable`, 20004, HTTP 502).
    Unavailable,
}

#[derive(Debug, Deserialize)]
struct Claims {
    user_id: Option<String>,
    client_id: Option<String>,
    email: Option<String>,
    user_name: Option<String>,
    #[serde(default)]
    scope: Vec<String>,
    jti: Option<String>,
    /// Checked by `jsonwebtoken`; read again to bound how long the token is trusted.
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// How long a token that verified is taken again without checking its signature: a client
/// sends the same token with every request until it expires, and the check (HMAC or RSA,
/// and parsing the claims) costs more than many requests.
const TRUSTED_FOR: std::time::Duration = std::time::Duration::from_secs(10);
/// Verified tokens kept at most.
const TRUSTED_TOKENS: usize = 1024;

/// A token that verified: who it names, and until when it may be taken without a check.
#[derive(Clone)]
struct Trusted {
    identity: Identity,
    /// `exp` and `nbf` (seconds since the epoch).
    exp: f64,
    nbf: Option<f64>,
    verified: std::time::Instant,
    /// UAA's key set it verified against (among others), when it was an RSA token checked
    /// with the key URL: trusted only while that set is the current one, so a key UAA retired
    /// stops working as soon as the key set is fetched again.
    keys: Option<std::sync::Arc<Vec<DecodingKey>>>,
}

impl Trusted {
    /// Whether the token may be taken on trust at `now` (seconds since the epoch) and
    /// `instant`: verified less than [`TRUSTED_FOR`] ago, not expired, already valid. Stricter
    /// than the check itself (no leeway), so the cache accepts nothing the check would refuse.
    fn holds(&self, now: f64, instant: std::time::Instant) -> bool {
        instant.saturating_duration_since(self.verified) < TRUSTED_FOR
            && now < self.exp
            && self.nbf.is_none_or(|nbf| nbf <= now)
    }
}

/// Seconds since the epoch, as `jsonwebtoken` reads the clock for `exp`.
fn epoch_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Checks bearer tokens.
pub struct TokenVerifier {
    hmac: Vec<DecodingKey>,
    rsa: Vec<DecodingKey>,
    remote: Option<remote::RemoteKeys>,
    settings: AuthSettings,
    /// Tokens that verified lately ([`TRUSTED_FOR`]), by the token's text.
    trusted: quick_cache::sync::Cache<String, std::sync::Arc<Trusted>>,
}

/// A verified token's `exp` and `nbf`.
struct Lifetime {
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// A bearer token that passed the checks that need no key.
struct Candidate<'a> {
    token: &'a str,
    rsa: bool,
    validation: Validation,
}

/// How trying a set of keys ended.
enum Tried {
    Valid(Identity, Lifetime),
    /// No key verified the signature (a fresher key set might).
    BadSignature(AuthError),
    /// The token is wrong whatever the key.
    Invalid(AuthError),
}

impl TokenVerifier {
    /// Builds a verifier; fails on a PEM that is not an RSA public key or a key URL that is not
    /// a URL.
    pub fn new(settings: AuthSettings) -> Result<Self, String> {
        let hmac = settings
            .hmac_secrets
            .iter()
            .map(|s| DecodingKey::from_secret(s))
            .collect();
        let rsa = settings
            .rsa_public_keys_pem
            .iter()
            .map(|pem| {
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| format!("not an RSA public key: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let remote = settings
            .token_keys_url
            .as_deref()
            .map(remote::RemoteKeys::new)
            .transpose()?;
        Ok(Self {
            hmac,
            rsa,
            remote,
            settings,
            trusted: quick_cache::sync::Cache::new(TRUSTED_TOKENS),
        })
    }

    /// Checks an `Authorization` header value against the configured keys only (no key URL).
    pub fn verify(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        let candidate = self.candidate(authorization)?;
        let keys = if candidate.rsa { &self.rsa } else { &self.hmac };
        match try_keys(&candidate, keys.iter()) {
            Tried::Valid(identity, lifetime) => {
                Ok(self.trust(candidate.token, identity, lifetime, None))
            }
            Tried::BadSignature(e) | Tried::Invalid(e) => Err(e),
        }
    }

    /// The identity of a token that verified lately and still holds ([`Trusted::holds`]),
    /// against the key set that is current.
    async fn trusted(&self, authorization: Option<&str>) -> Option<Identity> {
        let token = bearer(authorization).ok()?;
        let trusted = self.trusted.get(token)?;
        if !trusted.holds(epoch_seconds(), std::time::Instant::now()) {
            return None;
        }
        if let Some(keys) = &trusted.keys {
            let current = self.remote.as_ref()?.keys(false).await;
            if !std::sync::Arc::ptr_eq(keys, &current) {
                return None;
            }
        }
        Some(trusted.identity.clone())
    }

    /// Remembers a token that verified (one without `exp` is not: the check requires it).
    fn trust(
        &self,
        token: &str,
        identity: Identity,
        lifetime: Lifetime,
        keys: Option<std::sync::Arc<Vec<DecodingKey>>>,
    ) -> Identity {
        if let Some(exp) = lifetime.exp {
            let trusted = Trusted {
                identity: identity.clone(),
                exp,
                nbf: lifetime.nbf,
                verified: std::time::Instant::now(),
                keys,
            };
            self.trusted
                .insert(token.to_owned(), std::sync::Arc::new(trusted));
        }
        identity
    }

    /// Checks an `Authorization` header value. RSA tokens are tried against the configured PEM
    /// keys and the key URL's keys (cached for 30 s); when no key verifies the signature the
    /// URL is asked again once (CC does the same, so a UAA key rotation needs no restart).
    /// With a key URL that cannot be reached and no other RSA key: `UaaUnavailable`.
    ///
    /// A token that verified in the last [`TRUSTED_FOR`] and has not expired is taken again
    /// without a check.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        if let Some(identity) = self.trusted(authorization).await {
            return Ok(identity);
        }
        let candidate = self.candidate(authorization)?;
        let Some(remote) = self.remote.as_ref().filter(|_| candidate.rsa) else {
            return self.verify(authorization);
        };
        let mut refreshed = false;
        loop {
            let fetched = remote.keys(refreshed).await;
            if self.rsa.is_empty() && fetched.is_empty() {
                return Err(AuthError::Unavailable);
            }
            match try_keys(&candidate, self.rsa.iter().chain(fetched.iter())) {
                Tried::Valid(identity, lifetime) => {
                    return Ok(self.trust(candidate.token, identity, lifetime, Some(fetched)))
                }
                Tried::BadSignature(_) if !refreshed => refreshed = true,
                Tried::BadSignature(e) | Tried::Invalid(e) => return Err(e),
            }
        }
    }

    fn candidate<'a>(&self, authorization: Option<&'a str>) -> Result<Candidate<'a>, AuthError> {
        let token = bearer(authorization)?;
        let jwt_header =
            decode_header(token).map_err(|e| AuthError::Invalid(format!("header: {e}")))?;
        // RFC 7515 §4.1.11: a recipient must reject a token naming an extension in `crit` it
        // does not understand, and tally understands none.
        if let Some(critical) = jwt_header.crit.as_ref().filter(|c| !c.is_empty()) {
            return Err(AuthError::Invalid(format!(
                "unsupported critical header parameters: {critical:?}"
            )));
        }
        let rsa = match jwt_header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => false,
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => true,
            other => {
                return Err(AuthError::Invalid(format!(
                    "algorithm {other:?} is not allowed"
                )))
            }
        };
        let mut validation = Validation::new(jwt_header.alg);
        validation.set_audience(&[&self.settings.audience]);
        validation.leeway = self.settings.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "aud"]);
        if let Some(issuer) = &self.settings.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Candidate {
            token,
            rsa,
            validation,
        })
    }
}

/// The token of an `Authorization: bearer <token>` header.
fn bearer(authorization: Option<&str>) -> Result<&str, AuthError> {
    let header = authorization.ok_or(AuthError::Missing)?;
    let is_bearer = header.len() >= 6
        && header
            .get(..6)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer"));
    if !is_bearer {
        return Err(AuthError::Missing);
    }
    let mut parts = header.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(token), None) => Ok(token),
        _ => Err(AuthError::Invalid(
            "not two space-separated parts".to_owned(),
        )),
    }
}

fn try_keys<'k>(candidate: &Candidate<'_>, keys: impl Iterator<Item = &'k DecodingKey>) -> Tried {
    let mut last = Tried::BadSignature(AuthError::Invalid(
        "no key configured for this algorithm".to_owned(),
    ));
    for key in keys {
        match decode::<Claims>(candidate.token, key, &candidate.validation) {
            Ok(data) => {
                let lifetime = Lifetime {
                    exp: data.claims.exp,
                    nbf: data.claims.nbf,
                };
                return match identity(data.claims) {
                    Ok(identity) => Tried::Valid(identity, lifetime),
                    Err(e) => Tried::Invalid(e),
                };
            }
            Err(e) => {
                let error = AuthError::Invalid(e.to_string());
                last = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => Tried::BadSignature(error),
                    // Expired, wrong audience, malformed: no other key changes that.
                    _ => return Tried::Invalid(error),
                };
            }
        }
    }
    last
}

fn identity(claims: Claims) -> Result<Identity, AuthError> {
    if claims.jti.as_deref().is_some_and(|jti| jti.ends_with("-r")) {
        return Err(AuthError::Invalid(
            "refresh tokens are not accepted".to_owned(),
        ));
    }
    let (id, is_client) = match (claims.user_id, claims.client_id) {
        (Some(user), _) => (user, false),
        (None, Some(client)) => (client, true),
        (None, None) => {
            return Err(AuthError::Invalid(
                "neither user_id nor client_id".to_owned(),
            ))
        }
    };
    // What a token names goes into headers, logs and audit events: one bounded line each.
    let claims_text = [
        ("user_id", Some(&id)),
        ("email", claims.email.as_ref()),
        ("user_name", claims.user_name.as_ref()),
    ];
    for (claim, value) in claims_text {
        if let Some(value) = value {
            if value.is_empty() && claim == "user_id" {
                return Err(AuthError::Invalid(
                    "an empty user_id or client_id".to_owned(),
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(AuthError::Invalid(format!(
                    "{claim} holds control characters"
                )));
            }
            if tally_domain::limits::too_long(value, tally_domain::limits::IDENTITY) {
                return Err(AuthError::Invalid(format!(
                    "{claim} is longer than {} characters",
                    tally_domain::limits::IDENTITY
                )));
            }
        }
    }
    Ok(Identity {
        id,
        is_client,
        email: claims.email,
        user_name: claims.user_name,
        roles: claims
            .scope
            .iter()
            .filter_map(|s| Role::from_scope(s))
            .collect(),
    })
}

/// The caller's id, filled in by [`Caller`] once the token checks out, so the response can
/// carry `X-USER-GUID` (reference §7.3).
#[derive(Debug, Clone, Default)]
pub struct UserSlot(pub std::sync::Arc<std::sync::OnceLock<String>>);

/// A handler argument that requires a valid token: the caller's identity, or CC's 401
/// (`NotAuthenticated` without a bearer token, `InvalidAuthToken` for a bad one), or 502
/// `UaaUnavailable` when no key can be had to check it.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl Caller {
    /// A command on the caller's behalf (the actor of its audit events, reference §6.2).
    pub fn envelope(&self, command: tally_domain::Command) -> tally_domain::Envelope {
        tally_domain::Envelope {
            command,
            actor: tally_domain::Actor {
                guid: self.0.id.clone(),
                kind: "user".to_owned(),
                name: self.0.email.clone().unwrap_or_default(),
                username: self.0.user_name.clone().unwrap_or_default(),
            },
            principal: Some(tally_domain::access::Principal {
                user: self.0.id.clone(),
                scopes: self.0.scopes(),
            }),
        }
    }

    /// The caller as the permission rules see it.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            user: &self.0.id,
            scopes: self.0.scopes(),
        }
    }
}

impl axum::extract::FromRequestParts<std::sync::Arc<crate::AppState>> for Caller {
    type Rejection = crate::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &std::sync::Arc<crate::AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match state.verifier.authenticate(header).await {
            Ok(identity) => {
                tracing::Span::current().record("user_id", identity.id.as_str());
                if let Some(UserSlot(slot)) = parts.extensions.get::<UserSlot>() {
                    let _ = slot.set(identity.id.clone());
                }
                Ok(Self(identity))
            }
            Err(AuthError::Missing) => Err(crate::ApiError::not_authenticated()),
            Err(AuthError::Invalid(reason)) => {
                tracing::info!(%reason, "invalid auth token");
                Err(crate::ApiError::invalid_auth_token())
            }
            Err(AuthError::Unavailable) => Err(crate::ApiError::uaa_unavailable()),
        }
    }
}

#[cfg(test)]
mod tests;
