//! v3 list parameters and envelope (reference §3.3, §6.4): `page`, `per_page` (1–5000),
//! `order_by` (`created_at`/`updated_at`, `+`/`-`), comma-separated list filters,
//! `created_ats`/`updated_ats` with `[lt|lte|gt|gte]`, unknown keys refused; the envelope with
//! `pagination` (`total_pages` at least 1) and absolute links whose query keys are sorted.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{json, Value};
use tally_domain::Timestamp;

use crate::ApiError;

/// A relational timestamp filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOp {
    /// `[lt]`
    Lt,
    /// `[lte]`
    Lte,
    /// `[gt]`
    Gt,
    /// `[gte]`
    Gte,
}

/// A timestamp filter: equality with any of several seconds, or one relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFilter {
    /// `created_ats=T1,T2`: within one of these seconds.
    Within(Vec<Timestamp>),
    /// `created_ats[op]=T`.
    Relation(TimeOp, Timestamp),
}

impl TimeFilter {
    /// The spans of `created_at` (µs, inclusive) that pass: what the audit index selects by.
    pub fn spans(&self) -> Vec<tally_engine::TimeSpan> {
        use tally_engine::TimeSpan;
        let widen = 999_999;
        let us = |t: &Timestamp| t.timestamp_micros();
        match self {
            Self::Within(times) => times
                .iter()
                .map(|t| TimeSpan {
                    from: Some(us(t)),
                    to: Some(us(t) + widen),
                })
                .collect(),
            Self::Relation(op, t) => {
                let (from, to) = match op {
                    TimeOp::Lt => (None, Some(us(t) - 1)),
                    TimeOp::Lte => (None, Some(us(t) + widen)),
                    TimeOp::Gt => (Some(us(t) + widen + 1), None),
                    TimeOp::Gte => (Some(us(t)), None),
                };
                vec![TimeSpan { from, to }]
            }
        }
    }

    /// Whether `at` passes (reference §3.3's table).
    pub fn matches(&self, at: Timestamp) -> bool {
        let widen = chrono::Duration::microseconds(999_999);
        match self {
            Self::Within(times) => times.iter().any(|t| *t <= at && at <= *t + widen),
            Self::Relation(TimeOp::Lt, t) => at < *t,
            Self::Relation(TimeOp::Lte, t) => at <= *t + widen,
            Self::Relation(TimeOp::Gt, t) => at > *t + widen,
            Self::Relation(TimeOp::Gte, t) => at >= *t,
        }
    }
}

/// A parsed v3 list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// 1-based page.
    pub page: u64,
    /// Per page.
    pub per_page: u64,
    /// `order_by`, normalized (`+created_at`, `-updated_at`), if sent.
    pub order_by: Option<String>,
    /// Comma-separated list filters by key (`guids`, `types`, `target_guids[not]`, ...).
    pub lists: BTreeMap<String, Vec<String>>,
    /// Timestamp filters by key (`created_ats`, `updated_ats`).
    pub times: BTreeMap<String, TimeFilter>,
    /// tally's extension parameters, by key (accepted, not listed in CC's messages).
    pub extensions: BTreeMap<String, String>,
    /// Every parameter as sent, for the links.
    sent: Vec<(String, String)>,
}

/// What a collection accepts, and how it reports bad parameters.
pub struct Spec<'a> {
    /// List filter keys.
    pub lists: &'a [&'a str],
    /// Timestamp filter keys.
    pub times: &'a [&'a str],
    /// Fields `order_by` may name.
    pub order_by: &'a [&'a str],
    /// Timestamp keys CC lists as valid but always refuses on this resource.
    pub refused: &'a [&'a str],
    /// List keys that take exactly one value.
    pub single: &'a [&'a str],
    /// tally's own parameters (documented extensions): accepted, but not named in the
    /// "Valid parameters" message, which stays CC's.
    pub extensions: &'a [&'a str],
    /// Builds the error for a list of problems (400 for audit events, 422 for usage events).
    pub error: fn(String) -> ApiError,
}

fn strict_time(text: &str) -> Option<Timestamp> {
    if text.len() != 20 || !text.ends_with('Z') {
        return None;
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%SZ")
        .ok()
        .map(|t| DateTime::<Utc>::from_naive_utc_and_offset(t, Utc))
}

fn humanize(key: &str) -> String {
    let mut text = key.replace('_', " ");
    if let Some(first) = text.get(..1) {
        let upper = first.to_uppercase();
        text.replace_range(..1, &upper);
    }
    text
}

impl ListQuery {
    /// Parses a raw query string against `spec`; every problem is reported at once.
    pub fn parse(query: Option<&str>, spec: &Spec<'_>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|_| (spec.error)("The query string is not URL-encoded".to_owned()))?;
        let mut out = Self {
            page: 1,
            per_page: 50,
            ..Self::default()
        };
        let mut problems = Vec::new();
        let mut unknown = Vec::new();
        for (key, value) in &pairs {
            let (base, op) = match key.split_once('[') {
                Some((base, rest)) => (base, rest.strip_suffix(']')),
                None => (key.as_str(), None),
            };
            match base {
                "page" => match value.parse::<u64>() {
                    Ok(n) if n >= 1 => out.page = n,
                    _ => problems.push("Page must be a positive integer".to_owned()),
                },
                "per_page" => match value.parse::<u64>() {
                    Ok(n) if (1..=5000).contains(&n) => out.per_page = n,
                    Ok(n) if n >= 1 => {
                        problems.push("Per page must be between 1 and 5000".to_owned())
                    }
                    _ => problems.push("Per page must be a positive integer".to_owned()),
                },
                "order_by" => {
                    let (sign, field) = match value.strip_prefix('-') {
                        Some(field) => ("-", field),
                        None => ("+", value.strip_prefix('+').unwrap_or(value)),
                    };
                    if spec.order_by.contains(&field) {
                        out.order_by = Some(format!("{sign}{field}"));
                    } else {
                        let allowed: Vec<String> =
                            spec.order_by.iter().map(|f| format!("'{f}'")).collect();
                        problems.push(format!("Order by can only be: {}", allowed.join(", ")));
                    }
                }
                refused if spec.refused.contains(&refused) => problems.push(format!(
                    "Filtering by '{refused}' is not allowed on this resource."
                )),
                single if spec.single.contains(&single) && value.contains(',') => {
                    problems.push(format!("{} filter accepts only one guid", humanize(single)))
                }
                extension if spec.extensions.contains(&extension) => {
                    out.extensions.insert(key.clone(), value.clone());
                }
                list if spec.lists.contains(&list) || spec.lists.contains(&key.as_str()) => {
                    out.lists
                        .insert(key.clone(), value.split(',').map(str::to_owned).collect());
                }
                time if spec.times.contains(&time) => {
                    let name = humanize(time);
                    let filter = match op {
                        None => value
                            .split(',')
                            .map(strict_time)
                            .collect::<Option<Vec<_>>>()
                            .map(TimeFilter::Within),
                        Some(op) => {
                            let op = match op {
                                "lt" => Some(TimeOp::Lt),
                                "lte" => Some(TimeOp::Lte),
                                "gt" => Some(TimeOp::Gt),
                                "gte" => Some(TimeOp::Gte),
                                _ => None,
                            };
                            let Some(op) = op else {
                                problems.push(format!(
                                    "{name} Invalid relational operator: '{}'",
                                    key.trim_start_matches(time).trim_matches(['[', ']'])
                                ));
                                continue;
                            };
                            if value.contains(',') {
                                problems.push(format!(
                                    "{name} only accepts one value when using a relational operator"
                                ));
                                continue;
                            }
                            strict_time(value).map(|t| TimeFilter::Relation(op, t))
                        }
                    };
                    match filter {
                        Some(filter) => {
                            out.times.insert(time.to_owned(), filter);
                        }
                        None => problems.push(format!(
                            "{name} has an invalid timestamp format. Timestamps should be formatted as 'YYYY-MM-DDThh:mm:ssZ'"
                        )),
                    }
                }
                _ => unknown.push(format!("'{key}'")),
            }
        }
        if !unknown.is_empty() {
            let mut valid = vec![
                "'page'".to_owned(),
                "'per_page'".to_owned(),
                "'order_by'".to_owned(),
            ];
            valid.extend(
                spec.times
                    .iter()
                    .chain(spec.refused)
                    .map(|k| format!("'{k}'")),
            );
            valid.extend(spec.lists.iter().map(|k| format!("'{k}'")));
            problems.insert(
                0,
                format!(
                    "Unknown query parameter(s): {}. Valid parameters are: {}",
                    unknown.join(", "),
                    valid.join(", ")
                ),
            );
        }
        if !problems.is_empty() {
            return Err((spec.error)(problems.join(", ")));
        }
        out.sent = pairs;
        Ok(out)
    }

    /// The value of `key` as sent (the last one, if sent twice).
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.sent
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `value` passes the list filter `key` (absent filter: yes).
    pub fn allows(&self, key: &str, value: &str) -> bool {
        self.lists
            .get(key)
            .is_none_or(|values| values.iter().any(|v| v == value))
    }

    /// Whether `value` passes the negated list filter `key[not]` (absent filter: yes).
    pub fn allows_not(&self, key: &str, value: &str) -> bool {
        self.lists
            .get(&format!("{key}[not]"))
            .is_none_or(|values| values.iter().all(|v| v != value))
    }

    /// Whether `at` passes the timestamp filter `key` (absent filter: yes).
    pub fn allows_time(&self, key: &str, at: Timestamp) -> bool {
        self.times.get(key).is_none_or(|f| f.matches(at))
    }

    /// Whether the order is descending.
    pub fn descending(&self) -> bool {
        self.order_by.as_deref().is_some_and(|o| o.starts_with('-'))
    }

    fn link(&self, base: &str, page: u64) -> Value {
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in &self.sent {
            if key != "page" && key != "per_page" && key != "order_by" {
                params.insert(key.clone(), value.clone());
            }
        }
        if let Some(order) = &self.order_by {
            params.insert("order_by".to_owned(), order.clone());
        }
        params.insert("page".to_owned(), page.to_string());
        params.insert("per_page".to_owned(), self.per_page.to_string());
        let pairs: Vec<(&String, &String)> = params.iter().collect();
        let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
        json!({ "href": format!("{base}?{query}") })
    }

    /// Results to skip before this page.
    pub fn offset(&self) -> u64 {
        (self.page - 1).saturating_mul(self.per_page)
    }

    /// The envelope for `items` (already in the requested order) at the absolute URL `base`.
    pub fn envelope<T>(&self, base: &str, items: Vec<T>, render: impl Fn(T) -> Value) -> Value {
        let total = items.len() as u64;
        let resources: Vec<Value> = items
            .into_iter()
            .skip(usize::try_from(self.offset()).unwrap_or(usize::MAX))
            .take(usize::try_from(self.per_page).unwrap_or(usize::MAX))
            .map(render)
            .collect();
        serde_json::to_value(self.page_envelope(base, total, resources)).unwrap_or(Value::Null)
    }

    /// The envelope for a page already cut: `total` results in all, `resources` on this page.
    pub fn page_envelope<T: serde::Serialize>(
        &self,
        base: &str,
        total: u64,
        resources: T,
    ) -> Page<T> {
        let total_pages = total.div_ceil(self.per_page).max(1);
        Page {
            pagination: json!({
                "total_results": total,
                "total_pages": total_pages,
                "first": self.link(base, 1),
                "last": self.link(base, total_pages),
                "next": if self.page < total_pages { self.link(base, self.page + 1) } else { Value::Null },
                "previous": if self.page > 1 { self.link(base, self.page - 1) } else { Value::Null },
            }),
            resources,
        }
    }
}

/// Whether an object with no labels passes `label_selector` (reference v3 §8): tally stores no
/// labels, so `k=v`, `k==v`, `k in (..)` and `k` select nothing, and `k!=v`, `k notin (..)`
/// and `!k` select everything. `Err` with CC's message when a requirement is malformed.
pub fn unlabelled_pass(selector: &str) -> Result<bool, String> {
    if selector.trim().is_empty() {
        return Err("Missing label_selector value".to_owned());
    }
    let mut requirements = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                requirements.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    requirements.push(&selector[start..]);
    let key_ok = |key: &str| {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-'))
    };
    let invalid = || Err("Invalid label_selector value".to_owned());
    let mut pass = true;
    for requirement in requirements {
        let r = requirement.trim();
        let set = |rest: &str| {
            let rest = rest.trim();
            rest.starts_with('(') && rest.ends_with(')')
        };
        let negative = if let Some(key) = r.strip_prefix('!') {
            if !key_ok(key.trim()) {
                return invalid();
            }
            true
        } else if let Some((key, rest)) = r.split_once(" notin ") {
            if !key_ok(key.trim()) || !set(rest) {
                return invalid();
            }
            true
        } else if let Some((key, rest)) = r.split_once(" in ") {
            if !key_ok(key.trim()) || !set(rest) {
                return invalid();
            }
            false
        } else if let Some((key, _)) = r.split_once("!=") {
            if !key_ok(key.trim()) {
                return invalid();
            }
            true
        } else if let Some((key, _)) = r.split_once('=') {
            if !key_ok(key.trim()) {
                return invalid();
            }
            false
        } else if key_ok(r) {
            false
        } else {
            return invalid();
        };
        pass &= negative;
    }
    Ok(pass)
}

/// A v3 page.
#[derive(Debug, serde::Serialize)]
pub struct Page<T> {
    /// `total_results`, `total_pages`, `first`, `last`, `next`, `previous`.
    pub pagination: Value,
    /// This page.
    pub resources: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(message: String) -> ApiError {
        ApiError::unprocessable(message)
    }

    const SPEC: Spec<'static> = Spec {
        lists: &["guids", "types", "target_guids", "target_guids[not]"],
        times: &["created_ats"],
        order_by: &["created_at"],
        refused: &[],
        single: &[],
        extensions: &[],
        error: bad,
    };

    #[test]
    fn filters_parse_and_every_problem_is_reported() {
        let q = ListQuery::parse(
            Some("types=a,b&created_ats[lt]=2024-05-01T10:00:00Z&order_by=-created_at&per_page=2&target_guids[not]=x"),
            &SPEC,
        )
        .unwrap();
        assert!(q.allows("types", "b") && !q.allows("types", "c") && q.allows("guids", "z"));
        assert!(!q.allows_not("target_guids", "x") && q.allows_not("target_guids", "y"));
        assert!(q.descending());
        let t = strict_time("2024-05-01T09:59:59Z").unwrap();
        assert!(q.allows_time("created_ats", t));
        assert!(!q.allows_time("created_ats", t + chrono::Duration::seconds(1)));
        let error = ListQuery::parse(Some("garbage=1&per_page=0&created_ats=yesterday"), &SPEC)
            .unwrap_err();
        assert!(error.message.starts_with("Unknown query parameter(s): 'garbage'. Valid parameters are: 'page', 'per_page', 'order_by', 'created_ats', 'guids'"), "{}", error.message);
        assert!(error
            .message
            .contains("Per page must be a positive integer"));
        assert!(error
            .message
            .contains("Created ats has an invalid timestamp format"));
        let error = ListQuery::parse(
            Some("created_ats[lt]=2024-05-01T10:00:00Z,2024-05-01T10:00:00Z"),
            &SPEC,
        )
        .unwrap_err();
        assert_eq!(
            error.message,
            "Created ats only accepts one value when using a relational operator"
        );
        let error =
            ListQuery::parse(Some("created_ats[on]=2024-05-01T10:00:00Z"), &SPEC).unwrap_err();
        assert_eq!(
            error.message,
            "Created ats Invalid relational operator: 'on'"
        );
        let error = ListQuery::parse(Some("order_by=name"), &SPEC).unwrap_err();
        assert_eq!(error.message, "Order by can only be: 'created_at'");
    }

    #[test]
    fn label_selectors_select_what_an_unlabelled_object_passes() {
        assert_eq!(unlabelled_pass("env!=prod,!team"), Ok(true));
        assert_eq!(unlabelled_pass("env notin (a,b)"), Ok(true));
        assert_eq!(unlabelled_pass("env in (a,b),!team"), Ok(false));
        assert_eq!(unlabelled_pass("env=prod"), Ok(false));
        assert_eq!(unlabelled_pass("env==prod"), Ok(false));
        assert_eq!(unlabelled_pass("env"), Ok(false));
        assert!(unlabelled_pass("").is_err());
        assert!(unlabelled_pass("env in a").is_err());
        assert!(unlabelled_pass("e nv").is_err());
    }

    #[test]
    fn equality_is_a_one_second_window() {
        let q = ListQuery::parse(Some("created_ats=2024-05-01T10:00:00Z"), &SPEC).unwrap();
        let t = strict_time("2024-05-01T10:00:00Z").unwrap();
        assert!(q.allows_time("created_ats", t + chrono::Duration::milliseconds(999)));
        assert!(!q.allows_time("created_ats", t + chrono::Duration::seconds(1)));
        assert!(!q.allows_time("created_ats", t - chrono::Duration::microseconds(1)));
    }

    #[test]
    fn links_carry_the_filters_sorted_and_total_pages_is_at_least_one() {
        let q = ListQuery::parse(Some("types=a,b&per_page=1&order_by=created_at"), &SPEC).unwrap();
        let page = q.envelope("https://api.example.org/v3/x", vec![1, 2], |n| json!(n));
        assert_eq!(page["pagination"]["total_pages"], 2);
        assert_eq!(
            page["pagination"]["next"]["href"],
            "https://api.example.org/v3/x?order_by=%2Bcreated_at&page=2&per_page=1&types=a%2Cb"
        );
        assert_eq!(page["pagination"]["previous"], Value::Null);
        let empty = ListQuery::parse(None, &SPEC)
            .unwrap()
            .envelope("u", Vec::<u8>::new(), |n| json!(n));
        assert_eq!(empty["pagination"]["total_pages"], 1);
    }
}
