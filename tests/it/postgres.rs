//! tally on PostgreSQL when PostgreSQL itself goes away: a server of the test's own (not the
//! shared one) is stopped fast and then immediately (a crash) under HTTP write load. While it
//! is down, writes get Cloud Controller's 503 (never a hang, never another error) and `/readyz`
//! says 503; when it is back tally recovers by itself; every write answered 201 is in the log
//! exactly once and the log verifies.

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
