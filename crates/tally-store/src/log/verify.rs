//! `tally verify`: every value's checksum and decoding, density, and the table against the log.

use super::*;

impl<B: Backend> Log<B> {
    pub(super) fn verify_all(&self) -> Result<VerifyReport, StoreError> {
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
}
