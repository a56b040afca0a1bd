//! The workloads, each driving tally only through its HTTP API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::report::{Latencies, Row};
use crate::target::Target;

/// Creates an org, a space and `count` docker apps (started or stopped) with `concurrency`
/// requests in flight; their guids.
pub async fn create_apps(
    target: &Target,
    count: usize,
    started: bool,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    #[allow(clippy::disallowed_methods)] // a unique name per run
    let run = chrono::Utc::now().timestamp_micros();
    let (status, org) = target
        .json(
            Method::POST,
            "/v2/organizations",
            Some(json!({"name": format!("bench-{run}")})),
        )
        .await?;
    ensure!(
        status == StatusCode::CREATED,
        "creating the org: {status} {org}"
    );
    let org = org["metadata"]["guid"].as_str().context("org guid")?;
    let (status, space) = target
        .json(
            Method::POST,
            "/v2/spaces",
            Some(json!({"name": "bench", "organization_guid": org})),
        )
        .await?;
    ensure!(
        status == StatusCode::CREATED,
        "creating the space: {status} {space}"
    );
    let space = space["metadata"]["guid"]
        .as_str()
        .context("space guid")?
        .to_owned();
    let state = if started { "STARTED" } else { "STOPPED" };
    let started_at = Instant::now();
    let guids: Vec<String> = futures_util::stream::iter(0..count)
        .map(|n| {
            let space = space.clone();
            async move {
                let body = json!({"name": format!("app-{n}"), "space_guid": space,
                                  "docker_image": "nginx", "memory": 128, "state": state});
                let (status, app) = target.json(Method::POST, "/v2/apps", Some(body)).await?;
                ensure!(
                    status == StatusCode::CREATED,
                    "creating an app: {status} {app}"
                );
                Ok(app["metadata"]["guid"]
                    .as_str()
                    .context("app guid")?
                    .to_owned())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    eprintln!(
        "created {count} {} apps in {:.1} s",
        state.to_lowercase(),
        started_at.elapsed().as_secs_f64()
    );
    Ok(guids)
}

/// What the state-change clients do to their apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// Started apps, instances 1 ↔ 2: one usage event per PUT (Cloud Controller's scale).
    Instances,
    /// Stopped apps visited in turn: start, scale, stop (one usage event per PUT).
    Toggle,
}

impl Pattern {
    /// Whether the apps are created started.
    pub fn started(self) -> bool {
        self == Pattern::Instances
    }

    /// The change a client makes to an app on its `n`-th visit; every one changes something.
    fn change(self, n: usize) -> serde_json::Value {
        match self {
            Pattern::Instances => json!({"instances": 2 - n % 2}),
            Pattern::Toggle => change(n),
        }
    }
}

/// The change a toggling client makes to an app on its `n`-th visit: start, scale (to 2 and
/// 3 in turn, never the count it has), stop.
fn change(n: usize) -> serde_json::Value {
    match n % 3 {
        0 => json!({"state": "STARTED"}),
        1 => json!({"instances": 2 + (n / 3) % 2}),
        _ => json!({"state": "STOPPED"}),
    }
}

/// The apps a workload changes, and how often each was changed so far (across runs), so
/// every PUT changes its app whatever ran before.
pub struct Fleet {
    pub guids: Vec<String>,
    visits: Vec<std::sync::atomic::AtomicUsize>,
}

impl Fleet {
    pub fn new(guids: Vec<String>) -> Self {
        let visits = guids.iter().map(|_| Default::default()).collect();
        Self { guids, visits }
    }

    pub fn len(&self) -> usize {
        self.guids.len()
    }

    /// The apps client `k` of `clients` owns (no two clients change one app at once).
    fn share(&self, k: usize, clients: usize) -> Vec<usize> {
        (k..self.len()).step_by(clients.max(1)).collect()
    }

    /// Where a client resumes in its share: it visits its apps in turn, so the visits so far
    /// tell how many turns it (or its predecessors) took.
    fn resume(&self, share: &[usize]) -> usize {
        share.iter().map(|&i| self.visits(i)).sum()
    }

    fn visits(&self, app: usize) -> usize {
        self.visits[app].load(Ordering::Relaxed)
    }

    /// The change for the app's next visit, counted as made.
    fn next_change(&self, app: usize, pattern: Pattern) -> serde_json::Value {
        pattern.change(self.visits[app].fetch_add(1, Ordering::Relaxed))
    }
}

/// Sends a request and reads its whole answer: the time to its last byte and the body, or an
/// error naming `what` when the status is not `expected`.
async fn timed(
    request: reqwest::RequestBuilder,
    expected: StatusCode,
    what: &str,
) -> anyhow::Result<(Duration, impl AsRef<[u8]>)> {
    let sent = Instant::now();
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    let took = sent.elapsed();
    ensure!(
        status == expected,
        "{what} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok((took, body))
}

/// `concurrency` clients changing the apps (each client its own apps) for `duration`.
pub async fn state_changes(
    target: &Target,
    apps: &Fleet,
    pattern: Pattern,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let events_before = target.usage_events().await?;
    let started = Instant::now();
    let deadline = started + duration;
    let clients: Vec<_> = (0..concurrency)
        .map(|k| {
            let mine = apps.share(k, concurrency);
            async move {
                let mut latencies = Latencies::new();
                let mut i = apps.resume(&mine);
                while Instant::now() < deadline && !mine.is_empty() {
                    let app = mine[i % mine.len()];
                    let request = target
                        .node(k)
                        .request(Method::PUT, &format!("/v2/apps/{}", apps.guids[app]))
                        .json(&apps.next_change(app, pattern));
                    let (took, _) = timed(request, StatusCode::CREATED, "PUT").await?;
                    latencies.record(took);
                    i += 1;
                }
                Ok::<_, anyhow::Error>(latencies)
            }
        })
        .collect();
    let mut latencies = Latencies::new();
    for result in futures_util::future::join_all(clients).await {
        latencies.merge(&result?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = target.usage_events().await? - events_before;
    let requests = latencies.count();
    let pattern_name = match pattern {
        Pattern::Instances => "instances of started apps",
        Pattern::Toggle => "start/scale/stop",
    };
    Ok(Row::new(
        "state-changes",
        format!(
            "{pattern_name}, C={concurrency}, {} s, {} apps{}",
            duration.as_secs(),
            apps.len(),
            nodes_note(target)
        ),
    )
    .throughput(requests as f64 / elapsed, "PUTs/s")
    .latency(&latencies)
    .note(format!(
        "{requests} PUTs, each changed its app; {events} usage events ({:.0}/s)",
        events as f64 / elapsed
    ))
    .goal(match concurrency {
        64 => "≥ 10,000 PUTs/s and ≥ 3× PostgreSQL's CC pattern; p99 ≤ 20 ms",
        1 => "p50 ≤ 0.8 ms; ≥ 1.2× PostgreSQL's CC pattern",
        _ => "",
    }))
}

#[derive(Deserialize)]
struct V3Page {
    resources: Vec<V3Event>,
}

#[derive(Deserialize)]
struct V3Event {
    guid: String,
}

#[derive(Deserialize)]
struct V2Page {
    resources: Vec<V2Event>,
}

#[derive(Deserialize)]
struct V2Event {
    metadata: V2Metadata,
}

#[derive(Deserialize)]
struct V2Metadata {
    guid: String,
}

/// `, N nodes` when the load is spread over several.
fn nodes_note(target: &Target) -> String {
    match target.node_count() {
        1 => String::new(),
        n => format!(", {n} nodes"),
    }
}

/// Reads every usage event of the epoch from the start, following `after_guid`, with pages of
/// `per_page` (v3) or `results-per-page` (v2); events/s and per-page latency.
pub async fn catch_up(target: &Target, v3: bool) -> anyhow::Result<(Row, u64)> {
    catch_up_by(target, v3, 1).await
}

/// How a consumer reading the whole epoch goes from one page to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// Parses each page whole, then asks for the next one after its last event.
    Sequential,
    /// Asks for the next page as soon as it found the page's last event guid (a scan of the
    /// page's tail), and parses the page whole meanwhile, on another thread; each parse then
    /// checks the guid the next request used was the page's last event's.
    Pipelined,
}

/// [`catch_up`] by `consumers` consumers at once, each reading the whole epoch through the node
/// its number picks; events/s of all of them together.
pub async fn catch_up_by(
    target: &Target,
    v3: bool,
    consumers: usize,
) -> anyhow::Result<(Row, u64)> {
    catch_up_with(target, v3, consumers, Consumer::Sequential).await
}

/// [`catch_up_by`] with consumers that go from page to page as `consumer` says.
pub async fn catch_up_with(
    target: &Target,
    v3: bool,
    consumers: usize,
    consumer: Consumer,
) -> anyhow::Result<(Row, u64)> {
    let started = Instant::now();
    let reads = (0..consumers.max(1)).map(|k| read_epoch(target.node(k), v3, consumer));
    let mut latencies = Latencies::new();
    let (mut events, mut each) = (0u64, 0u64);
    for result in futures_util::future::join_all(reads).await {
        let (read, pages) = result?;
        events += read;
        each = read;
        latencies.merge(&pages);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (api, goal) = match (v3, consumer) {
        (true, Consumer::Sequential) => ("v3 per_page=5000", "≥ 150,000 events/s"),
        (true, Consumer::Pipelined) => ("v3 per_page=5000, pipelined consumer", ""),
        (false, Consumer::Sequential) => ("v2 results-per-page=10000", ""),
        (false, Consumer::Pipelined) => ("v2 results-per-page=10000, pipelined consumer", ""),
    };
    let by = match consumers.max(1) {
        1 => String::new(),
        c => format!(", {c} consumers"),
    };
    let latency = match consumer {
        Consumer::Sequential => "latency per page (request to parsed)",
        Consumer::Pipelined => "latency per page (request to last byte)",
    };
    Ok((
        Row::new(
            "catch-up",
            format!("{api}, {each} events{by}{}", nodes_note(target)),
        )
        .throughput(events as f64 / elapsed, "events/s")
        .latency(&latencies)
        .note(format!("{} pages, {latency}", latencies.count()))
        .goal(goal),
        each,
    ))
}

/// One consumer reading the whole epoch; the events it read and each page's latency.
async fn read_epoch(
    target: &Target,
    v3: bool,
    consumer: Consumer,
) -> anyhow::Result<(u64, Latencies)> {
    let per_page = if v3 { 5000 } else { 10000 };
    let mut after: Option<String> = None;
    let mut events = 0u64;
    let mut latencies = Latencies::new();
    // A pipelined consumer's page being parsed, and the guid the request after it used.
    let mut parsing: Option<(tokio::task::JoinHandle<anyhow::Result<Vec<String>>>, String)> = None;
    loop {
        let mut path = if v3 {
            format!("/v3/app_usage_events?per_page={per_page}")
        } else {
            format!("/v2/app_usage_events?results-per-page={per_page}")
        };
        if let Some(guid) = &after {
            path.push_str(&format!("&after_guid={guid}"));
        }
        let sent = Instant::now();
        let response = target.request(Method::GET, &path).send().await?;
        ensure!(
            response.status() == StatusCode::OK,
            "{path}: {}",
            response.status()
        );
        let bytes = response.bytes().await?;
        if consumer == Consumer::Sequential {
            let guids = page_guids(&bytes, v3)?;
            latencies.record(sent.elapsed());
            events += guids.len() as u64;
            match guids.last() {
                Some(last) if guids.len() == per_page => after = Some(last.clone()),
                _ => break,
            }
            continue;
        }
        latencies.record(sent.elapsed());
        let next = last_guid(&bytes, v3);
        let page = tokio::task::spawn_blocking(move || page_guids(&bytes, v3));
        if let Some((previous, used)) = parsing.take() {
            events += checked(previous.await??, Some(&used))?;
        }
        match next {
            Some(next) => {
                after = Some(next.clone());
                parsing = Some((page, next));
            }
            None => {
                events += checked(page.await??, None)?;
                break;
            }
        }
    }
    Ok((events, latencies))
}

/// A page's event guids, in order.
fn page_guids(bytes: &[u8], v3: bool) -> anyhow::Result<Vec<String>> {
    Ok(if v3 {
        serde_json::from_slice::<V3Page>(bytes)?
            .resources
            .into_iter()
            .map(|e| e.guid)
            .collect()
    } else {
        serde_json::from_slice::<V2Page>(bytes)?
            .resources
            .into_iter()
            .map(|e| e.metadata.guid)
            .collect()
    })
}

/// The guid of a page's last event, found without parsing the page: the last resource opens
/// with `{"guid":"` (v3) or `{"metadata":{"guid":"` (v2) right after `[` or `,`, which inside a
/// JSON string would be escaped. [`checked`] holds it to the parse.
fn last_guid(bytes: &[u8], v3: bool) -> Option<String> {
    let open: &[u8] = if v3 {
        b"{\"guid\":\""
    } else {
        b"{\"metadata\":{\"guid\":\""
    };
    let at = (1..bytes.len().saturating_sub(open.len()))
        .rev()
        .find(|&i| matches!(bytes[i - 1], b'[' | b',') && bytes[i..].starts_with(open))?;
    let guid = bytes.get(at + open.len()..at + open.len() + 36)?;
    String::from_utf8(guid.to_vec()).ok()
}

/// The events of a parsed page, once its last event is the one the next request started after
/// (`None`: the last page, which must be empty or short).
fn checked(guids: Vec<String>, used: Option<&String>) -> anyhow::Result<u64> {
    match used {
        Some(used) => ensure!(
            guids.last() == Some(used),
            "the next page was asked for after {used}, but the page ends with {:?}",
            guids.last()
        ),
        None => ensure!(guids.is_empty(), "a page whose last event was not found"),
    }
    Ok(guids.len() as u64)
}

/// The newest usage event's guid, if any.
async fn newest_event(target: &Target) -> anyhow::Result<Option<String>> {
    let (status, page) = target
        .json(
            Method::GET,
            "/v3/app_usage_events?per_page=1&order_by=-created_at",
            None,
        )
        .await?;
    ensure!(status == StatusCode::OK, "newest event: {status} {page}");
    Ok(page["resources"][0]["guid"].as_str().map(str::to_owned))
}

fn now_micros() -> i64 {
    #[allow(clippy::disallowed_methods)] // latency against the server's commit time
    let now = chrono::Utc::now();
    now.timestamp_micros()
}

/// One consumer on the live stream (length-delimited protobuf, whose events carry their
/// commit time in microseconds) while `writers` clients change apps, each `interval` apart,
/// for `duration`: the time from each event's commit to its arrival, and from the write
/// request being sent to the event's arrival.
pub async fn tail_latency(
    target: &Target,
    apps: &[String],
    writers: usize,
    interval: Duration,
    duration: Duration,
) -> anyhow::Result<Row> {
    use prost::Message;
    let after = newest_event(target).await?;
    let mut path = "/v3/app_usage_events/stream?format=protobuf".to_owned();
    if let Some(after) = &after {
        path.push_str(&format!("&after_guid={after}"));
    }
    // With several nodes the stream is on the last one and the writes go to the others: commit
    // on one node, frame on another.
    let watcher = target.node(target.node_count() - 1);
    let response = watcher.request(Method::GET, &path).send().await?;
    ensure!(
        response.status() == StatusCode::OK,
        "stream: {}",
        response.status()
    );
    // Which write request produced an event: app guid → when its PUT was sent.
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (sent_at, stop) = (sent_at.clone(), stop.clone());
        tokio::spawn(async move {
            let mut commit = Latencies::new();
            let mut submit = Latencies::new();
            let mut body = response.bytes_stream();
            let mut buffer: Vec<u8> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let chunk =
                    match tokio::time::timeout(Duration::from_millis(200), body.next()).await {
                        Ok(Some(chunk)) => chunk?,
                        Ok(None) => bail!("the stream ended"),
                        Err(_) => continue,
                    };
                let arrived = Instant::now();
                let arrived_micros = now_micros();
                buffer.extend_from_slice(&chunk);
                loop {
                    let mut view = buffer.as_slice();
                    let Ok(length) = prost::decode_length_delimiter(&mut view) else {
                        break;
                    };
                    let prefix = buffer.len() - view.len();
                    if view.len() < length {
                        break;
                    }
                    let frame = proto_schemas::wire::StreamFrame::decode(&view[..length])?;
                    buffer.drain(..prefix + length);
                    if let Some(proto_schemas::wire::stream_frame::Frame::Event(event)) =
                        frame.frame
                    {
                        let lag = (arrived_micros - event.created_at_micros).max(0);
                        commit.record(Duration::from_micros(lag.unsigned_abs()));
                        if let Some(sent) = sent_at
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .remove(&event.app_guid)
                        {
                            submit.record(arrived - sent);
                        }
                    }
                }
            }
            Ok::<_, anyhow::Error>((commit, submit))
        })
    };
    let deadline = Instant::now() + duration;
    let clients: Vec<_> = (0..writers)
        .map(|k| {
            let mine: Vec<String> = apps.iter().skip(k).step_by(writers).cloned().collect();
            let sent_at = sent_at.clone();
            async move {
                let mut visits = vec![0usize; mine.len()];
                let mut i = 0;
                let mut ticker = tokio::time::interval(interval);
                while Instant::now() < deadline {
                    ticker.tick().await;
                    let slot = i % mine.len();
                    if let Ok(mut sent) = sent_at.lock() {
                        sent.insert(mine[slot].clone(), Instant::now());
                    }
                    let writes_to = target.node(k % target.node_count().saturating_sub(1).max(1));
                    let status = writes_to
                        .request(Method::PUT, &format!("/v2/apps/{}", mine[slot]))
                        .json(&change(visits[slot]))
                        .send()
                        .await?
                        .status();
                    ensure!(status == StatusCode::CREATED, "PUT answered {status}");
                    visits[slot] += 1;
                    i += 1;
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .collect();
    for result in futures_util::future::join_all(clients).await {
        result?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (commit, submit) = consumer.await??;
    let submit = submit.summary().map_or(String::new(), |s| {
        format!(
            "request sent → event received: p50 {:.2}, p99 {:.2}, max {:.2} ms",
            s.p50_ms, s.p99_ms, s.max_ms
        )
    });
    Ok(Row::new(
        "tail-latency",
        format!(
            "{writers} writers every {} ms, {} s, stream (protobuf){}",
            interval.as_millis(),
            duration.as_secs(),
            match target.node_count() {
                1 => String::new(),
                n => format!(", writes to {} nodes, stream on another ({n} nodes)", n - 1),
            }
        ),
    )
    .latency(&commit)
    .note(format!(
        "commit (its timestamp, taken before the fsync) → event received; {submit}"
    ))
    .goal("p99 ≤ 10 ms after its commit"))
}

/// Purge-and-reseed of `started` started apps, `rounds` times; then reads the stream and
/// checks it holds exactly one event per started app.
pub async fn purge(target: &Target, started: usize, rounds: usize) -> anyhow::Result<Row> {
    let mut latencies = Latencies::new();
    for _ in 0..rounds {
        let sent = Instant::now();
        let (status, body) = target
            .json(
                Method::POST,
                "/v3/app_usage_events/actions/destructively_purge_all_and_reseed",
                None,
            )
            .await?;
        latencies.record(sent.elapsed());
        ensure!(status == StatusCode::OK, "purge answered {status}: {body}");
    }
    let (_, events) = catch_up(target, true).await?;
    if events != started as u64 {
        bail!("after the purge the stream holds {events} events, not {started}");
    }
    Ok(
        Row::new("purge", format!("{started} started apps, {rounds} purges"))
            .latency(&latencies)
            .note(format!("the stream then held exactly {events} events"))
            .goal("≤ 1 s, atomic"),
    )
}

/// `requests` GETs of one list page, one at a time: latency per page.
pub async fn list_page(target: &Target, path: &str, requests: usize) -> anyhow::Result<Row> {
    let mut latencies = Latencies::new();
    let mut results = 0;
    for _ in 0..requests.max(1) {
        let request = target.request(Method::GET, path);
        let (took, body) = timed(request, StatusCode::OK, path).await?;
        latencies.record(took);
        let page: serde_json::Value = serde_json::from_slice(body.as_ref())?;
        results = page["resources"].as_array().map_or(0, Vec::len);
    }
    Ok(Row::new("list", format!("GET {path}, C=1"))
        .latency(&latencies)
        .note(format!("{results} resources per page"))
        .goal("p50 ≤ 5 ms"))
}

/// `concurrency` clients for `duration`, each request a GET of one of the apps (9 in 10) or a
/// scale of it (1 in 10; the apps are started, so each writes one usage event).
pub async fn mixed(
    target: &Target,
    apps: &Fleet,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let started = Instant::now();
    let deadline = started + duration;
    let clients: Vec<_> = (0..concurrency)
        .map(|k| {
            let mine = apps.share(k, concurrency);
            async move {
                let (mut reads, mut writes) = (Latencies::new(), Latencies::new());
                let mut i = 0;
                while Instant::now() < deadline && !mine.is_empty() {
                    let app = mine[i % mine.len()];
                    let path = format!("/v2/apps/{}", apps.guids[app]);
                    let write = i % 10 == 9;
                    let request = if write {
                        target
                            .request(Method::PUT, &path)
                            .json(&apps.next_change(app, Pattern::Instances))
                    } else {
                        target.request(Method::GET, &path)
                    };
                    let expected = if write {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    let (took, _) = timed(request, expected, &path).await?;
                    if write {
                        writes.record(took);
                    } else {
                        reads.record(took);
                    }
                    i += 1;
                }
                Ok::<_, anyhow::Error>((reads, writes))
            }
        })
        .collect();
    let (mut reads, mut writes) = (Latencies::new(), Latencies::new());
    for result in futures_util::future::join_all(clients).await {
        let (r, w) = result?;
        reads.merge(&r);
        writes.merge(&w);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = reads.count() + writes.count();
    let writes_summary = writes.summary().map_or(String::new(), |s| {
        format!("; writes p50 {:.2}, p99 {:.2} ms", s.p50_ms, s.p99_ms)
    });
    Ok(Row::new(
        "mixed",
        format!(
            "9 GETs : 1 scale, C={concurrency}, {} s, {} apps",
            duration.as_secs(),
            apps.len()
        ),
    )
    .throughput(total as f64 / elapsed, "requests/s")
    .latency(&reads)
    .note(format!(
        "{} GETs ({:.0}/s, latency = GETs), {} PUTs ({:.0}/s){writes_summary}",
        reads.count(),
        reads.count() as f64 / elapsed,
        writes.count(),
        writes.count() as f64 / elapsed
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00000000-0000-0000-0000-00000000000a";
    const B: &str = "00000000-0000-0000-0000-00000000000b";
    const NESTED: &str = "00000000-0000-0000-0000-0000000000ff";

    /// A v3 page as tally writes it: each resource opens with its guid; nested objects and
    /// free text hold guids and the resource opening too.
    fn v3_page(guids: &[&str]) -> Vec<u8> {
        let resources: Vec<String> = guids
            .iter()
            .map(|g| {
                format!(
                    r#"{{"guid":"{g}","app":{{"guid":"{NESTED}","name":"x\",{{\"guid\":\"{NESTED}"}},"space":{{"guid":"{NESTED}"}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"pagination":{{"total_results":{}}},"resources":[{}]}}"#,
            guids.len(),
            resources.join(",")
        )
        .into_bytes()
    }

    fn v2_page(guids: &[&str]) -> Vec<u8> {
        let resources: Vec<String> = guids
            .iter()
            .map(|g| {
                format!(r#"{{"metadata":{{"guid":"{g}"}},"entity":{{"app_guid":"{NESTED}","app_name":"y\",{{\"metadata\":{{\"guid\":\"{NESTED}"}}}}"#)
            })
            .collect();
        format!(
            r#"{{"total_results":{},"resources":[{}]}}"#,
            guids.len(),
            resources.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn the_last_guid_is_the_last_resources_own_as_the_parse_says() {
        for v3 in [true, false] {
            let page = |g: &[&str]| if v3 { v3_page(g) } else { v2_page(g) };
            for guids in [vec![A], vec![A, B], vec![B, A, B, A]] {
                let bytes = page(&guids);
                let parsed = page_guids(&bytes, v3).unwrap();
                assert_eq!(parsed, guids);
                assert_eq!(last_guid(&bytes, v3).as_deref(), guids.last().copied());
                let last = guids.last().map(|g| (*g).to_owned());
                assert_eq!(checked(parsed, last.as_ref()).unwrap(), guids.len() as u64);
            }
            let empty = page(&[]);
            assert_eq!(last_guid(&empty, v3), None);
            assert_eq!(checked(page_guids(&empty, v3).unwrap(), None).unwrap(), 0);
        }
    }

    #[test]
    fn a_cursor_the_parse_does_not_confirm_fails_the_read() {
        let parsed = page_guids(&v3_page(&[A, B]), true).unwrap();
        assert!(checked(parsed.clone(), Some(&A.to_owned())).is_err());
        // A last page must be empty: a page whose end was not found is an error.
        assert!(checked(parsed, None).is_err());
    }
}
