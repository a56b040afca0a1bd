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
    /// Metadata as JSON object text (already censored by whoever built the command).
    pub metadata: String,
    /// Space of the target.
    pub space_guid: Option<Guid>,
    /// Org of the target.
    pub organization_guid: Option<Guid>,
}
