//! Org and space roles: `PUT`/`DELETE /v2/organizations/:guid/{users,managers,auditors,
//! billing_managers}/:user_guid`, `PUT`/`DELETE /v2/spaces/:guid/{developers,managers,
//! auditors}/:user_guid`, and `GET` on each collection.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tally_domain::{access, Command, Guid, Membership, RoleKind, State as Table};

use crate::auth::Caller;
use crate::v2::paging::{Paging, MAX_PER_PAGE};
use crate::v2::{present, recursive};
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for role in RoleKind::ALL {
        let base = if role.is_org_role() {
            "/v2/organizations"
        } else {
            "/v2/spaces"
        };
        let collection = format!("{base}/{{guid}}/{}", role.association());
        router = router
            .route(
                &collection,
                get(move |caller, state, path, query| list(role, caller, state, path, query)),
            )
            .route(
                &format!("{collection}/{{user}}"),
                axum::routing::put(move |caller, state, path| grant(role, caller, state, path))
                    .delete(move |caller, state, path, query| {
                        revoke(role, caller, state, path, query)
                    }),
            );
    }
    router
}

/// The org or space a path names; an id that is not a guid names nothing.
fn resource(role: RoleKind, table: &Table, guid: &str) -> Option<Guid> {
    let guid: Guid = guid.parse().ok()?;
    let exists = if role.is_org_role() {
        table.org(guid).is_some()
    } else {
        table.space(guid).is_some()
    };
    exists.then_some(guid)
}

/// CC's not-found error for the resource a role belongs to.
fn not_found(role: RoleKind, guid: &str) -> ApiError {
    if role.is_org_role() {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "OrganizationNotFound",
            30003,
            format!("The organization could not be found: {guid}"),
        )
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "SpaceNotFound",
            40004,
            format!("The app space could not be found: {guid}"),
        )
    }
}

/// UAA user ids are lower-case guids; an upper-case spelling of one names the same user.
fn user_id(raw: String) -> String {
    match raw.parse::<Guid>() {
        Ok(guid) if raw.len() == 36 => guid.to_string(),
        _ => raw,
    }
}

async fn list(
    role: RoleKind,
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = state.engine.view();
    let table = &view.state;
    let target = resource(role, table, &guid);
    let allowed = if role.is_org_role() {
        access::org_read(caller.subject(), table, target)
    } else {
        access::space_read(caller.subject(), table, target)
    };
    allowed.map_err(|denial| deny(denial, || not_found(role, &guid)))?;
    let paging = Paging::parse(query.as_deref(), MAX_PER_PAGE, &[])?;
    let Some(target) = target else {
        return Err(not_found(role, &guid));
    };
    let users: Vec<&str> = table
        .members_of(target)
        .filter(|(r, _)| *r == role)
        .map(|(_, user)| user)
        .collect();
    let path = if role.is_org_role() {
        format!("/v2/organizations/{target}/{}", role.association())
    } else {
        format!("/v2/spaces/{target}/{}", role.association())
    };
    Ok(Json(paging.envelope(&path, users, present::user)))
}

async fn grant(
    role: RoleKind,
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path((guid, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let resource = check(&caller, &state.engine.view().state, role, &guid)?;
    let m = Membership {
        resource,
        role,
        user: user_id(user),
    };
    state
        .engine
        .submit(caller.envelope(Command::GrantRole(m)))
        .await?;
    let view = state.engine.view();
    let body = if role.is_org_role() {
        view.state.org(resource).map(present::org)
    } else {
        view.state.space(resource).map(present::space)
    }
    .ok_or_else(|| not_found(role, &guid))?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn revoke(
    role: RoleKind,
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path((guid, user)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let recursive = recursive(query.as_deref())?;
    let resource = check(&caller, &state.engine.view().state, role, &guid)?;
    let m = Membership {
        resource,
        role,
        user: user_id(user),
    };
    state
        .engine
        .submit(caller.envelope(Command::RevokeRole {
            membership: m,
            recursive,
        }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The permission check of a role change: the token rule, then 404 for an unknown org or
/// space, then the object rule.
fn check(caller: &Caller, table: &Table, role: RoleKind, guid: &str) -> Result<Guid, ApiError> {
    let target = resource(role, table, guid);
    access::manage_role(caller.subject(), table, role, target)
        .map_err(|denial| deny(denial, || not_found(role, guid)))?;
    target.ok_or_else(|| not_found(role, guid))
}
