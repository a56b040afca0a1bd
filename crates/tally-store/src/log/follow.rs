//! Following a log another process appends to (several tally nodes on one PostgreSQL): what
//! was committed after the meta this process holds.

use super::*;

impl<B: Backend> Log<B> {
    pub(super) fn follow_log(&self, since: &Meta) -> Result<crate::Followed, StoreError> {
        // The meta first: every record up to its head was committed with or before it, so the
        // reads below find them all (and ignore anything committed since).
        let meta = read_meta(&self.backend)?.unwrap_or_default();
        if meta.head < since.head || meta.log_start > since.head + 1 {
            return Ok(crate::Followed::Reload);
        }
        // A purge-and-reseed: the table is unchanged, the usage stream starts again.
        let new_epoch = meta.epoch != since.epoch || meta.usage_floor != since.usage_floor;
        if meta.head == since.head {
            *self.lock()? = meta.clone();
            return Ok(crate::Followed::Same(meta));
        }
        let from = since.head + 1;
        let mut events = Vec::new();
        self.each_record(ENTITY, from, &mut |seq, entry| {
            if let (true, Entry::Event(event)) = (seq <= meta.head, entry) {
                events.push((seq, event));
            }
            Ok(())
        })?;
        let usage = match new_epoch {
            true => self.usage_positions(meta.usage_floor, meta.head)?,
            false => self.usage_positions(from, meta.head)?,
        };
        *self.lock()? = meta.clone();
        Ok(crate::Followed::Appended {
            meta,
            events,
            usage,
            new_epoch,
        })
    }
}
