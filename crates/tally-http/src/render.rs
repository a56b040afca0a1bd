//! How both APIs write times and guids.

use serde::Serialize;
use tally_domain::{Guid, Timestamp};

/// v2 timestamps: ISO 8601, seconds, `Z`.
pub fn time(t: Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A guid, serialized as its text without an intermediate `String`.
#[derive(Clone, Copy)]
pub(crate) struct Text(pub(crate) Guid);

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.encode(&mut [0; 36]))
    }
}
