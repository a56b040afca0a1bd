//! [`Log`]: the key layout of `keys.rs` over any [`Backend`].

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use proto_schemas::v1::{LogRecordV1, MetaV1, RecordBodyV1, SnapshotChunkV1, TableRowV1};
use tally_domain::audit::AuditEvent;
use tally_domain::{Event, Guid, Seq, UsageEvent};

use crate::backend::{Backend, MemBackend, Op, SledBackend, SledOptions};
use crate::keys::*;
use crate::mapping::{event_from, event_to, micros, row_from, row_to, time};
use crate::{Commit, LogStore, Meta, Recovered, StoreError, TableChange, TableRow, VerifyReport};

/// Rows per base-snapshot chunk: big values, few keys.
const SNAPSHOT_CHUNK_ROWS: usize = 1000;

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
    })
}

/// Decodes a log record stored under `key`, checking the key's sequence number and kind.
fn decode_record(prefix: u8, key: &[u8], value: &[u8]) -> Result<(Seq, Event), StoreError> {
    let key_seq = seq_of(key).ok_or_else(|| {
        corrupt(
            format!("{} key {key:?}", kind_name(prefix)),
            "malformed key",
        )
    })?;
    let position = || format!("{} seq {key_seq}", kind_name(prefix));
    let record: LogRecordV1 = proto_schemas::open(value).map_err(|e| corrupt(position(), e))?;
    if record.seq != key_seq {
        return Err(corrupt(
            position(),
            format!("record says seq {}", record.seq),
        ));
    }
    let kind_ok = match (&record.body, prefix) {
        (RecordBodyV1::Usage(_), USAGE) | (RecordBodyV1::Audit(_), AUDIT) => true,
        (RecordBodyV1::Usage(_) | RecordBodyV1::Audit(_), _) => false,
        (_, ENTITY) => true,
        _ => false,
    };
    if !kind_ok {
        return Err(corrupt(position(), "record of the wrong kind for its key"));
    }
    let event = event_from(record.body).map_err(|e| corrupt(position(), e))?;
    Ok((key_seq, event))
}

fn decode_row(key: &[u8], value: &[u8]) -> Result<TableRow, StoreError> {
    let position = || {
        format!(
            "table row {}",
            guid_of(key).map_or_else(|| format!("{key:?}"), |g| g.to_string())
        )
    };
    let row: TableRowV1 = proto_schemas::open(value).map_err(|e| corrupt(position(), e))?;
    row_from(row).map_err(|e| corrupt(position(), e))
}

fn range_end(prefix: u8, upto: Seq) -> Vec<u8> {
    match upto.checked_add(1) {
        Some(next) => seq_key(prefix, next).to_vec(),
        None => prefix_end(prefix).to_vec(),
    }
}

fn seq_value(value: &[u8]) -> Option<Seq> {
    value.try_into().ok().map(Seq::from_be_bytes)
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

    /// The backend (tests use it to inject faults).
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

    fn range<T>(
        &self,
        prefix: u8,
        from: Seq,
        upto: Seq,
        limit: usize,
        reverse: bool,
        pick: impl Fn(Event) -> Option<T>,
    ) -> Result<Vec<(Seq, T)>, StoreError> {
        let mut out = Vec::new();
        if from > upto || limit == 0 {
            return Ok(out);
        }
        self.backend.scan(
            &seq_key(prefix, from),
            &range_end(prefix, upto),
            reverse,
            &mut |key, value| {
                let (seq, event) = decode_record(prefix, key, value)?;
                let item = pick(event).ok_or_else(|| {
                    corrupt(format!("{} seq {seq}", kind_name(prefix)), "wrong kind")
                })?;
                out.push((seq, item));
                Ok(if out.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            },
        )?;
        Ok(out)
    }

    fn by_guid<T>(
        &self,
        index: u8,
        prefix: u8,
        guid: Guid,
        pick: impl Fn(Event) -> Option<T>,
    ) -> Result<Option<(Seq, T)>, StoreError> {
        let Some(raw) = self.backend.get(&guid_key(index, guid))? else {
            return Ok(None);
        };
        let seq = seq_value(&raw)
            .ok_or_else(|| corrupt(format!("index entry for {guid}"), "not a sequence number"))?;
        Ok(self
            .range(prefix, seq, seq, 1, false, pick)?
            .into_iter()
            .next())
    }

    /// Every table row as stored.
    fn table_rows(&self) -> Result<Vec<TableRow>, StoreError> {
        let mut rows = Vec::new();
        self.backend
            .scan(&[TABLE], &prefix_end(TABLE), false, &mut |key, value| {
                rows.push(decode_row(key, value)?);
                Ok(ControlFlow::Continue(()))
            })?;
        Ok(rows)
    }

    fn last_seq(&self, prefix: u8) -> Result<Option<Seq>, StoreError> {
        let mut last = None;
        self.backend
            .scan(&[prefix], &prefix_end(prefix), true, &mut |key, _| {
                last = seq_of(key);
                Ok(ControlFlow::Break(()))
            })?;
        Ok(last)
    }

    fn exists(&self, prefix: u8, seq: Seq) -> Result<bool, StoreError> {
        Ok(self.backend.get(&seq_key(prefix, seq))?.is_some())
    }
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

fn usage_of(event: Event) -> Option<UsageEvent> {
    match event {
        Event::UsageRecorded(u) => Some(u),
        _ => None,
    }
}

fn audit_of(event: Event) -> Option<AuditEvent> {
    match event {
        Event::AuditRecorded(a) => Some(a),
        _ => None,
    }
}

impl<B: Backend> LogStore for Log<B> {
    fn recover(&self) -> Result<Recovered, StoreError> {
        let meta = read_meta(&self.backend)?.unwrap_or_default();
        let mut state = TableRow::fold(self.table_rows()?);
        let mut replayed = 0;
        let mut touched = Vec::new();
        self.backend.scan(
            &seq_key(
                ENTITY,
                meta.checkpoint.saturating_add(1).max(meta.log_start),
            ),
            &range_end(ENTITY, meta.head),
            false,
            &mut |key, value| {
                let (_, event) = decode_record(ENTITY, key, value)?;
                state.evolve(&event);
                touched.extend(TableRow::guid_of(&event));
                replayed += 1;
                Ok(ControlFlow::Continue(()))
            },
        )?;
        // The tail after the checkpoint must be dense: every number is exactly one record.
        for seq in meta.checkpoint.saturating_add(1).max(meta.log_start)..=meta.head {
            let found = [ENTITY, USAGE, AUDIT]
                .iter()
                .try_fold(0, |n, p| self.exists(*p, seq).map(|e| n + u32::from(e)))?;
            if found != 1 {
                return Err(corrupt(
                    format!("seq {seq}"),
                    format!("{found} records after the checkpoint, expected 1"),
                ));
            }
        }
        for prefix in [ENTITY, USAGE, AUDIT] {
            if let Some(last) = self.last_seq(prefix)? {
                if last > meta.head {
                    return Err(corrupt(
                        format!("{} seq {last}", kind_name(prefix)),
                        format!("beyond the head {}", meta.head),
                    ));
                }
            }
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
        if commit.meta.log_start != committed.log_start && commit.base_snapshot.is_none() {
            return Err(StoreError::Sequence(
                "log_start moved without a base snapshot".to_owned(),
            ));
        }
        let mut ops = Vec::with_capacity(commit.records.len() * 2 + commit.table.len() + 1);
        for (seq, event) in &commit.records {
            let value = encoded(proto_schemas::envelope(&LogRecordV1 {
                seq: *seq,
                body: event_to(event),
            }))?;
            match event {
                Event::UsageRecorded(u) => {
                    ops.push(Op::Put(seq_key(USAGE, *seq).to_vec(), value));
                    ops.push(Op::Put(
                        guid_key(USAGE_GUID, u.guid).to_vec(),
                        seq.to_be_bytes().to_vec(),
                    ));
                }
                Event::AuditRecorded(a) => {
                    ops.push(Op::Put(seq_key(AUDIT, *seq).to_vec(), value));
                    ops.push(Op::Put(
                        guid_key(AUDIT_GUID, a.guid).to_vec(),
                        seq.to_be_bytes().to_vec(),
                    ));
                }
                _ => ops.push(Op::Put(seq_key(ENTITY, *seq).to_vec(), value)),
            }
        }
        for change in &commit.table {
            match change {
                TableChange::Put(row) => ops.push(Op::Put(
                    guid_key(TABLE, row.guid()).to_vec(),
                    encoded(proto_schemas::envelope(&row_to(row)))?,
                )),
                TableChange::Delete(guid) => ops.push(Op::Delete(guid_key(TABLE, *guid).to_vec())),
            }
        }
        if let Some(rows) = &commit.base_snapshot {
            let log_start = commit.meta.log_start;
            let mut chunks: Vec<&[TableRow]> = rows.chunks(SNAPSHOT_CHUNK_ROWS).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for (i, chunk) in chunks.into_iter().enumerate() {
                let value = encoded(proto_schemas::envelope(&SnapshotChunkV1 {
                    log_start,
                    rows: chunk.iter().map(row_to).collect(),
                }))?;
                let index = u32::try_from(i)
                    .map_err(|_| StoreError::Encode("snapshot too large".to_owned()))?;
                ops.push(Op::Put(snapshot_key(log_start, index).to_vec(), value));
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

    fn usage_by_guid(&self, guid: Guid) -> Result<Option<(Seq, UsageEvent)>, StoreError> {
        self.by_guid(USAGE_GUID, USAGE, guid, usage_of)
    }

    fn usage_seq_by_guid(&self, guid: Guid) -> Result<Option<Seq>, StoreError> {
        match self.backend.get(&guid_key(USAGE_GUID, guid))? {
            None => Ok(None),
            Some(raw) => seq_value(&raw)
                .map(Some)
                .ok_or_else(|| corrupt(format!("index entry for {guid}"), "not a sequence number")),
        }
    }

    fn audit_range(
        &self,
        from: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, AuditEvent)>, StoreError> {
        self.range(AUDIT, from, upto, limit, false, audit_of)
    }

    fn audit_by_guid(&self, guid: Guid) -> Result<Option<(Seq, AuditEvent)>, StoreError> {
        self.by_guid(AUDIT_GUID, AUDIT, guid, audit_of)
    }

    fn compact(&self, budget: usize) -> Result<usize, StoreError> {
        let meta = self.lock()?.clone();
        let mut ops = Vec::new();
        let mut room = budget;
        self.backend.scan(
            &seq_key(ENTITY, 0),
            &seq_key(ENTITY, meta.log_start),
            false,
            &mut |key, _| {
                ops.push(Op::Delete(key.to_vec()));
                room -= 1;
                Ok(if room == 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            },
        )?;
        if room > 0 {
            // The guid index entries stay behind as tombstones: an old cursor must still be
            // told that its event was purged, not that it never existed.
            self.backend.scan(
                &seq_key(USAGE, 0),
                &seq_key(USAGE, meta.usage_floor),
                false,
                &mut |key, _| {
                    ops.push(Op::Delete(key.to_vec()));
                    room -= 1;
                    Ok(if room == 0 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                },
            )?;
        }
        if room > 0 {
            self.backend.scan(
                &[SNAPSHOT],
                &snapshot_key(meta.log_start, 0),
                false,
                &mut |key, _| {
                    ops.push(Op::Delete(key.to_vec()));
                    room -= 1;
                    Ok(if room == 0 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                },
            )?;
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
        let problems = &mut report.problems;
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

        // Base snapshot, then the entity log folded over it up to the checkpoint.
        let mut base_rows = Vec::new();
        let mut base_chunks = 0;
        self.backend.scan(
            &snapshot_key(meta.log_start, 0),
            &snapshot_key(meta.log_start.saturating_add(1), 0),
            false,
            &mut |key, value| {
                base_chunks += 1;
                match proto_schemas::open::<SnapshotChunkV1>(value) {
                    Ok(chunk) => {
                        for row in chunk.rows {
                            match row_from(row) {
                                Ok(row) => base_rows.push(row),
                                Err(e) => {
                                    problems.push(format!("base snapshot chunk {key:?}: {e}"))
                                }
                            }
                        }
                    }
                    Err(e) => problems.push(format!("base snapshot chunk {key:?}: {e}")),
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        if meta.log_start > 1 && base_chunks == 0 {
            problems.push(format!(
                "base snapshot for log_start {} is missing",
                meta.log_start
            ));
        }
        let mut replay = TableRow::fold(base_rows);
        self.backend.scan(
            &seq_key(ENTITY, meta.log_start),
            &prefix_end(ENTITY),
            false,
            &mut |key, value| {
                match decode_record(ENTITY, key, value) {
                    Ok((seq, event)) => {
                        report.entity_records += 1;
                        mark(seq, problems);
                        if seq <= meta.checkpoint {
                            replay.evolve(&event);
                        }
                    }
                    Err(e) => problems.push(e.to_string()),
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;

        // Usage events and their guid index.
        let mut usage_guids: HashMap<Guid, Seq> = HashMap::new();
        self.backend.scan(
            &seq_key(USAGE, meta.usage_floor),
            &prefix_end(USAGE),
            false,
            &mut |key, value| {
                match decode_record(USAGE, key, value) {
                    Ok((seq, Event::UsageRecorded(u))) => {
                        report.usage_events += 1;
                        mark(seq, problems);
                        if let Some(previous) = usage_guids.insert(u.guid, seq) {
                            problems.push(format!(
                                "usage event seq {seq}: guid {} already used by seq {previous}",
                                u.guid
                            ));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => problems.push(e.to_string()),
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        for (guid, seq) in &usage_guids {
            let indexed = self
                .backend
                .get(&guid_key(USAGE_GUID, *guid))?
                .and_then(|v| seq_value(&v));
            if indexed != Some(*seq) {
                problems.push(format!(
                    "usage guid index for {guid}: points at {indexed:?}, expected seq {seq}"
                ));
            }
        }

        // Audit events (kept across purges) and their index.
        let mut audit_guids: HashMap<Guid, Seq> = HashMap::new();
        self.backend
            .scan(&[AUDIT], &prefix_end(AUDIT), false, &mut |key, value| {
                match decode_record(AUDIT, key, value) {
                    Ok((seq, Event::AuditRecorded(a))) => {
                        report.audit_events += 1;
                        mark(seq, problems);
                        audit_guids.insert(a.guid, seq);
                    }
                    Ok(_) => {}
                    Err(e) => problems.push(e.to_string()),
                }
                Ok(ControlFlow::Continue(()))
            })?;
        for (guid, seq) in &audit_guids {
            let indexed = self
                .backend
                .get(&guid_key(AUDIT_GUID, *guid))?
                .and_then(|v| seq_value(&v));
            if indexed != Some(*seq) {
                problems.push(format!(
                    "audit guid index for {guid}: points at {indexed:?}, expected seq {seq}"
                ));
            }
        }

        // Density: every number from log_start to head is exactly one record.
        let mut gaps = Vec::new();
        for (offset, count) in seen.iter().enumerate() {
            if *count != 1 {
                gaps.push((meta.log_start + offset as u64, *count));
            }
        }
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

        // The persisted table must be the replay.
        let mut stored = Vec::new();
        self.backend
            .scan(&[TABLE], &prefix_end(TABLE), false, &mut |key, value| {
                match decode_row(key, value) {
                    Ok(row) => stored.push(row),
                    Err(e) => problems.push(e.to_string()),
                }
                Ok(ControlFlow::Continue(()))
            })?;
        report.table_rows = stored.len() as u64;
        let table = TableRow::fold(stored);
        if table != replay {
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
                "persisted table differs from a replay of the log up to the checkpoint {} (rows {})",
                meta.checkpoint,
                differing.join(", ")
            ));
        }
        Ok(report)
    }

    fn size_on_disk(&self) -> u64 {
        self.backend.size_on_disk()
    }
}
