//! The conformance suite: random commits, checkpoints, purges, compactions and reopens are
//! applied to a store and to a plain model; after every step the store must read back exactly
//! what the model holds, recover the model's table, and pass `verify`. Both stores run it.

use std::collections::BTreeMap;

use chrono::TimeZone;
use proptest::prelude::*;
use tally_domain::audit::{Actor, AuditEvent};
use tally_domain::model::*;
use tally_domain::{event_guid, Event, Guid, Seq, State, Timestamp, UsageEvent, UsageState};

use crate::*;

fn at(n: u64) -> Timestamp {
    chrono::Utc
        .timestamp_opt(1_700_000_000 + n as i64, 0)
        .single()
        .unwrap_or_default()
}

const SPACE: Guid = Guid::from_u128(0x5);
const ORG: Guid = Guid::from_u128(0x6);

fn app(guid: Guid, instances: i64, started: bool) -> App {
    App {
        guid,
        name: format!("app-{guid}"),
        space_guid: SPACE,
        stack_guid: DEFAULT_STACK_GUID,
        state: if started {
            ProcessState::Started
        } else {
            ProcessState::Stopped
        },
        memory_mb: 256,
        instances,
        disk_quota_mb: 1024,
        log_rate_limit: 1_048_576,
        buildpack: None,
        command: Some("./run".into()),
        health_check_type: HealthCheckType::Port,
        health_check_timeout: None,
        health_check_http_endpoint: None,
        diego: true,
        enable_ssh: true,
        docker_image: None,
        docker_credentials: None,
        environment_json: "{}".into(),
        production: false,
        console: false,
        debug: None,
        ports: None,
        version: guid,
        package: None,
        build: None,
        latest_droplet: None,
        current_droplet_guid: None,
        package_updated_at: None,
        created_at: at(0),
        updated_at: at(1),
    }
}

fn usage(guid: Guid, app_guid: Guid, state: UsageState) -> UsageEvent {
    UsageEvent {
        guid,
        created_at: at(2),
        state,
        previous_state: Some(UsageState::Stopped),
        instance_count: 1,
        previous_instance_count: Some(1),
        memory_in_mb_per_instance: 256,
        previous_memory_in_mb_per_instance: Some(256),
        app_guid: app_guid.to_string(),
        app_name: "x".into(),
        space_guid: SPACE,
        space_name: "dev".into(),
        org_guid: ORG,
        buildpack_guid: None,
        buildpack_name: None,
        package_state: Some("STAGED".into()),
        previous_package_state: Some("UNKNOWN".into()),
        parent_app_guid: Some(app_guid),
        parent_app_name: Some("x".into()),
        process_type: Some("web".into()),
        task_guid: None,
        task_name: None,
    }
}

fn audit(guid: Guid, app_guid: Guid) -> AuditEvent {
    AuditEvent {
        guid,
        created_at: at(3),
        event_type: "audit.app.update".into(),
        actor: Actor::system(),
        actee: app_guid.to_string(),
        actee_type: "app".into(),
        actee_name: "x".into(),
        metadata: tally_domain::audit::Value::empty(),
        space_guid: Some(SPACE),
        organization_guid: Some(ORG),
    }
}

/// What a step does.
#[derive(Debug, Clone)]
enum Step {
    /// Append these records (app index, kind 0 = entity update, 1 = delete, 2 = usage, 3 = audit,
    /// 4 = role granted, 5 = role revoked; members share their guid and bucket with an app).
    Append {
        records: Vec<(u8, u8, i64)>,
        checkpoint: bool,
    },
    /// Purge-and-reseed: new epoch, reseed every started app.
    Purge,
    /// Truncate the log at head + 1: the snapshot in this many commits, then `log_start` moves.
    Truncate(u32),
    /// Compact with this budget.
    Compact(usize),
    /// Drop and reopen (sled) or recover (memory).
    Reopen,
    /// Let go of the read cache (sled reopens underneath, the handle stays).
    ReleaseCache,
    /// Retention: prune the usage events whose position modulo 3 is this (as of the current
    /// epoch, or of the previous one when `stale`, which must change nothing).
    Prune { residue: u64, stale: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (prop::collection::vec((0u8..5, 0u8..6, 0i64..4), 0..12), any::<bool>())
            .prop_map(|(records, checkpoint)| Step::Append { records, checkpoint }),
        1 => Just(Step::Purge),
        1 => (1u32..4).prop_map(Step::Truncate),
        1 => (1usize..50).prop_map(Step::Compact),
        1 => Just(Step::Reopen),
        1 => Just(Step::ReleaseCache),
        1 => (0u64..3, prop::bool::weighted(0.2))
            .prop_map(|(residue, stale)| Step::Prune { residue, stale }),
    ]
}

/// The model: what the store must hold.
#[derive(Default)]
struct Model {
    meta: Meta,
    state: State,
    dirty: Vec<Guid>,
    usage: BTreeMap<Seq, UsageEvent>,
    pruned: BTreeMap<Seq, PrunedUsage>,
    audit: BTreeMap<Seq, AuditEvent>,
    next_guid: u128,
}

impl Model {
    fn fresh(&mut self) -> Guid {
        self.next_guid += 1;
        Guid::from_u128(0x1_0000 + self.next_guid)
    }

    fn checkpoint(&mut self) -> Checkpoint {
        self.meta.checkpoint = self.meta.head;
        Checkpoint {
            state: self.state.clone(),
            dirty: std::mem::take(&mut self.dirty),
        }
    }

    /// Turns a step into a commit (or nothing) and applies it to the model.
    fn plan(&mut self, step: &Step) -> Option<Commit> {
        match step {
            Step::Append {
                records,
                checkpoint,
            } => {
                let mut out = Vec::new();
                let mut seq = self.meta.head;
                for (app_index, kind, n) in records {
                    let guid = Guid::from_u128(0x100 + u128::from(*app_index));
                    seq += 1;
                    let event = match kind {
                        0 => Event::AppUpdated(app(guid, *n, n % 2 == 0)),
                        1 => Event::AppDeleted { guid },
                        2 => {
                            let u = usage(event_guid(seq, self.fresh()), guid, UsageState::Started);
                            self.usage.insert(seq, u.clone());
                            Event::UsageRecorded(u)
                        }
                        3 => {
                            let mut a = audit(event_guid(seq, self.fresh()), guid);
                            if n % 2 == 1 {
                                // A user id that is not a guid takes the text-actee record.
                                a.actee = format!("client-{n}");
                                a.actee_type = "user".into();
                            }
                            self.audit.insert(seq, a.clone());
                            Event::AuditRecorded(a)
                        }
                        4 | 5 => {
                            let m = tally_domain::Membership {
                                resource: guid,
                                role: tally_domain::RoleKind::ALL[*n as usize % 7],
                                user: format!("user-{}", n % 2),
                            };
                            if *kind == 4 {
                                Event::RoleGranted(m)
                            } else {
                                Event::RoleRevoked(m)
                            }
                        }
                        _ => unreachable!("kind {kind}"),
                    };
                    self.state.evolve(&event);
                    self.dirty.extend(TableRow::guid_of(&event));
                    out.push((seq, event));
                }
                self.meta.head = seq;
                let checkpoint = checkpoint.then(|| self.checkpoint());
                Some(Commit {
                    records: out,
                    meta: self.meta.clone(),
                    checkpoint,
                    snapshot: None,
                })
            }
            Step::Purge => {
                let start = self.meta.head + 1;
                let mut out = Vec::new();
                let mut seq = self.meta.head;
                self.usage.clear();
                self.pruned.clear();
                for a in self
                    .state
                    .apps()
                    .filter(|a| a.state == ProcessState::Started)
                {
                    seq += 1;
                    let u = usage(a.guid, a.guid, UsageState::Started);
                    self.usage.insert(seq, u.clone());
                    out.push((seq, Event::UsageRecorded(u)));
                }
                self.meta = Meta {
                    head: seq,
                    epoch: self.meta.epoch + 1,
                    epoch_started_at: Some(at(seq)),
                    usage_floor: start,
                    reseeded: out.len() as u64,
                    ..self.meta.clone()
                };
                Some(Commit {
                    records: out,
                    meta: self.meta.clone(),
                    checkpoint: None,
                    snapshot: None,
                })
            }
            Step::Truncate(_) | Step::Prune { .. } => None,
            Step::Compact(_) | Step::Reopen | Step::ReleaseCache => None,
        }
    }
}

fn tally_store_key(seq: Seq, event: &AuditEvent) -> crate::AuditKey<'_> {
    crate::AuditKey::of(seq, event)
}

fn check(store: &dyn LogStore, model: &Model) {
    let meta = &model.meta;
    let usage = store
        .usage_range(meta.usage_floor, meta.head, usize::MAX)
        .unwrap();
    let expected: Vec<(Seq, UsageEvent)> =
        model.usage.iter().map(|(s, u)| (*s, u.clone())).collect();
    assert_eq!(usage, expected);
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(
        store
            .usage_range_rev(meta.usage_floor, meta.head, usize::MAX)
            .unwrap(),
        reversed
    );
    // Every window of every size reads back exactly the model's slice.
    for (i, (from, _)) in expected.iter().enumerate() {
        for limit in [1, 2, 5] {
            let window: Vec<_> = expected[i..].iter().take(limit).cloned().collect();
            assert_eq!(store.usage_range(*from, meta.head, limit).unwrap(), window);
            let (upto, _) = expected[expected.len() - 1 - i];
            let back: Vec<_> = reversed[i..].iter().take(limit).cloned().collect();
            assert_eq!(
                store
                    .usage_range_rev(meta.usage_floor, upto, limit)
                    .unwrap(),
                back
            );
        }
    }
    for seq in meta.usage_floor..=meta.head {
        let expected = match (model.usage.get(&seq), model.pruned.get(&seq)) {
            (Some(u), _) => Some(UsageSlot::Event(u.clone())),
            (None, Some(p)) => Some(UsageSlot::Pruned(*p)),
            (None, None) => None,
        };
        assert_eq!(store.usage_at(seq).unwrap(), expected);
    }
    let positions: Vec<(Seq, Timestamp)> = model
        .usage
        .iter()
        .map(|(seq, u)| (*seq, u.created_at))
        .collect();
    assert_eq!(
        store.usage_positions(meta.usage_floor, meta.head).unwrap(),
        positions
    );
    // Recovery's one pass hands on exactly what the index reads would give.
    let (mut seen, mut keys) = (Vec::new(), Vec::new());
    let recovered = store
        .recover_indexing(&mut |seq, at| seen.push((seq, at)), &mut |k| {
            keys.push(format!("{k:?}"))
        })
        .unwrap();
    assert_eq!(&recovered.meta, meta);
    assert_eq!(seen, positions);
    let mut read = Vec::new();
    store
        .audit_keys(1, meta.head, &mut |k| read.push(format!("{k:?}")))
        .unwrap();
    assert_eq!(keys, read);
    assert_eq!(keys.len(), model.audit.len());
    let audits = store.audit_range(1, meta.head, usize::MAX).unwrap();
    let expected: Vec<(Seq, AuditEvent)> =
        model.audit.iter().map(|(s, a)| (*s, a.clone())).collect();
    assert_eq!(audits, expected);
    for seq in 1..=meta.head {
        assert_eq!(store.audit_at(seq).unwrap().as_ref(), model.audit.get(&seq));
    }
    // What the audit index reads of the events, from any position (inside a block too) up to
    // any other, is what the whole events say.
    for from in (1..=meta.head + 1).step_by(3) {
        for upto in [from, from + 4, meta.head] {
            let mut keys: Vec<String> = Vec::new();
            let last = store
                .audit_keys(from, upto, &mut |k| keys.push(format!("{k:?}")))
                .unwrap();
            let span = || {
                model
                    .audit
                    .iter()
                    .filter(|(seq, _)| (from..=upto).contains(*seq))
            };
            let whole: Vec<String> = span()
                .map(|(seq, a)| format!("{:?}", tally_store_key(*seq, a)))
                .collect();
            assert_eq!(keys, whole, "audit keys {from}..={upto}");
            let newest = span().next_back();
            assert_eq!(last, newest.map_or(0, |(seq, _)| *seq));
        }
    }
    // Any ascending set of positions (every one, every other, every third; beyond the head
    // too) reads exactly the audit events among them.
    for step in 1..=3 {
        let seqs: Vec<Seq> = (1..=meta.head + 2).step_by(step).collect();
        let expected: Vec<(Seq, AuditEvent)> = seqs
            .iter()
            .filter_map(|seq| model.audit.get(seq).map(|a| (*seq, a.clone())))
            .collect();
        assert_eq!(store.audit_many(&seqs).unwrap(), expected);
    }
    let recovered = store.recover().unwrap();
    assert_eq!(&recovered.meta, meta);
    assert_eq!(recovered.state, model.state);
    let report = store.verify().unwrap();
    assert!(
        report.problems.is_empty(),
        "verify found: {:?}",
        report.problems
    );
}

fn run(steps: &[Step], mut open: impl FnMut(Option<Box<dyn LogStore>>) -> Box<dyn LogStore>) {
    let mut store = open(None);
    let mut model = Model::default();
    for step in steps {
        if let Some(commit) = model.plan(step) {
            store.commit(&commit).unwrap();
        }
        match step {
            Step::Compact(budget) => {
                store.compact(*budget).unwrap();
            }
            Step::Truncate(parts) => {
                // The snapshot of the table at head, in `parts` commits; the last moves log_start.
                let target = model.meta.head + 1;
                let per = SNAPSHOT_CHUNKS.div_ceil(*parts);
                let mut next = 0;
                while next < SNAPSHOT_CHUNKS {
                    let end = (next + per).min(SNAPSHOT_CHUNKS);
                    let mut meta = model.meta.clone();
                    if end == SNAPSHOT_CHUNKS {
                        meta.log_start = target;
                    }
                    let snapshot = Some(SnapshotPart {
                        log_start: target,
                        state: model.state.clone(),
                        chunks: next..end,
                    });
                    store
                        .commit(&Commit {
                            records: Vec::new(),
                            meta: meta.clone(),
                            checkpoint: None,
                            snapshot,
                        })
                        .unwrap();
                    model.meta = meta;
                    next = end;
                }
            }
            Step::Reopen => store = open(Some(store)),
            Step::ReleaseCache => store.release_cache().unwrap(),
            Step::Prune { residue, stale } => {
                let cutoff = at(100);
                let seqs: Vec<Seq> = model
                    .usage
                    .keys()
                    .copied()
                    .filter(|seq| seq % 3 == *residue)
                    .collect();
                let epoch = model.meta.epoch - u64::from(*stale);
                // Two calls, as the engine's steps make them.
                let (first, second) = seqs.split_at(seqs.len() / 2);
                let replaced = store.prune(epoch, first, cutoff).unwrap()
                    + store.prune(epoch, second, cutoff).unwrap();
                if *stale {
                    assert_eq!(replaced, 0);
                } else {
                    assert_eq!(replaced, seqs.len());
                    for seq in seqs {
                        if let Some(u) = model.usage.remove(&seq) {
                            model.pruned.insert(
                                seq,
                                PrunedUsage {
                                    guid: u.guid,
                                    created_at: u.created_at,
                                    cutoff,
                                },
                            );
                        }
                    }
                }
            }
            _ => {}
        }
        check(store.as_ref(), &model);
    }
    while store.compact(64).unwrap() > 0 {}
    check(store.as_ref(), &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_matches_the_model(steps in prop::collection::vec(step(), 1..25)) {
        run(&steps, |previous| previous.unwrap_or_else(|| Box::new(MemLog::in_memory())));
    }

    #[test]
    fn sled_store_matches_the_model(
        steps in prop::collection::vec(step(), 1..25),
        small_cache in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // A small cache makes the store release it (reopen sled) every few operations.
        let options = SledOptions {
            cache_capacity_bytes: if small_cache { 16 * 1024 } else { 64 << 20 },
        };
        run(&steps, |previous| {
            drop(previous);
            Box::new(SledLog::open(&path, &options).unwrap())
        });
    }
}

#[test]
fn table_buckets_hold_rows_of_any_guid() {
    // Guids at both ends of the guid space land in the first and the last bucket.
    let store = MemLog::in_memory();
    let mut state = State::default();
    let low = app(Guid::from_u128(1), 1, true);
    let high = app(Guid::from_u128(u128::MAX), 2, false);
    state.evolve(&Event::AppCreated(low.clone()));
    state.evolve(&Event::AppCreated(high.clone()));
    let commit = Commit {
        records: vec![(1, Event::AppCreated(low)), (2, Event::AppCreated(high))],
        meta: Meta {
            head: 2,
            checkpoint: 2,
            ..Meta::default()
        },
        checkpoint: Some(Checkpoint {
            state: state.clone(),
            dirty: vec![Guid::from_u128(1), Guid::from_u128(u128::MAX)],
        }),
        snapshot: None,
    };
    store.commit(&commit).unwrap();
    let recovered = store.recover().unwrap();
    assert_eq!((recovered.state, recovered.replayed), (state, 0));
}

#[test]
fn commits_must_follow_the_head() {
    let store = MemLog::in_memory();
    let gap = Commit {
        records: vec![(2, Event::AppDeleted { guid: SPACE })],
        meta: Meta {
            head: 2,
            ..Meta::default()
        },
        ..Commit::default()
    };
    assert!(matches!(store.commit(&gap), Err(StoreError::Sequence(_))));
    let wrong_head = Commit {
        records: vec![(1, Event::AppDeleted { guid: SPACE })],
        meta: Meta {
            head: 2,
            ..Meta::default()
        },
        ..Commit::default()
    };
    assert!(matches!(
        store.commit(&wrong_head),
        Err(StoreError::Sequence(_))
    ));
    let moved = Commit {
        records: vec![(1, Event::AppDeleted { guid: SPACE })],
        meta: Meta {
            head: 1,
            log_start: 2,
            ..Meta::default()
        },
        ..Commit::default()
    };
    assert!(matches!(store.commit(&moved), Err(StoreError::Sequence(_))));
    // Moving log_start needs its whole snapshot: the last chunks here, the others stored before.
    let incomplete = Commit {
        meta: Meta {
            log_start: 1,
            ..Meta::default()
        },
        snapshot: Some(SnapshotPart {
            log_start: 1,
            state: State::default(),
            chunks: 0..SNAPSHOT_CHUNKS,
        }),
        ..Commit::default()
    };
    store.commit(&incomplete).unwrap();
    let partial = |chunks, log_start| Commit {
        meta: Meta {
            log_start,
            ..Meta::default()
        },
        snapshot: Some(SnapshotPart {
            log_start: 1,
            state: State::default(),
            chunks,
        }),
        ..Commit::default()
    };
    assert!(
        matches!(store.commit(&partial(0..10, 1)), Ok(())),
        "chunks may be written ahead"
    );
    let far = Commit {
        meta: Meta {
            log_start: 5,
            ..Meta::default()
        },
        snapshot: Some(SnapshotPart {
            log_start: 5,
            state: State::default(),
            chunks: 0..SNAPSHOT_CHUNKS,
        }),
        ..Commit::default()
    };
    assert!(
        matches!(store.commit(&far), Err(StoreError::Sequence(_))),
        "beyond head + 1"
    );
    let gaps = Commit {
        meta: Meta {
            log_start: 1,
            head: 0,
            ..Meta::default()
        },
        snapshot: Some(SnapshotPart {
            log_start: 1,
            state: State::default(),
            chunks: 100..SNAPSHOT_CHUNKS,
        }),
        ..Commit::default()
    };
    let _ = gaps;
    assert_eq!(store.recover().unwrap().meta, Meta::default());
}

#[test]
fn a_failed_write_changes_nothing() {
    let store = MemLog::in_memory();
    let u = usage(
        event_guid(1, Guid::from_u128(1)),
        Guid::from_u128(2),
        UsageState::Started,
    );
    let commit = Commit {
        records: vec![(1, Event::UsageRecorded(u.clone()))],
        meta: Meta {
            head: 1,
            ..Meta::default()
        },
        ..Commit::default()
    };
    store.backend().fail_writes(1);
    assert!(matches!(store.commit(&commit), Err(StoreError::Io(_))));
    assert!(store.usage_range(1, u64::MAX, 10).unwrap().is_empty());
    assert_eq!(store.meta().unwrap().head, 0);
    store.commit(&commit).unwrap();
    assert_eq!(store.usage_range(1, u64::MAX, 10).unwrap(), vec![(1, u)]);
}

#[test]
fn corruption_is_reported_with_its_position_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledLog::open(&dir.path().join("db"), &SledOptions::default()).unwrap();
    let mut records = Vec::new();
    for seq in 1..=3 {
        let u = usage(
            event_guid(seq, Guid::from_u128(7)),
            SPACE,
            UsageState::Started,
        );
        records.push((seq, Event::UsageRecorded(u)));
    }
    // Checkpointed, so recovery replays nothing: only the checksum pass can find the flip.
    let checkpoint = Some(Checkpoint {
        state: State::default(),
        dirty: Vec::new(),
    });
    let meta = Meta {
        head: 3,
        checkpoint: 3,
        ..Meta::default()
    };
    store
        .commit(&Commit {
            records,
            meta,
            checkpoint,
            snapshot: None,
        })
        .unwrap();
    assert_eq!(store.recover().unwrap().replayed, 0);
    // Flip one bit of the stored block (seq 1 to 3).
    let key = crate::keys::seq_key(crate::keys::USAGE, 1);
    let mut value = store.backend().get(&key).unwrap().unwrap();
    let last = value.len() - 1;
    value[last] ^= 1;
    store
        .backend()
        .apply(vec![backend::Op::Put(key.to_vec(), value)], true)
        .unwrap();

    let error = store.usage_range(1, 3, 10).unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt { position, .. } if position == "usage event block at seq 1"),
        "{error}"
    );
    assert_checksum_problem_at_usage_block_1(&store.verify().unwrap());
    let recovery = store.recover().unwrap_err();
    assert!(
        recovery.to_string().contains("usage event block at seq 1"),
        "{recovery}"
    );
}

#[test]
fn a_usage_block_out_of_order_of_another_stream_or_empty_is_corrupt_where_it_is() {
    use proto_schemas::v1::{BlockV1, LogRecordV1, RecordBodyV1};
    let dir = tempfile::tempdir().unwrap();
    let store = SledLog::open(&dir.path().join("db"), &SledOptions::default()).unwrap();
    let usage_body = |seq: Seq| {
        RecordBodyV1::Usage(crate::mapping::usage_to(&usage(
            event_guid(seq, Guid::from_u128(7)),
            SPACE,
            UsageState::Started,
        )))
    };
    let block = |records: Vec<(Seq, RecordBodyV1)>| {
        proto_schemas::envelope(&BlockV1 {
            records: records
                .into_iter()
                .map(|(seq, body)| LogRecordV1 { seq, body })
                .collect(),
        })
        .unwrap()
    };
    // Each damaged block is stored under seq 1 in turn; the reason names what is wrong where.
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            block(vec![
                (1, usage_body(1)),
                (3, usage_body(3)),
                (2, usage_body(2)),
            ]),
            "usage event seq 2",
            "out of order in the block at seq 1",
        ),
        (
            block(vec![(2, usage_body(2))]),
            "usage event seq 2",
            "out of order in the block at seq 1",
        ),
        (
            block(vec![
                (1, usage_body(1)),
                (2, RecordBodyV1::OrgDeleted([9; 16])),
            ]),
            "usage event seq 2",
            "record of the wrong kind for its stream",
        ),
        (
            block(Vec::new()),
            "usage event block at seq 1",
            "empty block",
        ),
    ];
    for (value, at, why) in cases {
        let key = crate::keys::seq_key(crate::keys::USAGE, 1);
        store
            .backend()
            .apply(vec![backend::Op::Put(key.to_vec(), value)], true)
            .unwrap();
        for read in [
            store.usage_range(1, 3, 10).map(|_| ()),
            store.usage_at(2).map(|_| ()),
        ] {
            let error = read.unwrap_err();
            assert!(
                matches!(&error, StoreError::Corrupt { position, reason } if position == at && reason == why),
                "{error}"
            );
        }
    }
}

/// Commits usage event `seq` (app 7) alone, as the new head; checkpointed (an empty table)
/// when `checkpointed`.
fn commit_usage(store: &dyn LogStore, seq: Seq, checkpointed: bool) -> UsageEvent {
    let u = usage(
        event_guid(seq, Guid::from_u128(7)),
        SPACE,
        UsageState::Started,
    );
    store
        .commit(&Commit {
            records: vec![(seq, Event::UsageRecorded(u.clone()))],
            meta: Meta {
                head: seq,
                checkpoint: if checkpointed { seq } else { 0 },
                ..Meta::default()
            },
            checkpoint: checkpointed.then(|| Checkpoint {
                state: State::default(),
                dirty: Vec::new(),
            }),
            snapshot: None,
        })
        .unwrap();
    u
}

/// A sled store holding `blocks` usage blocks of one record each (seq 1..=blocks), checkpointed.
fn sled_with_usage_blocks(path: &std::path::Path, blocks: u64) -> SledLog {
    let store = SledLog::open(path, &SledOptions::default()).unwrap();
    for seq in 1..=blocks {
        commit_usage(&store, seq, true);
    }
    store
}

#[test]
fn the_start_up_check_reads_every_value_once_across_cache_releases() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_with_usage_blocks(&dir.path().join("db"), 40);
    let mut keys = 0;
    store
        .backend()
        .scan(&[], &[0xff], false, &mut |_, _| {
            keys += 1;
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
    // One value per chunk, a few per chunk, and everything in one chunk.
    for chunk in [1, 700, usize::MAX] {
        assert_eq!(
            store.check_values(chunk, None).unwrap(),
            keys,
            "chunk {chunk}"
        );
    }
    // A flipped bit in the last block is found however the pass is cut.
    let key = crate::keys::seq_key(crate::keys::USAGE, 40);
    let mut value = store.backend().get(&key).unwrap().unwrap();
    value[3] ^= 0x10;
    store
        .backend()
        .apply(vec![backend::Op::Put(key.to_vec(), value)], true)
        .unwrap();
    for chunk in [1, 700, usize::MAX] {
        let error = store.check_values(chunk, None).unwrap_err();
        assert!(
            error.to_string().contains("usage event block at seq 40"),
            "chunk {chunk}: {error}"
        );
    }
}

#[test]
fn releasing_the_cache_while_others_read_and_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = std::sync::Arc::new(sled_with_usage_blocks(&path, 10));
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for seq in 11..=200 {
                commit_usage(store.as_ref(), seq, true);
            }
        })
    };
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                let events = store.usage_range(1, 10, 100).unwrap();
                assert_eq!(events.len(), 10);
            }
        })
    };
    for _ in 0..20 {
        store.release_cache().unwrap();
    }
    writer.join().unwrap();
    reader.join().unwrap();
    let events = store.usage_range(1, 200, 1000).unwrap();
    assert_eq!(
        events.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    drop(store);
    let reopened = SledLog::open(&path, &SledOptions::default()).unwrap();
    assert_eq!(reopened.recover().unwrap().meta.head, 200);
    assert_eq!(reopened.usage_range(1, 200, 1000).unwrap().len(), 200);
}

#[test]
fn the_store_keeps_to_its_cache_capacity_by_releasing_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let small = SledOptions {
        cache_capacity_bytes: 4 * 1024,
    };
    let store = SledLog::open(&path, &small).unwrap();
    let mut expected = Vec::new();
    for seq in 1..=60 {
        expected.push((seq, commit_usage(&store, seq, false)));
        assert_eq!(store.usage_range(1, seq, 100).unwrap(), expected);
    }
    let releases = store.backend().cache_releases();
    assert!(releases >= 10, "{releases} releases of a 4 KiB cache");
    // A large cache is not released by the same work.
    let large = SledLog::open(&dir.path().join("large"), &SledOptions::default()).unwrap();
    large
        .commit(&Commit {
            records: expected
                .iter()
                .map(|(seq, u)| (*seq, Event::UsageRecorded(u.clone())))
                .collect(),
            meta: Meta {
                head: 60,
                ..Meta::default()
            },
            checkpoint: None,
            snapshot: None,
        })
        .unwrap();
    assert_eq!(large.usage_range(1, 60, 100).unwrap(), expected);
    assert_eq!(large.backend().cache_releases(), 0);
    drop(store);
    let reopened = SledLog::open(&path, &SledOptions::default()).unwrap();
    assert_eq!(reopened.recover().unwrap().meta.head, 60);
    assert_eq!(reopened.usage_range(1, 60, 100).unwrap(), expected);
}

#[test]
fn an_idle_store_lets_go_of_its_cache_once_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledLog::open(&dir.path().join("db"), &SledOptions::default()).unwrap();
    let expected: Vec<_> = (1..=60)
        .map(|seq| (seq, commit_usage(&store, seq, false)))
        .collect();
    // A few small writes are not worth a reopen, however quiet the store is.
    assert!(!store.release_idle_cache().unwrap());
    // A consumer reads the stream again and again: megabytes, within the cache's capacity.
    let read_all = || {
        for _ in 0..2000 {
            assert_eq!(store.usage_range(1, 60, 100).unwrap(), expected);
        }
    };
    read_all();
    assert_eq!(store.backend().cache_releases(), 0);
    // Busy since the last look: kept.
    assert!(!store.release_idle_cache().unwrap());
    // A small write since (a readiness probe) leaves it quiet: released.
    commit_usage(&store, 61, false);
    assert!(store.release_idle_cache().unwrap());
    assert_eq!(store.backend().cache_releases(), 1);
    // Nothing worth letting go of since.
    assert!(!store.release_idle_cache().unwrap());
    // Busy again, then quiet: released again.
    read_all();
    assert!(!store.release_idle_cache().unwrap());
    assert!(store.release_idle_cache().unwrap());
    assert_eq!(store.backend().cache_releases(), 2);
    assert_eq!(store.usage_range(1, 60, 100).unwrap(), expected);
    assert_eq!(store.recover().unwrap().meta.head, 61);
}

#[test]
fn records_beyond_the_head_stop_recovery() {
    let store = MemLog::in_memory();
    let value = proto_schemas::envelope(&proto_schemas::v1::BlockV1 {
        records: vec![proto_schemas::v1::LogRecordV1 {
            seq: 9,
            body: proto_schemas::v1::RecordBodyV1::AppDeleted([0; 16]),
        }],
    })
    .unwrap();
    let key = crate::keys::seq_key(crate::keys::ENTITY, 9).to_vec();
    store
        .backend()
        .apply(vec![backend::Op::Put(key, value)], true)
        .unwrap();
    let error = store.recover().unwrap_err();
    assert!(
        error.to_string().contains("seq 9") && error.to_string().contains("beyond the head"),
        "{error}"
    );
}

/// sled's flush ends with `sync_file_range` and leaves its blob files unsynced; a durable write
/// syncs every new blob file (and their directory) and the log itself.
#[test]
fn durable_writes_sync_the_blob_files_sled_leaves_unsynced() {
    use crate::backend::Op;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let backend = SledBackend::open(&path, &SledOptions::default()).unwrap();
    backend
        .apply(vec![Op::Put(b"small".to_vec(), vec![1; 16])], true)
        .unwrap();
    assert_eq!(backend.blobs_synced(), 0, "a small value is no blob");
    let blobs = || std::fs::read_dir(path.join("blobs")).map_or(0, |d| d.count());
    backend
        .apply(vec![Op::Put(b"large".to_vec(), vec![7; 1 << 20])], false)
        .unwrap();
    assert!(blobs() >= 1, "a value of 1 MiB is a blob file of sled's");
    assert_eq!(
        backend.blobs_synced(),
        0,
        "a write that is not durable syncs nothing"
    );
    backend
        .apply(vec![Op::Put(b"another".to_vec(), vec![2; 16])], true)
        .unwrap();
    let synced = backend.blobs_synced();
    assert!(synced >= 1, "the next durable write syncs the pending blob");
    backend
        .apply(vec![Op::Put(b"more".to_vec(), vec![3; 16])], true)
        .unwrap();
    assert_eq!(
        backend.blobs_synced(),
        synced,
        "each blob file is synced once"
    );
    assert_eq!(
        backend.get(b"large").unwrap().map(|v| v.len()),
        Some(1 << 20)
    );
    // After the first look, new blobs are learned from the directory's watch, not a listing;
    // a release of the cache (sled reopened) keeps the watch.
    assert!(backend.watches_blobs(), "Linux has inotify");
    backend.release_cache().unwrap();
    let before = blobs();
    backend
        .apply(vec![Op::Put(b"second".to_vec(), vec![8; 1 << 20])], true)
        .unwrap();
    assert!(blobs() > before, "another blob file");
    assert!(
        backend.blobs_synced() > synced,
        "the watch names the new blob and the write syncs it"
    );
}

/// The golden audit records of `proto-schemas` (metadata as JSON text) read into the domain,
/// whose metadata is a typed value now, and are written again byte for byte.
#[test]
fn golden_audit_records_survive_the_typed_metadata_byte_for_byte() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas/fixtures/v1");
    for name in ["record_audit", "record_audit_text_actee"] {
        let golden = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let record: proto_schemas::v1::LogRecordV1 = proto_schemas::open(&golden).unwrap();
        let event = crate::mapping::event_from(record.body.clone()).unwrap();
        let Event::AuditRecorded(audit) = &event else {
            panic!("{name} is not an audit event: {event:?}");
        };
        assert!(
            matches!(audit.metadata, tally_domain::audit::Value::Object(ref e) if !e.is_empty()),
            "{name}: {:?}",
            audit.metadata
        );
        let again = proto_schemas::v1::LogRecordV1 {
            seq: record.seq,
            body: crate::mapping::event_to(&event),
        };
        assert_eq!(proto_schemas::envelope(&again).unwrap(), golden, "{name}");
    }
}

/// Package state 2, added with v3 packages, reads as `AWAITING_UPLOAD` and is written back byte
/// for byte; the tags before it are unchanged.
#[test]
fn golden_app_rows_keep_their_package_states() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas/fixtures/v1");
    for (name, state) in [
        ("row_app", tally_domain::model::PackageState::Ready),
        (
            "row_app_package_awaiting_upload",
            tally_domain::model::PackageState::AwaitingUpload,
        ),
    ] {
        let golden = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let row: proto_schemas::v1::TableRowV1 = proto_schemas::open(&golden).unwrap();
        let proto_schemas::v1::TableRowV1::App(app) = row else {
            panic!("{name} is not an app row");
        };
        let app = crate::mapping::app_from(*app).unwrap();
        assert_eq!(app.package.as_ref().map(|p| p.state), Some(state), "{name}");
        let again = proto_schemas::v1::TableRowV1::App(Box::new(crate::mapping::app_to(&app)));
        assert_eq!(proto_schemas::envelope(&again).unwrap(), golden, "{name}");
    }
}

/// The task records and row, added with v3 tasks, read into the domain and are written again
/// byte for byte.
#[test]
fn golden_task_records_and_rows_round_trip() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas/fixtures/v1");
    for name in ["record_task_put", "record_task_deleted"] {
        let golden = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let record: proto_schemas::v1::LogRecordV1 = proto_schemas::open(&golden).unwrap();
        let event = crate::mapping::event_from(record.body.clone()).unwrap();
        assert!(
            matches!(event, Event::TaskPut(_) | Event::TaskDeleted { .. }),
            "{name}: {event:?}"
        );
        let again = proto_schemas::v1::LogRecordV1 {
            seq: record.seq,
            body: crate::mapping::event_to(&event),
        };
        assert_eq!(proto_schemas::envelope(&again).unwrap(), golden, "{name}");
    }
    let golden = std::fs::read(dir.join("row_task.bin")).unwrap();
    let row: proto_schemas::v1::TableRowV1 = proto_schemas::open(&golden).unwrap();
    let row = crate::mapping::row_from(row).unwrap();
    let TableRow::Task(task) = &row else {
        panic!("row_task is not a task: {row:?}");
    };
    assert_eq!(task.state, tally_domain::model::TaskState::Failed);
    assert_eq!(task.failure_reason.as_deref(), Some("exit 1"));
    let again = crate::mapping::row_to(&row);
    assert_eq!(proto_schemas::envelope(&again).unwrap(), golden);
}

/// The process records and row, added with other process types, read into the domain and are
/// written again byte for byte.
#[test]
fn golden_process_records_and_rows_round_trip() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas/fixtures/v1");
    for name in ["record_process_put", "record_process_deleted"] {
        let golden = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let record: proto_schemas::v1::LogRecordV1 = proto_schemas::open(&golden).unwrap();
        let event = crate::mapping::event_from(record.body.clone()).unwrap();
        assert!(
            matches!(event, Event::ProcessPut(_) | Event::ProcessDeleted { .. }),
            "{name}: {event:?}"
        );
        let again = proto_schemas::v1::LogRecordV1 {
            seq: record.seq,
            body: crate::mapping::event_to(&event),
        };
        assert_eq!(proto_schemas::envelope(&again).unwrap(), golden, "{name}");
    }
    let golden = std::fs::read(dir.join("row_process.bin")).unwrap();
    let row: proto_schemas::v1::TableRowV1 = proto_schemas::open(&golden).unwrap();
    let row = crate::mapping::row_from(row).unwrap();
    let TableRow::Process(process) = &row else {
        panic!("row_process is not a process: {row:?}");
    };
    assert_eq!(process.process_type, "worker");
    assert_eq!(process.state, tally_domain::model::ProcessState::Stopped);
    assert_eq!(
        process.health_check_type,
        tally_domain::model::HealthCheckType::Http
    );
    assert_eq!(
        process.health_check_http_endpoint.as_deref(),
        Some("/healthz")
    );
    let again = crate::mapping::row_to(&row);
    assert_eq!(proto_schemas::envelope(&again).unwrap(), golden);
}

/// A commit of one usage event at `seq`, the log's head after it.
fn one_usage_event(seq: Seq) -> Commit {
    let u = usage(
        event_guid(seq, Guid::from_u128(0x52)),
        Guid::from_u128(7),
        UsageState::Started,
    );
    Commit {
        records: vec![(seq, Event::UsageRecorded(u))],
        meta: Meta {
            head: seq,
            ..Meta::default()
        },
        checkpoint: None,
        snapshot: None,
    }
}

/// A fresh database in the test process's PostgreSQL (`tally-pgcluster`), and how to open it.
fn pg_database() -> (&'static tally_pgcluster::Cluster, String, PgOptions) {
    let cluster = tally_pgcluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let database = cluster.database("store").unwrap();
    let options = PgOptions {
        url: cluster.url(&database),
        pool_size: 4,
        connect_timeout: std::time::Duration::from_secs(10),
        statement_timeout: std::time::Duration::from_secs(30),
        holder: "test".into(),
        advertise_url: String::new(),
        lease: std::time::Duration::from_secs(5),
    };
    (cluster, database, options)
}

/// The positions of the usage events `app_usage_events` shows (Cloud Controller's columns).
fn sql_usage_seqs(cluster: &tally_pgcluster::Cluster, database: &str) -> Vec<Seq> {
    cluster
        .sql_in(database, "SELECT id FROM app_usage_events ORDER BY id")
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The same model on PostgreSQL, reopened (a new term) whenever the steps say; at the end
    /// the SQL view of usage events holds exactly the events the log serves.
    #[test]
    fn postgres_store_matches_the_model(steps in prop::collection::vec(step(), 1..25)) {
        let (cluster, database, options) = pg_database();
        run(&steps, |previous| {
            drop(previous);
            Box::new(PgLog::open_postgres(&options).unwrap())
        });
        let store = PgLog::open_postgres(&options).unwrap();
        let meta = store.meta().unwrap();
        let served: Vec<Seq> = store
            .usage_range(meta.usage_floor, meta.head, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        prop_assert_eq!(sql_usage_seqs(cluster, &database), served);
    }
}

#[test]
fn postgres_usage_events_read_in_cloud_controllers_columns() {
    let (cluster, database, options) = pg_database();
    let store = PgLog::open_postgres(&options).unwrap();
    let event = usage(
        event_guid(1, Guid::from_u128(0x51)),
        Guid::from_u128(0xa99),
        UsageState::Started,
    );
    store
        .commit(&Commit {
            records: vec![(1, Event::UsageRecorded(event.clone()))],
            meta: Meta {
                head: 1,
                ..Meta::default()
            },
            checkpoint: None,
            snapshot: None,
        })
        .unwrap();
    let row = cluster
        .sql_in(
            &database,
            "SELECT guid, state, instance_count, memory_in_mb_per_instance, app_guid, app_name, \
             space_guid, space_name, org_guid, process_type, \
             to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM app_usage_events",
        )
        .unwrap();
    let expected = [
        event.guid.to_string(),
        "STARTED".into(),
        event.instance_count.to_string(),
        event.memory_in_mb_per_instance.to_string(),
        event.app_guid.clone(),
        event.app_name.clone(),
        event.space_guid.to_string(),
        event.space_name.clone(),
        event.org_guid.to_string(),
        event.process_type.clone().unwrap_or_default(),
        event.created_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    ]
    .join("|");
    assert_eq!(row.trim(), expected);
}

/// Two processes on one database: the one that opened last holds the term; the other's
/// append matches no head row and fails cleanly, and the log stays dense and verifiable.
#[test]
fn postgres_a_second_appender_is_fenced_and_the_log_stays_dense() {
    let (_, _, options) = pg_database();
    let old = PgLog::open_postgres(&options).unwrap();
    let new = PgLog::open_postgres(&options).unwrap();
    assert!(new.backend().term().unwrap() > old.backend().term().unwrap());
    let commit = one_usage_event;
    // Both append position 1 at once.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| old.commit(&commit(1)));
        let b = s.spawn(|| new.commit(&commit(1)));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(matches!(a, Err(StoreError::Fenced(_))), "{a:?}");
    b.unwrap();
    // The fenced process stays fenced; the holder goes on densely.
    assert!(matches!(old.commit(&commit(1)), Err(StoreError::Fenced(_))));
    assert!(old.commit(&commit(2)).is_err());
    new.commit(&commit(2)).unwrap();
    let reopened = PgLog::open_postgres(&options).unwrap();
    let recovered = reopened.recover().unwrap();
    assert_eq!(recovered.meta.head, 2);
    let seqs: Vec<Seq> = reopened
        .usage_range(1, 2, 10)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    assert!(reopened.verify().unwrap().problems.is_empty());
}

/// A statement that times out (another session holds the head row) fails the commit, writes
/// nothing, and the next commit goes through.
#[test]
fn postgres_a_timed_out_commit_writes_nothing_and_the_next_one_lands() {
    let (cluster, database, mut options) = pg_database();
    options.statement_timeout = std::time::Duration::from_millis(300);
    let store = PgLog::open_postgres(&options).unwrap();
    let commit = one_usage_event;
    std::thread::scope(|s| {
        let holder = s.spawn(|| {
            cluster
                .sql_in(
                    &database,
                    "BEGIN; SELECT * FROM tally_log_head FOR UPDATE; SELECT pg_sleep(2); COMMIT;",
                )
                .unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(500));
        let error = store.commit(&commit(1)).unwrap_err();
        assert!(matches!(error, StoreError::Io(_)), "{error:?}");
        holder.join().unwrap();
    });
    assert_eq!(store.meta().unwrap().head, 0);
    assert!(sql_usage_seqs(cluster, &database).is_empty());
    store.commit(&commit(1)).unwrap();
    assert_eq!(sql_usage_seqs(cluster, &database), vec![1]);
}

#[test]
fn postgres_passwords_never_reach_messages() {
    for (url, shown) in [
        (
            "postgresql://bill:s3cret@db.example.com:5432/tally?sslmode=disable",
            "postgresql://bill:***@db.example.com:5432/tally?sslmode=disable",
        ),
        (
            "postgres://bill:s3cret@a:1,b:2/tally?target_session_attrs=read-write&password=x",
            "postgres://bill:***@a:1,b:2/tally?target_session_attrs=read-write&password=***",
        ),
        (
            "host=db user=bill password=s3cret dbname=tally",
            "host=db user=bill password=*** dbname=tally",
        ),
        ("postgresql://bill@db/tally", "postgresql://bill@db/tally"),
    ] {
        assert_eq!(redacted(url), shown);
        let options = PgOptions {
            url: url.into(),
            pool_size: 1,
            connect_timeout: std::time::Duration::from_millis(200),
            statement_timeout: std::time::Duration::from_secs(1),
            holder: "t".into(),
            advertise_url: String::new(),
            lease: std::time::Duration::from_secs(5),
        };
        assert!(!format!("{options:?}").contains("s3cret"));
    }
    // A database that cannot be reached: the error names where, without the password.
    let options = PgOptions {
        url: "postgresql://bill:s3cret@127.0.0.1:1/tally".into(),
        pool_size: 1,
        connect_timeout: std::time::Duration::from_millis(300),
        statement_timeout: std::time::Duration::from_secs(1),
        holder: "t".into(),
        advertise_url: String::new(),
        lease: std::time::Duration::from_secs(5),
    };
    let error = match PgLog::open_postgres(&options) {
        Ok(_) => panic!("opened a database that is not there"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("127.0.0.1:1") && !error.contains("s3cret"),
        "{error}"
    );
}

/// A value damaged in the database (a bit flipped in a block by SQL) is reported by `verify`
/// with its position, is never served, and stops start-up, as on sled.
#[test]
fn postgres_corruption_is_reported_with_its_position_and_never_served() {
    let (cluster, database, options) = pg_database();
    let store = PgLog::open_postgres(&options).unwrap();
    let records = (1..=3)
        .map(|seq| {
            let u = usage(
                event_guid(seq, Guid::from_u128(7)),
                SPACE,
                UsageState::Started,
            );
            (seq, Event::UsageRecorded(u))
        })
        .collect();
    store
        .commit(&Commit {
            records,
            meta: Meta {
                head: 3,
                checkpoint: 3,
                ..Meta::default()
            },
            checkpoint: Some(Checkpoint {
                state: State::default(),
                dirty: Vec::new(),
            }),
            snapshot: None,
        })
        .unwrap();
    drop(store);
    cluster
        .sql_in(
            &database,
            "UPDATE tally_kv SET value = set_byte(value, length(value) - 1, \
             get_byte(value, length(value) - 1) # 1) \
             WHERE key = '\\x750000000000000001'::bytea",
        )
        .unwrap();
    let snapshot = PgLog::open_postgres_snapshot(&options).unwrap();
    assert_checksum_problem_at_usage_block_1(&snapshot.verify().unwrap());
    let error = snapshot.usage_range(1, 3, 10).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    let store = PgLog::open_postgres(&options).unwrap();
    let recovery = store.recover().unwrap_err();
    assert!(
        recovery.to_string().contains("usage event block at seq 1"),
        "{recovery}"
    );
}

/// Several hosts with `target_session_attrs=read-write`: a host that is down is passed over
/// (so a failover to a promoted standby is followed).
#[test]
fn postgres_urls_with_several_hosts_reach_the_one_that_answers() {
    let (cluster, database, mut options) = pg_database();
    options.url = format!(
        "postgresql://{}@127.0.0.1:1,127.0.0.1:{}/{database}?target_session_attrs=read-write",
        tally_pgcluster::USER,
        cluster.port()
    );
    let store = PgLog::open_postgres(&options).unwrap();
    store.commit(&one_usage_event(1)).unwrap();
    assert_eq!(sql_usage_seqs(cluster, &database), vec![1]);
}

/// The writer's connections are killed (`pg_terminate_backend`) again and again while it
/// commits: a commit that returned Ok is in the log, one that returned an error is not (its
/// outcome was resolved from the head row), and the log stays dense and verifiable.
#[test]
fn postgres_connections_killed_mid_commit_never_lose_or_invent_a_commit() {
    let (cluster, database, options) = pg_database();
    let store = PgLog::open_postgres(&options).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut landed, mut refused) = (0u64, 0u64);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = cluster.sql_in(
                    &database,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = 'tally' AND datname = current_database() \
                     AND pid <> pg_backend_pid()",
                );
                std::thread::sleep(std::time::Duration::from_millis(15));
            }
        });
        // At least 150 commits, and on until a kill has landed in the middle of one (how soon
        // depends on the machine's timing), within a minute.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut head = 0;
        while (landed < 150 || refused == 0)
            && refused < 2000
            && std::time::Instant::now() < deadline
        {
            match store.commit(&one_usage_event(head + 1)) {
                Ok(()) => {
                    head += 1;
                    landed += 1;
                }
                Err(_) => {
                    refused += 1;
                    // The engine's way after a failed write: re-read what the store holds.
                    while store.recover().is_err() {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    assert_eq!(
                        store.meta().unwrap().head,
                        head,
                        "a commit reported failed is in the log (or one reported done is not)"
                    );
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(landed >= 150, "{landed} landed, {refused} refused");
    assert!(
        refused > 0,
        "no connection was killed during a commit in a minute"
    );
    let reopened = PgLog::open_postgres(&options).unwrap();
    assert_eq!(reopened.recover().unwrap().meta.head, landed);
    assert_eq!(
        sql_usage_seqs(cluster, &database),
        (1..=landed).collect::<Vec<_>>()
    );
    assert!(reopened.verify().unwrap().problems.is_empty());
}

/// Reads take a pooled connection without a round trip to test it first. When the server
/// closed every idle connection (a restart, a failover, here `pg_terminate_backend`), the next
/// reads and the lease still answer at once, on new connections, with what was committed.
#[test]
fn postgres_reads_after_the_server_closed_every_pooled_connection_answer_at_once() {
    let (cluster, database, options) = pg_database();
    let store = PgLog::open_postgres(&options).unwrap();
    for seq in 1..=3 {
        store.commit(&one_usage_event(seq)).unwrap();
    }
    // Every connection of the pool in use at once, then idle in it.
    std::thread::scope(|s| {
        for _ in 0..options.pool_size {
            s.spawn(|| assert_eq!(store.usage_range(1, 3, 10).unwrap().len(), 3));
        }
    });
    let killed = cluster
        .sql_in(
            &database,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'tally' AND datname = current_database() \
             AND pid <> pg_backend_pid()",
        )
        .unwrap();
    assert!(killed.trim().parse::<u32>().unwrap() >= 2, "{killed}");
    let reconnects = store.reconnects();
    let read: Vec<Seq> = store
        .usage_range(1, 3, 10)
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(read, vec![1, 2, 3]);
    assert_eq!(store.durable_head().unwrap(), 3);
    assert!(matches!(
        store.lead().unwrap(),
        Lead::Writer { head: 3, .. }
    ));
    assert!(
        store.reconnects() > reconnects,
        "the closed connections were not counted"
    );
}

/// A follower's look at the log (several nodes on one PostgreSQL): after a few commits of
/// entity, usage and audit records (read in one statement) and after more than one look reads
/// at once (read with scans), it hands over every entity event, usage position and audit
/// event after what the follower held, once and in order, and then that nothing changed.
#[test]
fn postgres_a_follower_gets_every_record_appended_after_what_it_held() {
    let (_, _, options) = pg_database();
    let writer = PgLog::open_postgres(&options).unwrap();
    let follower = PgLog::open_postgres(&PgOptions {
        holder: "follower".into(),
        ..options.clone()
    })
    .unwrap();
    let mut since = follower.recover().unwrap().meta;
    let (mut head, mut audit_after) = (0, 0);
    for commits in [1, 3, crate::log::follow::FOLLOW_BLOCKS + 5] {
        let first = head + 1;
        for _ in 0..commits {
            let guid = Guid::from_u128(u128::from(head + 1));
            let u = usage(event_guid(head + 2, guid), guid, UsageState::Started);
            let a = audit(event_guid(head + 3, guid), guid);
            let records = vec![
                (head + 1, Event::AppUpdated(app(guid, 2, true))),
                (head + 2, Event::UsageRecorded(u)),
                (head + 3, Event::AuditRecorded(a)),
            ];
            head += 3;
            writer
                .commit(&Commit {
                    records,
                    meta: Meta {
                        head,
                        ..Meta::default()
                    },
                    checkpoint: None,
                    snapshot: None,
                })
                .unwrap();
        }
        let every = |offset: u64| (first..=head).skip(offset as usize).step_by(3);
        match follower.follow(&since, audit_after).unwrap() {
            Followed::Appended {
                meta,
                events,
                usage,
                new_epoch,
                audit: postings,
            } => {
                assert_eq!(meta.head, head);
                assert!(!new_epoch);
                let seqs: Vec<Seq> = events.iter().map(|(seq, _)| *seq).collect();
                assert_eq!(seqs, every(0).collect::<Vec<_>>(), "{commits} commits");
                let seqs: Vec<Seq> = usage.iter().map(|(seq, _)| *seq).collect();
                assert_eq!(seqs, every(1).collect::<Vec<_>>(), "{commits} commits");
                let expected: Vec<AuditPosting> = every(2)
                    .map(|seq| {
                        let event = audit(
                            event_guid(seq, Guid::from_u128(u128::from(seq - 2))),
                            Guid::from_u128(u128::from(seq - 2)),
                        );
                        AuditPosting::from(AuditKey::of(seq, &event))
                    })
                    .collect();
                assert_eq!(postings, expected, "{commits} commits");
                audit_after = head;
                since = meta;
            }
            other => panic!("{commits} commits: {other:?}"),
        }
    }
    assert!(matches!(
        follower.follow(&since, audit_after).unwrap(),
        Followed::Same(meta) if meta.head == head
    ));
}

/// A database left at schema version 1 (a log written by the single-node version, its head row
/// holding term 7 without a lease) opens with version 2: the migration adds the lease, a free
/// one, so the first node takes term 8, renews it with its appends, and the log goes on.
#[test]
fn postgres_a_version_1_database_upgrades_to_the_lease_and_goes_on() {
    let (cluster, database, options) = pg_database();
    {
        let mut client = r2d2_postgres::postgres::Client::connect(
            &cluster.url(&database),
            r2d2_postgres::postgres::NoTls,
        )
        .unwrap();
        crate::pg::migrate_to(&mut client, Some(1)).unwrap();
    }
    cluster
        .sql_in(
            &database,
            "UPDATE tally_log_head SET term = 7, holder = 'old'",
        )
        .unwrap();
    let versions = cluster
        .sql_in(
            &database,
            "SELECT version FROM tally_schema_history ORDER BY version",
        )
        .unwrap();
    assert_eq!(versions.trim(), "1");
    let store = PgLog::open_postgres(&options).unwrap();
    assert_eq!(store.backend().term().unwrap(), 8);
    store.commit(&one_usage_event(1)).unwrap();
    let head = cluster
        .sql_in(
            &database,
            "SELECT term, last_pos, holder, expires_at > now() FROM tally_log_head",
        )
        .unwrap();
    assert_eq!(head.trim(), "8|1|test|t");
    let versions = cluster
        .sql_in(
            &database,
            "SELECT version FROM tally_schema_history ORDER BY version",
        )
        .unwrap();
    assert_eq!(
        versions.split_whitespace().collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    // Version 3: the log's values are compressed with lz4 (this server has it).
    let compression = cluster
        .sql_in(
            &database,
            "SELECT attcompression FROM pg_attribute \
             WHERE attrelid = 'tally_kv'::regclass AND attname = 'value'",
        )
        .unwrap();
    assert_eq!(compression.trim(), "l");
    assert!(store.verify().unwrap().problems.is_empty());
}

/// `count` usage events from `first` on, one commit, so their block passes the 2 kB TOAST
/// threshold and is compressed.
fn usage_events(first: Seq, count: u64) -> Commit {
    let records = (first..first + count)
        .map(|seq| {
            let u = usage(
                event_guid(seq, Guid::from_u128(0x52)),
                Guid::from_u128(u128::from(seq)),
                UsageState::Started,
            );
            (seq, Event::UsageRecorded(u))
        })
        .collect();
    Commit {
        records,
        meta: Meta {
            head: first + count - 1,
            ..Meta::default()
        },
        checkpoint: None,
        snapshot: None,
    }
}

/// A log whose values were compressed with pglz (every value written before schema version 3)
/// goes on with lz4 values beside them: both read back whole, and `verify` passes.
#[test]
fn postgres_pglz_values_of_before_version_3_read_beside_lz4_ones() {
    let (cluster, database, options) = pg_database();
    let store = PgLog::open_postgres(&options).unwrap();
    let column = |method: &str| {
        cluster
            .sql_in(
                &database,
                &format!("ALTER TABLE tally_kv ALTER COLUMN value SET COMPRESSION {method}"),
            )
            .unwrap();
    };
    column("pglz");
    store.commit(&usage_events(1, 100)).unwrap();
    column("lz4");
    store.commit(&usage_events(101, 100)).unwrap();
    let methods = cluster
        .sql_in(
            &database,
            "SELECT DISTINCT pg_column_compression(value) FROM tally_kv \
             WHERE pg_column_compression(value) IS NOT NULL ORDER BY 1",
        )
        .unwrap();
    assert_eq!(
        methods.split_whitespace().collect::<Vec<_>>(),
        ["lz4", "pglz"]
    );
    drop(store);
    let reopened = PgLog::open_postgres(&options).unwrap();
    assert_eq!(reopened.recover().unwrap().meta.head, 200);
    let read = reopened.usage_range(1, 200, 1000).unwrap();
    assert_eq!(
        read.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    assert!(reopened.verify().unwrap().problems.is_empty());
}

/// `verify` names the first usage block and says its checksum failed.
fn assert_checksum_problem_at_usage_block_1(report: &VerifyReport) {
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("usage event block at seq 1") && p.contains("checksum")),
        "{:?}",
        report.problems
    );
}
