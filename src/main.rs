//! `tally`: serve, token, tail, export, import, verify.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tally::config::{self, Overrides};
use tally::startup::{shutdown_signal, Application};
use tally::{auth, backup, tail, telemetry, verify};

/// mimalloc reuses freed memory instead of returning large blocks to the kernel and faulting in
/// fresh zeroed pages for the next group commit (glibc's behaviour above 128 KiB), which a
/// profile of the engine showed as its largest cost.
/// It is built without transparent huge pages (the workspace's `no_thp` feature): a partly used
/// 2 MiB page counts whole in RSS, and without them start-up and a catch-up held 30-60 MB less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Event-sourced usage metering with Cloud Foundry's Cloud Controller API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start tally (defaults: ./tally-data, 127.0.0.1:8181).
    Serve {
        /// A TOML config file (see deploy/tally.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The address to listen on.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print a signed token tally accepts (signed with the first auth.hmac_secrets entry, or
    /// the development secret `tally serve` created in the data directory).
    Token {
        /// A TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A scope to grant, e.g. cloud_controller.admin (repeat for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// The user id the token names.
        #[arg(long, default_value = "tally-developer")]
        user_id: String,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Print usage events as they commit, one JSON object per line, resuming from a checkpoint
    /// and across server restarts (a reference consumer of the stream).
    Tail {
        /// The server; default: http://<server.listen> of the config.
        #[arg(long)]
        url: Option<String>,
        /// A bearer token with a global read role; default: a development token
        /// (admin_read_only) signed like `tally token`.
        #[arg(long, env = "TALLY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Start after this event guid (wins over the checkpoint).
        #[arg(long)]
        after: Option<String>,
        /// A file that keeps the guid of the last event printed: read at start, rewritten
        /// (atomically) as events are printed.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// A TOML config file (for the default URL and token).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (for the default token).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write a consistent, checksummed backup of a data directory's log to a file, whether or
    /// not a tally is running on it (a running one is asked over HTTP; writes go on).
    Export {
        /// A TOML config file (data directory, and the running server's address).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The backup file to write (replaced only once the new one is complete).
        #[arg(long)]
        out: PathBuf,
        /// The running tally, when it holds the data directory; default:
        /// http://<server.listen> of the config.
        #[arg(long)]
        url: Option<String>,
        /// A global admin's token for the running tally; default: a development token
        /// signed like `tally token`.
        #[arg(long, env = "TALLY_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Restore a backup into a data directory that holds no log yet, then verify it.
    Import {
        /// The backup file.
        #[arg(long = "in")]
        input: PathBuf,
        /// A TOML config file to take the data directory from.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory to restore into.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The store to restore into, whatever `storage.backend` says: `sled` (the data
        /// directory) or `postgres` (`storage.postgres_url`, a database with no log yet).
        #[arg(long, value_enum)]
        into: Option<config::Backend>,
    },
    /// Check a stopped data directory offline; exits non-zero on any problem.
    Verify {
        /// A TOML config file to take the data directory from.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tally::startup::create_files_private();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tally: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Settings from the defaults, the config file, the `TALLY_*` environment and the flags.
fn settings(
    config: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<config::Settings> {
    Ok(config::load(
        config,
        std::env::vars(),
        &Overrides { data_dir, listen },
    )?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
        } => {
            let settings = settings(config.as_deref(), data_dir, listen)?;
            telemetry::init(&settings.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // A blocking-pool thread (start-up's recovery, the halves of a long usage
                // read) keeps what it freed until it allocates again or ends; ending 200 ms
                // after its last task instead of tokio's 10 s gives that memory back within
                // the allocator's purge delay (`tally-bench startup`: 274-279 MB instead of
                // 296-325 MB 8 s after a full catch-up, catch-up events/s unchanged).
                .thread_keep_alive(std::time::Duration::from_millis(200))
                .build()?;
            runtime.block_on(async {
                let shutdown = shutdown_signal()?;
                let app = Application::build(&settings).await?;
                tracing::info!(
                    address = %app.local_addr()?,
                    data_dir = %settings.storage.data_dir.display(),
                    "tally is listening on http://{}",
                    app.local_addr()?
                );
                app.run_until_stopped(shutdown).await
            })?;
            tracing::info!("tally stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            config,
            data_dir,
            scopes,
            user_id,
            ttl,
        } => {
            let settings = settings(config.as_deref(), data_dir, None)?;
            println!(
                "{}",
                auth::developer_token(&settings, &user_id, &scopes, ttl)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            url,
            token,
            after,
            checkpoint,
            limit,
            config,
            data_dir,
        } => {
            let settings = settings(config.as_deref(), data_dir, None)?;
            let token = match token {
                Some(token) => token,
                None => auth::developer_token(
                    &settings,
                    "tally-tail",
                    &["cloud_controller.admin_read_only".to_owned()],
                    24 * 3600,
                )?,
            };
            let options = tail::TailOptions {
                url: url.unwrap_or_else(|| format!("http://{}", settings.server.listen)),
                token,
                after,
                checkpoint,
                limit,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(tail::run(&options, &mut std::io::stdout()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            config,
            data_dir,
            out,
            url,
            token,
        } => {
            let settings = settings(config.as_deref(), data_dir, None)?;
            let online = || {
                let token = match token {
                    Some(token) => token,
                    None => auth::developer_token(
                        &settings,
                        "tally-export",
                        &["cloud_controller.admin".to_owned()],
                        3600,
                    )?,
                };
                Ok(backup::Online {
                    url: url.unwrap_or_else(|| format!("http://{}", settings.server.listen)),
                    token,
                })
            };
            let summary = match settings.storage.backend {
                config::Backend::Sled => backup::export(
                    &settings.storage.data_dir,
                    settings.storage.cache_capacity_mb,
                    &out,
                    online,
                )?,
                config::Backend::Postgres => {
                    backup::export_postgres(&tally::startup::pg_options(&settings)?, &out)?
                }
            };
            println!(
                "exported the log up to seq {} (epoch {}) to {}: {}{}",
                summary.meta.head,
                summary.meta.epoch,
                out.display(),
                backup::size(summary.bytes),
                if summary.online {
                    ", through the running tally"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            input,
            config,
            data_dir,
            into,
        } => {
            let mut settings = settings(config.as_deref(), data_dir, None)?;
            if let Some(into) = into {
                settings.storage.backend = into;
            }
            let (summary, target) = match settings.storage.backend {
                config::Backend::Sled => (
                    backup::import(
                        &input,
                        &settings.storage.data_dir,
                        settings.storage.cache_capacity_mb,
                    )?,
                    settings.storage.data_dir.display().to_string(),
                ),
                config::Backend::Postgres => {
                    let options = tally::startup::pg_options(&settings)?;
                    (
                        backup::import_postgres(&input, &options)?,
                        tally_store::redacted(&options.url),
                    )
                }
            };
            println!(
                "imported the log up to seq {} (epoch {}) into {target}; verify passed",
                summary.meta.head, summary.meta.epoch,
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { config, data_dir } => {
            let settings = settings(config.as_deref(), data_dir, None)?;
            let sound = verify::run_for(&settings, &mut std::io::stdout())?;
            Ok(if sound {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
