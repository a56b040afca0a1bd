//! The v3 API (`/v3/...`).

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

mod audit_events;
pub mod list;
pub mod stream;
pub(crate) mod usage_events;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .merge(audit_events::router())
        .merge(usage_events::router())
}
