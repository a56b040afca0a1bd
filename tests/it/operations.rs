//! What operators see: `/metrics` after real traffic (names, types, values that moved, checked
//! by `promtool check metrics`), the admin listener and its token, and the Prometheus files in
//! `deploy/` (`promtool check config` / `check rules` / `test rules`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_in, TestApp};

/// `promtool`, installed from Debian's `prometheus` package when missing (CI runs as root);
/// once per test binary, since the tests that need it run in parallel and apt takes one at a
/// time.
fn promtool() -> PathBuf {
    static PROMTOOL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROMTOOL.get_or_init(find_or_install_promtool).clone()
}

fn find_or_install_promtool() -> PathBuf {
    let found = |path: &str| {
        Command::new(path)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found("promtool") {
        return PathBuf::from("promtool");
    }
    let install = "export DEBIAN_FRONTEND=noninteractive; \
        apt-get install -y -q --no-install-recommends prometheus \
        || (apt-get update -q && apt-get install -y -q --no-install-recommends prometheus)";
    let installed = Command::new("sh")
        .args(["-c", install])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed && found("promtool"),
        "promtool (Debian package prometheus) is needed and could not be installed"
    );
    PathBuf::from("promtool")
}

/// Runs promtool with `args`, feeding `stdin`; panics with its output unless it succeeds.
fn check_with_promtool(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(promtool())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// A scrape: the `# TYPE` of every family, and the value of every series (`name{labels}`).
struct Scrape {
    types: HashMap<String, String>,
    values: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let mut types = HashMap::new();
        let mut values = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').unwrap();
                values.insert(series.to_owned(), value.parse().unwrap());
            }
        }
        Self {
            types,
            values,
            text,
        }
    }

    fn value(&self, series: &str) -> f64 {
        *self
            .values
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }
}

async fn scrape(app: &TestApp) -> Scrape {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_follow_real_traffic_and_pass_promtool() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    assert_eq!(before.value("tally_log_head_sequence"), 0.0);
    assert_eq!(before.value("tally_log_epoch"), 1.0);

    // An org, a space, one started app (2 × 256 MB) and one stopped app; then scale and purge.
    let (org, space) = app.org_and_space().await;
    let mut guids = Vec::new();
    for (name, state) in [("web", "STARTED"), ("worker", "STOPPED")] {
        let (status, body) = app
            .admin(
                Method::POST,
                "/v2/apps",
                Some(
                    json!({"name": name, "space_guid": space, "docker_image": "nginx",
                            "memory": 256, "instances": 1, "state": state}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        guids.push(body["metadata"]["guid"].as_str().unwrap().to_owned());
    }
    let (status, _) = app
        .admin(
            Method::PUT,
            &format!("/v2/apps/{}", guids[0]),
            Some(json!({"instances": 2})),
        )
        .await;
    assert_eq!(status, 201);
    let (_, events) = app.admin(Method::GET, "/v3/app_usage_events", None).await;
    let old_cursor = events["resources"][0]["guid"].as_str().unwrap().to_owned();
    app.purge().await;
    // A consumer holding a purged cursor is refused (and counted).
    let (status, _) = app
        .admin(
            Method::GET,
            &format!("/v3/app_usage_events?after_guid={old_cursor}"),
            None,
        )
        .await;
    assert_eq!(status, 422);
    // A stream consumer, open during the scrape.
    let mut stream = app
        .request(
            Method::GET,
            "/v3/app_usage_events/stream",
            "admin",
            crate::helpers::ADMIN,
        )
        .send()
        .await
        .unwrap();
    let mut received = String::new();
    while !received.contains("\"type\":\"usage_event\"") {
        let chunk = stream.chunk().await.unwrap().unwrap();
        received.push_str(&String::from_utf8_lossy(&chunk));
    }

    let after = scrape(&app).await;
    for (name, kind) in [
        ("tally_build_info", "gauge"),
        ("tally_log_appends_total", "counter"),
        ("tally_log_commits_total", "counter"),
        ("tally_log_commit_failures_total", "counter"),
        ("tally_log_append_batch_size", "histogram"),
        ("tally_log_append_duration_seconds", "histogram"),
        ("tally_log_flush_duration_seconds", "histogram"),
        ("tally_log_head_sequence", "gauge"),
        ("tally_log_durable_sequence", "gauge"),
        ("tally_log_epoch", "gauge"),
        ("tally_log_size_bytes", "gauge"),
        ("tally_log_records", "gauge"),
        ("tally_usage_events", "gauge"),
        ("tally_data_dir_available_bytes", "gauge"),
        ("tally_data_dir_capacity_bytes", "gauge"),
        ("tally_purge_reseed_total", "counter"),
        ("tally_purge_reseed_last_timestamp_seconds", "gauge"),
        ("tally_purge_reseed_seeded_events", "gauge"),
        ("tally_prune_deleted_events_total", "counter"),
        ("tally_cursor_not_found_total", "counter"),
        ("tally_stream_consumers", "gauge"),
        ("tally_stream_events_delivered_total", "counter"),
        ("tally_node_role", "gauge"),
        ("tally_lease_term", "gauge"),
        ("tally_lease_changes_total", "counter"),
        ("tally_follower_lag_records", "gauge"),
        ("tally_store_reconnects_total", "counter"),
        ("tally_apps", "gauge"),
        ("tally_apps_started", "gauge"),
        ("tally_app_instances_started", "gauge"),
        ("tally_app_memory_started_bytes", "gauge"),
        ("tally_http_requests_total", "counter"),
        ("tally_http_request_duration_seconds", "histogram"),
        ("tally_http_connections", "gauge"),
        ("tally_http_connections_timed_out_total", "counter"),
        (
            "tally_http_connections_dropped_at_shutdown_total",
            "counter",
        ),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
    ] {
        assert_eq!(
            after.types.get(name).map(String::as_str),
            Some(kind),
            "type of {name} in:\n{}",
            after.text
        );
    }
    // Values that moved, and agree with what the traffic did.
    let head = after.value("tally_log_head_sequence");
    assert!(head > 0.0);
    assert_eq!(after.value("tally_log_durable_sequence"), head);
    assert_eq!(after.value("tally_log_epoch"), 2.0);
    assert!(after.value("tally_log_appends_total{kind=\"state_change\"}") > 0.0);
    assert_eq!(after.value("tally_log_appends_total{kind=\"reseed\"}"), 1.0);
    assert_eq!(
        after.value("tally_log_appends_total{kind=\"state_change\"}")
            + after.value("tally_log_appends_total{kind=\"reseed\"}"),
        head
    );
    assert!(after.value("tally_log_commits_total") > before.value("tally_log_commits_total"));
    assert!(after.value("tally_log_append_duration_seconds_count") >= 5.0);
    assert!(after.value("tally_log_size_bytes") > 0.0);
    assert!(
        after.value("tally_data_dir_capacity_bytes")
            >= after.value("tally_data_dir_available_bytes")
    );
    assert!(after.value("tally_data_dir_available_bytes") > 0.0);
    assert_eq!(after.value("tally_log_records"), head);
    assert_eq!(after.value("tally_purge_reseed_total"), 1.0);
    assert_eq!(after.value("tally_purge_reseed_seeded_events"), 1.0);
    assert!(after.value("tally_purge_reseed_last_timestamp_seconds") > 1.7e9);
    assert_eq!(after.value("tally_usage_events"), 1.0);
    assert_eq!(
        after.value("tally_cursor_not_found_total{reason=\"purged\"}"),
        1.0
    );
    assert_eq!(after.value("tally_stream_consumers"), 1.0);
    assert!(
        after.value("tally_http_connections") >= 1.0,
        "the scrape's own connection is open"
    );
    assert!(after.value("tally_stream_events_delivered_total") >= 1.0);
    assert_eq!(after.value("tally_apps"), 2.0);
    assert_eq!(after.value("tally_apps_started"), 1.0);
    assert_eq!(after.value("tally_app_instances_started"), 2.0);
    assert_eq!(
        after.value("tally_app_memory_started_bytes"),
        2.0 * 256.0 * 1024.0 * 1024.0
    );
    assert_eq!(
        after.value("tally_http_requests_total{method=\"POST\",route=\"/v2/apps\",status=\"2xx\"}"),
        2.0
    );
    assert_eq!(
        after.value(
            "tally_http_requests_total{method=\"PUT\",route=\"/v2/apps/{guid}\",status=\"2xx\"}"
        ),
        1.0
    );
    assert_eq!(
        after.value(
            "tally_http_requests_total{method=\"GET\",route=\"/v3/app_usage_events\",status=\"4xx\"}"
        ),
        1.0
    );
    assert!(after.value("process_resident_memory_bytes") > 0.0);
    assert!(after
        .text
        .contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    // Labels never carry a raw path: no guid appears anywhere in the output.
    for guid in guids.iter().chain([&org, &space, &old_cursor]) {
        assert!(!after.text.contains(guid.as_str()), "{guid} leaked");
    }
    drop(stream);

    check_with_promtool(&["check", "metrics"], &after.text);
    // The dashboard and the alert rules in deploy/ read only metrics that exist.
    for file in [
        "grafana/tally-dashboard.json",
        "prometheus/tally-alerts.yml",
    ] {
        let text = std::fs::read_to_string(deploy(file)).unwrap();
        let names = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("tally_") || word.starts_with("process_"));
        let mut used = 0;
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|family| after.types.get(*family).map(String::as_str) == Some("histogram"))
                .unwrap_or(name);
            assert!(
                after.types.contains_key(family),
                "{file} reads {name}, which tally does not export"
            );
            used += 1;
        }
        assert!(used >= 5, "{file} reads only {used} metrics");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_admin_listener_serves_metrics_and_health_behind_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(
        dir,
        vec![
            ("TALLY_METRICS__LISTEN".into(), "127.0.0.1:0".into()),
            ("TALLY_METRICS__MAIN_LISTENER".into(), "false".into()),
            ("TALLY_METRICS__TOKEN".into(), "scrape-secret".into()),
        ],
    )
    .await;
    let admin = app.admin_address.clone().unwrap();
    assert_ne!(admin, app.address);
    // Not on the main listener any more.
    assert_eq!(app.get("/metrics").await.status(), 404);
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{admin}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let refused = get("/metrics", None).await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.text().await.unwrap(),
        "{\"description\":\"Authentication error\",\"error_code\":\"CF-NotAuthenticated\",\"code\":10002}\n"
    );
    assert_eq!(get("/metrics", Some("wrong")).await.unwrap().status(), 401);
    let scraped = get("/metrics", Some("scrape-secret")).await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("# TYPE tally_log_durable_sequence gauge"));
    assert_eq!(get("/healthz", None).await.unwrap().status(), 200);
    assert_eq!(get("/readyz", None).await.unwrap().status(), 200);
    // Nothing of the API on the admin listener.
    assert_eq!(get("/v2/info", None).await.unwrap().status(), 404);
    app.stop().await;
}

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

#[test]
fn the_prometheus_config_and_alert_rules_in_deploy_pass_promtool() {
    let config = deploy("prometheus/prometheus.yml");
    let rules = deploy("prometheus/tally-alerts.yml");
    let output = check_with_promtool(&["check", "config", config.to_str().unwrap()], "");
    assert!(output.contains("SUCCESS"), "{output}");
    let output = check_with_promtool(&["check", "rules", rules.to_str().unwrap()], "");
    assert!(output.contains("SUCCESS: 6 rules found"), "{output}");
    // The rules fire when they should and not before (input series and expected alerts).
    let tests = deploy("prometheus/tally-alerts.test.yml");
    let output = check_with_promtool(&["test", "rules", tests.to_str().unwrap()], "");
    assert!(output.contains("SUCCESS"), "{output}");
    // Every alert reads metrics tally exports.
    let text = std::fs::read_to_string(&rules).unwrap();
    for name in [
        "up{job=\"tally\"}",
        "tally_log_commit_failures_total",
        "tally_log_durable_sequence",
        "tally_http_requests_total",
        "tally_purge_reseed_total",
    ] {
        assert!(text.contains(name), "{name} not used by the alert rules");
    }
}
