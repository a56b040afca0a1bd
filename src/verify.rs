//! `tally verify`: checks a stopped data directory offline.

use std::path::Path;

use anyhow::Context;
use tally_store::{LogStore, SledLog, SledOptions};

use crate::startup::log_dir;

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
        writeln!(out, "ok: {} verified", data_dir.display())?;
    }
    Ok(report.problems.is_empty())
}
