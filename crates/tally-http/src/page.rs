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

/// The resources of one page, already JSON: the array, built in one buffer.
#[derive(Debug)]
pub struct Resources {
    array: String,
}

impl Serialize for Resources {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Where a page is not answered by [`json`] (it becomes a `Value`, say).
        let raw: &RawValue =
            serde_json::from_str(&self.array).map_err(serde::ser::Error::custom)?;
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
    let mut array: Vec<u8> = Vec::new();
    let mut count = 0usize;
    let unknown = |error: serde_json::Error| {
        tracing::error!(%error, "a resource did not serialize");
        ApiError::unknown()
    };
    for resource in resources {
        array.push(if count == 0 { b'[' } else { b',' });
        serde_json::to_writer(&mut array, &resource).map_err(unknown)?;
        if count == 0 {
            // Most resources of a list are about as long as the first: room for them all.
            let each = array.len() + array.len() / 8;
            array.reserve(each.saturating_mul(expected).min(max_bytes));
        }
        // Each resource counts with one byte before it (its comma, or the array's `[`).
        if array.len() > max_bytes {
            let fit = count.max(1);
            return Err(refuse(format!(
                "{per_page}: this page would hold more than {max_bytes} bytes \
                 (server.max_page_mb); ask for {per_page}={fit} or fewer"
            )));
        }
        count += 1;
    }
    if count == 0 {
        array.push(b'[');
    }
    array.push(b']');
    let array = String::from_utf8(array).map_err(|_| ApiError::unknown())?;
    Ok(Resources { array })
}

/// The JSON answer of a page: the envelope `page` makes around its resources (their key
/// last, as in every v2 and v3 page), with `resources` written in once, not copied through a
/// growing buffer nor parsed again.
pub fn json<P: Serialize>(
    page: impl FnOnce(Empty) -> P,
    resources: Resources,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let unknown = || {
        tracing::error!("a page's envelope did not serialize");
        ApiError::unknown()
    };
    let mut body = Vec::with_capacity(resources.array.len().saturating_add(1024));
    serde_json::to_writer(&mut body, &page(Empty)).map_err(|_| unknown())?;
    if !body.ends_with(b"[]}") {
        return Err(unknown());
    }
    body.truncate(body.len() - 3);
    body.extend_from_slice(resources.array.as_bytes());
    body.push(b'}');
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// [`fit`] for a v2 list (`results-per-page`, `400 BadQueryParameter`).
pub fn v2<T: Serialize>(
    state: &crate::AppState,
    resources: impl IntoIterator<Item = T>,
) -> Result<Resources, ApiError> {
    let max = state.settings.max_page_bytes;
    fit(resources, max, "results-per-page", ApiError::bad_query)
}

/// [`fit`] for a v3 list (`per_page`), refused with the list's parameter error.
pub fn v3<T: Serialize>(
    state: &crate::AppState,
    resources: impl IntoIterator<Item = T>,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<Resources, ApiError> {
    fit(resources, state.settings.max_page_bytes, "per_page", refuse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_page_answered_by_json_is_the_envelope_serialized_with_its_resources() {
        #[derive(Serialize)]
        struct Envelope<T> {
            pagination: serde_json::Value,
            resources: T,
        }
        let refuse = |message: String| crate::usage_endpoints::unprocessable(message);
        let items = vec![
            serde_json::json!({"guid": "a", "n": [1, 2]}),
            serde_json::json!({"q": "\"x\""}),
        ];
        let pagination = serde_json::json!({"total_results": 2, "next": null});
        for items in [items.clone(), Vec::new()] {
            let expected = serde_json::to_vec(&Envelope {
                pagination: pagination.clone(),
                resources: &items,
            })
            .unwrap();
            let resources = fit(items, 1 << 20, "per_page", refuse).unwrap();
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
            let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&expected)
            );
        }
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
}
