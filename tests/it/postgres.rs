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
    let app = Arc::new(spawn_app_in(tempfile::tempdir().unwrap(), env.clone()).await);
    let guids = apps(&app).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|k| {
            let (app, stop, guids) = (app.clone(), stop.clone(), guids.clone());
            tokio::spawn(async move {
                let (mut acked, mut unavailable) = (Vec::new(), 0usize);
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("w{k}-{n}");
                    let guid = &guids[(k + 4 * n) % guids.len()];
                    let asked = Instant::now();
                    let (status, body) = app
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
        .collect();
    for mode in ["fast", "immediate"] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        cluster.stop(mode).unwrap();
        ready_becomes(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(15),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        cluster.start_again().unwrap();
        let back = ready_becomes(&app, StatusCode::OK, Duration::from_secs(30)).await;
        eprintln!("PostgreSQL stopped ({mode}) and started: ready again {back:?} after");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acknowledged, mut unavailable) = (HashSet::new(), 0);
    for writer in writers {
        let (acked, refused) = writer.await.unwrap();
        unavailable += refused;
        for name in acked {
            assert!(acknowledged.insert(name));
        }
    }
    assert!(unavailable > 0, "no write saw PostgreSQL gone");
    assert!(
        acknowledged.len() > 20,
        "only {} writes",
        acknowledged.len()
    );
    let app = Arc::into_inner(app).unwrap();
    let data_dir = app.data_dir.clone();
    let _dir = app.stop().await;
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
    let nodes = Arc::new([
        spawn_app_in(tempfile::tempdir().unwrap(), env.clone()).await,
        spawn_app_in(tempfile::tempdir().unwrap(), env.clone()).await,
    ]);
    let guids = apps(&nodes[0]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|k| {
            let (nodes, stop, guids) = (nodes.clone(), stop.clone(), guids.clone());
            tokio::spawn(async move {
                let (mut acked, mut unavailable) = (Vec::new(), 0usize);
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("w{k}-{n}");
                    let guid = &guids[(k + 4 * n) % guids.len()];
                    let asked = Instant::now();
                    let (status, body) = nodes[n % 2]
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
        .collect();
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
    let (mut acknowledged, mut unavailable) = (HashSet::new(), 0);
    for writer in writers {
        let (acked, refused) = writer.await.unwrap();
        unavailable += refused;
        for name in acked {
            assert!(acknowledged.insert(name));
        }
    }
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
    let Ok(nodes) = Arc::try_unwrap(nodes) else {
        panic!("a writer still holds the nodes")
    };
    for node in nodes {
        node.stop().await;
    }
    crate::helpers::each_acknowledged_rename_once(&data_dir, &env, &acknowledged);
}
