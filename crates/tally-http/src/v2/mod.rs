//! The v2 API (`/v2/...`).

use std::sync::Arc;

use axum::Router;

use crate::AppState;

pub mod paging;
pub mod present;
mod roles;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().merge(roles::router())
}
