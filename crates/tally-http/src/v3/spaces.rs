//! `GET /v3/spaces/:guid` and `GET /v3/organizations/:guid`: what a v3 app's `space` link and
//! `include` lead to (the v2 API manages both).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;
use tally_domain::{access, Guid};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::resource::target;
use crate::v3::present;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(space))
        .routes(routes!(org))
}

fn space_not_found() -> ApiError {
    ApiError::resource_not_found("Space not found")
}

fn org_not_found() -> ApiError {
    ApiError::resource_not_found("Organization not found")
}

/// One space.
#[utoipa::path(get, path = "/v3/spaces/{guid}", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the space's guid")), responses((status = 200, description = "the space", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn space(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let found = target(
        &view.state,
        &caller,
        |_| guid.parse::<Guid>().ok(),
        access::space_read_v3,
        space_not_found,
    )?;
    let space = view.state.space(found).ok_or_else(space_not_found)?;
    Ok(Json(present::space(&state.settings.external_url, space)))
}

/// One organization.
#[utoipa::path(get, path = "/v3/organizations/{guid}", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the organization's guid")), responses((status = 200, description = "the organization", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn org(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    let found = target(
        &view.state,
        &caller,
        |_| guid.parse::<Guid>().ok(),
        access::org_read_v3,
        org_not_found,
    )?;
    let org = view.state.org(found).ok_or_else(org_not_found)?;
    Ok(Json(present::org(&state.settings.external_url, org)))
}
