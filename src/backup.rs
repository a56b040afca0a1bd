//! `tally export` and `tally import`: backups of a data directory's log.
//!
//! Export reads the log directly when no tally holds the data directory, and asks the running
//! tally (`GET /admin/export`) when one does; either way the copy is consistent (one durable
//! meta and everything it reaches) and ends with a checksummed trailer. The file is written
//! beside its destination, fsynced, checked end to end and only then renamed into place.
//!
//! Import restores into a data directory that holds no log: into `log.importing` first (the
//! entries, then a start-up that rebuilds and checkpoints the table, then `verify`), renamed
//! to `log` only when all of it succeeded. A damaged file leaves the target untouched.
//!
//! On PostgreSQL (`storage.backend = "postgres"`) both work on the database: export reads one
//! consistent snapshot (a REPEATABLE READ transaction, beside a running tally, which it does
//! not disturb); import fills a database that holds no log yet (its meta is written last, so an
//! interrupted import leaves a log no tally opens: drop the database and import again). The
//! bytes are the same on both stores, so a backup of either restores into either, with the
//! same positions, guids and epoch: consumers' cursors stay valid.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::HumanBytes;
use tally_engine::{Engine, EngineConfig, RandomIds, SystemClock};
use tally_store::backup::{BackupReader, BackupWriter};
use tally_store::{redacted, LogStore, Meta, PgLog, PgOptions, SledLog, SledOptions, StoreError};

use crate::progress::Progress;

/// What an export or import did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The copy's head, epoch and floors.
    pub meta: Meta,
    /// Bytes of the backup file.
    pub bytes: u64,
    /// Whether the export came from a running tally.
    pub online: bool,
}

/// Where to reach a running tally that holds the data directory.
pub struct Online {
    /// Its URL.
    pub url: String,
    /// A global admin's token.
    pub token: String,
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// fsyncs a directory, so a rename inside it survives a crash.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// Checks a whole backup file (magic, version, every entry, count, checksum); its meta.
pub fn check(path: &Path) -> anyhow::Result<Meta> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BackupReader::new(BufReader::with_capacity(1 << 20, file))?;
    let mut meta = None;
    while let Some((key, value)) = reader.next_entry()? {
        if key == b"m" {
            meta = Some(value);
        }
    }
    let value = meta.context("the backup has no meta")?;
    tally_store::backup::decode_meta(&value).context("the backup's meta does not decode")
}

/// Exports the log of `data_dir` to `out`.
pub fn export(
    data_dir: &Path,
    cache_capacity_mb: u64,
    out: &Path,
    online: impl FnOnce() -> anyhow::Result<Online>,
) -> anyhow::Result<Summary> {
    let log = crate::startup::log_dir(data_dir);
    if !log.is_dir() {
        bail!("{} holds no log (is --data-dir right?)", data_dir.display());
    }
    let partial = partial_path(out);
    let options = SledOptions {
        cache_capacity_bytes: cache_capacity_mb * 1024 * 1024,
    };
    let exported = match SledLog::open(&log, &options) {
        Ok(store) => store
            .meta()
            .map_err(anyhow::Error::new)
            .and_then(|meta| export_offline(&store, meta, &partial)),
        Err(StoreError::InUse(_)) => {
            let online = online()?;
            eprintln!(
                "the data directory is in use: exporting through the running tally at {}",
                online.url
            );
            export_online(&online, &partial)
        }
        Err(error) => {
            Err(anyhow::Error::new(error).context(format!("cannot open {}", log.display())))
        }
    };
    into_place(exported, &partial, out)
}

/// Exports the log in PostgreSQL to `out`, as of one snapshot.
pub fn export_postgres(options: &PgOptions, out: &Path) -> anyhow::Result<Summary> {
    let store = PgLog::open_postgres_snapshot(options).with_context(|| {
        format!(
            "cannot open the log in PostgreSQL ({})",
            redacted(&options.url)
        )
    })?;
    let partial = partial_path(out);
    let exported = export_offline(&store, store.meta()?, &partial);
    into_place(exported, &partial, out)
}

/// An export written to `partial` takes its place at `out` (durably); a failed one is removed.
fn into_place(
    exported: anyhow::Result<Summary>,
    partial: &Path,
    out: &Path,
) -> anyhow::Result<Summary> {
    let summary = match exported {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_file(partial);
            return Err(error);
        }
    };
    std::fs::rename(partial, out)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
    sync_dir(out.parent().unwrap_or(Path::new(".")))?;
    Ok(summary)
}

/// Restores the backup `input` into the PostgreSQL database of `options`, which must hold no
/// log, then rebuilds the table and verifies.
pub fn import_postgres(input: &Path, options: &PgOptions) -> anyhow::Result<Summary> {
    let file = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let total = file.metadata()?.len();
    let mut reader = BackupReader::new(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("cannot read {}", input.display()))?;
    let store = Arc::new(PgLog::open_postgres(options).with_context(|| {
        format!(
            "cannot open the log in PostgreSQL ({})",
            redacted(&options.url)
        )
    })?);
    let meta = restore_into(store, &mut reader, total)?;
    Ok(Summary {
        meta,
        bytes: total,
        online: false,
    })
}

fn export_offline(store: &dyn LogStore, meta: Meta, partial: &Path) -> anyhow::Result<Summary> {
    let file =
        File::create(partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut writer = BackupWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    let mut progress = Progress::new("export", None);
    store.export(&meta, &mut |key, value| {
        writer
            .entry(key, value)
            .map_err(|e| StoreError::Io(format!("cannot write the backup: {e}")))?;
        progress.set(writer.bytes());
        Ok(())
    })?;
    let (out, _) = writer.finish()?;
    progress.finish();
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    Ok(Summary {
        meta,
        bytes,
        online: false,
    })
}

fn export_online(online: &Online, partial: &Path) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let url = format!("{}/admin/export", online.url.trim_end_matches('/'));
        let mut response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&online.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            bail!("{url} answered {status}: {}", body.trim());
        }
        let mut file = BufWriter::with_capacity(
            1 << 20,
            File::create(partial)
                .with_context(|| format!("cannot create {}", partial.display()))?,
        );
        let mut progress = Progress::new("export", None);
        let mut bytes = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the running tally broke off the export")?
        {
            file.write_all(&chunk)?;
            bytes += chunk.len() as u64;
            progress.set(bytes);
        }
        progress.finish();
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok::<_, anyhow::Error>(())
    })?;
    // The body ends with the backup's own trailer: read it all back before calling it done.
    let meta = check(partial).context("the downloaded backup is incomplete or damaged")?;
    let bytes = std::fs::metadata(partial)?.len();
    Ok(Summary {
        meta,
        bytes,
        online: true,
    })
}

/// Restores the backup `input` into `data_dir`, which must hold no log.
pub fn import(input: &Path, data_dir: &Path, cache_capacity_mb: u64) -> anyhow::Result<Summary> {
    let log = crate::startup::log_dir(data_dir);
    if log.exists() {
        bail!(
            "{} already holds a log; import into a new data directory",
            data_dir.display()
        );
    }
    let file = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let total = file.metadata()?.len();
    let mut reader = BackupReader::new(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("cannot read {}", input.display()))?;
    let staging = data_dir.join("log.importing");
    if staging.exists() {
        // What an interrupted import left: it never became the log.
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let restored = restore(&mut reader, total, &staging, cache_capacity_mb);
    let meta = match restored {
        Ok(meta) => meta,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    std::fs::rename(&staging, &log)
        .with_context(|| format!("cannot rename {} to {}", staging.display(), log.display()))?;
    sync_dir(data_dir)?;
    Ok(Summary {
        meta,
        bytes: total,
        online: false,
    })
}

fn restore(
    reader: &mut BackupReader<BufReader<File>>,
    total: u64,
    staging: &Path,
    cache_capacity_mb: u64,
) -> anyhow::Result<Meta> {
    let options = SledOptions {
        cache_capacity_bytes: cache_capacity_mb * 1024 * 1024,
    };
    let store = Arc::new(SledLog::open(staging, &options)?);
    restore_into(store, reader, total)
}

/// Imports into `store` (which must hold no log), rebuilds and checkpoints the table with one
/// start-up and shutdown, and verifies.
fn restore_into<B: tally_store::Backend>(
    store: Arc<tally_store::Log<B>>,
    reader: &mut BackupReader<BufReader<File>>,
    total: u64,
) -> anyhow::Result<Meta> {
    let mut progress = Progress::new("import", Some(total));
    let meta = store.import(reader, &mut |offset| progress.set(offset))?;
    progress.finish();
    eprintln!(
        "restored {} of log up to seq {} (epoch {}); rebuilding the app table",
        HumanBytes(total),
        meta.head,
        meta.epoch
    );
    // A start-up rebuilds the table from the log; its shutdown checkpoints it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let engine = Engine::start(
            store.clone(),
            EngineConfig::default(),
            Box::new(SystemClock),
            Box::new(RandomIds),
        )?;
        engine.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    let report = store.verify()?;
    if !report.problems.is_empty() {
        bail!(
            "the restored log does not verify: {}",
            report.problems.join("; ")
        );
    }
    Ok(meta)
}

/// Human-readable size.
pub fn size(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}
