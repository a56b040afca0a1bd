//! The read side of the usage stream: the in-memory index of the current epoch's events, how a
//! list query selects and orders them, and which events retention may remove.
//!
//! The index holds one `(seq, created_at)` pair per reachable usage event, in sequence order.
//! Each published [`View`](crate::View) carries its own snapshot of it (a persistent vector, so
//! the snapshot costs nothing), exactly up to the view's durable head. Counting a query's
//! results is then a binary search, not a scan of the log.

use std::collections::{HashMap, HashSet};

use tally_domain::model::ProcessState;
use tally_domain::{event_guid_seq, Guid, Seq, State, Timestamp, UsageEvent, UsageState};

/// The reseeded events of the current epoch as `(guid, seq)`, sorted by guid (their guids are
/// process guids, so they cannot be found from the guid alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReseedIndex(Vec<(Guid, Seq)>);

impl ReseedIndex {
    /// From entries in any order.
    pub fn new(mut entries: Vec<(Guid, Seq)>) -> Self {
        entries.sort_unstable();
        Self(entries)
    }

    /// The position of the reseeded event with this guid.
    pub fn get(&self, guid: &Guid) -> Option<Seq> {
        self.0
            .binary_search_by_key(guid, |(g, _)| *g)
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, seq)| *seq)
    }

    /// Every entry, by guid.
    pub fn iter(&self) -> impl Iterator<Item = &(Guid, Seq)> {
        self.0.iter()
    }

    /// How many events were reseeded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The reachable usage events of the current epoch: `(seq, created_at in µs)`, by seq.
pub type UsageIndex = imbl::Vector<(Seq, i64)>;

/// A v2 or v3 usage-event list request, after its cursor was resolved.
pub struct UsageQuery<'a> {
    /// Only events after this position (`after_guid`).
    pub after: Option<Seq>,
    /// Only these events (v3 `guids`).
    pub guids: Option<&'a [Guid]>,
    /// Only events whose `created_at` passes (v3 `created_ats`).
    pub created: Option<&'a (dyn Fn(Timestamp) -> bool + Sync)>,
    /// Order by `created_at` then guid (v3 `order_by`) instead of by position.
    pub by_created_at: bool,
    /// Newest first.
    pub descending: bool,
    /// Results to skip (`(page - 1) * per_page`).
    pub offset: u64,
    /// Page size.
    pub limit: usize,
}

/// Which events a query selects: how many, and the positions (indexes into the usage index)
/// of the requested page, in the order they are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Events the query selects in all.
    pub total: u64,
    /// The page: positions in the index, in display order.
    pub page: Vec<usize>,
}

fn micros_time(us: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Where the event at `seq` sits in the index, if it is there.
pub fn position(index: &UsageIndex, seq: Seq) -> Option<usize> {
    index.binary_search_by_key(&seq, |(s, _)| *s).ok()
}

/// Few positions are removed one by one (a search and a removal each, both logarithmic); more
/// than this, in one pass over the index.
const FORGET_ONE_BY_ONE: usize = 4096;

/// Drops these positions (pruned events) from the index; positions it does not list are
/// ignored.
pub fn forget(index: &mut UsageIndex, seqs: &[Seq]) {
    if seqs.len() <= FORGET_ONE_BY_ONE {
        for &seq in seqs {
            if let Some(at) = position(index, seq) {
                index.remove(at);
            }
        }
    } else {
        let gone: std::collections::HashSet<Seq> = seqs.iter().copied().collect();
        index.retain(|(seq, _)| !gone.contains(seq));
    }
}

/// Selects a page. Timestamps never go backwards in the log and every commit after a purge is
/// later than it, so `created_at` order is position order, except inside the reseeded block
/// that opens an epoch: its events share one timestamp and are ordered by guid, as CC's
/// secondary key orders them.
pub fn select(
    index: &UsageIndex,
    reseeded: &ReseedIndex,
    reseed_end: Seq,
    query: &UsageQuery<'_>,
) -> Selection {
    let len = index.len();
    let start = match query.after {
        Some(after) => {
            index.binary_search_by(|(s, _)| s.cmp(&after).then(std::cmp::Ordering::Less))
        }
        None => Ok(0),
    };
    let start = start.unwrap_or_else(|i| i);
    let filtered = query.guids.is_some() || query.created.is_some();
    let passes = |i: usize| -> bool {
        index.get(i).is_some_and(|(_, us)| {
            query
                .created
                .is_none_or(|created| created(micros_time(*us)))
        })
    };
    // Positions selected, ascending, when filters make them sparse.
    let sparse: Option<Vec<usize>> = if let Some(guids) = query.guids {
        let mut positions: Vec<usize> = guids
            .iter()
            .filter_map(|g| reseeded.get(g).or_else(|| event_guid_seq(*g)))
            .filter_map(|seq| position(index, seq))
            .filter(|i| *i >= start && passes(*i))
            .collect();
        positions.sort_unstable();
        positions.dedup();
        Some(positions)
    } else if filtered {
        Some((start..len).filter(|i| passes(*i)).collect())
    } else {
        None
    };
    let total = sparse.as_ref().map_or(len - start.min(len), Vec::len);
    // Reseeded events sit at the front of the index (positions below `reseed_end`).
    let reseed_positions =
        index.binary_search_by(|(s, _)| s.cmp(&reseed_end).then(std::cmp::Ordering::Greater));
    let reseed_positions = reseed_positions.unwrap_or_else(|i| i);
    let reorder = query.by_created_at && reseed_positions > start && total > 1;
    let offset = usize::try_from(query.offset).unwrap_or(usize::MAX);
    let page = if reorder || sparse.is_some() {
        let mut order: Vec<usize> = match &sparse {
            Some(positions) => positions.clone(),
            None => (start..len).collect(),
        };
        if reorder {
            let selected: HashSet<usize> = order
                .iter()
                .copied()
                .take_while(|i| *i < reseed_positions)
                .collect();
            let by_guid: Vec<usize> = reseeded
                .iter()
                .filter_map(|(_, seq)| position(index, *seq))
                .filter(|i| selected.contains(i))
                .collect();
            order.splice(..selected.len(), by_guid);
        }
        if query.descending {
            order.reverse();
        }
        order.into_iter().skip(offset).take(query.limit).collect()
    } else if query.descending {
        let end = len.saturating_sub(offset);
        (start.max(end.saturating_sub(query.limit))..end)
            .rev()
            .collect()
    } else {
        let first = start.saturating_add(offset).min(len);
        (first..first.saturating_add(query.limit).min(len)).collect()
    };
    Selection {
        total: total as u64,
        page,
    }
}

/// Which events retention removes (reference §4.5, improved): every event written before
/// `cutoff`, except the newest event of the epoch and, for every process that is started in
/// `state`, its latest STARTED event, so a long-running app never loses its start.
///
/// `events` are every reachable usage event, in order (as far as the caller read them);
/// `index` is the usage index they belong to.
pub fn prunable(
    index: &UsageIndex,
    events: impl IntoIterator<Item = (Seq, UsageEvent)>,
    state: &State,
    cutoff: Timestamp,
) -> Vec<Seq> {
    let cutoff_us = cutoff.timestamp_micros();
    let old =
        index.binary_search_by(|(_, us)| us.cmp(&cutoff_us).then(std::cmp::Ordering::Greater));
    let old = old.unwrap_or_else(|i| i);
    let Some(&(newest, _)) = index.last() else {
        return Vec::new();
    };
    let mut latest_start: HashMap<Guid, Seq> = HashMap::new();
    for (seq, event) in events {
        if event.state == UsageState::Started {
            if let Ok(process) = event.app_guid.parse::<Guid>() {
                latest_start.insert(process, seq);
            }
        }
    }
    let keep: HashSet<Seq> = latest_start
        .into_iter()
        .filter(|(process, _)| {
            state
                .app(*process)
                .is_some_and(|app| app.state == ProcessState::Started)
        })
        .map(|(_, seq)| seq)
        .chain([newest])
        .collect();
    index
        .iter()
        .take(old)
        .map(|(seq, _)| *seq)
        .filter(|seq| !keep.contains(seq))
        .collect()
}
