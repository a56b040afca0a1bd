//! [`Log`]: the key layout of `keys.rs` over any [`Backend`]: the type, its ranged reads and
//! the `LogStore` contract; what each write or check does lives by concern in `log/`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use proto_schemas::borrowed::{self, Actee, UsageKey};
use proto_schemas::v1::{
    BlockV1, LogRecordV1, MetaV1, RecordBodyV1, ReseedIndexV1, SnapshotChunkV1, TableBucketV1,
    UsagePrunedV1,
};
use tally_domain::audit::AuditEvent;
use tally_domain::{event_guid_seq, Event, Guid, Seq, State, Timestamp, UsageEvent};

use crate::backend::{Backend, MemBackend, Op, SledBackend, SledOptions};
use crate::codec::*;
use crate::keys::*;
use crate::mapping::{event_to, micros, row_from, row_to, time};
use crate::{
    AuditKey, Commit, ExportVisitor, LogStore, Meta, Recovered, StoreError, TableRow, UsageSlot,
    VerifyReport, SNAPSHOT_CHUNKS,
};

mod commit;
pub(crate) mod follow;
mod maintenance;
mod recover;
mod transfer;
mod verify;

/// Records per block: values of at most ~100 KiB, below the size where sled keeps a value out of
/// its log segments (a purge of 100,000 apps writes about 400 such values).
const BLOCK_RECORDS: usize = 256;

/// Bytes the start-up check reads between two [`LogStore::release_cache`] calls.
const RECOVERY_READ_CHUNK: usize = 64 * 1024 * 1024;
/// Positions one scan of the indexes' reads spans (sled keeps what one scan read until it ends).
const SCAN_SPAN: Seq = 1 << 18;

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

impl Log<crate::PgBackend> {
    /// Opens the log in the PostgreSQL database `options` name, migrating its schema and
    /// taking the next term (an older process still writing there is fenced from now on).
    pub fn open_postgres(options: &crate::PgOptions) -> Result<Self, StoreError> {
        let backend = crate::PgBackend::open(options)?;
        let log = Self::new(backend)?;
        let (_, last_pos) = log.backend.head_row()?;
        let head = log.meta()?.head;
        // Only a writer can compare: while another node writes, both move.
        let writes = log.backend.term()? != 0;
        if writes && i64::try_from(head).ok() != Some(last_pos) {
            return Err(corrupt(
                "tally_log_head",
                format!("the head row says {last_pos}, the log's meta {head}"),
            ));
        }
        Ok(log)
    }
}

impl Log<crate::PgBackend> {
    /// A read-only, consistent view of the log in PostgreSQL as of now (for `verify` and
    /// `export` beside a running tally; it fences nobody).
    pub fn open_postgres_snapshot(options: &crate::PgOptions) -> Result<Self, StoreError> {
        Self::new(crate::PgBackend::open_snapshot(options)?)
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
        .chain(
            state
                .tasks_in_range(range)
                .cloned()
                .map(|t| TableRow::Task(Box::new(t))),
        )
        .chain(
            state
                .other_processes_in_range(range)
                .cloned()
                .map(|p| TableRow::Process(Box::new(p))),
        )
        .collect()
}

/// What a read of a stream hands on of each record of a block: its position and what the read
/// keeps (`None`: a pruned event, skipped); the visitor breaks when the read has enough.
type Keep<'v, T> = dyn FnMut(Seq, Option<T>) -> Result<ControlFlow<()>, StoreError> + 'v;

/// A usage block's events, pruned ones skipped; decoded straight into usage events.
fn usage_of(
    key: &[u8],
    value: &[u8],
    keep: &mut Keep<'_, UsageEvent>,
) -> Result<ControlFlow<()>, StoreError> {
    visit_usage_block(key, value, |seq, slot| match slot {
        UsageSlot::Event(u) => keep(seq, Some(u)),
        UsageSlot::Pruned(_) => keep(seq, None),
    })
}

/// A usage block's positions, pruned ones included.
fn slot_of(
    key: &[u8],
    value: &[u8],
    keep: &mut Keep<'_, UsageSlot>,
) -> Result<ControlFlow<()>, StoreError> {
    visit_usage_block(key, value, |seq, slot| keep(seq, Some(slot)))
}

/// An audit block's events.
fn audit_of(
    key: &[u8],
    value: &[u8],
    keep: &mut Keep<'_, AuditEvent>,
) -> Result<ControlFlow<()>, StoreError> {
    visit_block(AUDIT, key, value, |seq, entry| match entry {
        Entry::Event(Event::AuditRecorded(a)) => keep(seq, Some(a)),
        _ => Err(corrupt(
            format!("{} seq {seq}", kind_name(AUDIT)),
            "wrong kind",
        )),
    })
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

    /// Records of one stream with `from <= seq <= upto`, ascending (or descending), at most `limit`;
    /// `records` reads a block of the stream (`usage_of`, `slot_of`, `audit_of`).
    fn range<T>(
        &self,
        prefix: u8,
        from: Seq,
        upto: Seq,
        limit: usize,
        reverse: bool,
        records: impl Fn(&[u8], &[u8], &mut Keep<'_, T>) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<Vec<(Seq, T)>, StoreError> {
        if from > upto || limit == 0 {
            return Ok(Vec::new());
        }
        // Room for what the range can hold, up to a large page.
        let span = usize::try_from(upto - from)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let mut out: Vec<(Seq, T)> = Vec::with_capacity(limit.min(span).min(8192));
        let take = |seq: Seq, item: Option<T>, out: &mut Vec<(Seq, T)>| -> bool {
            if seq < from || seq > upto {
                return true;
            }
            if let Some(item) = item {
                out.push((seq, item));
            }
            out.len() < limit
        };
        if reverse {
            // Blocks whose first record is at or before `upto`, newest first, until one starts before `from`.
            self.backend.scan(
                &[prefix],
                &range_end(prefix, upto),
                true,
                &mut |key, value| {
                    let mut block = Vec::new();
                    let _ = records(key, value, &mut |seq, item| {
                        block.push((seq, item));
                        Ok(ControlFlow::Continue(()))
                    })?;
                    let first = block.first().map_or(0, |(s, _)| *s);
                    for (seq, item) in block.into_iter().rev() {
                        if !take(seq, item, &mut out) {
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
        let keep = |more: bool| {
            Ok(if more {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            })
        };
        // The block that may hold `from` starts at or before it; then every later block.
        let mut more = true;
        self.backend.scan(
            &[prefix],
            &seq_key(prefix, from.saturating_add(1)),
            true,
            &mut |key, value| {
                // Whether it stopped inside the block is `more`.
                let _ = records(key, value, &mut |seq, item| {
                    more = take(seq, item, &mut out);
                    keep(more)
                })?;
                Ok(ControlFlow::Break(()))
            },
        )?;
        if more {
            self.backend.scan(
                &seq_key(prefix, from.saturating_add(1)),
                &range_end(prefix, upto),
                false,
                &mut |key, value| {
                    records(key, value, &mut |seq, item| keep(take(seq, item, &mut out)))
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
    pub(crate) fn check_values(
        &self,
        chunk: usize,
        mut indexing: Option<(&Meta, Indexing<'_>)>,
    ) -> Result<usize, StoreError> {
        let mut checked = 0;
        let mut from = Vec::new();
        let mut text = String::new();
        loop {
            let mut read = 0;
            let mut resume = None;
            self.backend
                .scan(&from, &[0xff], false, &mut |key, value| {
                    proto_schemas::check(value).map_err(|e| corrupt(describe(key), e))?;
                    if let Some((meta, index)) = &mut indexing {
                        match key.first() {
                            Some(&USAGE) => usage_block_positions(
                                key,
                                value,
                                &(meta.usage_floor..=meta.head),
                                index.usage,
                            )?,
                            Some(&AUDIT) => {
                                // (A block past the head holds nothing committed: it breaks.)
                                let _ = audit_block_keys(
                                    key,
                                    value,
                                    1..=meta.head,
                                    &mut text,
                                    index.audit,
                                )?;
                            }
                            _ => {}
                        }
                    }
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

    /// The usage positions in `wanted` held by the blocks that start from `start` through `end`.
    fn usage_positions_in(
        &self,
        wanted: std::ops::RangeInclusive<Seq>,
        start: Seq,
        end: Seq,
        visit: &mut dyn FnMut(Seq, Timestamp),
    ) -> Result<(), StoreError> {
        self.backend.scan(
            &seq_key(USAGE, start),
            &range_end(USAGE, end),
            false,
            &mut |key, value| {
                usage_block_positions(key, value, &wanted, visit)?;
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(())
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
                visit_block(prefix, key, value, |seq, event| {
                    visit(seq, event)?;
                    Ok(ControlFlow::Continue(()))
                })
            },
        )
    }
}

/// Where start-up's check pass hands what the indexes are built from (see
/// [`LogStore::recover_indexing`]).
pub(crate) struct Indexing<'a> {
    pub(crate) usage: &'a mut dyn FnMut(Seq, Timestamp),
    pub(crate) audit: &'a mut dyn FnMut(AuditKey<'_>),
}

/// The usage events of one block whose positions are in `wanted`, with their times.
pub(crate) fn usage_block_positions(
    key: &[u8],
    value: &[u8],
    wanted: &std::ops::RangeInclusive<Seq>,
    visit: &mut dyn FnMut(Seq, Timestamp),
) -> Result<(), StoreError> {
    let keys = block_keys(USAGE, key, value, borrowed::usage_keys, |k| match k {
        UsageKey::Event { seq, .. } | UsageKey::Pruned { seq } => *seq,
    })?;
    for k in keys {
        if let UsageKey::Event { seq, created_at } = k {
            if wanted.contains(&seq) {
                let at =
                    time(created_at).map_err(|e| corrupt(format!("usage event seq {seq}"), e))?;
                visit(seq, at);
            }
        }
    }
    Ok(())
}

/// Visits the index keys of one block's audit events whose positions are in `wanted`; breaks
/// at the first one past it. `text` is room for a guid actee written out.
pub(crate) fn audit_block_keys(
    key: &[u8],
    value: &[u8],
    wanted: std::ops::RangeInclusive<Seq>,
    text: &mut String,
    visit: &mut dyn FnMut(AuditKey<'_>),
) -> Result<ControlFlow<()>, StoreError> {
    for k in block_keys(AUDIT, key, value, borrowed::audit_keys, |k| k.seq)? {
        if k.seq < *wanted.start() {
            continue;
        }
        if k.seq > *wanted.end() {
            return Ok(ControlFlow::Break(()));
        }
        time(k.created_at).map_err(|e| corrupt(format!("audit event seq {}", k.seq), e))?;
        let actee = match k.actee {
            Actee::Guid(raw) => {
                text.clear();
                write!(text, "{}", Guid::from_bytes(raw))
                    .map_err(|e| corrupt(format!("audit event seq {}", k.seq), e))?;
                text.as_str()
            }
            Actee::Text(id) => id,
        };
        visit(AuditKey {
            seq: k.seq,
            created_at_micros: k.created_at,
            event_type: k.event_type,
            actee,
            space_guid: k.space_guid.map(Guid::from_bytes),
            organization_guid: k.organization_guid.map(Guid::from_bytes),
        });
    }
    Ok(ControlFlow::Continue(()))
}

impl<B: Backend> Log<B> {
    fn recover_with(&self, indexing: Option<Indexing<'_>>) -> Result<Recovered, StoreError> {
        self.backend.refresh()?;
        // One consistent state, even while another node appends and checkpoints.
        self.backend.pin()?;
        let recovered = self.recover_log(indexing);
        self.backend.unpin();
        let recovered = recovered?;
        // What the store holds is what was committed (after a write whose outcome was not
        // known, more than this process believed).
        *self.lock()? = recovered.meta.clone();
        Ok(recovered)
    }
}

impl<B: Backend> LogStore for Log<B> {
    fn recover(&self) -> Result<Recovered, StoreError> {
        self.recover_with(None)
    }

    fn recover_indexing(
        &self,
        usage: &mut dyn FnMut(Seq, Timestamp),
        audit: &mut dyn FnMut(AuditKey<'_>),
    ) -> Result<Recovered, StoreError> {
        self.recover_with(Some(Indexing { usage, audit }))
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.commit_group(commit)
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

    fn each_usage_position(
        &self,
        from: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(Seq, Timestamp),
    ) -> Result<(), StoreError> {
        if from > upto {
            return Ok(());
        }
        // Blocks are per commit and a purge starts a commit, so no block straddles `from`
        // when it is a usage floor; a block straddling it anyway is filtered record by record.
        // One scan per span of positions: sled holds on to what one long scan read until it ends.
        let mut start = from;
        while start <= upto {
            let end = upto.min(start.saturating_add(SCAN_SPAN - 1));
            self.usage_positions_in(from..=upto, start, end, visit)?;
            start = end.saturating_add(1);
        }
        Ok(())
    }

    fn audit_keys(
        &self,
        from: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(AuditKey<'_>),
    ) -> Result<Seq, StoreError> {
        let mut last = 0;
        if from > upto {
            return Ok(last);
        }
        let mut text = String::new();
        let mut each = |key: &[u8], value: &[u8]| -> Result<ControlFlow<()>, StoreError> {
            audit_block_keys(key, value, from..=upto, &mut text, &mut |k| {
                last = k.seq;
                visit(k);
            })
        };
        // The block that may hold `from` starts at or before it; then every later block.
        let after = seq_key(AUDIT, from.saturating_add(1));
        self.backend
            .scan(&[AUDIT], &after, true, &mut |key, value| {
                // Whatever it says, the blocks after it are the forward scan's.
                let _ = each(key, value)?;
                Ok(ControlFlow::Break(()))
            })?;
        // One scan per span of positions (see `usage_positions`).
        let mut start = from.saturating_add(1);
        while start <= upto {
            let end = upto.min(start.saturating_add(SCAN_SPAN - 1));
            self.backend.scan(
                &seq_key(AUDIT, start),
                &range_end(AUDIT, end),
                false,
                &mut each,
            )?;
            start = end.saturating_add(1);
        }
        Ok(last)
    }

    fn prune(&self, epoch: u64, seqs: &[Seq], cutoff: Timestamp) -> Result<usize, StoreError> {
        self.prune_usage(epoch, seqs, cutoff)
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
        let mut block: Vec<(Seq, Option<AuditEvent>)> = Vec::new();
        for &seq in seqs {
            let spans = |block: &[(Seq, Option<AuditEvent>)]| matches!((block.first(), block.last()), (Some((a, _)), Some((b, _))) if *a <= seq && seq <= *b);
            if !spans(&block) {
                // The block holding `seq` is the last one that starts at or before it.
                block.clear();
                self.backend
                    .scan(&[AUDIT], &range_end(AUDIT, seq), true, &mut |key, value| {
                        let _ = audit_of(key, value, &mut |seq, event| {
                            block.push((seq, event));
                            Ok(ControlFlow::Continue(()))
                        })?;
                        Ok(ControlFlow::Break(()))
                    })?;
                if !spans(&block) {
                    continue;
                }
            }
            let Ok(at) = block.binary_search_by_key(&seq, |(s, _)| *s) else {
                continue;
            };
            if let Some(event) = block[at].1.take() {
                out.push((seq, event));
            }
        }
        Ok(out)
    }

    fn compact(&self, budget: usize) -> Result<usize, StoreError> {
        self.compact_log(budget)
    }

    fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.verify_all()
    }

    fn size_on_disk(&self) -> u64 {
        self.backend.size_on_disk()
    }

    fn release_cache(&self) -> Result<(), StoreError> {
        self.backend.release_cache()
    }

    fn release_idle_cache(&self) -> Result<bool, StoreError> {
        self.backend.release_if_idle()
    }

    fn export(&self, at: &Meta, visit: &mut ExportVisitor<'_>) -> Result<u64, StoreError> {
        self.export_at(at, visit)
    }

    fn lead(&self) -> Result<crate::Lead, StoreError> {
        self.backend.lead()
    }

    fn resign(&self) -> Result<(), StoreError> {
        self.backend.resign()
    }

    fn durable_head(&self) -> Result<Seq, StoreError> {
        match self.backend.durable_head()? {
            Some(head) => Ok(head),
            None => Ok(self.meta()?.head),
        }
    }

    fn follow(&self, since: &Meta, audit_after: Seq) -> Result<crate::Followed, StoreError> {
        self.follow_log(since, audit_after)
    }

    fn watch(&self, wake: Box<dyn Fn() + Send + Sync>) -> Result<(), StoreError> {
        self.backend.watch(wake)
    }

    fn reconnects(&self) -> u64 {
        self.backend.reconnects()
    }
}
