//! How the store's values are decoded and checked: meta, blocks, table buckets, with errors that
//! name the key. Shared by the log and the backup reader.

use std::ops::ControlFlow;

use proto_schemas::v1::{BlockV1, MetaV1, RecordBodyV1, TableBucketV1};
use proto_schemas::UsageRecordV1;
use tally_domain::{Event, Seq};

use crate::backend::Backend;
use crate::keys::*;
use crate::mapping::{event_from, micros, pruned_from, row_from, time, usage_from};
use crate::{Meta, PrunedUsage, StoreError, TableRow, UsageSlot};

pub(crate) fn corrupt(position: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        position: position.into(),
        reason: reason.to_string(),
    }
}

/// Maps an encoding failure (only possible for absurd sizes) into the store's error.
pub(crate) fn encoded(
    result: Result<Vec<u8>, proto_schemas::EncodeError>,
) -> Result<Vec<u8>, StoreError> {
    result.map_err(|e| StoreError::Encode(e.to_string()))
}

pub(crate) fn meta_to(meta: &Meta) -> MetaV1 {
    MetaV1 {
        head: meta.head,
        epoch: meta.epoch,
        epoch_started_at_micros: meta.epoch_started_at.map_or(0, micros),
        log_start: meta.log_start,
        usage_floor: meta.usage_floor,
        checkpoint: meta.checkpoint,
        reseeded: meta.reseeded,
    }
}

pub(crate) fn meta_from(meta: MetaV1) -> Result<Meta, StoreError> {
    let epoch_started_at = match meta.epoch_started_at_micros {
        0 => None,
        us => Some(time(us).map_err(|e| corrupt("meta", e))?),
    };
    Ok(Meta {
        head: meta.head,
        epoch: meta.epoch,
        epoch_started_at,
        log_start: meta.log_start,
        usage_floor: meta.usage_floor,
        checkpoint: meta.checkpoint,
        reseeded: meta.reseeded,
    })
}

pub(crate) fn read_meta<B: Backend>(backend: &B) -> Result<Option<Meta>, StoreError> {
    match backend.get(META)? {
        None => Ok(None),
        Some(bytes) => {
            let meta: MetaV1 = proto_schemas::open(&bytes).map_err(|e| corrupt("meta", e))?;
            meta_from(meta).map(Some)
        }
    }
}

/// Decodes the raw block stored under `key`.
pub(crate) fn open_block(
    prefix: u8,
    key: &[u8],
    value: &[u8],
) -> Result<(Seq, BlockV1), StoreError> {
    let first = seq_of(key).ok_or_else(|| {
        corrupt(
            format!("{} key {key:?}", kind_name(prefix)),
            "malformed key",
        )
    })?;
    let block: BlockV1 = proto_schemas::open(value)
        .map_err(|e| corrupt(format!("{} block at seq {first}", kind_name(prefix)), e))?;
    Ok((first, block))
}

/// The keys the indexes read of the block stored under `key` (a usage or audit block), borrowed
/// from `value` ([`proto_schemas::borrowed`]), held to the same order as [`decode_block`]:
/// non-empty, strictly increasing, starting at the key's sequence number.
pub(crate) fn block_keys<'a, T>(
    prefix: u8,
    key: &[u8],
    value: &'a [u8],
    read: fn(&'a [u8]) -> Result<Vec<T>, proto_schemas::DecodeError>,
    seq: fn(&T) -> Seq,
) -> Result<Vec<T>, StoreError> {
    let first = seq_of(key).ok_or_else(|| {
        corrupt(
            format!("{} key {key:?}", kind_name(prefix)),
            "malformed key",
        )
    })?;
    let keys = read(value)
        .map_err(|e| corrupt(format!("{} block at seq {first}", kind_name(prefix)), e))?;
    let mut previous: Option<Seq> = None;
    for k in &keys {
        let at = seq(k);
        let ordered = previous.map_or(at == first, |p| at > p);
        if !ordered {
            return Err(corrupt(
                format!("{} seq {at}", kind_name(prefix)),
                format!("out of order in the block at seq {first}"),
            ));
        }
        previous = Some(at);
    }
    if keys.is_empty() {
        return Err(corrupt(
            format!("{} block at seq {first}", kind_name(prefix)),
            "empty",
        ));
    }
    Ok(keys)
}

/// Decodes the block stored under `key`: its records must be non-empty, of the key's stream,
/// strictly increasing and start at the key's sequence number.
pub(crate) fn decode_block(
    prefix: u8,
    key: &[u8],
    value: &[u8],
) -> Result<Vec<(Seq, Entry)>, StoreError> {
    let mut out = Vec::new();
    // This visitor never breaks.
    let _ = visit_block(prefix, key, value, |seq, entry| {
        out.push((seq, entry));
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// [`decode_block`] one record at a time: each record is decoded and checked, then handed to
/// `visit`, without a vector of the block in between. When `visit` breaks, the rest of the
/// block is not decoded.
pub(crate) fn visit_block(
    prefix: u8,
    key: &[u8],
    value: &[u8],
    mut visit: impl FnMut(Seq, Entry) -> Result<ControlFlow<()>, StoreError>,
) -> Result<ControlFlow<()>, StoreError> {
    let mut order = Order::of(prefix, key)?;
    let flow = proto_schemas::visit_block(value, |record| {
        let seq = record.seq;
        order.check(seq)?;
        let kind_ok = match (&record.body, prefix) {
            (RecordBodyV1::Usage(_) | RecordBodyV1::UsagePruned(_), USAGE)
            | (RecordBodyV1::Audit(_) | RecordBodyV1::AuditTextActee(_), AUDIT) => true,
            (
                RecordBodyV1::Usage(_)
                | RecordBodyV1::UsagePruned(_)
                | RecordBodyV1::Audit(_)
                | RecordBodyV1::AuditTextActee(_),
                _,
            ) => false,
            (_, ENTITY) => true,
            _ => false,
        };
        if !kind_ok {
            return Err(order.wrong_kind(seq));
        }
        let entry = match record.body {
            RecordBodyV1::UsagePruned(p) => {
                Entry::Pruned(pruned_from(p).map_err(|e| corrupt(order.position(seq), e))?)
            }
            body => Entry::Event(event_from(body).map_err(|e| corrupt(order.position(seq), e))?),
        };
        visit(seq, entry)
    });
    order.end(flow)
}

/// [`visit_block`] for a usage block, each record decoded straight into what a usage read
/// keeps ([`proto_schemas::visit_usage_block`]), not through an [`Event`]: the same checks
/// (order, a start at the key's sequence number, non-empty, only usage records) and errors.
pub(crate) fn visit_usage_block(
    key: &[u8],
    value: &[u8],
    mut visit: impl FnMut(Seq, UsageSlot) -> Result<ControlFlow<()>, StoreError>,
) -> Result<ControlFlow<()>, StoreError> {
    let mut order = Order::of(USAGE, key)?;
    let flow = proto_schemas::visit_usage_block(value, |seq, record| {
        order.check(seq)?;
        let slot = match record {
            UsageRecordV1::Event(u) => {
                UsageSlot::Event(usage_from(u).map_err(|e| corrupt(order.position(seq), e))?)
            }
            UsageRecordV1::Pruned(p) => {
                UsageSlot::Pruned(pruned_from(p).map_err(|e| corrupt(order.position(seq), e))?)
            }
            UsageRecordV1::Other(_) => return Err(order.wrong_kind(seq)),
        };
        visit(seq, slot)
    });
    order.end(flow)
}

/// The order a block's records keep, checked as they are visited: the first at the key's
/// sequence number, each after the one before, at least one.
struct Order {
    prefix: u8,
    first: Seq,
    previous: Option<Seq>,
}

impl Order {
    fn of(prefix: u8, key: &[u8]) -> Result<Self, StoreError> {
        let first = seq_of(key).ok_or_else(|| {
            corrupt(
                format!("{} key {key:?}", kind_name(prefix)),
                "malformed key",
            )
        })?;
        Ok(Self {
            prefix,
            first,
            previous: None,
        })
    }

    fn position(&self, seq: Seq) -> String {
        format!("{} seq {seq}", kind_name(self.prefix))
    }

    fn check(&mut self, seq: Seq) -> Result<(), StoreError> {
        let ordered = match self.previous {
            None => seq == self.first,
            Some(p) => seq > p,
        };
        if !ordered {
            return Err(corrupt(
                self.position(seq),
                format!("out of order in the block at seq {}", self.first),
            ));
        }
        self.previous = Some(seq);
        Ok(())
    }

    fn wrong_kind(&self, seq: Seq) -> StoreError {
        corrupt(
            self.position(seq),
            "record of the wrong kind for its stream",
        )
    }

    /// How the visit ended: a record that did not decode names the block; an empty block is
    /// corrupt.
    fn end(
        self,
        flow: Result<ControlFlow<()>, proto_schemas::VisitError<StoreError>>,
    ) -> Result<ControlFlow<()>, StoreError> {
        let block = || format!("{} block at seq {}", kind_name(self.prefix), self.first);
        let flow = flow.map_err(|e| match e {
            proto_schemas::VisitError::Decode(e) => corrupt(block(), e),
            proto_schemas::VisitError::Visit(e) => e,
        })?;
        if self.previous.is_none() {
            return Err(corrupt(block(), "empty block"));
        }
        Ok(flow)
    }
}

pub(crate) fn decode_bucket(key: &[u8], value: &[u8]) -> Result<Vec<TableRow>, StoreError> {
    let position = || format!("table bucket {key:?}");
    let bucket: TableBucketV1 = proto_schemas::open(value).map_err(|e| corrupt(position(), e))?;
    bucket
        .rows
        .into_iter()
        .map(|row| row_from(row).map_err(|e| corrupt(position(), e)))
        .collect()
}

/// Decodes a stored meta value.
pub(crate) fn decode_meta(value: &[u8]) -> Result<Meta, StoreError> {
    let meta: MetaV1 = proto_schemas::open(value).map_err(|e| corrupt("meta", e))?;
    meta_from(meta)
}

/// One decoded record of a block: a fact, or what retention left of a usage event.
#[allow(clippy::large_enum_variant)] // short-lived values, read one at a time
pub(crate) enum Entry {
    /// A log record.
    Event(Event),
    /// A pruned usage event (usage stream only).
    Pruned(PrunedUsage),
}
