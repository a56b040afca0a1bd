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
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let overrides = Overrides {
        data_dir: Some(dir.path().join("data")),
        listen: Some("127.0.0.1:0".parse().unwrap()),
    };
    let settings: Settings = tally::config::load(None, Vec::new(), &overrides).unwrap();
    let app = Application::build(&settings).await.unwrap();
    let address = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        data_dir: settings.storage.data_dir,
        stop: Some(stop),
        served: Some(served),
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

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> PathBuf {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
        self.data_dir.clone()
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
            audit_request: "{}".into(),
        })
        .await
        .unwrap();
    }
    engine.shutdown().await;
}
