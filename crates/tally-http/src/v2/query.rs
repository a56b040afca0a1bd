//! v2 `q` filters (reference §3.1, §5.3, §6.3): `q=key:value`, `>=`, `<=`, `<`, `>`, and
//! `key IN a,b`; several `q` parameters, or `;`-separated conditions in one, are ANDed.

use crate::ApiError;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `:`
    Eq,
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `>`
    Gt,
    /// ` IN `
    In,
}

/// One condition of a `q` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The attribute.
    pub key: String,
    /// How it is compared.
    pub op: Op,
    /// The value (several for `IN`).
    pub values: Vec<String>,
}

/// Parses every `q` value; a key outside `allowed` is `BadQueryParameter` naming it.
pub fn parse(q_values: &[String], allowed: &[&str]) -> Result<Vec<Condition>, ApiError> {
    let mut conditions = Vec::new();
    for q in q_values {
        for segment in q.split(';').filter(|s| !s.is_empty()) {
            conditions.push(parse_one(segment, allowed)?);
        }
    }
    Ok(conditions)
}

fn parse_one(segment: &str, allowed: &[&str]) -> Result<Condition, ApiError> {
    // The earliest operator wins, as CC's `split(/(:|>=|<=|<|>| IN )/, 2)` does.
    let ops = [
        (":", Op::Eq),
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("<", Op::Lt),
        (">", Op::Gt),
        (" IN ", Op::In),
    ];
    let found = ops
        .iter()
        .filter_map(|(token, op)| segment.find(token).map(|at| (at, *token, *op)))
        .min_by_key(|(at, token, _)| (*at, std::cmp::Reverse(token.len())));
    let Some((at, token, op)) = found else {
        return Err(ApiError::bad_query(segment));
    };
    let key = &segment[..at];
    let value = &segment[at + token.len()..];
    if !allowed.contains(&key) {
        return Err(ApiError::bad_query(key));
    }
    let values = if op == Op::In {
        value.split(',').map(str::to_owned).collect()
    } else {
        vec![value.to_owned()]
    };
    Ok(Condition {
        key: key.to_owned(),
        op,
        values,
    })
}

impl Condition {
    /// Whether `actual` satisfies the condition, comparing as text.
    pub fn matches(&self, actual: &str) -> bool {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.op {
            Op::Eq => actual == first,
            Op::In => self.values.iter().any(|v| v == actual),
            Op::Ge => actual >= first,
            Op::Le => actual <= first,
            Op::Lt => actual < first,
            Op::Gt => actual > first,
        }
    }

    /// Whether a name satisfies it: CC's name columns compare without case (`citext`).
    pub fn matches_name(&self, actual: &str) -> bool {
        let folded = Self {
            key: self.key.clone(),
            op: self.op,
            values: self
                .values
                .iter()
                .map(|v| tally_domain::state::name_key(v))
                .collect(),
        };
        folded.matches(&tally_domain::state::name_key(actual))
    }

    /// Whether an optional attribute satisfies it (absent matches nothing).
    pub fn matches_opt(&self, actual: Option<&str>) -> bool {
        actual.is_some_and(|a| self.matches(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(values: &[&str]) -> Result<Vec<Condition>, ApiError> {
        let owned: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        parse(&owned, &["name", "space_guid", "timestamp"])
    }

    #[test]
    fn operators_and_conjunctions_parse() {
        let c = q(&["name:my:app", "space_guid IN a,b;timestamp>=2024"]).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!((c[0].key.as_str(), c[0].op), ("name", Op::Eq));
        assert_eq!(c[0].values, ["my:app"], "only the first operator splits");
        assert_eq!(
            (c[1].op, c[1].values.clone()),
            (Op::In, vec!["a".into(), "b".into()])
        );
        assert_eq!((c[2].key.as_str(), c[2].op), ("timestamp", Op::Ge));
        assert!(c[0].matches("my:app") && !c[0].matches("my"));
        // Names compare without case, as CC's citext columns do; other keys do not.
        assert!(c[0].matches_name("My:App") && !c[0].matches("My:App"));
        assert!(c[1].matches("b") && !c[1].matches("c"));
        assert!(c[2].matches("2025") && !c[2].matches("2023"));
        let lt = q(&["timestamp<2024"]).unwrap();
        assert_eq!(lt[0].op, Op::Lt);
    }

    #[test]
    fn unknown_keys_and_missing_operators_are_bad_query_parameters() {
        let e = q(&["colour:red"]).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (10005, "The query parameter is invalid: colour")
        );
        assert_eq!(q(&["name"]).unwrap_err().code, 10005);
    }
}
