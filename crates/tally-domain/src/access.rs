//! Who may do what: Cloud Controller's permission rules (reference §8.2, §8.3, §6.3, §6.4) as
//! pure functions of the caller's scopes, the caller's org and space roles, and the object.
//! Every handler asks here; none decides on its own.
//!
//! v2 checks in CC's order: the token rule first (failing it is `InsufficientScope`), then the
//! object must exist (`NotFound`), then the object rule (`NotAuthorized`). v3 hides what a caller
//! may not see: invisible objects are `NotFound` and lists are filtered, not refused.

use std::collections::BTreeSet;

use crate::command::Command;
use crate::ids::Guid;
use crate::role::RoleKind;
use crate::state::State;

/// The global roles a token's scopes grant (reference §8.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    /// `cloud_controller.admin`
    pub admin: bool,
    /// `cloud_controller.admin_read_only`
    pub admin_read_only: bool,
    /// `cloud_controller.global_auditor`
    pub global_auditor: bool,
    /// `cloud_controller.read`
    pub read: bool,
    /// `cloud_controller.write`
    pub write: bool,
}

impl Scopes {
    /// Sees everything (admin, admin_read_only, global_auditor).
    pub fn sees_all(self) -> bool {
        self.admin || self.admin_read_only || self.global_auditor
    }

    /// Holds any `cloud_controller.*` role.
    pub fn any(self) -> bool {
        self.sees_all() || self.read || self.write
    }

    /// CC's `read_with_token?`: admin, admin_read_only, global_auditor or the read scope.
    fn may_read(self) -> bool {
        self.sees_all() || self.read
    }

    /// CC's write token rule: admin or the write scope.
    fn may_write(self) -> bool {
        self.admin || self.write
    }
}

/// The caller: a user (or client) id and its scopes.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// `user_id`, else `client_id`.
    pub user: &'a str,
    /// Global roles.
    pub scopes: Scopes,
}

/// A caller as a command carries it: the owned form of [`Subject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `user_id`, else `client_id`.
    pub user: String,
    /// Global roles.
    pub scopes: Scopes,
}

impl Principal {
    /// The borrowed form the rules take.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            user: &self.user,
            scopes: self.scopes,
        }
    }
}

/// Whether `who` may run `command` against `state`: the same rules the HTTP edge checks
/// against its view, checked again by `decide` against the table the command is decided on,
/// so a role revoked after a request arrived still stops its write. Staging completion is
/// tally's own (the runtime proves itself with the callback password), never a caller's.
pub fn authorize(who: Subject<'_>, state: &State, command: &Command) -> Result<(), Denial> {
    let app_space = |guid: Guid| state.app(guid).map(|a| a.space_guid);
    // The edge already answered a hidden object 404; one hidden since then is refused too.
    let v3 = |space: Option<Guid>| match app_write_v3(who, state, space) {
        Err(Denial::NotFound) if space.is_some() => Err(Denial::NotAuthorized),
        other => other,
    };
    match command {
        Command::CreateOrg { .. } => org_create(who),
        Command::RenameOrg { guid, .. } => org_write(who, state, Some(*guid), false),
        Command::DeleteOrg { guid, .. } => org_write(who, state, Some(*guid), true),
        Command::CreateSpace { org_guid, .. } => space_create(who, state, Some(*org_guid)),
        Command::RenameSpace { guid, .. } => space_manage(who, state, Some(*guid), false),
        Command::DeleteSpace { guid, .. } => space_manage(who, state, Some(*guid), true),
        Command::CreateApp { attributes, .. } => space_write(
            who,
            state,
            attributes.space_guid.filter(|s| state.space(*s).is_some()),
        ),
        Command::UpdateApp {
            guid, attributes, ..
        } => {
            space_write(who, state, app_space(*guid))?;
            match attributes.space_guid {
                // Moving an app needs the same right in the space it moves to.
                Some(to) if Some(to) != app_space(*guid) => {
                    space_write(who, state, state.space(to).map(|s| s.guid))
                }
                _ => Ok(()),
            }
        }
        Command::DeleteApp { guid, .. } | Command::RestageApp { guid } => {
            space_write(who, state, app_space(*guid))
        }
        Command::UploadPackage { app_guid, .. } => space_write(who, state, app_space(*app_guid)),
        Command::GrantRole(m) | Command::RevokeRole { membership: m, .. } => {
            manage_role(who, state, m.role, Some(m.resource))
        }
        Command::CreateAppV3 { space_guid, .. } => {
            v3(Some(*space_guid).filter(|s| state.space(*s).is_some()))
        }
        Command::UpdateAppV3 { guid, .. }
        | Command::SetEnvironment { guid, .. }
        | Command::AppAction { guid, .. }
        | Command::DeleteAppV3 { guid }
        | Command::CreatePackage { app_guid: guid, .. }
        | Command::SetCurrentDroplet { app_guid: guid, .. } => v3(app_space(*guid)),
        Command::ScaleProcess { guid, .. } | Command::UpdateProcess { guid, .. } => {
            v3(state.process(*guid).map(|p| p.app().space_guid))
        }
        Command::CreateTask { app_guid, .. } => v3(app_space(*app_guid)),
        Command::CancelTask { guid } => v3(state.task(*guid).and_then(|t| app_space(t.app_guid))),
        Command::CompleteTask { .. } => Err(Denial::NotAuthorized),
        Command::UploadPackageBits { guid, .. }
        | Command::CreateBuild {
            package_guid: guid, ..
        } => v3(state.app_of_package(*guid).map(|a| a.space_guid)),
        Command::CompleteBuild { .. } => Err(Denial::NotAuthorized),
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The token lacks the scope (CC `InsufficientScope`, 10007).
    InsufficientScope,
    /// The caller may not touch this object (CC `NotAuthorized`, 10003).
    NotAuthorized,
    /// The object does not exist, or (v3) the caller may not see it.
    NotFound,
}

/// Which API generation asks: the rules differ (reference §8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v2`
    V2,
    /// `/v3`
    V3,
}

/// What a list shows the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    /// Everything.
    All,
    /// Nothing (v3 answers 200 with an empty list).
    Nothing,
    /// Only what belongs to these spaces or orgs.
    Within(BTreeSet<Guid>),
}

impl Visible {
    /// Whether an object in `space` of `org` is shown.
    pub fn shows(&self, space: Option<Guid>, org: Option<Guid>) -> bool {
        match self {
            Self::All => true,
            Self::Nothing => false,
            Self::Within(set) => {
                space.is_some_and(|s| set.contains(&s)) || org.is_some_and(|o| set.contains(&o))
            }
        }
    }
}

/// Reference §8.2, list: v2 only admin and admin_read_only; v3 everyone with a
/// `cloud_controller.*` scope, but only global roles see events.
pub fn usage_list(who: Subject<'_>, api: Api) -> Result<Visible, Denial> {
    let s = who.scopes;
    match api {
        Api::V2 if s.admin || s.admin_read_only => Ok(Visible::All),
        Api::V2 => Err(Denial::InsufficientScope),
        Api::V3 if s.sees_all() => Ok(Visible::All),
        Api::V3 if s.any() => Ok(Visible::Nothing),
        Api::V3 => Err(Denial::NotAuthorized),
    }
}

/// Reference §8.2, get one event: v2 admin, admin_read_only and global_auditor (others with the
/// read scope get 404 for an unknown guid, else 403 `NotAuthorized`); v3 global roles, and 404
/// for every other `cloud_controller.*` caller.
pub fn usage_read(who: Subject<'_>, api: Api, exists: bool) -> Result<(), Denial> {
    let s = who.scopes;
    match api {
        Api::V2 => {
            if !s.may_read() {
                return Err(Denial::InsufficientScope);
            }
            if !exists {
                return Err(Denial::NotFound);
            }
            if s.sees_all() {
                Ok(())
            } else {
                Err(Denial::NotAuthorized)
            }
        }
        Api::V3 => {
            if !s.any() {
                return Err(Denial::NotAuthorized);
            }
            if exists && s.sees_all() {
                Ok(())
            } else {
                Err(Denial::NotFound)
            }
        }
    }
}

/// Reference §8.2, purge: admin only; v2 refuses others with `InsufficientScope`, v3 with
/// `NotAuthorized`.
pub fn usage_purge(who: Subject<'_>, api: Api) -> Result<(), Denial> {
    match (who.scopes.admin, api) {
        (true, _) => Ok(()),
        (false, Api::V2) => Err(Denial::InsufficientScope),
        (false, Api::V3) => Err(Denial::NotAuthorized),
    }
}

/// Exporting a backup of the whole log: global admins only (it holds every org's data).
pub fn export_backup(who: Subject<'_>) -> Result<(), Denial> {
    if who.scopes.admin {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// The spaces whose apps a user sees (§8.3 "visible"): spaces where the user is developer,
/// manager or auditor, and every space of an org the user manages.
pub fn visible_spaces(state: &State, user: &str) -> BTreeSet<Guid> {
    let mut spaces = BTreeSet::new();
    for (resource, role) in state.roles_of(user) {
        match role {
            RoleKind::SpaceDeveloper | RoleKind::SpaceManager | RoleKind::SpaceAuditor => {
                spaces.insert(resource);
            }
            RoleKind::OrgManager => spaces.extend(state.spaces_in(resource).map(|s| s.guid)),
            _ => {}
        }
    }
    spaces
}

fn sees_space(state: &State, user: &str, space: Guid) -> bool {
    state.has_any_role(
        user,
        space,
        &[
            RoleKind::SpaceDeveloper,
            RoleKind::SpaceManager,
            RoleKind::SpaceAuditor,
        ],
    ) || state
        .space(space)
        .is_some_and(|s| state.has_role(user, s.org_guid, RoleKind::OrgManager))
}

/// §8.3 list apps (and other space-scoped v2 lists): the token rule, then what is visible.
pub fn space_list(who: Subject<'_>, state: &State) -> Result<Visible, Denial> {
    if !who.scopes.may_read() {
        return Err(Denial::InsufficientScope);
    }
    if who.scopes.sees_all() {
        return Ok(Visible::All);
    }
    Ok(Visible::Within(visible_spaces(state, who.user)))
}

/// §8.3 read an app (or anything else that lives in a space), given the space it lives in, or
/// `None` when the object does not exist.
pub fn space_read(who: Subject<'_>, state: &State, space: Option<Guid>) -> Result<(), Denial> {
    if !who.scopes.may_read() {
        return Err(Denial::InsufficientScope);
    }
    let space = space.ok_or(Denial::NotFound)?;
    if who.scopes.sees_all() || sees_space(state, who.user, space) {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// §8.3 create, update, delete or restage an app in `space` (`None`: no such app or space):
/// admin, or a space developer with the write scope.
pub fn space_write(who: Subject<'_>, state: &State, space: Option<Guid>) -> Result<(), Denial> {
    if !who.scopes.may_write() {
        return Err(Denial::InsufficientScope);
    }
    let space = space.ok_or(Denial::NotFound)?;
    if who.scopes.admin || state.has_role(who.user, space, RoleKind::SpaceDeveloper) {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// v3's first check of every write (`check_write_permissions!`): the write scope or admin,
/// else `NotAuthorized`, before the body or the object is looked at.
pub fn v3_write_scope(who: Subject<'_>) -> Result<(), Denial> {
    if who.scopes.may_write() {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// v3 lists of apps and processes: the read token rule (v3 answers `NotAuthorized`), then
/// what is visible: everything for global readers, else the spaces the caller has a role in.
pub fn app_list_v3(who: Subject<'_>, state: &State) -> Result<Visible, Denial> {
    if !who.scopes.may_read() {
        return Err(Denial::NotAuthorized);
    }
    if who.scopes.sees_all() {
        return Ok(Visible::All);
    }
    Ok(Visible::Within(visible_spaces(state, who.user)))
}

/// v3 read of an app or process in `space` (`None`: no such object): the read token rule,
/// then the object must be visible, else `NotFound` (v3 hides what a caller may not see).
pub fn app_read_v3(who: Subject<'_>, state: &State, space: Option<Guid>) -> Result<(), Denial> {
    if !who.scopes.may_read() {
        return Err(Denial::NotAuthorized);
    }
    let space = space.ok_or(Denial::NotFound)?;
    if who.scopes.sees_all() || sees_space(state, who.user, space) {
        Ok(())
    } else {
        Err(Denial::NotFound)
    }
}

/// v3 write to an app or process in `space` (CC's `can_write_to_active_space?`): the write
/// token rule (`NotAuthorized`), then visible (else `NotFound`), then admin or a developer of
/// the space (else `NotAuthorized`).
pub fn app_write_v3(who: Subject<'_>, state: &State, space: Option<Guid>) -> Result<(), Denial> {
    if !who.scopes.may_write() {
        return Err(Denial::NotAuthorized);
    }
    let space = space.ok_or(Denial::NotFound)?;
    if !(who.scopes.sees_all() || sees_space(state, who.user, space)) {
        return Err(Denial::NotFound);
    }
    if who.scopes.admin || state.has_role(who.user, space, RoleKind::SpaceDeveloper) {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// v3 read of a space (`None`: no such space): the read token rule, then a role in the space
/// or a manager of its org, else `NotFound`.
pub fn space_read_v3(who: Subject<'_>, state: &State, space: Option<Guid>) -> Result<(), Denial> {
    app_read_v3(who, state, space.filter(|s| state.space(*s).is_some()))
}

/// v3 read of an org (`None`: no such org): the read token rule, then any role in the org or
/// in one of its spaces, else `NotFound`.
pub fn org_read_v3(who: Subject<'_>, state: &State, org: Option<Guid>) -> Result<(), Denial> {
    if !who.scopes.may_read() {
        return Err(Denial::NotAuthorized);
    }
    let org = org
        .filter(|o| state.org(*o).is_some())
        .ok_or(Denial::NotFound)?;
    let member = || {
        state.roles_of(who.user).any(|(resource, _)| {
            resource == org || state.space(resource).is_some_and(|s| s.org_guid == org)
        })
    };
    if who.scopes.sees_all() || member() {
        Ok(())
    } else {
        Err(Denial::NotFound)
    }
}

/// Read an org and its member lists: global roles and anyone with a role in the org.
pub fn org_read(who: Subject<'_>, state: &State, org: Option<Guid>) -> Result<(), Denial> {
    if !who.scopes.may_read() {
        return Err(Denial::InsufficientScope);
    }
    let org = org
        .filter(|o| state.org(*o).is_some())
        .ok_or(Denial::NotFound)?;
    if who.scopes.sees_all() || state.roles_of(who.user).any(|(r, _)| r == org) {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// Orgs a caller sees in lists: global roles all, others those where they hold any role.
pub fn org_list(who: Subject<'_>, state: &State) -> Result<Visible, Denial> {
    if !who.scopes.may_read() {
        return Err(Denial::InsufficientScope);
    }
    if who.scopes.sees_all() {
        return Ok(Visible::All);
    }
    Ok(Visible::Within(
        state
            .roles_of(who.user)
            .filter(|(_, role)| role.is_org_role())
            .map(|(org, _)| org)
            .collect(),
    ))
}

/// Create an org: admin only (CC's `user_org_creation` feature flag is off by default).
pub fn org_create(who: Subject<'_>) -> Result<(), Denial> {
    if !who.scopes.may_write() {
        return Err(Denial::InsufficientScope);
    }
    if who.scopes.admin {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// Rename an org (`update`): admin or a manager of the org; delete it (`delete`): admin only.
pub fn org_write(
    who: Subject<'_>,
    state: &State,
    org: Option<Guid>,
    delete: bool,
) -> Result<(), Denial> {
    if !who.scopes.may_write() {
        return Err(Denial::InsufficientScope);
    }
    let org = org
        .filter(|o| state.org(*o).is_some())
        .ok_or(Denial::NotFound)?;
    let allowed =
        who.scopes.admin || (!delete && state.has_role(who.user, org, RoleKind::OrgManager));
    if allowed {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// Create a space in `org` (`None`: no such org): admin or a manager of the org. An unknown org
/// is the caller's mistake in the body, so it is `NotFound` only after the token rule.
pub fn space_create(who: Subject<'_>, state: &State, org: Option<Guid>) -> Result<(), Denial> {
    if !who.scopes.may_write() {
        return Err(Denial::InsufficientScope);
    }
    let org = org
        .filter(|o| state.org(*o).is_some())
        .ok_or(Denial::NotFound)?;
    if who.scopes.admin || state.has_role(who.user, org, RoleKind::OrgManager) {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// Rename a space (`update`): admin, a manager of its org, or a manager of the space; delete
/// it (`delete`): admin or a manager of its org.
pub fn space_manage(
    who: Subject<'_>,
    state: &State,
    space: Option<Guid>,
    delete: bool,
) -> Result<(), Denial> {
    if !who.scopes.may_write() {
        return Err(Denial::InsufficientScope);
    }
    let space = space.and_then(|s| state.space(s)).ok_or(Denial::NotFound)?;
    let allowed = who.scopes.admin
        || state.has_role(who.user, space.org_guid, RoleKind::OrgManager)
        || (!delete && state.has_role(who.user, space.guid, RoleKind::SpaceManager));
    if allowed {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// Whether the caller may see an app's `environment_json` (reference §5.1): admin,
/// admin_read_only, or a developer of the app's space.
pub fn sees_environment(who: Subject<'_>, state: &State, space: Guid) -> bool {
    who.scopes.admin
        || who.scopes.admin_read_only
        || state.has_role(who.user, space, RoleKind::SpaceDeveloper)
}

/// Give or take a `role` in the org or space `resource` (`None`: no such org or space): the
/// write token rule, then admin, a manager of the org, or (for space roles) a manager of the
/// space.
pub fn manage_role(
    who: Subject<'_>,
    state: &State,
    role: RoleKind,
    resource: Option<Guid>,
) -> Result<(), Denial> {
    if !who.scopes.may_write() {
        return Err(Denial::InsufficientScope);
    }
    let resource = resource.ok_or(Denial::NotFound)?;
    let org = if role.is_org_role() {
        state.org(resource).map(|o| o.guid)
    } else {
        state.space(resource).map(|s| s.org_guid)
    }
    .ok_or(Denial::NotFound)?;
    let allowed = who.scopes.admin
        || state.has_role(who.user, org, RoleKind::OrgManager)
        || (!role.is_org_role() && state.has_role(who.user, resource, RoleKind::SpaceManager));
    if allowed {
        Ok(())
    } else {
        Err(Denial::NotAuthorized)
    }
}

/// Audit events a caller sees (§6.3, §6.4): global roles everything; others the events of
/// spaces where they are developer or auditor and of orgs where they are auditor. v2 listing
/// needs the read scope.
pub fn audit_list(who: Subject<'_>, state: &State, api: Api) -> Result<Visible, Denial> {
    let s = who.scopes;
    if api == Api::V2 && !s.may_read() {
        return Err(Denial::InsufficientScope);
    }
    if api == Api::V3 && !s.any() {
        return Err(Denial::NotAuthorized);
    }
    if s.sees_all() {
        return Ok(Visible::All);
    }
    let within = state
        .roles_of(who.user)
        .filter(|(_, role)| {
            matches!(
                role,
                RoleKind::SpaceDeveloper | RoleKind::SpaceAuditor | RoleKind::OrgAuditor
            )
        })
        .map(|(resource, _)| resource)
        .collect();
    Ok(Visible::Within(within))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Actor;
    use crate::command::Command;
    use crate::decide::{decide, DomainConfig, Inputs};
    use crate::ids::SequentialIds;
    use crate::role::Membership;

    const ORG: Guid = Guid::from_u128(0x0A);
    const SPACE: Guid = Guid::from_u128(0x0B);
    const OTHER_SPACE: Guid = Guid::from_u128(0x0C);

    fn scopes(names: &str) -> Scopes {
        let mut s = Scopes::default();
        for name in names.split_whitespace() {
            match name {
                "admin" => s.admin = true,
                "admin_ro" => s.admin_read_only = true,
                "auditor" => s.global_auditor = true,
                "read" => s.read = true,
                "write" => s.write = true,
                other => panic!("unknown scope {other}"),
            }
        }
        s
    }

    fn who<'a>(user: &'a str, names: &str) -> Subject<'a> {
        Subject {
            user,
            scopes: scopes(names),
        }
    }

    /// An org with two spaces; `dev` develops SPACE, `sm` manages it, `sa` audits it, `om`
    /// manages the org, `oa` audits the org, `ou` is only an org user.
    fn world() -> State {
        let mut state = State::default();
        let mut ids = SequentialIds::starting_at(100);
        let actor = Actor::system();
        let config = DomainConfig::default();
        let grant = |role, resource, user: &str| {
            Command::GrantRole(Membership {
                resource,
                role,
                user: user.to_owned(),
            })
        };
        let mut commands = vec![
            Command::CreateOrg {
                guid: ORG,
                name: "o".to_owned(),
            },
            Command::CreateSpace {
                guid: SPACE,
                org_guid: ORG,
                name: "s".to_owned(),
            },
            Command::CreateSpace {
                guid: OTHER_SPACE,
                org_guid: ORG,
                name: "t".to_owned(),
            },
        ];
        for user in ["dev", "sm", "sa", "om", "oa", "ou"] {
            commands.push(grant(RoleKind::OrgUser, ORG, user));
        }
        commands.push(grant(RoleKind::SpaceDeveloper, SPACE, "dev"));
        commands.push(grant(RoleKind::SpaceManager, SPACE, "sm"));
        commands.push(grant(RoleKind::SpaceAuditor, SPACE, "sa"));
        commands.push(grant(RoleKind::OrgManager, ORG, "om"));
        commands.push(grant(RoleKind::OrgAuditor, ORG, "oa"));
        for command in commands {
            let mut inputs = Inputs {
                now: chrono::DateTime::UNIX_EPOCH,
                ids: &mut ids,
                actor: &actor,
                config: &config,
                principal: None,
                epoch_started_at: None,
            };
            match decide(&state, &command, &mut inputs) {
                Ok(events) => state.evolve_all(&events),
                Err(e) => panic!("{command:?}: {e}"),
            }
        }
        state
    }

    use Denial::{InsufficientScope as Scope, NotAuthorized as NotAuth, NotFound};

    type Cell = Result<(), Denial>;
    /// caller, v2 list, v2 get, v2 get unknown, v2 purge, v3 list, v3 get, v3 purge
    type UsageRow = (
        &'static str,
        Cell,
        Cell,
        Cell,
        Cell,
        Result<Visible, Denial>,
        Cell,
        Cell,
    );
    /// user, scopes, list shows SPACE, read, write
    type AppRow = (&'static str, &'static str, Result<bool, Denial>, Cell, Cell);

    /// Reference §8.2, every cell, including the surprising ones: a v2 global auditor may get
    /// one event but not list them; v3 users without a global role list nothing and get 404.
    #[test]
    fn usage_event_matrix_is_reference_8_2() {
        let ok: Cell = Ok(());
        // caller, v2 list, v2 get, v2 get unknown, v2 purge, v3 list, v3 get, v3 purge
        let rows: [UsageRow; 6] = [
            ("admin", ok, ok, Err(NotFound), ok, Ok(Visible::All), ok, ok),
            (
                "admin_ro",
                ok,
                ok,
                Err(NotFound),
                Err(Scope),
                Ok(Visible::All),
                ok,
                Err(NotAuth),
            ),
            (
                "auditor",
                Err(Scope),
                ok,
                Err(NotFound),
                Err(Scope),
                Ok(Visible::All),
                ok,
                Err(NotAuth),
            ),
            (
                "read write",
                Err(Scope),
                Err(NotAuth),
                Err(NotFound),
                Err(Scope),
                Ok(Visible::Nothing),
                Err(NotFound),
                Err(NotAuth),
            ),
            (
                "read",
                Err(Scope),
                Err(NotAuth),
                Err(NotFound),
                Err(Scope),
                Ok(Visible::Nothing),
                Err(NotFound),
                Err(NotAuth),
            ),
            (
                "",
                Err(Scope),
                Err(Scope),
                Err(Scope),
                Err(Scope),
                Err(NotAuth),
                Err(NotAuth),
                Err(NotAuth),
            ),
        ];
        for (names, v2_list, v2_get, v2_unknown, v2_purge, v3_list, v3_get, v3_purge) in rows {
            let w = who("dev", names);
            let v2 = usage_list(w, Api::V2).map(|_| ());
            assert_eq!(v2, v2_list, "{names:?} v2 list");
            assert_eq!(usage_read(w, Api::V2, true), v2_get, "{names:?} v2 get");
            assert_eq!(
                usage_read(w, Api::V2, false),
                v2_unknown,
                "{names:?} v2 get unknown"
            );
            assert_eq!(usage_purge(w, Api::V2), v2_purge, "{names:?} v2 purge");
            assert_eq!(usage_list(w, Api::V3), v3_list, "{names:?} v3 list");
            assert_eq!(usage_read(w, Api::V3, true), v3_get, "{names:?} v3 get");
            assert_eq!(usage_purge(w, Api::V3), v3_purge, "{names:?} v3 purge");
        }
    }

    /// Reference §8.3 for apps in SPACE, for every kind of caller.
    #[test]
    fn app_matrix_is_reference_8_3() {
        let state = world();
        // user, scopes, list, read, write
        let rows: &[AppRow] = &[
            ("x", "admin", Ok(true), Ok(()), Ok(())),
            ("x", "admin_ro", Ok(true), Ok(()), Err(Scope)),
            ("x", "auditor", Ok(true), Ok(()), Err(Scope)),
            ("dev", "read write", Ok(true), Ok(()), Ok(())),
            ("dev", "read", Ok(true), Ok(()), Err(Scope)),
            ("sm", "read write", Ok(true), Ok(()), Err(NotAuth)),
            ("sa", "read write", Ok(true), Ok(()), Err(NotAuth)),
            ("om", "read write", Ok(true), Ok(()), Err(NotAuth)),
            ("oa", "read write", Ok(false), Err(NotAuth), Err(NotAuth)),
            ("ou", "read write", Ok(false), Err(NotAuth), Err(NotAuth)),
            ("x", "read write", Ok(false), Err(NotAuth), Err(NotAuth)),
            ("dev", "", Err(Scope), Err(Scope), Err(Scope)),
        ];
        for (user, names, list, read, write) in rows {
            let w = who(user, names);
            let shown = space_list(w, &state).map(|v| v.shows(Some(SPACE), Some(ORG)));
            assert_eq!(&shown, list, "{user} {names:?} list");
            assert_eq!(
                &space_read(w, &state, Some(SPACE)),
                read,
                "{user} {names:?} read"
            );
            assert_eq!(
                &space_write(w, &state, Some(SPACE)),
                write,
                "{user} {names:?} write"
            );
        }
        // The space developer of SPACE sees nothing of OTHER_SPACE; the org manager sees both.
        let dev = space_list(who("dev", "read"), &state).map(|v| v.shows(Some(OTHER_SPACE), None));
        assert_eq!(dev, Ok(false));
        let om = space_list(who("om", "read"), &state).map(|v| v.shows(Some(OTHER_SPACE), None));
        assert_eq!(om, Ok(true));
        // An unknown object: 404 after the token rule, before the object rule.
        assert_eq!(space_read(who("x", "read"), &state, None), Err(NotFound));
        assert_eq!(space_write(who("x", "read"), &state, None), Err(Scope));
        assert_eq!(space_write(who("x", "write"), &state, None), Err(NotFound));
    }

    #[test]
    fn managers_manage_roles_within_their_reach() {
        let state = world();
        let rw = "read write";
        let cell = |user: &str, scopes: &str, role, resource| {
            manage_role(who(user, scopes), &state, role, resource)
        };
        let org_manager = (RoleKind::OrgManager, Some(ORG));
        let dev_here = (RoleKind::SpaceDeveloper, Some(SPACE));
        let dev_there = (RoleKind::SpaceDeveloper, Some(OTHER_SPACE));
        let rows = [
            ("x", "admin", org_manager, Ok(())),
            ("om", rw, org_manager, Ok(())),
            ("om", rw, dev_there, Ok(())),
            ("sm", rw, dev_here, Ok(())),
            ("sm", rw, dev_there, Err(NotAuth)),
            ("sm", rw, org_manager, Err(NotAuth)),
            ("dev", rw, dev_here, Err(NotAuth)),
            ("om", "read", org_manager, Err(Scope)),
            ("x", "admin_ro auditor", org_manager, Err(Scope)),
            (
                "x",
                "admin",
                (RoleKind::SpaceDeveloper, Some(ORG)),
                Err(NotFound),
            ),
            ("x", "admin", (RoleKind::OrgUser, None), Err(NotFound)),
            ("x", "read", (RoleKind::OrgUser, None), Err(Scope)),
        ];
        for (user, scopes, (role, resource), expected) in rows {
            assert_eq!(
                cell(user, scopes, role, resource),
                expected,
                "{user} {scopes:?} {role:?} {resource:?}"
            );
        }
    }

    #[test]
    fn org_members_and_audit_visibility() {
        let state = world();
        assert_eq!(org_read(who("ou", "read"), &state, Some(ORG)), Ok(()));
        assert_eq!(org_read(who("x", "read"), &state, Some(ORG)), Err(NotAuth));
        assert_eq!(org_read(who("x", "auditor"), &state, Some(ORG)), Ok(()));
        assert_eq!(
            org_read(who("x", "admin"), &state, Some(Guid::from_u128(9))),
            Err(NotFound)
        );
        // §6.3/§6.4: space developers and auditors see their space's events, org auditors the
        // org's; managers see nothing.
        let shows = |user: &str, space, org| {
            audit_list(who(user, "read"), &state, Api::V3).map(|v| v.shows(space, org))
        };
        assert_eq!(shows("dev", Some(SPACE), Some(ORG)), Ok(true));
        assert_eq!(shows("sa", Some(SPACE), Some(ORG)), Ok(true));
        assert_eq!(shows("dev", Some(OTHER_SPACE), Some(ORG)), Ok(false));
        assert_eq!(shows("oa", Some(OTHER_SPACE), Some(ORG)), Ok(true));
        assert_eq!(shows("sm", Some(SPACE), Some(ORG)), Ok(false));
        assert_eq!(shows("om", Some(SPACE), Some(ORG)), Ok(false));
        assert_eq!(audit_list(who("dev", ""), &state, Api::V2), Err(Scope));
        assert_eq!(audit_list(who("dev", ""), &state, Api::V3), Err(NotAuth));
    }

    #[test]
    fn org_and_space_management() {
        let state = world();
        let rw = "read write";
        assert_eq!(org_create(who("x", "admin")), Ok(()));
        assert_eq!(org_create(who("om", rw)), Err(NotAuth));
        assert_eq!(org_create(who("om", "read")), Err(Scope));
        assert_eq!(org_write(who("om", rw), &state, Some(ORG), false), Ok(()));
        assert_eq!(
            org_write(who("om", rw), &state, Some(ORG), true),
            Err(NotAuth)
        );
        assert_eq!(
            org_write(who("x", "admin"), &state, Some(ORG), true),
            Ok(())
        );
        assert_eq!(
            org_write(who("x", "admin"), &state, None, true),
            Err(NotFound)
        );
        assert_eq!(space_create(who("om", rw), &state, Some(ORG)), Ok(()));
        assert_eq!(space_create(who("sm", rw), &state, Some(ORG)), Err(NotAuth));
        assert_eq!(
            space_create(who("sm", rw), &state, Some(SPACE)),
            Err(NotFound)
        );
        assert_eq!(
            space_manage(who("sm", rw), &state, Some(SPACE), false),
            Ok(())
        );
        assert_eq!(
            space_manage(who("sm", rw), &state, Some(SPACE), true),
            Err(NotAuth)
        );
        assert_eq!(
            space_manage(who("om", rw), &state, Some(SPACE), true),
            Ok(())
        );
        assert_eq!(
            space_manage(who("dev", rw), &state, Some(SPACE), false),
            Err(NotAuth)
        );
        let orgs = org_list(who("ou", "read"), &state).map(|v| v.shows(None, Some(ORG)));
        assert_eq!(orgs, Ok(true));
        let orgs = org_list(who("x", "read"), &state).map(|v| v.shows(None, Some(ORG)));
        assert_eq!(orgs, Ok(false));
        assert!(sees_environment(who("dev", "read"), &state, SPACE));
        assert!(sees_environment(who("x", "admin_ro"), &state, SPACE));
        assert!(!sees_environment(who("x", "auditor"), &state, SPACE));
        assert!(!sees_environment(who("sm", rw), &state, SPACE));
    }
}
