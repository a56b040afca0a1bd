//! Retention (tombstones in place of pruned usage events) and compaction below `log_start`.

use super::*;

impl<B: Backend> Log<B> {
    pub(super) fn prune_usage(
        &self,
        epoch: u64,
        seqs: &[Seq],
        cutoff: Timestamp,
    ) -> Result<usize, StoreError> {
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

    pub(super) fn compact_log(&self, budget: usize) -> Result<usize, StoreError> {
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
}
