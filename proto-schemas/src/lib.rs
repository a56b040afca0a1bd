//! tally's persisted format: frozen, versioned record types and their one encoding.
//!
//! Every value tally writes to disk is an [`envelope`]: one format-version byte, a CRC-32 of
//! everything after it, then the record encoded with bincode 2.0.1 in the one configuration
//! [`CONFIG`]. bincode is not self-describing: field order and enum variant order *are* the
//! format. So the types here are append-only: never reorder, remove or retype a field or a
//! variant; add a `V2` type and an upgrade instead. Golden bytes for every version live in
//! `fixtures/` and a test decodes them and re-encodes them byte for byte.
//!
//! bincode is unmaintained (RUSTSEC-2025-0141) and pinned at `=2.0.1`; this is the only crate
//! that names it, so replacing it touches nothing else.
//!
//! # Layout
//! - [`v1`]: the version 1 record types.
//! - [`envelope`] / [`open`]: wrap and check a record.
//! - [`visit_block`]: the records of a block one at a time, with the checks of [`open`];
//!   [`visit_usage_block`] the same for a usage block, straight into each usage body.
//! - [`borrowed`]: what start-up's indexes read of usage and audit blocks, without copying.
//! - `fixtures/v1/`: golden bytes.
//! - [`wire`] and `proto/`: the public protobuf schema of the usage-event stream.

pub mod borrowed;
pub mod v1;

/// The public protobuf messages of `proto/tally/usage/v1/usage.proto` (the binary usage-event
/// stream), generated at build time. Unlike [`v1`], this is a wire format for consumers, not a
/// disk format; it evolves by adding fields with new numbers.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/tally.usage.v1.rs"));
}

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};

/// The bincode configuration of every record: little endian, fixed-width integers.
/// Fixed width keeps offsets predictable for `tally verify`'s byte-level reports.
pub const CONFIG: Configuration<LittleEndian, Fixint> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding();

/// The largest record tally ever writes or reads back. Decoding untrusted bytes claims every
/// length against this limit before allocating, so a corrupt length prefix is an error, not an
/// attempt to allocate exabytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

type DecodeConfig = Configuration<LittleEndian, Fixint, Limit<MAX_RECORD_BYTES>>;
const DECODE_CONFIG: DecodeConfig = CONFIG.with_limit::<MAX_RECORD_BYTES>();

/// Format version 1 (the only one so far).
pub const FORMAT_V1: u8 = 1;

/// Why a stored value could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The value is shorter than the 5-byte header.
    #[error("record is truncated ({0} bytes)")]
    Truncated(usize),
    /// A format version this build does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// The checksum does not match the bytes.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// What the header says.
        stored: u32,
        /// What the bytes hash to.
        computed: u32,
    },
    /// The payload is not a valid record.
    #[error("payload does not decode: {0}")]
    Payload(String),
    /// The payload decoded but bytes were left over.
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
}

/// Why a record could not be encoded (only possible for absurd sizes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record does not encode: {0}")]
pub struct EncodeError(pub String);

/// Encodes `record` as a version-1 envelope: `[1][crc32 LE of payload][payload]`.
pub fn envelope<T: bincode::Encode>(record: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![FORMAT_V1, 0, 0, 0, 0];
    bincode::encode_into_std_write(record, &mut out, CONFIG)
        .map_err(|e| EncodeError(e.to_string()))?;
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks an envelope's version and checksum without decoding it (fast: start-up runs this over
/// every stored value).
pub fn check(bytes: &[u8]) -> Result<(), DecodeError> {
    payload(bytes).map(|_| ())
}

fn payload(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    if bytes.len() < 5 {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    if bytes[0] != FORMAT_V1 {
        return Err(DecodeError::UnknownVersion(bytes[0]));
    }
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let payload = &bytes[5..];
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok(payload)
}

/// Checks and decodes an envelope written by [`envelope`].
pub fn open<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    let payload = payload(bytes)?;
    let (record, used) = bincode::decode_from_slice::<T, _>(payload, DECODE_CONFIG)
        .map_err(|e| DecodeError::Payload(e.to_string()))?;
    if used != payload.len() {
        return Err(DecodeError::Trailing(payload.len() - used));
    }
    Ok(record)
}

/// Why [`visit_block`] stopped short.
#[derive(Debug)]
pub enum VisitError<E> {
    /// The envelope or a record did not decode, as [`open`] would have said.
    Decode(DecodeError),
    /// The visitor's own error.
    Visit(E),
}

/// Checks an envelope of a [`v1::BlockV1`] (written by [`envelope`]) and hands its records to
/// `visit` in order, decoding one at a time: the same bytes, checks and records as
/// `open::<BlockV1>`, without a vector of the whole block (a catch-up read decodes each record
/// once, straight into what it keeps). When `visit` breaks, the records after it are not
/// decoded; otherwise, as for [`open`], bytes left after the last record are an error.
pub fn visit_block<E>(
    bytes: &[u8],
    visit: impl FnMut(v1::LogRecordV1) -> Result<std::ops::ControlFlow<()>, E>,
) -> Result<std::ops::ControlFlow<()>, VisitError<E>> {
    use bincode::Decode as _;
    visit_records(bytes, v1::LogRecordV1::decode, visit)
}

/// A record of a usage block as [`visit_usage_block`] hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageRecordV1 {
    /// [`v1::RecordBodyV1::Usage`].
    Event(v1::UsageEventV1),
    /// [`v1::RecordBodyV1::UsagePruned`].
    Pruned(v1::UsagePrunedV1),
    /// Any other record, which a usage block never holds: decoded whole, so the caller can
    /// say what it found.
    Other(v1::RecordBodyV1),
}

/// [`visit_block`] for a usage block: the same bytes, checks and limits, each record handed
/// over as its position and its usage body, decoded straight into that body rather than
/// through [`v1::LogRecordV1`] (a catch-up decodes a million of them).
pub fn visit_usage_block<E>(
    bytes: &[u8],
    mut visit: impl FnMut(u64, UsageRecordV1) -> Result<std::ops::ControlFlow<()>, E>,
) -> Result<std::ops::ControlFlow<()>, VisitError<E>> {
    use bincode::de::Decoder as _;
    use bincode::Decode as _;
    /// [`v1::RecordBodyV1`]'s variant tags (a `u32`, the variant's index).
    const TAG_USAGE: u32 = 9;
    const TAG_USAGE_PRUNED: u32 = 14;
    visit_records(
        bytes,
        |decoder| {
            let seq = u64::decode(decoder)?;
            let tag = decoder
                .reader()
                .0
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes);
            // The tag is read as the derived decoding reads it (claimed, then consumed), so
            // both read the same bytes against the same limit.
            let body = match tag {
                Some(TAG_USAGE) => {
                    let _ = u32::decode(decoder)?;
                    UsageRecordV1::Event(v1::UsageEventV1::decode(decoder)?)
                }
                Some(TAG_USAGE_PRUNED) => {
                    let _ = u32::decode(decoder)?;
                    UsageRecordV1::Pruned(v1::UsagePrunedV1::decode(decoder)?)
                }
                _ => UsageRecordV1::Other(v1::RecordBodyV1::decode(decoder)?),
            };
            Ok((seq, body))
        },
        |(seq, body)| visit(seq, body),
    )
}

/// The loop of [`visit_block`] and [`visit_usage_block`]: the envelope's checks, the record
/// count (claimed against the limit as bincode's own `Vec` decoding claims it), each record
/// decoded by `decode` and handed to `visit`, and nothing left over.
fn visit_records<'a, R, E>(
    bytes: &'a [u8],
    mut decode: impl FnMut(
        &mut bincode::de::DecoderImpl<Rest<'a>, DecodeConfig, ()>,
    ) -> Result<R, bincode::error::DecodeError>,
    mut visit: impl FnMut(R) -> Result<std::ops::ControlFlow<()>, E>,
) -> Result<std::ops::ControlFlow<()>, VisitError<E>> {
    use bincode::de::Decoder as _;
    use bincode::Decode as _;
    let payload = payload(bytes).map_err(VisitError::Decode)?;
    let bincode_error =
        |e: bincode::error::DecodeError| VisitError::Decode(DecodeError::Payload(e.to_string()));
    let mut decoder = bincode::de::DecoderImpl::new(Rest(payload), DECODE_CONFIG, ());
    // `BlockV1` is its `Vec<LogRecordV1>`: a u64 length, then the records (bincode's own
    // `Vec` decoding, claims against the limit included).
    let len = u64::decode(&mut decoder).map_err(bincode_error)?;
    let len = usize::try_from(len)
        .map_err(|_| bincode_error(bincode::error::DecodeError::OutsideUsizeRange(len)))?;
    decoder
        .claim_container_read::<v1::LogRecordV1>(len)
        .map_err(bincode_error)?;
    for _ in 0..len {
        decoder.unclaim_bytes_read(std::mem::size_of::<v1::LogRecordV1>());
        let record = decode(&mut decoder).map_err(bincode_error)?;
        if visit(record).map_err(VisitError::Visit)?.is_break() {
            return Ok(std::ops::ControlFlow::Break(()));
        }
    }
    let left = decoder.reader().0.len();
    if left != 0 {
        return Err(VisitError::Decode(DecodeError::Trailing(left)));
    }
    Ok(std::ops::ControlFlow::Continue(()))
}

/// A reader over a slice that can say what it has not read yet.
struct Rest<'a>(&'a [u8]);

impl bincode::de::read::Reader for Rest<'_> {
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), bincode::error::DecodeError> {
        if bytes.len() > self.0.len() {
            return Err(bincode::error::DecodeError::UnexpectedEnd {
                additional: bytes.len() - self.0.len(),
            });
        }
        let (head, rest) = self.0.split_at(bytes.len());
        bytes.copy_from_slice(head);
        self.0 = rest;
        Ok(())
    }

    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        self.0.get(..n)
    }

    fn consume(&mut self, n: usize) {
        self.0 = self.0.get(n..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests;
