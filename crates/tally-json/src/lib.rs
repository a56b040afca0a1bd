//! The JSON form of [`tally_domain::audit::Value`] (an audit event's metadata), written and
//! read with serde in one place: the store keeps it as JSON text in the log, the HTTP edge reads
//! a client's request into it and presents it. Object keys keep their order both ways
//! (`serde_json`'s `preserve_order`), so text read back and written again is the same text.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use tally_domain::audit::Value;

/// Serializes a domain value as the JSON it stands for.
pub struct Json<'a>(pub &'a Value);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            // Numbers come from JSON text (`from_json`); one that is not is written as null.
            Value::Number(text) => match text.parse::<serde_json::Number>() {
                Ok(number) => number.serialize(serializer),
                Err(_) => serializer.serialize_unit(),
            },
            Value::String(text) => serializer.serialize_str(text),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Json(item))?;
                }
                seq.end()
            }
            Value::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, &Json(value))?;
                }
                map.end()
            }
        }
    }
}

/// The domain value of a JSON value.
pub fn from_json(value: serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Number(n.to_string()),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(items) => Value::List(items.into_iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key, from_json(value)))
                .collect(),
        ),
    }
}

/// The JSON value of a domain value.
pub fn to_json(value: &Value) -> serde_json::Value {
    // Serializing into a `serde_json::Value` fails only on a map key that is not a string.
    serde_json::to_value(Json(value)).unwrap_or(serde_json::Value::Null)
}

/// The value's JSON text, compact.
pub fn to_text(value: &Value) -> String {
    // Writing to a `String` fails only on a map key that is not a string; every key here is.
    serde_json::to_string(&Json(value)).unwrap_or_else(|_| String::from("null"))
}

/// The domain value of JSON text.
pub fn from_text(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text).map(from_json)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// JSON text as tally writes it (compact, keys in the order written) reads back and is
    /// written again byte for byte, escapes and key order included.
    #[test]
    fn stored_text_reads_back_as_the_same_text() {
        for text in [
            r#"{}"#,
            r#"{"request":{}}"#,
            r#"{"request":{"recursive":true}}"#,
            r#"{"build_guid":"b","package_guid":"p","error_message":"line \"1\"\n\\ \u0001 ü 🦀"}"#,
            r#"{"request":{"name":"a","instances":3,"memory":1024,"ports":[8080,9090],"environment_json":"[PRIVATE DATA HIDDEN]","production":false,"stack_guid":null,"x":-1.5}}"#,
            r#"{"z":1,"a":2,"m":{"k":[{"b":null,"a":[]}]}}"#,
        ] {
            let value = from_text(text).unwrap();
            assert_eq!(to_text(&value), text);
            assert_eq!(
                to_json(&value),
                serde_json::from_str::<serde_json::Value>(text).unwrap()
            );
        }
    }

    #[test]
    fn the_domain_builders_write_what_cc_writes() {
        let revoke = Value::request(Value::object([("recursive", Value::Bool(false))]));
        assert_eq!(to_text(&revoke), r#"{"request":{"recursive":false}}"#);
        let failed = Value::object([("error_message", Value::text("a \"b\"\n"))]);
        assert_eq!(to_text(&failed), r#"{"error_message":"a \"b\"\n"}"#);
        assert_eq!(to_text(&Value::Number("not a number".into())), "null");
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e12f64..1e12).prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..8)
                    .prop_map(|entries| serde_json::Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any JSON a client may send survives the domain and back unchanged, as value and text.
        #[test]
        fn any_json_round_trips(value in json()) {
            let text = serde_json::to_string(&value).unwrap();
            let domain = from_json(value.clone());
            prop_assert_eq!(to_json(&domain), value);
            prop_assert_eq!(to_text(&domain), text.clone());
            prop_assert_eq!(from_text(&text).unwrap(), domain);
        }
    }
}
