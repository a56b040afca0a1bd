//! `tally-bench`: drives a tally over HTTP as its users do and prints throughput and
//! p50/p90/p99/max latency (a Markdown table, or JSON with `--json`).
//!
//! Every workload runs against `--url` (with `--token` or `TALLY_TOKEN`, a global admin's) or,
//! without `--url`, against a fresh tally it starts from the `tally` binary (`--tally`, default:
//! the `tally` next to this binary) on a temporary data directory. `startup` always starts its
//! own. Build both first: `cargo build --release -p tally -p tally-bench`.

mod postgres;
mod report;
mod scenarios;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use report::{Latencies, Row};
use scenarios::{Consumer, Fleet, Pattern};
use target::Target;

#[derive(Parser)]
#[command(name = "tally-bench", about = "Load generator for tally")]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct Common {
    /// A running tally; default: start a fresh one.
    #[arg(long, global = true)]
    url: Option<String>,
    /// A global admin's token for `--url`.
    #[arg(long, env = "TALLY_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The `tally` binary to start; default: the one next to this binary.
    #[arg(long, global = true)]
    tally: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// The store of a tally the bench starts: `sled` (embedded) or `postgres` (a throwaway
    /// PostgreSQL on this machine, fsync on, started and stopped by the bench).
    #[arg(long, value_enum, default_value_t = StoreKind::Sled, global = true)]
    store: StoreKind,
    /// Nodes the bench starts on one PostgreSQL (with `--store postgres`); every workload
    /// spreads its connections over them round robin.
    #[arg(long, default_value_t = 1, global = true)]
    nodes: usize,
}

/// A PostgreSQL cluster to keep while the tally runs (none for sled), and the variables that
/// point tally at its store.
type StoreSetup = (Option<tally_pgcluster::Cluster>, Vec<(String, String)>);

/// Where a tally the bench starts keeps its log.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    Sled,
    Postgres,
}

/// The size of the foundation a workload runs on: design.md measures at 100,000 apps and
/// 1,000,000 usage and audit events.
#[derive(Args, Clone, Copy)]
struct Size {
    /// Apps in the table.
    #[arg(long, default_value_t = 100_000)]
    apps: usize,
    /// Usage events in the epoch (and as many audit events) before measuring: each scale of a
    /// started app writes one of each.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// A quick run instead: 1,000 apps and 10,000 events.
    #[arg(long)]
    small: bool,
}

impl Size {
    fn apps(self) -> usize {
        if self.small {
            1_000
        } else {
            self.apps
        }
    }

    fn events(self) -> u64 {
        if self.small {
            10_000
        } else {
            self.events
        }
    }
}

#[derive(Subcommand)]
enum Workload {
    /// State changes: N apps, the log filled to the size, a warm-up, then C connections each
    /// PUTting changes to its own apps for a duration. Counts PUTs (each changed its app) apart
    /// from the usage events they wrote.
    StateChanges {
        #[command(flatten)]
        size: Size,
        /// What the clients change: `instances` of started apps (one usage event per PUT,
        /// Cloud Controller's scale) or `toggle` (start, scale, stop).
        #[arg(long, value_enum, default_value_t = Pattern::Instances)]
        pattern: scenarios::Pattern,
        /// Connection counts to run, one after the other.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 64])]
        concurrency: Vec<usize>,
        /// Seconds per connection count.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Unmeasured seconds of the same load first, so the run starts in a steady state.
        #[arg(long, default_value_t = 5)]
        warmup: u64,
    },
    /// Read every usage event from the start: v3 pages of 5000 and v2 pages of 10000.
    CatchUp {
        #[command(flatten)]
        size: Size,
        /// Consumers reading the whole epoch at once (spread over the nodes); with more than
        /// one, v3 only and their events/s together.
        #[arg(long, default_value_t = 1)]
        consumers: usize,
    },
    /// List pages on a full log: audit events filtered by type (v3 and v2) and the apps
    /// list (a name filter and a deep page), each at one connection.
    Lists {
        #[command(flatten)]
        size: Size,
        /// Requests per page measured.
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
    /// A mixed load on a full log: C connections, each request a GET of an app (9 in 10) or
    /// a scale of a started one (1 in 10).
    Mixed {
        #[command(flatten)]
        size: Size,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// One consumer on the live stream while writers commit; commit-to-delivery latency.
    TailLatency {
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// Milliseconds between one writer's requests.
        #[arg(long, default_value_t = 5)]
        interval_ms: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// N started apps, then purge-and-reseed; checks the stream then holds exactly N events.
    Purge {
        #[arg(long, default_value_t = 100_000)]
        apps: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Start-up time and RSS with a data directory of M log records (and N apps).
    Startup {
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        #[arg(long, default_value_t = 100_000)]
        apps: usize,
        /// Start-ups measured.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Cloud Controller's own patterns on a throwaway PostgreSQL (Debian's package, installed
    /// when missing) beside tally, at the same size, in the same run: state changes at 64 and
    /// 1 connections (medians of `--runs`), a keyset read of pages of 5000, and
    /// purge-and-reseed; tally's rows carry the ratios.
    ComparePostgres {
        #[command(flatten)]
        size: Size,
        /// Seconds per state-change run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// State-change runs per connection count (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Purges measured on each side.
        #[arg(long, default_value_t = 5)]
        purges: usize,
    },
    /// A long run of state changes on a fixed set of apps: after every round, what the store
    /// holds on disk and in memory, to show whether they grow with the log or beyond it.
    Soak {
        #[command(flatten)]
        size: Size,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Rounds of state changes, each followed by the figures.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Seconds per round.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Everything above with its defaults, each on a fresh tally (`--small` for a quick run).
    All {
        #[command(flatten)]
        size: Size,
    },
}

impl Common {
    fn tally(&self) -> anyhow::Result<PathBuf> {
        match &self.tally {
            Some(path) => Ok(path.clone()),
            None => Ok(std::env::current_exe()?
                .parent()
                .context("no directory")?
                .join("tally")),
        }
    }

    /// The store a tally the bench starts uses: for PostgreSQL a throwaway cluster (which the
    /// caller keeps as long as the tally runs) and the variables that point tally at it.
    fn store(&self) -> anyhow::Result<StoreSetup> {
        match self.store {
            StoreKind::Sled => Ok((None, Vec::new())),
            StoreKind::Postgres => {
                let cluster = tally_pgcluster::Cluster::start(&tally_pgcluster::Options::default())
                    .map_err(anyhow::Error::msg)?;
                let database = cluster.database("bench").map_err(anyhow::Error::msg)?;
                eprintln!("tally's PostgreSQL in {}", cluster.dir().display());
                let env = vec![
                    ("TALLY_STORAGE__BACKEND".to_owned(), "postgres".to_owned()),
                    (
                        "TALLY_STORAGE__POSTGRES_URL".to_owned(),
                        cluster.url(&database),
                    ),
                ];
                Ok((Some(cluster), env))
            }
        }
    }

    /// The tally to drive (one the bench started owns its temporary directory).
    async fn target(&self) -> anyhow::Result<Target> {
        match &self.url {
            Some(url) => {
                let token = self
                    .token
                    .as_deref()
                    .context("--url needs --token (or TALLY_TOKEN): a global admin's token")?;
                Target::connect(url, token)
            }
            None => {
                let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
                let data = dir.path().join("data");
                let (cluster, mut env) = self.store()?;
                if self.nodes > 1 {
                    if cluster.is_none() {
                        anyhow::bail!("--nodes needs --store postgres (sled is one node's own)");
                    }
                    // One token secret for all, so any node takes the bench's token (a
                    // throwaway cluster on loopback: it only has to be the same everywhere).
                    let secret = format!(
                        "tally-bench-{}-{}",
                        std::process::id(),
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_nanos())
                            .unwrap_or_default()
                    );
                    env.push((
                        "TALLY_AUTH__HMAC_SECRETS".to_owned(),
                        format!("[\"{secret}\"]"),
                    ));
                }
                let target = Target::spawn_with(&self.tally()?, &data, &env).await?;
                let mut others = Vec::new();
                for n in 1..self.nodes.max(1) {
                    let data = dir.path().join(format!("data-{n}"));
                    others.push(Target::spawn_with(&self.tally()?, &data, &env).await?);
                }
                let target = target.with_nodes(others).owning(dir);
                Ok(match cluster {
                    Some(cluster) => target.owning_cluster(cluster),
                    None => target,
                })
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tally-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tally-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let common = &cli.common;
    let mut rows = Vec::new();
    match cli.workload {
        Workload::StateChanges {
            size,
            pattern,
            concurrency,
            seconds,
            warmup,
        } => {
            let run = Run {
                pattern,
                seconds,
                warmup,
            };
            state_changes(common, size, run, &concurrency, &mut rows).await?
        }
        Workload::CatchUp { size, consumers } => {
            catch_up(common, size, consumers, &mut rows).await?
        }
        Workload::Lists { size, requests } => lists(common, size, requests, &mut rows).await?,
        Workload::Mixed {
            size,
            concurrency,
            seconds,
        } => mixed(common, size, concurrency, seconds, &mut rows).await?,
        Workload::TailLatency {
            writers,
            interval_ms,
            seconds,
        } => tail_latency(common, writers, interval_ms, seconds, &mut rows).await?,
        Workload::ComparePostgres {
            size,
            seconds,
            runs,
            purges,
        } => compare_postgres(common, size, seconds, runs.max(1), purges, &mut rows).await?,
        Workload::Purge { apps, rounds } => purge(common, apps, rounds, &mut rows).await?,
        Workload::Startup {
            records,
            apps,
            rounds,
        } => startup(common, records, apps, rounds, &mut rows).await?,
        Workload::Soak {
            size,
            concurrency,
            rounds,
            seconds,
        } => soak(common, size, concurrency, rounds, seconds, &mut rows).await?,
        Workload::All { size } => {
            let run = Run {
                pattern: Pattern::Instances,
                seconds: 10,
                warmup: 5,
            };
            // One foundation of the given size for the workloads that only add to it.
            let target = common.target().await?;
            let apps = fill(&target, size, Pattern::Instances).await?;
            for c in [1, 64] {
                push(&mut rows, measure(&target, &apps, run, c).await?);
            }
            read_everything(&target, &mut rows).await?;
            list_pages(&target, &apps, 200, &mut rows).await?;
            push(
                &mut rows,
                scenarios::mixed(&target, &apps, 64, secs(10)).await?,
            );
            drop(target);
            tail_latency(common, 4, 5, 10, &mut rows).await?;
            let purged = if size.small { 1_000 } else { 100_000 };
            purge(common, purged, 5, &mut rows).await?;
            let records = if size.small { 20_000 } else { 1_000_000 };
            startup(common, records, size.apps(), 3, &mut rows).await?;
        }
    }
    report::print(&rows, common.json)
}

fn push(rows: &mut Vec<Row>, row: Row) {
    report::announce(&row);
    rows.push(row);
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// How a state-change run goes.
#[derive(Clone, Copy)]
struct Run {
    pattern: scenarios::Pattern,
    seconds: u64,
    warmup: u64,
}

/// Brings a tally to the size: `size.apps()` apps in one space (beside whatever it holds;
/// started for the `instances` pattern, stopped for `toggle`), then changes them with the
/// pattern until the epoch holds `size.events()` usage events.
async fn fill(target: &Target, size: Size, pattern: Pattern) -> anyhow::Result<Fleet> {
    let guids = scenarios::create_apps(target, size.apps(), pattern.started(), 64).await?;
    let apps = Fleet::new(guids);
    let started = Instant::now();
    let mut filled = false;
    while target.usage_events().await? < size.events() {
        scenarios::state_changes(target, &apps, pattern, 64, secs(5)).await?;
        filled = true;
    }
    if filled {
        eprintln!(
            "filled the epoch to {} usage events in {:.0} s",
            target.usage_events().await?,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(apps)
}

/// A warm-up, then one measured state-change run at `concurrency` connections.
async fn measure(
    target: &Target,
    apps: &Fleet,
    run: Run,
    concurrency: usize,
) -> anyhow::Result<Row> {
    let c = concurrency.max(1);
    if run.warmup > 0 {
        scenarios::state_changes(target, apps, run.pattern, c, secs(run.warmup)).await?;
    }
    scenarios::state_changes(target, apps, run.pattern, c, secs(run.seconds)).await
}

async fn state_changes(
    common: &Common,
    size: Size,
    run: Run,
    concurrency: &[usize],
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let target = common.target().await?;
    let apps = fill(&target, size, run.pattern).await?;
    for &c in concurrency {
        push(rows, measure(&target, &apps, run, c).await?);
    }
    Ok(())
}

async fn catch_up(
    common: &Common,
    size: Size,
    consumers: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let target = common.target().await?;
    if target.usage_events().await? < size.events() {
        fill(&target, size, Pattern::Instances).await?;
    }
    if consumers > 1 {
        let (row, _) = scenarios::catch_up_by(&target, true, consumers).await?;
        push(rows, row);
        return Ok(());
    }
    read_everything(&target, rows).await
}

/// The whole epoch read by one consumer: v3 and v2 consumers that parse each page before
/// asking for the next, and a v3 consumer that asks for the next page while it parses.
async fn read_everything(target: &Target, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    for (v3, consumer) in [
        (true, Consumer::Sequential),
        (true, Consumer::Pipelined),
        (false, Consumer::Sequential),
    ] {
        let (row, _) = scenarios::catch_up_with(target, v3, 1, consumer).await?;
        push(rows, row);
    }
    Ok(())
}

async fn lists(
    common: &Common,
    size: Size,
    requests: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let target = common.target().await?;
    let apps = fill(&target, size, Pattern::Instances).await?;
    list_pages(&target, &apps, requests, rows).await
}

async fn list_pages(
    target: &Target,
    apps: &Fleet,
    requests: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let deep = (apps.len() / 50).clamp(1, 1000);
    let name = format!("app-{}", apps.len() / 2);
    // The fleet's one space (every app is in it): the v3 list by space_guids is its worst case.
    let first = apps.guids.first().context("no apps")?;
    let (_, app) = target
        .json(reqwest::Method::GET, &format!("/v3/apps/{first}"), None)
        .await?;
    let space = app["relationships"]["space"]["data"]["guid"]
        .as_str()
        .context("the app's space")?
        .to_owned();
    let pages = [
        "/v3/audit_events?per_page=50&types=audit.app.update".to_owned(),
        "/v2/events?q=type:audit.app.update".to_owned(),
        format!("/v2/apps?q=name:{name}"),
        format!("/v2/apps?results-per-page=50&page={deep}"),
        format!("/v3/apps?names={name}&per_page=50"),
        format!("/v3/apps?space_guids={space}&per_page=50"),
        format!("/v3/apps?space_guids={space}&per_page=50&page={deep}"),
    ];
    for page in pages {
        push(rows, scenarios::list_page(target, &page, requests).await?);
    }
    Ok(())
}

async fn mixed(
    common: &Common,
    size: Size,
    concurrency: usize,
    seconds: u64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let target = common.target().await?;
    let apps = fill(&target, size, Pattern::Instances).await?;
    push(
        rows,
        scenarios::mixed(&target, &apps, concurrency.max(1), secs(seconds)).await?,
    );
    Ok(())
}

/// The median of some runs' rows, by throughput.
fn median(mut rows: Vec<Row>) -> anyhow::Result<Row> {
    rows.sort_by(|a, b| {
        a.throughput
            .unwrap_or(0.0)
            .total_cmp(&b.throughput.unwrap_or(0.0))
    });
    let middle = rows.len() / 2;
    rows.into_iter().nth(middle).context("no run")
}

async fn compare_postgres(
    common: &Common,
    size: Size,
    seconds: u64,
    runs: usize,
    purges: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    use postgres::{Limit, Postgres};
    let (apps, events) = (size.apps(), size.events());
    // PostgreSQL first, then stopped, so the two never share the cores.
    let (pg_write, pg_read, pg_purge) = {
        let pg = Postgres::start()?;
        eprintln!("PostgreSQL cluster in {}", pg.dir().display());
        pg.seed(apps, events)?;
        let script = postgres::state_change_script(apps);
        let mut write = Vec::new();
        for c in [64, 1] {
            let mut medians = Vec::new();
            for _ in 0..runs {
                let run = pg.pgbench(&script, c, Limit::For(secs(seconds)))?;
                medians.push(
                    Row::new("postgres", format!("CC's state change, {c} clients"))
                        .throughput(run.tps, "changes/s")
                        .latency(&run.latencies),
                );
            }
            let row = median(medians)?;
            push(rows, row.clone());
            write.push(row);
        }
        let read = pg.pgbench(
            &postgres::keyset_script(pg.usage_events()?),
            1,
            Limit::For(secs(seconds)),
        )?;
        let read = Row::new(
            "postgres",
            "keyset read, pages of 5000, 1 client".to_owned(),
        )
        .throughput(read.tps * 5000.0, "events/s")
        .latency(&read.latencies);
        push(rows, read.clone());
        let purge = pg.pgbench(postgres::PURGE, 1, Limit::Transactions(purges as u64))?;
        let purge = Row::new(
            "postgres",
            format!("purge-and-reseed of {apps} started processes, {purges} purges"),
        )
        .latency(&purge.latencies)
        .note("TRUNCATE + INSERT ... SELECT, one transaction");
        push(rows, purge.clone());
        (write, read, purge)
    };
    let ratio = |tally: &Row, pg: &Row| match (tally.throughput, pg.throughput) {
        (Some(t), Some(p)) if p > 0.0 => format!("{:.2}× PostgreSQL ({p:.0}/s)", t / p),
        _ => String::new(),
    };
    let target = common.target().await?;
    let fleet = fill(&target, size, Pattern::Instances).await?;
    let run = Run {
        pattern: Pattern::Instances,
        seconds,
        warmup: 5,
    };
    for (c, pg) in [64, 1].into_iter().zip(&pg_write) {
        let mut medians = Vec::new();
        for _ in 0..runs {
            medians.push(measure(&target, &fleet, run, c).await?);
        }
        let row = median(medians)?;
        let note = format!("{}; median of {runs}; {}", row.note, ratio(&row, pg));
        push(rows, row.note(note));
    }
    for consumer in [Consumer::Sequential, Consumer::Pipelined] {
        let (read, _) = scenarios::catch_up_with(&target, true, 1, consumer).await?;
        let note = format!("{}; {}", read.note, ratio(&read, &pg_read));
        push(rows, read.note(note));
    }
    let purged = scenarios::purge(&target, apps, purges.max(1)).await?;
    let p50 = |row: &Row| row.latency.as_ref().map(|l| l.p50_ms);
    let note = match (p50(&purged), p50(&pg_purge)) {
        (Some(t), Some(p)) if p > 0.0 => {
            format!(
                "{}; p50 {:.2}× PostgreSQL's ({p:.0} ms)",
                purged.note,
                t / p
            )
        }
        _ => purged.note.clone(),
    };
    push(rows, purged.note(note));
    Ok(())
}

async fn tail_latency(
    common: &Common,
    writers: usize,
    interval_ms: u64,
    seconds: u64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let target = common.target().await?;
    let apps = scenarios::create_apps(&target, writers.max(1) * 8, false, 16).await?;
    let row = scenarios::tail_latency(
        &target,
        &apps,
        writers.max(1),
        Duration::from_millis(interval_ms.max(1)),
        Duration::from_secs(seconds),
    )
    .await?;
    push(rows, row);
    Ok(())
}

async fn purge(
    common: &Common,
    apps: usize,
    rounds: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let target = common.target().await?;
    let already = target.usage_events().await?;
    anyhow::ensure!(
        common.url.is_none() || already == 0,
        "purge needs a tally with no usage events yet (its stream must hold only these apps)"
    );
    scenarios::create_apps(&target, apps, true, 64).await?;
    let row = scenarios::purge(&target, apps, rounds.max(1)).await?;
    push(rows, row);
    Ok(())
}

async fn startup(
    common: &Common,
    records: u64,
    apps: usize,
    rounds: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let tally = common.tally()?;
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let data = dir.path().join("data");
    // A PostgreSQL the rounds share (kept until the end of the workload).
    let (cluster, env) = common.store()?;
    let target = Target::spawn_with(&tally, &data, &env).await?;
    let filling = Instant::now();
    let guids = Fleet::new(scenarios::create_apps(&target, apps, false, 64).await?);
    while target.head().await? < records {
        scenarios::state_changes(&target, &guids, Pattern::Toggle, 64, secs(5)).await?;
    }
    let head = target.head().await?;
    let events = target.usage_events().await?;
    eprintln!(
        "filled the log to {head} records ({events} usage events, {apps} apps) in {:.0} s",
        filling.elapsed().as_secs_f64()
    );
    target.stop()?;
    let mut ready = Latencies::new();
    let (mut at_ready, mut settled, mut peak, mut caught_up, mut idle) = (0, 0, 0, 0, 0);
    for round in 0..rounds.max(1) {
        let target = Target::spawn_with(&tally, &data, &env).await?;
        if let Some(after) = target.ready_after {
            ready.record(after);
        }
        at_ready = at_ready.max(target.rss_bytes().unwrap_or(0));
        settled = settled.max(target.settled_rss_bytes().await?.unwrap_or(0));
        peak = peak.max(target.peak_rss_bytes().unwrap_or(0));
        if round == 0 {
            // A consumer reading the whole stream from the start, and the memory after it.
            scenarios::catch_up(&target, true).await?;
            caught_up = target.settled_rss_bytes().await?.unwrap_or(0);
            // Then idle: the store lets go of its cache after a quiet second, and the
            // allocator returns what was freed a second (its purge delay) after that.
            idle = target
                .rss_bytes_after(Duration::from_secs(6))
                .await?
                .unwrap_or(0);
        }
        target.stop()?;
    }
    // On PostgreSQL: the whole cluster directory (WAL included).
    let size: u64 = match &cluster {
        Some(cluster) => walk_size(cluster.dir()),
        None => walk_size(&data.join("log")),
    };
    let mb = |bytes: u64| bytes as f64 / 1e6;
    push(
        rows,
        Row::new(
            "startup",
            format!("{head} records, {apps} apps, {} start-ups", rounds.max(1)),
        )
        .latency(&ready)
        .note(format!(
            "process start → /readyz 200; RSS (max of the start-ups) at ready {:.0} MB, \
             settled 2 s later {:.0} MB, peak {:.0} MB, after a full catch-up read {:.0} MB \
             (2 s later; 8 s later, idle, {:.0} MB); log {:.0} MB on disk",
            mb(at_ready),
            mb(settled),
            mb(peak),
            mb(caught_up),
            mb(idle),
            mb(size)
        ))
        .goal("ready ≤ 3 s; RSS ≤ 300 MB"),
    );
    // Backups of the same log: offline export, then import into a new data directory (or, on
    // PostgreSQL, a new database of the same cluster).
    let backup = dir.path().join("backup.tallybak");
    let restore_env = match &cluster {
        Some(cluster) => {
            let database = cluster.database("restored").map_err(anyhow::Error::msg)?;
            vec![
                ("TALLY_STORAGE__BACKEND".to_owned(), "postgres".to_owned()),
                (
                    "TALLY_STORAGE__POSTGRES_URL".to_owned(),
                    cluster.url(&database),
                ),
            ]
        }
        None => Vec::new(),
    };
    let run = |args: &[&std::ffi::OsStr], env: &[(String, String)]| -> anyhow::Result<Duration> {
        let started = Instant::now();
        let output = std::process::Command::new(&tally)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "tally {:?} failed: {}",
            args,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(started.elapsed())
    };
    let export = run(
        &[
            "export".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--out".as_ref(),
            backup.as_os_str(),
        ],
        &env,
    )?;
    let bytes = std::fs::metadata(&backup)?.len();
    let import = run(
        &[
            "import".as_ref(),
            "--in".as_ref(),
            backup.as_os_str(),
            "--data-dir".as_ref(),
            dir.path().join("restored").as_os_str(),
        ],
        &restore_env,
    )?;
    let mb = bytes as f64 / 1e6;
    push(
        rows,
        Row::new("backup", format!("{head} records, backup {mb:.0} MB"))
            .throughput(mb / export.as_secs_f64(), "MB/s export")
            .note(format!(
                "tally export {:.1} s; tally import (with table rebuild and verify) {:.1} s",
                export.as_secs_f64(),
                import.as_secs_f64()
            )),
    );
    Ok(())
}

/// Rounds of state changes on one fleet, each followed by what the store then holds on disk
/// and in memory.
async fn soak(
    common: &Common,
    size: Size,
    concurrency: usize,
    rounds: usize,
    seconds: u64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let target = common.target().await?;
    let apps = fill(&target, size, Pattern::Instances).await?;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let store = target.data_dir().map(|data| data.join("log"));
    for round in 0..=rounds {
        if round > 0 {
            push(
                rows,
                scenarios::state_changes(
                    &target,
                    &apps,
                    Pattern::Instances,
                    concurrency.max(1),
                    secs(seconds),
                )
                .await?,
            );
        }
        let head = target.head().await?;
        let disk = match &store {
            Some(dir) => {
                let total = walk_size(dir);
                let blobs = dir.join("blobs");
                let files = std::fs::read_dir(&blobs).map_or(0, |entries| entries.count());
                format!(
                    "on disk {:.0} MB ({:.0} bytes per record; {files} blob files, {:.0} MB)",
                    mb(total),
                    total as f64 / head.max(1) as f64,
                    mb(walk_size(&blobs)),
                )
            }
            None => "on disk: n/a (a tally this bench did not start)".to_owned(),
        };
        let rss = target
            .settled_rss_bytes()
            .await?
            .map_or_else(|| "n/a".to_owned(), |bytes| format!("{:.0} MB", mb(bytes)));
        push(
            rows,
            Row::new(
                "soak",
                format!("after round {round} of {rounds} ({seconds} s each)"),
            )
            .note(format!(
                "{head} records, {} apps; {disk}; RSS 2 s later {rss}",
                apps.len()
            )),
        );
    }
    Ok(())
}

/// Bytes of every file under `dir`.
fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => walk_size(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
