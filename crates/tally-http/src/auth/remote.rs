//! RSA public keys from UAA's `GET /token_keys` (reference §8.1): cached for 30 s, fetched again
//! when a signature fails (at most once every 5 s, so a flood of forged tokens cannot turn tally
//! into a load generator for UAA), three attempts per fetch. A failed fetch keeps the keys it
//! had and is not retried for 5 s.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long fetched keys are used before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(30);
/// The least time between two fetches forced by a signature failure, and between a failed
/// fetch and the next one.
const MIN_REFETCH: Duration = Duration::from_secs(5);
/// Attempts per fetch.
const ATTEMPTS: u32 = 3;
/// Time allowed to one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// UAA's answer.
#[derive(Deserialize)]
struct TokenKeys {
    keys: Vec<TokenKey>,
}

#[derive(Deserialize)]
struct TokenKey {
    kty: Option<String>,
    /// The PEM; CC uses this and ignores `kid`.
    value: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

struct Cache {
    keys: Arc<Vec<DecodingKey>>,
    next_fetch: Option<Instant>,
    last_forced: Option<Instant>,
}

/// The key set behind a `token_keys` URL.
pub(super) struct RemoteKeys {
    url: String,
    client: reqwest::Client,
    cache: Mutex<Cache>,
}

impl RemoteKeys {
    pub(super) fn new(url: &str) -> Result<Self, String> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| format!("token_keys_url {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("token_keys_url {url:?}: not an http(s) URL"));
        }
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            cache: Mutex::new(Cache {
                keys: Arc::new(Vec::new()),
                next_fetch: None,
                last_forced: None,
            }),
        })
    }

    /// The current keys; fetched first when stale, or when `refresh` asks and the last forced
    /// fetch is long enough ago. Callers that arrive during a fetch wait for it and share it.
    pub(super) async fn keys(&self, refresh: bool) -> Arc<Vec<DecodingKey>> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        let stale = cache.next_fetch.is_none_or(|at| now >= at);
        let forced = refresh
            && cache
                .last_forced
                .is_none_or(|at| now.duration_since(at) >= MIN_REFETCH);
        if stale || forced {
            if forced {
                cache.last_forced = Some(now);
            }
            match self.fetch().await {
                Ok(keys) => {
                    tracing::debug!(keys = keys.len(), url = %self.url, "fetched token keys");
                    cache.keys = Arc::new(keys);
                    cache.next_fetch = Some(Instant::now() + KEYS_TTL);
                }
                Err(error) => {
                    tracing::warn!(%error, url = %self.url, "cannot fetch token keys; keeping the previous ones");
                    cache.next_fetch = Some(Instant::now() + MIN_REFETCH);
                }
            }
        }
        cache.keys.clone()
    }

    async fn fetch(&self) -> Result<Vec<DecodingKey>, String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            match self.fetch_once().await {
                Ok(keys) => return Ok(keys),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    async fn fetch_once(&self) -> Result<Vec<DecodingKey>, String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body: TokenKeys = response.json().await.map_err(|e| e.to_string())?;
        let keys: Vec<DecodingKey> = body.keys.iter().filter_map(decoding_key).collect();
        if keys.is_empty() {
            return Err("no usable RSA key in the answer".to_owned());
        }
        Ok(keys)
    }
}

fn decoding_key(key: &TokenKey) -> Option<DecodingKey> {
    if key.kty.as_deref().is_some_and(|kty| kty != "RSA") {
        return None;
    }
    let parsed = match (&key.value, &key.n, &key.e) {
        (Some(pem), _, _) => DecodingKey::from_rsa_pem(pem.as_bytes()),
        (None, Some(n), Some(e)) => DecodingKey::from_rsa_components(n, e),
        _ => return None,
    };
    parsed
        .map_err(
            |error| tracing::warn!(%error, "skipping a token key that is not an RSA public key"),
        )
        .ok()
}
