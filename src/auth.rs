//! Token keys for the server and developer tokens for `tally token`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tally_http::auth::{AuthSettings, TokenVerifier};

use crate::config::Settings;

/// Where the development secret lives in a data directory.
pub fn dev_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("auth").join("dev-hmac-secret")
}

/// The verifier for the configured keys. With no keys configured (no secret, no PEM file, no
/// key URL), a development secret is read
/// from the data directory, or created there (readable by the owner only) and announced.
pub fn verifier(settings: &Settings) -> anyhow::Result<TokenVerifier> {
    let auth = &settings.auth;
    let mut hmac_secrets: Vec<Vec<u8>> = auth
        .hmac_secrets
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let rsa_public_keys_pem = auth
        .rsa_public_key_files
        .iter()
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read RSA public key {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if hmac_secrets.is_empty() && rsa_public_keys_pem.is_empty() && auth.token_keys_url.is_none() {
        let path = dev_secret_path(&settings.storage.data_dir);
        let (secret, created) = load_or_create_secret(&path)?;
        if created {
            tracing::warn!(
                secret_file = %path.display(),
                "no token keys configured: created a development secret; get an admin token with \
                 `tally token --data-dir {} --scope cloud_controller.admin`",
                settings.storage.data_dir.display()
            );
        }
        hmac_secrets.push(secret);
    }
    TokenVerifier::new(AuthSettings {
        hmac_secrets,
        rsa_public_keys_pem,
        audience: auth.audience.clone(),
        issuer: auth.issuer.clone(),
        leeway_seconds: auth.leeway_seconds,
        token_keys_url: auth.token_keys_url.clone(),
    })
    .map_err(|e| anyhow::anyhow!("[auth]: {e}"))
}

/// The secret `tally token` signs with: the first configured one, else the development secret.
pub fn signing_secret(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(first) = settings.auth.hmac_secrets.first() {
        return Ok(first.as_bytes().to_vec());
    }
    let path = dev_secret_path(&settings.storage.data_dir);
    std::fs::read(&path).with_context(|| {
        format!(
            "no secret to sign with: {} does not exist (start `tally serve` once with this data directory, or set auth.hmac_secrets)",
            path.display()
        )
    })
}

fn load_or_create_secret(path: &Path) -> anyhow::Result<(Vec<u8>, bool)> {
    if path.exists() {
        return Ok((
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            false,
        ));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok((secret.into_bytes(), true))
}

/// A signed HS256 token for `user_id` with `scopes`, valid for `ttl_seconds`.
pub fn developer_token(
    settings: &Settings,
    user_id: &str,
    scopes: &[String],
    ttl_seconds: u64,
) -> anyhow::Result<String> {
    let secret = signing_secret(settings)?;
    #[allow(clippy::disallowed_methods)] // a token's times are wall-clock times by definition
    let now = chrono::Utc::now().timestamp();
    let ttl = i64::try_from(ttl_seconds).context("--ttl is too large")?;
    let mut jti = [0u8; 16];
    rand::fill(&mut jti);
    let mut claims = serde_json::json!({
        "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "user_id": user_id,
        "user_name": user_id,
        "email": format!("{user_id}@tally.local"),
        "client_id": "cf",
        "scope": scopes,
        "aud": [settings.auth.audience],
        "iat": now,
        "exp": now + ttl,
    });
    if let Some(issuer) = &settings.auth.issuer {
        claims["iss"] = serde_json::Value::String(issuer.clone());
    }
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .context("cannot sign the token")
}
