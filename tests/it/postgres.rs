//! tally on PostgreSQL when PostgreSQL itself goes away: a server of the test's own (not the
//! shared one) is stopped fast and then immediately (a crash) under HTTP write load. While it
//! is down, writes get Cloud Controller's 503 (never a hang, never another error) and `/readyz`
//! says 503; when it is back tally recovers by itself; every write answered 201 is in the log
//! exactly once and the log verifies. Also a primary with a synchronous standby that crashes
//! under load through two nodes: the standby is promoted and nothing acknowledged is lost.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{spawn_app_in, TestApp};
use crate::usage::apps;

/// Waits until `/readyz` answers `want`; how long that took.
async fn ready_becomes(app: &TestApp, want: StatusCode, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = app.get("/readyz").await.status();
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "/readyz did not become {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Renamer = tokio::task::JoinHandle<(Vec<String>, usize)>;

/// Four clients renaming the apps, each request to the next node, until `stop`; each returns
/// the names answered 201 and how many writes got CC's 503. No write may hang or fail otherwise.
fn renaming(nodes: &Arc<Vec<TestApp>>, guids: &[String], stop: &Arc<AtomicBool>) -> Vec<Renamer> {
    (0..4)
        .map(|k| {
            let (nodes, stop, guids) = (nodes.clone(), stop.clone(), guids.to_vec());
            tokio::spawn(async move {
                let (mut acked, mut unavailable) = (Vec::new(), 0usize);
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("w{k}-{n}");
                    let guid = &guids[(k + 4 * n) % guids.len()];
                    let asked = Instant::now();
                    let (status, body) = nodes[n % nodes.len()]
                        .admin(
                            Method::PUT,
                            &format!("/v2/apps/{guid}"),
                            Some(json!({ "name": name })),
                        )
                        .await;
                    assert!(
                        asked.elapsed() < Duration::from_secs(20),
                        "a write hung for {:?}",
                        asked.elapsed()
                    );
                    match status.as_u16() {
                        201 => acked.push(name),
                        503 => {
                            assert_eq!(body["error_code"], "CF-ServiceUnavailable", "{body}");
                            unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => panic!("a write answered {other}: {body}"),
                    }
                }
                (acked, unavailable)
            })
        })
        .collect()
}

/// Every name the renamers were answered 201 for (each once), and how many 503s they got.
async fn collect(renamers: Vec<Renamer>) -> (HashSet<String>, usize) {
    let (mut acknowledged, mut unavailable) = (HashSet::new(), 0);
    for renamer in renamers {
        let (acked, refused) = renamer.await.unwrap();
        unavailable += refused;
        for name in acked {
            assert!(acknowledged.insert(name), "a name acknowledged twice");
        }
    }
    (acknowledged, unavailable)
}

/// Stops every node gracefully.
async fn stop_all(nodes: Arc<Vec<TestApp>>) {
    let Ok(nodes) = Arc::try_unwrap(nodes) else {
        panic!("a client still holds the nodes")
    };
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_under_load_gives_503_then_tally_recovers_and_loses_nothing() {
    let cluster = tally_pgcluster::Cluster::start(&tally_pgcluster::Options::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let database = cluster.database("restart").unwrap();
    let env: Vec<(String, String)> = vec![
        ("TALLY_STORAGE__BACKEND".into(), "postgres".into()),
        ("TALLY_STORAGE__POSTGRES_URL".into(), cluster.url(&database)),
        (
            "TALLY_STORAGE__POSTGRES_CONNECT_TIMEOUT_SECONDS".into(),
            "1".into(),
        ),
        (
            "TALLY_STORAGE__POSTGRES_STATEMENT_TIMEOUT_SECONDS".into(),
            "2".into(),
        ),
    ];
    let app = spawn_app_in(tempfile::tempdir().unwrap(), env.clone()).await;
    let guids = apps(&app).await;
    let stop = Arc::new(AtomicBool::new(false));
    let nodes = Arc::new(vec![app]);
    let writers = renaming(&nodes, &guids, &stop);
    for mode in ["fast", "immediate"] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        cluster.stop(mode).unwrap();
        ready_becomes(
            &nodes[0],
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(15),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        cluster.start_again().unwrap();
        let back = ready_becomes(&nodes[0], StatusCode::OK, Duration::from_secs(30)).await;
        eprintln!("PostgreSQL stopped ({mode}) and started: ready again {back:?} after");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, unavailable) = collect(writers).await;
    assert!(unavailable > 0, "no write saw PostgreSQL gone");
    assert!(
        acknowledged.len() > 20,
        "only {} writes",
        acknowledged.len()
    );
    // The connections lost with the server were made again, and counted.
    let metrics = nodes[0].get("/metrics").await.text().await.unwrap();
    let reconnects: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tally_store_reconnects_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(reconnects > 0, "{metrics}");
    let data_dir = nodes[0].data_dir.clone();
    stop_all(nodes).await;
    crate::helpers::each_acknowledged_rename_once(&data_dir, &env, &acknowledged);
}

/// A primary with a synchronous streaming standby, two tally nodes configured with both hosts
/// (`target_session_attrs=read-write`), write load through both: the primary crashes and the
/// standby is promoted. The nodes reconnect to the new primary by themselves; writes meanwhile
/// get CC's 503 (never a hang); every write answered 201 before, during or after is on the new
/// primary exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promoted_synchronous_standby_takes_over_and_nothing_acknowledged_is_lost() {
    let primary = tally_pgcluster::Cluster::start(&tally_pgcluster::Options::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let database = primary.database("failover").unwrap();
    let standby = primary.standby(true).unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "postgresql://{}@127.0.0.1:{},127.0.0.1:{}/{database}?target_session_attrs=read-write",
        tally_pgcluster::USER,
        primary.port(),
        standby.port()
    );
    let mut env = crate::nodes::cluster_env(&url);
    env.extend([
        (
            "TALLY_STORAGE__POSTGRES_CONNECT_TIMEOUT_SECONDS".to_owned(),
            "1".to_owned(),
        ),
        (
            "TALLY_STORAGE__POSTGRES_STATEMENT_TIMEOUT_SECONDS".to_owned(),
            "2".to_owned(),
        ),
    ]);
    let nodes = Arc::new(vec![
        spawn_app_in(tempfile::tempdir().unwrap(), env.clone()).await,
        spawn_app_in(tempfile::tempdir().unwrap(), env.clone()).await,
    ]);
    let guids = apps(&nodes[0]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = renaming(&nodes, &guids, &stop);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    primary.stop("immediate").unwrap();
    let failed_over = Instant::now();
    standby.promote().unwrap();
    // Both nodes take writes again on the new primary.
    for node in nodes.iter() {
        ready_becomes(node, StatusCode::OK, Duration::from_secs(30)).await;
    }
    eprintln!(
        "the nodes were ready on the promoted standby {:?} after the primary crashed",
        failed_over.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, unavailable) = collect(writers).await;
    assert!(
        acknowledged.len() > 20,
        "only {} writes",
        acknowledged.len()
    );
    eprintln!(
        "{} writes acknowledged, {unavailable} answered 503 during the failover",
        acknowledged.len()
    );
    let data_dir = nodes[0].data_dir.clone();
    stop_all(nodes).await;
    crate::helpers::each_acknowledged_rename_once(&data_dir, &env, &acknowledged);
}
