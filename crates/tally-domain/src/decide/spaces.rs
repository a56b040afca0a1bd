//! Spaces: create, rename, delete (recursively, with their apps).

use super::*;

pub(super) fn create_space(
    state: &State,
    guid: Guid,
    org_guid: Guid,
    name: &str,
    inputs: &Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    state
        .org(org_guid)
        .ok_or(DomainError::OrgNotFound(org_guid))?;
    check_name(name, "space")?;
    if state.space_named(org_guid, name).is_some() {
        return Err(DomainError::SpaceNameTaken(name.to_owned()));
    }
    out.events.push(Event::SpaceCreated(Space {
        guid,
        name: name.to_owned(),
        org_guid,
        created_at: inputs.now,
        updated_at: inputs.now,
    }));
    Ok(())
}

pub(super) fn rename_space(
    state: &State,
    guid: Guid,
    name: &str,
    inputs: &Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let space = find_space(state, guid)?;
    check_name(name, "space")?;
    if state
        .space_named(space.org_guid, name)
        .is_some_and(|other| other.guid != guid)
    {
        return Err(DomainError::SpaceNameTaken(name.to_owned()));
    }
    out.events.push(Event::SpaceUpdated(Space {
        name: name.to_owned(),
        updated_at: inputs.now,
        ..space.clone()
    }));
    Ok(())
}

pub(super) fn delete_space(
    state: &State,
    guid: Guid,
    recursive: bool,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let space = find_space(state, guid)?;
    if state.apps_in(guid).next().is_some() && !recursive {
        return Err(DomainError::AssociationNotEmpty {
            association: "apps",
            resource: "space",
        });
    }
    delete_space_contents(state, space, inputs, out);
    out.events.push(Event::SpaceDeleted { guid });
    Ok(())
}

pub(super) fn delete_space_contents(
    state: &State,
    space: &Space,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) {
    for app in state.apps_in(space.guid) {
        delete_app(state, app, space, inputs, out);
        out.audit(
            inputs,
            "audit.app.delete-request",
            app,
            space,
            Value::request(Value::object([("recursive", Value::Bool(true))])),
        );
    }
}
