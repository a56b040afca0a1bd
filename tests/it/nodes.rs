//! Several tally nodes on one PostgreSQL database (issue "tally on PostgreSQL, 2 of 2"): one
//! node holds the lease and writes, any node takes any request (the others forward writes to
//! it), a request sees every write acknowledged before it started on every node, cursors and
//! pages go from node to node, long polls on any node deliver what another committed, and a
//! purge through any node is one epoch switch all of them see.
//!
//! The nodes here run in the test process (three `Application`s, each with its own data
//! directory and port); `tests/it/failover.rs` runs them as processes to kill and pause them.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_in, TestApp};

/// The settings every node of a cluster shares: one database, one token secret, a short lease.
pub fn cluster_env(url: &str) -> Vec<(String, String)> {
    vec![
        ("TALLY_STORAGE__BACKEND".into(), "postgres".into()),
        ("TALLY_STORAGE__POSTGRES_URL".into(), url.into()),
        ("TALLY_STORAGE__POSTGRES_LEASE_SECONDS".into(), "2".into()),
        (
            "TALLY_AUTH__HMAC_SECRETS".into(),
            "[\"a secret every node of this test shares\"]".into(),
        ),
    ]
}

/// Three nodes on a new database of the shared test PostgreSQL.
async fn three_nodes() -> Vec<TestApp> {
    let cluster = tally_pgcluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let env = cluster_env(&cluster.url(&cluster.database("nodes").unwrap()));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(spawn_app_in(tempfile::tempdir().unwrap(), env.clone()).await);
    }
    nodes
}

/// What `/readyz` says a node does (`writer` or `follower`).
async fn role(node: &TestApp) -> String {
    let body: Value = node.get("/readyz").await.json().await.unwrap();
    body["role"].as_str().unwrap_or("unready").to_owned()
}

fn guid(body: &Value) -> String {
    body["metadata"]["guid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_takes_any_request_and_every_node_reads_every_acknowledged_write() {
    let nodes = three_nodes().await;
    let mut roles = Vec::new();
    for node in &nodes {
        roles.push(role(node).await);
    }
    assert_eq!(
        roles.iter().filter(|r| *r == "writer").count(),
        1,
        "exactly one writer: {roles:?}"
    );
    assert_eq!(roles.iter().filter(|r| *r == "follower").count(), 2);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // Each step on one node, the check at once on the next: no sleep anywhere.
    for round in 0..5 {
        let (status, org) = a
            .admin(
                Method::POST,
                "/v2/organizations",
                Some(json!({ "name": format!("org-{round}") })),
            )
            .await;
        assert_eq!(status, 201, "{org}");
        let (status, space) = b
            .admin(
                Method::POST,
                "/v2/spaces",
                Some(json!({ "name": "dev", "organization_guid": guid(&org) })),
            )
            .await;
        assert_eq!(status, 201, "{space}");
        let (status, app) = c
            .admin(
                Method::POST,
                "/v2/apps",
                Some(json!({ "name": "web", "space_guid": guid(&space), "docker_image": "nginx" })),
            )
            .await;
        assert_eq!(status, 201, "{app}");
        let path = format!("/v2/apps/{}", guid(&app));
        // Create on C, GET on A.
        let (status, got) = a.admin(Method::GET, &path, None).await;
        assert_eq!(status, 200, "round {round}: {got}");
        // Start on B, GET on C says STARTED.
        let (status, started) = b
            .admin(Method::PUT, &path, Some(json!({ "state": "STARTED" })))
            .await;
        assert_eq!(status, 201, "{started}");
        let (_, got) = c.admin(Method::GET, &path, None).await;
        assert_eq!(got["entity"]["state"], "STARTED", "round {round}: {got}");
        // Delete on C, GET on A is 404.
        let (status, _) = c.admin(Method::DELETE, &path, None).await;
        assert_eq!(status, 204);
        let (status, got) = a.admin(Method::GET, &path, None).await;
        assert_eq!(status, 404, "round {round}: {got}");
    }
    // Paging from node to node: the pages of A, B, C, A, ... are the one list, in order.
    let (_, all) = a
        .admin(Method::GET, "/v3/app_usage_events?per_page=5000", None)
        .await;
    let all: Vec<String> = all["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["guid"].as_str().unwrap().to_owned())
        .collect();
    assert!(all.len() >= 15, "{} usage events", all.len());
    let mut paged: Vec<String> = Vec::new();
    for turn in 0.. {
        let node = &nodes[turn % 3];
        let path = match paged.last() {
            Some(last) => format!("/v3/app_usage_events?per_page=2&after_guid={last}"),
            None => "/v3/app_usage_events?per_page=2".to_owned(),
        };
        let (status, page) = node.admin(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        let events = page["resources"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        paged.extend(
            events
                .iter()
                .map(|e| e["guid"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(
        paged, all,
        "paging across nodes skipped or repeated an event"
    );
    // The followers passed their writes on, and say so.
    for (node, role) in nodes.iter().zip(&roles) {
        let metrics = node.get("/metrics").await.text().await.unwrap();
        let forwarded = metrics
            .lines()
            .find(|l| l.starts_with("tally_forwarded_writes_total{outcome=\"answered\"}"));
        match role.as_str() {
            "follower" => assert!(forwarded.is_some(), "{metrics}"),
            _ => assert!(
                metrics.contains("tally_node_role{role=\"writer\"} 1"),
                "{metrics}"
            ),
        }
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_on_any_node_delivers_what_another_node_committed() {
    let nodes = three_nodes().await;
    let (org, space) = nodes[0].org_and_space().await;
    let _ = org;
    let mut latencies = Vec::new();
    for round in 0..10 {
        let (writer, watcher) = (&nodes[round % 3], &nodes[(round + 1) % 3]);
        let (_, page) = watcher
            .admin(Method::GET, "/v3/app_usage_events?per_page=5000", None)
            .await;
        let last = page["resources"]
            .as_array()
            .unwrap()
            .last()
            .map(|e| e["guid"].as_str().unwrap().to_owned());
        let path = match &last {
            Some(last) => format!("/v3/app_usage_events?wait=10&after_guid={last}"),
            None => "/v3/app_usage_events?wait=10".to_owned(),
        };
        let poll = watcher.request(Method::GET, &path, "admin", crate::helpers::ADMIN);
        let polling = tokio::spawn(async move {
            let page: Value = poll.send().await.unwrap().json().await.unwrap();
            (Instant::now(), page)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, app) = writer
            .admin(
                Method::POST,
                "/v2/apps",
                Some(json!({
                    "name": format!("app-{round}"), "space_guid": space,
                    "docker_image": "nginx", "state": "STARTED",
                })),
            )
            .await;
        let committed = Instant::now();
        assert_eq!(status, 201, "{app}");
        let (delivered, page) = polling.await.unwrap();
        let events = page["resources"].as_array().unwrap();
        assert!(
            !events.is_empty(),
            "the long poll on another node ended without the event: {page}"
        );
        assert_eq!(events[0]["app"]["guid"], guid(&app), "{page}");
        latencies.push(delivered.saturating_duration_since(committed));
    }
    latencies.sort();
    eprintln!(
        "commit on one node to long-poll answer on another: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_through_a_follower_is_one_epoch_switch_every_node_sees() {
    let nodes = three_nodes().await;
    let (_, space) = nodes[0].org_and_space().await;
    for n in 0..4 {
        let (status, body) = nodes[n % 3]
            .admin(
                Method::POST,
                "/v2/apps",
                Some(json!({
                    "name": format!("app-{n}"), "space_guid": space,
                    "docker_image": "nginx", "state": "STARTED",
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, before) = nodes[2]
        .admin(Method::GET, "/v3/app_usage_events?per_page=5000", None)
        .await;
    let old = before["resources"][0]["guid"].as_str().unwrap().to_owned();
    let mut follower = None;
    for node in &nodes {
        if role(node).await == "follower" {
            follower = Some(node);
        }
    }
    follower.expect("a follower").purge().await;
    for node in &nodes {
        let (status, page) = node
            .admin(Method::GET, "/v3/app_usage_events?per_page=5000", None)
            .await;
        assert_eq!(status, 200);
        let events = page["resources"].as_array().unwrap();
        assert_eq!(
            events.len(),
            4,
            "every node sees the reseeded epoch: {page}"
        );
        assert!(
            events.iter().all(|e| e["state"]["current"] == "STARTED"),
            "{page}"
        );
        let (status, refused) = node
            .admin(
                Method::GET,
                &format!("/v3/app_usage_events?after_guid={old}"),
                None,
            )
            .await;
        assert_eq!(
            status, 422,
            "an old cursor is refused on every node: {refused}"
        );
        assert!(
            refused["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("was purged"),
            "{refused}"
        );
    }
    for node in nodes {
        node.stop().await;
    }
}

/// `deploy/three-nodes.sh`, the README's way to try several nodes, works: it starts a
/// PostgreSQL and three nodes on it, one of them writes, and what node 1 was sent node 3 lists.
#[test]
fn the_three_nodes_script_in_deploy_starts_nodes_that_share_one_log() {
    // PostgreSQL's server is installed (with apt when missing) before the script looks for it.
    tally_pgcluster::binaries().unwrap_or_else(|e| panic!("{e}"));
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    // The nodes listen on three ports in a row: all free now, and not PostgreSQL's.
    let pg_port = port();
    let first = (0..100)
        .map(|_| port())
        .find(|&p| p < u16::MAX - 2 && (p..p + 3).all(|q| q != pg_port && free(q)))
        .expect("three free ports in a row");
    let output = std::process::Command::new("bash")
        .arg("deploy/three-nodes.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TALLY", env!("CARGO_BIN_EXE_tally"))
        .env("CHECK", "1")
        .env("PGPORT", pg_port.to_string())
        .env("BASE_PORT", (first - 1).to_string())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = crate::helpers::printed(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("checked: created through node 1, listed through node 3"),
        "{text}"
    );
    assert_eq!(text.matches("\"role\":\"writer\"").count(), 1, "{text}");
    assert_eq!(text.matches("\"role\":\"follower\"").count(), 2, "{text}");
}
