//! The v2 API (`/v2/...`).

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiError, AppState};

pub mod app_body;
mod apps;
pub mod bits;
pub(crate) mod events;
mod orgs;
pub mod paging;
pub mod present;
pub mod query;
mod roles;
pub mod usage_events;

/// The v2 routes; package uploads may be up to `max_upload_bytes` (plus multipart framing).
pub(crate) fn router(max_upload_bytes: usize) -> OpenApiRouter<Arc<AppState>> {
    let bits = OpenApiRouter::new().routes(routes!(bits::upload)).layer(
        axum::extract::DefaultBodyLimit::max(
            max_upload_bytes.saturating_add(bits::MULTIPART_FRAMING),
        ),
    );
    OpenApiRouter::new()
        .merge(bits)
        .merge(apps::router())
        .merge(events::router())
        .merge(orgs::router())
        .merge(roles::router())
        .merge(usage_events::router())
}

/// `recursive=true|false` (CC's boolean query parameter).
pub(crate) fn recursive(query: Option<&str>) -> Result<bool, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| ApiError::bad_query("the query string is not URL-encoded"))?;
    match pairs.iter().rev().find(|(k, _)| k == "recursive") {
        None => Ok(false),
        Some((_, v)) if v == "true" => Ok(true),
        Some((_, v)) if v == "false" => Ok(false),
        Some((_, v)) => Err(ApiError::bad_query(format!(
            "recursive must be 'true' or 'false' but was '{v}'"
        ))),
    }
}
