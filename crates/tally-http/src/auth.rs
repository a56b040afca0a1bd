//! Bearer tokens as Cloud Controller checks them (reference §8.1): `Authorization: bearer <JWT>`,
//! HS256/384/512 against shared secrets (several, for rotation) or RS256/384/512 against public
//! keys; `aud` must include the resource id, `exp` must lie ahead (with a small leeway), refresh
//! tokens (`jti` ending in `-r`) are refused, the issuer is checked when configured. Identity is
//! `user_id`, else `client_id`; scopes map to the global roles of §8.1. Signature checks are the
//! `jsonwebtoken` crate's; nothing here is hand-written cryptography.

use std::collections::HashSet;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

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
}

/// Why a request is not authenticated. The reason is for logs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: bearer …` header (CC `NotAuthenticated`, 10002).
    Missing,
    /// A bearer token that is not valid (CC `InvalidAuthToken`, 1000).
    Invalid(String),
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
}

/// Checks bearer tokens.
pub struct TokenVerifier {
    hmac: Vec<DecodingKey>,
    rsa: Vec<DecodingKey>,
    settings: AuthSettings,
}

impl TokenVerifier {
    /// Builds a verifier; fails on a PEM that is not an RSA public key.
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
        Ok(Self {
            hmac,
            rsa,
            settings,
        })
    }

    /// Checks an `Authorization` header value.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let is_bearer = header.len() >= 6 && header[..6].eq_ignore_ascii_case("bearer");
        if !is_bearer {
            return Err(AuthError::Missing);
        }
        let parts: Vec<&str> = header.split(' ').collect();
        let [_, token] = parts.as_slice() else {
            return Err(AuthError::Invalid(
                "not two space-separated parts".to_owned(),
            ));
        };
        let invalid = |why: &str| AuthError::Invalid(why.to_owned());
        let jwt_header =
            decode_header(token).map_err(|e| AuthError::Invalid(format!("header: {e}")))?;
        let keys = match jwt_header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => &self.hmac,
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => &self.rsa,
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
        let mut last = invalid("no key configured for this algorithm");
        for key in keys {
            match decode::<Claims>(token, key, &validation) {
                Ok(data) => return identity(data.claims),
                Err(e) => last = AuthError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }
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

/// A handler argument that requires a valid token: the caller's identity, or CC's 401
/// (`NotAuthenticated` without a bearer token, `InvalidAuthToken` for a bad one).
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

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
        match state.verifier.verify(header) {
            Ok(identity) => Ok(Self(identity)),
            Err(AuthError::Missing) => Err(crate::ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "NotAuthenticated",
                10002,
                "Authentication error",
            )),
            Err(AuthError::Invalid(reason)) => {
                tracing::info!(%reason, "invalid auth token");
                Err(crate::ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "InvalidAuthToken",
                    1000,
                    "Invalid Auth Token",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
