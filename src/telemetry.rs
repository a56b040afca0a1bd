//! Logging: a `tracing` subscriber built by a function: human-readable text by default
//! (coloured only when stderr is a terminal), one JSON object per line when configured
//! (`[log] format = "json"`, with the request span's fields on every line). `RUST_LOG`
//! overrides the configured level.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// `tally_data_dir_available_bytes` and `tally_data_dir_capacity_bytes`: the filesystem of the
/// data directory, read at scrape time (what the disk-filling alerts watch).
pub struct DiskCollector {
    dir: std::path::PathBuf,
    available: prometheus::IntGauge,
    capacity: prometheus::IntGauge,
    descs: Vec<prometheus::core::Desc>,
}

impl DiskCollector {
    /// A collector for the filesystem holding `dir`.
    pub fn new(dir: std::path::PathBuf) -> prometheus::Result<Self> {
        use prometheus::core::Collector;
        let available = prometheus::IntGauge::new(
            "tally_data_dir_available_bytes",
            "Bytes available to tally on the data directory's filesystem.",
        )?;
        let capacity = prometheus::IntGauge::new(
            "tally_data_dir_capacity_bytes",
            "Size of the data directory's filesystem.",
        )?;
        let descs = [&available, &capacity]
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .collect();
        Ok(Self {
            dir,
            available,
            capacity,
            descs,
        })
    }
}

impl prometheus::core::Collector for DiskCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        match fs4::statvfs(&self.dir) {
            Ok(stats) => {
                let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                self.available.set(as_i64(stats.available_space()));
                self.capacity.set(as_i64(stats.total_space()));
                [&self.available, &self.capacity]
                    .iter()
                    .flat_map(|g| g.collect())
                    .collect()
            }
            // No reading is better than a made-up one; the absence shows in the dashboards.
            Err(error) => {
                tracing::debug!(%error, "cannot read the data directory's filesystem");
                Vec::new()
            }
        }
    }
}
