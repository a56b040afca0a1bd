//! The read side of the audit stream: an in-memory index of every audit event by type, target
//! (actee), space, organization and time, so a filtered page costs the page, not the log.
//!
//! The index is append-only and shared by every [`View`](crate::View): the writer appends a
//! commit's audit events after its fsync and before it publishes the view, and each reader looks
//! only at positions up to its view's head, so it never sees more than its view. Audit events are
//! never pruned or purged, so nothing is ever taken out.
//!
//! Memory: one `(seq, created_at)` pair per event and its place (a `u32`) in each of four
//! posting lists (about 32 bytes an event), plus a key per distinct type, target, space and org.

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use tally_domain::audit::AuditEvent;
use tally_domain::{Guid, Seq};
use tally_store::{AuditKey, LogStore, StoreError};

/// A field of an audit event the index answers filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditField {
    /// `type`.
    Type,
    /// `actee` / `target_guids`.
    Actee,
    /// `space_guid` (text: the guid, or empty when the event has no space).
    Space,
    /// `organization_guid` (text: the guid, or empty).
    Org,
}

/// How a field's value (as text) must look.
pub enum Match {
    /// Equal to one of these.
    AnyOf(Vec<String>),
    /// Passing this test (a relation such as v2's `type>=x`): the index tries every distinct
    /// value of the field.
    Where(Box<dyn Fn(&str) -> bool + Send + Sync>),
}

impl std::fmt::Debug for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AnyOf(values) => f.debug_tuple("AnyOf").field(values).finish(),
            Self::Where(_) => f.write_str("Where(..)"),
        }
    }
}

/// An inclusive span of `created_at`, in microseconds; `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSpan {
    /// From (inclusive).
    pub from: Option<i64>,
    /// To (inclusive).
    pub to: Option<i64>,
}

/// One condition of an audit-event list; a query's conditions are ANDed.
#[derive(Debug)]
pub enum AuditCondition {
    /// A field's value matches.
    Field(AuditField, Match),
    /// The target is none of these (v3 `target_guids[not]`).
    NotActee(Vec<String>),
    /// The event is at one of these positions (v3 `guids`, already checked against the log).
    Seqs(Vec<Seq>),
    /// `created_at` lies in one of these spans.
    Time(Vec<TimeSpan>),
}

/// What an audit-event list asks for.
#[derive(Debug, Default)]
pub struct AuditQuery {
    /// ANDed.
    pub conditions: Vec<AuditCondition>,
    /// Only events of these spaces or orgs (`None`: every event).
    pub within: Option<BTreeSet<Guid>>,
}

impl AuditQuery {
    /// A query with no conditions yet, showing what `visible` lets the caller see.
    pub fn showing(visible: tally_domain::access::Visible) -> Self {
        use tally_domain::access::Visible;
        Self {
            conditions: Vec::new(),
            within: match visible {
                Visible::All => None,
                Visible::Nothing => Some(BTreeSet::new()),
                Visible::Within(set) => Some(set),
            },
        }
    }
}

/// The page to cut from the selected events (in log order, or reversed).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Results to skip.
    pub offset: u64,
    /// Results to return at most.
    pub limit: u64,
    /// Newest first.
    pub descending: bool,
}

/// Lists of at least this many positions (512 KiB) are not shrunk (see [`AuditIndex::shrink`]).
const SHRINK_BELOW: usize = 64 * 1024;

/// The index. Shared (`Arc`) by the writer and every view.
#[derive(Debug, Default)]
pub struct AuditIndex {
    inner: RwLock<Postings>,
}

/// An event's place among the audit events (its index in [`Postings::all`]). The posting
/// lists hold these rather than sequence numbers: half the size, in the same order.
type Nth = u32;

#[derive(Debug, Default)]
struct Postings {
    /// `(seq, created_at µs)` of every audit event, in log order (times never decrease).
    all: Vec<(Seq, i64)>,
    by_type: HashMap<String, Vec<Nth>>,
    by_actee: HashMap<String, Vec<Nth>>,
    by_space: HashMap<Option<Guid>, Vec<Nth>>,
    by_org: HashMap<Option<Guid>, Vec<Nth>>,
}

impl Postings {
    fn push(&mut self, key: AuditKey<'_>) {
        let seq = key.seq;
        if self.all.last().is_some_and(|(last, _)| *last >= seq) {
            return; // already indexed (a catch-up after a failed write re-reads the tail)
        }
        // 2^32 events would take 64 GiB for `all` alone before this could refuse one.
        let Ok(nth) = Nth::try_from(self.all.len()) else {
            return;
        };
        self.all.push((seq, key.created_at_micros));
        push_to(&mut self.by_type, key.event_type, nth);
        push_to(&mut self.by_actee, key.actee, nth);
        self.by_space.entry(key.space_guid).or_default().push(nth);
        self.by_org
            .entry(key.organization_guid)
            .or_default()
            .push(nth);
    }

    /// Adds the events of `later` after the last one indexed (those at or before it are
    /// already here).
    fn append(&mut self, later: Postings) {
        let last = self.all.last().map_or(0, |(seq, _)| *seq);
        if last == 0 {
            *self = later;
            return;
        }
        // `later`'s events from `at` on are new; they go after the `base` events here.
        let at = later.all.partition_point(|(seq, _)| *seq <= last);
        let (Ok(at), Ok(base)) = (Nth::try_from(at), Nth::try_from(self.all.len())) else {
            return; // (see `push`)
        };
        self.all.extend_from_slice(&later.all[at as usize..]);
        fn merge<K: std::hash::Hash + Eq>(
            into: &mut HashMap<K, Vec<Nth>>,
            from: HashMap<K, Vec<Nth>>,
            at: Nth,
            base: Nth,
        ) {
            for (key, list) in from {
                let tail = &list[list.partition_point(|nth| *nth < at)..];
                if !tail.is_empty() {
                    let into = into.entry(key).or_default();
                    into.extend(tail.iter().map(|nth| nth - at + base));
                }
            }
        }
        merge(&mut self.by_type, later.by_type, at, base);
        merge(&mut self.by_actee, later.by_actee, at, base);
        merge(&mut self.by_space, later.by_space, at, base);
        merge(&mut self.by_org, later.by_org, at, base);
    }

    /// The posting lists whose key passes `m`, for `field`.
    fn lists(&self, field: AuditField, m: &Match) -> Vec<&[Nth]> {
        fn pick<'a, K: std::hash::Hash + Eq>(
            map: &'a HashMap<K, Vec<Nth>>,
            m: &Match,
            key: impl Fn(&str) -> Option<K>,
            text: impl Fn(&K) -> String,
        ) -> Vec<&'a [Nth]> {
            match m {
                Match::AnyOf(values) => {
                    let keys: BTreeSet<&str> = values.iter().map(String::as_str).collect();
                    keys.into_iter()
                        .filter_map(|v| key(v).and_then(|k| map.get(&k)))
                        .map(Vec::as_slice)
                        .collect()
                }
                Match::Where(test) => map
                    .iter()
                    .filter(|(k, _)| test(&text(k)))
                    .map(|(_, list)| list.as_slice())
                    .collect(),
            }
        }
        let guid_key = |v: &str| -> Option<Option<Guid>> {
            if v.is_empty() {
                Some(None)
            } else {
                v.parse::<Guid>()
                    .ok()
                    .filter(|g| g.to_string() == v)
                    .map(Some)
            }
        };
        let guid_text = |k: &Option<Guid>| k.map(|g| g.to_string()).unwrap_or_default();
        match field {
            AuditField::Type => pick(&self.by_type, m, |v| Some(v.to_owned()), String::clone),
            AuditField::Actee => pick(&self.by_actee, m, |v| Some(v.to_owned()), String::clone),
            AuditField::Space => pick(&self.by_space, m, guid_key, guid_text),
            AuditField::Org => pick(&self.by_org, m, guid_key, guid_text),
        }
    }

    /// The events (ranges of places, inclusive) whose time lies in one of `spans`, among the
    /// first `n` events.
    fn time_ranges(&self, n: Nth, spans: &[TimeSpan]) -> Vec<(Nth, Nth)> {
        let all = &self.all[..n as usize];
        let place = |i: usize| Nth::try_from(i).unwrap_or(n);
        let mut ranges: Vec<(Nth, Nth)> = spans
            .iter()
            .filter_map(|span| {
                let lo = span
                    .from
                    .map_or(0, |t| place(all.partition_point(|(_, at)| *at < t)));
                let hi = span
                    .to
                    .map_or(n, |t| place(all.partition_point(|(_, at)| *at <= t)));
                (lo < hi).then(|| (lo, hi - 1))
            })
            .collect();
        ranges.sort_unstable();
        // Merge overlaps, so membership is one binary search.
        let mut merged: Vec<(Nth, Nth)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some((_, end)) if lo <= end.saturating_add(1) => *end = (*end).max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        merged
    }
}

fn push_to(map: &mut HashMap<String, Vec<Nth>>, key: &str, nth: Nth) {
    match map.get_mut(key) {
        Some(list) => list.push(nth),
        None => {
            map.insert(key.to_owned(), vec![nth]);
        }
    }
}

/// A set of events a condition allows, as the selection sees it.
enum Allowed<'a> {
    /// One posting list (sorted).
    List(&'a [Nth]),
    /// A sorted, deduplicated set built for this query (a union of lists, or given events).
    Owned(Vec<Nth>),
    /// Ranges of places (inclusive, sorted, disjoint).
    Ranges(Vec<(Nth, Nth)>),
}

impl Allowed<'_> {
    fn contains(&self, nth: Nth) -> bool {
        match self {
            Self::List(list) => list.binary_search(&nth).is_ok(),
            Self::Owned(list) => list.binary_search(&nth).is_ok(),
            Self::Ranges(ranges) => {
                let at = ranges.partition_point(|(lo, _)| *lo <= nth);
                at > 0 && ranges[at - 1].1 >= nth
            }
        }
    }

    /// How many events it allows at most (for choosing where to start).
    fn size(&self) -> usize {
        match self {
            Self::List(list) => list.len(),
            Self::Owned(list) => list.len(),
            Self::Ranges(ranges) => ranges.iter().map(|(lo, hi)| (hi - lo) as usize + 1).sum(),
        }
    }
}

fn union(lists: Vec<&[Nth]>) -> Allowed<'_> {
    match lists.as_slice() {
        [one] => Allowed::List(one),
        _ => {
            let mut all: Vec<Nth> = lists.into_iter().flatten().copied().collect();
            all.sort_unstable();
            all.dedup();
            Allowed::Owned(all)
        }
    }
}

impl AuditIndex {
    fn read(&self) -> RwLockReadGuard<'_, Postings> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds events (in log order, after every event already indexed).
    pub fn extend<'a>(&self, events: impl IntoIterator<Item = (Seq, &'a AuditEvent)>) {
        let mut postings = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        for (seq, event) in events {
            postings.push(AuditKey::of(seq, event));
        }
    }

    /// Adds keys one at a time (in log order, after every event already indexed), holding the
    /// index's lock until the returned closure is dropped: start-up's build, before any reader.
    pub fn adder(&self) -> impl FnMut(AuditKey<'_>) + '_ {
        let mut postings = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        move |key| postings.push(key)
    }

    /// Adds what the store read of events (in log order, after every event already indexed):
    /// the audit events a follower's look at the log brought.
    pub fn extend_keys<'a>(&self, keys: impl IntoIterator<Item = AuditKey<'a>>) {
        let mut postings = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            postings.push(key);
        }
    }

    /// Indexes what the store read of every audit event after the last one indexed, up to
    /// `head` (start-up, the tail after a failed write).
    /// The store is read into lists of their own, so readers of the index never wait for it;
    /// they are then appended under the lock.
    pub fn catch_up(&self, store: &dyn LogStore, head: Seq) -> Result<(), StoreError> {
        let from = self.last().saturating_add(1);
        let mut fresh = Postings::default();
        store.audit_keys(from, head, &mut |key| fresh.push(key))?;
        let mut postings = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        postings.append(fresh);
        Ok(())
    }

    /// Gives back the room the small lists grew into (after building the index at start-up,
    /// where doubling leaves up to half of each list unused). A large list keeps its room: the
    /// part it never wrote to was never given memory, and a shrunk copy would hold the whole
    /// list twice until the allocator returns the old one (about a second later).
    pub fn shrink(&self) {
        fn small(list: &mut Vec<Nth>) {
            if list.capacity() < SHRINK_BELOW {
                list.shrink_to_fit();
            }
        }
        let mut postings = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let Postings {
            all: _,
            by_type,
            by_actee,
            by_space,
            by_org,
        } = &mut *postings;
        by_type.values_mut().for_each(small);
        by_actee.values_mut().for_each(small);
        by_space.values_mut().for_each(small);
        by_org.values_mut().for_each(small);
    }

    /// The position of the newest event indexed (0 if none).
    pub fn last(&self) -> Seq {
        self.read().all.last().map_or(0, |(seq, _)| *seq)
    }

    /// How many audit events there are up to `head`.
    pub fn count(&self, head: Seq) -> usize {
        self.read().all.partition_point(|(seq, _)| *seq <= head)
    }

    /// The events up to `head` that pass `query`: how many, and the positions of the page
    /// `window` cuts from them. The cost is a binary search when at most one field condition
    /// (of one value) and at most one time span apply, and otherwise grows with the smallest
    /// set of events a condition allows (a union of values counts all of its lists).
    pub fn select(&self, head: Seq, query: &AuditQuery, window: Window) -> (u64, Vec<Seq>) {
        let postings = self.read();
        let n = postings.all.partition_point(|(seq, _)| *seq <= head);
        let all = &postings.all[..n];
        // (Fewer than 2^32 events: see `Postings::push`.)
        let n = Nth::try_from(n).unwrap_or(Nth::MAX);
        let mut allowed: Vec<Allowed<'_>> = Vec::new();
        let mut excluded: Vec<&[Nth]> = Vec::new();
        for condition in &query.conditions {
            match condition {
                AuditCondition::Field(field, m) => allowed.push(union(postings.lists(*field, m))),
                AuditCondition::NotActee(values) => excluded
                    .extend(postings.lists(AuditField::Actee, &Match::AnyOf(values.clone()))),
                AuditCondition::Seqs(seqs) => {
                    let mut places: Vec<Nth> = seqs
                        .iter()
                        .filter_map(|seq| all.binary_search_by_key(seq, |(s, _)| *s).ok())
                        .filter_map(|i| Nth::try_from(i).ok())
                        .collect();
                    places.sort_unstable();
                    places.dedup();
                    allowed.push(Allowed::Owned(places));
                }
                AuditCondition::Time(spans) => {
                    allowed.push(Allowed::Ranges(postings.time_ranges(n, spans)))
                }
            }
        }
        if let Some(within) = &query.within {
            let mut lists = Vec::new();
            for guid in within {
                lists.extend(postings.by_space.get(&Some(*guid)).map(Vec::as_slice));
                lists.extend(postings.by_org.get(&Some(*guid)).map(Vec::as_slice));
            }
            allowed.push(union(lists));
        }
        // Every event up to the head is allowed until a condition says otherwise.
        let bounded = |list: &[Nth]| list.partition_point(|nth| *nth < n);
        let (start, rest) = pick_start(allowed);
        let candidates: Candidates<'_> = match start {
            None => Candidates::Span(0, n),
            Some(Allowed::List(list)) => Candidates::Slice(&list[..bounded(list)]),
            Some(Allowed::Owned(mut list)) => {
                list.truncate(bounded(&list));
                Candidates::Owned(list)
            }
            Some(Allowed::Ranges(ranges)) if ranges.len() <= 1 => match ranges.first() {
                None => Candidates::Span(0, 0),
                Some((lo, hi)) => Candidates::Span(*lo, hi.saturating_add(1).min(n)),
            },
            Some(Allowed::Ranges(ranges)) => Candidates::Owned(
                ranges
                    .iter()
                    .flat_map(|(lo, hi)| *lo..hi.saturating_add(1).min(n))
                    .collect(),
            ),
        };
        // A contiguous run of one list needs no pass over it: only time spans trim it.
        let candidates = match (candidates, rest.as_slice(), excluded.is_empty()) {
            (Candidates::Slice(list), [Allowed::Ranges(ranges)], true) if ranges.len() <= 1 => {
                match ranges.first() {
                    None => Candidates::Slice(&[]),
                    Some((lo, hi)) => {
                        let from = list.partition_point(|nth| nth < lo);
                        let to = list.partition_point(|nth| nth <= hi);
                        Candidates::Slice(&list[from..to])
                    }
                }
            }
            (candidates, [], true) => candidates,
            (candidates, rest, _) => Candidates::Owned(
                candidates
                    .iter()
                    .filter(|nth| rest.iter().all(|a| a.contains(*nth)))
                    .filter(|nth| !excluded.iter().any(|l| l.binary_search(nth).is_ok()))
                    .collect(),
            ),
        };
        let total = candidates.len();
        let offset = usize::try_from(window.offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(window.limit).unwrap_or(usize::MAX);
        let page: Vec<Seq> = if window.descending {
            let end = total.saturating_sub(offset);
            let begin = end.saturating_sub(limit);
            let mut page = candidates.range(begin, end, all);
            page.reverse();
            page
        } else {
            let begin = offset.min(total);
            candidates.range(begin, begin.saturating_add(limit).min(total), all)
        };
        (total as u64, page)
    }
}

/// The condition with the fewest events, to walk; the others are tested per event.
fn pick_start(mut allowed: Vec<Allowed<'_>>) -> (Option<Allowed<'_>>, Vec<Allowed<'_>>) {
    let smallest = allowed
        .iter()
        .enumerate()
        .min_by_key(|(_, a)| a.size())
        .map(|(i, _)| i);
    match smallest {
        Some(i) => {
            let start = allowed.swap_remove(i);
            (Some(start), allowed)
        }
        None => (None, allowed),
    }
}

/// The events that passed so far.
enum Candidates<'a> {
    /// Every event in `from..to`.
    Span(Nth, Nth),
    Slice(&'a [Nth]),
    Owned(Vec<Nth>),
}

impl Candidates<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Span(from, to) => to.saturating_sub(*from) as usize,
            Self::Slice(list) => list.len(),
            Self::Owned(list) => list.len(),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = Nth> + '_> {
        match self {
            Self::Span(from, to) => Box::new(*from..*to),
            Self::Slice(list) => Box::new(list.iter().copied()),
            Self::Owned(list) => Box::new(list.iter().copied()),
        }
    }

    /// The sequence numbers of the candidates from `begin` to `end`.
    fn range(&self, begin: usize, end: usize, all: &[(Seq, i64)]) -> Vec<Seq> {
        let seq = |nth: Nth| all.get(nth as usize).map(|(seq, _)| *seq);
        match self {
            Self::Span(from, _) => all[*from as usize + begin..*from as usize + end]
                .iter()
                .map(|(s, _)| *s)
                .collect(),
            Self::Slice(list) => list[begin..end].iter().filter_map(|n| seq(*n)).collect(),
            Self::Owned(list) => list[begin..end].iter().filter_map(|n| seq(*n)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tally_domain::audit::Actor;

    const TYPES: [&str; 3] = ["audit.app.create", "audit.app.update", "audit.space.create"];
    const ACTEES: [&str; 4] = ["a", "b", "c", "user-1"];

    fn guid(n: u8) -> Guid {
        Guid::from_u128(u128::from(n) + 1)
    }

    /// `(seq gap, same commit as the previous, type, actee, space, org)`.
    type Spec = (u64, bool, usize, usize, Option<u8>, Option<u8>);

    fn events(specs: &[Spec]) -> Vec<(Seq, AuditEvent)> {
        let mut seq = 0;
        let mut at = 1_000_000_000_i64;
        specs
            .iter()
            .map(|&(gap, same_commit, t, a, space, org)| {
                seq += gap;
                if !same_commit {
                    at += 400_000; // several commits share a second
                }
                let event = AuditEvent {
                    guid: tally_domain::event_guid(seq, Guid::from_u128(7)),
                    created_at: chrono::DateTime::from_timestamp_micros(at).unwrap_or_default(),
                    event_type: TYPES[t].to_owned(),
                    actor: Actor::system(),
                    actee: ACTEES[a].to_owned(),
                    actee_type: "app".to_owned(),
                    actee_name: String::new(),
                    metadata: tally_domain::audit::Value::empty(),
                    space_guid: space.map(guid),
                    organization_guid: org.map(guid),
                };
                (seq, event)
            })
            .collect()
    }

    /// A condition, and the same condition as a plain test of one event.
    #[derive(Debug, Clone)]
    enum Cond {
        AnyOf(usize, Vec<String>),
        AtLeast(usize, String),
        NotActee(Vec<String>),
        Seqs(Vec<Seq>),
        Time(Vec<(Option<i64>, Option<i64>)>),
    }

    fn text(field: usize, e: &AuditEvent) -> String {
        let opt = |g: Option<Guid>| g.map(|g| g.to_string()).unwrap_or_default();
        match field {
            0 => e.event_type.clone(),
            1 => e.actee.clone(),
            2 => opt(e.space_guid),
            _ => opt(e.organization_guid),
        }
    }

    fn field(n: usize) -> AuditField {
        [
            AuditField::Type,
            AuditField::Actee,
            AuditField::Space,
            AuditField::Org,
        ][n % 4]
    }

    fn passes(c: &Cond, seq: Seq, e: &AuditEvent) -> bool {
        let at = e.created_at.timestamp_micros();
        match c {
            Cond::AnyOf(f, values) => values.contains(&text(*f, e)),
            Cond::AtLeast(f, value) => text(*f, e).as_str() >= value.as_str(),
            Cond::NotActee(values) => !values.contains(&e.actee),
            Cond::Seqs(seqs) => seqs.contains(&seq),
            Cond::Time(spans) => spans
                .iter()
                .any(|(from, to)| from.is_none_or(|f| at >= f) && to.is_none_or(|t| at <= t)),
        }
    }

    fn condition(c: &Cond) -> AuditCondition {
        match c.clone() {
            Cond::AnyOf(f, values) => AuditCondition::Field(field(f), Match::AnyOf(values)),
            Cond::AtLeast(f, value) => AuditCondition::Field(
                field(f),
                Match::Where(Box::new(move |v| v >= value.as_str())),
            ),
            Cond::NotActee(values) => AuditCondition::NotActee(values),
            Cond::Seqs(seqs) => AuditCondition::Seqs(seqs),
            Cond::Time(spans) => AuditCondition::Time(
                spans
                    .into_iter()
                    .map(|(from, to)| TimeSpan { from, to })
                    .collect(),
            ),
        }
    }

    fn value_of(field: usize) -> BoxedStrategy<String> {
        match field {
            0 => proptest::sample::select(TYPES.to_vec())
                .prop_map(str::to_owned)
                .boxed(),
            1 => proptest::sample::select(ACTEES.to_vec())
                .prop_map(str::to_owned)
                .boxed(),
            _ => prop_oneof![
                Just(String::new()),
                (0u8..4).prop_map(|n| guid(n).to_string()),
                Just("not-a-guid".to_owned()),
            ]
            .boxed(),
        }
    }

    fn cond() -> impl Strategy<Value = Cond> {
        // On the commit times, next to them, or anywhere.
        let time = || {
            proptest::option::of(prop_oneof![
                (0i64..90, -1i64..=1).prop_map(|(k, d)| 1_000_400_000 + k * 400_000 + d),
                1_000_000_000_i64..1_040_000_000,
            ])
        };
        prop_oneof![
            (0usize..4).prop_flat_map(|f| {
                proptest::collection::vec(value_of(f), 1..3).prop_map(move |v| Cond::AnyOf(f, v))
            }),
            (0usize..4).prop_flat_map(|f| value_of(f).prop_map(move |v| Cond::AtLeast(f, v))),
            proptest::collection::vec(value_of(1), 1..3).prop_map(Cond::NotActee),
            proptest::collection::vec(0u64..120, 0..6).prop_map(Cond::Seqs),
            proptest::collection::vec((time(), time()), 0..3).prop_map(Cond::Time),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the events and the query, the index selects exactly what testing every
        /// event one by one selects, counts it the same and cuts the same page.
        #[test]
        fn the_index_selects_what_filtering_every_event_selects(
            specs in proptest::collection::vec(
                (1u64..4, any::<bool>(), 0usize..3, 0usize..4,
                 proptest::option::of(0u8..3), proptest::option::of(0u8..2)),
                0..80,
            ),
            conds in proptest::collection::vec(cond(), 0..4),
            within in proptest::option::of(proptest::collection::btree_set(0u8..4, 0..3)),
            head in 0u64..130,
            offset in 0u64..40,
            limit in 1u64..30,
            descending in any::<bool>(),
            overlap in 0usize..10,
        ) {
            let events = events(&specs);
            let index = AuditIndex::default();
            // Added in steps: as commits add them, then as a catch-up after a failed write
            // adds them (read from the store again, from a few events already indexed on).
            let (early, _) = events.split_at(events.len() / 2);
            let (first, _) = early.split_at(early.len() / 2);
            index.extend(first.iter().map(|(s, e)| (*s, e)));
            index.extend(early[first.len()..].iter().map(|(s, e)| (*s, e)));
            let mut reread = Postings::default();
            for (seq, event) in &events[early.len().saturating_sub(overlap)..] {
                reread.push(AuditKey::of(*seq, event));
            }
            index.inner.write().unwrap_or_else(PoisonError::into_inner).append(reread);
            let within: Option<BTreeSet<Guid>> = within.map(|w| w.into_iter().map(guid).collect());
            let query = AuditQuery {
                conditions: conds.iter().map(condition).collect(),
                within: within.clone(),
            };
            let window = Window { offset, limit, descending };
            let (total, page) = index.select(head, &query, window);

            let mut expected: Vec<Seq> = events
                .iter()
                .filter(|(seq, _)| *seq <= head)
                .filter(|(seq, e)| conds.iter().all(|c| passes(c, *seq, e)))
                .filter(|(_, e)| within.as_ref().is_none_or(|w| {
                    e.space_guid.is_some_and(|s| w.contains(&s))
                        || e.organization_guid.is_some_and(|o| w.contains(&o))
                }))
                .map(|(seq, _)| *seq)
                .collect();
            prop_assert_eq!(total, expected.len() as u64);
            if descending {
                expected.reverse();
            }
            let expected: Vec<Seq> = expected
                .into_iter()
                .skip(offset as usize)
                .take(limit as usize)
                .collect();
            prop_assert_eq!(page, expected);
            prop_assert_eq!(index.count(head), events.iter().filter(|(s, _)| *s <= head).count());
        }
    }

    #[test]
    fn events_already_indexed_are_not_indexed_twice() {
        let events = events(&[(1, false, 0, 0, None, None), (2, false, 1, 1, None, None)]);
        let index = AuditIndex::default();
        index.extend(events.iter().map(|(s, e)| (*s, e)));
        index.extend(events.iter().map(|(s, e)| (*s, e)));
        let everything = Window {
            offset: 0,
            limit: 10,
            descending: false,
        };
        assert_eq!(
            index.select(10, &AuditQuery::default(), everything),
            (2, vec![1, 3])
        );
        assert_eq!(index.last(), 3);
    }
}
