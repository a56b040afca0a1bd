//! What the writer measures, as `prometheus` metrics (reference event-log.md §4).
//!
//! The metrics are created unregistered; whoever composes tally registers them with its
//! registry ([`EngineMetrics::register`]). Tests that never register them pay nothing but the
//! atomic increments. The writer updates them once per group commit, never per event.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The writer's metrics. Cheap to clone (every metric is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// `tally_log_appends_total{kind}`: records appended, `kind` = `state_change` (commands'
    /// entity, usage and audit records) or `reseed` (a purge's reseeded events).
    pub appends: IntCounterVec,
    /// `tally_log_commits_total`: group commits written (with their fsync).
    pub commits: IntCounter,
    /// `tally_log_commit_failures_total`: writes the store refused; their callers got 503.
    pub commit_failures: IntCounter,
    /// `tally_log_append_batch_size`: records per group commit.
    pub batch_size: Histogram,
    /// `tally_log_append_duration_seconds`: from a command's submission to its answer (queueing,
    /// deciding, writing and the fsync).
    pub append_duration: Histogram,
    /// `tally_log_flush_duration_seconds`: one atomic store write with its fsync.
    pub flush_duration: Histogram,
    /// `tally_log_head_sequence`: the last sequence number the writer assigned (it is durable
    /// once `tally_log_durable_sequence` reaches it).
    pub head: IntGauge,
    /// `tally_log_durable_sequence`: the last sequence number fsynced and visible to readers.
    pub durable: IntGauge,
    /// `tally_log_epoch`: the purge-and-reseed generation.
    pub epoch: IntGauge,
    /// `tally_purge_reseed_total`: purge-and-reseeds committed.
    pub purges: IntCounter,
    /// `tally_purge_reseed_last_timestamp_seconds`: when the last one committed (0: never
    /// since start-up).
    pub purge_last: Gauge,
    /// `tally_purge_reseed_seeded_events`: STARTED events the last purge reseeded.
    pub purge_seeded: IntGauge,
    /// `tally_prune_deleted_events_total`: usage events retention replaced by tombstones.
    pub pruned: IntCounter,
    /// `tally_node_role{role}`: 1 for what this node does with the log now (`sole`: the only
    /// process on its store; `writer`: holds the lease; `follower`: another node writes).
    pub node_role: IntGaugeVec,
    /// `tally_lease_term`: the lease's term as this node last saw it (0 without a lease).
    pub lease_term: IntGauge,
    /// `tally_lease_changes_total`: times this node took the lease or lost it.
    pub lease_changes: IntCounter,
    /// `tally_follower_lag_records`: how far this node's view was behind the durable head
    /// when it last looked at the log (every tick, and when a read or a watcher needed it) or
    /// a request last waited for it (0: caught up; a writer is never behind).
    pub follower_lag: IntGauge,
    /// `tally_follow_duration_seconds`: one look of a follower at the log (reading what was
    /// appended and folding it into its view).
    pub follow_duration: Histogram,
    /// `tally_usage_read_ahead_total{outcome}`: a consumer's next page read while it took in
    /// the last (`started`), pages answered from one (`used`), and of those the pages whose
    /// answer was written ahead too (`written`).
    pub read_ahead: IntCounterVec,
}

/// Seconds: 0.25 ms to 5 s (a group commit is one fsync, ~0.3 ms on a quiet SSD).
const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Records per commit: powers of 4 up to the largest group (4096 commands, a few records each).
const BATCH_BUCKETS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0];

impl EngineMetrics {
    /// Fresh, unregistered metrics.
    #[allow(clippy::expect_used)] // the names and buckets are constants, checked by a test
    pub fn new() -> Self {
        Self::build().expect("the engine's metric definitions are valid")
    }

    fn build() -> prometheus::Result<Self> {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        };
        Ok(Self {
            appends: IntCounterVec::new(
                Opts::new(
                    "tally_log_appends_total",
                    "Records appended to the log, by kind (state_change or reseed).",
                ),
                &["kind"],
            )?,
            commits: IntCounter::new(
                "tally_log_commits_total",
                "Group commits written to the log, each with one fsync.",
            )?,
            commit_failures: IntCounter::new(
                "tally_log_commit_failures_total",
                "Log writes that failed; nothing of them was acknowledged.",
            )?,
            batch_size: histogram(
                "tally_log_append_batch_size",
                "Records written per group commit.",
                BATCH_BUCKETS,
            )?,
            append_duration: histogram(
                "tally_log_append_duration_seconds",
                "Time from a command's submission to its durable answer.",
                LATENCY_BUCKETS,
            )?,
            flush_duration: histogram(
                "tally_log_flush_duration_seconds",
                "Time of one atomic log write including its fsync.",
                LATENCY_BUCKETS,
            )?,
            head: IntGauge::new(
                "tally_log_head_sequence",
                "Last sequence number the writer assigned.",
            )?,
            durable: IntGauge::new(
                "tally_log_durable_sequence",
                "Last sequence number that is fsynced and visible to readers.",
            )?,
            epoch: IntGauge::new(
                "tally_log_epoch",
                "Purge-and-reseed generation of the usage-event stream.",
            )?,
            purges: IntCounter::new(
                "tally_purge_reseed_total",
                "Purge-and-reseeds committed since start-up.",
            )?,
            purge_last: Gauge::new(
                "tally_purge_reseed_last_timestamp_seconds",
                "Unix time of the last purge-and-reseed since start-up (0: none).",
            )?,
            purge_seeded: IntGauge::new(
                "tally_purge_reseed_seeded_events",
                "STARTED events the last purge-and-reseed seeded.",
            )?,
            pruned: IntCounter::new(
                "tally_prune_deleted_events_total",
                "Usage events retention removed.",
            )?,
            node_role: IntGaugeVec::new(
                Opts::new(
                    "tally_node_role",
                    "What this node does with the log: 1 for its role (sole, writer or follower).",
                ),
                &["role"],
            )?,
            lease_term: IntGauge::new(
                "tally_lease_term",
                "The writer's lease term as this node last saw it (0: no lease).",
            )?,
            lease_changes: IntCounter::new(
                "tally_lease_changes_total",
                "Times this node took the writer's lease or lost it.",
            )?,
            follow_duration: histogram(
                "tally_follow_duration_seconds",
                "Time of one look of a follower at the log: reading what was appended, folding it in.",
                LATENCY_BUCKETS,
            )?,
            follower_lag: IntGauge::new(
                "tally_follower_lag_records",
                "Records this node's view was behind the durable head when it last looked at the log or a request last waited for it.",
            )?,
            read_ahead: IntCounterVec::new(
                Opts::new(
                    "tally_usage_read_ahead_total",
                    "Usage pages read ahead for a consumer catching up (started), pages answered from one (used), and of those the pages written ahead too (written).",
                ),
                &["outcome"],
            )?,
        })
    }

    /// Registers every metric with `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.appends.clone()))?;
        registry.register(Box::new(self.commits.clone()))?;
        registry.register(Box::new(self.commit_failures.clone()))?;
        registry.register(Box::new(self.batch_size.clone()))?;
        registry.register(Box::new(self.append_duration.clone()))?;
        registry.register(Box::new(self.flush_duration.clone()))?;
        registry.register(Box::new(self.head.clone()))?;
        registry.register(Box::new(self.durable.clone()))?;
        registry.register(Box::new(self.epoch.clone()))?;
        registry.register(Box::new(self.purges.clone()))?;
        registry.register(Box::new(self.purge_last.clone()))?;
        registry.register(Box::new(self.purge_seeded.clone()))?;
        registry.register(Box::new(self.pruned.clone()))?;
        registry.register(Box::new(self.node_role.clone()))?;
        registry.register(Box::new(self.lease_term.clone()))?;
        registry.register(Box::new(self.lease_changes.clone()))?;
        registry.register(Box::new(self.follower_lag.clone()))?;
        registry.register(Box::new(self.follow_duration.clone()))?;
        registry.register(Box::new(self.read_ahead.clone()))?;
        Ok(())
    }

    /// Sets the role gauges.
    pub(crate) fn role(&self, role: &crate::Role) {
        let (name, term) = match role {
            crate::Role::Sole => ("sole", 0),
            crate::Role::Writer { term, .. } => ("writer", *term),
            crate::Role::Follower { term, .. } => ("follower", *term),
        };
        for each in ["sole", "writer", "follower"] {
            self.node_role
                .with_label_values(&[each])
                .set(i64::from(each == name));
        }
        self.lease_term.set(i64::try_from(term).unwrap_or(i64::MAX));
    }

    /// Sets the position gauges from the meta (after recovery and every durable commit).
    pub(crate) fn positions(&self, meta: &tally_store::Meta) {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.head.set(as_i64(meta.head));
        self.durable.set(as_i64(meta.head));
        self.epoch.set(as_i64(meta.epoch));
    }
}

/// Gauges read from the durable view at scrape time: the CF-style app gauges operators
/// already use, and the log's size. Nothing is kept up to date between scrapes.
pub struct ViewCollector {
    view: tokio::sync::watch::Receiver<std::sync::Arc<crate::View>>,
    store: std::sync::Arc<dyn tally_store::LogStore>,
    apps: IntGauge,
    apps_started: IntGauge,
    instances_started: IntGauge,
    memory_started: IntGauge,
    size: IntGauge,
    records: IntGauge,
    usage_events: IntGauge,
    reconnects: IntCounter,
    descs: Vec<prometheus::core::Desc>,
}

impl ViewCollector {
    pub(crate) fn new(
        view: tokio::sync::watch::Receiver<std::sync::Arc<crate::View>>,
        store: std::sync::Arc<dyn tally_store::LogStore>,
    ) -> prometheus::Result<Self> {
        use prometheus::core::Collector;
        let gauge = IntGauge::new;
        let apps = gauge("tally_apps", "Apps in the app table.")?;
        let apps_started = gauge("tally_apps_started", "Apps whose state is STARTED.")?;
        let instances_started = gauge(
            "tally_app_instances_started",
            "Instances of the apps whose state is STARTED.",
        )?;
        let memory_started = gauge(
            "tally_app_memory_started_bytes",
            "Memory of every instance of the apps whose state is STARTED.",
        )?;
        let size = gauge("tally_log_size_bytes", "Bytes the log occupies on disk.")?;
        let records = gauge(
            "tally_log_records",
            "Log positions retained, from the log start to the durable head.",
        )?;
        let usage_events = gauge(
            "tally_usage_events",
            "Usage events a consumer can read in the current epoch (pruned ones excluded).",
        )?;
        let reconnects = IntCounter::new(
            "tally_store_reconnects_total",
            "Connections to the database made again after one failed or was lost.",
        )?;
        let descs = [
            &apps,
            &apps_started,
            &instances_started,
            &memory_started,
            &size,
            &records,
            &usage_events,
        ]
        .iter()
        .flat_map(|g| g.desc().into_iter().cloned())
        .chain(reconnects.desc().into_iter().cloned())
        .collect();
        Ok(Self {
            view,
            store,
            apps,
            apps_started,
            instances_started,
            memory_started,
            size,
            records,
            usage_events,
            reconnects,
            descs,
        })
    }
}

impl prometheus::core::Collector for ViewCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let view = self.view.borrow().clone();
        let (mut started, mut instances, mut memory_mb) = (0i64, 0i64, 0i64);
        for app in view.state.apps() {
            if app.state == tally_domain::model::ProcessState::Started {
                started += 1;
                instances = instances.saturating_add(app.instances);
                memory_mb = memory_mb.saturating_add(app.memory_mb.saturating_mul(app.instances));
            }
        }
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.apps
            .set(i64::try_from(view.state.app_count()).unwrap_or(i64::MAX));
        self.apps_started.set(started);
        self.instances_started.set(instances);
        self.memory_started
            .set(memory_mb.saturating_mul(1024 * 1024));
        self.size.set(as_i64(self.store.size_on_disk()));
        self.records.set(as_i64(
            (view.meta.head + 1).saturating_sub(view.meta.log_start),
        ));
        self.usage_events
            .set(i64::try_from(view.usage.len()).unwrap_or(i64::MAX));
        let reconnects = self.store.reconnects();
        if let Some(more) = reconnects.checked_sub(self.reconnects.get()) {
            self.reconnects.inc_by(more);
        }
        let counted = self.reconnects.collect();
        [
            &self.apps,
            &self.apps_started,
            &self.instances_started,
            &self.memory_started,
            &self.size,
            &self.records,
            &self.usage_events,
        ]
        .iter()
        .flat_map(|g| g.collect())
        .chain(counted)
        .collect()
    }
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::EngineMetrics;

    #[test]
    fn every_metric_registers_once_under_a_distinct_name() {
        let metrics = EngineMetrics::build().unwrap();
        let registry = prometheus::Registry::new();
        metrics.register(&registry).unwrap();
        metrics.appends.with_label_values(&["state_change"]).inc();
        metrics.role(&crate::Role::Sole);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert_eq!(names.len(), 18, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("tally_")), "{names:?}");
        // Registering twice is refused, so composing two engines on one registry is caught.
        assert!(metrics.register(&registry).is_err());
    }
}
