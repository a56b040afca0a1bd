//! Several tally nodes (the `tally` binary, three processes) on one PostgreSQL when nodes fail:
//! - kill -9 of any node, the writer included, under write load from clients spread over all
//!   nodes: every write answered 201 is in the log exactly once, the others go on taking
//!   writes within the lease (2 s here) and a little, the killed node rejoins when restarted;
//!   `TALLY_NODE_CRASH_ROUNDS` rounds (20 in the suite);
//! - a writer paused (SIGSTOP) past its lease: another node takes over, and once resumed the
//!   paused one commits nothing (the database refuses its appends); it follows from then on.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::serve_with_env;
use crate::helpers::call;
use crate::nodes::cluster_env;

/// One node: a `tally serve` on a port of its own (kept across restarts) and a data directory.
struct Node {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Node {
    fn new(root: &std::path::Path, n: usize, env: &[(String, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut node = Self {
            child: None,
            port,
            dir: root.join(format!("node-{n}")),
            env: env.to_vec(),
        };
        node.start();
        node
    }

    fn start(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let (child, _, _) = serve_with_env(
            self.dir.parent().unwrap(),
            &[
                "--listen",
                &listen,
                "--data-dir",
                self.dir.to_str().unwrap(),
            ],
            &self.env,
        );
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal_pid(child.id(), "-TERM");
            assert!(child.wait().unwrap().success());
        }
    }

    fn signal_pid(&self, pid: u32, signal: &str) {
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An admin's token every node accepts (they share the secret).
fn admin_token(env: &[(String, String)]) -> String {
    let settings = tally::config::load(None, env.to_vec(), &Default::default()).unwrap();
    tally::auth::developer_token(
        &settings,
        "admin",
        &["cloud_controller.admin".to_owned()],
        3600,
    )
    .unwrap()
}

/// What `/readyz` says the node at `url` does, if it answers 200.
async fn role(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client
        .get(format!("{url}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body["role"].as_str().map(str::to_owned)
}

/// Waits until exactly one node says it writes; its index.
async fn writer_of(client: &reqwest::Client, urls: &[String], within: Duration) -> usize {
    let started = Instant::now();
    loop {
        let mut writers = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            if role(client, url).await.as_deref() == Some("writer") {
                writers.push(i);
            }
        }
        if writers.len() == 1 {
            return writers[0];
        }
        assert!(
            started.elapsed() < within,
            "no single writer within {within:?}: {writers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An org, a space and `count` apps, through the first node; their guids.
async fn apps(client: &reqwest::Client, token: &str, url: &str, count: usize) -> Vec<String> {
    let post =
        |path: &'static str, body: Value| call(client, token, url, Method::POST, path, Some(body));
    let (_, org) = post("/v2/organizations", json!({"name": "o"}))
        .await
        .unwrap();
    let (_, space) = post(
        "/v2/spaces",
        json!({"name": "s", "organization_guid": org["metadata"]["guid"]}),
    )
    .await
    .unwrap();
    let mut guids = Vec::new();
    for n in 0..count {
        let (status, app) = post(
            "/v2/apps",
            json!({"name": format!("app-{n}"), "space_guid": space["metadata"]["guid"], "docker_image": "nginx"}),
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{app}");
        guids.push(app["metadata"]["guid"].as_str().unwrap().to_owned());
    }
    guids
}

/// Clients renaming their own apps, each request to the next node in turn, until `stop`:
/// the names answered 201, and the longest time any client went without one.
fn clients(
    urls: &[String],
    token: &str,
    guids: &[String],
    round: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Vec<String>, Duration)>> {
    (0..4)
        .map(|k| {
            let (urls, token, stop) = (urls.to_vec(), token.to_owned(), stop.clone());
            let mine: Vec<String> = guids.iter().skip(k).step_by(4).cloned().collect();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut acked, mut longest, mut last) =
                    (Vec::new(), Duration::ZERO, Instant::now());
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("r{round}-c{k}-{n}");
                    let url = &urls[n % urls.len()];
                    let app = &mine[n % mine.len()];
                    let path = format!("/v2/apps/{app}");
                    match call(
                        &client,
                        &token,
                        url,
                        Method::PUT,
                        &path,
                        Some(json!({"name": name})),
                    )
                    .await
                    {
                        Some((201, _)) => {
                            acked.push(name);
                            longest = longest.max(last.elapsed());
                            last = Instant::now();
                        }
                        Some((503, body)) => {
                            assert_eq!(body["error_code"], "CF-ServiceUnavailable", "{body}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Some((status, body)) => panic!("a write answered {status}: {body}"),
                        // A node that is down (or killed mid-request: the outcome is unknown).
                        None => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                (acked, longest.max(last.elapsed()))
            })
        })
        .collect()
}

fn rounds() -> usize {
    std::env::var("TALLY_NODE_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_any_node_under_load_loses_nothing_and_the_others_go_on() {
    let cluster = tally_pgcluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let env = cluster_env(&cluster.url(&cluster.database("failover").unwrap()));
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (0..3).map(|n| Node::new(root.path(), n, &env)).collect();
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let client = reqwest::Client::new();
    let token = admin_token(&env);
    let guids = apps(&client, &token, &urls[0], 12).await;
    let mut acknowledged = HashSet::new();
    let mut slowest = Duration::ZERO;
    for round in 0..rounds() {
        let writer = writer_of(&client, &urls, Duration::from_secs(20)).await;
        // The writer in even rounds, a follower in odd ones.
        let victim = if round % 2 == 0 {
            writer
        } else {
            (writer + 1 + round / 2 % 2) % 3
        };
        let stop = Arc::new(AtomicBool::new(false));
        let running = clients(&urls, &token, &guids, round, &stop);
        tokio::time::sleep(Duration::from_millis(300)).await;
        nodes[victim].kill();
        // The others go on: a write through a survivor succeeds within the lease and a bit.
        let killed = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let survivor = &urls[(victim + 1) % 3];
        loop {
            let probe = format!("probe-{round}");
            let path = format!("/v2/apps/{}", guids[0]);
            match call(
                &client,
                &token,
                survivor,
                Method::PUT,
                &path,
                Some(json!({"name": probe})),
            )
            .await
            {
                Some((201, _)) => {
                    acknowledged.insert(probe);
                    break;
                }
                _ => {
                    assert!(
                        killed.elapsed() < Duration::from_secs(10),
                        "round {round}: no write went through within 10 s of killing node {victim}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let took = killed.elapsed();
        stop.store(true, Ordering::Relaxed);
        for client in running {
            let (acked, _) = client.await.unwrap();
            for name in acked {
                assert!(acknowledged.insert(name), "a name acknowledged twice");
            }
        }
        if victim == writer {
            slowest = slowest.max(took);
        }
        // The killed node rejoins by itself.
        nodes[victim].start();
        let started = Instant::now();
        while role(&client, &urls[victim]).await.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "node {victim} did not rejoin"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("writes went on at most {slowest:?} after the writer was killed");
    for node in &mut nodes {
        node.stop();
    }
    crate::helpers::each_acknowledged_rename_once(&nodes[0].dir, &env, &acknowledged);
    assert!(
        acknowledged.len() > rounds() * 10,
        "{} writes",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_paused_past_its_lease_commits_nothing_once_it_resumes() {
    let cluster = tally_pgcluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let env = cluster_env(&cluster.url(&cluster.database("paused").unwrap()));
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (0..3).map(|n| Node::new(root.path(), n, &env)).collect();
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let client = reqwest::Client::new();
    let token = admin_token(&env);
    let guids = apps(&client, &token, &urls[0], 4).await;
    let paused = writer_of(&client, &urls, Duration::from_secs(20)).await;
    nodes[paused].signal("-STOP");
    // Writes sent to the paused node wait in its socket until it resumes.
    let held: Vec<_> = (0..4)
        .map(|n| {
            let (client, token, url) = (client.clone(), token.clone(), urls[paused].clone());
            let path = format!("/v2/apps/{}", guids[n]);
            tokio::spawn(async move {
                let name = format!("held-{n}");
                let answer = call(
                    &client,
                    &token,
                    &url,
                    Method::PUT,
                    &path,
                    Some(json!({"name": name})),
                )
                .await;
                (name, answer)
            })
        })
        .collect();
    // Another node takes the lease once it ran out (2 s), and takes writes.
    let others: Vec<String> = (0..3)
        .filter(|i| *i != paused)
        .map(|i| urls[i].clone())
        .collect();
    let started = Instant::now();
    let mut acknowledged = HashSet::new();
    loop {
        let path = format!("/v2/apps/{}", guids[0]);
        if let Some((201, _)) = call(
            &client,
            &token,
            &others[0],
            Method::PUT,
            &path,
            Some(json!({"name": "after"})),
        )
        .await
        {
            acknowledged.insert("after".to_owned());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "another node took writes {:?} after the writer was paused",
        started.elapsed()
    );
    nodes[paused].signal("-CONT");
    // What the resumed node was holding: refused (its term is gone) or passed to the new
    // writer; whatever was answered 201 is in the log once.
    for request in held {
        let (name, answer) = request.await.unwrap();
        match answer {
            Some((201, _)) => {
                acknowledged.insert(name);
            }
            Some((503, body)) => assert_eq!(body["error_code"], "CF-ServiceUnavailable", "{body}"),
            other => panic!("the resumed node answered {other:?}"),
        }
    }
    // It follows now, and says so.
    let started = Instant::now();
    while role(&client, &urls[paused]).await.as_deref() != Some("follower") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the resumed node still writes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = client
        .get(format!("{}/metrics", urls[paused]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tally_lease_changes_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    for node in &mut nodes {
        node.stop();
    }
    crate::helpers::each_acknowledged_rename_once(&nodes[0].dir, &env, &acknowledged);
}
