//! A group commit: one atomic batch, with the checks that guard `log_start`.

use super::*;

impl<B: Backend> Log<B> {
    pub(super) fn commit_group(&self, commit: &Commit) -> Result<(), StoreError> {
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
}
