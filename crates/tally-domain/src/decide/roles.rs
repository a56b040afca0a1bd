//! Roles: giving and taking org and space roles, with their audit events.

use super::*;

/// The org a role's resource belongs to (the org itself for org roles), and the space for
/// space roles. Fails when the resource does not exist.
pub(super) fn role_placement(
    state: &State,
    m: &Membership,
) -> Result<(Guid, Option<Guid>), DomainError> {
    if m.role.is_org_role() {
        state
            .org(m.resource)
            .ok_or(DomainError::OrgNotFound(m.resource))?;
        Ok((m.resource, None))
    } else {
        let space = find_space(state, m.resource)?;
        Ok((space.org_guid, Some(space.guid)))
    }
}

pub(super) fn role_audit(
    inputs: &mut Inputs<'_>,
    m: &Membership,
    placement: (Guid, Option<Guid>),
    change: &str,
    metadata: &Value,
) -> Event {
    Event::AuditRecorded(AuditEvent {
        guid: UNNUMBERED,
        created_at: inputs.now,
        event_type: format!("audit.user.{}_{change}", m.role.audit_name()),
        actor: inputs.actor.clone(),
        actee: m.user.clone(),
        actee_type: "user".to_owned(),
        actee_name: String::new(),
        metadata: metadata.clone(),
        space_guid: placement.1,
        organization_guid: Some(placement.0),
    })
}

pub(super) fn grant_role(
    state: &State,
    m: &Membership,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let placement = role_placement(state, m)?;
    if !valid_user_id(&m.user) {
        return Err(DomainError::InvalidRelation(format!(
            "Invalid user id: {:?}",
            m.user
        )));
    }
    if !m.role.is_org_role() && !state.has_role(&m.user, placement.0, RoleKind::OrgUser) {
        return Err(DomainError::InvalidRelation(format!(
            "The user {} is not a member of the space's organization {}",
            m.user, placement.0
        )));
    }
    if state.has_role(&m.user, m.resource, m.role) {
        return Ok(());
    }
    out.events.push(Event::RoleGranted(m.clone()));
    out.events.push(role_audit(
        inputs,
        m,
        placement,
        "add",
        &Value::request(Value::empty()),
    ));
    Ok(())
}

pub(super) fn revoke_role(
    state: &State,
    m: &Membership,
    recursive: bool,
    inputs: &mut Inputs<'_>,
    out: &mut Decision,
) -> Result<(), DomainError> {
    let placement = role_placement(state, m)?;
    if !state.has_role(&m.user, m.resource, m.role) {
        return Ok(());
    }
    let metadata = Value::request(Value::object([("recursive", Value::Bool(recursive))]));
    if m.role == RoleKind::OrgUser {
        let space_roles: Vec<Membership> = state
            .roles_of(&m.user)
            .filter(|(resource, role)| {
                !role.is_org_role()
                    && state
                        .space(*resource)
                        .is_some_and(|space| space.org_guid == m.resource)
            })
            .map(|(resource, role)| Membership {
                resource,
                role,
                user: m.user.clone(),
            })
            .collect();
        if !space_roles.is_empty() && !recursive {
            return Err(DomainError::AssociationNotEmpty {
                association: "user",
                resource: "spaces in the org",
            });
        }
        for space_role in space_roles {
            let space_placement = (m.resource, Some(space_role.resource));
            out.events.push(Event::RoleRevoked(space_role.clone()));
            out.events.push(role_audit(
                inputs,
                &space_role,
                space_placement,
                "remove",
                &metadata,
            ));
        }
    }
    out.events.push(Event::RoleRevoked(m.clone()));
    out.events
        .push(role_audit(inputs, m, placement, "remove", &metadata));
    Ok(())
}
