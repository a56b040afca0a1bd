//! Following a log another process appends to (several tally nodes on one PostgreSQL): what
//! was committed after the meta this process holds.

use super::*;
use crate::backend::Ranged;
use crate::AuditPosting;

/// Blocks of each stream one look reads at once. Blocks are per commit, so a follower a few
/// hundred commits behind still catches up in one statement; one further behind (a restart, a
/// long pause) reads the rest with scans.
pub(crate) const FOLLOW_BLOCKS: usize = 256;

impl<B: Backend> Log<B> {
    pub(super) fn follow_log(
        &self,
        since: &Meta,
        audit_after: Seq,
    ) -> Result<crate::Followed, StoreError> {
        // The meta and the blocks after what this process holds, read at one moment: every
        // record up to the meta's head was committed with or before it, so they are all
        // there (and anything committed since is not).
        let from = since.head + 1;
        let meta_end = [META, &[0]].concat();
        let (entity, usage, audit) = (
            seq_key(ENTITY, from),
            seq_key(USAGE, from),
            seq_key(AUDIT, audit_after.saturating_add(1)),
        );
        let (entity_end, usage_end, audit_end) =
            (prefix_end(ENTITY), prefix_end(USAGE), prefix_end(AUDIT));
        let read = self.backend.scan_ranges(
            &[
                (META, &meta_end),
                (&entity, &entity_end),
                (&usage, &usage_end),
                (&audit, &audit_end),
            ],
            FOLLOW_BLOCKS,
        )?;
        let [meta, entity, usage, audit]: [Ranged; 4] = read
            .try_into()
            .map_err(|_| StoreError::Io("a look at the log read the wrong ranges".to_owned()))?;
        let meta = match meta.pairs.first() {
            Some((_, value)) => decode_meta(value)?,
            None => Meta::default(),
        };
        if meta.head < since.head || meta.log_start > since.head + 1 {
            return Ok(crate::Followed::Reload);
        }
        // A purge-and-reseed: the table is unchanged, the usage stream starts again.
        let new_epoch = meta.epoch != since.epoch || meta.usage_floor != since.usage_floor;
        if meta.head == since.head {
            *self.lock()? = meta.clone();
            return Ok(crate::Followed::Same(meta));
        }
        if new_epoch || entity.full || usage.full || audit.full {
            return self.follow_by_scans(since, meta, audit_after, new_epoch);
        }
        let mut events = Vec::new();
        for (key, value) in &entity.pairs {
            let _ = visit_block(ENTITY, key, value, |seq, entry| {
                if let (true, Entry::Event(event)) = (seq <= meta.head, entry) {
                    events.push((seq, event));
                }
                Ok(ControlFlow::Continue(()))
            })?;
        }
        let mut positions = Vec::new();
        for (key, value) in &usage.pairs {
            usage_block_positions(key, value, &(from..=meta.head), &mut |seq, at| {
                positions.push((seq, at))
            })?;
        }
        let mut postings = Vec::new();
        let mut text = String::new();
        for (key, value) in &audit.pairs {
            let wanted = audit_after.saturating_add(1)..=meta.head;
            let mut push = |k: AuditKey<'_>| postings.push(AuditPosting::from(k));
            if audit_block_keys(key, value, wanted, &mut text, &mut push)?.is_break() {
                break;
            }
        }
        *self.lock()? = meta.clone();
        Ok(crate::Followed::Appended {
            meta,
            events,
            usage: positions,
            new_epoch: false,
            audit: postings,
        })
    }

    /// [`Self::follow_log`] when one look was not enough: the streams scanned one after the
    /// other, up to `meta` (what the look read first).
    fn follow_by_scans(
        &self,
        since: &Meta,
        meta: Meta,
        audit_after: Seq,
        new_epoch: bool,
    ) -> Result<crate::Followed, StoreError> {
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
        let mut audit = Vec::new();
        self.audit_keys(audit_after.saturating_add(1), meta.head, &mut |k| {
            audit.push(AuditPosting::from(k));
        })?;
        *self.lock()? = meta.clone();
        Ok(crate::Followed::Appended {
            meta,
            events,
            usage,
            new_epoch,
            audit,
        })
    }
}
