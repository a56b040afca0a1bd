//! `tally verify`: checks a stopped data directory offline, or a PostgreSQL log as of one
//! consistent snapshot (beside a running tally, which it does not disturb).

use std::path::Path;

use anyhow::Context;
use tally_store::{redacted, LogStore, PgLog, SledLog, SledOptions};

use crate::config::{Backend, Settings};
use crate::startup::log_dir;

/// Checks the log `settings` choose and prints a report. Returns whether it is sound.
pub fn run_for(settings: &Settings, out: &mut dyn std::io::Write) -> anyhow::Result<bool> {
    match settings.storage.backend {
        Backend::Sled => run(&settings.storage.data_dir, out),
        Backend::Postgres => {
            let options = crate::startup::pg_options(settings)?;
            let name = redacted(&options.url);
            let store = PgLog::open_postgres_snapshot(&options)
                .with_context(|| format!("cannot open the log in PostgreSQL ({name})"))?;
            report(&store, &name, out)
        }
    }
}

/// Checks the data directory and prints a report. Returns whether it is sound.
pub fn run(data_dir: &Path, out: &mut dyn std::io::Write) -> anyhow::Result<bool> {
    let dir = log_dir(data_dir);
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a tally data directory (no log in {})",
            data_dir.display(),
            dir.display()
        );
    }
    let store = SledLog::open(&dir, &SledOptions::default())
        .with_context(|| format!("cannot open {}", dir.display()))?;
    report(&store, &data_dir.display().to_string(), out)
}

/// Verifies `store` (`name` says which in the last line).
fn report(store: &dyn LogStore, name: &str, out: &mut dyn std::io::Write) -> anyhow::Result<bool> {
    let report = store.verify()?;
    if let Some(meta) = &report.meta {
        writeln!(
            out,
            "head {} epoch {} log_start {} checkpoint {}; {} entity records, {} usage events ({} pruned), {} audit events, {} table rows",
            meta.head,
            meta.epoch,
            meta.log_start,
            meta.checkpoint,
            report.entity_records,
            report.usage_events,
            report.pruned_usage_events,
            report.audit_events,
            report.table_rows
        )?;
    }
    for problem in &report.problems {
        writeln!(out, "problem: {problem}")?;
    }
    if report.problems.is_empty() {
        writeln!(out, "ok: {name} verified")?;
    }
    Ok(report.problems.is_empty())
}
