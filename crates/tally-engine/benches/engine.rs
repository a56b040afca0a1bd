//! Engine benchmark (no HTTP), on a real sled data directory with fsync on.
//!
//! ```text
//! cargo bench -p tally-engine --bench engine                 # full run (a few minutes)
//! cargo bench -p tally-engine --bench engine -- --quick      # smaller numbers, for a smoke run
//! ```
//!
//! Options: `--seconds N` per concurrency level, `--apps N` for the purge, `--records N` for
//! start-up. Prints one table; the goals are in design.md and issue 2.

// A benchmark's setup failing is a bug in the benchmark: panicking there is what we want.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_domain::{Actor, AppAttributes, Command, Envelope, Event, Guid};
use tally_engine::{Engine, EngineConfig, RandomIds, SystemClock};
use tally_store::{LogStore, SledLog, SledOptions};

/// The same allocator as the `tally` binary, so the numbers are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ORG: Guid = Guid::from_u128(0xA);
const SPACE: Guid = Guid::from_u128(0xB);

struct Options {
    seconds: u64,
    apps: u64,
    records: u64,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let quick = args.iter().any(|a| a == "--quick");
    Options {
        seconds: value("--seconds").unwrap_or(if quick { 2 } else { 8 }),
        apps: value("--apps").unwrap_or(if quick { 10_000 } else { 100_000 }),
        records: value("--records").unwrap_or(if quick { 100_000 } else { 1_000_000 }),
    }
}

fn envelope(command: Command) -> Envelope {
    Envelope {
        command,
        actor: Actor::system(),
        principal: None,
    }
}

/// App guids spread over the whole guid space, as random v4 guids are.
fn app(n: u64) -> Guid {
    Guid::from_u128(u128::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1)
}

fn open(path: &std::path::Path) -> Arc<Engine> {
    let store: Arc<dyn LogStore> =
        Arc::new(SledLog::open(path, &SledOptions::default()).expect("open sled"));
    Arc::new(
        Engine::start(
            store,
            EngineConfig::default(),
            Box::new(SystemClock),
            Box::new(RandomIds),
        )
        .expect("start"),
    )
}

/// Creates `count` docker apps, started or not, with many commands in flight.
async fn create_apps(engine: &Arc<Engine>, count: u64, started: bool) {
    if engine.view().state.org(ORG).is_none() {
        engine
            .submit(envelope(Command::CreateOrg {
                guid: ORG,
                name: "o".into(),
            }))
            .await
            .expect("org");
        engine
            .submit(envelope(Command::CreateSpace {
                guid: SPACE,
                org_guid: ORG,
                name: "s".into(),
            }))
            .await
            .expect("space");
    }
    let workers = 256;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = w;
            while n < count {
                let command = Command::CreateApp {
                    guid: app(n),
                    attributes: AppAttributes {
                        name: Some(format!("app-{n}")),
                        space_guid: Some(SPACE),
                        docker_image: Some("nginx".into()),
                        state: started.then(|| "STARTED".to_owned()),
                        ..Default::default()
                    },
                    audit_request: tally_domain::audit::Value::empty(),
                };
                engine.submit(envelope(command)).await.expect("create app");
                n += workers;
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Toggles apps between started and stopped from `concurrency` tasks; every command writes one
/// usage event, one audit event and one entity record.
async fn state_changes(engine: &Arc<Engine>, concurrency: u64, apps: u64, seconds: u64) -> String {
    let stop = Arc::new(AtomicBool::new(false));
    let head_before = engine.view().meta.head;
    let started_at = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let engine = engine.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut usage = 0usize;
            let mut i = 0u64;
            // Each task owns its own apps, so every toggle really changes state.
            let mine: Vec<u64> = (0..apps).filter(|n| n % concurrency == c).collect();
            // Start from each app's real state, so every toggle changes it.
            let view = engine.view();
            let mut started: Vec<bool> = mine
                .iter()
                .map(|n| {
                    view.state
                        .app(app(*n))
                        .is_some_and(|a| a.state == tally_domain::model::ProcessState::Started)
                })
                .collect();
            while !stop.load(Ordering::Relaxed) {
                let slot = (i as usize) % mine.len();
                started[slot] = !started[slot];
                let command = Command::UpdateApp {
                    guid: app(mine[slot]),
                    attributes: AppAttributes {
                        state: Some(if started[slot] { "STARTED" } else { "STOPPED" }.to_owned()),
                        ..Default::default()
                    },
                    audit_request: tally_domain::audit::Value::empty(),
                };
                let sent = Instant::now();
                let committed = engine.submit(envelope(command)).await.expect("toggle");
                latencies.push(sent.elapsed());
                usage += committed
                    .records
                    .iter()
                    .filter(|(_, e)| matches!(e, Event::UsageRecorded(_)))
                    .count();
                i += 1;
            }
            (latencies, usage)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut usage_events = 0;
    for task in tasks {
        let (mine, usage) = task.await.expect("task");
        latencies.extend(mine);
        usage_events += usage;
    }
    let elapsed = started_at.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let records = engine.view().meta.head - head_before;
    let commands = latencies.len() as f64;
    format!(
        "| state changes, {concurrency:>2} submitters | {:>6.0} commands/s = {:.0} usage events/s ({:.0} log records/s) | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms |",
        commands / elapsed,
        usage_events as f64 / elapsed,
        records as f64 / elapsed,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
    )
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_owned())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Start-up in a fresh process: open the data directory, recover, publish the first view.
fn startup_only(path: &std::path::Path) {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let engine = open(path);
    let ready = started.elapsed();
    let view = engine.view();
    println!(
        "STARTUP {:.0} {} {} {:.0}",
        ms(ready),
        view.meta.head,
        view.state.app_count(),
        rss_mb()
    );
    runtime.block_on(engine.shutdown());
}

fn main() {
    let options = options();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--startup-only") {
        let path = args.get(i + 1).expect("--startup-only DIR");
        startup_only(std::path::Path::new(path));
        return;
    }
    let mut rows = Vec::new();
    let data = tempfile::tempdir().expect("tempdir");
    let path = data.path().join("db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // 1. State changes.
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open(&dir.path().join("db"));
        create_apps(&engine, 4096, true).await;
        for concurrency in [1, 16, 64] {
            rows.push(state_changes(&engine, concurrency, 4096, options.seconds).await);
            println!("{}", rows.last().map_or("", String::as_str));
        }
        engine.shutdown().await;

        // 2. Purge-and-reseed with N started apps.
        let engine = open(&path);
        let t = Instant::now();
        create_apps(&engine, options.apps, true).await;
        println!("(created {} started apps in {:.1} s)", options.apps, t.elapsed().as_secs_f64());
        let t = Instant::now();
        let purged = engine.purge_and_reseed().await.expect("purge");
        let took = t.elapsed();
        let view = engine.view();
        let reseeded = engine.usage_after(&view, 0, usize::MAX).await.expect("read").len();
        assert_eq!(reseeded as u64, options.apps, "the stream holds exactly one event per started app");
        rows.push(format!(
            "| purge-and-reseed, {} started apps | {:.0} ms | {} events reseeded, stream holds {} |",
            options.apps,
            ms(took),
            purged.seeded,
            reseeded
        ));
        println!("{}", rows.last().map_or("", String::as_str));

        // 3. Fill the log to M records with state changes, then stop.
        let t = Instant::now();
        let mut i = 0u64;
        while engine.view().meta.head < options.records {
            let tasks: Vec<_> = (0..512)
                .map(|k| {
                    let n = (i + k) % options.apps;
                    let started = ((i + k) / options.apps) % 2 == 1;
                    let engine = engine.clone();
                    tokio::spawn(async move {
                        let command = Command::UpdateApp {
                            guid: app(n),
                            attributes: AppAttributes {
                                state: Some(if started { "STARTED" } else { "STOPPED" }.to_owned()),
                                ..Default::default()
                            },
                            audit_request: tally_domain::audit::Value::empty(),
                        };
                        let _ = engine.submit(envelope(command)).await;
                    })
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
            i += 512;
        }
        println!("(filled the log to {} records in {:.1} s)", engine.view().meta.head, t.elapsed().as_secs_f64());
        engine.shutdown().await;
    });
    drop(runtime);

    // 4. Start-up, in a fresh process, then the offline check.
    let output = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--startup-only", &path.to_string_lossy()])
        .output()
        .expect("startup child");
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("STARTUP "))
        .unwrap_or("")
        .split(' ')
        .collect();
    if let [ready, head, apps, rss] = fields.as_slice() {
        rows.push(format!("| start-up, {head} log records, {apps} apps | ready in {ready} ms | RSS {rss} MB after recovery |"));
    }
    let store = SledLog::open(&path, &SledOptions::default()).expect("open");
    let t = Instant::now();
    let report = store.verify().expect("verify");
    rows.push(format!(
        "| `tally verify` of that directory | {:.0} ms | {} problems; {} MB on disk |",
        ms(t.elapsed()),
        report.problems.len(),
        store.size_on_disk() / 1_000_000
    ));
    println!();
    println!("| workload | result | detail |");
    println!("|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
