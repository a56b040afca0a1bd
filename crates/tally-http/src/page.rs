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

/// The resources of a page, each already JSON; `Err` with `refuse`'s error when they hold more
/// than `max_bytes`. `per_page` names the parameter to lower (`per_page`, `results-per-page`).
pub fn fit<T: Serialize>(
    resources: impl IntoIterator<Item = T>,
    max_bytes: usize,
    per_page: &str,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<Vec<Box<RawValue>>, ApiError> {
    let mut page = Vec::new();
    let mut bytes = 0usize;
    for resource in resources {
        let raw = serde_json::value::to_raw_value(&resource).map_err(|error| {
            tracing::error!(%error, "a resource did not serialize");
            ApiError::unknown()
        })?;
        // The comma between resources.
        bytes = bytes.saturating_add(raw.get().len() + 1);
        if bytes > max_bytes {
            let fit = page.len().max(1);
            return Err(refuse(format!(
                "{per_page}: this page would hold more than {max_bytes} bytes \
                 (server.max_page_mb); ask for {per_page}={fit} or fewer"
            )));
        }
        page.push(raw);
    }
    Ok(page)
}

/// [`fit`] for a v2 list (`results-per-page`, `400 BadQueryParameter`).
pub fn v2<T: Serialize>(
    state: &crate::AppState,
    resources: impl IntoIterator<Item = T>,
) -> Result<Vec<Box<RawValue>>, ApiError> {
    let max = state.settings.max_page_bytes;
    fit(resources, max, "results-per-page", ApiError::bad_query)
}

/// [`fit`] for a v3 list (`per_page`), refused with the list's parameter error.
pub fn v3<T: Serialize>(
    state: &crate::AppState,
    resources: impl IntoIterator<Item = T>,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<Vec<Box<RawValue>>, ApiError> {
    fit(resources, state.settings.max_page_bytes, "per_page", refuse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_within_the_limit_is_kept_and_one_past_it_names_what_fits() {
        let refuse = |message: String| crate::usage_endpoints::unprocessable(message);
        let items = vec!["x".repeat(100); 10];
        // Each item is 102 bytes of JSON plus its comma.
        let page = fit(items.clone(), 1030, "per_page", refuse).unwrap();
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].get(), format!("\"{}\"", "x".repeat(100)));
        let error = fit(items, 1029, "per_page", refuse).unwrap_err();
        assert_eq!(error.code, 10008);
        assert!(
            error.message.contains("ask for per_page=9 or fewer"),
            "{}",
            error.message
        );
    }
}
