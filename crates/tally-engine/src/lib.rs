//! tally's engine: the one writer that owns the app table, and the read side.
//!
//! Every state change goes through [`Engine::submit`]. A dedicated writer thread takes every
//! command waiting in its queue, decides them in order against the current table with the pure
//! domain, numbers the resulting records with the next dense sequence numbers, writes them all
//! (plus the table checkpoint when due) with **one** atomic store commit and **one** fsync, and
//! only then answers each caller and publishes a new [`View`]. Readers only ever look at a
//! published view, so they see durable state and nothing a crash could take back.
//!
//! # Layout
//! - [`Engine`]: submit, purge, reads, shutdown.
//! - `writer`: the writer thread (group commit, checkpoints, purge, compaction).
//! - [`EngineError`]: the engine's one error type.

pub mod audit;
pub mod metrics;
pub mod outage;
pub mod usage_index;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tally_domain::audit::AuditEvent;
use tally_domain::{
    event_guid_seq, DomainConfig, DomainError, Envelope, Event, Guid, IdGen, Seq, State, Timestamp,
    UsageEvent,
};
pub use tally_store::StoreError;
use tally_store::{ExportVisitor, LogStore, Meta, UsageSlot};

pub use audit::{AuditCondition, AuditField, AuditIndex, AuditQuery, Match, TimeSpan, Window};
pub use metrics::EngineMetrics;
pub use outage::Outage;
/// The backup file format, for those who write or read what [`Engine::begin_export`] copies.
pub use tally_store::backup;
use tokio::sync::{mpsc, oneshot, watch};
pub use usage_index::{ReseedIndex, Selection, UsageIndex, UsageQuery};

/// Where time comes from.
pub trait Clock: Send + 'static {
    /// Now.
    fn now(&mut self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn now(&mut self) -> Timestamp {
        chrono::Utc::now()
    }
}

/// Random v4 guids.
#[derive(Debug, Default)]
pub struct RandomIds;

impl IdGen for RandomIds {
    #[allow(clippy::disallowed_methods)] // the one place that makes random guids
    fn next_guid(&mut self) -> Guid {
        Guid::from_bytes(*uuid::Uuid::new_v4().as_bytes())
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The domain's settings.
    pub domain: DomainConfig,
    /// Most commands decided into one group commit.
    pub max_batch: usize,
    /// Write the table checkpoint once this many records were appended since the last one, or
    /// twice the table's rows when that is more (start-up replays at most about that many).
    pub checkpoint_every: u64,
    /// Keys deleted per compaction step between commits.
    pub compact_budget: usize,
    /// Capacity of the command queue (back-pressure beyond it).
    pub queue_capacity: usize,
    /// Where the writer reports (unregistered unless the caller registers them).
    pub metrics: EngineMetrics,
    /// How often a node that shares its store (PostgreSQL) looks at the log without being
    /// woken: a follower reads what was appended, anyone may take a lease that ran out.
    pub tick: Duration,
    /// How often the writer renews its lease when no append did (a fifth of the lease).
    pub renew_every: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            domain: DomainConfig::default(),
            max_batch: 4096,
            checkpoint_every: 50_000,
            compact_budget: 128,
            queue_capacity: 65_536,
            metrics: EngineMetrics::default(),
            tick: Duration::from_millis(100),
            renew_every: Duration::from_secs(1),
        }
    }
}

/// Why the engine could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The command broke a business rule; nothing changed.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The write failed; nothing of it is visible. Retrying may succeed.
    #[error("the log could not be written: {0}")]
    Unavailable(String),
    /// The store holds something it cannot read.
    #[error("the log is corrupt: {0}")]
    Corrupt(String),
    /// The engine has shut down.
    #[error("tally is shutting down")]
    Stopped,
}

impl From<StoreError> for EngineError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Corrupt { .. } => Self::Corrupt(error.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// What this node does with the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The only process on its store (sled, memory): it writes, and nothing is appended
    /// behind its back.
    Sole,
    /// It holds the lease (PostgreSQL) and writes; until `trusted_until` no other node can
    /// have appended.
    Writer {
        /// The lease's term.
        term: u64,
        /// Until when this node's view is surely the whole log.
        trusted_until: std::time::Instant,
    },
    /// Another node writes; this one follows the log and forwards writes to `leader`.
    Follower {
        /// The head row's term.
        term: u64,
        /// The writer's advertised URL, while its lease is live.
        leader: Option<String>,
    },
}

impl From<tally_store::Lead> for Role {
    fn from(lead: tally_store::Lead) -> Self {
        match lead {
            tally_store::Lead::Sole => Self::Sole,
            tally_store::Lead::Writer {
                term,
                trusted_until,
                ..
            } => Self::Writer {
                term,
                trusted_until,
            },
            tally_store::Lead::Follower { term, leader } => Self::Follower { term, leader },
        }
    }
}

impl Role {
    /// Whether this node appends.
    pub fn writes(&self) -> bool {
        !matches!(self, Self::Follower { .. })
    }
}

/// The durable state readers see: the table and the meta as of the last fsynced commit.
#[derive(Debug, Clone)]
pub struct View {
    /// The app table.
    pub state: State,
    /// Head (the durable head), epoch, floors.
    pub meta: Meta,
    /// The reseeded events of the current epoch (their guids are app guids).
    pub reseeded: Arc<ReseedIndex>,
    /// The reachable usage events up to the head: position and time of each.
    pub usage: UsageIndex,
    /// Every audit event by type, target, space, org and time (shared by all views: read it
    /// only up to this view's head).
    pub audit: Arc<AuditIndex>,
}

impl View {
    /// The first position after the reseeded block that opens the epoch.
    pub fn reseed_end(&self) -> Seq {
        self.meta.usage_floor + self.meta.reseeded
    }
}

/// What a committed command wrote.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Its records, with their sequence numbers.
    pub records: Vec<(Seq, Event)>,
    /// The durable head after the commit that carried it.
    pub head: Seq,
}

/// What a purge-and-reseed did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    /// The new epoch.
    pub epoch: u64,
    /// When it started (the `created_at` of every reseeded event).
    pub started_at: Timestamp,
    /// The first sequence number of the new epoch.
    pub first_seq: Seq,
    /// How many STARTED events were reseeded.
    pub seeded: usize,
}

/// Where a usage-event cursor points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// A reachable event: read after this sequence number.
    At(Seq),
    /// The event was purged by a purge-and-reseed; the current epoch and when it began.
    Purged {
        /// Current epoch.
        epoch: u64,
        /// When it began.
        since: Option<Timestamp>,
    },
    /// Retention removed the event.
    Pruned {
        /// When the event was written.
        created_at: Timestamp,
        /// The prune removed events written before this.
        cutoff: Timestamp,
    },
    /// No such event.
    Unknown,
}

pub(crate) enum Request {
    Command(
        Box<Envelope>,
        oneshot::Sender<Result<Committed, EngineError>>,
    ),
    Purge(oneshot::Sender<Result<Purged, EngineError>>),
    /// Readiness: an fsynced write of the meta as it is.
    Probe(oneshot::Sender<Result<(), EngineError>>),
    /// Retention replaced these events of this epoch by tombstones: drop them from the index.
    Pruned {
        epoch: u64,
        seqs: Vec<Seq>,
        done: oneshot::Sender<()>,
    },
    Shutdown(oneshot::Sender<()>),
    /// Time passed, a read waits for the log, or another node committed while something here
    /// watches: follow the log, renew or take the lease.
    Tick,
    /// Test support: stop at once, skipping the final checkpoint (what a crash leaves).
    #[cfg(test)]
    Abandon(oneshot::Sender<()>),
}

/// The engine. Cheap to share behind an `Arc`.
pub struct Engine {
    queue: mpsc::Sender<Request>,
    heads: Heads,
    view: watch::Receiver<Arc<View>>,
    store: Arc<dyn LogStore>,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: EngineMetrics,
    signals: Signals,
    /// Consumers' next pages, being read while they take in the last (newest last).
    read_ahead: Mutex<std::collections::VecDeque<ReadAhead>>,
}

/// A usage page read before it was asked for: every usage event from `low` to `high`, and
/// what a writer of `kind` made of them.
struct ReadAhead {
    low: Seq,
    high: Seq,
    kind: Option<&'static str>,
    read: PendingRead,
    started: std::time::Instant,
}

/// A read of usage events (and their writing) under way on blocking threads.
type PendingRead = tokio::task::JoinHandle<Result<ReadEvents, EngineError>>;

/// Events read, and what a [`PageWriter`] wrote of them.
type ReadEvents = (Vec<(Seq, UsageEvent)>, Option<Written>);

/// Writes a page of usage events as an answer holds them (the HTTP edge's JSON). A page read
/// ahead is also written ahead, on a blocking thread, with the writer of the request before
/// it: a consumer catching up in order then finds the page it asks for next read and written.
pub trait PageWriter: Send + Sync {
    /// What it writes: a page written ahead is handed only to a request whose writer is of
    /// the same kind.
    fn kind(&self) -> &'static str;
    /// Whatever the edge makes of a page's events; it gets it back as [`UsagePage::written`].
    fn write(&self, events: &[(Seq, UsageEvent)]) -> Written;
}

/// A page as a [`PageWriter`] wrote it.
pub type Written = Box<dyn std::any::Any + Send>;

/// A page of usage events.
pub struct UsagePage {
    /// Events the query selects in all.
    pub total: u64,
    /// The page's events, in order.
    pub events: Vec<(Seq, UsageEvent)>,
    /// What the request's writer made of exactly these events, when the page was read and
    /// written ahead.
    pub written: Option<Written>,
}

/// Pages of at least this many events are read ahead: a consumer catching up asks for the
/// next page only once it took in this one, so the read and its wait for it overlap.
const READ_AHEAD_FROM: usize = 1000;
/// Selections of one page at most, each without the pruned positions the one before found
/// (past that, the page holds what it found: fewer events, none wrong).
const FILL_ROUNDS: usize = 16;
/// At most this many pages are read ahead at once (one per consumer catching up); the oldest
/// goes first.
const READ_AHEADS: usize = 4;
/// A read ahead nobody asked for within this long is let go of (its consumer stopped).
const READ_AHEAD_KEPT: Duration = Duration::from_secs(10);

/// How long [`Engine::sync`] waits for this node to follow the log to the durable head.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// Reads of the durable head, shared: a request needs one that started after it did, so the
/// requests that arrive while one is under way share the next.
#[derive(Default)]
struct Heads {
    /// Held while a read is under way.
    reading: tokio::sync::Mutex<()>,
    /// The last read: when it started, and what it said.
    last: Mutex<Option<(std::time::Instant, Seq)>>,
}

impl Heads {
    async fn durable_head(&self, store: &Arc<dyn LogStore>) -> Result<Seq, EngineError> {
        let asked = std::time::Instant::now();
        let fresh = |last: &Mutex<Option<(std::time::Instant, Seq)>>| match last.lock() {
            Ok(last) => last
                .filter(|(started, _)| *started >= asked)
                .map(|(_, h)| h),
            Err(_) => None,
        };
        if let Some(head) = fresh(&self.last) {
            return Ok(head);
        }
        let _reading = self.reading.lock().await;
        if let Some(head) = fresh(&self.last) {
            return Ok(head);
        }
        let started = std::time::Instant::now();
        let store = store.clone();
        let head = blocking(move || store.durable_head()).await?;
        if let Ok(mut last) = self.last.lock() {
            *last = Some((started, head));
        }
        Ok(head)
    }
}

/// What the engine and its writer share besides the view.
#[derive(Clone)]
pub(crate) struct Signals {
    /// Whether the writer's last store write succeeded.
    pub(crate) writable: Arc<AtomicBool>,
    /// Exports in progress (compaction waits for them).
    pub(crate) exports: Arc<AtomicUsize>,
    /// What this node does with the log (set by the writer thread).
    pub(crate) role: Arc<std::sync::RwLock<Role>>,
    /// How many [`Watch`]es are alive: long polls, streams and reads waiting for the log.
    pub(crate) watchers: Arc<AtomicUsize>,
}

/// A receiver of the views as they are published ([`Engine::subscribe`]), counted while it
/// lives: on a node that follows another's writes, a commit elsewhere is followed at once
/// only while someone watches.
pub struct Watch {
    views: watch::Receiver<Arc<View>>,
    watchers: Arc<AtomicUsize>,
}

impl Watch {
    fn new(views: watch::Receiver<Arc<View>>, watchers: Arc<AtomicUsize>) -> Self {
        watchers.fetch_add(1, Ordering::SeqCst);
        Self { views, watchers }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::ops::Deref for Watch {
    type Target = watch::Receiver<Arc<View>>;
    fn deref(&self) -> &Self::Target {
        &self.views
    }
}

impl std::ops::DerefMut for Watch {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.views
    }
}

/// An export in progress: the durable meta it copies, with compaction paused until it is
/// dropped.
pub struct Export {
    /// The meta the copy is consistent with (its head, epoch and floors).
    pub at: Meta,
    store: Arc<dyn LogStore>,
    exports: Arc<AtomicUsize>,
}

impl Export {
    /// Visits every entry of the copy (blocking: run it off the async runtime). See
    /// [`LogStore::export`].
    pub fn write(&self, visit: &mut ExportVisitor<'_>) -> Result<u64, EngineError> {
        Ok(self.store.export(&self.at, visit)?)
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        self.exports.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
    /// Recovers the store and starts the writer.
    pub fn start(
        store: Arc<dyn LogStore>,
        config: EngineConfig,
        clock: Box<dyn Clock>,
        ids: Box<dyn IdGen + Send>,
    ) -> Result<Self, EngineError> {
        let started = std::time::Instant::now();
        // The usage and audit indexes are built in recovery's one pass over the log.
        let mut usage = UsageIndex::new();
        let audit = Arc::new(AuditIndex::default());
        let recovered = store.recover_indexing(
            &mut |seq, at| usage.push_back((seq, at.timestamp_micros())),
            &mut audit.adder(),
        )?;
        audit.shrink();
        tracing::info!(
            head = recovered.meta.head,
            epoch = recovered.meta.epoch,
            replayed = recovered.replayed,
            apps = recovered.state.app_count(),
            usage_events = usage.len(),
            audit_events = audit.count(recovered.meta.head),
            ms = started.elapsed().as_millis() as u64,
            "log recovered"
        );
        let meta = &recovered.meta;
        let reseeded = Arc::new(ReseedIndex::new(store.reseed_index(meta.epoch)?));
        // Recovery has read every page of the log once (to check it); let them go.
        let released = std::time::Instant::now();
        store.release_cache()?;
        tracing::info!(
            release_ms = released.elapsed().as_millis() as u64,
            "indexes built"
        );
        let (queue, requests) = mpsc::channel(config.queue_capacity.max(1));
        let (publish, view) = watch::channel(Arc::new(View {
            state: recovered.state.clone(),
            meta: recovered.meta.clone(),
            reseeded,
            usage,
            audit,
        }));
        let metrics = config.metrics.clone();
        let config_tick = config.tick;
        let signals = Signals {
            writable: Arc::new(AtomicBool::new(true)),
            exports: Arc::new(AtomicUsize::new(0)),
            role: Arc::new(std::sync::RwLock::new(Role::Sole)),
            watchers: Arc::new(AtomicUsize::new(0)),
        };
        // Who writes, as the store says at start-up (the writer thread keeps it up to date).
        let lead = store.lead()?;
        let shared = !matches!(lead, tally_store::Lead::Sole);
        if let Ok(mut role) = signals.role.write() {
            *role = Role::from(lead);
        }
        let writer = writer::Writer::new(
            store.clone(),
            config,
            clock,
            ids,
            recovered,
            publish,
            signals.clone(),
        );
        // The writer logs where the caller's logs go (the process's subscriber, or a test's).
        let log = tracing::dispatcher::get_default(|dispatch| dispatch.clone());
        let handle = std::thread::Builder::new()
            .name("tally-writer".to_owned())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&log);
                writer.run(requests)
            })
            .map_err(|e| {
                EngineError::Unavailable(format!("cannot start the writer thread: {e}"))
            })?;
        if shared {
            // Another node may append: the writer thread looks at the log every tick, when a
            // read needs it, and when the store says another node committed while something
            // here waits for the next view.
            let ticks = queue.clone();
            let every = config_tick;
            std::thread::Builder::new()
                .name("tally-tick".to_owned())
                .spawn(move || loop {
                    std::thread::sleep(every);
                    if let Err(mpsc::error::TrySendError::Closed(_)) = ticks.try_send(Request::Tick)
                    {
                        return;
                    }
                })
                .map_err(|e| {
                    EngineError::Unavailable(format!("cannot start the tick thread: {e}"))
                })?;
            // A commit elsewhere is looked at once only while something on this node waits
            // for the next view (a long poll, a stream, a read catching up: a `Watch`); reads
            // that start later ask for their own look (`sync`), and the tick bounds the lag.
            let (wakes, watchers) = (queue.clone(), signals.watchers.clone());
            store.watch(Box::new(move || {
                if watchers.load(Ordering::SeqCst) > 0 {
                    let _ = wakes.try_send(Request::Tick);
                }
            }))?;
        }
        Ok(Self {
            queue,
            heads: Heads::default(),
            view,
            store,
            writer: Mutex::new(Some(handle)),
            metrics,
            signals,
            read_ahead: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    /// Decides and commits a command; returns once its records are durable.
    pub async fn submit(&self, envelope: Envelope) -> Result<Committed, EngineError> {
        let started = std::time::Instant::now();
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request::Command(Box::new(envelope), reply))
            .await
            .map_err(|_| EngineError::Stopped)?;
        let answered = answer.await.map_err(|_| EngineError::Stopped)?;
        self.metrics
            .append_duration
            .observe(started.elapsed().as_secs_f64());
        answered
    }

    /// What this node does with the log now.
    pub fn role(&self) -> Role {
        match self.signals.role.read() {
            Ok(role) => role.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The view a request that starts now must see: one holding every write any node had
    /// acknowledged when it started (read-your-writes across nodes). The sole process and a
    /// writer whose lease is surely its own have it at hand; any other node reads the durable
    /// head from the store (one read shared by the requests that arrive meanwhile) and waits
    /// until it has followed the log that far.
    pub async fn sync(&self) -> Result<Arc<View>, EngineError> {
        match self.role() {
            Role::Sole => return Ok(self.view()),
            Role::Writer { trusted_until, .. } if std::time::Instant::now() < trusted_until => {
                return Ok(self.view())
            }
            _ => {}
        }
        let head = self.heads.durable_head(&self.store).await?;
        let view = self.view();
        let behind = head.saturating_sub(view.meta.head);
        self.metrics
            .follower_lag
            .set(i64::try_from(behind).unwrap_or(i64::MAX));
        if behind == 0 {
            return Ok(view);
        }
        let _ = self.queue.try_send(Request::Tick);
        let view = self.wait_for_head(head, SYNC_WAIT).await;
        if view.meta.head >= head {
            Ok(view)
        } else {
            Err(EngineError::Unavailable(format!(
                "this node is still catching up with the log (at {}, the log at {head})",
                view.meta.head
            )))
        }
    }

    /// Whether the last write to the log succeeded (false after a failed write, until a write
    /// succeeds again).
    pub fn writable(&self) -> bool {
        self.signals.writable.load(Ordering::Relaxed)
    }

    /// Proves the log takes an fsynced write now (readiness): rewrites the meta as it is,
    /// after every command queued before it.
    pub async fn probe(&self) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request::Probe(reply))
            .await
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Starts a consistent export of the log as of the current durable view, while writes go
    /// on: compaction (the only thing that deletes keys that view reaches) pauses until the
    /// returned [`Export`] is dropped.
    pub fn begin_export(&self) -> Export {
        // Paused first, then the view read: a compaction step already running only deletes
        // what the current view no longer reaches (it runs on the writer, after the publish).
        self.signals.exports.fetch_add(1, Ordering::SeqCst);
        Export {
            at: self.view().meta.clone(),
            store: self.store.clone(),
            exports: self.signals.exports.clone(),
        }
    }

    /// The writer's metrics.
    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// A collector of the gauges read from the durable view at scrape time (apps, instances,
    /// memory of started apps; log size and records; usage events).
    pub fn view_collector(&self) -> prometheus::Result<metrics::ViewCollector> {
        metrics::ViewCollector::new(self.view.clone(), self.store.clone())
    }

    /// Purge-and-reseed as one atomic write at one log position (design.md invariant 5).
    pub async fn purge_and_reseed(&self) -> Result<Purged, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request::Purge(reply))
            .await
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Finishes queued commands, writes a final checkpoint, gives the lease up (another node
    /// takes over at once) and stops the writer.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.queue.send(Request::Shutdown(reply)).await.is_ok() {
            let _ = done.await;
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Test support: the store under the engine.
    #[cfg(test)]
    pub(crate) fn store_for_tests(&self) -> Arc<dyn LogStore> {
        self.store.clone()
    }

    /// Test support: stops the writer as a crash would, without the final checkpoint.
    #[cfg(test)]
    pub(crate) async fn abandon_for_tests(&self) {
        let (reply, done) = oneshot::channel();
        if self.queue.send(Request::Abandon(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Test support: queues every command and then a crash-like stop, without waiting in
    /// between, then waits for all of them.
    #[cfg(test)]
    pub(crate) async fn submit_all_then_abandon(&self, envelopes: Vec<Envelope>) {
        let mut answers = Vec::new();
        for envelope in envelopes {
            let (reply, answer) = oneshot::channel();
            if self
                .queue
                .send(Request::Command(Box::new(envelope), reply))
                .await
                .is_ok()
            {
                answers.push(answer);
            }
        }
        let (reply, done) = oneshot::channel();
        if self.queue.send(Request::Abandon(reply)).await.is_ok() {
            let _ = done.await;
        }
        for answer in answers {
            let _ = answer.await;
        }
    }

    /// The current durable view.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// A receiver that changes whenever a commit becomes durable (for live tailing).
    pub fn subscribe(&self) -> Watch {
        Watch::new(self.view.clone(), self.signals.watchers.clone())
    }

    /// Waits until the durable head reaches `seq` or `timeout` passes; returns the view then.
    pub async fn wait_for_head(&self, seq: Seq, timeout: Duration) -> Arc<View> {
        let mut receiver = self.subscribe();
        let wait = async move {
            receiver
                .wait_for(|view| view.meta.head >= seq)
                .await
                .map(|view| view.clone())
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(view)) => view,
            _ => self.view(),
        }
    }

    /// Usage events after `after` (exclusive), within the view's epoch and durable head.
    pub async fn usage_after(
        &self,
        view: &View,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, UsageEvent)>, EngineError> {
        let from = after.saturating_add(1).max(view.meta.usage_floor);
        let upto = view.meta.head;
        let store = self.store.clone();
        blocking(move || store.usage_range(from, upto, limit)).await
    }

    /// A reachable usage event by guid.
    pub async fn usage_event(
        &self,
        view: &View,
        guid: Guid,
    ) -> Result<Option<(Seq, UsageEvent)>, EngineError> {
        let Some(seq) = self.usage_seq(view, guid) else {
            return Ok(None);
        };
        let store = self.store.clone();
        let found = blocking(move || store.usage_at(seq)).await?;
        Ok(match found {
            Some(UsageSlot::Event(event)) if event.guid == guid => Some((seq, event)),
            _ => None,
        })
    }

    /// Where the event with this guid would be in the view's epoch, if anywhere.
    fn usage_seq(&self, view: &View, guid: Guid) -> Option<Seq> {
        view.reseeded
            .get(&guid)
            .or_else(|| event_guid_seq(guid))
            .filter(|seq| (view.meta.usage_floor..=view.meta.head).contains(seq))
    }

    /// Resolves an `after_guid` cursor against a view. Event guids carry their sequence number,
    /// so a purged or pruned event is told apart from one that never existed without any
    /// index; the reseeded events of the current epoch (whose guids are app guids) are found
    /// in the view.
    pub async fn cursor(&self, view: &View, guid: Guid) -> Result<Cursor, EngineError> {
        let meta = &view.meta;
        let purged = Cursor::Purged {
            epoch: meta.epoch,
            since: meta.epoch_started_at,
        };
        if let Some(seq) = self.usage_seq(view, guid) {
            let store = self.store.clone();
            let found = blocking(move || store.usage_at(seq)).await?;
            return Ok(match found {
                Some(UsageSlot::Event(event)) if event.guid == guid => Cursor::At(seq),
                Some(UsageSlot::Pruned(p)) if p.guid == guid => Cursor::Pruned {
                    created_at: p.created_at,
                    cutoff: p.cutoff,
                },
                _ => Cursor::Unknown,
            });
        }
        Ok(match event_guid_seq(guid) {
            Some(seq) if seq < meta.usage_floor => purged,
            Some(_) => Cursor::Unknown,
            // An app guid used as a cursor points at a reseeded event of an earlier epoch.
            None if meta.epoch > 1 && view.state.app(guid).is_some() => purged,
            None => Cursor::Unknown,
        })
    }

    /// A page of usage events: how many the query selects, and the page's events in order.
    pub async fn usage_page(
        &self,
        view: &View,
        query: &UsageQuery<'_>,
    ) -> Result<(u64, Vec<(Seq, UsageEvent)>), EngineError> {
        let page = self.usage_page_for(view, query, None).await?;
        Ok((page.total, page.events))
    }

    /// [`Engine::usage_page`] for an answer `writer` writes: the page that follows, when it is
    /// read ahead, is also written ahead with it.
    ///
    /// A position the index lists whose event the store no longer holds was pruned since
    /// this node indexed it: retention ran on another node (a follower learns of a prune only
    /// this way), or is running here. The page is then selected again without those positions,
    /// so it is as full as the query asks, and the node's index drops them for good.
    pub async fn usage_page_for(
        &self,
        view: &View,
        query: &UsageQuery<'_>,
        writer: Option<&Arc<dyn PageWriter>>,
    ) -> Result<UsagePage, EngineError> {
        let mut patched: Option<View> = None;
        let mut rounds = 0;
        loop {
            rounds += 1;
            let current = patched.as_ref().unwrap_or(view);
            let (page, pruned) = self.page_once(current, query, writer).await?;
            if pruned.is_empty() || rounds >= FILL_ROUNDS {
                return Ok(page);
            }
            self.forget_pruned(current.meta.epoch, &pruned);
            let mut without = current.clone();
            usage_index::forget(&mut without.usage, &pruned);
            patched = Some(without);
        }
    }

    /// Tells the writer thread that these positions of this epoch hold tombstones, so later
    /// views leave them out; never waits (a full queue leaves it to the next read).
    fn forget_pruned(&self, epoch: u64, seqs: &[Seq]) {
        let (done, _) = oneshot::channel();
        let _ = self.queue.try_send(Request::Pruned {
            epoch,
            seqs: seqs.to_vec(),
            done,
        });
    }

    /// One selection and read of a page: the page, and the positions it selected whose
    /// events the store no longer holds (pruned).
    async fn page_once(
        &self,
        view: &View,
        query: &UsageQuery<'_>,
        writer: Option<&Arc<dyn PageWriter>>,
    ) -> Result<(UsagePage, Vec<Seq>), EngineError> {
        let selection = usage_index::select(&view.usage, &view.reseeded, view.reseed_end(), query);
        let seqs: Vec<Seq> = selection
            .page
            .iter()
            .filter_map(|i| view.usage.get(*i).map(|(seq, _)| *seq))
            .collect();
        let (Some(&low), Some(&high)) = (seqs.iter().min(), seqs.iter().max()) else {
            let page = UsagePage {
                total: selection.total,
                events: Vec::new(),
                written: None,
            };
            return Ok((page, Vec::new()));
        };
        // One ordered read when the page is dense in the log, else one read per event.
        let span = match (
            usage_index::position(&view.usage, low),
            usage_index::position(&view.usage, high),
        ) {
            (Some(a), Some(b)) => b - a + 1,
            _ => usize::MAX,
        };
        let dense = span <= seqs.len().saturating_mul(2).saturating_add(64);
        let (found, written) = match self.read_ahead_of(low, high) {
            Some((read, kind)) => match read.await {
                Ok(Ok((events, written))) => {
                    self.metrics.read_ahead.with_label_values(&["used"]).inc();
                    let same = kind.is_some() && kind == writer.map(|w| w.kind());
                    (events, written.filter(|_| same))
                }
                // Read it here, and say why there if it fails again.
                _ => (
                    self.read_page(seqs.clone(), low, high, span, dense).await?,
                    None,
                ),
            },
            None => (
                self.read_page(seqs.clone(), low, high, span, dense).await?,
                None,
            ),
        };
        if dense {
            self.read_next(view, query, selection.page.len(), high, writer);
        }
        // A page in position order that found just its events (a consumer catching up) is
        // what was read (and, if it was written ahead, what was written): nothing is moved
        // again.
        if found.len() == seqs.len() && found.iter().map(|(s, _)| s).eq(seqs.iter()) {
            if written.is_some() {
                self.metrics
                    .read_ahead
                    .with_label_values(&["written"])
                    .inc();
            }
            let page = UsagePage {
                total: selection.total,
                events: found,
                written,
            };
            return Ok((page, Vec::new()));
        }
        // Sorted by position, each taken out once by a binary search (the page's order may be
        // descending or by time). An event pruned since the view was published is left out.
        let mut found: Vec<(Seq, Option<UsageEvent>)> =
            found.into_iter().map(|(seq, e)| (seq, Some(e))).collect();
        let mut events = Vec::with_capacity(seqs.len());
        let mut pruned = Vec::new();
        for seq in seqs {
            let event = found
                .binary_search_by_key(&seq, |(s, _)| *s)
                .ok()
                .and_then(|at| found[at].1.take());
            match event {
                Some(event) => events.push((seq, event)),
                None => pruned.push(seq),
            }
        }
        pruned.sort_unstable();
        let page = UsagePage {
            total: selection.total,
            events,
            written: None,
        };
        Ok((page, pruned))
    }

    /// The events at `wanted`, sorted by position: one ordered read from `low` to `high` when
    /// the page is `dense` in the log, else one read per event.
    async fn read_page(
        &self,
        wanted: Vec<Seq>,
        low: Seq,
        high: Seq,
        span: usize,
        dense: bool,
    ) -> Result<Vec<(Seq, UsageEvent)>, EngineError> {
        let store = self.store.clone();
        if dense {
            return read_range(store, low, high, span).await;
        }
        blocking(move || {
            let mut out = Vec::with_capacity(wanted.len());
            for seq in wanted {
                if let Some(UsageSlot::Event(event)) = store.usage_at(seq)? {
                    out.push((seq, event));
                }
            }
            out.sort_unstable_by_key(|(seq, _)| *seq);
            Ok(out)
        })
        .await
    }

    /// A read ahead that holds every event from `low` to `high`, taken out of the queue, and
    /// the kind of writer that writes it.
    fn read_ahead_of(&self, low: Seq, high: Seq) -> Option<(PendingRead, Option<&'static str>)> {
        let mut queue = self.read_ahead.lock().ok()?;
        let at = queue.iter().position(|r| r.low <= low && high <= r.high)?;
        queue.remove(at).map(|r| (r.read, r.kind))
    }

    /// After a full page of a consumer reading the stream in order (`last`: its last event's
    /// position), starts reading the page it will ask for next. A position's event never
    /// changes (positions are never reused; retention and purges only take events away), and
    /// the page that uses the read takes from it only the events its own view lists, so the
    /// read may be older than that view.
    fn read_next(
        &self,
        view: &View,
        query: &UsageQuery<'_>,
        shown: usize,
        last: Seq,
        writer: Option<&Arc<dyn PageWriter>>,
    ) {
        let in_order = !query.descending
            && !query.by_created_at
            && query.guids.is_none()
            && query.created.is_none()
            && query.offset == 0;
        if !in_order || query.limit < READ_AHEAD_FROM || shown < query.limit {
            return;
        }
        let Some(at) = usage_index::position(&view.usage, last) else {
            return;
        };
        // The next page: the index's next `limit` events (fewer at the end).
        let (first, end) = (
            at + 1,
            (at + query.limit).min(view.usage.len().saturating_sub(1)),
        );
        let (Some(&(low, _)), Some(&(high, _))) = (view.usage.get(first), view.usage.get(end))
        else {
            return;
        };
        let span = end + 1 - first;
        let Ok(mut queue) = self.read_ahead.lock() else {
            return;
        };
        if queue.iter().any(|r| r.low == low) {
            return;
        }
        let store = self.store.clone();
        let writer = writer.cloned();
        let kind = writer.as_ref().map(|w| w.kind());
        let read = tokio::spawn(async move {
            let events = read_range(store, low, high, span).await?;
            let Some(writer) = writer else {
                return Ok((events, None));
            };
            tokio::task::spawn_blocking(move || {
                let written = writer.write(&events);
                (events, Some(written))
            })
            .await
            .map_err(|e| EngineError::Unavailable(format!("page write failed: {e}")))
        });
        queue.push_back(ReadAhead {
            low,
            high,
            kind,
            read,
            started: std::time::Instant::now(),
        });
        while queue.len() > READ_AHEADS {
            queue.pop_front();
        }
        self.metrics
            .read_ahead
            .with_label_values(&["started"])
            .inc();
    }

    /// Lets the store go of what reads and writes left cached if it was quiet since the last
    /// call ([`LogStore::release_idle_cache`]); whether it did.
    /// Read-aheads nobody asked for within [`READ_AHEAD_KEPT`] go first.
    pub async fn release_idle_cache(&self) -> Result<bool, EngineError> {
        if let Ok(mut queue) = self.read_ahead.lock() {
            queue.retain(|r| r.started.elapsed() < READ_AHEAD_KEPT);
        }
        let store = self.store.clone();
        blocking(move || store.release_idle_cache()).await
    }

    /// Retention: replaces every usage event written before `cutoff` by a tombstone, except
    /// the newest event and the latest STARTED event of every process that is still started.
    /// Runs beside the writer, which waits for at most one small step at a time. Returns how
    /// many events it removed.
    pub async fn prune(&self, cutoff: Timestamp) -> Result<usize, EngineError> {
        // Retention runs on the node that writes; the others' prunes would be fenced anyway.
        if !self.role().writes() {
            return Ok(0);
        }
        let view = self.view();
        let store = self.store.clone();
        let epoch = view.meta.epoch;
        let plan_view = view.clone();
        let seqs = blocking(move || {
            let view = plan_view;
            let mut events = Vec::new();
            let mut from = view.meta.usage_floor;
            loop {
                let chunk = store.usage_range(from, view.meta.head, PRUNE_READ_CHUNK)?;
                let Some(&(last, _)) = chunk.last() else {
                    break;
                };
                events.extend(chunk);
                from = last + 1;
            }
            let seqs = usage_index::prunable(&view.usage, events, &view.state, cutoff);
            let mut removed = Vec::with_capacity(seqs.len());
            for step in seqs.chunks(PRUNE_STEP) {
                if store.prune(epoch, step, cutoff)? == 0 {
                    // A purge started a new epoch: everything planned is unreachable anyway.
                    break;
                }
                removed.extend_from_slice(step);
            }
            Ok(removed)
        })
        .await?;
        let count = seqs.len();
        if count > 0 {
            let (done, finished) = oneshot::channel();
            self.queue
                .send(Request::Pruned { epoch, seqs, done })
                .await
                .map_err(|_| EngineError::Stopped)?;
            let _ = finished.await;
            self.metrics.pruned.inc_by(count as u64);
            tracing::info!(pruned = count, %cutoff, epoch, "usage events pruned");
        }
        Ok(count)
    }

    /// Audit events after `after` (exclusive), up to the durable head.
    pub async fn audit_after(
        &self,
        view: &View,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, AuditEvent)>, EngineError> {
        let from = after.saturating_add(1);
        let upto = view.meta.head;
        let store = self.store.clone();
        blocking(move || store.audit_range(from, upto, limit)).await
    }

    /// A page of the audit events that pass `query` (see [`AuditIndex::select`]): how many
    /// pass in all, and the page's events in the window's order.
    pub async fn audit_page(
        &self,
        view: &View,
        query: &AuditQuery,
        window: Window,
    ) -> Result<(u64, Vec<(Seq, AuditEvent)>), EngineError> {
        let (total, mut seqs) = view.audit.select(view.meta.head, query, window);
        let descending = seqs.first() > seqs.last();
        if descending {
            seqs.reverse();
        }
        let mut events = self.audit_events_at(seqs).await?;
        if descending {
            events.reverse();
        }
        Ok((total, events))
    }

    /// The audit events at these positions (ascending), in order.
    pub async fn audit_events_at(
        &self,
        seqs: Vec<Seq>,
    ) -> Result<Vec<(Seq, AuditEvent)>, EngineError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.store.clone();
        blocking(move || store.audit_many(&seqs)).await
    }

    /// An audit event by guid, if durable.
    pub async fn audit_event(
        &self,
        view: &View,
        guid: Guid,
    ) -> Result<Option<(Seq, AuditEvent)>, EngineError> {
        let Some(seq) = event_guid_seq(guid).filter(|seq| *seq <= view.meta.head) else {
            return Ok(None);
        };
        let store = self.store.clone();
        let found = blocking(move || store.audit_at(seq)).await?;
        Ok(found
            .filter(|event| event.guid == guid)
            .map(|event| (seq, event)))
    }

    /// Bytes the log occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.store.size_on_disk()
    }
}

/// Usage events read per step while planning a prune.
const PRUNE_READ_CHUNK: usize = 8192;
/// Usage events replaced per store step while pruning (the writer waits for at most one step).
const PRUNE_STEP: usize = 512;

/// Ranges of at least this many usage events are read by two threads, one half each.
const PARALLEL_READ_FROM: usize = 1024;

/// `store.usage_range(low, high, span)` off the async runtime; a long range is read in two
/// halves at once (a lone consumer catching up then has both cores), and joined in order.
/// Both halves run on the runtime's blocking pool, whose threads live on between reads: a
/// thread started per read would start with an empty allocator heap, fault in fresh pages for
/// every page of events and hand them back when it ends.
async fn read_range(
    store: Arc<dyn LogStore>,
    low: Seq,
    high: Seq,
    span: usize,
) -> Result<Vec<(Seq, UsageEvent)>, EngineError> {
    if span < PARALLEL_READ_FROM || high - low < 2 {
        return blocking(move || store.usage_range(low, high, span)).await;
    }
    let middle = low + (high - low) / 2;
    let later = store.clone();
    let (mut events, rest) = tokio::try_join!(
        blocking(move || store.usage_range(low, middle, span)),
        blocking(move || later.usage_range(middle + 1, high, span)),
    )?;
    events.extend(rest);
    Ok(events)
}

/// Runs a store read off the async runtime.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| EngineError::Unavailable(format!("read task failed: {e}")))?
        .map_err(EngineError::from)
}

#[cfg(test)]
mod tests;
