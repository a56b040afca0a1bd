//! The most bytes one list answer may hold (`server.max_page_mb`). Each resource of a page is
//! serialized once, into the page it is part of, and the sizes are summed as they are: a page
//! past the limit is refused with the list's parameter error, which says how many of these
//! results would fit, before the answer is built.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::ApiError;

/// The most bytes one usage event takes in any list (its JSON, compact), given the limits of
/// `tally_domain::limits`; a property test through the router checks it.
pub const MAX_USAGE_EVENT_BYTES: usize = 32 * 1024;
/// The most bytes one audit event takes in any list, likewise.
pub const MAX_AUDIT_EVENT_BYTES: usize = 64 * 1024;

/// Pages of at least this many resources are written by two threads, each one half.
const PARALLEL_FROM: usize = 512;

/// The resources of one page, already JSON: the array, in the buffers it was written in
/// (their concatenation is the array's text).
#[derive(Debug)]
pub struct Resources {
    parts: Vec<Vec<u8>>,
}

impl Serialize for Resources {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Where a page is not answered by [`json`] (the v3 app list, which adds `included`).
        let text = String::from_utf8(self.parts.concat()).map_err(serde::ser::Error::custom)?;
        let raw: &RawValue = serde_json::from_str(&text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// An empty list, where [`json`] puts a page's [`Resources`].
#[derive(Debug, Clone, Copy)]
pub struct Empty;

impl Serialize for Empty {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        serializer.serialize_seq(Some(0))?.end()
    }
}

/// Resources written one after the other, each with a comma before it; where each ends.
struct Part {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// Writes `resources` (about `expected` of them) until they hold more than `max_bytes`.
fn write_part<T: Serialize>(
    resources: impl Iterator<Item = T>,
    expected: usize,
    max_bytes: usize,
) -> Result<Part, serde_json::Error> {
    write_part_with(
        resources,
        |out, r| serde_json::to_writer(out, &r),
        expected,
        max_bytes,
    )
}

/// [`write_part`] with each resource written by `write`.
fn write_part_with<I>(
    resources: impl Iterator<Item = I>,
    write: impl Fn(&mut Vec<u8>, I) -> Result<(), serde_json::Error>,
    expected: usize,
    max_bytes: usize,
) -> Result<Part, serde_json::Error> {
    let mut part = Part {
        bytes: Vec::new(),
        ends: Vec::with_capacity(expected),
    };
    for resource in resources {
        part.bytes.push(b',');
        write(&mut part.bytes, resource)?;
        part.ends.push(part.bytes.len());
        if part.ends.len() == 1 {
            // Most resources of a list are about as long as the first: room for them all.
            let each = part.bytes.len() + part.bytes.len() / 8;
            part.bytes
                .reserve(each.saturating_mul(expected).min(max_bytes));
        }
        if part.bytes.len() > max_bytes {
            break;
        }
    }
    Ok(part)
}

/// The parts as one array, or `refuse`'s error when they hold more than `max_bytes` (each
/// resource counted with the byte before it: its comma, or the array's `[`).
fn assemble(
    parts: Vec<Part>,
    max_bytes: usize,
    per_page: &str,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<Resources, ApiError> {
    let total: usize = parts.iter().map(|p| p.bytes.len()).sum();
    if total > max_bytes {
        let (mut fit, mut before) = (0usize, 0usize);
        'parts: for part in &parts {
            for end in &part.ends {
                if before + end > max_bytes {
                    break 'parts;
                }
                fit += 1;
            }
            before += part.bytes.len();
        }
        let fit = fit.max(1);
        return Err(refuse(format!(
            "{per_page}: this page would hold more than {max_bytes} bytes \
             (server.max_page_mb); ask for {per_page}={fit} or fewer"
        )));
    }
    let mut parts: Vec<Vec<u8>> = parts
        .into_iter()
        .map(|p| p.bytes)
        .filter(|b| !b.is_empty())
        .collect();
    match parts.first_mut() {
        Some(first) => first[0] = b'[',
        None => parts.push(vec![b'[']),
    }
    parts.push(vec![b']']);
    Ok(Resources { parts })
}

fn serialization_failed(error: serde_json::Error) -> ApiError {
    tracing::error!(%error, "a resource did not serialize");
    ApiError::unknown()
}

/// The resources of a page as one JSON array; `Err` with `refuse`'s error when they hold more
/// than `max_bytes`. `per_page` names the parameter to lower (`per_page`, `results-per-page`).
/// Each resource is written once, into the array's buffer, which is sized from the first.
pub fn fit<T: Serialize>(
    resources: impl IntoIterator<Item = T>,
    max_bytes: usize,
    per_page: &str,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<Resources, ApiError> {
    let resources = resources.into_iter();
    let expected = resources.size_hint().0;
    let part = write_part(resources, expected, max_bytes).map_err(serialization_failed)?;
    assemble(vec![part], max_bytes, per_page, refuse)
}

/// [`fit`] for `items` rendered by `render`: a large page is rendered and written by two
/// threads, one half each (a lone consumer catching up then has both cores).
pub fn fit_all<'a, E: Sync, T: Serialize>(
    items: &'a [E],
    render: impl Fn(&'a E) -> T + Sync,
    max_bytes: usize,
    per_page: &str,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<Resources, ApiError> {
    let write = |out: &mut Vec<u8>, item: &'a E| serde_json::to_writer(out, &render(item));
    fit_all_with(items, write, max_bytes, per_page, refuse)
}

/// [`fit_all`] with each item written by `write` (which must write one JSON value).
pub fn fit_all_with<'a, E: Sync>(
    items: &'a [E],
    write: impl Fn(&mut Vec<u8>, &'a E) -> Result<(), serde_json::Error> + Sync,
    max_bytes: usize,
    per_page: &str,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<Resources, ApiError> {
    let write = |items: &'a [E]| write_part_with(items.iter(), &write, items.len(), max_bytes);
    let parts = if items.len() >= PARALLEL_FROM {
        let (first, second) = items.split_at(items.len() / 2);
        std::thread::scope(|scope| {
            let other = std::thread::Builder::new()
                .name("tally-page".to_owned())
                .spawn_scoped(scope, || write(second));
            let first = write(first);
            // Without a second thread, this one writes both halves.
            let second = match other {
                Ok(handle) => handle.join().unwrap_or_else(|_| write(second)),
                Err(_) => write(second),
            };
            Ok::<_, serde_json::Error>(vec![first?, second?])
        })
    } else {
        write(items).map(|part| vec![part])
    }
    .map_err(serialization_failed)?;
    assemble(parts, max_bytes, per_page, refuse)
}

/// The JSON answer of a page: the envelope `page` makes around its resources (their key
/// last, as in every v2 and v3 page), with `resources` sent in the buffers they were written
/// in, not copied into one nor parsed again.
pub fn json<P: Serialize>(
    page: impl FnOnce(Empty) -> P,
    resources: Resources,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let unknown = || {
        tracing::error!("a page's envelope did not serialize");
        ApiError::unknown()
    };
    let mut envelope = Vec::with_capacity(1024);
    serde_json::to_writer(&mut envelope, &page(Empty)).map_err(|_| unknown())?;
    if !envelope.ends_with(b"[]}") {
        return Err(unknown());
    }
    envelope.truncate(envelope.len() - 3);
    let mut chunks = Vec::with_capacity(resources.parts.len() + 2);
    chunks.push(envelope);
    chunks.extend(resources.parts);
    chunks.push(b"}".to_vec());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        axum::body::Body::new(Chunks::new(chunks)),
    )
        .into_response())
}

/// A body sent as the buffers it was written in, one frame each; its length is known, so
/// the answer carries a `Content-Length`.
struct Chunks {
    chunks: std::collections::VecDeque<axum::body::Bytes>,
    left: u64,
}

impl Chunks {
    fn new(chunks: Vec<Vec<u8>>) -> Self {
        let chunks: std::collections::VecDeque<axum::body::Bytes> = chunks
            .into_iter()
            .filter(|c| !c.is_empty())
            .map(axum::body::Bytes::from)
            .collect();
        let left = chunks.iter().map(|c| c.len() as u64).sum();
        Self { chunks, left }
    }
}

impl http_body::Body for Chunks {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let chunk = this.chunks.pop_front().map(|chunk| {
            this.left -= chunk.len() as u64;
            Ok(http_body::Frame::data(chunk))
        });
        std::task::Poll::Ready(chunk)
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// [`fit_all`] for a v2 list (`results-per-page`, `400 BadQueryParameter`).
pub fn v2_all<'a, E: Sync, T: Serialize>(
    state: &crate::AppState,
    items: &'a [E],
    render: impl Fn(&'a E) -> T + Sync,
) -> Result<Resources, ApiError> {
    v2_all_with(state, items, |out, item| {
        serde_json::to_writer(out, &render(item))
    })
}

/// [`fit_all_with`] for a v2 list.
pub fn v2_all_with<'a, E: Sync>(
    state: &crate::AppState,
    items: &'a [E],
    write: impl Fn(&mut Vec<u8>, &'a E) -> Result<(), serde_json::Error> + Sync,
) -> Result<Resources, ApiError> {
    let max = state.settings.max_page_bytes;
    fit_all_with(items, write, max, "results-per-page", ApiError::bad_query)
}

/// [`fit_all_with`] for a v3 list.
pub fn v3_all_with<'a, E: Sync>(
    state: &crate::AppState,
    items: &'a [E],
    write: impl Fn(&mut Vec<u8>, &'a E) -> Result<(), serde_json::Error> + Sync,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<Resources, ApiError> {
    let max = state.settings.max_page_bytes;
    fit_all_with(items, write, max, "per_page", refuse)
}

/// [`fit`] for a v3 list (`per_page`), refused with the list's parameter error.
pub fn v3<T: Serialize>(
    state: &crate::AppState,
    resources: impl IntoIterator<Item = T>,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<Resources, ApiError> {
    fit(resources, state.settings.max_page_bytes, "per_page", refuse)
}

/// [`fit_all`] for a v3 list.
pub fn v3_all<'a, E: Sync, T: Serialize>(
    state: &crate::AppState,
    items: &'a [E],
    render: impl Fn(&'a E) -> T + Sync,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<Resources, ApiError> {
    let write = |out: &mut Vec<u8>, item: &'a E| serde_json::to_writer(out, &render(item));
    v3_all_with(state, items, write, refuse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Envelope<T> {
        pagination: serde_json::Value,
        resources: T,
    }

    /// Answers `resources` with [`json`] and checks the answer is `items` in the envelope,
    /// with its exact length known up front (so the answer has a Content-Length).
    async fn answers_as_serialized<T: Serialize>(items: &[T], resources: Resources) {
        let pagination = serde_json::json!({"total_results": items.len(), "next": null});
        let expected = serde_json::to_vec(&Envelope {
            pagination: pagination.clone(),
            resources: items,
        })
        .unwrap();
        let answer = json(
            |resources| Envelope {
                pagination: pagination.clone(),
                resources,
            },
            resources,
        )
        .unwrap();
        assert_eq!(
            answer.headers()[axum::http::header::CONTENT_TYPE],
            "application/json"
        );
        use http_body::Body as _;
        assert_eq!(
            answer.body().size_hint().exact(),
            Some(expected.len() as u64)
        );
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&expected)
        );
    }

    #[tokio::test]
    async fn a_page_answered_by_json_is_the_envelope_serialized_with_its_resources() {
        let refuse = |message: String| crate::usage_endpoints::unprocessable(message);
        let items = vec![
            serde_json::json!({"guid": "a", "n": [1, 2]}),
            serde_json::json!({"q": "\"x\""}),
        ];
        for items in [items.clone(), Vec::new()] {
            let resources = fit(items.clone(), 1 << 20, "per_page", refuse).unwrap();
            answers_as_serialized(&items, resources).await;
        }
        // A page written in two halves.
        let items: Vec<usize> = (0..1000).collect();
        let resources = fit_all(&items, |n| *n, 1 << 20, "per_page", refuse).unwrap();
        assert_eq!(
            resources.parts.len(),
            3,
            "two halves and the closing bracket"
        );
        answers_as_serialized(&items, resources).await;
    }

    #[test]
    fn a_page_within_the_limit_is_kept_and_one_past_it_names_what_fits() {
        let refuse = |message: String| crate::usage_endpoints::unprocessable(message);
        let items = vec!["x".repeat(100); 10];
        // Each item is 102 bytes of JSON plus its comma.
        let page = fit(items.clone(), 1030, "per_page", refuse).unwrap();
        let one = format!("\"{}\"", "x".repeat(100));
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            format!("[{}]", vec![one; 10].join(","))
        );
        let empty = fit(Vec::<String>::new(), 0, "per_page", refuse).unwrap();
        assert_eq!(serde_json::to_string(&empty).unwrap(), "[]");
        let error = fit(items, 1029, "per_page", refuse).unwrap_err();
        assert_eq!(error.code, 10008);
        assert!(
            error.message.contains("ask for per_page=9 or fewer"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_large_page_written_by_two_threads_is_the_page_written_by_one() {
        let refuse = |message: String| crate::usage_endpoints::unprocessable(message);
        let items: Vec<usize> = (0..1000).collect();
        // Each item is 103 bytes of JSON plus its comma; the page is written in two halves.
        let render = |n: &usize| format!("{n:0>101}");
        let serial = fit(items.iter().map(render), usize::MAX, "per_page", refuse).unwrap();
        let both = fit_all(&items, render, 1000 * 104, "per_page", refuse).unwrap();
        assert_eq!(both.parts.len(), 3, "two halves and the closing bracket");
        assert_eq!(
            serde_json::to_string(&both).unwrap(),
            serde_json::to_string(&serial).unwrap()
        );
        // The limit counts across the halves: 600 items fit in 600 * 104 bytes, not one more.
        let error = fit_all(&items, render, 600 * 104 + 103, "per_page", refuse).unwrap_err();
        assert!(
            error.message.contains("ask for per_page=600 or fewer"),
            "{}",
            error.message
        );
        let small = fit_all(&items[..3], render, 1 << 20, "per_page", refuse).unwrap();
        assert_eq!(
            serde_json::to_string(&small).unwrap(),
            format!(
                "[{}]",
                ["0", "1", "2"].map(|n| format!("\"{n:0>101}\"")).join(",")
            )
        );
    }
}
