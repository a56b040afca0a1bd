//! kill -9 of the real server (the `tally` binary) under HTTP write load from several
//! clients, restarted, repeated: every request answered 2xx is in the log exactly once, the
//! sequence is dense, `verify` passes, and a consumer resumes from its cursor without a gap or
//! a duplicate. Also kill -9 in the middle of a purge-and-reseed: afterwards the data is
//! entirely the old epoch or entirely the new one.
//!
//! Rounds: `TALLY_HTTP_CRASH_ROUNDS` (20 in the suite; 100 for the long run:
//! `TALLY_HTTP_CRASH_ROUNDS=100 cargo test --release --test it crash`).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::cli::serve_with_env;
use crate::helpers::Store;
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

const CLIENTS: usize = 4;
const APPS_PER_CLIENT: usize = 3;

/// A `tally serve` child on `data_dir`, with an admin token.
struct Server {
    child: Child,
    url: String,
    token: String,
    client: reqwest::Client,
}

impl Server {
    fn start(cwd: &Path, data_dir: &Path, env: &[(String, String)]) -> Self {
        let (child, address, _lines) = serve_with_env(
            cwd,
            &[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_dir.to_str().unwrap(),
            ],
            env,
        );
        let overrides = tally::config::Overrides {
            data_dir: Some(data_dir.to_path_buf()),
            listen: None,
        };
        let settings = tally::config::load(None, Vec::new(), &overrides).unwrap();
        let token = tally::auth::developer_token(
            &settings,
            "admin",
            &["cloud_controller.admin".to_owned()],
            3600,
        )
        .unwrap();
        Self {
            child,
            url: format!("http://{address}"),
            token,
            client: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
        crate::helpers::call(&self.client, &self.token, &self.url, method, path, body).await
    }

    /// SIGKILL: no graceful anything.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(self.child.wait().unwrap().success());
    }
}

/// Follows the usage events with `after_guid` pages until it is caught up; panics if a cursor
/// is refused (a gap) or an event comes twice.
async fn follow(server: &Server, received: &mut Vec<String>, seen: &mut HashSet<String>) {
    loop {
        let path = match received.last() {
            Some(last) => format!("/v3/app_usage_events?per_page=50&after_guid={last}"),
            None => "/v3/app_usage_events?per_page=50".to_owned(),
        };
        let Some((status, page)) = server.call(Method::GET, &path, None).await else {
            return; // the server is gone; resume after the restart
        };
        assert_eq!(status, 200, "the consumer's cursor was refused: {page}");
        let events = page["resources"].as_array().unwrap();
        if events.is_empty() {
            return;
        }
        for event in events {
            let guid = event["guid"].as_str().unwrap().to_owned();
            assert!(seen.insert(guid.clone()), "event {guid} delivered twice");
            received.push(guid);
        }
    }
}

fn rounds() -> usize {
    std::env::var("TALLY_HTTP_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_http_write_load_loses_and_duplicates_nothing() {
    kill_9_under_load(Store::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_kill_9_under_http_write_load_loses_and_duplicates_nothing() {
    kill_9_under_load(Store::Postgres).await;
}

async fn kill_9_under_load(store: Store) {
    let env = store.env();
    let cwd = tempfile::tempdir().unwrap();
    let data_dir = cwd.path().join("data");
    let server = Server::start(cwd.path(), &data_dir, &env);
    let (_, org) = server
        .call(
            Method::POST,
            "/v2/organizations",
            Some(json!({"name": "o"})),
        )
        .await
        .unwrap();
    let org = org["metadata"]["guid"].as_str().unwrap().to_owned();
    let (_, space) = server
        .call(
            Method::POST,
            "/v2/spaces",
            Some(json!({"name": "s", "organization_guid": org})),
        )
        .await
        .unwrap();
    let space = space["metadata"]["guid"].as_str().unwrap().to_owned();
    let mut apps = Vec::new();
    for n in 0..CLIENTS * APPS_PER_CLIENT {
        let (status, app) = server
            .call(
                Method::POST,
                "/v2/apps",
                Some(json!({"name": format!("app-{n}"), "space_guid": space, "docker_image": "nginx"})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201);
        apps.push(app["metadata"]["guid"].as_str().unwrap().to_owned());
    }
    let mut server = Some(server);
    // Every rename answered 201, by its unique new name.
    let mut acknowledged: HashSet<String> = HashSet::new();
    let mut consumed = Vec::new();
    let mut seen = HashSet::new();
    let mut counter = 0usize;
    for round in 0..rounds() {
        let live = match server.take() {
            Some(live) => live,
            None => Server::start(cwd.path(), &data_dir, &env),
        };
        // The consumer resumes from its cursor first.
        follow(&live, &mut consumed, &mut seen).await;
        let pid = live.child.id();
        let live = std::sync::Arc::new(live);
        let writers: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let live = live.clone();
                let mine: Vec<String> =
                    apps[k * APPS_PER_CLIENT..(k + 1) * APPS_PER_CLIENT].to_vec();
                let first = counter + k * 100_000;
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for n in first.. {
                        let name = format!("r{round}-c{k}-{n}");
                        let state = if n % 2 == 0 { "STARTED" } else { "STOPPED" };
                        let app = &mine[n % mine.len()];
                        match live
                            .call(
                                Method::PUT,
                                &format!("/v2/apps/{app}"),
                                Some(json!({"name": name, "state": state})),
                            )
                            .await
                        {
                            Some((201, _)) => acked.push(name),
                            Some((status, body)) => panic!("PUT answered {status}: {body}"),
                            None => break, // killed
                        }
                    }
                    acked
                })
            })
            .collect();
        let delay = rand::rng().random_range(150..450);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        // The writers hold the server; kill it by its pid.
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        let mut round_acks = 0;
        for writer in writers {
            let acked = writer.await.unwrap();
            round_acks += acked.len();
            for name in acked {
                assert!(acknowledged.insert(name));
            }
        }
        if let Some(mut live) = std::sync::Arc::into_inner(live) {
            let _ = live.child.wait();
        }
        assert!(round_acks > 0, "round {round}: no write was acknowledged");
        counter += 1_000_000;
    }
    // A last restart: the consumer catches up; then a graceful stop and a check of the log.
    let live = Server::start(cwd.path(), &data_dir, &env);
    follow(&live, &mut consumed, &mut seen).await;
    // Every event, read independently through v2 pages.
    let mut all: Vec<String> = Vec::new();
    loop {
        let path = match all.last() {
            Some(last) => format!("/v2/app_usage_events?results-per-page=10000&after_guid={last}"),
            None => "/v2/app_usage_events?results-per-page=10000".to_owned(),
        };
        let (_, page) = live.call(Method::GET, &path, None).await.unwrap();
        let page = page["resources"].as_array().unwrap();
        if page.is_empty() {
            break;
        }
        all.extend(
            page.iter()
                .map(|e| e["metadata"]["guid"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(consumed, all, "the consumer saw every event once, in order");
    live.stop();

    crate::helpers::each_acknowledged_rename_once(&data_dir, &env, &acknowledged);
    assert!(acknowledged.len() >= rounds());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_purge_leaves_the_old_epoch_or_the_new_one_whole() {
    kill_9_during_a_purge(Store::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_kill_9_during_a_purge_leaves_the_old_epoch_or_the_new_one_whole() {
    kill_9_during_a_purge(Store::Postgres).await;
}

async fn kill_9_during_a_purge(store: Store) {
    let env = store.env();
    let cwd = tempfile::tempdir().unwrap();
    let data_dir = cwd.path().join("data");
    let server = Server::start(cwd.path(), &data_dir, &env);
    crate::helpers::started_apps(&server.url, &server.token, 3000).await;
    // How long one purge takes here, so the kills below land before, during and after one.
    let timed = std::time::Instant::now();
    let (status, _) = server
        .call(
            Method::POST,
            "/v3/app_usage_events/actions/destructively_purge_all_and_reseed",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let purge_takes = timed.elapsed();
    let mut server = Some(server);
    let mut outcomes = HashSet::new();
    for round in 0..6 {
        let live = server
            .take()
            .unwrap_or_else(|| Server::start(cwd.path(), &data_dir, &env));
        let (_, before) = live
            .call(
                Method::GET,
                "/v2/app_usage_events?results-per-page=10000",
                None,
            )
            .await
            .unwrap();
        let before = before["resources"].clone();
        let (_, epoch) = live.call(Method::GET, "/readyz", None).await.unwrap();
        let epoch = epoch["epoch"].as_u64().unwrap();
        let purge = {
            let (client, url, token) = (live.client.clone(), live.url.clone(), live.token.clone());
            tokio::spawn(async move {
                client
                    .post(format!(
                        "{url}/v3/app_usage_events/actions/destructively_purge_all_and_reseed"
                    ))
                    .bearer_auth(token)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        };
        // Kill somewhere between before the purge arrives and after it committed.
        tokio::time::sleep(purge_takes * round / 3).await;
        live.kill();
        let acked = purge.await.unwrap().ok() == Some(200);
        let live = Server::start(cwd.path(), &data_dir, &env);
        let (_, now) = live.call(Method::GET, "/readyz", None).await.unwrap();
        let (_, after) = live
            .call(
                Method::GET,
                "/v2/app_usage_events?results-per-page=10000",
                None,
            )
            .await
            .unwrap();
        let after = after["resources"].as_array().unwrap().clone();
        if now["epoch"].as_u64().unwrap() == epoch {
            assert!(!acked, "an acknowledged purge was lost");
            assert_eq!(Value::Array(after), before, "the old epoch changed");
            outcomes.insert("old");
        } else {
            assert_eq!(now["epoch"].as_u64().unwrap(), epoch + 1);
            assert_eq!(
                after.len(),
                3000,
                "the new epoch holds exactly the reseeded events"
            );
            assert!(after
                .iter()
                .all(|e| e["entity"]["state"] == "STARTED"
                    && e["entity"]["previous_state"] == "STARTED"));
            outcomes.insert("new");
        }
        server = Some(live);
    }
    if let Some(live) = server {
        live.stop();
    }
    let (ok, report) = crate::helpers::verify_with_env(&data_dir, &env);
    assert!(ok, "{report}");
    // Both outcomes happen over the rounds (early kills and late ones).
    assert!(outcomes.contains("new"), "{outcomes:?}");
}
