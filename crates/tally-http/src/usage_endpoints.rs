//! What the usage-event endpoints share (reference §1.5, §1.6, §3): the v2 and v3 shapes of an
//! event, `after_guid` resolved against the log (with the errors that say whether a cursor was
//! purged or pruned), the long-poll wait, the epoch headers, and how a page's resources are
//! written (ahead of the request, for a consumer catching up).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use tally_domain::access::Api;
use tally_domain::model::obfuscate_url_credentials;
use tally_domain::{Guid, Seq, UsageEvent};
use tally_engine::{Cursor, PageWriter, UsagePage, UsageQuery, View, Written};

use crate::page::Resources;
use crate::render::{time, Text};
use crate::usage_json::V3Links;
use crate::{ApiError, AppState};

/// The longest a list request waits for a new event (`wait`, seconds).
pub const MAX_WAIT_SECONDS: u64 = 30;

/// `X-Tally-Epoch`: the current epoch (1 until the first purge-and-reseed).
pub const EPOCH_HEADER: HeaderName = HeaderName::from_static("x-tally-epoch");
/// `X-Tally-Epoch-Started-At`: when the current epoch began (absent in the first epoch).
pub const EPOCH_STARTED_HEADER: HeaderName = HeaderName::from_static("x-tally-epoch-started-at");

/// The epoch headers for a view.
pub fn epoch_headers(view: &View) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(EPOCH_HEADER, HeaderValue::from(view.meta.epoch));
    if let Some(since) = view.meta.epoch_started_at {
        if let Ok(value) = HeaderValue::from_str(&time(since)) {
            headers.insert(EPOCH_STARTED_HEADER, value);
        }
    }
    headers
}

fn text(guid: Option<Guid>) -> Option<Text> {
    guid.map(Text)
}

/// CC's timestamp: `YYYY-MM-DDThh:mm:ssZ`.
fn stamp(t: tally_domain::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A v2 usage-event resource (reference §1.5): `metadata` without `updated_at`, and the 20
/// entity keys in CC's order, nulls included. Serialized straight from the event.
#[derive(Serialize)]
pub struct V2Usage<'a> {
    metadata: V2Metadata,
    entity: V2Entity<'a>,
}

#[derive(Serialize)]
struct V2Metadata {
    guid: Text,
    url: String,
    created_at: String,
}

#[derive(Serialize)]
struct V2Entity<'a> {
    state: &'static str,
    previous_state: Option<&'static str>,
    memory_in_mb_per_instance: i64,
    previous_memory_in_mb_per_instance: Option<i64>,
    instance_count: i64,
    previous_instance_count: Option<i64>,
    app_guid: &'a str,
    app_name: &'a str,
    space_guid: Text,
    space_name: &'a str,
    org_guid: Text,
    buildpack_guid: Option<Text>,
    buildpack_name: Option<String>,
    package_state: Option<&'a str>,
    previous_package_state: Option<&'a str>,
    parent_app_guid: Option<Text>,
    parent_app_name: Option<&'a str>,
    process_type: Option<&'a str>,
    task_name: Option<&'a str>,
    task_guid: Option<Text>,
}

/// The v2 resource of an event.
pub fn v2_resource(e: &UsageEvent) -> V2Usage<'_> {
    V2Usage {
        metadata: V2Metadata {
            guid: Text(e.guid),
            url: format!("/v2/app_usage_events/{}", e.guid),
            created_at: stamp(e.created_at),
        },
        entity: V2Entity {
            state: e.state.as_str(),
            previous_state: e.previous_state.map(|s| s.as_str()),
            memory_in_mb_per_instance: e.memory_in_mb_per_instance,
            previous_memory_in_mb_per_instance: e.previous_memory_in_mb_per_instance,
            instance_count: e.instance_count,
            previous_instance_count: e.previous_instance_count,
            app_guid: &e.app_guid,
            app_name: &e.app_name,
            space_guid: Text(e.space_guid),
            space_name: &e.space_name,
            org_guid: Text(e.org_guid),
            buildpack_guid: text(e.buildpack_guid),
            // v2 obfuscates credentials again when presenting (v3 does not).
            buildpack_name: e.buildpack_name.as_deref().map(obfuscate_url_credentials),
            package_state: e.package_state.as_deref(),
            previous_package_state: e.previous_package_state.as_deref(),
            parent_app_guid: text(e.parent_app_guid),
            parent_app_name: e.parent_app_name.as_deref(),
            process_type: e.process_type.as_deref(),
            task_name: e.task_name.as_deref(),
            task_guid: text(e.task_guid),
        },
    }
}

/// A v3 usage-event resource (reference §1.6): nested `current`/`previous`, `updated_at` =
/// `created_at`, an absolute `links.self.href`.
#[derive(Serialize)]
pub struct V3Usage<'a> {
    guid: Text,
    created_at: String,
    updated_at: String,
    state: Pair<&'static str>,
    app: Named<'a>,
    process: Process<'a>,
    space: SpaceRef<'a>,
    organization: OrgRef,
    buildpack: Named<'a>,
    task: Named<'a>,
    memory_in_mb_per_instance: Pair<i64>,
    instance_count: Pair<i64>,
    links: Links,
}

#[derive(Serialize)]
struct Pair<T> {
    current: T,
    previous: Option<T>,
}

#[derive(Serialize)]
struct Named<'a> {
    guid: Option<Text>,
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct Process<'a> {
    guid: Option<&'a str>,
    #[serde(rename = "type")]
    kind: Option<&'a str>,
}

#[derive(Serialize)]
struct SpaceRef<'a> {
    guid: Text,
    name: &'a str,
}

#[derive(Serialize)]
struct OrgRef {
    guid: Text,
}

#[derive(Serialize)]
struct Links {
    #[serde(rename = "self")]
    me: Href,
}

#[derive(Serialize)]
struct Href {
    href: String,
}

/// The v3 resource of an event; links start at `base` (the external URL).
pub fn v3_resource<'a>(base: &str, e: &'a UsageEvent) -> V3Usage<'a> {
    let at = stamp(e.created_at);
    V3Usage {
        guid: Text(e.guid),
        created_at: at.clone(),
        updated_at: at,
        state: Pair {
            current: e.state.as_str(),
            previous: e.previous_state.map(|s| s.as_str()),
        },
        app: Named {
            guid: text(e.parent_app_guid),
            name: e.parent_app_name.as_deref(),
        },
        // CC maps the empty process guid of staging and task events to null.
        process: Process {
            guid: (!e.app_guid.is_empty()).then_some(e.app_guid.as_str()),
            kind: e.process_type.as_deref(),
        },
        space: SpaceRef {
            guid: Text(e.space_guid),
            name: &e.space_name,
        },
        organization: OrgRef {
            guid: Text(e.org_guid),
        },
        buildpack: Named {
            guid: text(e.buildpack_guid),
            name: e.buildpack_name.as_deref(),
        },
        task: Named {
            guid: text(e.task_guid),
            name: e.task_name.as_deref(),
        },
        memory_in_mb_per_instance: Pair {
            current: e.memory_in_mb_per_instance,
            previous: e.previous_memory_in_mb_per_instance,
        },
        instance_count: Pair {
            current: e.instance_count,
            previous: e.previous_instance_count,
        },
        links: Links {
            me: Href {
                href: format!("{base}/v3/app_usage_events/{}", e.guid),
            },
        },
    }
}

/// The usage event `guid` names, if the caller may read it (reference §8.2), with the view it
/// was read from; `not_found` is the API's own not-found error.
pub async fn readable(
    state: &AppState,
    who: tally_domain::access::Subject<'_>,
    api: Api,
    guid: &str,
    not_found: impl Fn() -> ApiError,
) -> Result<(Arc<View>, UsageEvent), ApiError> {
    let view = state.engine.view();
    let found = match guid.parse::<Guid>() {
        Ok(g) => state.engine.usage_event(&view, g).await?,
        Err(_) => None,
    };
    tally_domain::access::usage_read(who, api, found.is_some())
        .map_err(|d| crate::deny(d, &not_found))?;
    match found {
        Some((_, event)) => Ok((view, event)),
        None => Err(not_found()),
    }
}

/// The list error of an API: v2 400 `BadQueryParameter`, v3 422 `UnprocessableEntity`.
pub fn list_error(api: Api, message: String) -> ApiError {
    match api {
        Api::V2 => ApiError::bad_query(message),
        Api::V3 => unprocessable(message),
    }
}

/// v3 422 `UnprocessableEntity` (10008).
pub fn unprocessable(message: String) -> ApiError {
    ApiError::unprocessable(message)
}

/// Why a cursor cannot be followed, in words a consumer can act on.
fn cursor_problem(guid: &str, cursor: &Cursor) -> Option<String> {
    match cursor {
        Cursor::At(_) | Cursor::Unknown => None,
        Cursor::Purged { epoch, since } => {
            Some(format!(
            "event {guid} was purged: a purge-and-reseed started epoch {epoch}{}; read the new \
             epoch from its start (no after_guid)",
            since.map(|t| format!(" at {}", time(t))).unwrap_or_default()
        ))
        }
        Cursor::Pruned { created_at, cutoff } => Some(format!(
            "event {guid} was pruned: it was written at {}, and retention removed the events \
             written before {}",
            time(*created_at),
            time(*cutoff)
        )),
    }
}

/// Resolves `after_guid` against a view: its position, or CC's error for an unknown cursor
/// (v2 400/10005, v3 422/10008) with a detail that says whether it was purged or pruned.
pub async fn resolve_after(
    state: &AppState,
    view: &View,
    api: Api,
    text: &str,
) -> Result<Seq, ApiError> {
    let cursor = match text.parse::<Guid>() {
        Ok(guid) => state.engine.cursor(view, guid).await?,
        Err(_) => Cursor::Unknown,
    };
    if let Cursor::At(seq) = cursor {
        return Ok(seq);
    }
    let reason = match cursor {
        Cursor::Purged { .. } => "purged",
        Cursor::Pruned { .. } => "pruned",
        Cursor::At(_) | Cursor::Unknown => "unknown",
    };
    state
        .metrics
        .http
        .cursor_not_found
        .with_label_values(&[reason])
        .inc();
    let problem = cursor_problem(text, &cursor);
    if let Some(problem) = &problem {
        tracing::info!(cursor = text, %problem, "a consumer's cursor no longer exists");
    }
    Err(match (api, problem) {
        (Api::V2, None) => list_error(api, text.to_owned()),
        (Api::V2, Some(problem)) => list_error(api, format!("{text} ({problem})")),
        (Api::V3, None) => unprocessable(AFTER_GUID_INVALID.to_owned()),
        (Api::V3, Some(problem)) => unprocessable(format!("{AFTER_GUID_INVALID} ({problem})")),
    })
}

const AFTER_GUID_INVALID: &str = "After guid filter must be a valid app usage event guid.";

/// Parses `wait` (seconds to wait for a first event; tally's extension), capped at
/// [`MAX_WAIT_SECONDS`] and below the request timeout.
pub fn parse_wait(state: &AppState, api: Api, value: Option<&str>) -> Result<Duration, ApiError> {
    let Some(value) = value else {
        return Ok(Duration::ZERO);
    };
    let seconds = value.parse::<u64>().map_err(|_| {
        let message = match api {
            Api::V2 => format!("wait must be a whole number of seconds but was '{value}'"),
            Api::V3 => format!("Wait must be a whole number of seconds but was '{value}'"),
        };
        list_error(api, message)
    })?;
    let cap = state
        .settings
        .request_timeout
        .saturating_sub(Duration::from_secs(1))
        .min(Duration::from_secs(MAX_WAIT_SECONDS));
    Ok(Duration::from_secs(seconds).min(cap))
}

/// Writes the resources of a usage-event page of one API: a request's own page, and the next
/// one when the engine reads it ahead ([`PageWriter`]), with the same bytes and byte cap.
pub struct UsageWriter {
    api: Api,
    links: V3Links,
    max_bytes: usize,
}

impl UsageWriter {
    /// The writer of `api`'s pages on this server.
    fn new(state: &AppState, api: Api) -> Result<Arc<Self>, ApiError> {
        let links = V3Links::new(&state.settings.external_url).map_err(|_| ApiError::unknown())?;
        Ok(Arc::new(Self {
            api,
            links,
            max_bytes: state.settings.max_page_bytes,
        }))
    }

    fn resources(&self, events: &[(Seq, UsageEvent)]) -> Result<Resources, ApiError> {
        let max = self.max_bytes;
        match self.api {
            Api::V2 => {
                let write =
                    |out: &mut Vec<u8>, (_, e): &(Seq, UsageEvent)| crate::usage_json::v2(out, e);
                crate::page::fit_all_with(
                    events,
                    write,
                    max,
                    "results-per-page",
                    ApiError::bad_query,
                )
            }
            Api::V3 => {
                let write = |out: &mut Vec<u8>, (_, e): &(Seq, UsageEvent)| {
                    crate::usage_json::v3(out, &self.links, e)
                };
                crate::page::fit_all_with(events, write, max, "per_page", unprocessable)
            }
        }
    }

    /// The page's resources: as they were written ahead, if they were, else written now.
    fn page(&self, page: UsagePage) -> Result<Resources, ApiError> {
        let ahead = page
            .written
            .and_then(|w| w.downcast::<Result<Resources, ApiError>>().ok());
        match ahead {
            Some(written) => *written,
            None => self.resources(&page.events),
        }
    }
}

impl PageWriter for UsageWriter {
    fn kind(&self) -> &'static str {
        match self.api {
            Api::V2 => "v2",
            Api::V3 => "v3",
        }
    }

    fn write(&self, events: &[(Seq, UsageEvent)]) -> Written {
        Box::new(self.resources(events))
    }
}

/// One page of a usage-event list, waiting up to `wait` for a first event when there is none
/// yet. The cursor is resolved again against every new view, so a purge or prune that happens
/// while a request waits is reported. Returns the view, how many events the query selects,
/// and the page's resources as `api` writes them (the page that follows, if it is read
/// ahead, is written ahead by the same [`UsageWriter`]).
pub async fn poll<'q>(
    state: &AppState,
    api: Api,
    after_guid: Option<&str>,
    wait: Duration,
    query: impl Fn(Option<Seq>) -> UsageQuery<'q>,
) -> Result<(Arc<View>, u64, Resources), ApiError> {
    let writer = UsageWriter::new(state, api)?;
    let page_writer: Arc<dyn PageWriter> = writer.clone();
    let (view, page) = poll_page(state, api, after_guid, wait, &page_writer, query).await?;
    let total = page.total;
    Ok((view, total, writer.page(page)?))
}

/// [`poll`]'s wait for a page.
async fn poll_page<'q>(
    state: &AppState,
    api: Api,
    after_guid: Option<&str>,
    wait: Duration,
    writer: &Arc<dyn PageWriter>,
    query: impl Fn(Option<Seq>) -> UsageQuery<'q>,
) -> Result<(Arc<View>, UsagePage), ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut views = state.engine.subscribe();
    let mut closing = state.closing.clone();
    loop {
        let view = views.borrow_and_update().clone();
        let after = match after_guid {
            Some(text) => Some(resolve_after(state, &view, api, text).await?),
            None => None,
        };
        let page = state
            .engine
            .usage_page_for(&view, &query(after), Some(writer))
            .await?;
        if page.total > 0 || tokio::time::Instant::now() >= deadline || closing.is_closing() {
            return Ok((view, page));
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return Ok((view, page)) },
            () = tokio::time::sleep_until(deadline) => {}
            () = closing.closed() => {}
        }
    }
}
