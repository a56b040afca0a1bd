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
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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

/// The one client every forward goes through (its connections are kept and reused). Plain
/// hyper: the request and the answer pass through as they are, headers and streamed bodies
/// and all, without being copied into another client's types.
fn client() -> &'static Client<HttpConnector, Body> {
    static CLIENT: OnceLock<Client<HttpConnector, Body>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(connector)
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

/// Drops the headers that belong to one connection.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let hop: Vec<HeaderName> = headers.keys().filter(|n| hop_by_hop(n)).cloned().collect();
    for name in hop {
        headers.remove(name);
    }
}

fn unreachable_writer(leader: &str, error: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%error, leader, "the node holding the lease did not answer a forwarded write");
    ApiError::unavailable(
        "The tally node that writes the log did not answer; retry (another node takes over \
         within the lease's length if it is gone)",
    )
}

async fn forward(
    leader: &str,
    request: Request,
    timeout: std::time::Duration,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{}{path}", leader.trim_end_matches('/'))
        .parse::<Uri>()
        .map_err(|error| unreachable_writer(leader, error))?;
    parts.version = Version::HTTP_11;
    // Package uploads may take long to send; `server.request_timeout_seconds` bounds them.
    let upload = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"));
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(FORWARDED.clone(), HeaderValue::from_static("1"));
    let sent = client().request(Request::from_parts(parts, body));
    let answered = if upload {
        sent.await
    } else {
        tokio::time::timeout(timeout, sent)
            .await
            .map_err(|_| unreachable_writer(leader, "no answer within the timeout"))?
    };
    let (mut parts, body) = answered
        .map_err(|error| unreachable_writer(leader, error))?
        .into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}
