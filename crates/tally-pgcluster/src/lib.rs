//! A throwaway PostgreSQL cluster for tests and benchmarks: Debian's server binaries (the
//! `postgresql` package is installed with apt when missing and we are root), `initdb` in a
//! temporary directory (as the `postgres` user when we are root: `initdb` refuses root), a
//! server on a free loopback port with trust authentication, stopped and removed when the
//! [`Cluster`] is dropped. [`shared`] keeps one cluster for a whole test process and removes it
//! once that process has ended (a static is never dropped), so each test makes its own
//! database ([`Cluster::database`]) and tests do not see each other's data.
//!
//! A real server, never a mock: the tests that use it check what PostgreSQL really does.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// What can go wrong starting or driving the cluster, in words for a test's failure message.
pub type Error = String;

/// A PostgreSQL cluster in a temporary directory.
pub struct Cluster {
    bin: PathBuf,
    root: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Who runs the server and its tools (`postgres` when we are root).
    user: Option<String>,
    /// Removed on drop, unless [`shared`] handed the removal to a watchdog.
    temp: Option<tempfile::TempDir>,
}

/// The user every cluster is initialised with (trust authentication on loopback).
pub const USER: &str = "tally";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The directory of PostgreSQL's server binaries (the newest installed), installing Debian's
/// `postgresql` package first when there is none and we may.
pub fn binaries() -> Result<PathBuf, Error> {
    let find = || -> Option<PathBuf> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists() && bin.join("pgbench").exists())
            .collect();
        versions.sort();
        versions.pop()
    };
    if let Some(bin) = find() {
        return Ok(bin);
    }
    if !is_root() {
        return Err(
            "PostgreSQL's server is not installed and this is not root: \
                    apt-get install postgresql, then run again"
                .into(),
        );
    }
    eprintln!("installing Debian's postgresql package ...");
    for args in [
        &["update", "-qq"][..],
        &[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "postgresql",
        ][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get {args:?} failed"));
        }
    }
    find().ok_or_else(|| "apt-get installed postgresql, but no initdb was found".into())
}

/// Makes `user` the owner of `path` (the cluster's files belong to the user its server runs as).
fn give(user: &str, path: &Path) -> Result<(), Error> {
    let status = Command::new("chown")
        .args([&format!("{user}:"), &path.display().to_string()])
        .status()
        .map_err(|e| format!("cannot run chown: {e}"))?;
    if !status.success() {
        return Err(format!("chown of {} failed", path.display()));
    }
    Ok(())
}

/// A loopback port nobody listens on now.
fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port())
}

/// How a cluster is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// `-c name=value` settings for the server, beside the port and address.
    pub settings: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            settings: vec![("max_connections".into(), "200".into())],
        }
    }
}

impl Cluster {
    /// initdb, then start on a free loopback port.
    pub fn start(options: &Options) -> Result<Self, Error> {
        let bin = binaries()?;
        let temp = tempfile::Builder::new()
            .prefix("tally-pg-")
            .tempdir()
            .map_err(|e| format!("no temporary directory: {e}"))?;
        let root = temp.path().to_path_buf();
        let dir = root.join("data");
        let user = is_root().then(|| "postgres".to_owned());
        if let Some(user) = &user {
            give(user, &root)?;
        }
        let port = free_port()?;
        let cluster = Self {
            bin,
            root,
            dir,
            port,
            user,
            temp: Some(temp),
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.dir.display().to_string(),
                "-A",
                "trust",
                "-U",
                USER,
                "--no-instructions",
            ],
        )?;
        let mut settings =
            format!("-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''");
        for (name, value) in &options.settings {
            settings.push_str(&format!(" -c {name}={value}"));
        }
        std::fs::write(cluster.root.join("settings"), &settings)
            .map_err(|e| format!("cannot write the settings: {e}"))?;
        cluster.start_again()?;
        Ok(cluster)
    }

    /// A streaming standby of this cluster (`pg_basebackup` into a new temporary directory,
    /// started on a port of its own, replicating as `application_name = standby`). With
    /// `synchronous`, this cluster then waits for the standby's flush before a commit returns
    /// (`synchronous_standby_names = 'standby'`), so whatever a client was told is committed is
    /// on both.
    pub fn standby(&self, synchronous: bool) -> Result<Cluster, Error> {
        let temp = tempfile::Builder::new()
            .prefix("tally-pg-standby-")
            .tempdir()
            .map_err(|e| format!("no temporary directory: {e}"))?;
        let root = temp.path().to_path_buf();
        if let Some(user) = &self.user {
            give(user, &root)?;
        }
        let port = free_port()?;
        let standby = Self {
            bin: self.bin.clone(),
            dir: root.join("data"),
            root,
            port,
            user: self.user.clone(),
            temp: Some(temp),
        };
        let source = format!("host=127.0.0.1 port={} user={USER}", self.port);
        standby.run(
            "pg_basebackup",
            &[
                "-d",
                &source,
                "-D",
                &standby.dir.display().to_string(),
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        )?;
        // What `pg_basebackup -R` writes, with the name the primary waits for.
        let conf = standby.dir.join("postgresql.auto.conf");
        let mut auto = std::fs::read_to_string(&conf).unwrap_or_default();
        auto.push_str(&format!(
            "primary_conninfo = '{source} application_name=standby'\n"
        ));
        standby.write_as_owner(&conf, &auto)?;
        standby.write_as_owner(&standby.dir.join("standby.signal"), "")?;
        let settings = std::fs::read_to_string(self.root.join("settings"))
            .map_err(|e| format!("cannot read the settings: {e}"))?
            .replace(
                &format!("-c port={}", self.port),
                &format!("-c port={port}"),
            );
        std::fs::write(standby.root.join("settings"), settings)
            .map_err(|e| format!("cannot write the settings: {e}"))?;
        standby.start_again()?;
        if synchronous {
            self.sql("ALTER SYSTEM SET synchronous_standby_names = 'standby'")?;
            self.sql("SELECT pg_reload_conf()")?;
            // Until the standby is streaming, commits on the primary would wait for it.
            for _ in 0..100 {
                let state = self.sql(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'",
                )?;
                if state.trim() == "sync" {
                    return Ok(standby);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            return Err("the standby never became synchronous".into());
        }
        Ok(standby)
    }

    /// Promotes a standby to a primary (`pg_ctl promote`, waiting until it takes writes).
    pub fn promote(&self) -> Result<(), Error> {
        self.run(
            "pg_ctl",
            &["-D", &self.dir.display().to_string(), "-w", "promote"],
        )
        .map(drop)
    }

    /// Writes a file of the data directory as the cluster's owner would own it.
    fn write_as_owner(&self, path: &Path, text: &str) -> Result<(), Error> {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        match &self.user {
            Some(user) => give(user, path),
            None => Ok(()),
        }
    }

    /// Starts the server again after [`Cluster::stop`] (same data, same port).
    pub fn start_again(&self) -> Result<(), Error> {
        let settings = std::fs::read_to_string(self.root.join("settings"))
            .map_err(|e| format!("cannot read the settings: {e}"))?;
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.dir.display().to_string(),
                "-o",
                &settings,
                "-l",
                &self.dir.join("server.log").display().to_string(),
                "-w",
                "start",
            ],
        )
        .map(drop)
    }

    /// Stops the server: `mode` is pg_ctl's `fast` or `immediate` (a crash: no checkpoint).
    pub fn stop(&self, mode: &str) -> Result<(), Error> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.dir.display().to_string(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        )
        .map(drop)
    }

    /// A command running one of the server's tools (as the cluster's owner).
    pub fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        match &self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Runs one of the server's tools; what it printed.
    pub fn run(&self, tool: &str, args: &[&str]) -> Result<String, Error> {
        let output = self
            .command(tool)
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {tool}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// psql's connection arguments.
    pub fn connection(&self) -> [String; 6] {
        [
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            USER.into(),
        ]
    }

    /// Runs SQL with psql in `database` (stops at the first error); what it printed, unaligned
    /// and without headers.
    pub fn sql_in(&self, database: &str, sql: &str) -> Result<String, Error> {
        let mut args: Vec<String> = self.connection().to_vec();
        args.extend(
            [
                "-d",
                database,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]
            .map(str::to_owned),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("psql", &args)
    }

    /// [`Cluster::sql_in`] the `postgres` database.
    pub fn sql(&self, sql: &str) -> Result<String, Error> {
        self.sql_in("postgres", sql)
    }

    /// A new, empty database of its own; its name.
    pub fn database(&self, prefix: &str) -> Result<String, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.sql(&format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// A libpq URL of `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The temporary directory around the data directory (for the caller's own files).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stops the server and removes the directory once `pid` has ended.
    fn watch(&mut self, pid: u32) -> Result<(), Error> {
        let stop = self
            .command("pg_ctl")
            .get_program()
            .to_string_lossy()
            .into_owned();
        let args: Vec<String> = self
            .command("pg_ctl")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {stop} {} -D '{}' -m immediate stop >/dev/null 2>&1; rm -rf '{}'",
            args.join(" "),
            self.dir.display(),
            self.root.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the watchdog: {e}"))?;
        // The watchdog removes the directory; the TempDir must not remove it earlier.
        if let Some(temp) = self.temp.take() {
            let _ = temp.keep();
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.temp.is_some() {
            let _ = self.stop("immediate");
        }
    }
}

/// One cluster for the whole process (started on first use), stopped and removed by a watchdog
/// once the process has ended.
pub fn shared() -> Result<&'static Cluster, Error> {
    static SHARED: OnceLock<Result<Cluster, Error>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let mut cluster = Cluster::start(&Options::default())?;
            cluster.watch(std::process::id())?;
            Ok(cluster)
        })
        .as_ref()
        .map_err(Clone::clone)
}
