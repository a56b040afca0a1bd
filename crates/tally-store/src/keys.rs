//! The key layout. One ordered key space; the first byte says what a key holds. Integers are
//! big-endian so that byte order is numeric order.
//!
//! | key                         | value                        |
//! |-----------------------------|------------------------------|
//! | `m`                         | `MetaV1`                     |
//! | `l` seq                     | entity `LogRecordV1`         |
//! | `u` seq                     | usage `LogRecordV1`          |
//! | `a` seq                     | audit `LogRecordV1`          |
//! | `g` guid                    | seq of the usage event       |
//! | `h` guid                    | seq of the audit event       |
//! | `t` guid                    | `TableRowV1`                 |
//! | `s` log_start chunk         | `SnapshotChunkV1`            |

use tally_domain::{Guid, Seq};

pub(crate) const META: &[u8] = b"m";
pub(crate) const ENTITY: u8 = b'l';
pub(crate) const USAGE: u8 = b'u';
pub(crate) const AUDIT: u8 = b'a';
pub(crate) const USAGE_GUID: u8 = b'g';
pub(crate) const AUDIT_GUID: u8 = b'h';
pub(crate) const TABLE: u8 = b't';
pub(crate) const SNAPSHOT: u8 = b's';

pub(crate) fn seq_key(prefix: u8, seq: Seq) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn guid_key(prefix: u8, guid: Guid) -> [u8; 17] {
    let mut key = [prefix; 17];
    key[1..].copy_from_slice(&guid.to_bytes());
    key
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

pub(crate) fn guid_of(key: &[u8]) -> Option<Guid> {
    let bytes: [u8; 16] = key.get(1..17)?.try_into().ok()?;
    Some(Guid::from_bytes(bytes))
}

pub(crate) fn kind_name(prefix: u8) -> &'static str {
    match prefix {
        ENTITY => "entity record",
        USAGE => "usage event",
        AUDIT => "audit event",
        _ => "record",
    }
}
