//! Recovery at start-up: the table from its checkpoint or snapshot, then the replayed tail.

use super::*;

impl<B: Backend> Log<B> {
    pub(super) fn recover_log(
        &self,
        indexing: Option<Indexing<'_>>,
    ) -> Result<Recovered, StoreError> {
        let meta = read_meta(&self.backend)?.unwrap_or_default();
        // A bit flipped anywhere stops start-up, naming the position: every stored value's
        // checksum is checked (cheap); the tail replayed below is also decoded in full. The
        // same pass hands on what the indexes are built from, if asked.
        let started = std::time::Instant::now();
        self.check_values(RECOVERY_READ_CHUNK, indexing.map(|index| (&meta, index)))?;
        let checked = started.elapsed();
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
        tracing::info!(
            check_and_index_ms = checked.as_millis() as u64,
            table_and_replay_ms = (started.elapsed() - checked).as_millis() as u64,
            "log read"
        );
        *self.lock()? = meta.clone();
        Ok(Recovered {
            meta,
            state,
            replayed,
            touched,
        })
    }
}
