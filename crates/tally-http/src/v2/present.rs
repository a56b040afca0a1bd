//! v2 resources: `{"metadata": {...}, "entity": {...}}` for the objects served so far.

use serde_json::{json, Value};
use tally_domain::model::{Org, Space};
use tally_domain::Timestamp;

/// v2 timestamps: ISO 8601, seconds, `Z`.
pub fn time(t: Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn metadata(
    kind: &str,
    guid: impl std::fmt::Display,
    created: Timestamp,
    updated: Timestamp,
) -> Value {
    json!({
        "guid": guid.to_string(),
        "url": format!("/v2/{kind}/{guid}"),
        "created_at": time(created),
        "updated_at": time(updated),
    })
}

/// An org.
pub fn org(org: &Org) -> Value {
    let url = format!("/v2/organizations/{}", org.guid);
    json!({
        "metadata": metadata("organizations", org.guid, org.created_at, org.updated_at),
        "entity": {
            "name": org.name,
            "billing_enabled": false,
            "status": "active",
            "spaces_url": format!("{url}/spaces"),
            "users_url": format!("{url}/users"),
            "managers_url": format!("{url}/managers"),
            "billing_managers_url": format!("{url}/billing_managers"),
            "auditors_url": format!("{url}/auditors"),
        }
    })
}

/// A space.
pub fn space(space: &Space) -> Value {
    let url = format!("/v2/spaces/{}", space.guid);
    json!({
        "metadata": metadata("spaces", space.guid, space.created_at, space.updated_at),
        "entity": {
            "name": space.name,
            "organization_guid": space.org_guid.to_string(),
            "allow_ssh": true,
            "organization_url": format!("/v2/organizations/{}", space.org_guid),
            "developers_url": format!("{url}/developers"),
            "managers_url": format!("{url}/managers"),
            "auditors_url": format!("{url}/auditors"),
            "apps_url": format!("{url}/apps"),
        }
    })
}

/// A user, as far as tally knows one: its id. CC fills `username` from UAA; tally has no user
/// table, so it is null, as are the timestamps.
pub fn user(id: &str) -> Value {
    json!({
        "metadata": {
            "guid": id,
            "url": format!("/v2/users/{id}"),
            "created_at": null,
            "updated_at": null,
        },
        "entity": {
            "admin": false,
            "active": true,
            "default_space_guid": null,
            "username": null,
        }
    })
}
