//! tally's log: one ordered key space holding the log, the persisted app table and the base
//! snapshot, behind the small synchronous [`LogStore`] trait.
//!
//! Three implementations share all the logic in [`Log`] and differ only in their [`Backend`]:
//! [`SledLog`] (sled 0.34.7, the embedded default), [`PgLog`] (PostgreSQL: the same keys and
//! values in a table, with the head row that numbers and fences every append) and [`MemLog`] (a
//! `BTreeMap`, for tests and as the reference the conformance suite compares against). Nothing
//! outside this crate names sled or PostgreSQL's client.
//!
//! # Layout
//! - [`LogStore`]: the contract (atomicity, ordering, durability, errors).
//! - [`Log`]: the key layout, commit, reads, recovery, verification, compaction.
//! - [`backend`]: the KV backends.
//! - [`backup`]: the backup file (export and import).
//! - `mapping`: domain values ↔ `proto-schemas` v1 records.

pub mod backend;
pub mod backup;
mod codec;
mod keys;
mod log;
mod mapping;
mod pg;

use tally_domain::audit::AuditEvent;
use tally_domain::model::{App, Org, Space};
use tally_domain::{Event, Guid, Membership, RoleKind, Seq, State, Timestamp, UsageEvent};

pub use backend::{Backend, MemBackend, SledBackend, SledOptions};
pub use log::Log;
pub use pg::{redacted, PgBackend, PgOptions};

/// The product store: sled.
pub type SledLog = Log<SledBackend>;
/// The in-memory twin.
pub type MemLog = Log<MemBackend>;
/// The log in PostgreSQL.
pub type PgLog = Log<PgBackend>;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk or the database failed; nothing of the failed write is visible.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// A stored value failed its checksum or did not decode. `position` names the key.
    #[error("corrupt record at {position}: {reason}")]
    Corrupt {
        /// Which record, e.g. `usage event seq 42`.
        position: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller broke the commit contract (a gap or overlap in sequence numbers).
    #[error("commit does not follow the log: {0}")]
    Sequence(String),
    /// A value could not be encoded.
    #[error("record does not encode: {0}")]
    Encode(String),
    /// Another process took over the log (PostgreSQL: a newer term in the head row); this
    /// one can never write to it again. Nothing of the refused write is visible.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Another process (a running tally) holds the data directory.
    #[error("the data directory {0} is in use by another tally process")]
    InUse(String),
}

/// Who may append to the log now ([`LogStore::lead`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lead {
    /// Only this process can open the store (sled holds a file lock; memory is private): it
    /// always writes, and nothing is ever appended behind its back.
    Sole,
    /// This process holds the lease under `term`; no other process can append before
    /// `trusted_until` (the lease's length after the renewal was sent, less a safety margin).
    Writer {
        /// The fencing term every append carries.
        term: u64,
        /// Until when this process may trust that it is still the only writer.
        trusted_until: std::time::Instant,
        /// True on the call that took the lease: the log may hold records another writer
        /// appended, so the caller catches up to `head` before it decides anything.
        acquired: bool,
        /// The durable head when the lease was taken or renewed.
        head: Seq,
    },
    /// Another process holds the lease (or none does, and this one could not take it).
    Follower {
        /// The head row's term.
        term: u64,
        /// Where the writer takes requests (its advertised URL), while its lease is live.
        leader: Option<String>,
    },
}

/// What another process appended since a meta this one holds ([`LogStore::follow`]).
#[derive(Debug, Clone)]
pub enum Followed {
    /// Nothing changed but, perhaps, the checkpoint.
    Same(Meta),
    /// Records were appended: the entity events to fold into the table and the usage events'
    /// positions and times, each with its position, up to `meta.head`.
    Appended {
        /// The meta they were committed with.
        meta: Meta,
        /// Entity events after the old head, in order.
        events: Vec<(Seq, Event)>,
        /// Usage events after the old head; with `new_epoch`, every usage event of the new
        /// epoch (its reseeded events first).
        usage: Vec<(Seq, Timestamp)>,
        /// A purge-and-reseed came in between: the usage stream starts again at the floor.
        new_epoch: bool,
        /// Audit events after the `audit_after` given to [`LogStore::follow`], up to
        /// `meta.head`, in order.
        audit: Vec<AuditPosting>,
    },
    /// The log's start moved past what this process holds (a truncation), or the head went
    /// back: read the whole store again ([`LogStore::recover`]).
    Reload,
}

/// What retention left of a usage event: its guid, when it was written, and the cutoff of the
/// prune that removed it. It keeps the event's position, so the log stays dense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunedUsage {
    /// The event's guid.
    pub guid: Guid,
    /// When the event was written.
    pub created_at: Timestamp,
    /// Events written before this were pruned.
    pub cutoff: Timestamp,
}

/// What the audit index needs of one audit event: read from the stored bytes without decoding
/// the event whole, and borrowed from them while a visit lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditKey<'a> {
    /// Its position.
    pub seq: Seq,
    /// When it happened (µs since the epoch).
    pub created_at_micros: i64,
    /// e.g. `audit.app.update`.
    pub event_type: &'a str,
    /// Target id, as [`AuditEvent::actee`] has it.
    pub actee: &'a str,
    /// Space of the target.
    pub space_guid: Option<Guid>,
    /// Org of the target.
    pub organization_guid: Option<Guid>,
}

impl<'a> AuditKey<'a> {
    /// The same of a whole event.
    pub fn of(seq: Seq, event: &'a AuditEvent) -> Self {
        Self {
            seq,
            created_at_micros: event.created_at.timestamp_micros(),
            event_type: &event.event_type,
            actee: &event.actee,
            space_guid: event.space_guid,
            organization_guid: event.organization_guid,
        }
    }
}

/// An [`AuditKey`] that owns its text: what a follower's look at the log hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPosting {
    /// Its position.
    pub seq: Seq,
    /// When it happened (µs since the epoch).
    pub created_at_micros: i64,
    /// e.g. `audit.app.update`.
    pub event_type: String,
    /// Target id, as [`AuditEvent::actee`] has it.
    pub actee: String,
    /// Space of the target.
    pub space_guid: Option<Guid>,
    /// Org of the target.
    pub organization_guid: Option<Guid>,
}

impl AuditPosting {
    /// The same, borrowed.
    pub fn key(&self) -> AuditKey<'_> {
        AuditKey {
            seq: self.seq,
            created_at_micros: self.created_at_micros,
            event_type: &self.event_type,
            actee: &self.actee,
            space_guid: self.space_guid,
            organization_guid: self.organization_guid,
        }
    }
}

impl From<AuditKey<'_>> for AuditPosting {
    fn from(key: AuditKey<'_>) -> Self {
        Self {
            seq: key.seq,
            created_at_micros: key.created_at_micros,
            event_type: key.event_type.to_owned(),
            actee: key.actee.to_owned(),
            space_guid: key.space_guid,
            organization_guid: key.organization_guid,
        }
    }
}

/// A position of the usage stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // short-lived values, read one at a time
pub enum UsageSlot {
    /// The event.
    Event(UsageEvent),
    /// Retention removed it.
    Pruned(PrunedUsage),
}

/// The store's bookkeeping, written atomically with every commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Last committed sequence number (0: empty log).
    pub head: Seq,
    /// Current epoch, from 1; each purge-and-reseed adds one.
    pub epoch: u64,
    /// When the current epoch started; `None` for the first.
    pub epoch_started_at: Option<Timestamp>,
    /// First retained entity record; the base snapshot holds the table just before it.
    pub log_start: Seq,
    /// Usage events below this are unreachable.
    pub usage_floor: Seq,
    /// The persisted table reflects every entity record up to here.
    pub checkpoint: Seq,
    /// How many reseeded usage events open the current epoch, at `usage_floor`.
    pub reseeded: u64,
}

impl Default for Meta {
    fn default() -> Self {
        Self {
            head: 0,
            epoch: 1,
            epoch_started_at: None,
            log_start: 1,
            usage_floor: 1,
            checkpoint: 0,
            reseeded: 0,
        }
    }
}

/// One row of the persisted app table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRow {
    /// An org.
    Org(Org),
    /// A space.
    Space(Space),
    /// An app.
    App(Box<App>),
    /// The members of an org or space, `(role, user)` by role then user. Shares its guid with
    /// the org or space row (and so its bucket).
    Members(Guid, Vec<(RoleKind, String)>),
    /// A task.
    Task(Box<tally_domain::model::Task>),
    /// A process other than `web`.
    Process(Box<tally_domain::model::Process>),
}

impl TableRow {
    /// The row's guid (orgs, spaces and apps never share a guid).
    pub fn guid(&self) -> Guid {
        match self {
            Self::Org(o) => o.guid,
            Self::Space(s) => s.guid,
            Self::App(a) => a.guid,
            Self::Members(resource, _) => *resource,
            Self::Task(t) => t.guid,
            Self::Process(p) => p.guid,
        }
    }

    /// Every row of a table, orgs first.
    pub fn all(state: &State) -> Vec<TableRow> {
        state
            .orgs()
            .cloned()
            .map(Self::Org)
            .chain(state.spaces().cloned().map(Self::Space))
            .chain(state.apps().cloned().map(|app| Self::App(Box::new(app))))
            .chain(Self::members_in(state, ..))
            .chain(state.tasks().cloned().map(|t| Self::Task(Box::new(t))))
            .chain(
                state
                    .other_processes()
                    .cloned()
                    .map(|p| Self::Process(Box::new(p))),
            )
            .collect()
    }

    /// The member rows of the orgs and spaces whose guids fall in `range`.
    pub fn members_in(
        state: &State,
        range: impl std::ops::RangeBounds<Guid>,
    ) -> impl Iterator<Item = TableRow> + '_ {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        let mut rows: Vec<TableRow> = Vec::new();
        for m in state.members_in_range(range) {
            match rows.last_mut() {
                Some(Self::Members(resource, members)) if *resource == m.resource => {
                    members.push((m.role, m.user));
                }
                _ => rows.push(Self::Members(m.resource, vec![(m.role, m.user)])),
            }
        }
        rows.into_iter()
    }

    /// The row for `guid` in `state`, if it exists there.
    pub fn of(state: &State, guid: Guid) -> Option<TableRow> {
        if let Some(app) = state.app(guid) {
            return Some(Self::App(Box::new(app.clone())));
        }
        if let Some(space) = state.space(guid) {
            return Some(Self::Space(space.clone()));
        }
        if let Some(task) = state.task(guid) {
            return Some(Self::Task(Box::new(task.clone())));
        }
        if let Some(process) = state.other_process(guid) {
            return Some(Self::Process(Box::new(process.clone())));
        }
        state.org(guid).cloned().map(Self::Org)
    }

    /// The guid of the row an entity event changes; `None` for stream events.
    pub fn guid_of(event: &Event) -> Option<Guid> {
        match event {
            Event::OrgCreated(o) | Event::OrgUpdated(o) => Some(o.guid),
            Event::SpaceCreated(s) | Event::SpaceUpdated(s) => Some(s.guid),
            Event::AppCreated(a) | Event::AppUpdated(a) => Some(a.guid),
            Event::OrgDeleted { guid }
            | Event::SpaceDeleted { guid }
            | Event::AppDeleted { guid } => Some(*guid),
            Event::RoleGranted(m) | Event::RoleRevoked(m) => Some(m.resource),
            Event::TaskPut(t) => Some(t.guid),
            Event::TaskDeleted { guid } => Some(*guid),
            Event::ProcessPut(p) => Some(p.guid),
            Event::ProcessDeleted { guid } => Some(*guid),
            Event::UsageRecorded(_) | Event::AuditRecorded(_) => None,
        }
    }

    /// Builds a table from rows.
    pub fn fold(rows: impl IntoIterator<Item = TableRow>) -> State {
        let mut state = State::default();
        for row in rows {
            match row {
                Self::Org(o) => state.evolve_owned(Event::OrgCreated(o)),
                Self::Space(s) => state.evolve_owned(Event::SpaceCreated(s)),
                Self::App(a) => state.evolve_owned(Event::AppCreated(*a)),
                Self::Task(t) => state.evolve_owned(Event::TaskPut(*t)),
                Self::Process(p) => state.evolve_owned(Event::ProcessPut(*p)),
                Self::Members(resource, members) => {
                    for (role, user) in members {
                        state.evolve_owned(Event::RoleGranted(Membership {
                            resource,
                            role,
                            user,
                        }));
                    }
                }
            }
        }
        state
    }
}

/// A table checkpoint: the table as of the commit's head, and the rows changed since the last
/// checkpoint. Cloning a [`State`] is O(1), so this costs nothing until the store encodes it.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The table as of `meta.head`.
    pub state: State,
    /// Guids of rows created, changed or deleted since the last checkpoint.
    pub dirty: Vec<Guid>,
}

/// Which bucket of the persisted table a row belongs to. A checkpoint rewrites whole buckets,
/// so a writer that spreads a checkpoint over several commits should write all the dirty rows of
/// a bucket in the same commit.
pub fn table_bucket(guid: Guid) -> u16 {
    keys::bucket_of(guid)
}

/// Chunks a base snapshot is written in: chunk `i` holds the rows whose guid bucket is in
/// `16 i .. 16 i + 16`. Written a few at a time, so truncating the log never stalls the writer.
pub const SNAPSHOT_CHUNKS: u32 = 256;

/// Some chunks of the base snapshot for `log_start`: the table as of `log_start - 1`.
#[derive(Debug, Clone)]
pub struct SnapshotPart {
    /// The log start this snapshot is for.
    pub log_start: Seq,
    /// The table as of `log_start - 1` (an O(1) clone).
    pub state: State,
    /// Which chunks this commit writes.
    pub chunks: std::ops::Range<u32>,
}

/// Everything one group commit writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// New records, numbered `previous head + 1 ..` without gaps.
    pub records: Vec<(Seq, Event)>,
    /// The meta after this commit (`head` = last record's seq).
    pub meta: Meta,
    /// The table checkpoint, when `meta.checkpoint` moves to `meta.head`.
    pub checkpoint: Option<Checkpoint>,
    /// Part of the base snapshot for a future (or this commit's) `log_start`. `log_start`
    /// may move only in the commit that writes the last chunks of its snapshot.
    pub snapshot: Option<SnapshotPart>,
}

/// What start-up recovers.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The meta as last committed.
    pub meta: Meta,
    /// The table as of `meta.head`: persisted rows plus the replayed tail.
    pub state: State,
    /// Entity records replayed after the checkpoint.
    pub replayed: u64,
    /// Guids of the rows those records changed: the next checkpoint must write them.
    pub touched: Vec<Guid>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// The meta.
    pub meta: Option<Meta>,
    /// Entity records checked.
    pub entity_records: u64,
    /// Reachable usage events checked.
    pub usage_events: u64,
    /// Usage events retention removed (their positions remain).
    pub pruned_usage_events: u64,
    /// Audit events checked.
    pub audit_events: u64,
    /// Table rows checked.
    pub table_rows: u64,
    /// Everything wrong, each naming its position. Empty means the data directory is sound.
    pub problems: Vec<String>,
}

/// Receives the key/value entries of an export ([`LogStore::export`]).
pub type ExportVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// tally's log store.
///
/// # Contract
/// - **Atomicity**: [`commit`](LogStore::commit) writes all of a [`Commit`] or none of it, even
///   across a crash.
/// - **Durability**: when `commit` returns `Ok`, the commit survives a crash (it was fsynced).
///   When it returns `Err`, nothing of it is visible to reads; whether it survives a crash is
///   unspecified, so the caller must re-read state before going on.
/// - **Ordering**: records are keyed by sequence number; `commit` refuses a commit whose first
///   record does not directly follow the previous head, or whose numbers have gaps.
/// - **Concurrency**: one writer calls `commit` and `compact`; any number of readers call the
///   read methods at the same time. Reads may observe records of a commit that is still being
///   flushed, so readers bound every read by a sequence number they know is durable.
/// - **Errors**: a value that fails its checksum or does not decode is [`StoreError::Corrupt`]
///   naming its position, never a panic and never served.
pub trait LogStore: Send + Sync + 'static {
    /// Checks the checksum of every stored value, loads the meta and the persisted table (or the
    /// base snapshot), replays entity records after it, and checks that no record lies beyond
    /// the head and that the replayed tail is dense.
    fn recover(&self) -> Result<Recovered, StoreError>;

    /// [`LogStore::recover`], visiting what the indexes are built from on the way: the usage
    /// positions [`LogStore::each_usage_position`] gives from the usage floor to the head, and
    /// the audit keys [`LogStore::audit_keys`] gives up to the head, each in order. The log
    /// store reads them in the pass that checks every stored value, so start-up reads the
    /// log once, not three times.
    fn recover_indexing(
        &self,
        usage: &mut dyn FnMut(Seq, Timestamp),
        audit: &mut dyn FnMut(AuditKey<'_>),
    ) -> Result<Recovered, StoreError> {
        let recovered = self.recover()?;
        let meta = &recovered.meta;
        self.each_usage_position(meta.usage_floor, meta.head, usage)?;
        self.audit_keys(1, meta.head, audit)?;
        Ok(recovered)
    }

    /// Writes a commit atomically and fsyncs it. A commit that raises the epoch is a purge: its
    /// usage records are the epoch's reseeded events, and their index is written with them.
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;

    /// Usage events with `from <= seq <= upto`, in order, at most `limit`.
    fn usage_range(
        &self,
        from: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, UsageEvent)>, StoreError>;

    /// Usage events with `from <= seq <= upto`, newest first, at most `limit`.
    fn usage_range_rev(
        &self,
        from: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, UsageEvent)>, StoreError>;

    /// What the usage stream holds at `seq`: an event, what retention left of one, or nothing.
    fn usage_at(&self, seq: Seq) -> Result<Option<UsageSlot>, StoreError>;

    /// Visits the sequence number and time of every usage event (not the pruned ones) with
    /// `from <= seq <= upto`, in order: what the engine's in-memory usage index is built from,
    /// without a list of them all in between.
    fn each_usage_position(
        &self,
        from: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(Seq, Timestamp),
    ) -> Result<(), StoreError>;

    /// The same positions, as a list.
    fn usage_positions(&self, from: Seq, upto: Seq) -> Result<Vec<(Seq, Timestamp)>, StoreError> {
        let mut out = Vec::new();
        self.each_usage_position(from, upto, &mut |seq, at| out.push((seq, at)))?;
        Ok(out)
    }

    /// Retention: replaces the usage events at `seqs` (ascending) by [`PrunedUsage`] records
    /// naming `cutoff`, a few blocks at a time. Does nothing and returns 0 unless `epoch` is the
    /// current epoch; positions below the usage floor, beyond the head or not holding a usage
    /// event are skipped. Returns how many events it replaced. Not fsynced: after a crash the
    /// events are simply still there (the next commit's fsync makes it durable).
    fn prune(&self, epoch: u64, seqs: &[Seq], cutoff: Timestamp) -> Result<usize, StoreError>;

    /// Audit events with `from <= seq <= upto`, in order, at most `limit`.
    fn audit_range(
        &self,
        from: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, AuditEvent)>, StoreError>;

    /// Visits [`AuditKey`] of every audit event with `from <= seq <= upto`, in order: what the
    /// engine's audit index is built from, at a fraction of decoding the events. Returns the
    /// last position visited (0 if none).
    fn audit_keys(
        &self,
        from: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(AuditKey<'_>),
    ) -> Result<Seq, StoreError>;

    /// The reseeded events of `epoch` as `(app guid, seq)`, sorted by guid (empty if none).
    fn reseed_index(&self, epoch: u64) -> Result<Vec<(Guid, Seq)>, StoreError>;

    /// The audit event at `seq`, if there is one.
    fn audit_at(&self, seq: Seq) -> Result<Option<AuditEvent>, StoreError>;

    /// The audit events at `seqs` (ascending), in that order; positions holding none are left
    /// out. Each block is read and decoded once, however many of the positions it holds: what
    /// a filtered page of audit events costs.
    fn audit_many(&self, seqs: &[Seq]) -> Result<Vec<(Seq, AuditEvent)>, StoreError>;

    /// Deletes up to `budget` keys that no read can reach any more (blocks before `log_start`
    /// or `usage_floor`, old snapshots). Returns how many keys it deleted; 0 means nothing is
    /// left. Not fsynced: a crash only means doing it again.
    fn compact(&self, budget: usize) -> Result<usize, StoreError>;

    /// Checks everything offline: every value decodes, the sequence is dense from `log_start`
    /// to `head`, every event guid carries its sequence number, and replaying the log over the
    /// base snapshot gives the persisted table.
    fn verify(&self) -> Result<VerifyReport, StoreError>;

    /// Bytes the store occupies on disk (0 for the in-memory store).
    fn size_on_disk(&self) -> u64;

    /// Lets go of the pages reads have cached (sled: flushes and reopens the database, which
    /// is the only way to make sled 0.34.7 drop them; see [`SledBackend`]). Waits for reads and
    /// writes in progress; loses nothing. Start-up calls it once recovery has read what it
    /// needs, so the pages of the full recovery pass do not stay resident.
    fn release_cache(&self) -> Result<(), StoreError>;

    /// [`LogStore::release_cache`] when reads and writes since the last call touched next to
    /// nothing (64 KiB: probes and scrapes) and those since the last release something worth
    /// letting go of (4 MiB); never waits for an operation. Whether it released. Called
    /// periodically: a consumer that read the whole stream would otherwise leave up to
    /// `cache_capacity_mb` resident until later operations pass it.
    fn release_idle_cache(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Visits a consistent copy of the log as of `at`, a meta that was committed: the meta
    /// (with checkpoint 0: the copy has no persisted table), the base snapshot of its log
    /// start, the blocks of every stream from its floor to its head and the reseed index of its
    /// epoch. The caller must keep `compact` from running until this returns (it would delete
    /// keys `at` still reaches once a later commit moved a floor). Returns how many entries
    /// it visited. See [`backup`] for the file these entries go into.
    fn export(&self, at: &Meta, visit: &mut ExportVisitor<'_>) -> Result<u64, StoreError>;

    /// Takes or renews the right to append (PostgreSQL: the lease in the head row); says who
    /// holds it. A store one process owns answers [`Lead::Sole`].
    fn lead(&self) -> Result<Lead, StoreError>;

    /// Gives the lease up at once (shutdown), so another process takes over without waiting
    /// for it to run out. Appends are refused afterwards.
    fn resign(&self) -> Result<(), StoreError>;

    /// The durable head as the store says now (PostgreSQL: the head row; what a request on a
    /// node that does not write waits for, so it sees every acknowledged write).
    fn durable_head(&self) -> Result<Seq, StoreError>;

    /// What was appended after `since` (a meta this process read or committed), by another
    /// process: the store's own view of what is committed moves with it. With it, the audit
    /// events after `audit_after` (the newest one the caller holds; one look at the log
    /// brings both). On PostgreSQL, when what was appended is at most a few hundred blocks
    /// of each stream, it is one statement.
    fn follow(&self, since: &Meta, audit_after: Seq) -> Result<Followed, StoreError>;

    /// Calls `wake` soon after another process commits (PostgreSQL: LISTEN, and after every
    /// reconnect), until the store is dropped. A hint only: the caller still follows the
    /// head. A store one process owns never calls it.
    fn watch(&self, wake: Box<dyn Fn() + Send + Sync>) -> Result<(), StoreError>;

    /// Connections to the database made again after one failed or was lost (the writer's, the
    /// LISTEN connection, and pooled ones a read found closed; 0 for an embedded store).
    fn reconnects(&self) -> u64;
}

#[cfg(test)]
mod tests;
