//! Several tally nodes on one PostgreSQL: any node takes any request.
//!
//! One middleware, before every handler:
//! - a **read** (`GET`, `HEAD`) first waits for [`Engine::sync`](tally_engine::Engine::sync):
//!   the node's view then holds every write any node had acknowledged when the request
//!   arrived (read-your-writes across nodes);
//! - a **write** on a node that does not hold the lease is passed as it is (method, path,
//!   query, headers, streamed body) to the node that does (the head row's `holder_url`), and
//!   its answer passed back; that node decides it against the whole log and authorizes it
//!   with the token the client sent. With no live writer (an election under way, the
//!   database out of reach), or a writer that does not answer, the client gets CC's 503.
//!
//! A single node (sled, or the only node on PostgreSQL) passes everything straight on.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tally_engine::Role;

use crate::{ApiError, AppState};

/// Marks a request one node passed to another: it is never passed on again.
static FORWARDED: HeaderName = HeaderName::from_static("x-tally-forwarded");

/// Paths that never wait for the log: probes and scrapes answer about this node itself.
fn node_local(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The middleware (see the module documentation).
pub(crate) async fn any_node(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if node_local(request.uri().path()) {
        return next.run(request).await;
    }
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    if read {
        return match state.engine.sync().await {
            Ok(_) => next.run(request).await,
            Err(error) => ApiError::from(error).into_response(),
        };
    }
    match state.engine.role() {
        Role::Sole | Role::Writer { .. } => next.run(request).await,
        Role::Follower { leader, .. } => {
            let forwarded = &state.metrics.http.forwarded;
            match leader {
                Some(leader) if !request.headers().contains_key(&FORWARDED) => {
                    let answer = forward(&leader, request, state.settings.forward_timeout).await;
                    let outcome = if answer.is_ok() {
                        "answered"
                    } else {
                        "unreachable"
                    };
                    forwarded.with_label_values(&[outcome]).inc();
                    answer.unwrap_or_else(IntoResponse::into_response)
                }
                _ => {
                    forwarded.with_label_values(&["no_writer"]).inc();
                    ApiError::unavailable(
                        "No tally node holds the log's lease right now (one takes it within the \
                         lease's length); retry",
                    )
                    .into_response()
                }
            }
        }
    }
}

/// The one client every forward goes through (its connections are kept and reused).
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(2))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::HOST,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

async fn forward(
    leader: &str,
    request: Request,
    timeout: std::time::Duration,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let url = format!("{}{path}", leader.trim_end_matches('/'));
    let mut outgoing = client().request(parts.method.clone(), &url);
    // Package uploads may take long to send; `server.request_timeout_seconds` bounds them.
    let upload = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"));
    if !upload {
        outgoing = outgoing.timeout(timeout);
    }
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let sent = outgoing
        .header(&FORWARDED, "1")
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await
        .map_err(|error| {
            tracing::warn!(%error, leader, "the node holding the lease did not answer a forwarded write");
            ApiError::unavailable(
                "The tally node that writes the log did not answer; retry (another node takes \
                 over within the lease's length if it is gone)",
            )
        })?;
    let mut response = Response::builder().status(sent.status());
    for (name, value) in sent.headers() {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(sent.bytes_stream()))
        .map_err(|error| {
            ApiError::unavailable(format!("cannot pass the writer's answer on: {error}"))
        })
}
