//! Org and space roles (reference §8.2, §8.3): which user holds which role in which org or
//! space. Users are UAA ids (`user_id`, else `client_id`), kept as text because client ids are
//! not guids.

use crate::ids::Guid;

/// A role in an org or a space. The order is the persisted tag order: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleKind {
    /// Org user (`/v2/organizations/:guid/users`).
    OrgUser,
    /// Org manager.
    OrgManager,
    /// Org auditor.
    OrgAuditor,
    /// Org billing manager.
    OrgBillingManager,
    /// Space developer (`/v2/spaces/:guid/developers`).
    SpaceDeveloper,
    /// Space manager.
    SpaceManager,
    /// Space auditor.
    SpaceAuditor,
}

impl RoleKind {
    /// Every role, in tag order.
    pub const ALL: [RoleKind; 7] = [
        Self::OrgUser,
        Self::OrgManager,
        Self::OrgAuditor,
        Self::OrgBillingManager,
        Self::SpaceDeveloper,
        Self::SpaceManager,
        Self::SpaceAuditor,
    ];

    /// Whether the role belongs to an org (else to a space).
    pub fn is_org_role(self) -> bool {
        matches!(
            self,
            Self::OrgUser | Self::OrgManager | Self::OrgAuditor | Self::OrgBillingManager
        )
    }

    /// The v2 association name in URLs (`developers`, `billing_managers`, …).
    pub fn association(self) -> &'static str {
        match self {
            Self::OrgUser => "users",
            Self::OrgManager | Self::SpaceManager => "managers",
            Self::OrgAuditor | Self::SpaceAuditor => "auditors",
            Self::OrgBillingManager => "billing_managers",
            Self::SpaceDeveloper => "developers",
        }
    }

    /// The org role for a v2 association name.
    pub fn org_role(association: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.is_org_role() && r.association() == association)
    }

    /// The space role for a v2 association name.
    pub fn space_role(association: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| !r.is_org_role() && r.association() == association)
    }

    /// The role's name in audit event types (`space_developer`, `organization_billing_manager`).
    pub fn audit_name(self) -> &'static str {
        match self {
            Self::OrgUser => "organization_user",
            Self::OrgManager => "organization_manager",
            Self::OrgAuditor => "organization_auditor",
            Self::OrgBillingManager => "organization_billing_manager",
            Self::SpaceDeveloper => "space_developer",
            Self::SpaceManager => "space_manager",
            Self::SpaceAuditor => "space_auditor",
        }
    }
}

/// One user holding one role in one org or space.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Membership {
    /// The org or space.
    pub resource: Guid,
    /// The role.
    pub role: RoleKind,
    /// The user (UAA `user_id` or `client_id`).
    pub user: String,
}

/// Longest user id accepted (CC's `users.guid` column is 255 characters).
pub const MAX_USER_ID_LEN: usize = 255;

/// Whether `user` can be a user id: 1–255 printable characters without whitespace.
pub fn valid_user_id(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER_ID_LEN
        && !user.chars().any(|c| c.is_control() || c.is_whitespace())
}
