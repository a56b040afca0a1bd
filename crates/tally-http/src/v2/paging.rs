//! v2 pagination (reference §3.1): `page`, `results-per-page`, `order-direction`, and the
//! envelope with `total_results`, `total_pages`, relative `prev_url`/`next_url` whose query keys
//! are sorted.

use serde_json::Value;

use crate::ApiError;

/// The paging parameters of a v2 list request, and its `q` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// 1-based page.
    pub page: u64,
    /// Results per page.
    pub per_page: u64,
    /// `order-direction=desc`.
    pub descending: bool,
    /// The `q` values as sent (kept for the page links).
    pub q: Vec<String>,
    /// The `q` conditions.
    pub filter: Vec<crate::v2::query::Condition>,
    /// `order-by`, when the collection accepts the one sent.
    pub order_by: Option<String>,
}

/// CC's `renderer.default_results_per_page`.
pub const DEFAULT_PER_PAGE: u64 = 50;
/// CC's `renderer.max_results_per_page` for ordinary collections.
pub const MAX_PER_PAGE: u64 = 100;

impl Paging {
    /// Parses a raw query string for a collection that filters on `q_keys`. Unknown parameters
    /// are ignored (as CC does) except `order-by`, which this collection cannot sort by. CC
    /// answers a page below 1 or a non-number with a 500; tally says what is wrong with a 400.
    pub fn parse(
        query: Option<&str>,
        max_per_page: u64,
        q_keys: &[&str],
    ) -> Result<Self, ApiError> {
        Self::parse_ordered(query, max_per_page, q_keys, &[])
    }

    /// [`Paging::parse`] for a collection that accepts `order-by` with one of `order_keys`.
    pub fn parse_ordered(
        query: Option<&str>,
        max_per_page: u64,
        q_keys: &[&str],
        order_keys: &[&str],
    ) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|_| ApiError::bad_query("the query string is not URL-encoded"))?;
        let mut paging = Self {
            page: 1,
            per_page: DEFAULT_PER_PAGE,
            descending: false,
            q: Vec::new(),
            filter: Vec::new(),
            order_by: None,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "page" => {
                    paging.page =
                        value
                            .parse::<u64>()
                            .ok()
                            .filter(|p| *p >= 1)
                            .ok_or_else(|| {
                                ApiError::bad_query(format!(
                                    "page must be a positive integer but was '{value}'"
                                ))
                            })?;
                }
                "results-per-page" => {
                    let n = value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| {
                            ApiError::bad_query(format!(
                                "results_per_page must be a positive integer but was '{value}'"
                            ))
                        })?;
                    if n > max_per_page {
                        return Err(ApiError::bad_query(format!(
                            "results_per_page must be <= {max_per_page}"
                        )));
                    }
                    paging.per_page = n;
                }
                "order-direction" => {
                    paging.descending = match value.as_str() {
                        "asc" => false,
                        "desc" => true,
                        other => {
                            return Err(ApiError::bad_query(format!(
                                "order_direction must be 'asc' or 'desc' but was '{other}'"
                            )))
                        }
                    }
                }
                "q" => paging.q.push(value),
                "order-by" if order_keys.contains(&value.as_str()) => {
                    paging.order_by = Some(value);
                }
                "order-by" => return Err(ApiError::order_by_invalid(&value)),
                _ => {}
            }
        }
        paging.filter = crate::v2::query::parse(&paging.q, q_keys)?;
        Ok(paging)
    }

    /// The envelope for one page of `items` (already in ascending order) at `path`.
    pub fn envelope<T>(&self, path: &str, mut items: Vec<T>, render: impl Fn(T) -> Value) -> Value {
        let total = items.len() as u64;
        if self.descending {
            items.reverse();
        }
        let skip = (self.page - 1).saturating_mul(self.per_page);
        let resources: Vec<Value> = items
            .into_iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(usize::try_from(self.per_page).unwrap_or(usize::MAX))
            .map(render)
            .collect();
        serde_json::to_value(self.page_envelope(path, total, resources, &[])).unwrap_or(Value::Null)
    }

    /// Results to skip before this page.
    pub fn offset(&self) -> u64 {
        (self.page - 1).saturating_mul(self.per_page)
    }

    /// The envelope for a page already cut: `total` results in all, `resources` on this page;
    /// `keep` are further parameters the page links preserve (such as `after_guid`).
    pub fn page_envelope<T: serde::Serialize>(
        &self,
        path: &str,
        total: u64,
        resources: T,
        keep: &[(&str, String)],
    ) -> Page<T> {
        let total_pages = total.div_ceil(self.per_page);
        let url = |page: u64| {
            let mut pairs: Vec<(&str, String)> = vec![
                (
                    "order-direction",
                    if self.descending { "desc" } else { "asc" }.to_owned(),
                ),
                ("page", page.to_string()),
            ];
            if let Some(order_by) = &self.order_by {
                pairs.push(("order-by", order_by.clone()));
            }
            pairs.extend(self.q.iter().map(|q| ("q", q.clone())));
            pairs.push(("results-per-page", self.per_page.to_string()));
            pairs.extend(keep.iter().cloned());
            // Sorted by key (stable, so repeated `q` keep their order), as CC sorts them.
            pairs.sort_by_key(|(key, _)| *key);
            let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
            format!("{path}?{query}")
        };
        Page {
            total_results: total,
            total_pages,
            prev_url: (self.page > 1).then(|| url(self.page - 1)),
            next_url: (self.page < total_pages).then(|| url(self.page + 1)),
            resources,
        }
    }
}

/// A v2 page, serialized in CC's key order.
#[derive(Debug, serde::Serialize)]
pub struct Page<T> {
    /// Results in all.
    pub total_results: u64,
    /// Pages in all (0 when empty).
    pub total_pages: u64,
    /// The previous page, relative.
    pub prev_url: Option<String>,
    /// The next page, relative.
    pub next_url: Option<String>,
    /// This page.
    pub resources: T,
}

/// A v2 list's opening: the caller's right (`rule`, refused with CC's not-found), then its
/// parameters with `q` on `keys`.
pub(crate) fn open(
    state: &crate::AppState,
    caller: &crate::auth::Caller,
    rule: impl FnOnce(
        tally_domain::access::Subject<'_>,
        &tally_domain::State,
    ) -> Result<tally_domain::access::Visible, tally_domain::access::Denial>,
    query: Option<&str>,
    keys: &[&str],
) -> Result<crate::resource::Listing<Paging>, ApiError> {
    crate::resource::open_list(state, caller, rule, ApiError::not_found, || {
        Paging::parse(query, MAX_PER_PAGE, keys)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_parse_and_bad_ones_say_why() {
        assert_eq!(
            Paging::parse(None, 100, &[]).unwrap(),
            Paging {
                page: 1,
                per_page: 50,
                descending: false,
                q: Vec::new(),
                filter: Vec::new(),
                order_by: None,
            }
        );
        let p = Paging::parse(
            Some("page=3&results-per-page=2&order-direction=desc&x=1"),
            100,
            &[],
        )
        .unwrap();
        assert_eq!((p.page, p.per_page, p.descending), (3, 2, true));
        for (query, message) in [
            ("results-per-page=101", "results_per_page must be <= 100"),
            (
                "results-per-page=0",
                "results_per_page must be a positive integer but was '0'",
            ),
            ("page=0", "page must be a positive integer but was '0'"),
            ("page=x", "page must be a positive integer but was 'x'"),
            (
                "order-direction=up",
                "order_direction must be 'asc' or 'desc' but was 'up'",
            ),
            ("q=name:x", "name"),
            ("q=name", "name"),
        ] {
            let error = Paging::parse(Some(query), 100, &[]).unwrap_err();
            assert_eq!(error.code, 10005, "{query}");
            assert_eq!(
                error.message,
                format!("The query parameter is invalid: {message}")
            );
        }
        assert_eq!(
            Paging::parse(Some("order-by=id"), 100, &[])
                .unwrap_err()
                .code,
            10012
        );
    }

    #[test]
    fn the_envelope_counts_pages_and_links_neighbours() {
        let p =
            Paging::parse(Some("page=2&results-per-page=2&q=name:a b"), 100, &["name"]).unwrap();
        let page = p.envelope("/v2/x", vec![1, 2, 3, 4, 5], |n| json!(n));
        assert_eq!(page["total_results"], 5);
        assert_eq!(page["total_pages"], 3);
        assert_eq!(page["resources"], json!([3, 4]));
        assert_eq!(
            page["prev_url"],
            "/v2/x?order-direction=asc&page=1&q=name%3Aa+b&results-per-page=2"
        );
        assert_eq!(
            page["next_url"],
            "/v2/x?order-direction=asc&page=3&q=name%3Aa+b&results-per-page=2"
        );
        let desc =
            Paging::parse(Some("order-direction=desc&results-per-page=2"), 100, &[]).unwrap();
        let page = desc.envelope("/v2/x", vec![1, 2, 3], |n| json!(n));
        assert_eq!(page["resources"], json!([3, 2]));
        assert_eq!(page["prev_url"], Value::Null);
        let empty =
            Paging::parse(None, 100, &[])
                .unwrap()
                .envelope("/v2/x", Vec::<u8>::new(), |n| json!(n));
        assert_eq!(
            empty["total_pages"], 0,
            "v2 reports 0 pages for an empty set"
        );
        // Past the end: an empty page that still links back.
        let past =
            Paging::parse(Some("page=9"), 100, &[])
                .unwrap()
                .envelope("/v2/x", vec![1], |n| json!(n));
        assert_eq!(past["resources"], json!([]));
        assert!(past["prev_url"].is_string());
    }
}
