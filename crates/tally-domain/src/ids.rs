//! Identifiers and time: plain values, never generated here.

use std::fmt;
use std::str::FromStr;

/// A Cloud Controller guid: a UUID rendered lowercase with hyphens.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(uuid::Uuid);

impl Guid {
    /// The canonical text (as `Display` writes it) in `buffer`, without a formatter.
    pub fn encode<'b>(&self, buffer: &'b mut [u8; 36]) -> &'b str {
        self.0.hyphenated().encode_lower(buffer)
    }

    /// Wraps raw UUID bytes (as stored on disk).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }

    /// The raw UUID bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        *self.0.as_bytes()
    }

    /// A guid made from a number, for tests and deterministic id sources.
    pub const fn from_u128(value: u128) -> Self {
        Self(uuid::Uuid::from_u128(value))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not a guid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a guid: {0:?}")]
pub struct GuidParseError(pub String);

impl FromStr for Guid {
    type Err = GuidParseError;

    /// Only the canonical form tally writes (36 characters, lowercase hex, hyphenated): CC
    /// compares guids as strings, so `{…}`, dash-less or upper-case spellings name nothing.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let canonical = text.len() == 36
            && text.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        canonical
            .then(|| uuid::Uuid::try_parse(text).ok())
            .flatten()
            .map(Self)
            .ok_or_else(|| GuidParseError(text.to_owned()))
    }
}

/// The guid of a usage or audit event before its commit numbers it: the writer gives each one
/// its guid from its position (`event_guid`), once.
pub const UNNUMBERED: Guid = Guid::from_u128(0);

/// A point in time, UTC. The domain never reads a clock: time is an input.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// A position in the log: dense, starting at 1, assigned at commit.
pub type Seq = u64;

/// Where new guids come from. Production uses random v4 guids; tests use a counter.
pub trait IdGen {
    /// The next fresh guid.
    fn next_guid(&mut self) -> Guid;
}

/// Deterministic guids 1, 2, 3, ... offset by `base`: for tests and reproducible benchmarks.
#[derive(Debug, Clone)]
pub struct SequentialIds {
    next: u128,
}

impl SequentialIds {
    /// Starts at `base + 1`.
    pub fn starting_at(base: u128) -> Self {
        Self { next: base }
    }
}

impl IdGen for SequentialIds {
    fn next_guid(&mut self) -> Guid {
        self.next += 1;
        Guid::from_u128(self.next)
    }
}

/// Marker byte (byte 7) of guids that carry a log position.
const EVENT_GUID_MARKER: u8 = 0x7a;
const V3_BUILD_MARKER: u8 = 0xb3;

/// The guid of a build created through `POST /v3/builds`: a UUIDv8 whose byte 7 is a marker,
/// the rest from `random`. A v3 build's staging ends as CC's v3 builds do (the droplet is not
/// assigned, the app not started or stopped), a v2 start's as v2's; the guid says which
/// wherever the build is completed, without a field in the persisted build.
pub fn v3_build_guid(random: Guid) -> Guid {
    let mut bytes = random.to_bytes();
    bytes[6] = 0x80 | (bytes[6] & 0x0f);
    bytes[7] = V3_BUILD_MARKER;
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    Guid::from_bytes(bytes)
}

/// Whether `guid` is a [`v3_build_guid`].
pub fn is_v3_build(guid: Guid) -> bool {
    let bytes = guid.to_bytes();
    bytes[6] >> 4 == 8 && bytes[7] == V3_BUILD_MARKER && bytes[8] >> 6 == 0b10
}
/// Sequence numbers that fit the 48 bits an event guid carries.
const EVENT_GUID_MAX_SEQ: Seq = (1 << 48) - 1;

/// The guid of the usage or audit event at log position `seq`: a UUIDv8 (RFC 9562) whose first
/// six bytes are `seq` big-endian and whose byte 7 is a marker; the other bits come from
/// `random`. Clients see an ordinary UUID; tally finds the event from its guid without an index,
/// and can tell a purged event's guid from one that never existed.
pub fn event_guid(seq: Seq, random: Guid) -> Guid {
    let mut bytes = random.to_bytes();
    if seq > EVENT_GUID_MAX_SEQ {
        return random;
    }
    bytes[..6].copy_from_slice(&seq.to_be_bytes()[2..]);
    bytes[6] = 0x80 | (bytes[6] & 0x0f);
    bytes[7] = EVENT_GUID_MARKER;
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    Guid::from_bytes(bytes)
}

/// The log position an [`event_guid`] carries, if `guid` is one.
pub fn event_guid_seq(guid: Guid) -> Option<Seq> {
    let bytes = guid.to_bytes();
    if bytes[6] >> 4 != 8 || bytes[7] != EVENT_GUID_MARKER || bytes[8] >> 6 != 0b10 {
        return None;
    }
    let mut seq = [0u8; 8];
    seq[2..].copy_from_slice(&bytes[..6]);
    Some(Seq::from_be_bytes(seq))
}
