//! [`Log`]: the key layout of `keys.rs` over any [`Backend`].

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use proto_schemas::v1::{
    BlockV1, LogRecordV1, MetaV1, RecordBodyV1, ReseedIndexV1, SnapshotChunkV1, TableBucketV1,
    UsagePrunedV1,
};
use tally_domain::audit::AuditEvent;
use tally_domain::{event_guid_seq, Event, Guid, Seq, State, Timestamp, UsageEvent};

use crate::backend::{Backend, MemBackend, Op, SledBackend, SledOptions};
use crate::keys::*;
use crate::mapping::{event_from, event_to, micros, pruned_from, row_from, row_to, time};
use crate::{
    Commit, ExportVisitor, LogStore, Meta, PrunedUsage, Recovered, StoreError, TableRow, UsageSlot,
    VerifyReport, SNAPSHOT_CHUNKS,
};

/// Records per block: values of at most ~100 KiB, below the size where sled keeps a value out of
/// its log segments (a purge of 100,000 apps writes about 400 such values).
const BLOCK_RECORDS: usize = 256;

/// Bytes the start-up check reads between two [`LogStore::release_cache`] calls.
const RECOVERY_READ_CHUNK: usize = 64 * 1024 * 1024;

/// The log over a backend. See [`LogStore`] for the contract.
pub struct Log<B> {
    backend: B,
    committed: Mutex<Meta>,
}

impl Log<SledBackend> {
    /// Opens the sled store in `dir`, creating it if needed.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        Self::new(SledBackend::open(dir, options)?)
    }
}

impl Log<MemBackend> {
    /// An empty in-memory store.
    pub fn in_memory() -> Self {
        Self {
            backend: MemBackend::default(),
            committed: Mutex::new(Meta::default()),
        }
    }
}

fn corrupt(position: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        position: position.into(),
        reason: reason.to_string(),
    }
}

/// Maps an encoding failure (only possible for absurd sizes) into the store's error.
fn encoded(result: Result<Vec<u8>, proto_schemas::EncodeError>) -> Result<Vec<u8>, StoreError> {
    result.map_err(|e| StoreError::Encode(e.to_string()))
}

fn meta_to(meta: &Meta) -> MetaV1 {
    MetaV1 {
        head: meta.head,
        epoch: meta.epoch,
        epoch_started_at_micros: meta.epoch_started_at.map_or(0, micros),
        log_start: meta.log_start,
        usage_floor: meta.usage_floor,
        checkpoint: meta.checkpoint,
        reseeded: meta.reseeded,
    }
}

fn meta_from(meta: MetaV1) -> Result<Meta, StoreError> {
    let epoch_started_at = match meta.epoch_started_at_micros {
        0 => None,
        us => Some(time(us).map_err(|e| corrupt("meta", e))?),
    };
    Ok(Meta {
        head: meta.head,
        epoch: meta.epoch,
        epoch_started_at,
        log_start: meta.log_start,
        usage_floor: meta.usage_floor,
        checkpoint: meta.checkpoint,
        reseeded: meta.reseeded,
    })
}

fn read_meta<B: Backend>(backend: &B) -> Result<Option<Meta>, StoreError> {
    match backend.get(META)? {
        None => Ok(None),
        Some(bytes) => {
            let meta: MetaV1 = proto_schemas::open(&bytes).map_err(|e| corrupt("meta", e))?;
            meta_from(meta).map(Some)
        }
    }
}

/// One decoded record of a block: a fact, or what retention left of a usage event.
#[allow(clippy::large_enum_variant)] // short-lived values, read one at a time
pub(crate) enum Entry {
    /// A log record.
    Event(Event),
    /// A pruned usage event (usage stream only).
    Pruned(PrunedUsage),
}

/// Decodes the raw block stored under `key`.
fn open_block(prefix: u8, key: &[u8], value: &[u8]) -> Result<(Seq, BlockV1), StoreError> {
    let first = seq_of(key).ok_or_else(|| {
        corrupt(
            format!("{} key {key:?}", kind_name(prefix)),
            "malformed key",
        )
    })?;
    let block: BlockV1 = proto_schemas::open(value)
        .map_err(|e| corrupt(format!("{} block at seq {first}", kind_name(prefix)), e))?;
    Ok((first, block))
}

/// Decodes the block stored under `key`: its records must be non-empty, of the key's stream,
/// strictly increasing and start at the key's sequence number.
fn decode_block(prefix: u8, key: &[u8], value: &[u8]) -> Result<Vec<(Seq, Entry)>, StoreError> {
    let (first, block) = open_block(prefix, key, value)?;
    let position = |seq: Seq| format!("{} seq {seq}", kind_name(prefix));
    let mut out = Vec::with_capacity(block.records.len());
    let mut previous: Option<Seq> = None;
    for record in block.records {
        let seq = record.seq;
        let ordered = match previous {
            None => seq == first,
            Some(p) => seq > p,
        };
        if !ordered {
            return Err(corrupt(
                position(seq),
                format!("out of order in the block at seq {first}"),
            ));
        }
        previous = Some(seq);
        let kind_ok = match (&record.body, prefix) {
            (RecordBodyV1::Usage(_) | RecordBodyV1::UsagePruned(_), USAGE)
            | (RecordBodyV1::Audit(_) | RecordBodyV1::AuditTextActee(_), AUDIT) => true,
            (
                RecordBodyV1::Usage(_)
                | RecordBodyV1::UsagePruned(_)
                | RecordBodyV1::Audit(_)
                | RecordBodyV1::AuditTextActee(_),
                _,
            ) => false,
            (_, ENTITY) => true,
            _ => false,
        };
        if !kind_ok {
            return Err(corrupt(
                position(seq),
                "record of the wrong kind for its stream",
            ));
        }
        let entry = match record.body {
            RecordBodyV1::UsagePruned(p) => {
                Entry::Pruned(pruned_from(p).map_err(|e| corrupt(position(seq), e))?)
            }
            body => Entry::Event(event_from(body).map_err(|e| corrupt(position(seq), e))?),
        };
        out.push((seq, entry));
    }
    if out.is_empty() {
        return Err(corrupt(
            format!("{} block at seq {first}", kind_name(prefix)),
            "empty block",
        ));
    }
    Ok(out)
}

fn decode_bucket(key: &[u8], value: &[u8]) -> Result<Vec<TableRow>, StoreError> {
    let position = || format!("table bucket {key:?}");
    let bucket: TableBucketV1 = proto_schemas::open(value).map_err(|e| corrupt(position(), e))?;
    bucket
        .rows
        .into_iter()
        .map(|row| row_from(row).map_err(|e| corrupt(position(), e)))
        .collect()
}

fn range_end(prefix: u8, upto: Seq) -> Vec<u8> {
    match upto.checked_add(1) {
        Some(next) => seq_key(prefix, next).to_vec(),
        None => prefix_end(prefix).to_vec(),
    }
}

/// The rows of one bucket of a table.
fn bucket_rows(state: &State, bucket: u16) -> Vec<TableRow> {
    rows_in_buckets(state, bucket, bucket)
}

/// The rows of one snapshot chunk: buckets `16 i ..= 16 i + 15`.
fn snapshot_chunk_rows(state: &State, chunk: u32) -> Vec<TableRow> {
    let per_chunk = u32::from(BUCKETS) / SNAPSHOT_CHUNKS;
    let first = u16::try_from(chunk * per_chunk).unwrap_or(BUCKETS - 1);
    let last = u16::try_from(chunk * per_chunk + per_chunk - 1).unwrap_or(BUCKETS - 1);
    rows_in_buckets(state, first, last)
}

/// The rows whose guid bucket is in `first_bucket ..= last_bucket`.
fn rows_in_buckets(state: &State, first_bucket: u16, last_bucket: u16) -> Vec<TableRow> {
    let (first, _) = bucket_range(first_bucket);
    let (_, next) = bucket_range(last_bucket);
    let range = match next {
        Some(next) => (
            std::ops::Bound::Included(first),
            std::ops::Bound::Excluded(next),
        ),
        None => (std::ops::Bound::Included(first), std::ops::Bound::Unbounded),
    };
    state
        .orgs_in_range(range)
        .cloned()
        .map(TableRow::Org)
        .chain(state.spaces_in_range(range).cloned().map(TableRow::Space))
        .chain(
            state
                .apps_in_range(range)
                .cloned()
                .map(|app| TableRow::App(Box::new(app))),
        )
        .chain(TableRow::members_in(state, range))
        .collect()
}

/// What a read of a stream makes of one entry: `Some(Some(item))` to keep, `Some(None)` to skip
/// (a pruned event), `None` when the entry is of the wrong kind.
type Pick<T> = Option<Option<T>>;

fn usage_of(entry: Entry) -> Pick<UsageEvent> {
    match entry {
        Entry::Event(Event::UsageRecorded(u)) => Some(Some(u)),
        Entry::Pruned(_) => Some(None),
        Entry::Event(_) => None,
    }
}

fn slot_of(entry: Entry) -> Pick<UsageSlot> {
    match entry {
        Entry::Event(Event::UsageRecorded(u)) => Some(Some(UsageSlot::Event(u))),
        Entry::Pruned(p) => Some(Some(UsageSlot::Pruned(p))),
        Entry::Event(_) => None,
    }
}

fn audit_of(entry: Entry) -> Pick<AuditEvent> {
    match entry {
        Entry::Event(Event::AuditRecorded(a)) => Some(Some(a)),
        _ => None,
    }
}

impl<B: Backend> Log<B> {
    /// A log over `backend`, reading its meta.
    pub fn new(backend: B) -> Result<Self, StoreError> {
        let meta = read_meta(&backend)?.unwrap_or_default();
        Ok(Self {
            backend,
            committed: Mutex::new(meta),
        })
    }

    /// The backend (tests use it to inject faults and corruption).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The meta as last committed.
    pub fn meta(&self) -> Result<Meta, StoreError> {
        Ok(self.lock()?.clone())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Meta>, StoreError> {
        self.committed
            .lock()
            .map_err(|_| StoreError::Io("store lock poisoned".to_owned()))
    }

    /// Records of one stream with `from <= seq <= upto`, ascending (or descending), at most `limit`.
    fn range<T>(
        &self,
        prefix: u8,
        from: Seq,
        upto: Seq,
        limit: usize,
        reverse: bool,
        pick: impl Fn(Entry) -> Pick<T>,
    ) -> Result<Vec<(Seq, T)>, StoreError> {
        let mut out: Vec<(Seq, T)> = Vec::new();
        if from > upto || limit == 0 {
            return Ok(out);
        }
        let take = |seq: Seq, entry: Entry, out: &mut Vec<(Seq, T)>| -> Result<bool, StoreError> {
            if seq < from || seq > upto {
                return Ok(true);
            }
            let item = pick(entry)
                .ok_or_else(|| corrupt(format!("{} seq {seq}", kind_name(prefix)), "wrong kind"))?;
            if let Some(item) = item {
                out.push((seq, item));
            }
            Ok(out.len() < limit)
        };
        if reverse {
            // Blocks whose first record is at or before `upto`, newest first, until one starts before `from`.
            self.backend.scan(
                &[prefix],
                &range_end(prefix, upto),
                true,
                &mut |key, value| {
                    let records = decode_block(prefix, key, value)?;
                    let first = records.first().map_or(0, |(s, _)| *s);
                    for (seq, event) in records.into_iter().rev() {
                        if !take(seq, event, &mut out)? {
                            return Ok(ControlFlow::Break(()));
                        }
                    }
                    Ok(if first <= from {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                },
            )?;
            return Ok(out);
        }
        // The block that may hold `from` starts at or before it; then every later block.
        let mut more = true;
        self.backend.scan(
            &[prefix],
            &seq_key(prefix, from.saturating_add(1)),
            true,
            &mut |key, value| {
                for (seq, event) in decode_block(prefix, key, value)? {
                    more = take(seq, event, &mut out)?;
                    if !more {
                        break;
                    }
                }
                Ok(ControlFlow::Break(()))
            },
        )?;
        if more {
            self.backend.scan(
                &seq_key(prefix, from.saturating_add(1)),
                &range_end(prefix, upto),
                false,
                &mut |key, value| {
                    for (seq, event) in decode_block(prefix, key, value)? {
                        if !take(seq, event, &mut out)? {
                            return Ok(ControlFlow::Break(()));
                        }
                    }
                    Ok(ControlFlow::Continue(()))
                },
            )?;
        }
        Ok(out)
    }

    /// `log_start` may only move forward, to at most the new head + 1, in the commit that
    /// completes the snapshot for it (every earlier chunk already stored).
    fn check_log_start_move(&self, committed: &Meta, commit: &Commit) -> Result<(), StoreError> {
        let target = commit.meta.log_start;
        let refuse = |why: &str| {
            Err(StoreError::Sequence(format!(
                "log_start cannot move to {target}: {why}"
            )))
        };
        if target < committed.log_start || target > commit.meta.head + 1 {
            return refuse("out of range");
        }
        let Some(part) = commit.snapshot.as_ref().filter(|p| p.log_start == target) else {
            return refuse("no snapshot for it in this commit");
        };
        if part.chunks.end != SNAPSHOT_CHUNKS {
            return refuse("its snapshot is not complete");
        }
        let mut stored = 0u32;
        self.backend.scan(
            &snapshot_key(target, 0),
            &snapshot_key(target, part.chunks.start),
            false,
            &mut |_, _| {
                stored += 1;
                Ok(ControlFlow::Continue(()))
            },
        )?;
        if stored != part.chunks.start {
            return refuse("earlier chunks of its snapshot are missing");
        }
        Ok(())
    }

    /// Folds every table bucket into a table.
    fn load_table(&self) -> Result<State, StoreError> {
        let mut rows = Vec::new();
        self.backend
            .scan(&[TABLE], &prefix_end(TABLE), false, &mut |key, value| {
                rows.extend(decode_bucket(key, value)?);
                Ok(ControlFlow::Continue(()))
            })?;
        Ok(TableRow::fold(rows))
    }

    /// The base snapshot for `log_start` and how many chunks it has.
    fn load_snapshot(&self, log_start: Seq) -> Result<(State, usize), StoreError> {
        let mut rows = Vec::new();
        let mut chunks = 0;
        let end = snapshot_key(log_start.saturating_add(1), 0);
        self.backend.scan(
            &snapshot_key(log_start, 0),
            &end,
            false,
            &mut |key, value| {
                chunks += 1;
                let position = || format!("base snapshot chunk {key:?}");
                let chunk: SnapshotChunkV1 =
                    proto_schemas::open(value).map_err(|e| corrupt(position(), e))?;
                if chunk.log_start != log_start {
                    return Err(corrupt(
                        position(),
                        format!("belongs to log_start {}", chunk.log_start),
                    ));
                }
                for row in chunk.rows {
                    rows.push(row_from(row).map_err(|e| corrupt(position(), e))?);
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok((TableRow::fold(rows), chunks))
    }

    /// Checks the checksum of every stored value, in key order; returns how many it checked.
    /// sled keeps every page a read touched (see [`SledBackend`]), so the pass lets go of the
    /// cache after each `chunk` bytes read: it needs the memory of one chunk, not of the log.
    /// (One pass: two concurrent scans made start-up slower, evicting each other's pages.)
    pub(crate) fn check_values(&self, chunk: usize) -> Result<usize, StoreError> {
        let mut checked = 0;
        let mut from = Vec::new();
        loop {
            let mut read = 0;
            let mut resume = None;
            self.backend
                .scan(&from, &[0xff], false, &mut |key, value| {
                    proto_schemas::check(value).map_err(|e| corrupt(describe(key), e))?;
                    checked += 1;
                    read += key.len() + value.len();
                    if read < chunk {
                        return Ok(ControlFlow::Continue(()));
                    }
                    // The smallest key after this one.
                    resume = Some([key, &[0]].concat());
                    Ok(ControlFlow::Break(()))
                })?;
            self.backend.release_cache()?;
            match resume {
                Some(next) => from = next,
                None => return Ok(checked),
            }
        }
    }

    /// Visits every record of one stream from the block starting at `from` on.
    fn each_record(
        &self,
        prefix: u8,
        from: Seq,
        visit: &mut dyn FnMut(Seq, Entry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.backend.scan(
            &seq_key(prefix, from),
            &prefix_end(prefix),
            false,
            &mut |key, value| {
                for (seq, event) in decode_block(prefix, key, value)? {
                    visit(seq, event)?;
                }
                Ok(ControlFlow::Continue(()))
            },
        )
    }
}

impl<B: Backend> LogStore for Log<B> {
    fn recover(&self) -> Result<Recovered, StoreError> {
        let meta = read_meta(&self.backend)?.unwrap_or_default();
        // A bit flipped anywhere stops start-up, naming the position: every stored value's
        // checksum is checked (cheap); the tail replayed below is also decoded in full.
        self.check_values(RECOVERY_READ_CHUNK)?;
        let mut touched = Vec::new();
        let (mut state, replay_from) = if meta.checkpoint + 1 >= meta.log_start {
            (self.load_table()?, meta.checkpoint + 1)
        } else {
            let (snapshot, chunks) = self.load_snapshot(meta.log_start)?;
            if chunks != SNAPSHOT_CHUNKS as usize {
                return Err(corrupt(
                    format!("base snapshot for log_start {}", meta.log_start),
                    "missing",
                ));
            }
            // The buckets predate the snapshot: every row of either must be rewritten (or
            // removed) by the next checkpoint.
            let stale = self.load_table()?;
            touched.extend(TableRow::all(&snapshot).iter().map(TableRow::guid));
            touched.extend(TableRow::all(&stale).iter().map(TableRow::guid));
            (snapshot, meta.log_start)
        };
        let mut replayed = 0;
        let mut seen: BTreeSet<Seq> = BTreeSet::new();
        let mut mark = |seq: Seq| -> Result<(), StoreError> {
            if seq > meta.head {
                return Err(corrupt(
                    format!("seq {seq}"),
                    format!("beyond the head {}", meta.head),
                ));
            }
            if !seen.insert(seq) {
                return Err(corrupt(format!("seq {seq}"), "written twice"));
            }
            Ok(())
        };
        self.each_record(ENTITY, replay_from, &mut |seq, entry| {
            mark(seq)?;
            if let Entry::Event(event) = entry {
                state.evolve(&event);
                touched.extend(TableRow::guid_of(&event));
            }
            replayed += 1;
            Ok(())
        })?;
        for prefix in [USAGE, AUDIT] {
            self.each_record(prefix, replay_from, &mut |seq, _| mark(seq))?;
        }
        // The tail after the starting point must be dense: every number exactly one record.
        // Positions below the usage floor may be empty: purged usage events are deleted.
        if let Some(missing) =
            (replay_from..=meta.head).find(|s| *s >= meta.usage_floor && !seen.contains(s))
        {
            return Err(corrupt(
                format!("seq {missing}"),
                "missing from the log tail",
            ));
        }
        *self.lock()? = meta.clone();
        Ok(Recovered {
            meta,
            state,
            replayed,
            touched,
        })
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let mut committed = self.lock()?;
        let mut expected = committed.head + 1;
        for (seq, _) in &commit.records {
            if *seq != expected {
                return Err(StoreError::Sequence(format!(
                    "record {seq} where {expected} was due"
                )));
            }
            expected += 1;
        }
        if commit.meta.head != expected - 1 {
            return Err(StoreError::Sequence(format!(
                "meta head {} after records up to {}",
                commit.meta.head,
                expected - 1
            )));
        }
        if commit.meta.log_start != committed.log_start {
            self.check_log_start_move(&committed, commit)?;
        }
        let mut blocks: [(u8, Vec<LogRecordV1>); 3] = [
            (ENTITY, Vec::new()),
            (USAGE, Vec::new()),
            (AUDIT, Vec::new()),
        ];
        for (seq, event) in &commit.records {
            let stream = match event {
                Event::UsageRecorded(_) => 1,
                Event::AuditRecorded(_) => 2,
                _ => 0,
            };
            blocks[stream].1.push(LogRecordV1 {
                seq: *seq,
                body: event_to(event),
            });
        }
        let mut ops = Vec::new();
        for (prefix, records) in blocks {
            for chunk in records.chunks(BLOCK_RECORDS) {
                if let Some(first) = chunk.first().map(|r| r.seq) {
                    let block = BlockV1 {
                        records: chunk.to_vec(),
                    };
                    ops.push(Op::Put(
                        seq_key(prefix, first).to_vec(),
                        encoded(proto_schemas::envelope(&block))?,
                    ));
                }
            }
        }
        if let Some(checkpoint) = &commit.checkpoint {
            let buckets: BTreeSet<u16> = checkpoint.dirty.iter().map(|g| bucket_of(*g)).collect();
            for bucket in buckets {
                let rows = bucket_rows(&checkpoint.state, bucket);
                let key = bucket_key(bucket).to_vec();
                if rows.is_empty() {
                    ops.push(Op::Delete(key));
                } else {
                    let value = TableBucketV1 {
                        rows: rows.iter().map(row_to).collect(),
                    };
                    ops.push(Op::Put(key, encoded(proto_schemas::envelope(&value))?));
                }
            }
        }
        if commit.meta.epoch > committed.epoch {
            let mut entries: Vec<(Guid, Seq)> = commit
                .records
                .iter()
                .filter_map(|(seq, event)| match event {
                    Event::UsageRecorded(u) => Some((u.guid, *seq)),
                    _ => None,
                })
                .collect();
            entries.sort_unstable();
            let index = ReseedIndexV1 {
                epoch: commit.meta.epoch,
                entries: entries
                    .into_iter()
                    .map(|(guid, seq)| (guid.to_bytes(), seq))
                    .collect(),
            };
            ops.push(Op::Put(
                reseed_index_key(commit.meta.epoch).to_vec(),
                encoded(proto_schemas::envelope(&index))?,
            ));
        }
        if let Some(part) = &commit.snapshot {
            for chunk in part.chunks.clone() {
                let rows = snapshot_chunk_rows(&part.state, chunk);
                let value = SnapshotChunkV1 {
                    log_start: part.log_start,
                    rows: rows.iter().map(row_to).collect(),
                };
                ops.push(Op::Put(
                    snapshot_key(part.log_start, chunk).to_vec(),
                    encoded(proto_schemas::envelope(&value))?,
                ));
            }
        }
        ops.push(Op::Put(
            META.to_vec(),
            encoded(proto_schemas::envelope(&meta_to(&commit.meta)))?,
        ));
        self.backend.apply(ops, true)?;
        *committed = commit.meta.clone();
        Ok(())
    }

    fn usage_range(
        &self,
        from: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, UsageEvent)>, StoreError> {
        self.range(USAGE, from, upto, limit, false, usage_of)
    }

    fn usage_range_rev(
        &self,
        from: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, UsageEvent)>, StoreError> {
        self.range(USAGE, from, upto, limit, true, usage_of)
    }

    fn usage_at(&self, seq: Seq) -> Result<Option<UsageSlot>, StoreError> {
        Ok(self
            .range(USAGE, seq, seq, 1, false, slot_of)?
            .pop()
            .map(|(_, u)| u))
    }

    fn usage_positions(&self, from: Seq, upto: Seq) -> Result<Vec<(Seq, Timestamp)>, StoreError> {
        let mut out = Vec::new();
        if from > upto {
            return Ok(out);
        }
        // Blocks are per commit and a purge starts a commit, so no block straddles `from`
        // when it is a usage floor; a block straddling it anyway is filtered record by record.
        self.backend.scan(
            &seq_key(USAGE, from),
            &range_end(USAGE, upto),
            false,
            &mut |key, value| {
                let (_, block) = open_block(USAGE, key, value)?;
                for record in block.records {
                    if let RecordBodyV1::Usage(u) = record.body {
                        if (from..=upto).contains(&record.seq) {
                            let at = time(u.created_at).map_err(|e| {
                                corrupt(format!("usage event seq {}", record.seq), e)
                            })?;
                            out.push((record.seq, at));
                        }
                    }
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(out)
    }

    fn prune(&self, epoch: u64, seqs: &[Seq], cutoff: Timestamp) -> Result<usize, StoreError> {
        // Under the commit lock: the floor cannot move (and compaction cannot delete a block
        // this rewrites) while a step runs. A step is a few blocks, so writers barely wait.
        let committed = self.lock()?;
        let (Some(&lowest), Some(&highest)) = (seqs.first(), seqs.last()) else {
            return Ok(0);
        };
        if committed.epoch != epoch {
            return Ok(0);
        }
        let lowest = lowest.max(committed.usage_floor);
        let highest = highest.min(committed.head);
        if lowest > highest {
            return Ok(0);
        }
        let wanted: BTreeSet<Seq> = seqs
            .iter()
            .copied()
            .filter(|s| (lowest..=highest).contains(s))
            .collect();
        let mut blocks: Vec<(Vec<u8>, BlockV1)> = Vec::new();
        // The block holding `lowest` starts at or before it.
        let mut visit = |key: &[u8], value: &[u8]| -> Result<ControlFlow<()>, StoreError> {
            let (_, block) = open_block(USAGE, key, value)?;
            if block.records.iter().any(|r| wanted.contains(&r.seq)) {
                blocks.push((key.to_vec(), block));
            }
            Ok(ControlFlow::Continue(()))
        };
        let mut first_block = None;
        self.backend.scan(
            &[USAGE],
            &seq_key(USAGE, lowest.saturating_add(1)),
            true,
            &mut |key, _| {
                first_block = Some(key.to_vec());
                Ok(ControlFlow::Break(()))
            },
        )?;
        let start = first_block.unwrap_or_else(|| seq_key(USAGE, lowest).to_vec());
        self.backend
            .scan(&start, &range_end(USAGE, highest), false, &mut visit)?;
        let cutoff_us = micros(cutoff);
        let mut replaced = 0;
        let mut ops = Vec::with_capacity(blocks.len());
        for (key, mut block) in blocks {
            for record in &mut block.records {
                if !wanted.contains(&record.seq) {
                    continue;
                }
                if let RecordBodyV1::Usage(u) = &record.body {
                    record.body = RecordBodyV1::UsagePruned(UsagePrunedV1 {
                        guid: u.guid,
                        created_at: u.created_at,
                        cutoff: cutoff_us,
                    });
                    replaced += 1;
                }
            }
            ops.push(Op::Put(key, encoded(proto_schemas::envelope(&block))?));
        }
        if !ops.is_empty() {
            self.backend.apply(ops, false)?;
        }
        drop(committed);
        Ok(replaced)
    }

    fn audit_range(
        &self,
        from: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, AuditEvent)>, StoreError> {
        self.range(AUDIT, from, upto, limit, false, audit_of)
    }

    fn reseed_index(&self, epoch: u64) -> Result<Vec<(Guid, Seq)>, StoreError> {
        let key = reseed_index_key(epoch);
        let Some(bytes) = self.backend.get(&key)? else {
            return Ok(Vec::new());
        };
        let index: ReseedIndexV1 =
            proto_schemas::open(&bytes).map_err(|e| corrupt(describe(&key), e))?;
        Ok(index
            .entries
            .into_iter()
            .map(|(guid, seq)| (Guid::from_bytes(guid), seq))
            .collect())
    }

    fn audit_at(&self, seq: Seq) -> Result<Option<AuditEvent>, StoreError> {
        Ok(self
            .range(AUDIT, seq, seq, 1, false, audit_of)?
            .pop()
            .map(|(_, a)| a))
    }

    fn audit_many(&self, seqs: &[Seq]) -> Result<Vec<(Seq, AuditEvent)>, StoreError> {
        let mut out = Vec::with_capacity(seqs.len());
        // The block decoded last: its records, each taken when asked for.
        let mut block: Vec<(Seq, Option<Entry>)> = Vec::new();
        for &seq in seqs {
            let spans = |block: &[(Seq, Option<Entry>)]| matches!((block.first(), block.last()), (Some((a, _)), Some((b, _))) if *a <= seq && seq <= *b);
            if !spans(&block) {
                // The block holding `seq` is the last one that starts at or before it.
                block.clear();
                self.backend
                    .scan(&[AUDIT], &range_end(AUDIT, seq), true, &mut |key, value| {
                        block = decode_block(AUDIT, key, value)?
                            .into_iter()
                            .map(|(seq, entry)| (seq, Some(entry)))
                            .collect();
                        Ok(ControlFlow::Break(()))
                    })?;
                if !spans(&block) {
                    continue;
                }
            }
            let Ok(at) = block.binary_search_by_key(&seq, |(s, _)| *s) else {
                continue;
            };
            if let Some(entry) = block[at].1.take() {
                let picked = audit_of(entry).ok_or_else(|| {
                    corrupt(format!("{} seq {seq}", kind_name(AUDIT)), "wrong kind")
                })?;
                out.extend(picked.map(|event| (seq, event)));
            }
        }
        Ok(out)
    }

    fn compact(&self, budget: usize) -> Result<usize, StoreError> {
        let meta = self.lock()?.clone();
        let mut ops = Vec::new();
        let mut room = budget;
        // Blocks are per commit and a purge starts a commit, so every block that starts before
        // a floor lies entirely before it.
        for (from, to) in [
            (
                seq_key(ENTITY, 0).to_vec(),
                seq_key(ENTITY, meta.log_start).to_vec(),
            ),
            (
                seq_key(USAGE, 0).to_vec(),
                seq_key(USAGE, meta.usage_floor).to_vec(),
            ),
            (vec![SNAPSHOT], snapshot_key(meta.log_start, 0).to_vec()),
            (vec![RESEED_INDEX], reseed_index_key(meta.epoch).to_vec()),
        ] {
            if room == 0 {
                break;
            }
            self.backend.scan(&from, &to, false, &mut |key, _| {
                ops.push(Op::Delete(key.to_vec()));
                room -= 1;
                Ok(if room == 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })?;
        }
        let deleted = budget - room;
        if !ops.is_empty() {
            self.backend.apply(ops, false)?;
        }
        Ok(deleted)
    }

    fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let meta = match read_meta(&self.backend) {
            Ok(meta) => meta.unwrap_or_default(),
            Err(e) => {
                report.problems.push(e.to_string());
                return Ok(report);
            }
        };
        report.meta = Some(meta.clone());
        let mut problems = Vec::new();
        let span = usize::try_from(meta.head.saturating_sub(meta.log_start).saturating_add(1))
            .unwrap_or(0);
        let mut seen = vec![0u8; if meta.head >= meta.log_start { span } else { 0 }];
        let mut mark = |seq: Seq, problems: &mut Vec<String>| {
            if seq > meta.head {
                problems.push(format!("seq {seq}: beyond the head {}", meta.head));
            } else if seq >= meta.log_start {
                if let Some(slot) = usize::try_from(seq - meta.log_start)
                    .ok()
                    .and_then(|i| seen.get_mut(i))
                {
                    *slot = slot.saturating_add(1);
                }
            }
        };
        // Every block of every stream decodes; collect what the checks below need.
        let visit_blocks = |prefix: u8,
                            from: Seq,
                            problems: &mut Vec<String>,
                            on: &mut dyn FnMut(Seq, Entry)|
         -> Result<(), StoreError> {
            self.backend.scan(
                &seq_key(prefix, from),
                &prefix_end(prefix),
                false,
                &mut |key, value| {
                    match decode_block(prefix, key, value) {
                        Ok(records) => {
                            for (seq, event) in records {
                                on(seq, event);
                            }
                        }
                        Err(e) => problems.push(e.to_string()),
                    }
                    Ok(ControlFlow::Continue(()))
                },
            )
        };

        // Base snapshot, then the entity log folded over it up to the checkpoint.
        let (mut replay, chunks) = match self.load_snapshot(meta.log_start) {
            Ok(found) => found,
            Err(e) => {
                problems.push(e.to_string());
                (State::default(), 1)
            }
        };
        if meta.log_start > 1 && chunks != SNAPSHOT_CHUNKS as usize {
            problems.push(format!(
                "base snapshot for log_start {} has {chunks} of {SNAPSHOT_CHUNKS} chunks",
                meta.log_start
            ));
        }
        let mut entity = Vec::new();
        visit_blocks(ENTITY, meta.log_start, &mut problems, &mut |seq, event| {
            entity.push((seq, event))
        })?;
        // The log folded over the base snapshot gives the table at the head; so must the
        // persisted table with the records after its checkpoint folded over it (a checkpoint may
        // hold rows newer than its position: entity events carry whole rows, so both converge).
        let mut after_checkpoint = Vec::new();
        for (seq, entry) in entity {
            report.entity_records += 1;
            mark(seq, &mut problems);
            if let Entry::Event(event) = entry {
                replay.evolve(&event);
                if seq > meta.checkpoint {
                    after_checkpoint.push(event);
                }
            }
        }

        // Usage events: the reseeded block opens the epoch with app guids; every other event's
        // guid carries its own sequence number.
        let mut usage = Vec::new();
        // Purged usage events not yet compacted still occupy their positions.
        let mut purged = Vec::new();
        self.backend.scan(
            &seq_key(USAGE, meta.log_start),
            &seq_key(USAGE, meta.usage_floor),
            false,
            &mut |key, value| {
                match decode_block(USAGE, key, value) {
                    Ok(records) => purged.extend(records.into_iter().map(|(seq, _)| seq)),
                    Err(e) => problems.push(e.to_string()),
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        for seq in purged {
            mark(seq, &mut problems);
        }
        visit_blocks(USAGE, meta.usage_floor, &mut problems, &mut |seq, event| {
            usage.push((seq, event))
        })?;
        for (seq, entry) in usage {
            mark(seq, &mut problems);
            let reseeded = seq < meta.usage_floor + meta.reseeded;
            let (guid, guid_ok) = match entry {
                Entry::Event(Event::UsageRecorded(u)) => {
                    report.usage_events += 1;
                    let ok = if reseeded {
                        u.parent_app_guid == Some(u.guid)
                    } else {
                        event_guid_seq(u.guid) == Some(seq)
                    };
                    (u.guid, ok)
                }
                // A pruned reseeded event no longer says which app it was for.
                Entry::Pruned(p) => {
                    report.pruned_usage_events += 1;
                    (p.guid, reseeded || event_guid_seq(p.guid) == Some(seq))
                }
                Entry::Event(_) => continue,
            };
            if !guid_ok {
                problems.push(format!(
                    "usage event seq {seq}: guid {guid} does not match its position"
                ));
            }
        }
        if meta.reseeded > 0 {
            let last = meta.usage_floor + meta.reseeded - 1;
            let expected: Vec<(Guid, Seq)> = {
                let mut events: Vec<(Guid, Seq)> =
                    match self.range(USAGE, meta.usage_floor, last, usize::MAX, false, slot_of) {
                        Ok(slots) => slots
                            .into_iter()
                            .map(|(seq, slot)| match slot {
                                UsageSlot::Event(u) => (u.guid, seq),
                                UsageSlot::Pruned(p) => (p.guid, seq),
                            })
                            .collect(),
                        Err(e) => {
                            problems.push(e.to_string());
                            Vec::new()
                        }
                    };
                events.sort_unstable();
                events
            };
            match self.reseed_index(meta.epoch) {
                Ok(index) if index == expected => {}
                Ok(index) => problems.push(format!(
                    "reseed index of epoch {} lists {} events, the log has {} reseeded events",
                    meta.epoch,
                    index.len(),
                    expected.len()
                )),
                Err(e) => problems.push(e.to_string()),
            }
        }
        let mut audit = Vec::new();
        visit_blocks(AUDIT, 0, &mut problems, &mut |seq, event| {
            audit.push((seq, event))
        })?;
        for (seq, entry) in audit {
            report.audit_events += 1;
            mark(seq, &mut problems);
            if let Entry::Event(Event::AuditRecorded(a)) = entry {
                if event_guid_seq(a.guid) != Some(seq) {
                    problems.push(format!(
                        "audit event seq {seq}: guid {} does not match its position",
                        a.guid
                    ));
                }
            }
        }

        // Density: every number from log_start to head is exactly one record.
        // Every position holds exactly one record, except that positions below the usage floor
        // may hold none: purged usage events are deleted.
        let gaps: Vec<(Seq, u8)> = seen
            .iter()
            .enumerate()
            .map(|(i, n)| (meta.log_start + i as u64, *n))
            .filter(|(seq, n)| *n > 1 || (*n == 0 && *seq >= meta.usage_floor))
            .collect();
        if !gaps.is_empty() {
            let first: Vec<String> = gaps
                .iter()
                .take(5)
                .map(|(s, n)| format!("seq {s} ({n} records)"))
                .collect();
            problems.push(format!(
                "sequence is not dense: {} positions wrong, first: {}",
                gaps.len(),
                first.join(", ")
            ));
        }

        // The persisted table must be the replay (when it is at least as new as the log start).
        match self.load_table() {
            Ok(mut table) => {
                report.table_rows = TableRow::all(&table).len() as u64;
                table.evolve_all(&after_checkpoint);
                if meta.checkpoint + 1 >= meta.log_start && table != replay {
                    let expected = TableRow::all(&replay);
                    let actual = TableRow::all(&table);
                    let differing: Vec<String> = expected
                        .iter()
                        .filter(|row| !actual.contains(row))
                        .chain(actual.iter().filter(|row| !expected.contains(row)))
                        .map(|row| row.guid().to_string())
                        .take(5)
                        .collect();
                    problems.push(format!(
                        "persisted table (checkpoint {}) and a replay of the log disagree at the head (rows {})",
                        meta.checkpoint,
                        differing.join(", ")
                    ));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        report.problems = problems;
        Ok(report)
    }

    fn size_on_disk(&self) -> u64 {
        self.backend.size_on_disk()
    }

    fn release_cache(&self) -> Result<(), StoreError> {
        self.backend.release_cache()
    }

    fn export(&self, at: &Meta, visit: &mut ExportVisitor<'_>) -> Result<u64, StoreError> {
        let copy = Meta {
            checkpoint: 0,
            ..at.clone()
        };
        visit(META, &encoded(proto_schemas::envelope(&meta_to(&copy)))?)?;
        let mut entries = 1;
        let mut range = |from: &[u8], to: &[u8]| -> Result<u64, StoreError> {
            let mut visited = 0;
            self.backend.scan(from, to, false, &mut |key, value| {
                visit(key, value)?;
                visited += 1;
                Ok(ControlFlow::Continue(()))
            })?;
            entries += visited;
            Ok(visited)
        };
        if at.log_start > 1 {
            let chunks = range(
                &snapshot_key(at.log_start, 0),
                &snapshot_key(at.log_start.saturating_add(1), 0),
            )?;
            if chunks != u64::from(SNAPSHOT_CHUNKS) {
                return Err(corrupt(
                    format!("base snapshot for log_start {}", at.log_start),
                    format!("{chunks} of {SNAPSHOT_CHUNKS} chunks"),
                ));
            }
        }
        range(&seq_key(ENTITY, at.log_start), &range_end(ENTITY, at.head))?;
        range(&seq_key(USAGE, at.usage_floor), &range_end(USAGE, at.head))?;
        range(&seq_key(AUDIT, 0), &range_end(AUDIT, at.head))?;
        let index = reseed_index_key(at.epoch);
        range(&index, &range_end(RESEED_INDEX, at.epoch))?;
        Ok(entries)
    }
}

impl<B: Backend> Log<B> {
    /// Restores a backup into this store, which must be empty: checks every value's checksum
    /// and every key's kind, writes the entries in batches and the meta last, fsynced, only
    /// after the file's own checksum matched; so an interrupted import leaves no meta and a
    /// damaged file changes nothing a start-up would trust. `progress` hears the bytes read.
    /// Returns the restored meta. The table is rebuilt by the first recovery.
    pub fn import<R: std::io::Read>(
        &self,
        reader: &mut crate::backup::BackupReader<R>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Meta, crate::backup::BackupError> {
        use crate::backup::BackupError;
        let mut occupied = false;
        self.backend.scan(&[], &[0xff], false, &mut |_, _| {
            occupied = true;
            Ok(ControlFlow::Break(()))
        })?;
        if occupied {
            return Err(BackupError::Format(
                "the target data directory already holds a log".to_owned(),
            ));
        }
        let mut meta = None;
        let mut ops = Vec::new();
        while let Some((key, value)) = reader.next_entry()? {
            let damaged = |reason: String| BackupError::Damaged {
                offset: reader.offset(),
                reason: format!("{}: {reason}", describe(&key)),
            };
            proto_schemas::check(&value).map_err(|e| damaged(e.to_string()))?;
            match key.first() {
                Some(&b'm') if key.len() == 1 => {
                    let decoded: MetaV1 =
                        proto_schemas::open(&value).map_err(|e| damaged(e.to_string()))?;
                    meta = Some((meta_from(decoded)?, value));
                }
                Some(&(ENTITY | USAGE | AUDIT | SNAPSHOT | RESEED_INDEX)) => {
                    ops.push(Op::Put(key, value));
                }
                _ => return Err(damaged("not a key a backup holds".to_owned())),
            }
            if ops.len() >= IMPORT_BATCH {
                self.backend.apply(std::mem::take(&mut ops), false)?;
                progress(reader.offset());
            }
        }
        let Some((meta, value)) = meta else {
            return Err(BackupError::Format("the backup has no meta".to_owned()));
        };
        if !ops.is_empty() {
            self.backend.apply(ops, false)?;
        }
        self.backend
            .apply(vec![Op::Put(META.to_vec(), value)], true)?;
        progress(reader.offset());
        *self.lock()? = meta.clone();
        Ok(meta)
    }
}

/// Decodes a stored meta value.
pub(crate) fn decode_meta(value: &[u8]) -> Result<Meta, StoreError> {
    let meta: MetaV1 = proto_schemas::open(value).map_err(|e| corrupt("meta", e))?;
    meta_from(meta)
}

/// Entries written per batch by an import.
const IMPORT_BATCH: usize = 1024;
