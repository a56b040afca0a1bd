//! The key layout. One ordered key space; the first byte says what a key holds. Integers are
//! big-endian so that byte order is numeric order.
//!
//! | key                   | value                                                         |
//! |-----------------------|---------------------------------------------------------------|
//! | `m`                   | `MetaV1`                                                      |
//! | `l` first-seq         | `BlockV1`: the entity records of one commit                   |
//! | `u` first-seq         | `BlockV1`: the usage events of one commit                     |
//! | `a` first-seq         | `BlockV1`: the audit events of one commit                     |
//! | `t` bucket            | `TableBucketV1`: table rows whose guid starts with the bucket |
//! | `s` log-start chunk   | `SnapshotChunkV1`: the table just before `log_start`          |
//! | `r` epoch             | `ReseedIndexV1`: guid → seq of the epoch's reseeded events    |
//!
//! One group commit writes at most one block per stream, so its cost in keys does not grow
//! with the number of commands it carries (sled's cost is per key).

use tally_domain::{Guid, Seq};

pub(crate) const META: &[u8] = b"m";
pub(crate) const ENTITY: u8 = b'l';
pub(crate) const USAGE: u8 = b'u';
pub(crate) const AUDIT: u8 = b'a';
pub(crate) const TABLE: u8 = b't';
pub(crate) const SNAPSHOT: u8 = b's';
pub(crate) const RESEED_INDEX: u8 = b'r';

/// Table buckets: the top 12 bits of a guid.
pub(crate) const BUCKETS: u16 = 4096;

pub(crate) fn seq_key(prefix: u8, seq: Seq) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn bucket_of(guid: Guid) -> u16 {
    let bytes = guid.to_bytes();
    (u16::from(bytes[0]) << 4) | u16::from(bytes[1] >> 4)
}

pub(crate) fn bucket_key(bucket: u16) -> [u8; 3] {
    let [high, low] = bucket.to_be_bytes();
    [TABLE, high, low]
}

/// The guids of a bucket: `[first, next)`, `next` being `None` for the last bucket.
pub(crate) fn bucket_range(bucket: u16) -> (Guid, Option<Guid>) {
    let first = |b: u16| Guid::from_u128(u128::from(b) << 116);
    (
        first(bucket),
        (bucket + 1 < BUCKETS).then(|| first(bucket + 1)),
    )
}

pub(crate) fn reseed_index_key(epoch: u64) -> [u8; 9] {
    seq_key(RESEED_INDEX, epoch)
}

pub(crate) fn snapshot_key(log_start: Seq, chunk: u32) -> [u8; 13] {
    let mut key = [SNAPSHOT; 13];
    key[1..9].copy_from_slice(&log_start.to_be_bytes());
    key[9..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// The smallest key after every key with this prefix byte.
pub(crate) fn prefix_end(prefix: u8) -> [u8; 1] {
    [prefix + 1]
}

pub(crate) fn seq_of(key: &[u8]) -> Option<Seq> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(Seq::from_be_bytes(bytes))
}

pub(crate) fn kind_name(prefix: u8) -> &'static str {
    match prefix {
        ENTITY => "entity record",
        USAGE => "usage event",
        AUDIT => "audit event",
        _ => "record",
    }
}

/// A human name for the position of any key, for error messages.
pub(crate) fn describe(key: &[u8]) -> String {
    match key.first() {
        Some(&prefix @ (ENTITY | USAGE | AUDIT)) => match seq_of(key) {
            Some(seq) => format!("{} block at seq {seq}", kind_name(prefix)),
            None => format!("{} key {key:?}", kind_name(prefix)),
        },
        Some(&TABLE) => format!("table bucket {key:?}"),
        Some(&SNAPSHOT) => format!("base snapshot chunk {key:?}"),
        Some(&RESEED_INDEX) => format!("reseed index {key:?}"),
        Some(b'm') if key.len() == 1 => "meta".to_owned(),
        _ => format!("unknown key {key:?}"),
    }
}
