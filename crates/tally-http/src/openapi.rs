//! The OpenAPI 3 document of everything tally serves, generated from the handlers: each one
//! carries a `#[utoipa::path]` annotation and is registered with `utoipa_axum::routes!`, which
//! puts the route into the router and the operation into the document in one step (so the
//! two cannot drift). Served at `GET /openapi.json`.

use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// The document's frame: title, version, the bearer scheme, the shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tally",
        description = "Event-sourced usage metering that speaks Cloud Foundry Cloud Controller's \
                       v2 and v3 API for apps and app usage events. Errors are Cloud Controller's \
                       bodies (v2: description, error_code, code; v3: errors[])."
    ),
    modifiers(&BearerAuth),
    components(schemas(CcError, V3Errors))
)]
pub(crate) struct ApiDoc;

/// `Authorization: bearer <UAA token>` on every endpoint that says so.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// A v2 error body.
#[derive(Serialize, ToSchema)]
pub(crate) struct CcError {
    /// What went wrong.
    pub description: String,
    /// `CF-<Name>`.
    pub error_code: String,
    /// Cloud Controller's numeric code.
    pub code: i64,
}

/// A v3 error body.
#[derive(Serialize, ToSchema)]
pub(crate) struct V3Errors {
    /// One entry per problem: `detail`, `title` (`CF-<Name>`), `code`.
    pub errors: Vec<serde_json::Value>,
}

/// The paging parameters of a v2 list (reference §3.1).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by the document only
pub(crate) struct V2ListParams {
    /// A filter `field:value`, `field IN a,b`, `field>=value`, ...; repeatable.
    q: Option<Vec<String>>,
    /// Page number, from 1.
    page: Option<i64>,
    /// Results per page (1–100).
    #[param(rename = "results-per-page")]
    results_per_page: Option<i64>,
    /// `asc` or `desc`.
    #[param(rename = "order-direction")]
    order_direction: Option<String>,
}

/// The parameters of `GET /v2/app_usage_events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by the document only
pub(crate) struct V2UsageParams {
    /// Events after this one (a cursor).
    after_guid: Option<String>,
    /// Page number, from 1.
    page: Option<i64>,
    /// Results per page (1–10000).
    #[param(rename = "results-per-page")]
    results_per_page: Option<i64>,
    /// `asc` or `desc`.
    #[param(rename = "order-direction")]
    order_direction: Option<String>,
    /// Seconds to wait for a first event (tally's long poll; at most 30, and below the
    /// request timeout).
    #[param(minimum = 0)]
    wait: Option<i64>,
}

/// The parameters of `GET /v3/app_usage_events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by the document only
pub(crate) struct V3UsageParams {
    /// Events after this one (a cursor).
    after_guid: Option<String>,
    /// Comma-separated event guids.
    guids: Option<String>,
    /// `T1,T2`, or with `[lt]`, `[lte]`, `[gt]`, `[gte]` in the key.
    created_ats: Option<String>,
    /// `created_at` or `-created_at`.
    order_by: Option<String>,
    /// Page number, from 1.
    page: Option<i64>,
    /// Results per page (1–5000).
    per_page: Option<i64>,
    /// Seconds to wait for a first event (tally's long poll; at most 30, and below the
    /// request timeout).
    #[param(minimum = 0)]
    wait: Option<i64>,
}

/// The parameters of `GET /v3/audit_events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by the document only
pub(crate) struct V3AuditParams {
    /// Comma-separated event types.
    types: Option<String>,
    /// Comma-separated target guids.
    target_guids: Option<String>,
    /// Comma-separated space guids.
    space_guids: Option<String>,
    /// Comma-separated organization guids.
    organization_guids: Option<String>,
    /// `T1,T2`, or with `[lt]`, `[lte]`, `[gt]`, `[gte]` in the key.
    created_ats: Option<String>,
    /// `created_at`, `-created_at`, `updated_at`, `-updated_at`.
    order_by: Option<String>,
    /// Page number, from 1.
    page: Option<i64>,
    /// Results per page (1–5000).
    per_page: Option<i64>,
}
