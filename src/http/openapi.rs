//! The OpenAPI document, generated from the route annotations: every route is registered
//! through `utoipa_axum`, so a route cannot exist without its description.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// An RFC 9457 problem: every error outside the OAuth endpoints
/// (`application/problem+json`).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[schema(example = "about:blank")]
    r#type: String,
    #[schema(example = "Not Found")]
    title: String,
    #[schema(example = 404)]
    status: u16,
    /// What went wrong, for a person.
    #[schema(example = "no such session")]
    detail: String,
    /// The request's `x-request-id`, to find its log lines.
    request_id: Option<String>,
}

/// An RFC 6749 §5.2 error of the OAuth endpoints.
#[derive(Serialize, ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type`, `invalid_scope`, `temporarily_unavailable` (rate limited)
    /// or `server_error`.
    #[schema(example = "invalid_grant")]
    error: String,
    #[schema(example = "invalid refresh token")]
    error_description: String,
}

/// The errors every admin endpoint can answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers in the document; never built
pub enum AdminErrors {
    #[response(status = 400, description = "Bad input", content_type = "application/problem+json")]
    BadInput(Problem),
    #[response(
        status = 401,
        description = "Missing, invalid or revoked access token",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 403,
        description = "No admin scope, or the role does not allow this",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    #[response(status = 404, description = "Not found", content_type = "application/problem+json")]
    NotFound(Problem),
}

/// The errors every end-user endpoint can answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers in the document; never built
pub enum UserErrors {
    #[response(
        status = 401,
        description = "Missing, invalid or revoked access token",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 403,
        description = "Not a user's token",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
}

/// The errors every OAuth endpoint can answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers in the document; never built
pub enum OAuthErrors {
    #[response(status = 400, description = "Malformed request or invalid grant")]
    BadRequest(OAuthErrorBody),
    #[response(status = 401, description = "Client authentication failed")]
    Unauthorized(OAuthErrorBody),
    #[response(status = 413, description = "Body too large")]
    TooLarge(OAuthErrorBody),
    #[response(
        status = 429,
        description = "Rate limited; see Retry-After",
        headers(("retry-after" = u64, description = "Seconds to wait"))
    )]
    RateLimited(OAuthErrorBody),
}

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
        components
            .add_security_scheme("client", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "atoms-auth",
        description = "OAuth 2.0 token server with sessions, devices, audit log and webhooks. \
                       OAuth endpoints answer RFC 6749 errors; everything else answers RFC 9457 \
                       problems. Every response carries `x-request-id`."
    ),
    components(schemas(Problem, OAuthErrorBody)),
    modifiers(&Security),
    tags(
        (name = "oauth", description = "Tokens: issue, refresh, revoke, introspect"),
        (name = "account", description = "A user's own sessions and devices"),
        (name = "admin", description = "Administration, by role (see the access matrix)"),
        (name = "discovery", description = "Server metadata and signing keys"),
        (name = "operations", description = "Metrics, health and this document"),
    )
)]
pub struct ApiDoc;

/// The document, built once from the same router the server runs.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let (_, api) = super::documented_routes().split_for_parts();
    api.to_json().unwrap_or_default()
});

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}
