//! Export (a consistent stream of every entry at one meta) and import into an empty store.

use super::*;

impl<B: Backend> Log<B> {
    pub(super) fn export_at(
        &self,
        at: &Meta,
        visit: &mut ExportVisitor<'_>,
    ) -> Result<u64, StoreError> {
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

/// Entries written per batch by an import.
const IMPORT_BATCH: usize = 1024;
