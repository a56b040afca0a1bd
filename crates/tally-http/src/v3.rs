//! The v3 API (`/v3/...`).

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

mod apps;
mod audit_events;
pub mod body;
mod jobs;
pub mod list;
mod packages;
pub mod present;
mod processes;
mod spaces;
pub mod stream;
mod tasks;
pub(crate) mod usage_events;

/// The v3 routes; package uploads may be up to `max_upload_bytes` (plus multipart framing).
pub(crate) fn router(max_upload_bytes: usize) -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .merge(packages::upload_router(max_upload_bytes))
        .merge(apps::router())
        .merge(audit_events::router())
        .merge(jobs::router())
        .merge(packages::router())
        .merge(processes::router())
        .merge(spaces::router())
        .merge(tasks::router())
        .merge(usage_events::router())
}
