//! The v3 API (`/v3/...`).

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

mod apps;
mod audit_events;
pub mod body;
mod jobs;
pub mod list;
pub mod present;
mod processes;
mod spaces;
pub mod stream;
pub(crate) mod usage_events;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .merge(apps::router())
        .merge(audit_events::router())
        .merge(jobs::router())
        .merge(processes::router())
        .merge(spaces::router())
        .merge(usage_events::router())
}
