//! `GET /v3/app_usage_events/stream`: tally's live tail (an extension; docs/extensions.md).
//!
//! One long response that delivers usage events as they become durable, resuming after
//! `after_guid` (or the SSE `Last-Event-ID` header), from the start of the current epoch when
//! neither is given. Three encodings of the same frames:
//! - server-sent events (`Accept: text/event-stream`): `event: epoch`, `event: usage_event`
//!   with `id: <guid>`, and `: heartbeat` comments;
//! - newline-delimited JSON (`application/x-ndjson`, the default): one object per line,
//!   `{"type":"epoch",...}`, `{"type":"usage_event","event":{v3 resource}}`,
//!   `{"type":"heartbeat"}`;
//! - length-delimited protobuf (`application/x-protobuf`): `tally.usage.v1.StreamFrame`.
//!
//! The first frame names the epoch. When a purge-and-reseed starts a new epoch while the
//! stream is open, an epoch frame announces it and the new epoch's reseeded events follow
//! (events of the old epoch not yet sent when the purge committed are purged with it, as
//! they are for a polling consumer; the reseeded events carry the state they led to).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use proto_schemas::wire;
use serde_json::{json, Value};
use tally_domain::access::{self, Api, Visible};
use tally_domain::{Seq, UsageEvent};
use tally_engine::View;

use crate::auth::Caller;
use crate::usage_endpoints::{epoch_headers, resolve_after, unprocessable, v3_resource};
use crate::{deny, ApiError, AppState, Closing};

/// Events read from the log per step.
const BATCH: usize = 1000;
/// Quiet time after which a heartbeat frame is sent.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The stream's parameters: `after_guid` (one) and `format`; anything else is refused.
fn parse_query(query: Option<&str>) -> Result<(Option<String>, Option<String>), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| unprocessable("The query string is not URL-encoded".to_owned()))?;
    let (mut after, mut format, mut problems) = (None, None, Vec::new());
    let mut unknown = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "after_guid" if value.contains(',') => {
                problems.push("After guid filter accepts only one guid".to_owned())
            }
            "after_guid" => after = Some(value),
            "format" => format = Some(value),
            _ => unknown.push(format!("'{key}'")),
        }
    }
    if !unknown.is_empty() {
        problems.insert(
            0,
            format!(
                "Unknown query parameter(s): {}. Valid parameters are: 'after_guid', 'format'",
                unknown.join(", ")
            ),
        );
    }
    if problems.is_empty() {
        Ok((after, format))
    } else {
        Err(unprocessable(problems.join(", ")))
    }
}

/// How the frames are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/event-stream`.
    Sse,
    /// `application/x-ndjson`.
    Ndjson,
    /// `application/x-protobuf`, length-delimited `StreamFrame`s.
    Protobuf,
}

impl Format {
    /// From `format=` (wins) or the `Accept` header; NDJSON when neither says.
    fn choose(param: Option<&str>, accept: Option<&str>) -> Result<Self, ApiError> {
        match param {
            Some("sse") => return Ok(Self::Sse),
            Some("ndjson") => return Ok(Self::Ndjson),
            Some("protobuf") => return Ok(Self::Protobuf),
            Some(other) => {
                return Err(unprocessable(format!(
                    "Format must be one of 'sse', 'ndjson', 'protobuf' but was '{other}'"
                )))
            }
            None => {}
        }
        let accept = accept.unwrap_or("");
        Ok(if accept.contains("text/event-stream") {
            Self::Sse
        } else if accept.contains("application/x-protobuf")
            || accept.contains("application/protobuf")
        {
            Self::Protobuf
        } else {
            Self::Ndjson
        })
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Sse => "text/event-stream",
            Self::Ndjson => "application/x-ndjson",
            Self::Protobuf => "application/x-protobuf",
        }
    }
}

/// One frame, before encoding.
enum Frame<'a> {
    Epoch(&'a View),
    Event(&'a UsageEvent),
    Heartbeat,
}

fn micros(t: tally_domain::Timestamp) -> i64 {
    t.timestamp_micros()
}

/// The protobuf form of an event.
pub fn wire_event(e: &UsageEvent) -> wire::UsageEvent {
    let text = |g: tally_domain::Guid| g.to_string();
    wire::UsageEvent {
        guid: e.guid.to_string(),
        created_at_micros: micros(e.created_at),
        state: e.state.as_str().to_owned(),
        previous_state: e.previous_state.map(|s| s.as_str().to_owned()),
        instance_count: e.instance_count,
        previous_instance_count: e.previous_instance_count,
        memory_in_mb_per_instance: e.memory_in_mb_per_instance,
        previous_memory_in_mb_per_instance: e.previous_memory_in_mb_per_instance,
        app_guid: e.app_guid.clone(),
        app_name: e.app_name.clone(),
        space_guid: text(e.space_guid),
        space_name: e.space_name.clone(),
        org_guid: text(e.org_guid),
        buildpack_guid: e.buildpack_guid.map(text),
        buildpack_name: e.buildpack_name.clone(),
        package_state: e.package_state.clone(),
        previous_package_state: e.previous_package_state.clone(),
        parent_app_guid: e.parent_app_guid.map(text),
        parent_app_name: e.parent_app_name.clone(),
        process_type: e.process_type.clone(),
        task_guid: e.task_guid.map(text),
        task_name: e.task_name.clone(),
    }
}

fn epoch_json(view: &View) -> Value {
    json!({
        "type": "epoch",
        "epoch": view.meta.epoch,
        "epoch_started_at": view.meta.epoch_started_at.map(crate::render::time),
    })
}

/// An NDJSON event line.
#[derive(serde::Serialize)]
struct EventFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: crate::usage_endpoints::V3Usage<'a>,
}

fn encode(format: Format, base: &str, frame: Frame<'_>) -> Bytes {
    match format {
        Format::Ndjson => {
            let value = match frame {
                Frame::Epoch(view) => epoch_json(view),
                Frame::Event(e) => {
                    let line = serde_json::to_string(&EventFrame {
                        kind: "usage_event",
                        event: v3_resource(base, e),
                    })
                    .unwrap_or_default();
                    return Bytes::from(line + "\n");
                }
                Frame::Heartbeat => json!({"type": "heartbeat"}),
            };
            Bytes::from(format!("{value}\n"))
        }
        Format::Sse => Bytes::from(match frame {
            Frame::Epoch(view) => format!("event: epoch\ndata: {}\n\n", epoch_json(view)),
            Frame::Event(e) => format!(
                "event: usage_event\nid: {}\ndata: {}\n\n",
                e.guid,
                serde_json::to_string(&v3_resource(base, e)).unwrap_or_default()
            ),
            Frame::Heartbeat => ": heartbeat\n\n".to_owned(),
        }),
        Format::Protobuf => {
            use prost::Message;
            let frame = match frame {
                Frame::Epoch(view) => wire::stream_frame::Frame::Epoch(wire::Epoch {
                    epoch: view.meta.epoch,
                    started_at_micros: view.meta.epoch_started_at.map(micros),
                }),
                Frame::Event(e) => wire::stream_frame::Frame::Event(wire_event(e)),
                Frame::Heartbeat => wire::stream_frame::Frame::Heartbeat(wire::Heartbeat {}),
            };
            Bytes::from(wire::StreamFrame { frame: Some(frame) }.encode_length_delimited_to_vec())
        }
    }
}

/// Where a stream is.
struct Tail {
    state: Arc<AppState>,
    views: tally_engine::Watch,
    closing: Closing,
    format: Format,
    /// The epoch of the last epoch frame sent (0: none yet).
    epoch: u64,
    /// The last event sent (0: the start of the epoch).
    after: Seq,
    /// Frames ready to send.
    ready: VecDeque<Bytes>,
    /// Counts the stream as open while it lives.
    _open: crate::metrics::OpenStream,
}

impl Tail {
    /// The next chunk of the body; `None` ends the stream (shutdown, or a broken log).
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.ready.pop_front() {
                return Some(bytes);
            }
            if self.closing.is_closing() {
                return None;
            }
            let view = self.views.borrow_and_update().clone();
            let base = self.state.settings.external_url.clone();
            if view.meta.epoch != self.epoch {
                if self.epoch != 0 {
                    // A purge: the new epoch's events start at its floor.
                    self.after = 0;
                }
                self.epoch = view.meta.epoch;
                self.ready
                    .push_back(encode(self.format, &base, Frame::Epoch(&view)));
                continue;
            }
            match self
                .state
                .engine
                .usage_after(&view, self.after, BATCH)
                .await
            {
                Ok(events) if !events.is_empty() => {
                    self.state
                        .metrics
                        .http
                        .stream_events
                        .inc_by(events.len() as u64);
                    for (seq, event) in events {
                        self.after = seq;
                        self.ready
                            .push_back(encode(self.format, &base, Frame::Event(&event)));
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "usage stream ended: the log could not be read");
                    return None;
                }
            }
            tokio::select! {
                changed = self.views.changed() => if changed.is_err() { return None },
                () = tokio::time::sleep(HEARTBEAT) => {
                    self.ready.push_back(encode(self.format, &base, Frame::Heartbeat));
                }
                () = self.closing.closed() => return None,
            }
        }
    }
}

/// The live tail of the usage events: server-sent events, NDJSON or length-delimited protobuf
/// (`proto-schemas/proto/tally/usage/v1/usage.proto`); an epoch frame first and on every purge.
#[utoipa::path(get, path = "/v3/app_usage_events/stream", tag = "usage events", security(("bearer" = [])),
    params(
        ("after_guid" = Option<String>, Query, description = "start after this event"),
        ("format" = Option<String>, Query, description = "ndjson (default), sse or protobuf"),
        ("Last-Event-ID" = Option<String>, Header, description = "SSE resume point")),
    responses(
        (status = 200, description = "the stream, until shutdown", content_type = "application/x-ndjson"),
        (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
pub(crate) async fn stream(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let visible =
        access::usage_list(caller.subject(), Api::V3).map_err(|d| deny(d, ApiError::not_found))?;
    if matches!(visible, Visible::Nothing) {
        // The list shows such callers an empty page; an endless empty stream would only
        // mislead, so the stream says no.
        return Err(deny(access::Denial::NotAuthorized, ApiError::not_found));
    }
    let (after_guid, format) = parse_query(query.as_deref())?;
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let format = Format::choose(format.as_deref(), header_text(header::ACCEPT).as_deref())?;
    let cursor =
        after_guid.or_else(|| header_text(header::HeaderName::from_static("last-event-id")));
    let views = state.engine.subscribe();
    let view = views.borrow().clone();
    let after = match &cursor {
        Some(text) => resolve_after(&state, &view, Api::V3, text).await?,
        None => 0,
    };
    let tail = Tail {
        state: state.clone(),
        views,
        closing: state.closing.clone(),
        format,
        epoch: 0,
        after,
        ready: VecDeque::new(),
        _open: crate::metrics::OpenStream::new(&state.metrics.http.streams_open),
    };
    let body = futures_util::stream::unfold(tail, |mut tail| async move {
        let bytes = tail.next().await?;
        Some((Ok::<_, std::convert::Infallible>(bytes), tail))
    });
    let mut response = Body::from_stream(body).into_response();
    let out = response.headers_mut();
    out.extend(epoch_headers(&view));
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_the_parameter_then_the_accept_header() {
        assert_eq!(Format::choose(None, None).unwrap(), Format::Ndjson);
        assert_eq!(
            Format::choose(None, Some("text/event-stream")).unwrap(),
            Format::Sse
        );
        assert_eq!(
            Format::choose(None, Some("application/x-protobuf")).unwrap(),
            Format::Protobuf
        );
        assert_eq!(
            Format::choose(Some("ndjson"), Some("text/event-stream")).unwrap(),
            Format::Ndjson
        );
        assert_eq!(Format::choose(Some("xml"), None).unwrap_err().code, 10008);
    }
}
