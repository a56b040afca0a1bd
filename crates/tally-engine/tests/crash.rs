//! kill -9 under load: a child process commits from many tasks and prints each acknowledged
//! record; the parent kills it with SIGKILL at a random moment, reopens the data directory and
//! checks that every acknowledged record is there exactly once and that the log is dense and
//! verifies. Repeated `TALLY_CRASH_ROUNDS` times (20 by default; 100 for the long run).
//!
//! The child is this same test binary, re-run with `--ignored --exact crash_child`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tally_domain::{Actor, AppAttributes, Command, Envelope, Event, Guid, Seq};
use tally_engine::{Engine, EngineConfig, RandomIds, SystemClock};
use tally_store::{LogStore, SledLog, SledOptions};

const ORG: Guid = Guid::from_u128(0xA);
const SPACE: Guid = Guid::from_u128(0xB);
const CHILD_ENV: &str = "TALLY_CRASH_CHILD_DIR";

fn envelope(command: Command) -> Envelope {
    Envelope {
        command,
        actor: Actor::system(),
        principal: None,
    }
}

/// The child: writes forever until killed, printing `ACK <audit guid> <seq>` after each commit.
#[test]
#[ignore = "run by kill_minus_nine_loses_nothing_acknowledged as its child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store: Arc<dyn LogStore> =
            Arc::new(SledLog::open(std::path::Path::new(&dir), &SledOptions::default()).unwrap());
        let config = EngineConfig {
            checkpoint_every: 500,
            ..EngineConfig::default()
        };
        let engine = Arc::new(
            Engine::start(store, config, Box::new(SystemClock), Box::new(RandomIds)).unwrap(),
        );
        if engine.view().state.org(ORG).is_none() {
            engine
                .submit(envelope(Command::CreateOrg {
                    guid: ORG,
                    name: "o".into(),
                }))
                .await
                .unwrap();
            engine
                .submit(envelope(Command::CreateSpace {
                    guid: SPACE,
                    org_guid: ORG,
                    name: "s".into(),
                }))
                .await
                .unwrap();
        }
        println!("READY");
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let guid = Guid::from_u128(rand::rng().random());
                    let create = Command::CreateApp {
                        guid,
                        attributes: AppAttributes {
                            name: Some(guid.to_string()),
                            space_guid: Some(SPACE),
                            docker_image: Some("nginx".into()),
                            ..Default::default()
                        },
                        audit_request: tally_domain::audit::Value::empty(),
                    };
                    let start = Command::UpdateApp {
                        guid,
                        attributes: AppAttributes {
                            state: Some("STARTED".into()),
                            ..Default::default()
                        },
                        audit_request: tally_domain::audit::Value::empty(),
                    };
                    for command in [create, start] {
                        let committed = engine.submit(envelope(command)).await.unwrap();
                        for (seq, event) in committed.records {
                            if let Event::AuditRecorded(audit) = event {
                                println!("ACK {} {seq}", audit.guid);
                            }
                        }
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

#[test]
fn kill_minus_nine_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("TALLY_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged: HashMap<Guid, Seq> = HashMap::new();
    let mut rng = rand::rng();
    for round in 0..rounds {
        let mut child = Process::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to be ready, then let it write for a random while and kill it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match received.recv_timeout(Duration::from_millis(100)) {
                // libtest may print its own prefix on the same line.
                Ok(line) if line.ends_with("READY") => break,
                Ok(_) => {}
                Err(_) => assert!(
                    Instant::now() < deadline,
                    "round {round}: the child never became ready"
                ),
            }
        }
        // Once writes are being acknowledged, let it write for a random while, then kill it.
        let mut early = Vec::new();
        loop {
            match received.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("ACK ") => {
                    early.push(line);
                    break;
                }
                Ok(_) => {}
                Err(_) => assert!(
                    Instant::now() < deadline,
                    "round {round}: the child acknowledged nothing"
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(20..250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let mut this_round = 0;
        for line in early.into_iter().chain(received.try_iter()) {
            if let Some(rest) = line.find("ACK ").map(|at| &line[at + 4..]) {
                let mut parts = rest.split(' ');
                let guid: Guid = parts.next().unwrap().parse().unwrap();
                let seq: Seq = parts.next().unwrap().parse().unwrap();
                assert!(
                    acknowledged.insert(guid, seq).is_none(),
                    "audit guid {guid} acknowledged twice"
                );
                this_round += 1;
            }
        }
        assert!(
            this_round > 0,
            "round {round}: the child acknowledged nothing before it was killed"
        );

        let store = SledLog::open(&data, &SledOptions::default()).unwrap();
        let recovered = store.recover().unwrap();
        let report = store.verify().unwrap();
        assert!(
            report.problems.is_empty(),
            "round {round}: {:?}",
            report.problems
        );
        for (guid, seq) in &acknowledged {
            assert!(
                *seq <= recovered.meta.head,
                "round {round}: acknowledged seq {seq} beyond head"
            );
            let found = store.audit_at(*seq).unwrap();
            assert_eq!(
                found.map(|a| a.guid),
                Some(*guid),
                "round {round}: acknowledged record {guid} lost"
            );
        }
        // Exactly once: verify checked that every position holds one record whose guid carries
        // that position, so an acknowledged guid cannot appear anywhere else.
        assert!(report.audit_events >= acknowledged.len() as u64);
    }
}
