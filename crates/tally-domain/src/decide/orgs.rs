//! Orgs: create, rename, delete (recursively, with their spaces).

use super::*;

pub(super) fn create_org(
    state: &State,
    guid: Guid,
    name: &str,
    inputs: &Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    check_name(name, "organization")?;
    if state.org_named(name).is_some() {
        return Err(DomainError::OrgNameTaken(name.to_owned()));
    }
    out.events.push(Event::OrgCreated(Org {
        guid,
        name: name.to_owned(),
        created_at: inputs.now,
        updated_at: inputs.now,
    }));
    Ok(())
}

pub(super) fn rename_org(
    state: &State,
    guid: Guid,
    name: &str,
    inputs: &Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let org = state.org(guid).ok_or(DomainError::OrgNotFound(guid))?;
    check_name(name, "organization")?;
    if state
        .org_named(name)
        .is_some_and(|other| other.guid != guid)
    {
        return Err(DomainError::OrgNameTaken(name.to_owned()));
    }
    out.events.push(Event::OrgUpdated(Org {
        name: name.to_owned(),
        updated_at: inputs.now,
        ..org.clone()
    }));
    Ok(())
}

pub(super) fn delete_org(
    state: &State,
    guid: Guid,
    recursive: bool,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    state.org(guid).ok_or(DomainError::OrgNotFound(guid))?;
    let spaces: Vec<&Space> = state.spaces_in(guid).collect();
    if !spaces.is_empty() && !recursive {
        return Err(DomainError::AssociationNotEmpty {
            association: "spaces",
            resource: "organization",
        });
    }
    for space in spaces {
        delete_space_contents(state, space, inputs, out);
        out.events.push(Event::SpaceDeleted { guid: space.guid });
    }
    out.events.push(Event::OrgDeleted { guid });
    Ok(())
}
