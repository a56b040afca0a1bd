//! Org and space roles: `PUT`/`DELETE /v2/organizations/:guid/{users,managers,auditors,
//! billing_managers}/:user_guid`, `PUT`/`DELETE /v2/spaces/:guid/{developers,managers,
//! auditors}/:user_guid`, and `GET` on each collection.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tally_domain::{access, Command, Guid, Membership, RoleKind};
use utoipa_axum::router::OpenApiRouter;

use crate::auth::Caller;
use crate::resource::{target, Write};
use crate::v2::paging::{Paging, MAX_PER_PAGE};
use crate::v2::{present, recursive};
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    let mut router = Router::new();
    let mut paths = utoipa::openapi::path::Paths::new();
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
        document(&mut paths, role, &collection);
    }
    let mut router = OpenApiRouter::from(router);
    router.get_openapi_mut().paths.paths.extend(paths.paths);
    router
}

/// The operations of one role's collection, in the OpenAPI document (the handlers are
/// closures over the role, which `#[utoipa::path]` cannot annotate; this loop is the one that
/// registers them).
fn document(paths: &mut utoipa::openapi::path::Paths, role: RoleKind, collection: &str) {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ContentBuilder, RefOr, Required, ResponseBuilder};
    let resource = if role.is_org_role() {
        "organization"
    } else {
        "space"
    };
    let parameter = |name: &str, place: ParameterIn, description: &str| {
        ParameterBuilder::new()
            .name(name)
            .required(if matches!(place, ParameterIn::Path) {
                Required::True
            } else {
                Required::False
            })
            .parameter_in(place)
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String),
            ))
            .description(Some(description))
            .build()
    };
    let error = ResponseBuilder::new()
        .description("Cloud Controller's error")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "CcError",
                ))))
                .build(),
        )
        .build();
    let operation =
        |summary: String, ok: (&str, &str), extra: Vec<utoipa::openapi::path::Parameter>| {
            let mut builder = OperationBuilder::new()
                .summary(Some(summary))
                .tag("roles")
                .security(utoipa::openapi::security::SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                ))
                .parameter(parameter(
                    "guid",
                    ParameterIn::Path,
                    &format!("the {resource}"),
                ))
                .response(ok.0, ResponseBuilder::new().description(ok.1).build())
                .response("default", error.clone());
            for p in extra {
                builder = builder.parameter(p);
            }
            builder.build()
        };
    let association = role.association();
    paths.add_path_operation(
        collection,
        vec![HttpMethod::Get],
        operation(
            format!("The {association} of an {resource}, a v2 page."),
            ("200", "a v2 page of users"),
            vec![
                parameter("page", ParameterIn::Query, "page number, from 1"),
                parameter("results-per-page", ParameterIn::Query, "1–100"),
            ],
        ),
    );
    let member = format!("{collection}/{{user}}");
    paths.add_path_operation(
        &member,
        vec![HttpMethod::Put],
        operation(
            format!("Gives a user the {association} role of an {resource}."),
            ("201", "the organization or space"),
            vec![parameter("user", ParameterIn::Path, "the user's id")],
        ),
    );
    paths.add_path_operation(
        &member,
        vec![HttpMethod::Delete],
        operation(
            format!("Takes the {association} role of an {resource} from a user."),
            ("204", "removed"),
            vec![
                parameter("user", ParameterIn::Path, "the user's id"),
                parameter("recursive", ParameterIn::Query, "true or false"),
            ],
        ),
    );
}

/// The org or space a path names; an id that is not a guid names nothing.
fn resource(role: RoleKind, table: &tally_domain::State, guid: &str) -> Option<Guid> {
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
        ApiError::org_not_found(guid)
    } else {
        ApiError::space_not_found(guid)
    }
}

/// UAA user ids are lower-case guids; an upper-case spelling of one names the same user.
fn user_id(raw: String) -> String {
    match raw.to_ascii_lowercase().parse::<Guid>() {
        Ok(guid) => guid.to_string(),
        Err(_) => raw,
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
    let rule = if role.is_org_role() {
        access::org_read
    } else {
        access::space_read
    };
    let resolve = |t: &tally_domain::State| resource(role, t, &guid);
    let target = target(table, &caller, resolve, rule, || not_found(role, &guid))?;
    let paging = Paging::parse(query.as_deref(), MAX_PER_PAGE, &[])?;
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
    let resource = change(&state, &caller, role, &guid, user, Command::GrantRole).await?;
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
    change(&state, &caller, role, &guid, user, |membership| {
        Command::RevokeRole {
            membership,
            recursive,
        }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A role change of `user` on the org or space the path names, if the caller may manage it
/// (the token rule, then 404 for an unknown org or space, then the object rule); the org's or
/// space's guid.
async fn change(
    state: &AppState,
    caller: &Caller,
    role: RoleKind,
    guid: &str,
    user: String,
    command: impl FnOnce(Membership) -> Command,
) -> Result<Guid, ApiError> {
    let write = Write::new(
        caller,
        |t: &tally_domain::State| resource(role, t, guid),
        |who, t: &tally_domain::State, r: Option<Guid>| access::manage_role(who, t, role, r),
        || not_found(role, guid),
    );
    let membership = |resource| Membership {
        resource,
        role,
        user: user_id(user),
    };
    let (resource, _) = write
        .run(state, |_, resource| Ok(Some(command(membership(resource)))))
        .await?;
    Ok(resource)
}
