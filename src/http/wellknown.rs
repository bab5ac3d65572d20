//! Discovery: RFC 8414 server metadata and the RFC 7517 key set.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::AppState;
use crate::domain::tokens::GRANT_TYPES;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/.well-known/jwks.json", get(jwks))
}

async fn metadata(State(state): State<AppState>) -> Json<serde_json::Value> {
    let issuer = &state.tokens.policy().issuer;
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    let algs = ["EdDSA", "ES256", "RS256"];
    Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/auth/token"),
        "revocation_endpoint": format!("{issuer}/auth/revoke"),
        "introspection_endpoint": format!("{issuer}/auth/introspect"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": GRANT_TYPES,
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "access_token_signing_alg_values_supported": algs,
    }))
}

async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.keys.jwks()).into_response();
    // Short enough that a rotated key is picked up well within an access-token lifetime.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
