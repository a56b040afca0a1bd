//! Settings: one typed struct, loaded in layers by a pure function. Defaults, then an optional
//! TOML file, then `TALLY_<SECTION>__<KEY>` environment variables, then command-line flags.
//! Unknown keys are errors, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything tally can be told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// HTTP.
    pub server: ServerSettings,
    /// The data directory and the log.
    pub storage: StorageSettings,
    /// Staging.
    pub staging: StagingSettings,
    /// App defaults (CC's config keys).
    pub apps: AppSettings,
    /// How long usage events are kept.
    pub retention: RetentionSettings,
    /// The UAA clients are sent to for tokens.
    pub uaa: UaaSettings,
    /// What `/v2/info` and `/` tell clients about logging and SSH.
    pub info: InfoSettings,
    /// How bearer tokens are checked.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogSettings,
    /// Prometheus metrics.
    pub metrics: MetricsSettings,
}

/// `[metrics]` (its `Debug` output redacts the token).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Whether the main listener serves `GET /metrics`.
    pub main_listener: bool,
    /// A separate admin listener serving only `/metrics`, `/healthz` and `/readyz` (e.g.
    /// `0.0.0.0:9181`); none by default.
    pub listen: Option<SocketAddr>,
    /// When set, `/metrics` wants `Authorization: Bearer <token>`; unauthenticated otherwise.
    pub token: Option<String>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            main_listener: true,
            listen: None,
            token: None,
        }
    }
}

impl std::fmt::Debug for MetricsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSettings")
            .field("main_listener", &self.main_listener)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL clients reach tally at; default `http://<listen>`.
    pub external_url: Option<String>,
    /// The URL the other tally nodes on the same PostgreSQL reach this one at (they forward
    /// writes to the node that holds the lease); default `http://<listen>`.
    pub advertise_url: Option<String>,
    /// Seconds a request may take, body included, before it is answered 503 and dropped.
    pub request_timeout_seconds: u64,
    /// Largest accepted package upload (`PUT /v2/apps/:guid/bits`), MiB. JSON bodies are
    /// limited to 1 MiB whatever this says.
    pub max_upload_mb: u64,
    /// Seconds a client may take to send a request head; slower connections are closed.
    pub header_read_timeout_seconds: u64,
    /// Seconds a connection may sit idle (no request in flight, no byte moving) before it is
    /// closed.
    pub idle_timeout_seconds: u64,
    /// Connections held at once on the main listener; at the limit, accepting waits.
    pub max_connections: usize,
    /// Seconds requests in flight get to finish once shutdown begins; then they are dropped.
    pub shutdown_grace_seconds: u64,
    /// The most MiB of resources one list answer may hold; a page past it is refused with a
    /// message saying how many results per page fit.
    pub max_page_mb: u64,
}

/// Where the log lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// sled in `data_dir/log` (embedded, the default).
    Sled,
    /// A PostgreSQL database (`postgres_url`).
    Postgres,
}

/// `[storage]` (its `Debug` output hides the password of `postgres_url`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// The data directory (relative paths are relative to the working directory): the sled
    /// log, and what is node-local on every backend (the development secret, package bits).
    pub data_dir: PathBuf,
    /// `sled` or `postgres`.
    pub backend: Backend,
    /// The PostgreSQL database: a libpq URL or key=value string (several hosts and
    /// `target_session_attrs=read-write` follow a failover to a promoted standby).
    pub postgres_url: Option<String>,
    /// Connections to PostgreSQL (the writer takes one per group commit; reads the others).
    pub postgres_pool_size: u32,
    /// How long connecting to PostgreSQL may take, seconds.
    pub postgres_connect_timeout_seconds: u64,
    /// How long one statement may run, seconds (also its idle-in-transaction limit).
    pub postgres_statement_timeout_seconds: u64,
    /// How long the writer's lease lasts without a renewal, seconds: after a writer stops,
    /// another node takes over within this long (renewed about every fifth of it).
    pub postgres_lease_seconds: u64,
    /// sled's page cache, MiB: tally releases it whenever this much was read or written since.
    pub cache_capacity_mb: u64,
    /// Records between table checkpoints (bounds the replay at start-up).
    pub checkpoint_every: u64,
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSettings")
            .field("data_dir", &self.data_dir)
            .field("backend", &self.backend)
            .field(
                "postgres_url",
                &self.postgres_url.as_deref().map(tally_store::redacted),
            )
            .field("postgres_pool_size", &self.postgres_pool_size)
            .field(
                "postgres_connect_timeout_seconds",
                &self.postgres_connect_timeout_seconds,
            )
            .field(
                "postgres_statement_timeout_seconds",
                &self.postgres_statement_timeout_seconds,
            )
            .field("postgres_lease_seconds", &self.postgres_lease_seconds)
            .field("cache_capacity_mb", &self.cache_capacity_mb)
            .field("checkpoint_every", &self.checkpoint_every)
            .finish()
    }
}

/// How builds complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StagingMode {
    /// At once, in the command that starts them (a single node with no runtime).
    Immediate,
    /// When a runtime calls the build-completed callback.
    External,
}

/// `[staging]` (its `Debug` output redacts the callback password).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StagingSettings {
    /// `immediate` or `external`.
    pub mode: StagingMode,
    /// Buildpack immediate staging reports when an app asked for none.
    pub default_buildpack: String,
    /// The password a runtime presents (HTTP Basic, user `staging`) on
    /// `POST /internal/v3/staging/:build_guid/build_completed` and
    /// `POST /internal/v4/tasks/:task_guid/completed`; unset refuses every callback.
    pub callback_password: Option<String>,
    /// In immediate mode, seconds a task runs before tally completes it (SUCCEEDED, or FAILED
    /// when it was canceled); 0: a task succeeds in the request that creates it.
    pub task_seconds: u64,
}

/// `[apps]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppSettings {
    /// `default_app_memory`, MB.
    pub default_memory_mb: i64,
    /// `default_app_disk_in_mb`.
    pub default_disk_mb: i64,
    /// `maximum_app_disk_in_mb`.
    pub max_disk_mb: i64,
    /// The most memory one instance may ask for, MB (at most 2147483647, CC's `MAX_DB_INT`).
    pub max_memory_mb: i64,
}

/// `[retention]`: the scheduled prune of old usage events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Usage events older than this many days are pruned (CC's
    /// `app_usage_events.cutoff_age_in_days`); 0 keeps every event.
    pub cutoff_age_days: u32,
    /// Minutes between prunes (the first runs a minute after start-up).
    pub prune_interval_minutes: u64,
}

/// `[info]`: the endpoints `/v2/info` and `/` name for app logs and SSH. tally serves neither;
/// real clients refuse a `null` (PyPI `cf-api` needs `doppler_logging_endpoint`), so each is a
/// string, by default derived from the system domain: the external URL's host without a leading
/// `api.`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfoSettings {
    /// Default `wss://doppler.<system domain>:443`.
    pub doppler_logging_endpoint: Option<String>,
    /// Default `ssh.<system domain>:2222`.
    pub app_ssh_endpoint: Option<String>,
    /// Default empty (no SSH proxy, so no host key).
    pub app_ssh_host_key_fingerprint: Option<String>,
    /// Default `ssh-proxy` (Cloud Controller's default client).
    pub app_ssh_oauth_client: Option<String>,
}

impl InfoSettings {
    /// The four values, defaults filled in from `external_url`.
    pub fn resolve(&self, external_url: &str) -> tally_http::InfoEndpoints {
        let host = external_url
            .split("://")
            .nth(1)
            .unwrap_or(external_url)
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        let domain = host.strip_prefix("api.").unwrap_or(host);
        tally_http::InfoEndpoints {
            doppler_logging_endpoint: self
                .doppler_logging_endpoint
                .clone()
                .unwrap_or_else(|| format!("wss://doppler.{domain}:443")),
            app_ssh_endpoint: self
                .app_ssh_endpoint
                .clone()
                .unwrap_or_else(|| format!("ssh.{domain}:2222")),
            app_ssh_host_key_fingerprint: self
                .app_ssh_host_key_fingerprint
                .clone()
                .unwrap_or_default(),
            app_ssh_oauth_client: self
                .app_ssh_oauth_client
                .clone()
                .unwrap_or_else(|| "ssh-proxy".to_owned()),
        }
    }
}

/// `[uaa]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UaaSettings {
    /// UAA URL shown on `/` and `/v2/info`.
    pub url: String,
}

/// `[auth]` (its `Debug` output redacts the secrets).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Shared HMAC secrets for HS256/384/512 tokens, tried in order (rotation). When this and
    /// `rsa_public_key_files` are both empty, tally creates a development secret in the data
    /// directory on first start.
    pub hmac_secrets: Vec<String>,
    /// PEM files with RSA public keys for RS256/384/512 tokens.
    pub rsa_public_key_files: Vec<PathBuf>,
    /// The resource id tokens' `aud` must include.
    pub audience: String,
    /// The issuer tokens' `iss` must equal, if set.
    pub issuer: Option<String>,
    /// Seconds of clock skew allowed on `exp`.
    pub leeway_seconds: u64,
    /// UAA's `token_keys` URL (e.g. `https://uaa.example.com/token_keys`): RSA public keys
    /// fetched at run time, cached 30 s, fetched again when a signature does not verify.
    pub token_keys_url: Option<String>,
}

impl std::fmt::Debug for StagingSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingSettings")
            .field("mode", &self.mode)
            .field("default_buildpack", &self.default_buildpack)
            .field("task_seconds", &self.task_seconds)
            .field(
                "callback_password",
                &self.callback_password.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "hmac_secrets",
                &format_args!("[{} redacted]", self.hmac_secrets.len()),
            )
            .field("rsa_public_key_files", &self.rsa_public_key_files)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("token_keys_url", &self.token_keys_url)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hmac_secrets: Vec::new(),
            rsa_public_key_files: Vec::new(),
            audience: "cloud_controller".to_owned(),
            issuer: None,
            leeway_seconds: 30,
            token_keys_url: None,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `tally=debug,info`.
    pub level: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            external_url: None,
            advertise_url: None,
            request_timeout_seconds: 60,
            max_upload_mb: 1024,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            max_connections: 8192,
            shutdown_grace_seconds: 10,
            max_page_mb: 16,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("tally-data"),
            backend: Backend::Sled,
            postgres_url: None,
            postgres_pool_size: 16,
            postgres_connect_timeout_seconds: 5,
            postgres_statement_timeout_seconds: 30,
            postgres_lease_seconds: 5,
            cache_capacity_mb: 64,
            checkpoint_every: 50_000,
        }
    }
}

impl Default for StagingSettings {
    fn default() -> Self {
        Self {
            mode: StagingMode::Immediate,
            default_buildpack: "binary_buildpack".to_owned(),
            callback_password: None,
            task_seconds: 0,
        }
    }
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            default_memory_mb: 1024,
            default_disk_mb: 1024,
            max_disk_mb: 2048,
            max_memory_mb: 1_048_576,
        }
    }
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            cutoff_age_days: 31,
            prune_interval_minutes: 60,
        }
    }
}

impl Default for UaaSettings {
    fn default() -> Self {
        Self {
            url: "http://localhost:8080/uaa".to_owned(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Overrides from the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
}

/// Loads settings: defaults, then `file` (which must exist if given), then the `TALLY_*`
/// variables of `env` (`TALLY_STORAGE__DATA_DIR=/var/lib/tally`), then `overrides`.
/// Variables without a `__` section separator are not settings and are ignored.
pub fn load(
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Settings, Box<figment::Error>> {
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(Box::new(figment::Error::from(format!(
                "config file {} does not exist",
                path.display()
            ))));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    // Collect the environment into TOML so the variables come from the caller, not the process.
    let mut table = toml_table_from_env(env);
    if !table.is_empty() {
        table.insert(0, "# from TALLY_* environment variables".to_owned());
        figment = figment.merge(Toml::string(&table.join("\n")));
    }
    if let Some(dir) = &overrides.data_dir {
        figment = figment.merge(Serialized::default("storage.data_dir", dir));
    }
    if let Some(listen) = overrides.listen {
        figment = figment.merge(Serialized::default("server.listen", listen.to_string()));
    }
    figment.extract().map_err(Box::new)
}

/// `TALLY_SECTION__KEY=value` → `section.key = <value>` lines, values as TOML (numbers,
/// booleans, lists) or else as strings.
fn toml_table_from_env(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("TALLY_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let key = format!(
            "{}.{}",
            section.to_lowercase(),
            key.to_lowercase().replace("__", ".")
        );
        let literal = if parses_as_toml_value(&value) {
            value.clone()
        } else {
            toml_string(&value)
        };
        lines.push(format!("{key} = {literal}"));
    }
    lines
}

fn parses_as_toml_value(value: &str) -> bool {
    format!("v = {value}").parse::<toml::Table>().is_ok()
}

fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_need_nothing() {
        let settings = load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.server.listen.to_string(), "127.0.0.1:8181");
        assert_eq!(settings.storage.data_dir, PathBuf::from("tally-data"));
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:9000\"\n[storage]\ndata_dir = \"/from/file\"\ncache_capacity_mb = 16\n").unwrap();
        let from_file = load(Some(&path), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(from_file.server.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(from_file.storage.cache_capacity_mb, 16);

        let vars = env(&[
            ("TALLY_STORAGE__DATA_DIR", "/from/env"),
            ("TALLY_STORAGE__CHECKPOINT_EVERY", "77"),
            ("TALLY_STAGING__MODE", "external"),
            ("TALLY_CRASH_ROUNDS", "5"),
            ("HOME", "/root"),
        ]);
        let from_env = load(Some(&path), vars.clone(), &Overrides::default()).unwrap();
        assert_eq!(from_env.storage.data_dir, PathBuf::from("/from/env"));
        assert_eq!(from_env.storage.checkpoint_every, 77);
        assert_eq!(from_env.staging.mode, StagingMode::External);
        assert_eq!(
            from_env.storage.cache_capacity_mb, 16,
            "file values env does not touch stay"
        );

        let flags = Overrides {
            data_dir: Some("/from/flag".into()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
        };
        let from_flags = load(Some(&path), vars, &flags).unwrap();
        assert_eq!(from_flags.storage.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(from_flags.server.listen.to_string(), "127.0.0.1:1");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.toml");
        std::fs::write(&path, "[storage]\ndata_dri = \"x\"\n").unwrap();
        let error = load(Some(&path), env(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("data_dri"), "{error}");
        let error = load(
            None,
            env(&[("TALLY_SERVR__LISTEN", "x")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("servr"), "{error}");
        let error = load(
            None,
            env(&[("TALLY_SERVER__LISTEN", "not-an-address")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("listen"), "{error}");
        let error = load(
            Some(&dir.path().join("missing.toml")),
            env(&[]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("does not exist"), "{error}");
    }

    #[test]
    fn postgres_is_chosen_like_every_setting_and_its_password_never_shows() {
        let settings = load(
            None,
            env(&[
                ("TALLY_STORAGE__BACKEND", "postgres"),
                (
                    "TALLY_STORAGE__POSTGRES_URL",
                    "postgresql://tally:hunter2@db1:5432,db2:5432/tally?target_session_attrs=read-write",
                ),
                ("TALLY_STORAGE__POSTGRES_POOL_SIZE", "4"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(settings.storage.backend, Backend::Postgres);
        assert_eq!(settings.storage.postgres_pool_size, 4);
        assert!(settings
            .storage
            .postgres_url
            .as_deref()
            .is_some_and(|u| u.contains("db2:5432")));
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("tally:***@db1:5432,db2:5432"), "{shown}");
        let wrong = load(
            None,
            env(&[("TALLY_STORAGE__BACKEND", "mysql")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(wrong.contains("mysql"), "{wrong}");
    }

    #[test]
    fn the_example_config_in_deploy_is_complete_and_loads() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/tally.example.toml");
        let settings = load(Some(&path), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(
            settings,
            Settings::default(),
            "the example documents the defaults"
        );
        // Every key of the settings appears in the example.
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = toml::Value::try_from(Settings::default()).unwrap();
        for (section, keys) in defaults.as_table().unwrap() {
            assert!(
                text.contains(&format!("[{section}]")),
                "section {section} missing"
            );
            for key in keys.as_table().unwrap().keys() {
                assert!(
                    text.contains(&format!("{key} =")) || text.contains(&format!("# {key} =")),
                    "{section}.{key} missing"
                );
            }
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let settings = Settings {
            auth: AuthConfig {
                hmac_secrets: vec!["s3cret-value".into()],
                ..AuthConfig::default()
            },
            staging: StagingSettings {
                callback_password: Some("s3cret-value".into()),
                ..StagingSettings::default()
            },
            metrics: MetricsSettings {
                token: Some("s3cret-value".into()),
                ..MetricsSettings::default()
            },
            ..Settings::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("[1 redacted]"), "{shown}");
        let http = tally_http::auth::AuthSettings {
            hmac_secrets: vec![b"s3cret-value".to_vec()],
            ..Default::default()
        };
        assert!(!format!("{http:?}").contains("s3cret"));
    }
}
