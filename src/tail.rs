//! `tally tail`: a reference consumer. It holds `GET /v3/app_usage_events/stream` open,
//! prints every usage event as one line of JSON (the v3 resource) on stdout, saves the guid of
//! the last event it printed to a checkpoint file, and reconnects from there whenever the
//! connection drops (a server restart, say).
//!
//! Delivery is at least once: an event printed just before a crash may be printed again after
//! it. A cursor the server no longer has (purged or pruned) stops `tail` with the server's
//! explanation instead of silently starting over.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// What to tail, and from where.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// The server, e.g. `http://127.0.0.1:8181`.
    pub url: String,
    /// A bearer token with a global read role (admin, admin_read_only or global_auditor).
    pub token: String,
    /// Start after this event (wins over the checkpoint).
    pub after: Option<String>,
    /// Where the last printed guid is kept.
    pub checkpoint: Option<PathBuf>,
    /// Stop after this many events (for scripts and tests); `None` runs until interrupted.
    pub limit: Option<u64>,
}

/// Reads a checkpoint file: the guid it holds, if any.
fn read_checkpoint(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|g| !g.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the checkpoint atomically (write a temporary file, fsync, rename).
fn write_checkpoint(path: &Path, guid: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&temporary)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        file.write_all(guid.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// Why one connection ended.
enum Ended {
    /// The limit was reached.
    Done,
    /// The connection dropped or the server is away: reconnect.
    Retry(String),
}

/// Tails until interrupted (or `limit` events), writing events to `out`.
pub async fn run(options: &TailOptions, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut cursor = match (&options.after, &options.checkpoint) {
        (Some(after), _) => Some(after.clone()),
        (None, Some(path)) => read_checkpoint(path)?,
        (None, None) => None,
    };
    let mut printed = 0u64;
    let mut backoff = Duration::from_millis(200);
    loop {
        match connect(&client, options, &mut cursor, &mut printed, out).await? {
            Ended::Done => return Ok(()),
            Ended::Retry(why) => {
                eprintln!("tally tail: {why}; reconnecting in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One connection: reads frames until it drops. Errors are final (bad cursor, bad token).
async fn connect(
    client: &reqwest::Client,
    options: &TailOptions,
    cursor: &mut Option<String>,
    printed: &mut u64,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Ended> {
    let mut request = client
        .get(format!(
            "{}/v3/app_usage_events/stream",
            options.url.trim_end_matches('/')
        ))
        .bearer_auth(&options.token)
        .header("Accept", "application/x-ndjson");
    if let Some(after) = cursor.as_deref() {
        request = request.query(&[("after_guid", after)]);
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Ok(Ended::Retry(format!("cannot reach {}: {e}", options.url))),
    };
    let status = response.status();
    if status.is_server_error() {
        return Ok(Ended::Retry(format!("the server answered {status}")));
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("the server refused the stream ({status}): {body}");
    }
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(Ended::Retry("the server closed the stream".to_owned())),
            Err(e) => return Ok(Ended::Retry(format!("the stream broke: {e}"))),
        };
        pending.extend_from_slice(&chunk);
        let mut last = None;
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let frame: Value = serde_json::from_slice(&line)
                .with_context(|| "the server sent a line that is not JSON")?;
            match frame["type"].as_str() {
                Some("usage_event") => {
                    let event = &frame["event"];
                    writeln!(out, "{event}")?;
                    last = event["guid"].as_str().map(str::to_owned);
                    *printed += 1;
                    if options.limit.is_some_and(|limit| *printed >= limit) {
                        break;
                    }
                }
                Some("epoch") => eprintln!(
                    "tally tail: epoch {} (started {})",
                    frame["epoch"],
                    frame["epoch_started_at"].as_str().unwrap_or("with the log")
                ),
                _ => {}
            }
        }
        if let Some(guid) = last {
            out.flush()?;
            if let Some(path) = &options.checkpoint {
                write_checkpoint(path, &guid)?;
            }
            *cursor = Some(guid);
        }
        if options.limit.is_some_and(|limit| *printed >= limit) {
            return Ok(Ended::Done);
        }
    }
}
