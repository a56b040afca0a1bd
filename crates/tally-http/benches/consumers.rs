//! Consumer benchmark: the real router on a loopback socket over a sled log with fsync on.
//!
//! ```text
//! cargo bench -p tally-http --bench consumers              # full run
//! cargo bench -p tally-http --bench consumers -- --quick   # smaller numbers, for a smoke run
//! ```
//!
//! Measures (design.md goals):
//! - how long a new event takes to reach a consumer that waits for it, from the moment its
//!   commit became durable (the engine publishes the new head) to the moment the consumer has
//!   the bytes: over the stream (NDJSON) and over a `wait` long poll; goal p99 <= 10 ms;
//! - catch-up reads: `GET /v3/app_usage_events?per_page=5000&after_guid=...` page after page
//!   from the start; goal >= 150,000 events/s.
//!
//! Options: `--events N` written before the catch-up, `--rounds N` latency samples.

// A benchmark's setup failing is a bug in the benchmark: panicking there is what we want.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_domain::{event_guid_seq, Actor, AppAttributes, Command, Envelope, Guid, Seq};
use tally_engine::{Engine, EngineConfig, RandomIds, SystemClock};
use tally_http::{auth, AppState, Closing, HttpSettings};
use tally_store::{LogStore, SledLog, SledOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ORG: Guid = Guid::from_u128(0xA);
const SPACE: Guid = Guid::from_u128(0xB);
const SECRET: &[u8] = b"bench-secret";

fn app(n: u64) -> Guid {
    Guid::from_u128(u128::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1)
}

fn envelope(command: Command) -> Envelope {
    Envelope {
        command,
        actor: Actor::system(),
        principal: None,
    }
}

fn scale(n: u64, instances: i64) -> Envelope {
    envelope(Command::UpdateApp {
        guid: app(n),
        attributes: AppAttributes {
            instances: Some(instances),
            ..Default::default()
        },
        audit_request: tally_domain::audit::Value::empty(),
    })
}

fn option(name: &str, quick: u64, full: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    let value = args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    value.unwrap_or(if args.iter().any(|a| a == "--quick") {
        quick
    } else {
        full
    })
}

fn token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"user_id": "bench", "aud": ["cloud_controller"], "exp": exp,
        "jti": "j", "scope": ["cloud_controller.admin"]});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        at(0.5),
        at(0.99),
        at(1.0),
        samples.len()
    )
}

#[derive(serde::Deserialize)]
struct Page {
    resources: Vec<Resource>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)] // read to count as parsed, as a consumer would
struct Resource {
    guid: String,
    state: State,
    instance_count: Counts,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct State {
    current: String,
    previous: Option<String>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Counts {
    current: i64,
    previous: Option<i64>,
}

/// When each head became durable, as the engine published it.
fn record_commits(engine: &Arc<Engine>) -> Arc<Mutex<BTreeMap<Seq, Instant>>> {
    let commits = Arc::new(Mutex::new(BTreeMap::new()));
    let mut views = engine.subscribe();
    let out = commits.clone();
    tokio::spawn(async move {
        while views.changed().await.is_ok() {
            let head = views.borrow_and_update().meta.head;
            out.lock().unwrap().insert(head, Instant::now());
        }
    });
    commits
}

/// The moment the commit holding `seq` was published (the recorder may run just after the
/// consumer received the event; then the latency counts as 0).
async fn committed_at(commits: &Mutex<BTreeMap<Seq, Instant>>, seq: Seq) -> Instant {
    loop {
        if let Some(at) = commits
            .lock()
            .unwrap()
            .range(seq..)
            .next()
            .map(|(_, at)| *at)
        {
            return at;
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
}

fn seq_of(guid: &str) -> Seq {
    event_guid_seq(guid.parse().unwrap()).unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = option("--events", 50_000, 300_000);
    let rounds = option("--rounds", 200, 1000);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn LogStore> =
        Arc::new(SledLog::open(dir.path(), &SledOptions::default()).unwrap());
    let engine = Arc::new(
        Engine::start(
            store,
            EngineConfig::default(),
            Box::new(SystemClock),
            Box::new(RandomIds),
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(AppState {
        engine: engine.clone(),
        settings: HttpSettings {
            external_url: base.clone(),
            uaa_url: "http://uaa.example.org".into(),
            info: Default::default(),
            request_timeout: Duration::from_secs(60),
            max_upload_bytes: 1 << 20,
            max_page_bytes: 16 << 20,
            packages_dir: dir.path().join("packages"),
            staging_callback_password: None,
            forward_timeout: std::time::Duration::from_secs(10),
        },
        verifier: auth::TokenVerifier::new(auth::AuthSettings {
            hmac_secrets: vec![SECRET.to_vec()],
            audience: "cloud_controller".into(),
            ..auth::AuthSettings::default()
        })
        .unwrap(),
        closing: Closing::new().1,
        metrics: Default::default(),
    });
    // As `tally serve` does: TCP_NODELAY on every connection.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        axum::serve(listener, tally_http::router(state))
            .await
            .unwrap();
    });
    let client = reqwest::Client::new();
    let token = token();

    // Set-up: 64 started docker apps.
    for command in [
        Command::CreateOrg {
            guid: ORG,
            name: "o".into(),
        },
        Command::CreateSpace {
            guid: SPACE,
            org_guid: ORG,
            name: "s".into(),
        },
    ] {
        engine.submit(envelope(command)).await.unwrap();
    }
    let apps = 64u64;
    for n in 0..apps {
        engine
            .submit(envelope(Command::CreateApp {
                guid: app(n),
                attributes: AppAttributes {
                    name: Some(format!("app-{n}")),
                    space_guid: Some(SPACE),
                    docker_image: Some("nginx".into()),
                    state: Some("STARTED".into()),
                    ..Default::default()
                },
                audit_request: tally_domain::audit::Value::empty(),
            }))
            .await
            .unwrap();
    }
    let commits = record_commits(&engine);

    // 1. The stream: one consumer, one event at a time.
    let mut response = client
        .get(format!("{base}/v3/app_usage_events/stream"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut pending = Vec::new();
    let mut next_line = async || -> serde_json::Value {
        loop {
            if let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                return serde_json::from_slice(&line).unwrap();
            }
            let chunk = response.chunk().await.unwrap().expect("stream open");
            pending.extend_from_slice(&chunk);
        }
    };
    // Drain what exists.
    let existing = engine.view().usage.len();
    let mut drained = 0;
    while drained < existing {
        if next_line().await["type"] == "usage_event" {
            drained += 1;
        }
    }
    // Every change must change something: app k alternates between 2 and 3 instances.
    let change = |k: u64| scale(k % apps, 2 + ((k / apps) % 2) as i64);
    let mut stream_latency = Vec::new();
    let mut stream_total = Vec::new();
    for round in 0..rounds {
        let submitted = Instant::now();
        engine.submit(change(round)).await.unwrap();
        let frame = loop {
            let frame = next_line().await;
            if frame["type"] == "usage_event" {
                break frame;
            }
        };
        let received = Instant::now();
        let seq = seq_of(frame["event"]["guid"].as_str().unwrap());
        stream_latency.push(received.saturating_duration_since(committed_at(&commits, seq).await));
        stream_total.push(received - submitted);
    }
    println!(
        "new event to a streaming consumer (commit durable -> bytes received): {}",
        percentiles(stream_latency)
    );
    println!(
        "  (command submitted -> bytes received, the commit's fsync included: {})",
        percentiles(stream_total)
    );

    // 2. The long poll: a consumer waits after the newest event, then one commit arrives.
    let mut poll_latency = Vec::new();
    for round in 0..rounds {
        let last = engine.view().usage.last().map(|(seq, _)| *seq).unwrap();
        let last_guid = engine
            .usage_after(&engine.view(), last - 1, 1)
            .await
            .unwrap()[0]
            .1
            .guid;
        let request = client
            .get(format!(
                "{base}/v3/app_usage_events?after_guid={last_guid}&wait=10"
            ))
            .bearer_auth(&token)
            .send();
        let waiting = tokio::spawn(async move {
            let body: serde_json::Value = request.await.unwrap().json().await.unwrap();
            (Instant::now(), body)
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        engine.submit(change(rounds + round)).await.unwrap();
        let (received, body) = waiting.await.unwrap();
        let seq = seq_of(body["resources"][0]["guid"].as_str().unwrap());
        poll_latency.push(received.saturating_duration_since(committed_at(&commits, seq).await));
    }
    println!(
        "new event to a long-polling consumer (commit durable -> response received): {}",
        percentiles(poll_latency)
    );

    // 3. Catch-up: write `events` usage events from 64 submitters, then read them all.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let engine = engine.clone();
        let per = events / 64;
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                // Worker w alone changes app w, to a different count each time.
                engine
                    .submit(scale(w % apps, 4 + (i % 2) as i64))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = engine.view().usage.len();
    println!(
        "wrote {} usage events in {:.1} s",
        total,
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let mut read = 0usize;
    let mut after: Option<String> = None;
    let mut serving = Duration::ZERO;
    loop {
        let url = match &after {
            Some(a) => format!("{base}/v3/app_usage_events?per_page=5000&after_guid={a}"),
            None => format!("{base}/v3/app_usage_events?per_page=5000"),
        };
        let asked = Instant::now();
        let bytes = client
            .get(url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        serving += asked.elapsed();
        // A consumer parses into its own types (here: every event's guid and state).
        let page: Page = serde_json::from_slice(&bytes).unwrap();
        let Some(last) = page.resources.last() else {
            break;
        };
        read += page.resources.len();
        after = Some(last.guid.clone());
    }
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(read, total, "the catch-up read every event");
    println!(
        "catch-up, v3 pages of 5000 after_guid: {read} events in {seconds:.2} s = {:.0} events/s \
         ({:.2} s waiting for pages, the rest parsing them as a consumer does)",
        read as f64 / seconds,
        serving.as_secs_f64()
    );
}
