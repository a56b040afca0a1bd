//! The app table: every org, space and app as of some log position, and `evolve`, which folds
//! one event into it. Backed by persistent maps so a snapshot is an O(1) clone that readers can
//! hold while the writer moves on.

use imbl::OrdMap;

use crate::event::Event;
use crate::ids::Guid;
use crate::model::{App, Org, Space};

/// The app table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    orgs: OrdMap<Guid, Org>,
    spaces: OrdMap<Guid, Space>,
    apps: OrdMap<Guid, App>,
    org_names: OrdMap<String, Guid>,
    space_names: OrdMap<(Guid, String), Guid>,
    app_names: OrdMap<(Guid, String), Guid>,
    builds: OrdMap<Guid, Guid>,
}

impl State {
    /// An org by guid.
    pub fn org(&self, guid: Guid) -> Option<&Org> {
        self.orgs.get(&guid)
    }

    /// A space by guid.
    pub fn space(&self, guid: Guid) -> Option<&Space> {
        self.spaces.get(&guid)
    }

    /// An app by guid.
    pub fn app(&self, guid: Guid) -> Option<&App> {
        self.apps.get(&guid)
    }

    /// The app whose latest build is `build_guid`.
    pub fn app_of_build(&self, build_guid: Guid) -> Option<&App> {
        self.builds
            .get(&build_guid)
            .and_then(|app| self.apps.get(app))
    }

    /// An org by name.
    pub fn org_named(&self, name: &str) -> Option<&Org> {
        self.org_names
            .get(name)
            .and_then(|guid| self.orgs.get(guid))
    }

    /// A space by org and name.
    pub fn space_named(&self, org_guid: Guid, name: &str) -> Option<&Space> {
        self.space_names
            .get(&(org_guid, name.to_owned()))
            .and_then(|guid| self.spaces.get(guid))
    }

    /// An app by space and name.
    pub fn app_named(&self, space_guid: Guid, name: &str) -> Option<&App> {
        self.app_names
            .get(&(space_guid, name.to_owned()))
            .and_then(|guid| self.apps.get(guid))
    }

    /// All orgs, by guid.
    pub fn orgs(&self) -> impl Iterator<Item = &Org> {
        self.orgs.values()
    }

    /// All spaces, by guid.
    pub fn spaces(&self) -> impl Iterator<Item = &Space> {
        self.spaces.values()
    }

    /// All apps, by guid.
    pub fn apps(&self) -> impl Iterator<Item = &App> {
        self.apps.values()
    }

    /// Orgs whose guids fall in `range`.
    pub fn orgs_in_range(
        &self,
        range: impl std::ops::RangeBounds<Guid>,
    ) -> impl Iterator<Item = &Org> {
        self.orgs.range(range).map(|(_, org)| org)
    }

    /// Spaces whose guids fall in `range`.
    pub fn spaces_in_range(
        &self,
        range: impl std::ops::RangeBounds<Guid>,
    ) -> impl Iterator<Item = &Space> {
        self.spaces.range(range).map(|(_, space)| space)
    }

    /// Apps whose guids fall in `range`.
    pub fn apps_in_range(
        &self,
        range: impl std::ops::RangeBounds<Guid>,
    ) -> impl Iterator<Item = &App> {
        self.apps.range(range).map(|(_, app)| app)
    }

    /// Number of apps.
    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// The spaces of an org, by name.
    pub fn spaces_in(&self, org_guid: Guid) -> impl Iterator<Item = &Space> {
        self.space_names
            .range((org_guid, String::new())..)
            .take_while(move |((org, _), _)| *org == org_guid)
            .filter_map(|(_, guid)| self.spaces.get(guid))
    }

    /// The apps of a space, by name.
    pub fn apps_in(&self, space_guid: Guid) -> impl Iterator<Item = &App> {
        self.app_names
            .range((space_guid, String::new())..)
            .take_while(move |((space, _), _)| *space == space_guid)
            .filter_map(|(_, guid)| self.apps.get(guid))
    }

    /// Folds one event into the table. Stream events (usage, audit) leave it unchanged.
    pub fn evolve(&mut self, event: &Event) {
        match event {
            Event::OrgCreated(org) | Event::OrgUpdated(org) => {
                if let Some(old) = self.orgs.get(&org.guid) {
                    self.org_names.remove(&old.name);
                }
                self.org_names.insert(org.name.clone(), org.guid);
                self.orgs.insert(org.guid, org.clone());
            }
            Event::OrgDeleted { guid } => {
                if let Some(old) = self.orgs.remove(guid) {
                    self.org_names.remove(&old.name);
                }
            }
            Event::SpaceCreated(space) | Event::SpaceUpdated(space) => {
                if let Some(old) = self.spaces.get(&space.guid) {
                    self.space_names.remove(&(old.org_guid, old.name.clone()));
                }
                self.space_names
                    .insert((space.org_guid, space.name.clone()), space.guid);
                self.spaces.insert(space.guid, space.clone());
            }
            Event::SpaceDeleted { guid } => {
                if let Some(old) = self.spaces.remove(guid) {
                    self.space_names.remove(&(old.org_guid, old.name));
                }
            }
            Event::AppCreated(app) | Event::AppUpdated(app) => {
                if let Some(old) = self.apps.get(&app.guid) {
                    self.app_names.remove(&(old.space_guid, old.name.clone()));
                    if let Some(build) = &old.build {
                        self.builds.remove(&build.guid);
                    }
                }
                self.app_names
                    .insert((app.space_guid, app.name.clone()), app.guid);
                if let Some(build) = &app.build {
                    self.builds.insert(build.guid, app.guid);
                }
                self.apps.insert(app.guid, app.clone());
            }
            Event::AppDeleted { guid } => {
                if let Some(old) = self.apps.remove(guid) {
                    self.app_names.remove(&(old.space_guid, old.name));
                    if let Some(build) = &old.build {
                        self.builds.remove(&build.guid);
                    }
                }
            }
            Event::UsageRecorded(_) | Event::AuditRecorded(_) => {}
        }
    }

    /// Folds many events.
    pub fn evolve_all<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for event in events {
            self.evolve(event);
        }
    }
}
