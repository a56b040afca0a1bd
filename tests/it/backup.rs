//! `tally export` and `tally import`: a backup of a running tally (while writers go on) and of
//! a stopped one, restored into a new data directory that verifies and serves the same apps and
//! events; damaged backups are refused and change nothing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{run_tally, spawn_app, spawn_app_in, TestApp};
use crate::usage::{apps, everything, storm};

/// Runs the binary; its exit status and everything it printed.
fn tally(args: &[&str]) -> (bool, String) {
    run_tally(args, &[])
}

fn export(app: &TestApp, out: &Path) -> (bool, String) {
    tally(&[
        "export",
        "--data-dir",
        app.data_dir.to_str().unwrap(),
        "--url",
        &app.address,
        "--out",
        out.to_str().unwrap(),
    ])
}

fn import(backup: &Path, data_dir: &Path) -> (bool, String) {
    tally(&[
        "import",
        "--in",
        backup.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

/// What a client sees: the apps, every usage event of the epoch, every audit event (links
/// name the server's own address, so it is replaced).
async fn observed(app: &TestApp) -> (String, Vec<Value>, String) {
    let (_, apps) = app
        .admin(Method::GET, "/v2/apps?results-per-page=100", None)
        .await;
    let (_, audit) = app
        .admin(Method::GET, "/v3/audit_events?per_page=5000", None)
        .await;
    let text = |value: &Value| value.to_string().replace(&app.address, "http://tally");
    (
        text(&apps["resources"]),
        everything(app).await,
        text(&audit["resources"]),
    )
}

/// A backup taken while writers went on, imported into a new sled tally: its events are the
/// first events of the `original` (one consistent moment), more than the `before` there were
/// when the writers started, fewer than there were once they stopped.
async fn restores_a_consistent_prefix(backup: &Path, original: &[Value], before: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (ok, printed) = import(backup, &dir.path().join("data"));
    assert!(ok, "{printed}");
    let restored = spawn_app_in(dir, Vec::new()).await;
    let copy = everything(&restored).await;
    assert!(copy.len() > before, "the storm's events are in the copy");
    assert!(copy.len() < original.len(), "writes went on after the copy");
    assert_eq!(copy[..], original[..copy.len()]);
    restored.stop().await;
}

/// A consumer whose cursor is the last of `events` (read from another tally) goes on on `app`:
/// its cursor is accepted and nothing new is there yet.
async fn after_the_last(app: &TestApp, events: &[Value]) {
    let last = events.last().unwrap()["metadata"]["guid"].as_str().unwrap();
    let (status, page) = app
        .admin(
            Method::GET,
            &format!("/v3/app_usage_events?after_guid={last}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["resources"].as_array().map(Vec::len),
        Some(0),
        "{page}"
    );
}

/// Apps, six of them started, a purge, one more started: an epoch that opens with reseeded
/// events and goes on. The apps' guids.
async fn history(app: &TestApp) -> Vec<String> {
    let guids = apps(app).await;
    for guid in guids[..6].iter().chain([&guids[7]]) {
        if guid == &guids[7] {
            app.purge().await;
        }
        let (status, _) = app
            .admin(
                Method::PUT,
                &format!("/v2/apps/{guid}"),
                Some(json!({"state": "STARTED"})),
            )
            .await;
        assert_eq!(status, 201);
    }
    guids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_a_running_tally_restores_the_same_apps_and_events() {
    let app = Arc::new(spawn_app().await);
    let guids = history(&app).await;
    let files = tempfile::tempdir().unwrap();

    // Quiet: the backup restores exactly what the server shows.
    let quiet = files.path().join("quiet.tallybak");
    let (ok, printed) = export(&app, &quiet);
    assert!(ok, "{printed}");
    assert!(printed.contains("through the running tally"), "{printed}");
    let expected = observed(&app).await;
    let restored_dir = tempfile::tempdir().unwrap();
    let (ok, printed) = import(&quiet, &restored_dir.path().join("data"));
    assert!(ok, "{printed}");
    assert!(printed.contains("verify passed"), "{printed}");
    let (ok, printed) = tally(&[
        "verify",
        "--data-dir",
        restored_dir.path().join("data").to_str().unwrap(),
    ]);
    assert!(ok, "{printed}");
    let restored = spawn_app_in(restored_dir, Vec::new()).await;
    assert_eq!(observed(&restored).await, expected);
    // A consumer's cursor from the original goes on on the copy.
    after_the_last(&restored, &expected.1).await;
    restored.stop().await;

    // Busy: writers keep changing apps during the export. The copy is one consistent
    // moment: it verifies, and its events are exactly the first events of the original.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = storm(&app, &guids, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = files.path().join("busy.tallybak");
    let (ok, printed) = tokio::task::spawn_blocking({
        let (app, busy) = (app.clone(), busy.clone());
        move || export(&app, &busy)
    })
    .await
    .unwrap();
    assert!(ok, "{printed}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        assert!(writer.await.unwrap() > 0);
    }
    restores_a_consistent_prefix(&busy, &everything(&app).await, expected.1.len()).await;

    // Stopped: the offline export of an idle log is the online one, byte for byte.
    let online = files.path().join("online.tallybak");
    let (ok, printed) = export(&app, &online);
    assert!(ok, "{printed}");
    let app = Arc::into_inner(app).unwrap();
    let data_dir = app.data_dir.clone();
    let _dir = app.stop().await;
    let offline = files.path().join("offline.tallybak");
    let (ok, printed) = tally(&[
        "export",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--out",
        offline.to_str().unwrap(),
    ]);
    assert!(ok, "{printed}");
    assert!(!printed.contains("through the running tally"), "{printed}");
    assert_eq!(
        std::fs::read(&online).unwrap(),
        std::fs::read(&offline).unwrap()
    );
}

// The binary blocks a runtime thread while the server answers it on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_unsuitable_backups_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    apps(&app).await;
    let files = tempfile::tempdir().unwrap();
    let good = files.path().join("good.tallybak");
    assert!(export(&app, &good).0);
    let bytes = std::fs::read(&good).unwrap();
    let target = files.path().join("target");

    let flipped = files.path().join("flipped.tallybak");
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    std::fs::write(&flipped, &damaged).unwrap();
    let (ok, printed) = import(&flipped, &target);
    assert!(!ok);
    assert!(printed.contains("damaged at byte"), "{printed}");
    assert!(!target.join("log").exists() && !target.join("log.importing").exists());

    let truncated = files.path().join("truncated.tallybak");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let (ok, printed) = import(&truncated, &target);
    assert!(!ok);
    assert!(printed.contains("truncated"), "{printed}");
    assert!(!target.join("log").exists());

    let other = files.path().join("other.txt");
    std::fs::write(&other, "hello").unwrap();
    let (ok, printed) = import(&other, &target);
    assert!(!ok);
    assert!(printed.contains("not a tally backup"), "{printed}");

    // A data directory with a log is never overwritten.
    let (ok, printed) = import(&good, &app.data_dir);
    assert!(!ok);
    assert!(printed.contains("already holds a log"), "{printed}");
    // A non-admin token cannot export a running tally.
    let response = app
        .request(
            Method::GET,
            "/admin/export",
            "u",
            &["cloud_controller.read"],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // And a good one restores.
    let (ok, printed) = import(&good, &target);
    assert!(ok, "{printed}");
    app.stop().await;
}

/// Outgrowing one machine: a sled tally's backup imported into PostgreSQL serves the same apps,
/// events and cursors; a backup of the PostgreSQL tally taken while writers go on (one
/// snapshot) imports back into sled as one consistent moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_moves_from_sled_to_postgres_and_back_with_its_cursors() {
    let app = Arc::new(spawn_app().await);
    let guids = history(&app).await;
    let files = tempfile::tempdir().unwrap();
    let from_sled = files.path().join("sled.tallybak");
    let (ok, printed) = export(&app, &from_sled);
    assert!(ok, "{printed}");
    let expected = observed(&app).await;

    // Into PostgreSQL: `--into postgres` with the URL from the environment.
    let pg = crate::helpers::postgres_env();
    let node_dir = tempfile::tempdir().unwrap();
    let url = pg[1].1.clone();
    let (ok, printed) = run_tally(
        &[
            "import",
            "--in",
            from_sled.to_str().unwrap(),
            "--data-dir",
            node_dir.path().join("data").to_str().unwrap(),
            "--into",
            "postgres",
        ],
        &[("TALLY_STORAGE__POSTGRES_URL".into(), url.clone())],
    );
    assert!(ok, "{printed}");
    assert!(printed.contains("verify passed"), "{printed}");
    assert!(
        !node_dir.path().join("data/log").exists(),
        "nothing went to sled"
    );
    let (ok, printed) = run_tally(
        &[
            "verify",
            "--data-dir",
            node_dir.path().join("data").to_str().unwrap(),
        ],
        &pg,
    );
    assert!(ok, "{printed}");
    // Importing again into the same database is refused and changes nothing.
    let (ok, printed) = run_tally(
        &[
            "import",
            "--in",
            from_sled.to_str().unwrap(),
            "--data-dir",
            node_dir.path().join("data").to_str().unwrap(),
        ],
        &pg,
    );
    assert!(!ok && printed.contains("already holds a log"), "{printed}");
    let on_pg = Arc::new(spawn_app_in(node_dir, pg.clone()).await);
    assert_eq!(observed(&on_pg).await, expected);
    // A consumer's cursor from sled goes on on PostgreSQL, with the same epoch.
    after_the_last(&on_pg, &expected.1).await;

    // And back, while writers go on against the PostgreSQL tally.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = storm(&on_pg, &guids, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from_pg = files.path().join("pg.tallybak");
    let (ok, printed) = tokio::task::spawn_blocking({
        let (env, out, dir) = (pg.clone(), from_pg.clone(), on_pg.data_dir.clone());
        move || {
            run_tally(
                &[
                    "export",
                    "--data-dir",
                    dir.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                ],
                &env,
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{printed}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        assert!(
            writer.await.unwrap() > 0,
            "the export did not stop the writers"
        );
    }
    restores_a_consistent_prefix(&from_pg, &everything(&on_pg).await, expected.1.len()).await;
}
