//! Audit events (reference §6): who did what to which app, written with every app operation.

use crate::ids::{Guid, Timestamp};

/// Who asked for a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// User or client id from the token (`"system"` for tally itself).
    pub guid: String,
    /// `user`, or `system` for changes tally makes on its own.
    pub kind: String,
    /// E-mail or client name.
    pub name: String,
    /// User name.
    pub username: String,
}

impl Actor {
    /// tally itself (staging completion in immediate mode, operator commands).
    pub fn system() -> Self {
        Self {
            guid: "system".to_owned(),
            kind: "system".to_owned(),
            name: "system".to_owned(),
            username: "system".to_owned(),
        }
    }
}

/// One audit event row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Its guid.
    pub guid: Guid,
    /// When it happened.
    pub created_at: Timestamp,
    /// e.g. `audit.app.update`.
    pub event_type: String,
    /// Who.
    pub actor: Actor,
    /// Target id: an app guid, or a user id (which need not be a guid).
    pub actee: String,
    /// Target type (`app`, `user`).
    pub actee_type: String,
    /// Target name.
    pub actee_name: String,
    /// Metadata, a JSON object (a client's request already censored by whoever built the
    /// command).
    pub metadata: Value,
    /// Space of the target.
    pub space_guid: Option<Guid>,
    /// Org of the target.
    pub organization_guid: Option<Guid>,
}

/// A value in an audit event's metadata, in JSON's shapes. The domain writes no JSON: the store
/// (which keeps it as JSON text) and the HTTP edge serialize it, with serde (`tally-json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number as JSON writes it (`3`, `1.5`), kept as text so that it reads back as written.
    Number(String),
    /// A string.
    String(String),
    /// An array.
    List(Vec<Value>),
    /// An object, its keys in the order written.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// An object of these entries, in this order.
    pub fn object<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        Self::Object(
            entries
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        )
    }

    /// `{}`.
    pub fn empty() -> Self {
        Self::Object(Vec::new())
    }

    /// A string value.
    pub fn text(text: impl Into<String>) -> Self {
        Self::String(text.into())
    }

    /// `{"request": request}`: the metadata of a change a client asked for.
    pub fn request(request: Value) -> Self {
        Self::object([("request", request)])
    }

    /// The value under `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}
