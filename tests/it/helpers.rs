//! Starting tally for a test.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tally::config::{Overrides, Settings};
use tally::startup::Application;
use tally_domain::{Actor, AppAttributes, Command, Envelope, Guid};
use tally_engine::{Engine, EngineConfig, RandomIds, SystemClock};
use tally_store::{LogStore, SledLog, SledOptions};
use tokio::sync::oneshot;

/// A tally serving on a random port, with its own data directory.
pub struct TestApp {
    pub address: String,
    /// The admin listener (`TALLY_METRICS__LISTEN`), if configured.
    pub admin_address: Option<String>,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    pub settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_in(tempfile::tempdir().unwrap(), Vec::new()).await
}

/// The `TALLY_…` variables of a tally whose log is a new database of its own in the test
/// process's PostgreSQL (`tally-pgcluster`, started on first use).
pub fn postgres_env() -> Vec<(String, String)> {
    let cluster = tally_pgcluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let database = cluster.database("it").unwrap();
    vec![
        ("TALLY_STORAGE__BACKEND".into(), "postgres".into()),
        ("TALLY_STORAGE__POSTGRES_URL".into(), cluster.url(&database)),
    ]
}

/// Where a test's tally keeps its log: the embedded default, or PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub enum Store {
    Sled,
    Postgres,
}

impl Store {
    /// The variables that choose it.
    pub fn env(self) -> Vec<(String, String)> {
        match self {
            Self::Sled => Vec::new(),
            Self::Postgres => postgres_env(),
        }
    }
}

/// The log the settings of `env` choose for `data_dir`, opened read-only for a test's checks
/// (a PostgreSQL snapshot fences nobody).
pub fn open_for_checks(data_dir: &Path, env: &[(String, String)]) -> Box<dyn LogStore> {
    let overrides = Overrides {
        data_dir: Some(data_dir.to_path_buf()),
        listen: None,
    };
    let settings = tally::config::load(None, env.to_vec(), &overrides).unwrap();
    match settings.storage.backend {
        tally::config::Backend::Sled => {
            Box::new(SledLog::open(&data_dir.join("log"), &SledOptions::default()).unwrap())
        }
        tally::config::Backend::Postgres => Box::new(
            tally_store::PgLog::open_postgres_snapshot(
                &tally::startup::pg_options(&settings).unwrap(),
            )
            .unwrap(),
        ),
    }
}

/// A tally on `store`, with its own data directory.
pub async fn spawn_app_with(store: Store) -> TestApp {
    spawn_app_in(tempfile::tempdir().unwrap(), store.env()).await
}

/// A tally on `<dir>/data`, with settings from these `TALLY_…` variables.
pub async fn spawn_app_in(dir: tempfile::TempDir, env: Vec<(String, String)>) -> TestApp {
    spawn_app_on(dir, env, "127.0.0.1:0").await
}

/// [`spawn_app_in`] listening on `listen` (a restarted server keeps its address this way).
pub async fn spawn_app_on(
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    listen: &str,
) -> TestApp {
    let overrides = Overrides {
        data_dir: Some(dir.path().join("data")),
        listen: Some(listen.parse().unwrap()),
    };
    let settings: Settings = tally::config::load(None, env, &overrides).unwrap();
    let app = Application::build(&settings).await.unwrap();
    let address = format!("http://{}", app.local_addr().unwrap());
    let admin_address = app.admin_addr().map(|a| format!("http://{a}"));
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        admin_address,
        client: reqwest::Client::new(),
        data_dir: settings.storage.data_dir.clone(),
        stop: Some(stop),
        served: Some(served),
        settings,
        _dir: dir,
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    /// A request with a development token for `user` with `scopes`.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
        scopes: &[&str],
    ) -> reqwest::RequestBuilder {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let token = tally::auth::developer_token(&self.settings, user, &scopes, 600).unwrap();
        self.client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(token)
    }

    /// Stops the server gracefully and waits for it; the data directory stays.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
        let (_, dir) = self.into_dir();
        dir
    }

    fn into_dir(self) -> (PathBuf, tempfile::TempDir) {
        let TestApp { data_dir, _dir, .. } = self;
        (data_dir, _dir)
    }
}

/// Writes some history into a data directory through the engine (the write API comes later):
/// an org, a space and `apps` started docker apps.
pub async fn write_history(data_dir: &Path, apps: u128) {
    let dir = data_dir.join("log");
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn LogStore> = Arc::new(SledLog::open(&dir, &SledOptions::default()).unwrap());
    let engine = Engine::start(
        store,
        EngineConfig::default(),
        Box::new(SystemClock),
        Box::new(RandomIds),
    )
    .unwrap();
    let submit = |command| {
        engine.submit(Envelope {
            command,
            actor: Actor::system(),
            principal: None,
        })
    };
    let (org, space) = (Guid::from_u128(1), Guid::from_u128(2));
    submit(Command::CreateOrg {
        guid: org,
        name: "o".into(),
    })
    .await
    .unwrap();
    submit(Command::CreateSpace {
        guid: space,
        org_guid: org,
        name: "s".into(),
    })
    .await
    .unwrap();
    for n in 0..apps {
        submit(Command::CreateApp {
            guid: Guid::from_u128(100 + n),
            attributes: AppAttributes {
                name: Some(format!("app-{n}")),
                space_guid: Some(space),
                docker_image: Some("nginx".into()),
                state: Some("STARTED".into()),
                ..Default::default()
            },
            audit_request: tally_domain::audit::Value::empty(),
        })
        .await
        .unwrap();
    }
    engine.shutdown().await;
}

/// The usage events in a stopped tally's data directory: `(state, previous_state,
/// instance_count, app_name)` in log order.
pub fn usage_events(data_dir: &Path) -> Vec<(String, Option<String>, i64, String)> {
    let store = SledLog::open(&data_dir.join("log"), &SledOptions::default()).unwrap();
    let meta = store.recover().unwrap().meta;
    store
        .usage_range(meta.usage_floor, meta.head, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, u)| {
            (
                u.state.as_str().to_owned(),
                u.previous_state.map(|s| s.as_str().to_owned()),
                u.instance_count,
                u.app_name,
            )
        })
        .collect()
}

/// The audit event types in a stopped tally's data directory, in log order.
pub fn audit_types(data_dir: &Path) -> Vec<String> {
    let store = SledLog::open(&data_dir.join("log"), &SledOptions::default()).unwrap();
    let meta = store.recover().unwrap().meta;
    store
        .audit_range(1, meta.head, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, a)| a.event_type)
        .collect()
}

impl TestApp {
    /// An org `o` and a space `s` in it, created by an admin; their guids.
    pub async fn org_and_space(&self) -> (String, String) {
        let (status, org) = self
            .admin(
                reqwest::Method::POST,
                "/v2/organizations",
                Some(serde_json::json!({"name": "o"})),
            )
            .await;
        assert_eq!(status, 201, "{org}");
        let org = org["metadata"]["guid"].as_str().unwrap().to_owned();
        let (status, space) = self
            .admin(
                reqwest::Method::POST,
                "/v2/spaces",
                Some(serde_json::json!({"name": "s", "organization_guid": org})),
            )
            .await;
        assert_eq!(status, 201, "{space}");
        (org, space["metadata"]["guid"].as_str().unwrap().to_owned())
    }

    /// A v3 purge-and-reseed by an admin, which must succeed.
    pub async fn purge(&self) {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/v3/app_usage_events/actions/destructively_purge_all_and_reseed",
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Global admin scopes for [`TestApp::admin`].
pub const ADMIN: &[&str] = &["cloud_controller.admin"];

impl TestApp {
    /// A request as a global admin, with an optional JSON body; the status and the JSON answer
    /// (`null` when the body is not JSON).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self.request(method, path, "admin", ADMIN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// `tally verify` on a stopped data directory: whether it passed, and what it printed.
pub fn verify(data_dir: &Path) -> (bool, String) {
    verify_with_env(data_dir, &[])
}

/// [`verify`] with these variables (the store they choose).
pub fn verify_with_env(data_dir: &Path, env: &[(String, String)]) -> (bool, String) {
    let data_dir = data_dir.to_string_lossy();
    run_tally(&["verify", "--data-dir", &data_dir], env)
}

/// Runs the `tally` binary with these arguments and variables (and no `TALLY_TOKEN` from the
/// test's own environment); whether it succeeded, and everything it printed.
pub fn run_tally(args: &[&str], env: &[(String, String)]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("TALLY_TOKEN")
        .output()
        .unwrap();
    (output.status.success(), printed(&output))
}

/// Everything a finished command printed: its standard output, then its standard error.
pub fn printed(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The log of `data_dir` (as `env` chooses it) verifies, and holds every acknowledged rename
/// exactly once and no rename twice.
pub fn each_acknowledged_rename_once(
    data_dir: &Path,
    env: &[(String, String)],
    acknowledged: &std::collections::HashSet<String>,
) {
    let (ok, report) = verify_with_env(data_dir, env);
    assert!(ok, "{report}");
    let renamed = renames_in(open_for_checks(data_dir, env).as_ref());
    for name in acknowledged {
        assert_eq!(
            renamed.get(name),
            Some(&1),
            "acknowledged write {name} is not in the log exactly once"
        );
    }
    assert!(
        renamed.values().all(|n| *n == 1),
        "a write was applied twice"
    );
}

/// How many times each name was given by an `audit.app.update` request in the log.
pub fn renames_in(store: &dyn LogStore) -> std::collections::HashMap<String, usize> {
    let head = store.recover().unwrap().meta.head;
    let mut renamed = std::collections::HashMap::new();
    for (_, audit) in store.audit_range(1, head, usize::MAX).unwrap() {
        if audit.event_type != "audit.app.update" {
            continue;
        }
        let name = audit.metadata.get("request").and_then(|r| r.get("name"));
        if let Some(tally_domain::audit::Value::String(name)) = name {
            *renamed.entry(name.clone()).or_default() += 1;
        }
    }
    renamed
}

/// An org, a space and `count` started docker apps on the tally at `url`, 32 requests at a time.
pub async fn started_apps(url: &str, token: &str, count: usize) {
    use futures_util::StreamExt;
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{url}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let org: serde_json::Value = post("/v2/organizations", serde_json::json!({"name": "o"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let space: serde_json::Value = post(
        "/v2/spaces",
        serde_json::json!({"name": "s", "organization_guid": org["metadata"]["guid"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let space = space["metadata"]["guid"].clone();
    futures_util::stream::iter(0..count)
        .map(|n| {
            let body = serde_json::json!({"name": format!("app-{n}"), "space_guid": space,
                                          "docker_image": "nginx", "state": "STARTED"});
            let request = post("/v2/apps", body);
            async move {
                assert_eq!(request.await.unwrap().status(), 201);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// A request to the tally at `url` with `token` and an optional JSON body: the status and the
/// JSON answer (`null` when none), or `None` when no answer came (the server is down or was
/// killed mid-request: the outcome is unknown).
pub async fn call(
    client: &reqwest::Client,
    token: &str,
    url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Option<(u16, serde_json::Value)> {
    let mut request = client
        .request(method, format!("{url}{path}"))
        .bearer_auth(token)
        .timeout(std::time::Duration::from_secs(15));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.ok()?;
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    ))
}
