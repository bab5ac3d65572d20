//! Discovery: RFC 8414 server metadata and the RFC 7517 key set.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::config::RegistrationPolicy;
use crate::domain::tokens::GRANT_TYPES;
use crate::error::ApiError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metadata))
        .routes(routes!(openid_metadata))
        .routes(routes!(jwks))
}

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery", summary = "Server metadata (RFC 8414)",
    responses((status = 200, description = "The metadata", body = Object)))]
async fn metadata(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let issuer = &state.tokens.policy().issuer;
    let scopes = state.accounts.scopes_supported().await?;
    let registration = state.config.registration.policy != RegistrationPolicy::Off;
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    let algs = ["EdDSA", "ES256", "RS256"];
    let mut metadata = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth/authorize"),
        "token_endpoint": format!("{issuer}/auth/token"),
        "revocation_endpoint": format!("{issuer}/auth/revoke"),
        "introspection_endpoint": format!("{issuer}/auth/introspect"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": GRANT_TYPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "access_token_signing_alg_values_supported": algs,
        "scopes_supported": scopes,
        "client_id_metadata_document_supported": state.tokens.accepts_documents(),
    });
    if registration {
        metadata["registration_endpoint"] = json!(format!("{issuer}/auth/register"));
    }
    Ok(Json(metadata))
}

/// The same metadata where OpenID clients look for it.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery", summary = "Server metadata at the OpenID path",
    responses((status = 200, description = "The metadata", body = Object)))]
async fn openid_metadata(state: State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    metadata(state).await
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery", summary = "The public signing keys (RFC 7517)",
    responses((status = 200, description = "The key set", body = Object)))]
async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.keys.jwks()).into_response();
    // Short enough that a rotated key is picked up well within an access-token lifetime.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
