//! Billing consumers against the real server: a cursor follower during a storm of concurrent
//! writes, a purge in the middle of such a storm, and `tally tail` across a server restart.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_on, spawn_app_with, Store, TestApp};

const APPS: usize = 12;
const WRITERS: usize = 6;

/// An org, a space and `APPS` docker apps; their guids.
pub(crate) async fn apps(app: &TestApp) -> Vec<String> {
    let (_, space) = app.org_and_space().await;
    let mut guids = Vec::new();
    for n in 0..APPS {
        let (status, body) = app
            .admin(
                Method::POST,
                "/v2/apps",
                Some(json!({"name": format!("app-{n}"), "space_guid": space, "docker_image": "nginx"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        guids.push(body["metadata"]["guid"].as_str().unwrap().to_owned());
    }
    guids
}

/// `WRITERS` clients starting, stopping and scaling the apps until `stop` is set.
pub(crate) fn storm(
    app: &Arc<TestApp>,
    guids: &[String],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..WRITERS)
        .map(|w| {
            let (app, guids, stop) = (app.clone(), guids.to_vec(), stop.clone());
            tokio::spawn(async move {
                let mut done = 0;
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    let guid = &guids[n % guids.len()];
                    // Each app sees every kind of change over time.
                    let body = match (n / guids.len() + w) % 3 {
                        0 => json!({"state": "STARTED"}),
                        1 => json!({"instances": 1 + (n % 4)}),
                        _ => json!({"state": "STOPPED"}),
                    };
                    let (status, body) = app
                        .admin(Method::PUT, &format!("/v2/apps/{guid}"), Some(body))
                        .await;
                    assert_eq!(status, 201, "{body}");
                    done += 1;
                    n += WRITERS + 1;
                }
                done
            })
        })
        .collect()
}

fn guid_of(event: &Value) -> String {
    event["metadata"]["guid"].as_str().unwrap().to_owned()
}

/// Every event of the current epoch, in order.
pub(crate) async fn everything(app: &TestApp) -> Vec<Value> {
    let (status, page) = app
        .admin(
            Method::GET,
            "/v2/app_usage_events?results-per-page=10000",
            None,
        )
        .await;
    assert_eq!(status, 200);
    page["resources"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_follower_gets_every_event_once_in_order_during_a_storm() {
    cursor_follower_during_a_storm(Store::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_cursor_follower_gets_every_event_once_in_order_during_a_storm() {
    cursor_follower_during_a_storm(Store::Postgres).await;
}

async fn cursor_follower_during_a_storm(store: Store) {
    let app = Arc::new(spawn_app_with(store).await);
    let guids = apps(&app).await;
    let stop = Arc::new(AtomicBool::new(false));
    // The consumer: small pages, long polls, its cursor is the last guid it saw.
    let consumer = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen: Vec<Value> = Vec::new();
            let mut quiet_after_stop = 0;
            loop {
                let path = match seen.last() {
                    Some(last) => format!(
                        "/v2/app_usage_events?results-per-page=7&wait=1&after_guid={}",
                        guid_of(last)
                    ),
                    None => "/v2/app_usage_events?results-per-page=7&wait=1".to_owned(),
                };
                let (status, page) = app.admin(Method::GET, &path, None).await;
                assert_eq!(status, 200, "{page}");
                let resources = page["resources"].as_array().unwrap();
                if resources.is_empty() && stop.load(Ordering::Relaxed) {
                    quiet_after_stop += 1;
                    if quiet_after_stop == 2 {
                        return seen;
                    }
                }
                seen.extend(resources.iter().cloned());
            }
        })
    };
    let writers = storm(&app, &guids, &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for writer in writers {
        writes += writer.await.unwrap();
    }
    let seen = consumer.await.unwrap();
    let all = everything(&app).await;
    assert!(writes > 50, "only {writes} writes");
    assert!(all.len() > 50, "only {} events", all.len());
    let seen: Vec<String> = seen.iter().map(guid_of).collect();
    let all: Vec<String> = all.iter().map(guid_of).collect();
    assert_eq!(seen.len(), all.len(), "every event exactly once");
    assert_eq!(seen, all, "in sequence order");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_during_a_storm_reseeds_exactly_the_started_apps_and_later_changes_follow() {
    purge_during_a_storm(Store::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_purge_during_a_storm_reseeds_exactly_the_started_apps() {
    purge_during_a_storm(Store::Postgres).await;
}

async fn purge_during_a_storm(store: Store) {
    let app = Arc::new(spawn_app_with(store).await);
    let guids = apps(&app).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = storm(&app, &guids, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = app
        .admin(
            Method::POST,
            "/v3/app_usage_events/actions/destructively_purge_all_and_reseed",
            None,
        )
        .await;
    assert_eq!((status.as_u16(), body), (200, json!({})));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let events = everything(&app).await;
    // The epoch opens with the reseeded block: guid = app guid, STARTED after STARTED.
    let reseeded: Vec<&Value> = events
        .iter()
        .take_while(|e| guids.contains(&guid_of(e)))
        .collect();
    assert!(!reseeded.is_empty(), "some apps were started at the purge");
    let mut started: HashMap<String, (bool, i64)> =
        guids.iter().map(|g| (g.clone(), (false, 0))).collect();
    for event in &reseeded {
        let e = &event["entity"];
        assert_eq!(
            (e["state"].as_str(), e["previous_state"].as_str()),
            (Some("STARTED"), Some("STARTED"))
        );
        let app_guid = e["app_guid"].as_str().unwrap();
        assert_eq!(guid_of(event), app_guid);
        let previous = started.insert(
            app_guid.to_owned(),
            (true, e["instance_count"].as_i64().unwrap()),
        );
        assert_eq!(
            previous,
            Some((false, 0)),
            "one reseeded event per started app"
        );
    }
    // Every later change continues each app's story from the reseeded state: no change made
    // before the purge shows up after it, and none after it is missing.
    for event in &events[reseeded.len()..] {
        assert!(
            !guids.contains(&guid_of(event)),
            "no reseeded event after the block"
        );
        let e = &event["entity"];
        let Some(app_guid) = e["app_guid"].as_str().filter(|g| !g.is_empty()) else {
            continue; // staging events
        };
        let state = e["state"].as_str().unwrap();
        if state == "BUILDPACK_SET" {
            continue;
        }
        let (was_started, instances) = started[app_guid];
        assert_eq!(
            e["previous_state"].as_str() == Some("STARTED"),
            was_started,
            "{app_guid}: {event}"
        );
        if was_started {
            assert_eq!(
                e["previous_instance_count"].as_i64(),
                Some(instances),
                "{event}"
            );
        }
        started.insert(
            app_guid.to_owned(),
            (state == "STARTED", e["instance_count"].as_i64().unwrap()),
        );
    }
    // The app table agrees with the story, so the purge changed no app.
    for guid in &guids {
        let (_, app_json) = app
            .admin(Method::GET, &format!("/v2/apps/{guid}"), None)
            .await;
        let (is_started, instances) = started[guid];
        assert_eq!(
            app_json["entity"]["state"] == "STARTED",
            is_started,
            "{guid}"
        );
        if is_started {
            assert_eq!(
                app_json["entity"]["instances"].as_i64(),
                Some(instances),
                "{guid}"
            );
        }
    }
}

/// A free loopback address (bound, then released).
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Lines `tally tail` printed so far.
fn printed(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let lines = printed(path);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tally tail printed {} of {n} events", printed(path).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tally_tail_resumes_from_its_checkpoint_across_a_server_restart() {
    let address = free_address();
    let app = spawn_app_on(tempfile::tempdir().unwrap(), Vec::new(), &address).await;
    let guids = apps(&app).await;
    for guid in &guids[..2] {
        app.admin(
            Method::PUT,
            &format!("/v2/apps/{guid}"),
            Some(json!({"state": "STARTED"})),
        )
        .await;
    }
    let work = tempfile::tempdir().unwrap();
    let output = work.path().join("events.ndjson");
    let checkpoint = work.path().join("checkpoint");
    let token = tally::auth::developer_token(
        &app.settings,
        "tail",
        &["cloud_controller.global_auditor".to_owned()],
        600,
    )
    .unwrap();
    let mut tail = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "tail",
            "--url",
            &format!("http://{address}"),
            "--checkpoint",
        ])
        .arg(&checkpoint)
        .env("TALLY_TOKEN", &token)
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let before = everything(&app).await;
    wait_for_lines(&output, before.len()).await;
    // The server goes away and comes back on the same address; tail reconnects.
    let dir = app.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let app = spawn_app_on(dir, Vec::new(), &address).await;
    for guid in &guids[2..4] {
        app.admin(
            Method::PUT,
            &format!("/v2/apps/{guid}"),
            Some(json!({"state": "STARTED"})),
        )
        .await;
    }
    let all = everything(&app).await;
    let lines = wait_for_lines(&output, all.len()).await;
    tail.kill().unwrap();
    tail.wait().unwrap();
    let printed_guids: Vec<&str> = lines.iter().map(|l| l["guid"].as_str().unwrap()).collect();
    let expected: Vec<String> = all.iter().map(guid_of).collect();
    assert_eq!(
        printed_guids, expected,
        "every event once, in order, across the restart"
    );
    assert_eq!(
        std::fs::read_to_string(&checkpoint).unwrap(),
        *expected.last().unwrap()
    );
    // Restarted from its checkpoint, tail prints only what is new.
    app.admin(
        Method::PUT,
        &format!("/v2/apps/{}", guids[0]),
        Some(json!({"instances": 3})),
    )
    .await;
    let more = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "tail",
            "--url",
            &format!("http://{address}"),
            "--limit",
            "1",
            "--checkpoint",
        ])
        .arg(&checkpoint)
        .env("TALLY_TOKEN", &token)
        .output()
        .unwrap();
    assert!(more.status.success());
    let line: Value = serde_json::from_slice(&more.stdout).unwrap();
    assert_eq!(line["instance_count"]["current"], 3);
    // A cursor the server does not know stops tail with the server's explanation.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "tail",
            "--url",
            &format!("http://{address}"),
            "--after",
            "00000000-0000-4000-8000-000000000000",
        ])
        .env("TALLY_TOKEN", &token)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("After guid filter must be a valid app usage event guid"));
}
