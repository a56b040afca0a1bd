//! The app table: every org, space and app as of some log position, and `evolve`, which folds
//! one event into it. Backed by persistent maps so a snapshot is an O(1) clone that readers can
//! hold while the writer moves on.

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};

use crate::event::Event;
use crate::ids::Guid;
use crate::model::{App, Org, Process, ProcessRef, Space, Task, WEB_PROCESS_TYPE};
use crate::role::{Membership, RoleKind};
use crate::Timestamp;

/// The app table. Rows are behind `Arc`s: a persistent map copies a whole leaf of entries when a
/// shared leaf changes, and copying 64 `Arc`s is far cheaper than copying 64 apps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    orgs: OrdMap<Guid, Arc<Org>>,
    spaces: OrdMap<Guid, Arc<Space>>,
    apps: OrdMap<Guid, Arc<App>>,
    /// Names are keyed by [`name_key`]: compared without case, as CC's `citext` columns do.
    org_names: OrdSet<(String, Guid)>,
    space_names: OrdSet<(Guid, String, Guid)>,
    app_names: OrdSet<(Guid, String, Guid)>,
    /// Every app by name across spaces (the v2 list's `name` filter).
    apps_by_name: OrdSet<(String, Guid)>,
    /// Every app in list order: by creation time, then guid.
    apps_by_created: OrdSet<(Timestamp, Guid)>,
    /// Every app by space, in list order (the v3 list's `space_guids` page).
    apps_by_space_created: OrdSet<(Guid, Timestamp, Guid)>,
    /// How many apps each space holds.
    apps_per_space: OrdMap<Guid, usize>,
    builds: OrdMap<Guid, Guid>,
    /// Every app's latest droplet: droplet guid to app guid (`GET /v3/droplets/:guid`).
    droplets: OrdMap<Guid, Guid>,
    /// Every app's latest package: package guid to app guid (`GET /v3/packages/:guid`).
    packages: OrdMap<Guid, Guid>,
    tasks: OrdMap<Guid, Arc<Task>>,
    /// Tasks by app, in creation order.
    tasks_of_app: OrdSet<(Guid, Timestamp, Guid)>,
    /// Every task in list order: by creation time, then guid.
    tasks_by_created: OrdSet<(Timestamp, Guid)>,
    /// Processes other than `web`.
    processes: OrdMap<Guid, Arc<Process>>,
    /// Those processes by app and type.
    processes_of_app: OrdMap<(Guid, String), Guid>,
    members: OrdSet<(Guid, RoleKind, String)>,
    roles_of_user: OrdSet<(String, Guid, RoleKind)>,
}

/// How names compare: CC stores org, space and app names in case-insensitive columns
/// (`citext` on PostgreSQL), so "Web" and "web" are one name, kept as it was written.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

const FIRST: Guid = Guid::from_u128(0);
const LAST: Guid = Guid::from_u128(u128::MAX);

impl State {
    /// An org by guid.
    pub fn org(&self, guid: Guid) -> Option<&Org> {
        self.orgs.get(&guid).map(|org| &**org)
    }

    /// A space by guid.
    pub fn space(&self, guid: Guid) -> Option<&Space> {
        self.spaces.get(&guid).map(|space| &**space)
    }

    /// An app by guid.
    pub fn app(&self, guid: Guid) -> Option<&App> {
        self.apps.get(&guid).map(|app| &**app)
    }

    /// The app whose latest build is `build_guid`.
    pub fn app_of_build(&self, build_guid: Guid) -> Option<&App> {
        self.builds.get(&build_guid).and_then(|app| self.app(*app))
    }

    /// The app whose latest droplet is `droplet_guid`.
    pub fn app_of_droplet(&self, droplet_guid: Guid) -> Option<&App> {
        self.droplets
            .get(&droplet_guid)
            .and_then(|app| self.app(*app))
    }

    /// A task by guid.
    pub fn task(&self, guid: Guid) -> Option<&Task> {
        self.tasks.get(&guid).map(|task| &**task)
    }

    /// An app's tasks, in creation order.
    pub fn tasks_of(&self, app_guid: Guid) -> impl Iterator<Item = &Task> {
        let from = (app_guid, Timestamp::MIN_UTC, FIRST);
        self.tasks_of_app
            .range(from..)
            .take_while(move |(app, _, _)| *app == app_guid)
            .filter_map(|(_, _, guid)| self.task(*guid))
    }

    /// Every task in list order (creation time, then guid).
    pub fn tasks_by_creation(&self) -> impl DoubleEndedIterator<Item = &Task> {
        self.tasks_by_created
            .iter()
            .filter_map(|(_, guid)| self.task(*guid))
    }

    /// Tasks whose guids fall in `range`, by guid (the persisted table's buckets).
    pub fn tasks_in_range(
        &self,
        range: impl std::ops::RangeBounds<Guid>,
    ) -> impl Iterator<Item = &Task> {
        self.tasks.range(range).map(|(_, task)| &**task)
    }

    /// All tasks, by guid.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values().map(|task| &**task)
    }

    /// A process other than `web`, by guid.
    pub fn other_process(&self, guid: Guid) -> Option<&Process> {
        self.processes.get(&guid).map(|p| &**p)
    }

    /// The process `guid` names: an app's `web` process (the app's guid) or another one.
    pub fn process(&self, guid: Guid) -> Option<ProcessRef<'_>> {
        if let Some(app) = self.app(guid) {
            return Some(ProcessRef::Web(app));
        }
        let process = self.other_process(guid)?;
        let app = self.app(process.app_guid)?;
        Some(ProcessRef::Other(app, process))
    }

    /// An app's processes other than `web`, by type.
    pub fn other_processes_of(&self, app_guid: Guid) -> impl Iterator<Item = &Process> {
        let from = (app_guid, String::new());
        self.processes_of_app
            .range(from..)
            .take_while(move |((app, _), _)| *app == app_guid)
            .filter_map(|(_, guid)| self.other_process(*guid))
    }

    /// An app's processes: `web` first, then the others in creation order (CC's order).
    pub fn processes_of(&self, app_guid: Guid) -> Vec<ProcessRef<'_>> {
        let Some(app) = self.app(app_guid) else {
            return Vec::new();
        };
        let mut others: Vec<&Process> = self.other_processes_of(app_guid).collect();
        others.sort_by_key(|p| (p.created_at, p.guid));
        std::iter::once(ProcessRef::Web(app))
            .chain(others.into_iter().map(|p| ProcessRef::Other(app, p)))
            .collect()
    }

    /// An app's process of a type.
    pub fn process_of_type(&self, app_guid: Guid, kind: &str) -> Option<ProcessRef<'_>> {
        let app = self.app(app_guid)?;
        if kind == WEB_PROCESS_TYPE {
            return Some(ProcessRef::Web(app));
        }
        let guid = self.processes_of_app.get(&(app_guid, kind.to_owned()))?;
        self.other_process(*guid).map(|p| ProcessRef::Other(app, p))
    }

    /// Processes other than `web` whose guids fall in `range`, by guid (the persisted table's
    /// buckets).
    pub fn other_processes_in_range(
        &self,
        range: impl std::ops::RangeBounds<Guid>,
    ) -> impl Iterator<Item = &Process> {
        self.processes.range(range).map(|(_, p)| &**p)
    }

    /// All processes other than `web`, by guid.
    pub fn other_processes(&self) -> impl Iterator<Item = &Process> {
        self.processes.values().map(|p| &**p)
    }

    /// The app whose latest package is `package_guid`.
    pub fn app_of_package(&self, package_guid: Guid) -> Option<&App> {
        self.packages
            .get(&package_guid)
            .and_then(|app| self.app(*app))
    }

    /// An org by name.
    pub fn org_named(&self, name: &str) -> Option<&Org> {
        let key = name_key(name);
        self.org_names
            .range((key.clone(), FIRST)..)
            .next()
            .filter(|(k, _)| *k == key)
            .and_then(|(_, guid)| self.org(*guid))
    }

    /// A space by org and name.
    pub fn space_named(&self, org_guid: Guid, name: &str) -> Option<&Space> {
        let key = name_key(name);
        self.space_names
            .range((org_guid, key.clone(), FIRST)..)
            .next()
            .filter(|(org, k, _)| *org == org_guid && *k == key)
            .and_then(|(_, _, guid)| self.space(*guid))
    }

    /// An app by space and name.
    pub fn app_named(&self, space_guid: Guid, name: &str) -> Option<&App> {
        let key = name_key(name);
        self.app_names
            .range((space_guid, key.clone(), FIRST)..)
            .next()
            .filter(|(space, k, _)| *space == space_guid && *k == key)
            .and_then(|(_, _, guid)| self.app(*guid))
    }

    /// All orgs, by guid.
    pub fn orgs(&self) -> impl Iterator<Item = &Org> {
        self.orgs.values().map(|org| &**org)
    }

    /// All spaces, by guid.
    pub fn spaces(&self) -> impl Iterator<Item = &Space> {
        self.spaces.values().map(|space| &**space)
    }

    /// All apps, by guid.
    pub fn apps(&self) -> impl Iterator<Item = &App> {
        self.apps.values().map(|app| &**app)
    }

    /// Orgs whose guids fall in `range`.
    pub fn orgs_in_range(
        &self,
        range: impl std::ops::RangeBounds<Guid>,
    ) -> impl Iterator<Item = &Org> {
        self.orgs.range(range).map(|(_, org)| &**org)
    }

    /// Spaces whose guids fall in `range`.
    pub fn spaces_in_range(
        &self,
        range: impl std::ops::RangeBounds<Guid>,
    ) -> impl Iterator<Item = &Space> {
        self.spaces.range(range).map(|(_, space)| &**space)
    }

    /// Apps whose guids fall in `range`.
    pub fn apps_in_range(
        &self,
        range: impl std::ops::RangeBounds<Guid>,
    ) -> impl Iterator<Item = &App> {
        self.apps.range(range).map(|(_, app)| &**app)
    }

    /// All apps in list order (creation time, then guid); `rev()` for newest first.
    pub fn apps_by_creation(&self) -> impl DoubleEndedIterator<Item = &App> {
        self.apps_by_created
            .iter()
            .filter_map(|(_, guid)| self.app(*guid))
    }

    /// A page of [`State::apps_by_creation`]: `limit` apps after skipping `offset` (from the
    /// newest when `descending`). Skipping walks the index entries, not the apps.
    pub fn apps_page(&self, offset: usize, limit: usize, descending: bool) -> Vec<&App> {
        let lookup = |(_, guid): &(Timestamp, Guid)| self.app(*guid);
        if descending {
            let entries = self.apps_by_created.iter().rev().skip(offset);
            entries.take(limit).filter_map(lookup).collect()
        } else {
            let entries = self.apps_by_created.iter().skip(offset);
            entries.take(limit).filter_map(lookup).collect()
        }
    }

    /// A page of the apps in `space`, in list order (creation time, then guid): the index is
    /// walked up to the page, so its cost grows with `offset + limit`, not with the space.
    pub fn apps_in_page(
        &self,
        space: Guid,
        offset: usize,
        limit: usize,
        descending: bool,
    ) -> Vec<&App> {
        let range = (space, Timestamp::MIN_UTC, FIRST)..=(space, Timestamp::MAX_UTC, LAST);
        let lookup = |(_, _, guid): &(Guid, Timestamp, Guid)| self.app(*guid);
        let entries = self.apps_by_space_created.range(range);
        if descending {
            let entries = entries.rev().skip(offset);
            entries.take(limit).filter_map(lookup).collect()
        } else {
            entries
                .skip(offset)
                .take(limit)
                .filter_map(lookup)
                .collect()
        }
    }

    /// How many apps `space` holds.
    pub fn app_count_in(&self, space: Guid) -> usize {
        self.apps_per_space.get(&space).copied().unwrap_or(0)
    }

    fn count_in(&mut self, space: Guid, up: bool) {
        let n = self.app_count_in(space);
        let n = if up { n + 1 } else { n.saturating_sub(1) };
        if n == 0 {
            self.apps_per_space.remove(&space);
        } else {
            self.apps_per_space.insert(space, n);
        }
    }

    /// The apps named `name` (compared without case), in any space, by guid.
    pub fn apps_named(&self, name: &str) -> impl Iterator<Item = &App> {
        let name = name_key(name);
        self.apps_by_name
            .range((name.clone(), FIRST)..)
            .take_while(move |(n, _)| *n == name)
            .filter_map(|(_, guid)| self.app(*guid))
    }

    /// Number of apps.
    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// The spaces of an org, by name.
    pub fn spaces_in(&self, org_guid: Guid) -> impl Iterator<Item = &Space> {
        self.space_names
            .range((org_guid, String::new(), FIRST)..)
            .take_while(move |(org, _, _)| *org == org_guid)
            .filter_map(|(_, _, guid)| self.space(*guid))
    }

    /// The apps of a space, by name.
    pub fn apps_in(&self, space_guid: Guid) -> impl Iterator<Item = &App> {
        self.app_names
            .range((space_guid, String::new(), FIRST)..)
            .take_while(move |(space, _, _)| *space == space_guid)
            .filter_map(|(_, _, guid)| self.app(*guid))
    }

    /// Whether `user` holds `role` in the org or space `resource`.
    pub fn has_role(&self, user: &str, resource: Guid, role: RoleKind) -> bool {
        self.members.contains(&(resource, role, user.to_owned()))
    }

    /// Whether `user` holds any of `roles` in `resource`.
    pub fn has_any_role(&self, user: &str, resource: Guid, roles: &[RoleKind]) -> bool {
        roles
            .iter()
            .any(|role| self.has_role(user, resource, *role))
    }

    /// The members of an org or space: `(role, user)`, by role then user.
    pub fn members_of(&self, resource: Guid) -> impl Iterator<Item = (RoleKind, &str)> {
        self.members
            .range((resource, RoleKind::ALL[0], String::new())..)
            .take_while(move |(r, _, _)| *r == resource)
            .map(|(_, role, user)| (*role, user.as_str()))
    }

    /// The roles a user holds: `(resource, role)`, by resource guid.
    pub fn roles_of(&self, user: &str) -> impl Iterator<Item = (Guid, RoleKind)> + '_ {
        let user = user.to_owned();
        self.roles_of_user
            .range((user.clone(), Guid::from_u128(0), RoleKind::ALL[0])..)
            .take_while(move |(u, _, _)| *u == user)
            .map(|(_, resource, role)| (*resource, *role))
    }

    /// Every membership whose resource guid falls in `range`, by resource.
    pub fn members_in_range(
        &self,
        range: (std::ops::Bound<Guid>, std::ops::Bound<Guid>),
    ) -> impl Iterator<Item = Membership> + '_ {
        let (start, end) = range;
        let lower = match start {
            std::ops::Bound::Included(g) | std::ops::Bound::Excluded(g) => g,
            std::ops::Bound::Unbounded => Guid::from_u128(0),
        };
        self.members
            .range((lower, RoleKind::ALL[0], String::new())..)
            .filter(move |(r, _, _)| match start {
                std::ops::Bound::Excluded(g) => *r != g,
                _ => true,
            })
            .take_while(move |(r, _, _)| match end {
                std::ops::Bound::Included(g) => *r <= g,
                std::ops::Bound::Excluded(g) => *r < g,
                std::ops::Bound::Unbounded => true,
            })
            .map(|(resource, role, user)| Membership {
                resource: *resource,
                role: *role,
                user: user.clone(),
            })
    }

    /// Number of memberships.
    pub fn membership_count(&self) -> usize {
        self.members.len()
    }

    fn drop_members_of(&mut self, resource: Guid) {
        let gone: Vec<(RoleKind, String)> = self
            .members_of(resource)
            .map(|(role, user)| (role, user.to_owned()))
            .collect();
        for (role, user) in gone {
            self.members.remove(&(resource, role, user.clone()));
            self.roles_of_user.remove(&(user, resource, role));
        }
    }

    /// Folds one event into the table. Stream events (usage, audit) leave it unchanged. Name
    /// indexes are touched only when a name or parent changes.
    pub fn evolve(&mut self, event: &Event) {
        match event {
            Event::OrgCreated(org) | Event::OrgUpdated(org) => self.put_org(org.clone()),
            Event::SpaceCreated(space) | Event::SpaceUpdated(space) => {
                self.put_space(space.clone())
            }
            Event::AppCreated(app) | Event::AppUpdated(app) => self.put_app(app.clone()),
            other => self.evolve_owned(other.clone()),
        }
    }

    /// [`State::evolve`] for an event the caller no longer needs: rows are moved, not copied.
    pub fn evolve_owned(&mut self, event: Event) {
        match event {
            Event::OrgCreated(org) | Event::OrgUpdated(org) => self.put_org(org),
            Event::OrgDeleted { guid } => {
                if let Some(old) = self.orgs.remove(&guid) {
                    self.org_names.remove(&(name_key(&old.name), guid));
                }
                self.drop_members_of(guid);
            }
            Event::SpaceCreated(space) | Event::SpaceUpdated(space) => self.put_space(space),
            Event::SpaceDeleted { guid } => {
                if let Some(old) = self.spaces.remove(&guid) {
                    self.space_names
                        .remove(&(old.org_guid, name_key(&old.name), guid));
                }
                self.drop_members_of(guid);
            }
            Event::AppCreated(app) | Event::AppUpdated(app) => self.put_app(app),
            Event::AppDeleted { guid } => {
                if let Some(old) = self.apps.remove(&guid) {
                    let key = name_key(&old.name);
                    self.app_names.remove(&(old.space_guid, key.clone(), guid));
                    self.apps_by_name.remove(&(key, guid));
                    self.apps_by_created.remove(&(old.created_at, guid));
                    self.apps_by_space_created
                        .remove(&(old.space_guid, old.created_at, guid));
                    self.count_in(old.space_guid, false);
                    if let Some(build) = &old.build {
                        self.builds.remove(&build.guid);
                    }
                    if let Some(droplet) = &old.latest_droplet {
                        self.droplets.remove(&droplet.guid);
                    }
                    if let Some(package) = &old.package {
                        self.packages.remove(&package.guid);
                    }
                }
            }
            Event::RoleGranted(m) => {
                self.roles_of_user
                    .insert((m.user.clone(), m.resource, m.role));
                self.members.insert((m.resource, m.role, m.user));
            }
            Event::RoleRevoked(m) => {
                self.roles_of_user
                    .remove(&(m.user.clone(), m.resource, m.role));
                self.members.remove(&(m.resource, m.role, m.user));
            }
            Event::TaskPut(task) => {
                if self.tasks.get(&task.guid).is_none() {
                    self.tasks_of_app
                        .insert((task.app_guid, task.created_at, task.guid));
                    self.tasks_by_created.insert((task.created_at, task.guid));
                }
                self.tasks.insert(task.guid, Arc::new(task));
            }
            Event::TaskDeleted { guid } => {
                if let Some(old) = self.tasks.remove(&guid) {
                    self.tasks_of_app
                        .remove(&(old.app_guid, old.created_at, guid));
                    self.tasks_by_created.remove(&(old.created_at, guid));
                }
            }
            Event::ProcessPut(process) => {
                self.processes_of_app.insert(
                    (process.app_guid, process.process_type.clone()),
                    process.guid,
                );
                self.processes.insert(process.guid, Arc::new(process));
            }
            Event::ProcessDeleted { guid } => {
                if let Some(old) = self.processes.remove(&guid) {
                    self.processes_of_app
                        .remove(&(old.app_guid, old.process_type.clone()));
                }
            }
            Event::UsageRecorded(_) | Event::AuditRecorded(_) => {}
        }
    }

    fn put_org(&mut self, org: Org) {
        let key = (name_key(&org.name), org.guid);
        let old_key = self
            .orgs
            .get(&org.guid)
            .map(|old| (name_key(&old.name), org.guid));
        if old_key.as_ref() != Some(&key) {
            if let Some(old) = old_key {
                self.org_names.remove(&old);
            }
            self.org_names.insert(key);
        }
        self.orgs.insert(org.guid, Arc::new(org));
    }

    fn put_space(&mut self, space: Space) {
        let key = (space.org_guid, name_key(&space.name), space.guid);
        let old_key = self
            .spaces
            .get(&space.guid)
            .map(|old| (old.org_guid, name_key(&old.name), space.guid));
        if old_key.as_ref() != Some(&key) {
            if let Some(old) = old_key {
                self.space_names.remove(&old);
            }
            self.space_names.insert(key);
        }
        self.spaces.insert(space.guid, Arc::new(space));
    }

    fn put_app(&mut self, app: App) {
        let old = self.apps.get(&app.guid);
        let old_key = old.map(|old| (old.space_guid, name_key(&old.name), app.guid));
        let old_build = old.and_then(|old| old.build.as_ref().map(|b| b.guid));
        let old_created = old.map(|old| old.created_at);
        let old_droplet = old.and_then(|old| old.latest_droplet.as_ref().map(|d| d.guid));
        let old_package = old.and_then(|old| old.package.as_ref().map(|p| p.guid));
        let old_place = old.map(|old| (old.space_guid, old.created_at, app.guid));
        let key = (app.space_guid, name_key(&app.name), app.guid);
        if old_key.as_ref() != Some(&key) {
            if let Some((_, old_name, _)) = &old_key {
                self.apps_by_name.remove(&(old_name.clone(), app.guid));
            }
            if let Some(old) = old_key {
                self.app_names.remove(&old);
            }
            self.apps_by_name.insert((key.1.clone(), app.guid));
            self.app_names.insert(key);
        }
        if old_created != Some(app.created_at) {
            if let Some(old) = old_created {
                self.apps_by_created.remove(&(old, app.guid));
            }
            self.apps_by_created.insert((app.created_at, app.guid));
        }
        let new_build = app.build.as_ref().map(|b| b.guid);
        if old_build != new_build {
            if let Some(old) = old_build {
                self.builds.remove(&old);
            }
            if let Some(new) = new_build {
                self.builds.insert(new, app.guid);
            }
        }
        let place = (app.space_guid, app.created_at, app.guid);
        if old_place != Some(place) {
            if let Some(old) = old_place {
                self.apps_by_space_created.remove(&old);
                self.count_in(old.0, false);
            }
            self.apps_by_space_created.insert(place);
            self.count_in(app.space_guid, true);
        }
        let new_package = app.package.as_ref().map(|p| p.guid);
        if old_package != new_package {
            if let Some(old) = old_package {
                self.packages.remove(&old);
            }
            if let Some(new) = new_package {
                self.packages.insert(new, app.guid);
            }
        }
        let new_droplet = app.latest_droplet.as_ref().map(|d| d.guid);
        if old_droplet != new_droplet {
            if let Some(old) = old_droplet {
                self.droplets.remove(&old);
            }
            if let Some(new) = new_droplet {
                self.droplets.insert(new, app.guid);
            }
        }
        self.apps.insert(app.guid, Arc::new(app));
    }

    /// Folds many events.
    pub fn evolve_all<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for event in events {
            self.evolve(event);
        }
    }
}
