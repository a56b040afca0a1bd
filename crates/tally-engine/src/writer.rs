//! The writer thread. It alone decides commands and writes the log.
//!
//! One turn of its loop:
//! 1. wait for a request, then take every other request already queued (up to `max_batch`);
//! 2. decide each command in order against the table, folding accepted events into it at once
//!    so later commands in the group see them; refused commands are answered right away;
//! 3. number the accepted records `head + 1, head + 2, ...`;
//! 4. commit them (with the table checkpoint when due) as one atomic write, fsynced once;
//! 5. publish the new view, then answer every caller of the group;
//! 6. if the write failed, answer every caller of the group with the error and reload the table
//!    from the store, which holds none of the group.
//!
//! A purge is decided at a group boundary as its own commit, so every change decided before it
//! is in its reseeded events and every change after it follows them. When idle, the writer
//! deletes unreachable keys a few thousand at a time.
//!
//! On a store several nodes share (PostgreSQL) the thread has a [`Role`]: it writes only while
//! it holds the lease (renewed with every append and every `renew_every` when idle); otherwise
//! it follows, folding what the writing node appended into its table every tick (and when the
//! store says another node committed), answers commands with 503, and takes the lease as soon
//! as it runs out, after catching up with the log.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::SubsecRound;

use tally_domain::{
    decide, event_guid, reseed, Envelope, Event, Guid, IdGen, Inputs, Seq, State, Timestamp,
};
use tally_store::{
    table_bucket, AuditPosting, Checkpoint, Commit, LogStore, Meta, Recovered, SnapshotPart,
    TableRow, SNAPSHOT_CHUNKS,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    AuditIndex, Clock, Committed, EngineConfig, EngineError, Outage, Purged, Request, ReseedIndex,
    Role, UsageIndex, View,
};

/// How long idle work (checkpoint, truncation, compaction steps) waits between tries while the
/// log refuses writes.
const IDLE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

pub(crate) struct Writer {
    store: Arc<dyn LogStore>,
    config: EngineConfig,
    clock: Box<dyn Clock>,
    ids: Box<dyn IdGen + Send>,
    state: State,
    meta: Meta,
    /// Rows changed since the last checkpoint.
    dirty: BTreeSet<Guid>,
    last_now: Option<Timestamp>,
    compaction_pending: bool,
    /// A table checkpoint in progress: its rows are written a slice per commit.
    round: Option<CheckpointRound>,
    /// A log truncation in progress: its base snapshot is being written a few chunks at a time.
    truncation: Option<Truncation>,
    /// Group commits since the last truncation step (under load, one step every few groups).
    groups_since_truncation_step: u32,
    reseeded: Arc<ReseedIndex>,
    /// The reachable usage events, published with every view.
    usage: UsageIndex,
    /// Every audit event (shared with every view).
    audit: Arc<AuditIndex>,
    publish: watch::Sender<Arc<View>>,
    /// Readiness and exports in progress, shared with the engine.
    signals: crate::Signals,
    /// Set when stopped without a final checkpoint (tests simulating a crash).
    abandoned: bool,
    /// What this node does with the log (published in `signals.role`).
    role: Role,
    /// When the lease was last taken, renewed or asked for.
    last_lead: std::time::Instant,
    /// While following: the rows another node's records changed after the checkpoint, each
    /// with the record's position (they are the dirty rows if this node takes over).
    touched: Vec<(Seq, Guid)>,
    /// Whether the last attempt to read the log or the lease failed (logged once per outage).
    follow_failing: bool,
    /// Set when the store refused a write because another node took the lease: the reload
    /// after the failure then asks who writes now.
    fenced: bool,
    /// Writes the log refused, logged once per outage rather than once per group.
    writes_failing: Outage,
}

type Reply = oneshot::Sender<Result<Committed, EngineError>>;

impl Writer {
    pub(crate) fn new(
        store: Arc<dyn LogStore>,
        config: EngineConfig,
        clock: Box<dyn Clock>,
        ids: Box<dyn IdGen + Send>,
        recovered: Recovered,
        publish: watch::Sender<Arc<View>>,
        signals: crate::Signals,
    ) -> Self {
        config.metrics.positions(&recovered.meta);
        let first = publish.borrow().clone();
        Self {
            store,
            config,
            clock,
            ids,
            state: recovered.state,
            meta: recovered.meta,
            dirty: recovered.touched.into_iter().collect(),
            last_now: None,
            compaction_pending: true,
            round: None,
            truncation: None,
            groups_since_truncation_step: 0,
            reseeded: first.reseeded.clone(),
            usage: first.usage.clone(),
            audit: first.audit.clone(),
            publish,
            signals,
            abandoned: false,
            role: Role::Sole,
            last_lead: std::time::Instant::now(),
            touched: Vec::new(),
            follow_failing: false,
            fenced: false,
            writes_failing: Outage::default(),
        }
    }

    /// Time moves forward from commit to commit inside the log (by a microsecond when the
    /// clock did not), so `created_at` order agrees with log order and no later commit shares
    /// the timestamp of a purge's reseeded events; and it has the log's precision
    /// (microseconds), so what is in memory equals what is on disk.
    fn now(&mut self) -> Timestamp {
        let now = self.clock.now().trunc_subsecs(6);
        let now = match self.last_now {
            Some(last) if last >= now => last + chrono::Duration::microseconds(1),
            _ => now,
        };
        self.last_now = Some(now);
        now
    }

    pub(crate) fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        self.take_lead();
        // A log that still holds records of an earlier epoch is truncated in the background.
        if self.role.writes() && self.meta.log_start < self.meta.usage_floor {
            self.start_truncation();
        }
        loop {
            if !self.role.writes() {
                let Some(mut request) = requests.blocking_recv() else {
                    return;
                };
                // Wake-ups queued meanwhile (one per commit of the writer while something here
                // watches) are one look at the log: it reads everything appended since.
                let mut look = false;
                let mut other = None;
                loop {
                    if matches!(request, Request::Tick) {
                        look = true;
                    } else {
                        other = Some(request);
                        break;
                    }
                    match requests.try_recv() {
                        Ok(next) => request = next,
                        Err(_) => break,
                    }
                }
                if look {
                    self.follow_step();
                }
                if let Some(request) = other {
                    if self.follow_request(request) {
                        return;
                    }
                }
                if self.last_lead.elapsed() >= self.config.renew_every {
                    self.take_lead();
                }
                continue;
            }
            let first = if self.round.is_some()
                || self.truncation.is_some()
                || (self.compaction_pending && !self.exporting())
            {
                match requests.try_recv() {
                    Ok(request) => request,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if self.writes_failing.is_on() {
                            // The log refuses writes: idle work waits a little between tries
                            // instead of spinning (a request still gets its answer at once
                            // after the pause).
                            std::thread::sleep(IDLE_RETRY_PAUSE);
                        }
                        if self.round.is_some() {
                            self.checkpoint_step();
                        } else if self.truncation.is_some() {
                            self.truncation_step(IDLE_TRUNCATION_CHUNKS);
                        } else {
                            self.compact_step();
                        }
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match requests.blocking_recv() {
                    Some(request) => request,
                    None => break,
                }
            };
            let mut group = vec![first];
            while group.len() < self.config.max_batch {
                match requests.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            if self.handle(group) {
                return;
            }
            // Under load the writer is never idle: truncate a little every few groups anyway.
            self.groups_since_truncation_step += 1;
            if self.truncation.is_some()
                && self.groups_since_truncation_step >= BUSY_TRUNCATION_EVERY
            {
                self.truncation_step(1);
            }
        }
        self.final_checkpoint();
    }

    /// Handles one group; returns true when asked to shut down.
    fn handle(&mut self, group: Vec<Request>) -> bool {
        let mut pending: Vec<(Envelope, Reply)> = Vec::new();
        for request in group {
            match request {
                Request::Command(envelope, reply) => pending.push((*envelope, reply)),
                Request::Purge(reply) => {
                    self.commit_commands(std::mem::take(&mut pending));
                    let _ = reply.send(self.purge());
                }
                Request::Probe(reply) => {
                    self.commit_commands(std::mem::take(&mut pending));
                    let _ = reply.send(self.probe());
                }
                Request::Pruned { epoch, seqs, done } => {
                    self.forget_pruned(epoch, &seqs);
                    let _ = done.send(());
                }
                #[cfg(test)]
                Request::Abandon(done) => {
                    self.commit_commands(std::mem::take(&mut pending));
                    self.abandoned = true;
                    let _ = done.send(());
                    return true;
                }
                Request::Shutdown(done) => {
                    self.commit_commands(std::mem::take(&mut pending));
                    self.final_checkpoint();
                    self.resign();
                    let _ = done.send(());
                    return true;
                }
                Request::Tick => {}
            }
        }
        self.commit_commands(pending);
        if self.role != Role::Sole && self.last_lead.elapsed() >= self.config.renew_every {
            self.take_lead();
        }
        false
    }

    /// One request while another node writes; returns true when asked to shut down.
    fn follow_request(&mut self, request: Request) -> bool {
        let refused = || {
            EngineError::Unavailable(
                "this node does not write to the log now (another node holds the lease); retry"
                    .to_owned(),
            )
        };
        match request {
            Request::Command(_, reply) => {
                let _ = reply.send(Err(refused()));
            }
            Request::Purge(reply) => {
                let _ = reply.send(Err(refused()));
            }
            Request::Probe(reply) => {
                let reachable = self
                    .store
                    .durable_head()
                    .map(drop)
                    .map_err(EngineError::from);
                let _ = reply.send(reachable);
            }
            // A read found tombstones the writer's retention left where this node's index
            // still lists events.
            Request::Pruned { epoch, seqs, done } => {
                self.forget_pruned(epoch, &seqs);
                let _ = done.send(());
            }
            Request::Tick => {}
            #[cfg(test)]
            Request::Abandon(done) => {
                let _ = done.send(());
                return true;
            }
            Request::Shutdown(done) => {
                let _ = done.send(());
                return true;
            }
        }
        false
    }

    /// Drops pruned events of this epoch from the usage index and publishes the view.
    fn forget_pruned(&mut self, epoch: u64, seqs: &[Seq]) {
        if epoch == self.meta.epoch && !seqs.is_empty() {
            crate::usage_index::forget(&mut self.usage, seqs);
            self.publish_view();
        }
    }

    /// Takes or renews the lease (or learns who holds it), and becomes what the answer says.
    fn take_lead(&mut self) {
        self.last_lead = std::time::Instant::now();
        let lead = match self.store.lead() {
            Ok(lead) => lead,
            Err(error) => {
                // The database is out of reach. A writer goes on (its appends are fenced in
                // the database anyway) until it can no longer trust its lease.
                if let Role::Writer { trusted_until, .. } = self.role {
                    if std::time::Instant::now() >= trusted_until {
                        tracing::warn!(%error, "cannot renew the lease; this node stops writing");
                        self.become_follower(0, None);
                    }
                }
                if !self.follow_failing {
                    tracing::warn!(%error, "cannot reach the log's lease");
                    self.follow_failing = true;
                }
                return;
            }
        };
        match lead {
            tally_store::Lead::Sole => self.set_role(Role::Sole),
            tally_store::Lead::Writer {
                term,
                trusted_until,
                acquired,
                head,
            } => {
                if acquired || !self.role.writes() {
                    // Another node may have appended: catch up before deciding anything.
                    self.catch_up(head);
                    self.dirty.extend(
                        std::mem::take(&mut self.touched)
                            .into_iter()
                            .map(|(_, g)| g),
                    );
                    self.compaction_pending = true;
                    if self.meta.log_start < self.meta.usage_floor {
                        self.start_truncation();
                    }
                    self.config.metrics.lease_changes.inc();
                    tracing::info!(term, head = self.meta.head, "this node writes the log");
                }
                self.set_role(Role::Writer {
                    term,
                    trusted_until,
                });
            }
            tally_store::Lead::Follower { term, leader } => {
                if self.role.writes() {
                    tracing::warn!(
                        term,
                        ?leader,
                        "another node writes the log now; this one follows"
                    );
                }
                self.become_follower(term, leader);
            }
        }
    }

    fn become_follower(&mut self, term: u64, leader: Option<String>) {
        if self.role.writes() {
            self.config.metrics.lease_changes.inc();
            // Work in progress belongs to the writer; the new one starts its own.
            self.round = None;
            self.truncation = None;
            self.touched.extend(
                std::mem::take(&mut self.dirty)
                    .into_iter()
                    .map(|g| (self.meta.head, g)),
            );
        }
        self.set_role(Role::Follower { term, leader });
    }

    fn set_role(&mut self, role: Role) {
        self.config.metrics.role(&role);
        self.role = role.clone();
        match self.signals.role.write() {
            Ok(mut shared) => *shared = role,
            Err(poisoned) => *poisoned.into_inner() = role,
        }
    }

    /// Follows the log until it holds `head` (records up to it are final: this node now holds
    /// the lease); reads the whole store again if following cannot get there.
    fn catch_up(&mut self, head: Seq) {
        for _ in 0..8 {
            if self.meta.head >= head {
                return;
            }
            self.follow_step();
        }
        if self.meta.head < head {
            self.reload();
        }
    }

    /// Folds into the table what another node appended since this node's head, and publishes
    /// the view.
    fn follow_step(&mut self) {
        let started = std::time::Instant::now();
        self.follow_once();
        self.config
            .metrics
            .follow_duration
            .observe(started.elapsed().as_secs_f64());
    }

    fn follow_once(&mut self) {
        match self.store.follow(&self.meta, self.audit.last()) {
            Ok(tally_store::Followed::Same(meta)) => {
                self.meta = meta;
                self.follow_failing = false;
                self.config.metrics.follower_lag.set(0);
            }
            Ok(tally_store::Followed::Appended {
                meta,
                events,
                usage,
                new_epoch,
                audit,
            }) => {
                // What can fail is read before anything changes: a failed step changes nothing.
                if new_epoch {
                    // Another node purged: the stream starts again with the reseeded events.
                    match self.store.reseed_index(meta.epoch) {
                        Ok(index) => self.reseeded = Arc::new(ReseedIndex::new(index)),
                        Err(error) => {
                            tracing::warn!(%error, "cannot read the new epoch's reseed index; retrying");
                            return;
                        }
                    }
                    self.usage = UsageIndex::new();
                    tracing::info!(
                        epoch = meta.epoch,
                        "another node purged and reseeded the usage events"
                    );
                }
                for (seq, event) in &events {
                    self.state.evolve(event);
                    self.touched
                        .extend(TableRow::guid_of(event).map(|guid| (*seq, guid)));
                }
                self.usage.extend(
                    usage
                        .into_iter()
                        .map(|(seq, at)| (seq, at.timestamp_micros())),
                );
                self.audit.extend_keys(audit.iter().map(AuditPosting::key));
                let behind = meta.head.saturating_sub(self.meta.head);
                self.config
                    .metrics
                    .follower_lag
                    .set(i64::try_from(behind).unwrap_or(i64::MAX));
                self.meta = meta;
                self.follow_failing = false;
                self.config.metrics.positions(&self.meta);
                self.publish_view();
            }
            Ok(tally_store::Followed::Reload) => {
                tracing::info!("another node purged or truncated the log; reading it again");
                self.reload();
                self.touched = std::mem::take(&mut self.dirty)
                    .into_iter()
                    .map(|g| (self.meta.head, g))
                    .collect();
            }
            Err(error) => {
                if !self.follow_failing {
                    tracing::warn!(%error, "cannot read what other nodes appended; retrying");
                    self.follow_failing = true;
                }
                return;
            }
        }
        let checkpoint = self.meta.checkpoint;
        self.touched.retain(|(seq, _)| *seq > checkpoint);
    }

    /// Gives the lease up on shutdown, so another node takes over at once.
    fn resign(&mut self) {
        if let Role::Writer { .. } = self.role {
            if let Err(error) = self.store.resign() {
                tracing::warn!(%error, "cannot give the lease up; another node takes over when it runs out");
            }
        }
    }

    fn commit_commands(&mut self, pending: Vec<(Envelope, Reply)>) {
        if pending.is_empty() {
            return;
        }
        let before = self.state.clone();
        let now = self.now();
        let mut records: Vec<(Seq, Event)> = Vec::new();
        let mut accepted: Vec<(std::ops::Range<usize>, Reply)> = Vec::new();
        let mut touched = Vec::new();
        for (envelope, reply) in pending {
            let mut inputs = Inputs {
                now,
                ids: self.ids.as_mut(),
                actor: &envelope.actor,
                config: &self.config.domain,
                principal: envelope.principal.as_ref(),
                epoch_started_at: self.meta.epoch_started_at,
            };
            match decide(&self.state, &envelope.command, &mut inputs) {
                Ok(events) => {
                    let start = records.len();
                    for mut event in events {
                        self.state.evolve(&event);
                        touched.extend(TableRow::guid_of(&event));
                        let seq = self.meta.head + 1 + records.len() as u64;
                        // Usage and audit events get their guid at commit, from their position.
                        match &mut event {
                            Event::UsageRecorded(u) => {
                                u.guid = event_guid(seq, self.ids.next_guid())
                            }
                            Event::AuditRecorded(a) => {
                                a.guid = event_guid(seq, self.ids.next_guid())
                            }
                            _ => {}
                        }
                        records.push((seq, event));
                    }
                    accepted.push((start..records.len(), reply));
                }
                Err(error) => {
                    let _ = reply.send(Err(EngineError::Domain(error)));
                }
            }
        }
        if records.is_empty() {
            // Every accepted command was a no-op (a role already held, say): nothing to write,
            // and everything it saw is already durable.
            for (_, reply) in accepted {
                let _ = reply.send(Ok(Committed {
                    records: Vec::new(),
                    head: self.meta.head,
                }));
            }
            return;
        }
        let mut meta = self.meta.clone();
        meta.head += records.len() as u64;
        self.dirty.extend(touched);
        if self.round.is_none() && meta.head - meta.checkpoint >= self.checkpoint_interval() {
            // Rows are grouped by table bucket, so no bucket is written twice in a round.
            let mut buckets: std::collections::BTreeMap<u16, Vec<Guid>> =
                std::collections::BTreeMap::new();
            for guid in std::mem::take(&mut self.dirty) {
                buckets.entry(table_bucket(guid)).or_default().push(guid);
            }
            let dirty = buckets.into_values().collect();
            self.round = Some(CheckpointRound {
                start: meta.head,
                dirty,
                next: 0,
            });
        }
        let (checkpoint, slice_end) = self.checkpoint_slice(&mut meta, CHECKPOINT_SLICE);
        self.config.metrics.batch_size.observe(records.len() as f64);
        let commit = Commit {
            records,
            meta: meta.clone(),
            checkpoint,
            snapshot: None,
        };
        match self.write(&commit) {
            Ok(()) => {
                self.config
                    .metrics
                    .appends
                    .with_label_values(&["state_change"])
                    .inc_by(commit.records.len() as u64);
                // The head gauge says what is durable: set only once the commit is.
                self.config
                    .metrics
                    .head
                    .set(i64::try_from(meta.head).unwrap_or(i64::MAX));
                self.meta = meta;
                self.advance_round(slice_end);
                for (seq, event) in &commit.records {
                    if let Event::UsageRecorded(u) = event {
                        self.usage
                            .push_back((*seq, u.created_at.timestamp_micros()));
                    }
                }
                self.audit.extend(
                    commit
                        .records
                        .iter()
                        .filter_map(|(seq, event)| match event {
                            Event::AuditRecorded(a) => Some((*seq, a)),
                            _ => None,
                        }),
                );
                self.publish_view();
                let head = self.meta.head;
                let mut records = commit.records;
                // Answer in reverse so each caller's records can be split off without copying.
                for (range, reply) in accepted.into_iter().rev() {
                    let mine = records.split_off(range.start);
                    let _ = reply.send(Ok(Committed {
                        records: mine,
                        head,
                    }));
                }
            }
            Err(error) => {
                let message = EngineError::from(error.clone());
                for (_, reply) in accepted {
                    let _ = reply.send(Err(message.clone()));
                }
                self.state = before;
                self.write_failed(&error, "group commit (nothing of it is acknowledged)");
            }
        }
    }

    /// A write the log refused: logged once per outage (then every 30 s while it lasts, see
    /// [`Outage`]), and the log re-read, as the store's contract says.
    fn write_failed(&mut self, error: &tally_store::StoreError, what: &'static str) {
        let logged = self.writes_failing.failed();
        if let Some(unlogged) = logged {
            tracing::error!(
                %error,
                write = what,
                failed_since_last_line = unlogged,
                "the log refused a write (logged again every 30 s while writes fail)"
            );
        }
        self.reload_logging(logged.is_some());
    }

    /// After a failed write: the store's contract says to re-read what it holds.
    fn reload(&mut self) {
        self.reload_logging(true);
    }

    /// [`Self::reload`], saying why it could not only when `loud` (not on every failed write
    /// of an outage).
    fn reload_logging(&mut self, loud: bool) {
        match self.store.recover() {
            Ok(recovered) => {
                self.state = recovered.state;
                self.meta = recovered.meta;
                self.config.metrics.positions(&self.meta);
                self.dirty.extend(recovered.touched);
                let mut usage = UsageIndex::new();
                match self.store.each_usage_position(
                    self.meta.usage_floor,
                    self.meta.head,
                    &mut |seq, at| usage.push_back((seq, at.timestamp_micros())),
                ) {
                    Ok(()) => self.usage = usage,
                    Err(error) => {
                        if loud {
                            tracing::error!(%error, "cannot re-read the usage index after a failed write");
                        }
                    }
                }
                // A failed write may still have reached the store: index what it holds.
                if let Err(error) = self.audit.catch_up(self.store.as_ref(), self.meta.head) {
                    if loud {
                        tracing::error!(%error, "cannot re-read the audit index after a failed write");
                    }
                }
                match self.store.reseed_index(self.meta.epoch) {
                    Ok(index) => self.reseeded = Arc::new(ReseedIndex::new(index)),
                    Err(error) => {
                        if loud {
                            tracing::error!(%error, "cannot re-read the reseed index after a failed write");
                        }
                    }
                }
                self.publish_view();
            }
            Err(error) if loud => {
                tracing::error!(%error, "cannot re-read the log after a failed write")
            }
            Err(_) => {}
        }
        if std::mem::take(&mut self.fenced) {
            // Another node took the lease: this one follows it from here.
            self.take_lead();
        }
    }

    /// Records between checkpoint rounds: `checkpoint_every`, or twice the table's rows when
    /// that is more. A round rewrites every bucket a change touched (with many changes, the
    /// whole table), so this keeps what checkpoints cost per record at most about half a row,
    /// however large the table grows; start-up replays at most about this many records.
    fn checkpoint_interval(&self) -> u64 {
        let rows = self.state.app_count() + self.state.membership_count();
        self.config
            .checkpoint_every
            .max(2u64.saturating_mul(rows as u64))
    }

    /// The next slice of the checkpoint round, if one runs: the table now, and the rows of up to
    /// `rows` of the round's buckets. When the slice is the round's last, `meta.checkpoint` moves to the
    /// round's start. Rows written after the start may be newer than it; that is fine, because
    /// entity events carry whole rows and replaying everything after the start converges.
    fn checkpoint_slice(&self, meta: &mut Meta, rows: usize) -> (Option<Checkpoint>, usize) {
        let Some(round) = &self.round else {
            return (None, 0);
        };
        let end = (round.next + rows).min(round.dirty.len());
        if end == round.dirty.len() {
            meta.checkpoint = round.start;
        }
        let dirty = round.dirty[round.next..end]
            .iter()
            .flatten()
            .copied()
            .collect();
        (
            Some(Checkpoint {
                state: self.state.clone(),
                dirty,
            }),
            end,
        )
    }

    /// After a commit that carried a checkpoint slice ending at `end`.
    fn advance_round(&mut self, end: usize) {
        if let Some(round) = &mut self.round {
            round.next = end;
            if end == round.dirty.len() {
                self.round = None;
            }
        }
    }

    /// Writes checkpoint slices while the writer is idle.
    fn checkpoint_step(&mut self) {
        let mut meta = self.meta.clone();
        let (checkpoint, end) = self.checkpoint_slice(&mut meta, CHECKPOINT_SLICE * 32);
        let commit = Commit {
            records: Vec::new(),
            meta: meta.clone(),
            checkpoint,
            snapshot: None,
        };
        match self.write(&commit) {
            Ok(()) => {
                self.meta = meta;
                self.advance_round(end);
            }
            Err(error) => self.write_failed(&error, "checkpoint step (tried again later)"),
        }
    }

    /// Purge-and-reseed at log position P = head + 1, in one commit: the reseeded STARTED
    /// events and the new epoch, with the usage floor at P. Truncating the entity log (which
    /// needs a base snapshot of the table) then runs in the background.
    fn purge(&mut self) -> Result<Purged, EngineError> {
        let now = self.now();
        let seeded = reseed(&self.state, now);
        let first_seq = self.meta.head + 1;
        let records: Vec<(Seq, Event)> = seeded
            .into_iter()
            .enumerate()
            .map(|(i, event)| (first_seq + i as u64, Event::UsageRecorded(event)))
            .collect();
        let count = records.len();
        let meta = Meta {
            head: self.meta.head + count as u64,
            epoch: self.meta.epoch + 1,
            epoch_started_at: Some(now),
            usage_floor: first_seq,
            reseeded: count as u64,
            ..self.meta.clone()
        };
        let index = ReseedIndex::new(
            records
                .iter()
                .filter_map(|(seq, event)| match event {
                    Event::UsageRecorded(u) => Some((u.guid, *seq)),
                    _ => None,
                })
                .collect(),
        );
        let usage: UsageIndex = records
            .iter()
            .filter_map(|(seq, event)| match event {
                Event::UsageRecorded(u) => Some((*seq, u.created_at.timestamp_micros())),
                _ => None,
            })
            .collect();
        let commit = Commit {
            records,
            meta: meta.clone(),
            checkpoint: None,
            snapshot: None,
        };
        match self.write(&commit) {
            Ok(()) => {
                self.meta = meta;
                self.reseeded = Arc::new(index);
                self.usage = usage;
                let metrics = &self.config.metrics;
                metrics
                    .appends
                    .with_label_values(&["reseed"])
                    .inc_by(count as u64);
                metrics.purges.inc();
                metrics
                    .purge_last
                    .set(now.timestamp_micros() as f64 / 1_000_000.0);
                metrics
                    .purge_seeded
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
                self.compaction_pending = true;
                self.publish_view();
                self.start_truncation();
                tracing::info!(
                    epoch = self.meta.epoch,
                    seeded = count,
                    first_seq,
                    "usage events purged and reseeded"
                );
                Ok(Purged {
                    epoch: self.meta.epoch,
                    started_at: now,
                    first_seq,
                    seeded: count,
                })
            }
            Err(error) => {
                self.write_failed(&error, "purge-and-reseed (the old epoch stays)");
                Err(error.into())
            }
        }
    }

    /// On shutdown: an exact checkpoint at the head, of every row changed since the last one.
    fn final_checkpoint(&mut self) {
        let mut dirty = self.dirty.clone();
        if let Some(round) = &self.round {
            dirty.extend(round.dirty[round.next..].iter().flatten().copied());
        }
        if self.abandoned || dirty.is_empty() && self.meta.checkpoint == self.meta.head {
            return;
        }
        let mut meta = self.meta.clone();
        meta.checkpoint = meta.head;
        let checkpoint = Checkpoint {
            state: self.state.clone(),
            dirty: dirty.into_iter().collect(),
        };
        let commit = Commit {
            records: Vec::new(),
            meta: meta.clone(),
            checkpoint: Some(checkpoint),
            snapshot: None,
        };
        match self.write(&commit) {
            Ok(()) => {
                self.meta = meta;
                self.dirty.clear();
                self.round = None;
            }
            Err(error) => {
                tracing::warn!(%error, "final checkpoint failed; start-up will replay the tail")
            }
        }
    }

    /// Starts truncating the entity log at head + 1, with the table now as its base snapshot
    /// (an O(1) clone). Replaces a truncation in progress.
    fn start_truncation(&mut self) {
        self.truncation = Some(Truncation {
            log_start: self.meta.head + 1,
            base: self.state.clone(),
            next_chunk: 0,
        });
    }

    /// Writes up to `chunks` chunks of the base snapshot; the commit with the last chunk moves
    /// `log_start` (design.md invariant 6: the table as of that point is persisted with it).
    fn truncation_step(&mut self, chunks: u32) {
        self.groups_since_truncation_step = 0;
        let Some(truncation) = &self.truncation else {
            return;
        };
        let end = (truncation.next_chunk + chunks).min(SNAPSHOT_CHUNKS);
        let mut meta = self.meta.clone();
        if end == SNAPSHOT_CHUNKS {
            meta.log_start = truncation.log_start;
        }
        let snapshot = SnapshotPart {
            log_start: truncation.log_start,
            state: truncation.base.clone(),
            chunks: truncation.next_chunk..end,
        };
        let commit = Commit {
            records: Vec::new(),
            meta: meta.clone(),
            checkpoint: None,
            snapshot: Some(snapshot),
        };
        match self.write(&commit) {
            Ok(()) if end == SNAPSHOT_CHUNKS => {
                self.meta = meta;
                self.truncation = None;
                self.compaction_pending = true;
                self.publish_view();
                tracing::info!(log_start = self.meta.log_start, "entity log truncated");
            }
            Ok(()) => {
                if let Some(truncation) = &mut self.truncation {
                    truncation.next_chunk = end;
                }
            }
            // Tried again later; nothing depends on the truncation.
            Err(error) => self.write_failed(&error, "log truncation step (tried again later)"),
        }
    }

    /// Whether an export is reading the store: compaction waits, so every key the export's
    /// meta reaches stays until it ends (compaction resumes after the next request).
    fn exporting(&self) -> bool {
        self.signals
            .exports
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    }

    fn compact_step(&mut self) {
        if self.exporting() {
            return;
        }
        match self.store.compact(self.config.compact_budget) {
            Ok(0) => self.compaction_pending = false,
            Ok(deleted) => tracing::debug!(deleted, "compacted unreachable keys"),
            Err(error) => {
                tracing::warn!(%error, "compaction failed; will retry after the next commit");
                self.compaction_pending = false;
            }
        }
    }

    /// Every store write goes through here: timed, counted, and remembered for readiness.
    fn write(&mut self, commit: &Commit) -> Result<(), tally_store::StoreError> {
        let started = std::time::Instant::now();
        let written = self.store.commit(commit);
        let metrics = &self.config.metrics;
        metrics
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        match &written {
            Ok(()) => {
                metrics.commits.inc();
                metrics.positions(&commit.meta);
                if let Some(unlogged) = self.writes_failing.ended() {
                    tracing::info!(
                        failed_since_last_line = unlogged,
                        "the log takes writes again"
                    );
                }
            }
            Err(error) => {
                metrics.commit_failures.inc();
                self.fenced |= matches!(error, tally_store::StoreError::Fenced(_));
            }
        }
        self.signals
            .writable
            .store(written.is_ok(), std::sync::atomic::Ordering::Relaxed);
        written
    }

    /// Readiness: proves the log takes an fsynced write now, by rewriting the meta as it is.
    fn probe(&mut self) -> Result<(), EngineError> {
        let commit = Commit {
            records: Vec::new(),
            meta: self.meta.clone(),
            checkpoint: None,
            snapshot: None,
        };
        match self.write(&commit) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.write_failed(&error, "readiness probe");
                Err(error.into())
            }
        }
    }

    fn publish_view(&self) {
        self.publish.send_replace(Arc::new(View {
            state: self.state.clone(),
            meta: self.meta.clone(),
            reseeded: self.reseeded.clone(),
            usage: self.usage.clone(),
            audit: self.audit.clone(),
        }));
    }
}

/// Snapshot chunks written per idle step, and group commits between steps under load.
const IDLE_TRUNCATION_CHUNKS: u32 = 8;
const BUSY_TRUNCATION_EVERY: u32 = 16;

/// A log truncation in progress.
struct Truncation {
    /// Where the log will start.
    log_start: Seq,
    /// The table as of `log_start - 1`.
    base: State,
    /// The next chunk of its snapshot to write.
    next_chunk: u32,
}

/// Table buckets written per group commit while a checkpoint round runs (32 times that when
/// idle): few, so a round adds little to any one commit.
const CHECKPOINT_SLICE: usize = 4;

/// A table checkpoint in progress.
struct CheckpointRound {
    /// The head when it started: once every row below is written, the checkpoint moves here.
    start: Seq,
    /// The rows changed up to `start`, grouped by table bucket.
    dirty: Vec<Vec<Guid>>,
    /// How many of the buckets are written.
    next: usize,
}
