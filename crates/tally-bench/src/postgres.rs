//! The PostgreSQL anchor: a throwaway PostgreSQL (Debian's package, installed when missing)
//! running Cloud Controller's own patterns on the same machine, in the same run as tally:
//! - a state change: update the process row and insert its usage event, one transaction;
//! - purge-and-reseed: `TRUNCATE app_usage_events` + `INSERT ... SELECT` of every started
//!   process, one transaction;
//! - catch-up: a keyset read, `WHERE id > $last ORDER BY id LIMIT 5000`.
//!
//! The server keeps PostgreSQL's defaults (fsync on, `synchronous_commit = on`); the load comes
//! from `pgbench` with CC's statements as a custom script.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tally_pgcluster::{Cluster, Options};

use crate::report::Latencies;

/// A PostgreSQL cluster in a temporary directory (`tally-pgcluster`), stopped when dropped,
/// with Cloud Controller's tables.
pub struct Postgres {
    cluster: Cluster,
}

/// How long a pgbench run goes.
#[derive(Clone, Copy)]
pub enum Limit {
    /// This long.
    For(Duration),
    /// This many transactions per client.
    Transactions(u64),
}

/// What one pgbench run measured.
pub struct PgbenchRun {
    /// Transactions per second (without connection time).
    pub tps: f64,
    /// Per-transaction latencies.
    pub latencies: Latencies,
}

impl Postgres {
    /// initdb, start on a free loopback port, create the CC tables.
    pub fn start() -> anyhow::Result<Self> {
        let cluster = Cluster::start(&Options::default()).map_err(anyhow::Error::msg)?;
        let pg = Self { cluster };
        pg.sql(SCHEMA)?;
        Ok(pg)
    }

    /// Runs SQL with psql (stops at the first error); what it printed.
    pub fn sql(&self, sql: &str) -> anyhow::Result<String> {
        self.cluster.sql(sql).map_err(anyhow::Error::msg)
    }

    /// 100,000-style seed: `apps` started processes and `events` usage events.
    pub fn seed(&self, apps: usize, events: u64) -> anyhow::Result<()> {
        let started = Instant::now();
        self.sql(&format!(
            "INSERT INTO processes (guid, app_guid, name, space_guid, org_guid, state, instances, memory, diego, created_at, updated_at)
             SELECT gen_random_uuid()::text, gen_random_uuid()::text, 'app-' || n, 'space', 'org', 'STARTED', 1, 128, true, now(), now()
             FROM generate_series(1, {apps}) AS n;
             INSERT INTO app_usage_events ({USAGE_COLUMNS})
             SELECT {USAGE_VALUES}
             FROM generate_series(1, {events}) AS n JOIN processes p ON p.id = 1 + n % {apps};"
        ))?;
        self.sql("VACUUM ANALYZE")?;
        eprintln!(
            "PostgreSQL: seeded {apps} processes and {events} usage events in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// pgbench with `script` (CC's statements) at `clients` connections, for a duration or a
    /// number of transactions per client.
    pub fn pgbench(
        &self,
        script: &str,
        clients: usize,
        limit: Limit,
    ) -> anyhow::Result<PgbenchRun> {
        let file = self.cluster.root().join("script.sql");
        std::fs::write(&file, script)?;
        let log_prefix = self.cluster.root().join("pgbench-log");
        // The tools run as the cluster's owner, who must be able to read the script.
        let mut permissions = std::fs::metadata(&file)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o644);
        std::fs::set_permissions(&file, permissions)?;
        let mut args: Vec<String> = self.cluster.connection().to_vec();
        args.extend([
            "-n".into(),
            "-c".into(),
            clients.to_string(),
            "-j".into(),
            clients.min(2).to_string(),
            match limit {
                Limit::For(_) => "-T".into(),
                Limit::Transactions(_) => "-t".into(),
            },
            match limit {
                Limit::For(duration) => duration.as_secs().max(1).to_string(),
                Limit::Transactions(n) => n.max(1).to_string(),
            },
            "-f".into(),
            file.display().to_string(),
            "-l".into(),
            "--log-prefix".into(),
            log_prefix.display().to_string(),
            "postgres".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self
            .cluster
            .run("pgbench", &args)
            .map_err(anyhow::Error::msg)?;
        let tps = out
            .lines()
            .find(|l| l.starts_with("tps = "))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no tps in pgbench's output: {out}"))?;
        // Per-transaction log lines: client, transaction, latency (µs), ...
        let mut latencies = Latencies::new();
        for entry in std::fs::read_dir(self.cluster.root())?.flatten() {
            if !entry
                .file_name()
                .to_string_lossy()
                .starts_with("pgbench-log")
            {
                continue;
            }
            for line in std::fs::read_to_string(entry.path())?.lines() {
                if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()) {
                    latencies.record(Duration::from_micros(us));
                }
            }
            std::fs::remove_file(entry.path())?;
        }
        Ok(PgbenchRun { tps, latencies })
    }

    /// Rows in `app_usage_events`.
    pub fn usage_events(&self) -> anyhow::Result<u64> {
        Ok(self
            .sql("SELECT count(*) FROM app_usage_events")?
            .trim()
            .parse()?)
    }

    /// The path of the cluster (for messages).
    pub fn dir(&self) -> &Path {
        self.cluster.dir()
    }
}

/// Cloud Controller's two tables on this path with CC's columns and indexes (CC's schema as
/// its migrations leave it: `processes` with its unique guid and its `created_at`,
/// `updated_at`, `diego` and `app_guid` indexes; `app_usage_events` with its unique guid and its
/// `(created_at, guid)` and `task_guid` indexes). The indexes matter: CC's update sets
/// `updated_at`, an indexed column, so every state change updates every index of the row.
const SCHEMA: &str = "
CREATE TABLE processes (
    id serial PRIMARY KEY, guid varchar(255) NOT NULL,
    created_at timestamp NOT NULL DEFAULT now(), updated_at timestamp,
    production boolean DEFAULT false, memory integer, instances integer DEFAULT 1,
    file_descriptors integer DEFAULT 16384, disk_quota integer DEFAULT 2048,
    state varchar(255) NOT NULL DEFAULT 'STOPPED', version varchar(255),
    metadata varchar(4096) NOT NULL DEFAULT '{}', detected_buildpack varchar(255),
    not_deleted boolean DEFAULT true, health_check_timeout integer, diego boolean DEFAULT false,
    package_updated_at timestamp, app_guid varchar(255), type varchar(255) DEFAULT 'web',
    health_check_type varchar(255) DEFAULT 'port', command varchar(4096),
    enable_ssh boolean DEFAULT false, encrypted_docker_credentials_json varchar(255),
    docker_salt varchar(255), ports text, health_check_http_endpoint text,
    health_check_invocation_timeout integer, revision_guid varchar(255),
    -- Not CC's: the app's name and space, which CC joins from `apps` and `spaces`.
    name varchar(255) NOT NULL, space_guid varchar(255) NOT NULL, org_guid varchar(255) NOT NULL);
CREATE UNIQUE INDEX apps_guid_index ON processes (guid);
CREATE INDEX apps_created_at_index ON processes (created_at);
CREATE INDEX apps_updated_at_index ON processes (updated_at);
CREATE INDEX apps_diego_index ON processes (diego);
CREATE INDEX processes_app_guid_index ON processes (app_guid);
CREATE TABLE app_usage_events (
    id bigserial PRIMARY KEY, guid varchar(255) NOT NULL, created_at timestamp NOT NULL,
    state varchar(255) NOT NULL, previous_state varchar(255), instance_count integer NOT NULL,
    previous_instance_count integer, memory_in_mb_per_instance integer NOT NULL,
    previous_memory_in_mb_per_instance integer, app_guid varchar(255) NOT NULL,
    app_name varchar(255) NOT NULL, space_guid varchar(255) NOT NULL,
    space_name varchar(255) NOT NULL, org_guid varchar(255) NOT NULL,
    buildpack_guid varchar(255), buildpack_name varchar(255), package_state varchar(255),
    previous_package_state varchar(255), parent_app_guid varchar(255),
    parent_app_name varchar(255), process_type varchar(255), task_guid varchar(255),
    task_name varchar(255), package_guid varchar(255));
CREATE UNIQUE INDEX usage_events_guid_index ON app_usage_events (guid);
CREATE INDEX app_usage_events_created_at_guid_index ON app_usage_events (created_at, guid);
CREATE INDEX app_usage_events_task_guid_index ON app_usage_events (task_guid);
";

const USAGE_COLUMNS: &str = "guid, created_at, state, previous_state, instance_count, \
    previous_instance_count, memory_in_mb_per_instance, previous_memory_in_mb_per_instance, \
    app_guid, app_name, space_guid, space_name, org_guid, package_state, previous_package_state, \
    parent_app_guid, parent_app_name, process_type";

const USAGE_VALUES: &str = "gen_random_uuid()::text, now(), 'STARTED', 'STARTED', p.instances, \
    p.instances, p.memory, p.memory, p.app_guid, p.name, p.space_guid, 'bench', p.org_guid, \
    'STAGED', 'STAGED', p.app_guid, p.name, 'web'";

/// CC's state change (`ProcessModel#save` with its usage event, one transaction): scale a
/// started process to the other instance count, and insert its usage event.
pub fn state_change_script(apps: usize) -> String {
    format!(
        "\\set id random(1, {apps})
BEGIN;
UPDATE processes SET instances = 3 - instances, updated_at = now() WHERE id = :id;
INSERT INTO app_usage_events ({USAGE_COLUMNS}) SELECT {USAGE_VALUES} FROM processes p WHERE p.id = :id;
COMMIT;
"
    )
}

/// CC's purge-and-reseed (`AppUsageEvent.purge_and_reseed_started_apps!`).
pub const PURGE: &str = "BEGIN;
TRUNCATE app_usage_events;
INSERT INTO app_usage_events (guid, created_at, state, previous_state, instance_count, \
    previous_instance_count, memory_in_mb_per_instance, previous_memory_in_mb_per_instance, \
    app_guid, app_name, space_guid, space_name, org_guid, package_state, previous_package_state, \
    parent_app_guid, parent_app_name, process_type)
  SELECT gen_random_uuid()::text, now(), 'STARTED', NULL, p.instances, NULL, p.memory, NULL, \
    p.app_guid, p.name, p.space_guid, 'bench', p.org_guid, 'STAGED', 'UNKNOWN', p.app_guid, \
    p.name, 'web' FROM processes p WHERE p.state = 'STARTED';
COMMIT;
";

/// A consumer's keyset read: one page of 5000 from a random position.
pub fn keyset_script(events: u64) -> String {
    format!(
        "\\set last random(0, {})
SELECT * FROM app_usage_events WHERE id > :last ORDER BY id LIMIT 5000;
",
        events.saturating_sub(5000)
    )
}
