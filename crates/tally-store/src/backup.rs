//! The backup file: a consistent copy of a log, versioned and checksummed.
//!
//! ```text
//! file    := magic "TALLYBAK" | version u32 = 1 | entry* | trailer
//! entry   := 0x01 | key length u32 | key | value length u32 | value
//! trailer := 0xFF | entries u64 | crc32 u32     (CRC-32 of every byte before it)
//! ```
//! Integers are big-endian. The entries are the store's own keys and values (format v1 of
//! `proto-schemas`, each value with its own checksum), the meta first: the blocks of every
//! stream from its floor to the head, the base snapshot of the log start and the reseed index
//! of the epoch. The persisted table is left out (the meta says so with checkpoint 0): the
//! first start-up after a restore rebuilds it from the log and checkpoints it.
//!
//! This layout is a contract like the log's: golden bytes in `fixtures/backup-v1.bin`.

use std::io::{Read, Write};

use crate::StoreError;

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"TALLYBAK";
/// The backup format this build writes and reads.
pub const VERSION: u32 = 1;

const ENTRY: u8 = 0x01;
const TRAILER: u8 = 0xFF;
/// No key of the store is longer.
const MAX_KEY: u32 = 64;
/// No value of the store is larger (a block holds at most 256 records, a snapshot chunk a
/// 64th of the table); a bigger length is corruption, not a reason to allocate.
const MAX_VALUE: u32 = 1 << 30;

/// Why a backup file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing the file failed.
    #[error("backup I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// Not a backup file, or one of a format this build does not know.
    #[error("not a tally backup: {0}")]
    Format(String),
    /// The file is damaged; `offset` is where the problem was noticed.
    #[error("the backup is damaged at byte {offset}: {reason}")]
    Damaged {
        /// Byte offset in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The store refused the data.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Decodes the meta entry (key `m`) of a backup.
pub fn decode_meta(value: &[u8]) -> Result<crate::Meta, StoreError> {
    crate::codec::decode_meta(value)
}

/// One key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Writes a backup file entry by entry, checksumming as it goes.
pub struct BackupWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    entries: u64,
    bytes: u64,
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup: writes the magic and the version.
    pub fn new(out: W) -> std::io::Result<Self> {
        let mut writer = Self {
            out,
            crc: crc32fast::Hasher::new(),
            entries: 0,
            bytes: 0,
        };
        writer.put(MAGIC)?;
        writer.put(&VERSION.to_be_bytes())?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// Appends one key and value.
    pub fn entry(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        let length = |n: usize| {
            u32::try_from(n).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "entry too large")
            })
        };
        let (key_len, value_len) = (length(key.len())?, length(value.len())?);
        self.put(&[ENTRY])?;
        self.put(&key_len.to_be_bytes())?;
        self.put(key)?;
        self.put(&value_len.to_be_bytes())?;
        self.put(value)?;
        self.entries += 1;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the trailer and returns the output and the number of entries.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.put(&[TRAILER])?;
        let entries = self.entries;
        self.put(&entries.to_be_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_be_bytes())?;
        self.out.flush()?;
        Ok((self.out, entries))
    }
}

/// Reads a backup file entry by entry; the last call checks the count and the checksum, so
/// a caller must read to the end (`Ok(None)`) before trusting anything it read.
pub struct BackupReader<R: Read> {
    input: R,
    crc: crc32fast::Hasher,
    entries: u64,
    offset: u64,
    done: bool,
}

impl<R: Read> BackupReader<R> {
    /// Opens a backup: checks the magic and the version.
    pub fn new(input: R) -> Result<Self, BackupError> {
        let mut reader = Self {
            input,
            crc: crc32fast::Hasher::new(),
            entries: 0,
            offset: 0,
            done: false,
        };
        let mut magic = [0u8; 8];
        reader
            .take(&mut magic)
            .map_err(|_| BackupError::Format("the file is too short".to_owned()))?;
        if &magic != MAGIC {
            return Err(BackupError::Format(
                "it does not start with TALLYBAK".to_owned(),
            ));
        }
        let version = reader.u32()?;
        if version != VERSION {
            return Err(BackupError::Format(format!(
                "format version {version}; this build reads version {VERSION}"
            )));
        }
        Ok(reader)
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn take(&mut self, buffer: &mut [u8]) -> Result<(), BackupError> {
        self.input.read_exact(buffer).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.damaged("the file ends early (truncated)")
            } else {
                BackupError::Io(e)
            }
        })?;
        self.crc.update(buffer);
        self.offset += buffer.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, BackupError> {
        let mut bytes = [0u8; 4];
        self.take(&mut bytes)?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn damaged(&self, reason: impl Into<String>) -> BackupError {
        BackupError::Damaged {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn bytes(&mut self, length: u32, max: u32, what: &str) -> Result<Vec<u8>, BackupError> {
        if length > max {
            return Err(self.damaged(format!("a {what} of {length} bytes")));
        }
        let mut bytes = vec![0u8; length as usize];
        self.take(&mut bytes)?;
        Ok(bytes)
    }

    /// The next entry, or `None` after a trailer whose count and checksum are right.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, BackupError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.take(&mut tag)?;
        match tag[0] {
            ENTRY => {
                let key_len = self.u32()?;
                let key = self.bytes(key_len, MAX_KEY, "key")?;
                let value_len = self.u32()?;
                let value = self.bytes(value_len, MAX_VALUE, "value")?;
                self.entries += 1;
                Ok(Some((key, value)))
            }
            TRAILER => {
                let mut count = [0u8; 8];
                self.take(&mut count)?;
                let count = u64::from_be_bytes(count);
                let expected = self.crc.clone().finalize();
                let mut crc = [0u8; 4];
                self.input
                    .read_exact(&mut crc)
                    .map_err(|_| self.damaged("the file ends early (truncated in the trailer)"))?;
                self.offset += 4;
                if u32::from_be_bytes(crc) != expected {
                    return Err(self.damaged("the checksum does not match the contents"));
                }
                if count != self.entries {
                    return Err(self.damaged(format!(
                        "the trailer counts {count} entries, the file has {}",
                        self.entries
                    )));
                }
                let mut extra = [0u8; 1];
                if self.input.read(&mut extra)? != 0 {
                    return Err(self.damaged("bytes follow the trailer"));
                }
                self.done = true;
                Ok(None)
            }
            other => Err(self.damaged(format!("unknown entry tag {other:#04x}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut writer = BackupWriter::new(Vec::new()).unwrap();
        writer.entry(b"m", b"meta-bytes").unwrap();
        writer
            .entry(&[b'l', 0, 0, 0, 0, 0, 0, 0, 1], b"block")
            .unwrap();
        writer.finish().unwrap().0
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Entry>, BackupError> {
        let mut reader = BackupReader::new(bytes)?;
        let mut entries = Vec::new();
        while let Some(entry) = reader.next_entry()? {
            entries.push(entry);
        }
        Ok(entries)
    }

    #[test]
    fn the_v1_layout_matches_its_golden_bytes() {
        let golden = include_bytes!("../fixtures/backup-v1.bin");
        assert_eq!(sample(), golden.to_vec(), "the backup format v1 changed");
        let entries = read_all(golden).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], (b"m".to_vec(), b"meta-bytes".to_vec()));
    }

    #[test]
    fn every_damage_is_refused_with_its_offset() {
        let good = sample();
        // Any flipped bit anywhere is noticed.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            assert!(read_all(&bad).is_err(), "flip at {i} not noticed");
        }
        // Any truncation is noticed, and so are extra bytes.
        for cut in 0..good.len() {
            assert!(read_all(&good[..cut]).is_err(), "cut at {cut} not noticed");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(
            read_all(&longer),
            Err(BackupError::Damaged { .. })
        ));
        // Another format version is named.
        let mut newer = good.clone();
        newer[11] = 2;
        let error = read_all(&newer).unwrap_err().to_string();
        assert!(error.contains("format version 2"), "{error}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = read_all(&bytes);
            let mut prefixed = sample()[..12].to_vec();
            prefixed.extend_from_slice(&bytes);
            let _ = read_all(&prefixed);
        }
    }
}
