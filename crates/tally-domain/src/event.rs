//! Events: the facts `decide` produces and the log stores, one log record each.

use crate::audit::AuditEvent;
use crate::ids::Guid;
use crate::model::{App, Org, Space};
use crate::role::Membership;
use crate::usage::UsageEvent;

/// One fact. Entity events carry the whole entity after the change, so replaying a log needs no
/// knowledge of how the change was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An org was created.
    OrgCreated(Org),
    /// An org changed.
    OrgUpdated(Org),
    /// An org was deleted.
    OrgDeleted {
        /// Which.
        guid: Guid,
    },
    /// A space was created.
    SpaceCreated(Space),
    /// A space changed.
    SpaceUpdated(Space),
    /// A space was deleted.
    SpaceDeleted {
        /// Which.
        guid: Guid,
    },
    /// An app was created.
    AppCreated(App),
    /// An app changed (state, footprint, attributes, package, build or droplet).
    AppUpdated(App),
    /// An app was deleted.
    AppDeleted {
        /// Which.
        guid: Guid,
    },
    /// A user was given a role in an org or space.
    RoleGranted(Membership),
    /// A user lost a role in an org or space.
    RoleRevoked(Membership),
    /// A task was created or changed.
    TaskPut(crate::model::Task),
    /// A task was deleted (with its app).
    TaskDeleted {
        /// Which.
        guid: Guid,
    },
    /// A process other than `web` was created or changed.
    ProcessPut(crate::model::Process),
    /// A process other than `web` was deleted (with its app).
    ProcessDeleted {
        /// Which.
        guid: Guid,
    },
    /// A usage event was written.
    UsageRecorded(UsageEvent),
    /// An audit event was written.
    AuditRecorded(AuditEvent),
}

impl Event {
    /// Whether the event changes the app table (as opposed to appending to a stream).
    pub fn is_entity_change(&self) -> bool {
        !matches!(self, Self::UsageRecorded(_) | Self::AuditRecorded(_))
    }
}
