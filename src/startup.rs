//! The composition root: settings in, a running tally out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tally_domain::DomainConfig;
use tally_engine::{Engine, EngineConfig, RandomIds, SystemClock};
use tally_http::{AppState, HttpSettings};
use tally_store::{redacted, LogStore, PgLog, PgOptions, SledLog, SledOptions};
use tokio::net::TcpListener;

use crate::config::{Backend, Settings, StagingMode};

/// Where the log lives inside the data directory.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

/// Makes every file and directory this process creates private to its user (umask 077): the
/// log holds docker passwords and environment variables in plain text, the data directory the
/// development secret, backups all of it.
pub fn create_files_private() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// What in the data directory others may read or enter: the directory itself, what it holds
/// and what its `log`, `auth` and `packages` directories hold, with their modes.
pub fn not_private(data_dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut check = |path: PathBuf| {
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 && !meta.file_type().is_symlink() {
                open.push((path, mode));
            }
        }
    };
    check(data_dir.to_path_buf());
    let children = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    for path in children(data_dir) {
        check(path);
    }
    for sub in ["log", "auth", "packages"] {
        for path in children(&data_dir.join(sub)) {
            check(path);
        }
    }
    open
}

/// How to reach the PostgreSQL store of `settings` (`storage.postgres_url` is required).
pub fn pg_options(settings: &Settings) -> anyhow::Result<PgOptions> {
    let storage = &settings.storage;
    let url = storage.postgres_url.clone().context(
        "storage.backend is \"postgres\" but storage.postgres_url is not set \
         (TALLY_STORAGE__POSTGRES_URL=postgresql://user@host:5432/db)",
    )?;
    Ok(PgOptions {
        url,
        pool_size: storage.postgres_pool_size,
        connect_timeout: std::time::Duration::from_secs(
            storage.postgres_connect_timeout_seconds.max(1),
        ),
        statement_timeout: std::time::Duration::from_secs(
            storage.postgres_statement_timeout_seconds.max(1),
        ),
        holder: node_id(&storage.data_dir)?,
        advertise_url: settings
            .server
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", settings.server.listen)),
        lease: std::time::Duration::from_secs(storage.postgres_lease_seconds.max(1)),
    })
}

/// This node's name in the head row: made once and kept in the data directory, so a restart
/// of the node takes its own lease back at once (and fences its earlier process, if any).
fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_owned());
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut bytes = [0u8; 8];
    rand::fill(&mut bytes);
    let id = format!("{} {:016x}", host.trim(), u64::from_be_bytes(bytes));
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Opens the log `settings` choose: sled in the data directory, or PostgreSQL.
pub fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn LogStore>> {
    Ok(match settings.storage.backend {
        Backend::Sled => Arc::new(open_log(settings)?),
        Backend::Postgres => {
            let options = pg_options(settings)?;
            let store = PgLog::open_postgres(&options).with_context(|| {
                format!(
                    "cannot open the log in PostgreSQL ({})",
                    redacted(&options.url)
                )
            })?;
            Arc::new(store)
        }
    })
}

/// Opens the sled log of a data directory (created private to this user).
pub fn open_log(settings: &Settings) -> anyhow::Result<SledLog> {
    use std::os::unix::fs::DirBuilderExt;
    create_files_private();
    let dir = log_dir(&settings.storage.data_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    for (path, mode) in not_private(&settings.storage.data_dir) {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "others may read this part of the data directory, which holds secrets (docker \
             passwords, environment variables, the development secret): chmod -R go-rwx it"
        );
    }
    let options = SledOptions {
        cache_capacity_bytes: settings.storage.cache_capacity_mb * 1024 * 1024,
    };
    SledLog::open(&dir, &options)
        .with_context(|| format!("cannot open the log in {}", dir.display()))
}

/// Every metric tally exports, in one registry: the engine's, the edge's, the gauges read
/// from the view at scrape time, the process's (CPU, memory, file descriptors) and build info.
fn metrics_registry(
    engine_metrics: &tally_engine::EngineMetrics,
    engine: &Engine,
    http: &tally_http::metrics::HttpMetrics,
    data_dir: &Path,
) -> prometheus::Result<prometheus::Registry> {
    let registry = prometheus::Registry::new();
    engine_metrics.register(&registry)?;
    registry.register(Box::new(engine.view_collector()?))?;
    registry.register(Box::new(crate::telemetry::DiskCollector::new(
        data_dir.to_path_buf(),
    )?))?;
    http.register(&registry)?;
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let build = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "tally_build_info",
            "The running build: its version and git commit (always 1).",
        ),
        &["version", "git_sha"],
    )?;
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("TALLY_GIT_SHA")])
        .set(1);
    registry.register(Box::new(build))?;
    Ok(registry)
}

/// A tally that is listening.
pub struct Application {
    listener: TcpListener,
    /// The admin listener (`[metrics] listen`) and its routes.
    admin: Option<(TcpListener, axum::Router)>,
    engine: Arc<Engine>,
    router: axum::Router,
    /// Ends long polls and streams when shutdown begins.
    close: tokio::sync::watch::Sender<bool>,
    /// The scheduled prune.
    retention: tokio::task::JoinHandle<()>,
    task_clock: tokio::task::JoinHandle<()>,
    cache_keeper: tokio::task::JoinHandle<()>,
    /// Connection bounds and the shutdown grace (`[server]`).
    limits: tally_http::serve::ServeLimits,
    /// What the listeners count.
    connections: tally_http::serve::ServeStats,
}

impl Application {
    /// Opens and recovers the log, starts the writer and binds the listener (port 0 picks one).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // Bound first, so the URL other nodes forward writes to is the port really listened on
        // (connections wait in the backlog until recovery is done).
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
        let local = listener.local_addr()?;
        let mut with_address = settings.clone();
        with_address
            .server
            .advertise_url
            .get_or_insert_with(|| format!("http://{local}"));
        let store = open_store(&with_address)?;
        let config = EngineConfig {
            domain: DomainConfig {
                default_memory_mb: settings.apps.default_memory_mb,
                default_disk_mb: settings.apps.default_disk_mb,
                max_disk_mb: settings.apps.max_disk_mb,
                max_memory_mb: settings
                    .apps
                    .max_memory_mb
                    .clamp(1, tally_domain::limits::MAX_MEMORY_MB),
                staging_mode: match settings.staging.mode {
                    StagingMode::Immediate => tally_domain::StagingMode::Immediate,
                    StagingMode::External => tally_domain::StagingMode::External,
                },
                default_buildpack: settings.staging.default_buildpack.clone(),
                immediate_task_seconds: settings.staging.task_seconds,
                ..DomainConfig::default()
            },
            checkpoint_every: settings.storage.checkpoint_every.max(1),
            renew_every: std::time::Duration::from_secs(
                settings.storage.postgres_lease_seconds.max(1),
            ) / 5,
            ..EngineConfig::default()
        };
        let engine_metrics = config.metrics.clone();
        let engine = tokio::task::spawn_blocking(move || {
            Engine::start(store, config, Box::new(SystemClock), Box::new(RandomIds))
        })
        .await
        .context("recovery task failed")?
        .context("cannot recover the log")?;
        let engine = Arc::new(engine);
        let packages = settings.storage.data_dir.join("packages");
        match tally_http::v2::bits::sweep_packages(&packages, &engine.view().state) {
            Ok((0, _)) => {}
            Ok((files, bytes)) => {
                tracing::info!(files, bytes, "removed package files no package names")
            }
            Err(error) => tracing::warn!(%error, "cannot sweep the packages directory"),
        }
        let external_url = settings
            .server
            .external_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"))
            .trim_end_matches('/')
            .to_owned();
        let verifier = crate::auth::verifier(settings)?;
        let (close, closing) = tally_http::Closing::new();
        let http_metrics = tally_http::metrics::HttpMetrics::new();
        let connections = http_metrics.connections.clone();
        let server = &settings.server;
        let limits = tally_http::serve::ServeLimits {
            header_read_timeout: std::time::Duration::from_secs(
                server.header_read_timeout_seconds.max(1),
            ),
            idle_timeout: std::time::Duration::from_secs(server.idle_timeout_seconds.max(1)),
            max_connections: server.max_connections.max(1),
            shutdown_grace: std::time::Duration::from_secs(server.shutdown_grace_seconds),
        };
        let registry = metrics_registry(
            &engine_metrics,
            &engine,
            &http_metrics,
            &settings.storage.data_dir,
        )
        .context("cannot register the metrics")?;
        let state = Arc::new(AppState {
            engine: engine.clone(),
            settings: HttpSettings {
                info: settings.info.resolve(&external_url),
                external_url,
                uaa_url: settings.uaa.url.clone(),
                request_timeout: std::time::Duration::from_secs(
                    settings.server.request_timeout_seconds.max(1),
                ),
                max_upload_bytes: usize::try_from(
                    settings.server.max_upload_mb.saturating_mul(1024 * 1024),
                )
                .unwrap_or(usize::MAX),
                max_page_bytes: usize::try_from(
                    settings
                        .server
                        .max_page_mb
                        .max(1)
                        .saturating_mul(1024 * 1024),
                )
                .unwrap_or(usize::MAX),
                packages_dir: settings.storage.data_dir.join("packages"),
                staging_callback_password: settings
                    .staging
                    .callback_password
                    .clone()
                    .map(tally_http::Redacted),
                forward_timeout: std::time::Duration::from_secs(
                    settings.storage.postgres_lease_seconds.max(1) + 2,
                ),
            },
            verifier,
            closing,
            metrics: tally_http::metrics::Metrics {
                registry,
                http: http_metrics,
                token: settings.metrics.token.clone().map(tally_http::Redacted),
                on_main_listener: settings.metrics.main_listener,
            },
        });
        let admin = match settings.metrics.listen {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} (metrics.listen)"))?;
                Some((listener, tally_http::admin_router(state.clone())))
            }
            None => None,
        };
        let retention = tokio::spawn(retention(engine.clone(), settings.retention.clone()));
        let task_clock = tokio::spawn(task_clock(engine.clone(), settings.staging.clone()));
        let cache_keeper = tokio::spawn(cache_keeper(engine.clone()));
        Ok(Self {
            listener,
            admin,
            engine,
            close,
            retention,
            task_clock,
            cache_keeper,
            limits,
            connections,
            router: tally_http::router(state),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish,
    /// finishes queued commands, writes a final checkpoint and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let close = self.close;
        let (limits, connections) = (self.limits, self.connections);
        // The admin listener stops when shutdown begins (so readiness stops answering too).
        let admin = self.admin.map(|(listener, router)| {
            let mut closing = close.subscribe();
            let connections = connections.clone();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = closing.wait_for(|closing| *closing).await;
                };
                tally_http::serve::serve(listener, router, limits, connections, |_| {}, stopped)
                    .await
            })
        });
        let shutdown = async move {
            shutdown.await;
            // Long polls answer and streams end now, so in-flight requests can finish.
            let _ = close.send(true);
        };
        let served = tally_http::serve::serve(
            self.listener,
            self.router,
            limits,
            connections,
            set_nodelay,
            shutdown,
        )
        .await;
        self.retention.abort();
        self.task_clock.abort();
        self.cache_keeper.abort();
        if let Some(admin) = admin {
            if served.is_err() {
                // The main listener failed without a shutdown signal: stop the admin one too.
                admin.abort();
            }
            match admin.await {
                Ok(Err(error)) => tracing::warn!(%error, "the admin listener failed"),
                Err(error) if !error.is_cancelled() => {
                    tracing::warn!(%error, "the admin listener task failed")
                }
                Err(_) => {}
                Ok(Ok(())) => {}
            }
        }
        self.engine.shutdown().await;
        served.context("the HTTP server failed")
    }
}

/// Stream frames are small writes: without TCP_NODELAY, Nagle's algorithm and delayed ACKs
/// hold some of them back ~40 ms (measured by the consumers benchmark).
fn set_nodelay(tcp: &tokio::net::TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
}

/// Prunes usage events older than `cutoff_age_days` a minute after start-up, then every
/// `prune_interval_minutes` (reference §4.5; the engine keeps what billing needs).
async fn retention(engine: Arc<Engine>, settings: crate::config::RetentionSettings) {
    if settings.cutoff_age_days == 0 {
        return;
    }
    let interval = std::time::Duration::from_secs(settings.prune_interval_minutes.max(1) * 60);
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    loop {
        #[allow(clippy::disallowed_methods)] // the cutoff is relative to the wall clock, as CC's
        let now = chrono::Utc::now();
        let cutoff = now - chrono::Duration::days(i64::from(settings.cutoff_age_days));
        match engine.prune(cutoff).await {
            Ok(pruned) => tracing::info!(pruned, %cutoff, "retention ran"),
            Err(error) => tracing::warn!(%error, "retention failed; it runs again later"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Every second: if the store was quiet for that second (probes and scrapes aside), it lets go
/// of what the last reads and writes left cached (a consumer that read the whole stream
/// leaves up to `cache_capacity_mb` behind), so an idle tally holds little beyond its view.
async fn cache_keeper(engine: Arc<Engine>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if let Err(error) = engine.release_idle_cache().await {
            tracing::warn!(%error, "releasing the store's cache failed; the next operation opens it again");
        }
    }
}

/// Immediate mode's stand-in for a task runtime (`staging.task_seconds` > 0): about every
/// second, the node that writes completes each running task older than `task_seconds`
/// (SUCCEEDED) and each canceled one (FAILED). A completion that lost a race with another is
/// refused by the domain and ignored. Its cost grows with the tasks kept (they go with their
/// app).
async fn task_clock(engine: Arc<Engine>, settings: crate::config::StagingSettings) {
    if settings.mode != StagingMode::Immediate || settings.task_seconds == 0 {
        return;
    }
    let runs_for =
        chrono::Duration::seconds(i64::try_from(settings.task_seconds).unwrap_or(i64::MAX / 1000));
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if matches!(engine.role(), tally_engine::Role::Follower { .. }) {
            continue;
        }
        #[allow(clippy::disallowed_methods)] // a task's run time is wall-clock time
        let now = chrono::Utc::now();
        let due: Vec<(tally_domain::Guid, bool)> = engine
            .view()
            .state
            .tasks_by_creation()
            .filter_map(|task| match task.state {
                tally_domain::model::TaskState::Canceling => Some((task.guid, true)),
                tally_domain::model::TaskState::Running if task.created_at + runs_for <= now => {
                    Some((task.guid, false))
                }
                _ => None,
            })
            .collect();
        for (guid, canceled) in due {
            let command = tally_domain::Command::CompleteTask {
                guid,
                failed: canceled,
                failure_reason: canceled.then(|| "task was canceled".to_owned()),
            };
            if let Err(error) = engine.submit(tally_domain::Envelope::system(command)).await {
                tracing::debug!(%error, %guid, "a task's completion was refused");
            }
        }
    }
}

/// Registers SIGINT and SIGTERM handlers now (so a signal that arrives right after start-up is
/// not lost to the default action) and returns a future that resolves on the first of them.
/// Must be called inside the tokio runtime.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static>
{
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
            tracing::info!("shutdown signal received; finishing in-flight work");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown signal received; finishing in-flight work");
        })
    }
}
