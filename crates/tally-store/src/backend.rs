//! The ordered key-value backends under [`crate::Log`].

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use crate::StoreError;

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace.
    Put(Vec<u8>, Vec<u8>),
    /// Remove.
    Delete(Vec<u8>),
}

/// Visits key/value pairs; return `ControlFlow::Break` to stop.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, StoreError> + 'a;

/// What [`Backend::scan_ranges`] read of one range.
#[derive(Debug, Default)]
pub struct Ranged {
    /// Its keys and values, ascending.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// It stopped at the limit: there may be more.
    pub full: bool,
}

/// An ordered key-value store that applies batches atomically.
pub trait Backend: Send + Sync + 'static {
    /// One value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Visits `from <= key < to` in ascending order (descending when `reverse`).
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<(), StoreError>;
    /// The pairs of several ranges `from <= key < to`, each ascending and at most `limit`
    /// long, all read at one moment (PostgreSQL: one statement, one round trip), with
    /// whether each stopped at `limit` (there may be more). The embedded backends, which no
    /// other process writes to, scan them one after the other.
    fn scan_ranges(
        &self,
        ranges: &[(&[u8], &[u8])],
        limit: usize,
    ) -> Result<Vec<Ranged>, StoreError> {
        let mut out = Vec::with_capacity(ranges.len());
        for (from, to) in ranges {
            let mut range = Ranged::default();
            self.scan(from, to, false, &mut |key, value| {
                range.pairs.push((key.to_vec(), value.to_vec()));
                range.full = range.pairs.len() >= limit;
                Ok(if range.full {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })?;
            out.push(range);
        }
        Ok(out)
    }
    /// Applies every op or none; when `durable`, returns only after an fsync.
    fn apply(&self, ops: Vec<Op>, durable: bool) -> Result<(), StoreError>;
    /// Bytes on disk.
    fn size_on_disk(&self) -> u64;
    /// Re-reads what the backend keeps of the store's state beside the keys (PostgreSQL: the
    /// head row), after a failed write and before the log is read again.
    fn refresh(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Lets go of what reads and writes left cached in memory. Waits for operations in progress.
    fn release_cache(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// [`Backend::release_cache`] if operations touched next to nothing since the last call
    /// and something worth letting go of since the last release; never waits for an
    /// operation. Whether it released.
    fn release_if_idle(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Takes or renews the right to append; see [`crate::LogStore::lead`]. A backend only one
    /// process can open is always this process's.
    fn lead(&self) -> Result<crate::Lead, StoreError> {
        Ok(crate::Lead::Sole)
    }
    /// Gives the right to append up; see [`crate::LogStore::resign`].
    fn resign(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The head as kept beside the keys (PostgreSQL: the head row), when the backend keeps one.
    fn durable_head(&self) -> Result<Option<crate::Seq>, StoreError> {
        Ok(None)
    }
    /// Makes this thread's reads see one consistent state until [`Backend::unpin`]
    /// (PostgreSQL: a REPEATABLE READ transaction), while another process may be appending;
    /// nothing to do where nobody else writes.
    fn pin(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Ends [`Backend::pin`].
    fn unpin(&self) {}
    /// Connections to the database made again after one failed or was found closed (0 for an
    /// embedded store).
    fn reconnects(&self) -> u64 {
        0
    }
    /// See [`crate::LogStore::watch`]: nobody else appends to a backend one process owns.
    fn watch(&self, _wake: Box<dyn Fn() + Send + Sync>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A failed file operation of tally's own (outside sled).
fn file_error(error: std::io::Error) -> StoreError {
    StoreError::Io(error.to_string())
}

fn io(error: sled::Error) -> StoreError {
    match error {
        // A page of sled's own files failed sled's checksum: the data directory is damaged,
        // not the disk busy. sled knows the offset only sometimes; say so when it does not.
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            position: match at {
                Some(pointer) => format!("sled's log file, {pointer:?}"),
                None => "sled's log file (sled does not say at which offset)".to_owned(),
            },
            reason: "a page failed sled's checksum".to_owned(),
        },
        other => StoreError::Io(other.to_string()),
    }
}

/// How to open sled.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// Page cache size in bytes (sled's default of 1 GiB is far too much for tally). sled does
    /// not keep to it (see [`SledBackend`]); tally does, by releasing the cache whenever this
    /// many bytes were read or written since the last release.
    pub cache_capacity_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 64 * 1024 * 1024,
        }
    }
}

/// sled 0.34.7: everything in the default tree, so one `Batch` is atomic across the log, the
/// table and the indexes; durability comes from `flush()`, never from sled's background flush
/// (which is switched off).
///
/// The handle sits behind a lock only so that [`Backend::release_cache`] can reopen it: sled's
/// LRU evicts nothing for a store of few, large pages like tally's (it settles accesses per
/// shard, 256 shards, only once 64 have queued in one shard; a log of a million records is a
/// few thousand pages), so every page a read or write touched stays in memory until the
/// database is dropped. Every operation holds the read lock while it runs. Once the bytes read
/// and written since the last release pass the cache capacity, the operation that passed it
/// releases the cache if nothing else holds the database at that moment (it never waits: a
/// long export is not interrupted, and a later operation tries again); the reopen stalls the
/// others for the time sled takes to open (tens of milliseconds for a log of a million records).
pub struct SledBackend {
    db: RwLock<Option<sled::Db>>,
    dir: std::path::PathBuf,
    options: SledOptions,
    /// What makes a flush durable (see [`SledBackend::sync_to_disk`]).
    disk: Mutex<DiskSync>,
    /// Bytes read or written since the cache was last released.
    touched: AtomicU64,
    /// `touched` at the last [`Backend::release_if_idle`].
    touched_at_last_look: AtomicU64,
    /// How many times the cache was released.
    releases: AtomicU64,
}

/// The files a durable write must reach the disk through.
struct DiskSync {
    /// sled's log file (`db`).
    log: std::fs::File,
    /// The newest blob file already synced (blob files are named by their log position).
    newest_blob: i64,
    /// When the `blobs` directory last changed, as of a look at least [`SETTLED`] after that
    /// change: a new blob file changes it, so the same time again means nothing new. (A look
    /// sooner after a change proves nothing: the kernel stamps directories with a coarse
    /// clock, so two changes a moment apart may carry one time.)
    blobs_settled: Option<std::time::SystemTime>,
    /// Blob files synced so far (for tests and curiosity).
    blobs_synced: u64,
    /// An inotify watch on the `blobs` directory: the names of the files created in it since
    /// the last look, so a durable write costs the blobs it made, not a listing of every blob
    /// the log holds (2,672 files at 3.2 million records: a quarter of the writer's time).
    /// `None` where inotify is not to be had; then every look lists the directory.
    watch: Option<rustix::fd::OwnedFd>,
    /// Whether the directory was listed once since the watch began (files made before it
    /// began are known only from a listing).
    listed: bool,
}

/// What [`watch_blobs`] found since the last look.
enum Created {
    /// These names (possibly some already synced, or gone since).
    Names(Vec<String>),
    /// Events were lost (the queue overflowed, or no watch): list the directory.
    Unknown,
}

/// Starts watching `blobs` for files created in it.
fn watch_blobs(blobs: &Path) -> Option<rustix::fd::OwnedFd> {
    use rustix::fs::inotify;
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).ok()?;
    inotify::add_watch(
        &fd,
        blobs,
        inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO,
    )
    .ok()?;
    Some(fd)
}

/// Everything the watch queued since the last look.
fn created_blobs(watch: Option<&rustix::fd::OwnedFd>) -> Created {
    use rustix::fs::inotify;
    let Some(fd) = watch else {
        return Created::Unknown;
    };
    let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut names = Vec::new();
    let mut lost = false;
    loop {
        match reader.next() {
            Ok(event) => {
                if event.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                    lost = true;
                }
                if let Some(name) = event.file_name().and_then(|n| n.to_str().ok()) {
                    names.push(name.to_owned());
                }
            }
            Err(rustix::io::Errno::AGAIN) => break,
            Err(_) => {
                lost = true;
                break;
            }
        }
    }
    if lost {
        Created::Unknown
    } else {
        Created::Names(names)
    }
}

impl SledBackend {
    /// Opens (or creates) the database in `dir`. Fails if another process holds it.
    ///
    /// sled releases its file lock only when its background threads let go of the database,
    /// a moment after the last handle is dropped; so a lock conflict is retried for up to two
    /// seconds before it is reported.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        let db = Self::open_db(dir, options)?;
        // sled made these files: their names must survive a power loss too.
        let log = std::fs::File::open(dir.join("db")).map_err(file_error)?;
        log.sync_all().map_err(file_error)?;
        sync_directory(dir)?;
        Ok(Self {
            db: RwLock::new(Some(db)),
            dir: dir.to_path_buf(),
            options: options.clone(),
            disk: Mutex::new(DiskSync {
                log,
                newest_blob: i64::MIN,
                blobs_settled: None,
                blobs_synced: 0,
                watch: watch_blobs(&dir.join("blobs")),
                listed: false,
            }),
            touched: AtomicU64::new(0),
            touched_at_last_look: AtomicU64::new(0),
            releases: AtomicU64::new(0),
        })
    }

    /// What sled's `flush()` leaves undone, so that a flushed write survives a power loss, not
    /// only a crash of the process. On Linux sled 0.34.7 ends a flush with `sync_file_range`,
    /// which neither flushes the device's write cache nor the file's size, and it never syncs
    /// the blob files it writes for large values (nor their directory). So: every blob file
    /// newer than the last one synced, then the `blobs` directory, then `fdatasync` of the log.
    fn sync_to_disk(&self) -> Result<(), StoreError> {
        let mut disk = self.disk.lock().map_err(|_| Self::poisoned())?;
        let blobs = self.dir.join("blobs");
        let mut newest = disk.newest_blob;
        let mut synced = 0;
        // The watch's names first (drained before any listing, so nothing created meanwhile
        // is missed: it is in the listing or in the next look's names).
        let created = created_blobs(disk.watch.as_ref());
        let (names, listing) = match created {
            Created::Names(names) if disk.listed => (Some(names), None),
            _ => {
                let changed = std::fs::metadata(&blobs).and_then(|m| m.modified()).ok();
                let names = match changed {
                    Some(at) if disk.blobs_settled == Some(at) => None,
                    _ => match std::fs::read_dir(&blobs) {
                        Ok(entries) => Some(
                            entries
                                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                                .collect::<Result<Vec<String>, _>>()
                                .map_err(file_error)?,
                        ),
                        Err(_) => None,
                    },
                };
                disk.listed = disk.watch.is_some();
                (names, Some(changed))
            }
        };
        if let Some(names) = names {
            let mut fresh = Vec::new();
            for name in names {
                let Ok(lsn) = name.parse::<i64>() else {
                    continue;
                };
                if lsn > disk.newest_blob {
                    fresh.push(blobs.join(name));
                    newest = newest.max(lsn);
                }
            }
            sync_files(&fresh)?;
            synced = fresh.len() as u64;
        }
        if synced > 0 {
            sync_directory(&blobs)?;
            disk.newest_blob = newest;
            disk.blobs_synced += synced;
        }
        // Only once everything it names is synced may the directory's time say "nothing new".
        if let Some(changed) = listing {
            disk.blobs_settled =
                changed.filter(|at| at.elapsed().is_ok_and(|since| since >= SETTLED));
        }
        disk.log.sync_data().map_err(file_error)
    }

    /// Whether new blob files are learned from an inotify watch (else from listings).
    pub fn watches_blobs(&self) -> bool {
        self.disk.lock().is_ok_and(|disk| disk.watch.is_some())
    }

    /// Blob files synced since this backend was opened.
    pub fn blobs_synced(&self) -> u64 {
        self.disk.lock().map_or(0, |disk| disk.blobs_synced)
    }

    /// How many times the cache was released (reopened) since this backend was opened.
    pub fn cache_releases(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }

    /// Counts bytes an operation touched; past the capacity, releases the cache if it can do
    /// so without waiting. Called after the operation let go of the database.
    fn touched(&self, bytes: usize) {
        let total = self.touched.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if total < self.options.cache_capacity_bytes {
            return;
        }
        let Ok(mut db) = self.db.try_write() else {
            return;
        };
        self.touched.store(0, Ordering::Relaxed);
        if let Err(error) = self.reopen(&mut db) {
            // The next operation opens it again (or reports why it cannot).
            tracing::error!(%error, "releasing sled's cache failed");
        }
    }

    /// Flushes and drops the database (and with it every cached page), then opens it again.
    fn reopen(&self, db: &mut Option<sled::Db>) -> Result<(), StoreError> {
        self.releases.fetch_add(1, Ordering::Relaxed);
        // Nothing depends on this flush: every write tally acknowledged was fsynced already.
        let flushed = db.take().map(|open| open.flush());
        *db = Some(Self::open_db(&self.dir, &self.options)?);
        flushed.transpose().map_err(io)?;
        Ok(())
    }

    fn open_db(dir: &Path, options: &SledOptions) -> Result<sled::Db, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(None)
            .mode(sled::Mode::LowSpace);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match config.open() {
                Ok(db) => return Ok(db),
                // sled reports the lock conflict as an `Other` I/O error with this text.
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::InUse(dir.display().to_string()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Runs one operation on the open database, holding the read lock. If a reopen failed,
    /// the database is opened again first (or the operation fails with the reason).
    fn with_db<T>(
        &self,
        operation: impl FnOnce(&sled::Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        loop {
            {
                let guard = self.db.read().map_err(|_| Self::poisoned())?;
                if let Some(db) = guard.as_ref() {
                    return operation(db);
                }
            }
            let mut db = self.db.write().map_err(|_| Self::poisoned())?;
            if db.is_none() {
                *db = Some(Self::open_db(&self.dir, &self.options)?);
            }
        }
    }

    fn poisoned() -> StoreError {
        StoreError::Io("sled handle lock poisoned".to_owned())
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.with_db(|db| Ok(db.get(key).map_err(io)?.map(|v| v.to_vec())))?;
        self.touched(value.as_ref().map_or(0, Vec::len));
        Ok(value)
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        // An empty (or inverted) range visits nothing.
        if from >= to {
            return Ok(());
        }
        let mut read = 0;
        let scanned = self.with_db(|db| {
            let range = db.range(from..to);
            let mut step = |item: sled::Result<(sled::IVec, sled::IVec)>| {
                let (key, value) = item.map_err(io)?;
                read += key.len() + value.len();
                visit(&key, &value)
            };
            if reverse {
                for item in range.rev() {
                    if step(item)?.is_break() {
                        break;
                    }
                }
            } else {
                for item in range {
                    if step(item)?.is_break() {
                        break;
                    }
                }
            }
            Ok(())
        });
        self.touched(read);
        scanned
    }

    fn apply(&self, ops: Vec<Op>, durable: bool) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut written = 0;
        for op in ops {
            match op {
                Op::Put(key, value) => {
                    written += key.len() + value.len();
                    batch.insert(key, value);
                }
                Op::Delete(key) => batch.remove(key),
            }
        }
        self.with_db(|db| {
            db.apply_batch(batch).map_err(io)?;
            if durable {
                db.flush().map_err(io)?;
                self.sync_to_disk()?;
            }
            Ok(())
        })?;
        self.touched(written);
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.with_db(|db| Ok(db.size_on_disk().unwrap_or(0)))
            .unwrap_or(0)
    }

    /// Flushes, drops the database (and with it every cached page) and opens it again. If the
    /// reopen fails, the next operation tries again.
    fn release_cache(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().map_err(|_| Self::poisoned())?;
        self.touched.store(0, Ordering::Relaxed);
        self.reopen(&mut db)
    }

    fn release_if_idle(&self) -> Result<bool, StoreError> {
        let touched = self.touched.load(Ordering::Relaxed);
        let before = self.touched_at_last_look.swap(touched, Ordering::Relaxed);
        // (A release since the last look reset the count: whatever it is now came after.)
        let since = if touched >= before {
            touched - before
        } else {
            touched
        };
        if touched < IDLE_RELEASE_FROM || since > QUIET_BYTES {
            return Ok(false);
        }
        let Ok(mut db) = self.db.try_write() else {
            return Ok(false);
        };
        self.touched.store(0, Ordering::Relaxed);
        self.touched_at_last_look.store(0, Ordering::Relaxed);
        self.reopen(&mut db)?;
        Ok(true)
    }
}

/// An idle store lets go of its cache once operations touched this many bytes since the last
/// release (a few small writes are not worth a reopen).
const IDLE_RELEASE_FROM: u64 = 4 * 1024 * 1024;
/// Between two looks, operations that touched at most this many bytes leave a store idle
/// (readiness probes and scrapes write and read a few hundred bytes).
const QUIET_BYTES: u64 = 64 * 1024;

/// fsync of every file, one after the other (syncing them from several threads at once was
/// slower: a purge's blob files took 530 ms instead of 410 ms). A file sled removed meanwhile
/// needs no sync.
fn sync_files(paths: &[std::path::PathBuf]) -> Result<(), StoreError> {
    paths
        .iter()
        .try_for_each(|path| match std::fs::File::open(path) {
            Ok(file) => file.sync_all().map_err(file_error),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(file_error(e)),
        })
}

/// How long after a change a directory's time is trusted to move on the next change.
const SETTLED: std::time::Duration = std::time::Duration::from_millis(100);

/// fsync of a directory, so the names in it survive a power loss.
fn sync_directory(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error)
}

/// A `BTreeMap` behind a lock. Atomic and "durable" by construction (it dies with the process).
/// `fail_writes` lets tests simulate a disk that refuses writes.
#[derive(Default)]
pub struct MemBackend {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    failing_writes: AtomicU64,
}

impl MemBackend {
    /// The next `count` durable writes fail with an I/O error and change nothing.
    pub fn fail_writes(&self, count: u64) {
        self.failing_writes.store(count, Ordering::SeqCst);
    }

    fn poisoned() -> StoreError {
        StoreError::Io("in-memory store lock poisoned".to_owned())
    }
}

impl Backend for MemBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .map
            .read()
            .map_err(|_| Self::poisoned())?
            .get(key)
            .cloned())
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        // An empty (or inverted) range visits nothing.
        if from >= to {
            return Ok(());
        }
        // Copy the range out so visitors never run under the lock.
        let items: Vec<(Vec<u8>, Vec<u8>)> = {
            let map = self.map.read().map_err(|_| Self::poisoned())?;
            let range = map.range(from.to_vec()..to.to_vec());
            if reverse {
                range.rev().map(|(k, v)| (k.clone(), v.clone())).collect()
            } else {
                range.map(|(k, v)| (k.clone(), v.clone())).collect()
            }
        };
        for (key, value) in items {
            if visit(&key, &value)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, ops: Vec<Op>, durable: bool) -> Result<(), StoreError> {
        if durable {
            let failing = self.failing_writes.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_writes.store(failing - 1, Ordering::SeqCst);
                return Err(StoreError::Io("simulated write failure".to_owned()));
            }
        }
        let mut map = self.map.write().map_err(|_| Self::poisoned())?;
        for op in ops {
            match op {
                Op::Put(key, value) => {
                    map.insert(key, value);
                }
                Op::Delete(key) => {
                    map.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}
