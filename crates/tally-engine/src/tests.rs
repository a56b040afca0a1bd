//! Engine tests: group commit, dense sequence, durability of the view, failures, restart,
//! checkpoints, and purge-and-reseed under concurrent writers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tally_domain::audit::AuditEvent;
use tally_domain::model::ProcessState;
use tally_domain::*;
use tally_store::*;

use crate::*;

const ORG: Guid = Guid::from_u128(0xA);
const SPACE: Guid = Guid::from_u128(0xB);

/// App guids spread over the table's buckets (the top 12 bits), one bucket per app.
fn app_guid(n: u64) -> Guid {
    Guid::from_u128(((u128::from(n) + 1) << 116) | 0x1000)
}

fn envelope(command: Command) -> Envelope {
    Envelope {
        command,
        actor: Actor::system(),
        principal: None,
    }
}

/// Where a test's log lives. The engine's tests run on every store: each keeps the store it
/// was written for (memory or sled) and runs again on PostgreSQL (`on_postgres`).
enum Backing {
    /// A new in-memory store on every open (for tests that never reopen).
    Memory,
    /// sled in a temporary directory, reopened at the same path.
    Sled(tempfile::TempDir),
    /// A database of its own in the test process's PostgreSQL; each open takes a new term.
    Postgres(PgOptions),
}

impl Backing {
    fn sled() -> Self {
        Self::Sled(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Self {
        let cluster = tally_pgcluster::shared().unwrap_or_else(|e| panic!("{e}"));
        let database = cluster.database("engine").unwrap();
        Self::Postgres(PgOptions {
            url: cluster.url(&database),
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            holder: "engine test".into(),
            advertise_url: String::new(),
            lease: std::time::Duration::from_secs(5),
        })
    }

    fn open(&self) -> Arc<dyn LogStore> {
        match self {
            Self::Memory => Arc::new(MemLog::in_memory()),
            Self::Sled(dir) => {
                Arc::new(SledLog::open(&dir.path().join("db"), &SledOptions::default()).unwrap())
            }
            Self::Postgres(options) => Arc::new(PgLog::open_postgres(options).unwrap()),
        }
    }
}

/// Each test body runs on the store it names and again on PostgreSQL.
macro_rules! on_every_store {
    ($($name:ident: $body:ident => $backing:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $body($backing).await
            }
        )*
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$body(super::Backing::postgres()).await
                }
            )*
        }
    };
}

on_every_store! {
    waiting_commands_share_one_commit_and_get_dense_sequence_numbers: waiting_commands_share_one_commit_and_get_dense_sequence_numbers_body => Backing::Memory;
    refused_commands_change_nothing: refused_commands_change_nothing_body => Backing::Memory;
    a_command_that_changes_nothing_is_answered_without_a_write: a_command_that_changes_nothing_is_answered_without_a_write_body => Backing::Memory;
    a_restarted_engine_recovers_the_same_table_and_head: a_restarted_engine_recovers_the_same_table_and_head_body => Backing::sled();
    purge_reseeds_started_apps_in_a_new_epoch_and_old_cursors_report_it: purge_reseeds_started_apps_in_a_new_epoch_and_old_cursors_report_it_body => Backing::Memory;
    purge_during_a_storm_of_writers_keeps_the_epoch_invariant: purge_during_a_storm_of_writers_keeps_the_epoch_invariant_body => Backing::sled();
    checkpoints_after_recovering_from_a_base_snapshot_are_complete: checkpoints_after_recovering_from_a_base_snapshot_are_complete_body => Backing::sled();
    fuzzy_checkpoint_rounds_recover_exactly_when_cut_short: fuzzy_checkpoint_rounds_recover_exactly_when_cut_short_body => Backing::Memory;
    prune_keeps_the_newest_event_and_the_start_of_every_running_app: prune_keeps_the_newest_event_and_the_start_of_every_running_app_body => Backing::sled();
    the_audit_index_across_restarts: the_audit_index_across_restarts_body => Backing::sled();
    a_consumer_reading_in_order_while_others_write_gets_every_event_once: a_consumer_reading_in_order_while_others_write_gets_every_event_once_body => Backing::sled();
    a_page_read_ahead_leaves_out_what_retention_removed_meanwhile: a_page_read_ahead_leaves_out_what_retention_removed_meanwhile_body => Backing::sled();
}

fn start_engine(store: Arc<dyn LogStore>, config: EngineConfig) -> Arc<Engine> {
    Arc::new(Engine::start(store, config, Box::new(SystemClock), Box::new(RandomIds)).unwrap())
}

async fn setup(engine: &Engine, apps: u64) {
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
    for n in 0..apps {
        create_app(engine, n).await;
    }
}

async fn create_app(engine: &Engine, n: u64) {
    engine
        .submit(envelope(Command::CreateApp {
            guid: app_guid(n),
            attributes: AppAttributes {
                name: Some(format!("app-{n}")),
                space_guid: Some(SPACE),
                docker_image: Some("nginx".into()),
                ..Default::default()
            },
            audit_request: tally_domain::audit::Value::empty(),
        }))
        .await
        .unwrap();
}

fn set_state(n: u64, started: bool) -> Envelope {
    envelope(Command::UpdateApp {
        guid: app_guid(n),
        attributes: AppAttributes {
            state: Some(if started { "STARTED" } else { "STOPPED" }.into()),
            ..Default::default()
        },
        audit_request: tally_domain::audit::Value::empty(),
    })
}

fn scale(n: u64, instances: i64) -> Envelope {
    envelope(Command::UpdateApp {
        guid: app_guid(n),
        attributes: AppAttributes {
            instances: Some(instances),
            ..Default::default()
        },
        audit_request: tally_domain::audit::Value::empty(),
    })
}

/// A store that counts commits and can hold the first one until released.
struct GatedStore {
    inner: Arc<dyn LogStore>,
    commits: AtomicUsize,
    gate: Mutex<bool>,
    opened: Condvar,
}

impl GatedStore {
    fn new(closed: bool, backing: &Backing) -> Self {
        Self {
            inner: backing.open(),
            commits: AtomicUsize::new(0),
            gate: Mutex::new(!closed),
            opened: Condvar::new(),
        }
    }

    fn open_gate(&self) {
        *self.gate.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl LogStore for GatedStore {
    fn recover(&self) -> Result<Recovered, StoreError> {
        self.inner.recover()
    }
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let mut open = self.gate.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(commit)
    }
    fn usage_range(&self, f: Seq, u: Seq, l: usize) -> Result<Vec<(Seq, UsageEvent)>, StoreError> {
        self.inner.usage_range(f, u, l)
    }
    fn usage_range_rev(
        &self,
        f: Seq,
        u: Seq,
        l: usize,
    ) -> Result<Vec<(Seq, UsageEvent)>, StoreError> {
        self.inner.usage_range_rev(f, u, l)
    }
    fn usage_at(&self, seq: Seq) -> Result<Option<UsageSlot>, StoreError> {
        self.inner.usage_at(seq)
    }
    fn each_usage_position(
        &self,
        f: Seq,
        u: Seq,
        visit: &mut dyn FnMut(Seq, Timestamp),
    ) -> Result<(), StoreError> {
        self.inner.each_usage_position(f, u, visit)
    }
    fn prune(&self, epoch: u64, seqs: &[Seq], cutoff: Timestamp) -> Result<usize, StoreError> {
        self.inner.prune(epoch, seqs, cutoff)
    }
    fn reseed_index(&self, epoch: u64) -> Result<Vec<(Guid, Seq)>, StoreError> {
        self.inner.reseed_index(epoch)
    }
    fn audit_range(&self, f: Seq, u: Seq, l: usize) -> Result<Vec<(Seq, AuditEvent)>, StoreError> {
        self.inner.audit_range(f, u, l)
    }
    fn audit_keys(
        &self,
        f: Seq,
        u: Seq,
        visit: &mut dyn FnMut(tally_store::AuditKey<'_>),
    ) -> Result<Seq, StoreError> {
        self.inner.audit_keys(f, u, visit)
    }
    fn audit_at(&self, seq: Seq) -> Result<Option<AuditEvent>, StoreError> {
        self.inner.audit_at(seq)
    }
    fn audit_many(&self, seqs: &[Seq]) -> Result<Vec<(Seq, AuditEvent)>, StoreError> {
        self.inner.audit_many(seqs)
    }
    fn compact(&self, budget: usize) -> Result<usize, StoreError> {
        self.inner.compact(budget)
    }
    fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.inner.verify()
    }
    fn size_on_disk(&self) -> u64 {
        0
    }
    fn release_cache(&self) -> Result<(), StoreError> {
        self.inner.release_cache()
    }
    fn export(&self, at: &Meta, visit: &mut ExportVisitor<'_>) -> Result<u64, StoreError> {
        self.inner.export(at, visit)
    }
    fn lead(&self) -> Result<tally_store::Lead, StoreError> {
        self.inner.lead()
    }
    fn resign(&self) -> Result<(), StoreError> {
        self.inner.resign()
    }
    fn durable_head(&self) -> Result<Seq, StoreError> {
        self.inner.durable_head()
    }
    fn follow(&self, since: &Meta, audit_after: Seq) -> Result<tally_store::Followed, StoreError> {
        self.inner.follow(since, audit_after)
    }
    fn watch(&self, wake: Box<dyn Fn() + Send + Sync>) -> Result<(), StoreError> {
        self.inner.watch(wake)
    }
    fn reconnects(&self) -> u64 {
        self.inner.reconnects()
    }
}

async fn waiting_commands_share_one_commit_and_get_dense_sequence_numbers_body(backing: Backing) {
    let store = Arc::new(GatedStore::new(false, &backing));
    let engine = start_engine(store.clone(), EngineConfig::default());
    setup(&engine, 100).await;
    let before = store.commits.load(Ordering::SeqCst);
    *store.gate.lock().unwrap() = false;
    // The first of these commits is held at the gate while the other 99 queue up behind it.
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..100 {
        let engine = engine.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            sent.fetch_add(1, Ordering::SeqCst); // the send below completes in the same poll
            engine.submit(set_state(n, true)).await
        }));
    }
    // Wait until every command is queued behind the held commit, however slow the machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sent.load(Ordering::SeqCst) < 100 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.open_gate();
    let mut seqs = Vec::new();
    for task in tasks {
        let committed = task.await.unwrap().unwrap();
        assert!(
            committed.head >= committed.records.last().unwrap().0,
            "answered before durable"
        );
        seqs.extend(committed.records.iter().map(|(s, _)| *s));
    }
    let commits = store.commits.load(Ordering::SeqCst) - before;
    assert!(commits <= 3, "100 waiting commands took {commits} commits");
    seqs.sort_unstable();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "sequence not dense"
    );
    assert_eq!(engine.view().meta.head, *seqs.last().unwrap());
    engine.shutdown().await;
}

async fn refused_commands_change_nothing_body(backing: Backing) {
    let store: Arc<dyn LogStore> = backing.open();
    let engine = start_engine(store, EngineConfig::default());
    setup(&engine, 1).await;
    let head = engine.view().meta.head;
    let error = engine.submit(scale(0, -1)).await.unwrap_err();
    assert_eq!(
        error,
        EngineError::Domain(DomainError::AppInvalid(
            "Number of instances less than 0".into()
        ))
    );
    let error = engine.submit(set_state(77, true)).await.unwrap_err();
    assert_eq!(
        error,
        EngineError::Domain(DomainError::AppNotFound(app_guid(77)))
    );
    assert_eq!(engine.view().meta.head, head);
    // A good command after refused ones continues the sequence without a gap.
    let committed = engine.submit(set_state(0, true)).await.unwrap();
    assert_eq!(committed.records[0].0, head + 1);
    engine.shutdown().await;
}

async fn a_command_that_changes_nothing_is_answered_without_a_write_body(backing: Backing) {
    let store: Arc<dyn LogStore> = backing.open();
    let engine = start_engine(store, EngineConfig::default());
    setup(&engine, 0).await;
    let grant = || {
        envelope(Command::GrantRole(Membership {
            resource: ORG,
            role: RoleKind::OrgUser,
            user: "alice".into(),
        }))
    };
    let first = engine.submit(grant()).await.unwrap();
    assert_eq!(first.records.len(), 2, "the role and its audit event");
    // Alone, and in a group commit with a real change: answered, nothing written for it.
    let again = engine.submit(grant()).await.unwrap();
    assert!(again.records.is_empty());
    assert_eq!(again.head, first.head);
    let (a, b) = tokio::join!(engine.submit(grant()), engine.submit(scale(0, 2)));
    assert!(a.unwrap().records.is_empty());
    assert!(matches!(
        b,
        Err(EngineError::Domain(DomainError::AppNotFound(_)))
    ));
    assert_eq!(engine.view().meta.head, first.head);
    assert!(engine
        .view()
        .state
        .has_role("alice", ORG, RoleKind::OrgUser));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_failed_write_is_not_acknowledged_and_the_log_continues_densely() {
    let store = Arc::new(MemLog::in_memory());
    let config = EngineConfig::default();
    let gauge = config.metrics.head.clone();
    let engine = start_engine(store.clone(), config);
    setup(&engine, 1).await;
    let before = engine.view();
    store.backend().fail_writes(1);
    let error = engine.submit(set_state(0, true)).await.unwrap_err();
    assert!(matches!(error, EngineError::Unavailable(_)), "{error}");
    let after = engine.view();
    assert_eq!(after.meta.head, before.meta.head);
    assert_eq!(
        gauge.get() as u64,
        before.meta.head,
        "the head gauge says what is durable"
    );
    assert_eq!(after.state, before.state, "the refused write is invisible");
    let committed = engine.submit(set_state(0, true)).await.unwrap();
    assert_eq!(committed.records[0].0, before.meta.head + 1);
    assert_eq!(
        engine.view().state.app(app_guid(0)).unwrap().state,
        ProcessState::Started
    );
    assert!(store.verify().unwrap().problems.is_empty());
    engine.shutdown().await;
}

/// What a test's subscriber logged (the writer thread logs where its engine's starter does).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the log refuses while it is out of reach are logged once, when the outage starts,
/// and once when writes land again, with how many failed meanwhile: not once per group.
#[tokio::test]
async fn an_outage_of_the_log_is_logged_once_not_once_per_failed_write() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    let store = Arc::new(MemLog::in_memory());
    let engine = start_engine(store.clone(), EngineConfig::default());
    setup(&engine, 1).await;
    store.backend().fail_writes(20);
    let mut failed = 0;
    while engine.submit(set_state(0, true)).await.is_err() {
        failed += 1;
        assert!(failed <= 20, "more writes failed than were made to fail");
    }
    assert!(failed >= 10, "only {failed} writes failed");
    engine.shutdown().await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("the log refused a write").count(), 1, "{text}");
    assert_eq!(
        text.matches("the log takes writes again").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains(&format!("failed_since_last_line={}", failed - 1)),
        "{text}"
    );
}

async fn a_restarted_engine_recovers_the_same_table_and_head_body(backing: Backing) {
    let config = EngineConfig {
        checkpoint_every: 7,
        ..EngineConfig::default()
    };
    let (state, head) = {
        let store: Arc<dyn LogStore> = backing.open();
        let engine = start_engine(store, config.clone());
        setup(&engine, 5).await;
        for n in 0..5 {
            engine.submit(set_state(n, n % 2 == 0)).await.unwrap();
            engine.submit(scale(n, 3)).await.unwrap();
        }
        let view = engine.view();
        // No shutdown: as if the process died after its last acknowledged write.
        (view.state.clone(), view.meta.head)
    };
    let store = backing.open();
    let recovered = store.recover().unwrap();
    assert_eq!(recovered.meta.head, head);
    assert!(
        recovered.replayed < 7 + 8,
        "replayed {} records past a checkpoint",
        recovered.replayed
    );
    assert_eq!(recovered.state, state);
    assert!(store.verify().unwrap().problems.is_empty());
    let engine = start_engine(store.clone(), config);
    assert_eq!(engine.view().state, state);
    engine.shutdown().await;
    assert_eq!(
        store.recover().unwrap().replayed,
        0,
        "shutdown writes a final checkpoint"
    );
}

async fn purge_reseeds_started_apps_in_a_new_epoch_and_old_cursors_report_it_body(
    backing: Backing,
) {
    let store: Arc<dyn LogStore> = backing.open();
    let engine = start_engine(store.clone(), EngineConfig::default());
    setup(&engine, 4).await;
    engine.submit(set_state(0, true)).await.unwrap();
    engine.submit(set_state(2, true)).await.unwrap();
    let view = engine.view();
    let old = engine.usage_after(&view, 0, 100).await.unwrap();
    let old_guid = old[0].1.guid;
    let purged = engine.purge_and_reseed().await.unwrap();
    assert_eq!((purged.epoch, purged.seeded), (2, 2));
    let view = engine.view();
    let events = engine.usage_after(&view, 0, 100).await.unwrap();
    let guids: Vec<Guid> = events.iter().map(|(_, e)| e.guid).collect();
    assert_eq!(guids, vec![app_guid(0), app_guid(2)]);
    assert!(events
        .iter()
        .all(|(_, e)| e.created_at == purged.started_at));
    assert_eq!(events[0].0, purged.first_seq);
    assert_eq!(
        engine.cursor(&view, old_guid).await.unwrap(),
        Cursor::Purged {
            epoch: 2,
            since: Some(purged.started_at)
        }
    );
    assert_eq!(
        engine.cursor(&view, app_guid(0)).await.unwrap(),
        Cursor::At(purged.first_seq)
    );
    assert_eq!(
        engine.cursor(&view, app_guid(99)).await.unwrap(),
        Cursor::Unknown
    );
    assert_eq!(
        engine.view().state.app_count(),
        4,
        "the app table survives the purge"
    );
    // Audit events survive a purge, as in CC.
    assert!(!engine.audit_after(&view, 0, 1000).await.unwrap().is_empty());
    // GET by guid works for stamped audit guids and reseeded usage guids alike.
    let audits = engine.audit_after(&view, 0, 1).await.unwrap();
    let (seq, first_audit) = audits[0].clone();
    assert_eq!(event_guid_seq(first_audit.guid), Some(seq));
    assert_eq!(
        engine.audit_event(&view, first_audit.guid).await.unwrap(),
        Some((seq, first_audit))
    );
    assert_eq!(
        engine
            .usage_event(&view, app_guid(2))
            .await
            .unwrap()
            .map(|(s, _)| s),
        Some(purged.first_seq + 1)
    );
    assert_eq!(engine.usage_event(&view, old_guid).await.unwrap(), None);
    engine.shutdown().await;
    // Shutdown gave the lease up (PostgreSQL): take it back to compact by hand.
    store.lead().unwrap();
    while store.compact(1000).unwrap() > 0 {}
    assert!(store.verify().unwrap().problems.is_empty());
    // After a restart (and compaction), cursors resolve the same way.
    let engine = start_engine(store.clone(), EngineConfig::default());
    let view = engine.view();
    assert_eq!(
        engine.cursor(&view, app_guid(0)).await.unwrap(),
        Cursor::At(purged.first_seq)
    );
    assert_eq!(
        engine.cursor(&view, old_guid).await.unwrap(),
        Cursor::Purged {
            epoch: 2,
            since: Some(purged.started_at)
        }
    );
    assert_eq!(
        engine.cursor(&view, app_guid(1)).await.unwrap(),
        Cursor::Purged {
            epoch: 2,
            since: Some(purged.started_at)
        }
    );
    engine.shutdown().await;
}

/// design.md invariant 5, checked by a model while writers storm: every app started at the
/// purge point has exactly one reseeded STARTED event, the reseeded block is contiguous, and the
/// events after it continue each app's story from the reseeded state.
async fn purge_during_a_storm_of_writers_keeps_the_epoch_invariant_body(backing: Backing) {
    let store: Arc<dyn LogStore> = backing.open();
    let engine = start_engine(store.clone(), EngineConfig::default());
    const APPS: u64 = 40;
    setup(&engine, APPS).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let engine = engine.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let n = (i * 7 + w) % APPS;
                let envelope = match i % 3 {
                    0 => set_state(n, true),
                    1 => set_state(n, false),
                    _ => scale(n, (i % 4) as i64 + 1),
                };
                let _ = engine.submit(envelope).await;
                i += 1;
            }
        }));
    }
    let mut purges = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        purges.push(engine.purge_and_reseed().await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let last = purges.last().unwrap();
    let view = engine.view();
    let events = engine.usage_after(&view, 0, usize::MAX).await.unwrap();
    assert!(
        events.iter().all(|(seq, _)| *seq >= last.first_seq),
        "events of old epochs are unreachable"
    );
    // The reseeded block: exactly the apps started at the purge point, as the base snapshot says.
    let seeded: Vec<&UsageEvent> = events.iter().take(last.seeded).map(|(_, e)| e).collect();
    assert_eq!(
        events[..last.seeded].last().map(|(s, _)| *s),
        Some(last.first_seq + last.seeded as u64 - 1)
    );
    // The entity log is truncated in the background, at the commit boundary after the purge.
    let truncated_at = last.first_seq + last.seeded as u64;
    let mut views = engine.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(30), async move {
        views
            .wait_for(|v| v.meta.log_start >= truncated_at)
            .await
            .map(|v| v.meta.log_start)
    })
    .await;
    assert_eq!(
        waited.ok().and_then(Result::ok),
        Some(truncated_at),
        "the log was not truncated after the purge"
    );
    let recovered = store.recover().unwrap();
    let report = store.verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(recovered.meta.log_start, truncated_at);
    let mut model: HashMap<String, (UsageState, i64)> = HashMap::new();
    for event in &seeded {
        assert_eq!(
            (event.state, event.previous_state),
            (UsageState::Started, Some(UsageState::Started))
        );
        assert_eq!(
            event.guid.to_string(),
            event.app_guid,
            "reseeded guid = process guid"
        );
        assert!(
            model
                .insert(
                    event.app_guid.clone(),
                    (UsageState::Started, event.instance_count)
                )
                .is_none(),
            "reseeded twice"
        );
    }
    // Every later event follows from the state the reseed described.
    for (_, event) in &events[last.seeded..] {
        if event.app_guid.is_empty() {
            continue;
        }
        let previous = model
            .get(&event.app_guid)
            .copied()
            .unwrap_or((UsageState::Stopped, 0));
        match event.state {
            UsageState::Started if event.previous_state == Some(UsageState::Started) => {
                assert_eq!(
                    previous.0,
                    UsageState::Started,
                    "scale event for an app not started at the purge"
                );
                assert_eq!(
                    event.previous_instance_count,
                    Some(previous.1),
                    "scale does not continue from the reseed"
                );
            }
            UsageState::Started => assert_eq!(
                previous.0,
                UsageState::Stopped,
                "start of an app already started"
            ),
            UsageState::Stopped => assert_eq!(
                previous.0,
                UsageState::Started,
                "stop of an app not started"
            ),
            _ => continue,
        }
        model.insert(event.app_guid.clone(), (event.state, event.instance_count));
    }
    // And the model ends where the table ends.
    for app in view.state.apps() {
        let started = model
            .get(&app.guid.to_string())
            .is_some_and(|(s, _)| *s == UsageState::Started);
        assert_eq!(
            started,
            app.state == ProcessState::Started,
            "app {} disagrees with its events",
            app.guid
        );
    }
    engine.shutdown().await;
}

/// After a purge the table checkpoint predates the new log start, so recovery starts from the
/// base snapshot; the next checkpoint must then rewrite every row, or a later restart would load
/// buckets that miss what changed between the old checkpoint and the purge.
async fn checkpoints_after_recovering_from_a_base_snapshot_are_complete_body(backing: Backing) {
    let open = || -> Arc<dyn LogStore> { backing.open() };
    let config = EngineConfig {
        checkpoint_every: 1_000_000,
        ..EngineConfig::default()
    };
    let engine = start_engine(open(), config.clone());
    setup(&engine, 6).await;
    engine.submit(set_state(1, true)).await.unwrap();
    engine.purge_and_reseed().await.unwrap();
    let expected = engine.view().state.clone();
    // Wait for the background truncation to move log_start past the (unmoved) checkpoint.
    let mut views = engine.subscribe();
    tokio::time::timeout(
        Duration::from_secs(30),
        views.wait_for(|v| v.meta.log_start > 1),
    )
    .await
    .unwrap()
    .unwrap();
    drop(views);
    // Stop without the final checkpoint, as a crash would: the checkpoint stays below log_start.
    let store = open_after_crash(engine).await;
    let from_snapshot = store.recover().unwrap();
    assert!(from_snapshot.meta.checkpoint + 1 < from_snapshot.meta.log_start);
    assert_eq!(
        from_snapshot.replayed, 0,
        "recovery started from the base snapshot at the log start"
    );
    let engine = start_engine(store.clone(), config.clone());
    assert_eq!(
        engine.view().state,
        expected,
        "recovered from the base snapshot"
    );
    engine.submit(scale(2, 3)).await.unwrap();
    let expected = engine.view().state.clone();
    engine.shutdown().await; // the final checkpoint must cover every row, not just app 2
    drop(engine);
    drop(store);

    let store = open();
    let recovered = store.recover().unwrap();
    assert_eq!(recovered.replayed, 0);
    assert_eq!(recovered.state, expected);
    assert!(store.verify().unwrap().problems.is_empty());
}

/// Simulates a crash: the writer is stopped without its final checkpoint by failing that write,
/// and the same store is returned for a fresh engine.
async fn open_after_crash(engine: Arc<Engine>) -> Arc<dyn LogStore> {
    let store = engine.store_for_tests();
    engine.abandon_for_tests().await;
    store
}

/// A checkpoint round spans several commits (its rows go a slice per commit) while other changes
/// keep coming; stopped in the middle of a round, recovery still gives the exact table.
async fn fuzzy_checkpoint_rounds_recover_exactly_when_cut_short_body(backing: Backing) {
    let store = Arc::new(GatedStore::new(false, &backing));
    let config = EngineConfig {
        checkpoint_every: 50,
        ..EngineConfig::default()
    };
    let engine = start_engine(store.clone(), config.clone());
    setup(&engine, 300).await; // 300 rows: a round needs several slices of 64
                               // Let the idle writer finish any round in progress, so the burst below starts a big one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Hold the writer in a commit while 300 changes and then the stop queue up behind it, so the
    // groups that follow run back to back and the stop lands in the middle of a round.
    *store.gate.lock().unwrap() = false;
    let burst: Vec<Envelope> = (0..300).map(|n| set_state(n, n % 3 == 0)).collect();
    let sender = engine.clone();
    let queued = tokio::spawn(async move { sender.submit_all_then_abandon(burst).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    store.open_gate();
    queued.await.unwrap();
    let expected = engine.view().state.clone();
    let recovered = store.recover().unwrap();
    assert!(
        recovered.replayed > 0,
        "the stop came before the round finished"
    );
    assert_eq!(recovered.state, expected);
    let report = store.verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // And a graceful stop leaves an exact checkpoint at the head.
    let engine = start_engine(store.clone(), config);
    engine.submit(scale(7, 2)).await.unwrap();
    let expected = engine.view().state.clone();
    engine.shutdown().await;
    let recovered = store.recover().unwrap();
    assert_eq!((recovered.state, recovered.replayed), (expected, 0));
}

/// A clock the test moves.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<Timestamp>>);

impl Clock for ManualClock {
    fn now(&mut self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

fn day(n: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(1_700_000_000 + n * 86_400, 0).unwrap()
}

fn all_events(query_after: Option<Seq>) -> UsageQuery<'static> {
    UsageQuery {
        after: query_after,
        guids: None,
        created: None,
        by_created_at: false,
        descending: false,
        offset: 0,
        limit: 1000,
    }
}

async fn prune_keeps_the_newest_event_and_the_start_of_every_running_app_body(backing: Backing) {
    let clock = ManualClock(Arc::new(Mutex::new(day(0))));
    let open = |clock: ManualClock| {
        let store: Arc<dyn LogStore> = backing.open();
        let engine = Arc::new(
            Engine::start(
                store.clone(),
                EngineConfig::default(),
                Box::new(clock),
                Box::new(RandomIds),
            )
            .unwrap(),
        );
        (store, engine)
    };
    let (store, engine) = open(clock.clone());
    setup(&engine, 3).await;
    let mut written = Vec::new();
    for command in [
        set_state(0, true), // app 0 started ...
        scale(0, 2),        // ... and scaled: only this STARTED event must stay
        set_state(1, true), // app 1 started long ago and still running: kept
        set_state(2, true), // app 2 started and stopped: both go ...
        set_state(2, false),
    ] {
        written.extend(engine.submit(command).await.unwrap().records);
    }
    // Starting a docker app also stages it (STAGING_* and BUILDPACK_SET events).
    let usage: Vec<(Seq, UsageEvent)> = written
        .into_iter()
        .filter_map(|(seq, e)| match e {
            Event::UsageRecorded(u) => Some((seq, u)),
            _ => None,
        })
        .collect();
    let process = |wanted: UsageState, n: u64| -> Vec<(Seq, Guid)> {
        usage
            .iter()
            .filter(|(_, u)| u.state == wanted && u.app_guid == app_guid(n).to_string())
            .map(|(seq, u)| (*seq, u.guid))
            .collect()
    };
    let (starts0, starts1) = (
        process(UsageState::Started, 0),
        process(UsageState::Started, 1),
    );
    let (starts2, stops2) = (
        process(UsageState::Started, 2),
        process(UsageState::Stopped, 2),
    );
    assert_eq!(
        (starts0.len(), starts1.len(), starts2.len(), stops2.len()),
        (2, 1, 1, 1)
    );
    *clock.0.lock().unwrap() = day(40);
    // Kept: app 0's scale, app 1's start, and the newest event of the epoch (app 2's stop).
    let pruned = engine.prune(day(9)).await.unwrap();
    assert_eq!(pruned, usage.len() - 3);
    let view = engine.view();
    let (total, events) = engine.usage_page(&view, &all_events(None)).await.unwrap();
    let kept: Vec<Guid> = events.iter().map(|(_, e)| e.guid).collect();
    assert_eq!(total, 3);
    assert_eq!(kept, vec![starts0[1].1, starts1[0].1, stops2[0].1]);
    let expected = Cursor::Pruned {
        created_at: usage
            .iter()
            .find(|(s, _)| *s == starts0[0].0)
            .unwrap()
            .1
            .created_at,
        cutoff: day(9),
    };
    assert_eq!(engine.cursor(&view, starts0[0].1).await.unwrap(), expected);
    assert!(engine
        .usage_event(&view, starts2[0].1)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        engine.cursor(&view, starts1[0].1).await.unwrap(),
        Cursor::At(starts1[0].0)
    );
    // Pruning again removes nothing more; a later event makes app 2's stop prunable.
    assert_eq!(engine.prune(day(9)).await.unwrap(), 0);
    engine.submit(scale(1, 3)).await.unwrap();
    assert_eq!(
        engine.prune(day(9)).await.unwrap(),
        2,
        "app 1's old start and app 2's stop"
    );
    let view = engine.view();
    assert_eq!(view.usage.len(), 2);
    engine.shutdown().await;
    drop(engine);
    assert!(store.verify().unwrap().problems.is_empty());
    drop(store);
    // After a restart the index and the cursors say the same.
    let (store, engine) = open(clock.clone());
    let view = engine.view();
    assert_eq!(view.usage.len(), 2);
    let (total, _) = engine.usage_page(&view, &all_events(None)).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(engine.cursor(&view, starts0[0].1).await.unwrap(), expected);
    assert_eq!(
        store.verify().unwrap().pruned_usage_events,
        usage.len() as u64 - 1
    );
}

#[test]
fn usage_queries_count_page_and_order_like_cloud_controller() {
    use crate::usage_index::{select, ReseedIndex};
    // A reseeded block at 10..=12 whose guids sort the other way round, then live events.
    let reseeded = ReseedIndex::new(vec![
        (Guid::from_u128(3), 10),
        (Guid::from_u128(2), 11),
        (Guid::from_u128(1), 12),
    ]);
    let index: UsageIndex = [(10, 5), (11, 5), (12, 5), (14, 6), (16, 7), (17, 8)]
        .into_iter()
        .collect();
    let query = |after, by_created_at, descending, offset, limit| UsageQuery {
        after,
        guids: None,
        created: None,
        by_created_at,
        descending,
        offset,
        limit,
    };
    let pick = |q: &UsageQuery<'_>| {
        let s = select(&index, &reseeded, 13, q);
        let seqs: Vec<Seq> = s.page.iter().map(|i| index[*i].0).collect();
        (s.total, seqs)
    };
    assert_eq!(pick(&query(None, false, false, 0, 2)), (6, vec![10, 11]));
    assert_eq!(pick(&query(None, false, false, 5, 2)), (6, vec![17]));
    assert_eq!(pick(&query(None, false, false, 6, 2)), (6, vec![]));
    assert_eq!(
        pick(&query(Some(11), false, false, 0, 9)),
        (4, vec![12, 14, 16, 17])
    );
    assert_eq!(
        pick(&query(Some(13), false, false, 0, 9)),
        (3, vec![14, 16, 17])
    );
    assert_eq!(pick(&query(Some(17), false, false, 0, 9)), (0, vec![]));
    assert_eq!(pick(&query(None, false, true, 1, 2)), (6, vec![16, 14]));
    assert_eq!(pick(&query(Some(14), false, true, 0, 9)), (2, vec![17, 16]));
    // created_at order: the reseeded block by guid, then the log.
    assert_eq!(
        pick(&query(None, true, false, 0, 9)),
        (6, vec![12, 11, 10, 14, 16, 17])
    );
    assert_eq!(
        pick(&query(Some(10), true, false, 0, 3)),
        (5, vec![12, 11, 14])
    );
    assert_eq!(
        pick(&query(None, true, true, 0, 9)),
        (6, vec![17, 16, 14, 10, 11, 12])
    );
    // guids: reseeded and stamped guids alike; unknown and earlier ones drop out.
    let wanted = [
        event_guid(16, Guid::from_u128(9)),
        Guid::from_u128(2),
        event_guid(15, Guid::from_u128(9)),
        Guid::from_u128(3),
    ];
    let q = UsageQuery {
        guids: Some(&wanted),
        ..query(Some(10), false, false, 0, 9)
    };
    assert_eq!(pick(&q), (2, vec![11, 16]));
    let late = |at: Timestamp| at.timestamp_micros() >= 7;
    let q = UsageQuery {
        created: Some(&late),
        ..query(None, false, true, 0, 9)
    };
    assert_eq!(pick(&q), (2, vec![17, 16]));
}

/// Every usage event and audit event a view reaches, in order.
async fn history(engine: &Engine) -> (Vec<(Seq, UsageEvent)>, Vec<(Seq, AuditEvent)>) {
    let view = engine.view();
    let usage = engine.usage_after(&view, 0, usize::MAX).await.unwrap();
    let audit = engine.audit_after(&view, 0, usize::MAX).await.unwrap();
    (usage, audit)
}

/// Exports an engine's log into a backup file in memory.
fn export_bytes(export: &Export) -> Vec<u8> {
    let mut writer = backup::BackupWriter::new(Vec::new()).unwrap();
    export
        .write(&mut |key, value| {
            writer
                .entry(key, value)
                .map_err(|e| StoreError::Io(e.to_string()))
        })
        .unwrap();
    writer.finish().unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_taken_while_writes_and_a_purge_go_on_restores_its_exact_view() {
    let source = Arc::new(MemLog::in_memory());
    let config = EngineConfig {
        compact_budget: 1,
        ..EngineConfig::default()
    };
    let engine = start_engine(source.clone(), config.clone());
    setup(&engine, 8).await;
    for n in 0..8 {
        engine.submit(set_state(n, n % 2 == 0)).await.unwrap();
    }
    // The export starts; then a purge, a truncation of the entity log and more writes follow.
    // Everything the export's meta reaches must still be there while it reads.
    let export = engine.begin_export();
    let at = engine.view();
    let (usage_at, audit_at) = history(&engine).await;
    engine.purge_and_reseed().await.unwrap();
    let mut views = engine.subscribe();
    tokio::time::timeout(
        Duration::from_secs(30),
        views.wait_for(|v| v.meta.log_start > 1),
    )
    .await
    .unwrap()
    .unwrap();
    drop(views);
    for n in 0..8 {
        engine.submit(scale(n, 3)).await.unwrap();
    }
    let bytes = export_bytes(&export);
    drop(export);

    let restored = Arc::new(MemLog::in_memory());
    let mut reader = backup::BackupReader::new(bytes.as_slice()).unwrap();
    let mut progress = Vec::new();
    let meta = restored
        .import(&mut reader, &mut |offset| progress.push(offset))
        .unwrap();
    assert_eq!(progress.last().copied(), Some(bytes.len() as u64));
    assert_eq!(meta.head, at.meta.head);
    assert_eq!(meta.epoch, 1);
    let copy = start_engine(restored.clone(), config.clone());
    assert_eq!(copy.view().state, at.state);
    assert_eq!(copy.view().meta.head, at.meta.head);
    assert_eq!(history(&copy).await, (usage_at, audit_at));
    // The restored log goes on like the original: the next write follows the head densely.
    let committed = copy.submit(set_state(1, true)).await.unwrap();
    assert_eq!(committed.records[0].0, at.meta.head + 1);
    copy.shutdown().await;
    let report = restored.verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // An export after the purge and the truncation: a base snapshot, a reseeded epoch.
    let export = engine.begin_export();
    assert!(export.at.log_start > 1 && export.at.epoch == 2);
    let bytes = export_bytes(&export);
    drop(export);
    let expected = engine.view();
    let expected_history = history(&engine).await;
    let restored = Arc::new(MemLog::in_memory());
    restored
        .import(
            &mut backup::BackupReader::new(bytes.as_slice()).unwrap(),
            &mut |_| {},
        )
        .unwrap();
    let copy = start_engine(restored.clone(), config);
    assert_eq!(copy.view().state, expected.state);
    assert_eq!(
        copy.view().meta,
        Meta {
            checkpoint: 0,
            ..expected.meta.clone()
        }
    );
    assert_eq!(copy.view().reseeded, expected.reseeded);
    assert_eq!(history(&copy).await, expected_history);
    copy.shutdown().await;
    assert!(restored.verify().unwrap().problems.is_empty());
    // A store that already holds a log refuses an import.
    let refused = restored.import(
        &mut backup::BackupReader::new(bytes.as_slice()).unwrap(),
        &mut |_| {},
    );
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("already holds a log"));
    engine.shutdown().await;
}

/// Every audit event a view reaches, through the index, newest first.
async fn audit_by_index(engine: &Engine) -> (u64, Vec<(Seq, AuditEvent)>) {
    let window = crate::Window {
        offset: 0,
        limit: u64::MAX,
        descending: true,
    };
    engine
        .audit_page(&engine.view(), &crate::AuditQuery::default(), window)
        .await
        .unwrap()
}

async fn the_audit_index_across_restarts_body(backing: Backing) {
    let open = || -> Arc<dyn LogStore> { backing.open() };
    let (indexed, read) = {
        let engine = start_engine(open(), EngineConfig::default());
        setup(&engine, 3).await;
        for n in 0..3 {
            engine.submit(scale(n, 2)).await.unwrap();
        }
        let (total, events) = audit_by_index(&engine).await;
        let (_, mut read) = history(&engine).await;
        read.reverse();
        assert_eq!(events, read, "the index finds what the log holds, in order");
        assert_eq!(total, read.len() as u64);
        // A view taken now does not see events committed after it.
        let view = engine.view();
        engine.submit(scale(0, 3)).await.unwrap();
        let all = crate::Window {
            offset: 0,
            limit: 1000,
            descending: false,
        };
        let (then, _) = engine
            .audit_page(&view, &crate::AuditQuery::default(), all)
            .await
            .unwrap();
        assert_eq!(then, total);
        (audit_by_index(&engine).await, history(&engine).await.1)
        // No shutdown: as if the process died.
    };
    assert_eq!(indexed.0, read.len() as u64);
    let engine = start_engine(open(), EngineConfig::default());
    assert_eq!(
        audit_by_index(&engine).await,
        indexed,
        "rebuilt at start-up"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn the_audit_index_holds_every_durable_audit_event_across_failures() {
    let store = Arc::new(MemLog::in_memory());
    let engine = start_engine(store.clone(), EngineConfig::default());
    setup(&engine, 1).await;
    let before = audit_by_index(&engine).await;
    store.backend().fail_writes(1);
    engine.submit(scale(0, 2)).await.unwrap_err();
    assert_eq!(
        audit_by_index(&engine).await,
        before,
        "a failed write adds nothing"
    );
    engine.submit(scale(0, 2)).await.unwrap();
    let (total, events) = audit_by_index(&engine).await;
    assert_eq!(total, before.0 + 1);
    assert_eq!(events[0].1.event_type, "audit.app.update");
    engine.shutdown().await;
}

/// Two engines on one PostgreSQL database, as two nodes: the first holds the lease and writes;
/// the second follows (its commands and purges are refused, its prune does nothing, its view
/// reaches every write of the first through `sync`); when the first shuts down (giving its
/// lease up) the second takes over, and the table it writes on is the whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_follows_the_writer_and_takes_over_when_it_leaves() {
    let Backing::Postgres(options) = Backing::postgres() else {
        unreachable!()
    };
    let second_options = PgOptions {
        holder: "the second node".into(),
        ..options.clone()
    };
    let config = || EngineConfig {
        tick: Duration::from_millis(20),
        renew_every: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let first = start_engine(Arc::new(PgLog::open_postgres(&options).unwrap()), config());
    let second_store: Arc<dyn LogStore> = Arc::new(PgLog::open_postgres(&second_options).unwrap());
    let second = start_engine(second_store.clone(), config());
    assert!(
        matches!(first.role(), Role::Writer { .. }),
        "{:?}",
        first.role()
    );
    assert!(
        matches!(second.role(), Role::Follower { .. }),
        "{:?}",
        second.role()
    );
    setup(&first, 3).await;
    first.submit(set_state(0, true)).await.unwrap();
    // What the writer acknowledged, the follower has once it synced.
    let view = second.sync().await.unwrap();
    assert_eq!(view.meta.head, first.view().meta.head);
    assert_eq!(view.state, first.view().state);
    assert_eq!(
        view.usage.len(),
        first.view().usage.len(),
        "the follower indexes the usage events too"
    );
    // The follower writes nothing.
    let refused = second.submit(set_state(1, true)).await.unwrap_err();
    assert!(matches!(refused, EngineError::Unavailable(_)), "{refused}");
    assert!(second.purge_and_reseed().await.is_err());
    assert_eq!(second.prune(Timestamp::MAX_UTC).await.unwrap(), 0);
    assert_eq!(second_store.durable_head().unwrap(), first.view().meta.head);
    // The writer leaves; the follower takes the lease at its next look and writes.
    first.submit(set_state(1, true)).await.unwrap();
    let head = first.view().meta.head;
    first.shutdown().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !matches!(second.role(), Role::Writer { .. }) {
        assert!(std::time::Instant::now() < deadline, "no takeover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(second.view().meta.head >= head, "caught up before writing");
    let committed = second.submit(set_state(2, true)).await.unwrap();
    assert!(committed.records[0].0 > head);
    for n in 0..3 {
        assert_eq!(
            second.view().state.app(app_guid(n)).unwrap().state,
            ProcessState::Started
        );
    }
    second.shutdown().await;
    // The whole log verifies, and a restart recovers the same table.
    let reopened = PgLog::open_postgres(&options).unwrap();
    assert!(reopened.verify().unwrap().problems.is_empty());
    let recovered = reopened.recover().unwrap();
    assert_eq!(recovered.meta.head, committed.head);
}

/// A follower looks at the log when another node's commit wakes it only while something on it
/// waits for the next view (a long poll, a stream); with nobody watching, the wake-up is left
/// to the next tick, and a read that starts later still sees every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_looks_at_once_when_woken_only_while_something_watches() {
    let Backing::Postgres(options) = Backing::postgres() else {
        unreachable!()
    };
    // No tick in the test's time: only wake-ups and reads make the follower look.
    let config = |metrics: EngineMetrics| EngineConfig {
        tick: Duration::from_secs(3600),
        metrics,
        ..EngineConfig::default()
    };
    let first = start_engine(
        Arc::new(PgLog::open_postgres(&options).unwrap()),
        config(EngineMetrics::new()),
    );
    let metrics = EngineMetrics::new();
    let second = start_engine(
        Arc::new(
            PgLog::open_postgres(&PgOptions {
                holder: "the second node".into(),
                ..options.clone()
            })
            .unwrap(),
        ),
        config(metrics.clone()),
    );
    assert!(matches!(second.role(), Role::Follower { .. }));
    let looks = || metrics.follow_duration.get_sample_count();
    // Nobody watches the second node: the first's commits wake it, and it does not look.
    setup(&first, 3).await;
    let (before, held) = (looks(), second.view().meta.head);
    for n in 0..3 {
        first.submit(set_state(n, true)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(looks(), before, "looked with nobody watching");
    assert_eq!(second.view().meta.head, held);
    // A read that starts now asks for its own look and sees every write.
    let view = second.sync().await.unwrap();
    assert_eq!(view.meta.head, first.view().meta.head);
    assert_eq!(view.state, first.view().state);
    // A watcher (what a long poll or a stream holds): the next commit is followed at once.
    let mut watch = second.subscribe();
    let committed = first.submit(set_state(0, false)).await.unwrap();
    let seen = tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|view| view.meta.head >= committed.head),
    )
    .await
    .is_ok();
    assert!(seen, "the wake-up was not followed with a watcher");
    // The lag gauge says how far behind that look found the node: the one commit.
    assert_eq!(
        metrics.follower_lag.get(),
        i64::try_from(committed.head - view.meta.head).unwrap()
    );
    drop(watch);
    second.shutdown().await;
    first.shutdown().await;
}

/// Retention runs on the writer and rewrites blocks in place, so a follower learns of a prune
/// only when a read finds tombstones where its index lists events. Its pages are full all the
/// same: paging through the follower reads exactly what the writer holds, and the follower's
/// index drops what its reads found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_pages_past_what_the_writers_retention_pruned() {
    let Backing::Postgres(options) = Backing::postgres() else {
        unreachable!()
    };
    let clock = ManualClock(Arc::new(Mutex::new(day(0))));
    let writer = Arc::new(
        Engine::start(
            Arc::new(PgLog::open_postgres(&options).unwrap()),
            EngineConfig::default(),
            Box::new(clock.clone()),
            Box::new(RandomIds),
        )
        .unwrap(),
    );
    let follower = start_engine(
        Arc::new(
            PgLog::open_postgres(&PgOptions {
                holder: "the second node".into(),
                ..options.clone()
            })
            .unwrap(),
        ),
        EngineConfig::default(),
    );
    assert!(matches!(follower.role(), Role::Follower { .. }));
    setup(&writer, 8).await;
    for n in 0..8 {
        writer.submit(set_state(n, true)).await.unwrap();
    }
    // More than a page of events that retention takes, then more than a page it keeps.
    scale_rounds(&writer, 150).await;
    *clock.0.lock().unwrap() = day(20);
    scale_rounds(&writer, 150).await;
    let indexed = follower.sync().await.unwrap().usage.len();
    assert_eq!(indexed, writer.view().usage.len());
    *clock.0.lock().unwrap() = day(40);
    let pruned = writer.prune(day(10)).await.unwrap();
    assert!(pruned > 1000, "{pruned}");
    assert_eq!(
        follower.sync().await.unwrap().usage.len(),
        indexed,
        "the follower has not seen the prune yet"
    );
    let (kept, _) = history(&writer).await;
    let expected: Vec<(Seq, Guid)> = kept.iter().map(|(seq, e)| (*seq, e.guid)).collect();
    assert_eq!(expected.len(), indexed - pruned);
    // Pages of 1000 through the follower, as a consumer reads them.
    let (mut read, mut pages) = (Vec::new(), Vec::new());
    loop {
        let view = follower.sync().await.unwrap();
        let after = read.last().map(|(seq, _): &(Seq, Guid)| *seq);
        let (total, page) = follower
            .usage_page(&view, &all_events(after))
            .await
            .unwrap();
        pages.push((total, page.len()));
        read.extend(page.iter().map(|(seq, e)| (*seq, e.guid)));
        if page.len() < 1000 {
            break;
        }
    }
    assert_eq!(read, expected);
    // Every pruned event lies before the first page's events: that page found them all, so
    // each page counts exactly the events from it on (`after_guid`'s total).
    let counted: Vec<u64> = (0..pages.len())
        .map(|n| (expected.len() - 1000 * n) as u64)
        .collect();
    assert_eq!(pages.iter().map(|(t, _)| *t).collect::<Vec<_>>(), counted);
    // The follower's own index let go of them too.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while follower.view().usage.len() != expected.len() {
        assert!(std::time::Instant::now() < deadline, "the index kept them");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    follower.shutdown().await;
    writer.shutdown().await;
}

/// A node that starts (recovers the whole log) while another writes and checkpoints reads one
/// consistent state: once caught up, its table is the writer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_another_writes_and_checkpoints_recovers_a_consistent_table() {
    let Backing::Postgres(options) = Backing::postgres() else {
        unreachable!()
    };
    let config = || EngineConfig {
        // Checkpoint rounds all the time: buckets are rewritten while the second node reads.
        checkpoint_every: 8,
        tick: Duration::from_millis(20),
        renew_every: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let writer = start_engine(Arc::new(PgLog::open_postgres(&options).unwrap()), config());
    setup(&writer, 40).await;
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = {
        let (writer, busy) = (writer.clone(), busy.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while busy.load(Ordering::Relaxed) {
                let _ = writer.submit(scale(n % 40, 1 + (n % 3) as i64)).await;
                n += 1;
            }
        })
    };
    let mut followers = Vec::new();
    for k in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let options = PgOptions {
            holder: format!("follower {k}"),
            ..options.clone()
        };
        let store: Arc<dyn LogStore> = Arc::new(PgLog::open_postgres(&options).unwrap());
        followers.push(start_engine(store, config()));
    }
    busy.store(false, Ordering::Relaxed);
    load.await.unwrap();
    for follower in &followers {
        let view = follower.sync().await.unwrap();
        assert_eq!(view.meta.head, writer.view().meta.head);
        assert_eq!(view.state, writer.view().state);
        assert_eq!(view.usage, writer.view().usage);
    }
    for follower in followers {
        follower.shutdown().await;
    }
    writer.shutdown().await;
}

/// Eight started apps, with an engine whose metrics the test reads.
async fn started_fleet(backing: &Backing, clock: ManualClock) -> (Arc<Engine>, EngineMetrics) {
    let metrics = EngineMetrics::new();
    let config = EngineConfig {
        metrics: metrics.clone(),
        ..EngineConfig::default()
    };
    let engine = Arc::new(
        Engine::start(backing.open(), config, Box::new(clock), Box::new(RandomIds)).unwrap(),
    );
    setup(&engine, 8).await;
    for n in 0..8 {
        engine.submit(set_state(n, true)).await.unwrap();
    }
    (engine, metrics)
}

/// `rounds` rounds of eight scales at once (one usage event each).
async fn scale_rounds(engine: &Arc<Engine>, rounds: usize) {
    for _ in 0..rounds {
        // Each round grows the stream by eight, so each asks for another count.
        let instances = 1 + (engine.view().usage.len() % 1000) as i64;
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.submit(scale(n, instances)).await })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap().unwrap();
        }
    }
}

fn read_ahead_used(metrics: &EngineMetrics) -> u64 {
    metrics.read_ahead.with_label_values(&["used"]).get()
}

/// A [`PageWriter`] that writes the positions of a page's events.
struct Positions;

impl PageWriter for Positions {
    fn kind(&self) -> &'static str {
        "positions"
    }

    fn write(&self, events: &[(Seq, UsageEvent)]) -> Written {
        Box::new(events.iter().map(|(seq, _)| *seq).collect::<Vec<Seq>>())
    }
}

fn positions() -> Arc<dyn PageWriter> {
    Arc::new(Positions)
}

/// What [`Positions`] wrote ahead for a page, if it did.
fn written_positions(page: UsagePage) -> (Vec<(Seq, UsageEvent)>, Option<Vec<Seq>>) {
    let written = page
        .written
        .map(|w| *w.downcast::<Vec<Seq>>().expect("written by Positions"));
    (page.events, written)
}

async fn a_consumer_reading_in_order_while_others_write_gets_every_event_once_body(
    backing: Backing,
) {
    let clock = ManualClock(Arc::new(Mutex::new(day(0))));
    let (engine, metrics) = started_fleet(&backing, clock).await;
    scale_rounds(&engine, 400).await;
    // Pages of 1000 (each read ahead while the last is taken in), with writes in between;
    // what was written ahead of a page is that page.
    let mut read: Vec<(Seq, Guid)> = Vec::new();
    let (writer, mut written) = (positions(), 0);
    loop {
        let view = engine.view();
        let after = read.last().map(|(seq, _)| *seq);
        let page = engine
            .usage_page_for(&view, &all_events(after), Some(&writer))
            .await
            .unwrap();
        let (page, ahead) = written_positions(page);
        if let Some(ahead) = ahead {
            let shown: Vec<Seq> = page.iter().map(|(seq, _)| *seq).collect();
            assert_eq!(ahead, shown);
            written += 1;
        }
        read.extend(page.iter().map(|(seq, e)| (*seq, e.guid)));
        if page.len() < 1000 {
            break;
        }
        scale_rounds(&engine, 3).await;
    }
    let (usage, _) = history(&engine).await;
    let expected: Vec<(Seq, Guid)> = usage.iter().map(|(seq, e)| (*seq, e.guid)).collect();
    assert!(expected.len() > 3000, "{}", expected.len());
    assert_eq!(read, expected);
    // Pages 2 and 3 come from read-aheads; the last outgrew its read-ahead (the writes).
    assert!(
        read_ahead_used(&metrics) >= 2,
        "{}",
        read_ahead_used(&metrics)
    );
    assert!(written >= 2, "{written}");
    assert_eq!(
        metrics.read_ahead.with_label_values(&["written"]).get(),
        written
    );
}

async fn a_page_read_ahead_leaves_out_what_retention_removed_meanwhile_body(backing: Backing) {
    let clock = ManualClock(Arc::new(Mutex::new(day(0))));
    let (engine, metrics) = started_fleet(&backing, clock.clone()).await;
    scale_rounds(&engine, 150).await;
    // Later events, up to 2000 in all: the second page is the rest of the stream.
    *clock.0.lock().unwrap() = day(20);
    let rest = 2000usize.saturating_sub(engine.view().usage.len()) / 8;
    scale_rounds(&engine, rest).await;
    let view = engine.view();
    assert!(view.usage.len() > 1500 && view.usage.len() <= 2000);
    let writer = positions();
    let first = engine
        .usage_page_for(&view, &all_events(None), Some(&writer))
        .await
        .unwrap();
    let (first, _) = written_positions(first);
    assert_eq!(first.len(), 1000);
    // Retention takes the early events of the page being read ahead (and of the first).
    *clock.0.lock().unwrap() = day(40);
    let pruned = engine.prune(day(10)).await.unwrap();
    assert!(pruned > 1000, "{pruned}");
    let last = first.last().map(|(seq, _)| *seq);
    let second = engine
        .usage_page_for(&engine.view(), &all_events(last), Some(&writer))
        .await
        .unwrap();
    let total = second.total;
    let (second, ahead) = written_positions(second);
    assert_eq!(
        read_ahead_used(&metrics),
        1,
        "the second page came from the read-ahead"
    );
    assert_eq!(ahead, None, "what was written ahead held pruned events");
    let (usage, _) = history(&engine).await;
    let expected: Vec<(Seq, Guid)> = usage
        .iter()
        .filter(|(seq, _)| Some(*seq) > last)
        .map(|(seq, e)| (*seq, e.guid))
        .collect();
    let got: Vec<(Seq, Guid)> = second.iter().map(|(seq, e)| (*seq, e.guid)).collect();
    assert_eq!(got, expected);
    assert_eq!(total as usize, usage.len());
    assert!(second.iter().all(|(_, e)| e.created_at >= day(20)));
}
