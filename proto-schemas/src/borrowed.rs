//! Borrowed reads of usage and audit blocks: what start-up's indexes need of each record
//! (position, time, and for audit events type, actee, space and org), read straight from the
//! stored bytes without allocating a string per field or parsing metadata.
//!
//! These types mirror [`crate::v1::UsageEventV1`], [`crate::v1::UsagePrunedV1`], [`crate::v1::AuditEventV1`] and
//! [`crate::v1::AuditTextActeeV1`] field for field with borrowed strings, so they decode the same
//! bytes; a test holds them to the golden fixtures and to the owned decoding of any block.

use bincode::de::BorrowDecoder;
use bincode::error::DecodeError as Bincode;
use bincode::BorrowDecode;

use crate::v1::GuidV1;
use crate::{payload, DecodeError, DECODE_CONFIG};

/// What the usage index needs of one record of a usage block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageKey {
    /// A usage event: its position and time (µs).
    Event {
        /// Position.
        seq: u64,
        /// `created_at` (µs).
        created_at: i64,
    },
    /// A usage event retention removed (it keeps its position).
    Pruned {
        /// Position.
        seq: u64,
    },
}

/// What the audit index needs of one audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditKey<'a> {
    /// Position.
    pub seq: u64,
    /// `created_at` (µs).
    pub created_at: i64,
    /// e.g. `audit.app.update`.
    pub event_type: &'a str,
    /// The actee: a guid, or (tag 13) text.
    pub actee: Actee<'a>,
    /// Space of the target.
    pub space_guid: Option<GuidV1>,
    /// Org of the target.
    pub organization_guid: Option<GuidV1>,
}

/// An audit event's actee as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actee<'a> {
    /// A guid (tag 10).
    Guid(GuidV1),
    /// An id that is not a guid (tag 13).
    Text(&'a str),
}

/// The keys of every record of a usage block (an envelope of [`crate::v1::BlockV1`] holding only
/// usage records), checked like [`crate::open`] checks it.
pub fn usage_keys(bytes: &[u8]) -> Result<Vec<UsageKey>, DecodeError> {
    let block: Block<UsageRecord> = decode(bytes)?;
    Ok(block.0.into_iter().map(|r| r.0).collect())
}

/// The keys of every record of an audit block (an envelope of [`crate::v1::BlockV1`] holding only
/// audit records), checked like [`crate::open`] checks it.
pub fn audit_keys(bytes: &[u8]) -> Result<Vec<AuditKey<'_>>, DecodeError> {
    let block: Block<AuditRecord<'_>> = decode(bytes)?;
    Ok(block.0.into_iter().map(|r| r.0).collect())
}

fn decode<'a, T: BorrowDecode<'a, ()>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let payload = payload(bytes)?;
    let (record, used) = bincode::borrow_decode_from_slice::<T, _>(payload, DECODE_CONFIG)
        .map_err(|e| DecodeError::Payload(e.to_string()))?;
    if used != payload.len() {
        return Err(DecodeError::Trailing(payload.len() - used));
    }
    Ok(record)
}

/// [`crate::v1::BlockV1`]: a length, then the records.
struct Block<R>(Vec<R>);

impl<'de, R: BorrowDecode<'de, ()>> BorrowDecode<'de, ()> for Block<R> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = ()>>(d: &mut D) -> Result<Self, Bincode> {
        Ok(Self(Vec::borrow_decode(d)?))
    }
}

/// [`crate::v1::LogRecordV1`]'s `seq`, then [`crate::v1::RecordBodyV1`]'s variant tag (a `u32`).
fn record_head<'de, D: BorrowDecoder<'de, Context = ()>>(d: &mut D) -> Result<(u64, u32), Bincode> {
    Ok((u64::borrow_decode(d)?, u32::borrow_decode(d)?))
}

fn not_of(stream: &'static str, tag: u32) -> Bincode {
    Bincode::OtherString(format!("record tag {tag} in a {stream} block"))
}

const TAG_USAGE: u32 = 9;
const TAG_AUDIT: u32 = 10;
const TAG_AUDIT_TEXT_ACTEE: u32 = 13;
const TAG_USAGE_PRUNED: u32 = 14;

struct UsageRecord(UsageKey);

impl<'de> BorrowDecode<'de, ()> for UsageRecord {
    fn borrow_decode<D: BorrowDecoder<'de, Context = ()>>(d: &mut D) -> Result<Self, Bincode> {
        let (seq, tag) = record_head(d)?;
        match tag {
            TAG_USAGE => {
                let event = UsageEventRef::borrow_decode(d)?;
                Ok(Self(UsageKey::Event {
                    seq,
                    created_at: event.created_at,
                }))
            }
            TAG_USAGE_PRUNED => {
                // [`crate::v1::UsagePrunedV1`]: guid, created_at, cutoff.
                let _ = (
                    GuidV1::borrow_decode(d)?,
                    i64::borrow_decode(d)?,
                    i64::borrow_decode(d)?,
                );
                Ok(Self(UsageKey::Pruned { seq }))
            }
            other => Err(not_of("usage", other)),
        }
    }
}

struct AuditRecord<'a>(AuditKey<'a>);

impl<'de> BorrowDecode<'de, ()> for AuditRecord<'de> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = ()>>(d: &mut D) -> Result<Self, Bincode> {
        let (seq, tag) = record_head(d)?;
        let (event, actee) = match tag {
            TAG_AUDIT => {
                let event = AuditEventRef::borrow_decode(d)?;
                let actee = Actee::Guid(event.actee);
                (event, actee)
            }
            TAG_AUDIT_TEXT_ACTEE => {
                let event = AuditEventRef::borrow_decode(d)?;
                let actee = Actee::Text(<&str>::borrow_decode(d)?);
                (event, actee)
            }
            other => return Err(not_of("audit", other)),
        };
        Ok(Self(AuditKey {
            seq,
            created_at: event.created_at,
            event_type: event.event_type,
            actee,
            space_guid: event.space_guid,
            organization_guid: event.organization_guid,
        }))
    }
}

/// [`crate::v1::UsageEventV1`], field for field.
#[allow(dead_code)] // every field is read to move past it; only `created_at` is kept
#[derive(BorrowDecode)]
struct UsageEventRef<'a> {
    guid: GuidV1,
    created_at: i64,
    state: u8,
    previous_state: Option<u8>,
    instance_count: i64,
    previous_instance_count: Option<i64>,
    memory_in_mb_per_instance: i64,
    previous_memory_in_mb_per_instance: Option<i64>,
    app_guid: &'a str,
    app_name: &'a str,
    space_guid: GuidV1,
    space_name: &'a str,
    org_guid: GuidV1,
    buildpack_guid: Option<GuidV1>,
    buildpack_name: Option<&'a str>,
    package_state: Option<&'a str>,
    previous_package_state: Option<&'a str>,
    parent_app_guid: Option<GuidV1>,
    parent_app_name: Option<&'a str>,
    process_type: Option<&'a str>,
    task_guid: Option<GuidV1>,
    task_name: Option<&'a str>,
}

/// [`crate::v1::AuditEventV1`], field for field.
#[allow(dead_code)] // every field is read to move past it
#[derive(BorrowDecode)]
struct AuditEventRef<'a> {
    guid: GuidV1,
    created_at: i64,
    event_type: &'a str,
    actor: &'a str,
    actor_type: &'a str,
    actor_name: &'a str,
    actor_username: &'a str,
    actee: GuidV1,
    actee_type: &'a str,
    actee_name: &'a str,
    metadata: &'a str,
    space_guid: Option<GuidV1>,
    organization_guid: Option<GuidV1>,
}
