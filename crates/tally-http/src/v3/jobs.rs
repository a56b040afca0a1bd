//! `GET /v3/jobs/:guid` (reference v3 §2.5): tally runs an app delete at once, so its job is
//! `COMPLETE` as soon as the client learns its guid, which is the guid of the delete's
//! `audit.app.delete-request` event (a job lives as long as that event is retained).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;
use tally_domain::{access, Guid};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::v3::apps::DELETE_JOB;
use crate::v3::present;
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(show))
}

fn job_not_found() -> ApiError {
    ApiError::resource_not_found("Job not found")
}

/// One job: any caller with the read scope may read any job, as in CC.
#[utoipa::path(get, path = "/v3/jobs/{guid}", tag = "v3 apps", security(("bearer" = [])), params(("guid" = String, Path, description = "the job's guid")), responses((status = 200, description = "the job", body = serde_json::Value), (status = "default", description = "Cloud Controller's error", body = crate::openapi::V3Errors)))]
async fn show(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.view();
    access::app_list_v3(caller.subject(), &view.state).map_err(|d| deny(d, job_not_found))?;
    let guid = guid.parse::<Guid>().map_err(|_| job_not_found())?;
    match state.engine.audit_event(&view, guid).await? {
        Some((_, event)) if event.event_type == "audit.app.delete-request" => {
            Ok(Json(present::job(
                &state.settings.external_url,
                guid,
                DELETE_JOB,
                event.created_at,
            )))
        }
        _ => Err(job_not_found()),
    }
}
