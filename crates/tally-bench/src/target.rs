//! The tally under load: one the user runs (`--url`, `--token`), or one the bench starts from
//! the `tally` binary on a fresh (or given) data directory.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A tally to drive.
pub struct Target {
    /// Its base URL, without a trailing slash.
    pub url: String,
    /// A global admin's token.
    pub token: String,
    /// The connection pool every request goes through.
    pub client: reqwest::Client,
    /// The process, when the bench started it.
    child: Option<Child>,
    /// The other nodes on the same PostgreSQL, when the bench started several (dropped, and
    /// so killed, before the cluster: fields drop in this order).
    others: Vec<Target>,
    /// Time from spawning the process to `/readyz` answering 200.
    pub ready_after: Option<Duration>,
    /// The temporary directory its data lives in, when the bench made one: removed only after
    /// the process was killed (fields drop after [`Drop::drop`]), never under a running tally.
    dir: Option<tempfile::TempDir>,
    /// The PostgreSQL its log lives in, when the bench started one (stopped after the tally).
    cluster: Option<tally_pgcluster::Cluster>,
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()?)
}

impl Target {
    /// A tally someone else runs.
    pub fn connect(url: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            client: client()?,
            child: None,
            ready_after: None,
            dir: None,
            cluster: None,
            others: Vec::new(),
        })
    }

    /// Starts `tally serve` on `data_dir` and a free loopback port; returns once `/readyz`
    /// answers 200, having asked the binary for an admin token.
    /// `env`: `TALLY_…` variables for it (the store they choose).
    pub async fn spawn_with(
        tally: &Path,
        data_dir: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let started = Instant::now();
        let child = Command::new(tally)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir)
            .env("RUST_LOG", "error")
            .env("TALLY_RETENTION__CUTOFF_AGE_DAYS", "0")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", tally.display()))?;
        let mut target = Self {
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            client: client()?,
            child: Some(child),
            ready_after: None,
            dir: None,
            cluster: None,
            others: Vec::new(),
        };
        let deadline = started + Duration::from_secs(600);
        loop {
            let ready = target
                .client
                .get(format!("{}/readyz", target.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ready {
                break;
            }
            if let Some(child) = &mut target.child {
                if let Some(status) = child.try_wait()? {
                    bail!("tally exited during start-up: {status}");
                }
            }
            if Instant::now() > deadline {
                bail!("tally was not ready within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        target.ready_after = Some(started.elapsed());
        let output = Command::new(tally)
            .args([
                "token",
                "--scope",
                "cloud_controller.admin",
                "--ttl",
                "86400",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()?;
        if !output.status.success() {
            bail!(
                "tally token failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        target.token = String::from_utf8(output.stdout)?.trim().to_owned();
        Ok(target)
    }

    /// The same tally, owning the PostgreSQL its log lives in.
    pub fn owning_cluster(mut self, cluster: tally_pgcluster::Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The same tally, with more nodes on its PostgreSQL (load is spread over all of them).
    pub fn with_nodes(mut self, others: Vec<Target>) -> Self {
        self.others = others;
        self
    }

    /// How many nodes the load goes to.
    pub fn node_count(&self) -> usize {
        1 + self.others.len()
    }

    /// The node the `k`-th connection or client talks to (round robin over all nodes).
    pub fn node(&self, k: usize) -> &Target {
        match k % self.node_count() {
            0 => self,
            n => &self.others[n - 1],
        }
    }

    /// The same tally, owning the temporary directory its data lives in.
    pub fn owning(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// The data directory, when the bench made it.
    pub fn data_dir(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|dir| dir.path().join("data"))
    }

    /// The process id, when the bench started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the process the bench started, bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> Option<u64> {
        self.status_kib("VmRSS:").map(|kib| kib * 1024)
    }

    /// The peak resident set of a tally this tool started (`VmHWM`).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_kib("VmHWM:").map(|kib| kib * 1024)
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The resident set once the allocator has handed back what start-up freed: it does so a
    /// second after the memory was freed, on its next call, so this sends what an orchestrator
    /// sends anyway (a readiness probe every 250 ms) for two seconds first.
    pub async fn settled_rss_bytes(&self) -> anyhow::Result<Option<u64>> {
        self.rss_bytes_after(Duration::from_secs(2)).await
    }

    /// The RSS after `wait` of readiness probes every 250 ms (what a kubelet sends).
    pub async fn rss_bytes_after(&self, wait: Duration) -> anyhow::Result<Option<u64>> {
        let started = Instant::now();
        while started.elapsed() < wait {
            self.request(Method::GET, "/readyz").send().await?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(self.rss_bytes())
    }

    /// Stops a started tally with SIGTERM (graceful: final checkpoint) and waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            if !status.success() {
                bail!("kill -TERM failed");
            }
            let exited = child.wait()?;
            if !exited.success() {
                bail!("tally exited with {exited} on SIGTERM");
            }
        }
        Ok(())
    }

    /// A request with the admin token.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// A JSON request; the status and the JSON answer (`null` if none).
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// The durable head (from `/readyz`).
    pub async fn head(&self) -> anyhow::Result<u64> {
        let (status, ready) = self.json(Method::GET, "/readyz", None).await?;
        if status != StatusCode::OK {
            bail!("/readyz answered {status}: {ready}");
        }
        ready["head"].as_u64().context("/readyz has no head")
    }

    /// How many usage events the current epoch holds.
    pub async fn usage_events(&self) -> anyhow::Result<u64> {
        let (status, page) = self
            .json(Method::GET, "/v3/app_usage_events?per_page=1", None)
            .await?;
        if status != StatusCode::OK {
            bail!("listing usage events answered {status}: {page}");
        }
        page["pagination"]["total_results"]
            .as_u64()
            .context("no total_results")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
