//! The OAuth endpoints: token (RFC 6749), revocation (RFC 7009), introspection (RFC 7662).

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{OAuthForm, PeerIp, client_credentials};
use crate::AppState;
use crate::domain::secrets::Secret;
use crate::domain::tokens::{GRANT_TYPES, LoginContext};
use crate::error::{OAuthError, no_store};
use crate::storage::Client;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/token", post(token))
        .route("/auth/revoke", post(revoke))
        .route("/auth/introspect", post(introspect))
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

fn required(value: Option<String>, name: &str) -> Result<String, OAuthError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required")))
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<Client, OAuthError> {
    let (id, secret) = client_credentials(headers, client_id, client_secret)?;
    state.tokens.authenticate_client(&id, secret).await
}

#[tracing::instrument(skip_all, fields(grant_type))]
async fn token(
    State(state): State<AppState>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm<TokenForm>,
) -> Result<Response, OAuthError> {
    let grant_type = required(form.grant_type, "grant_type")?;
    tracing::Span::current().record("grant_type", grant_type.as_str());
    if !GRANT_TYPES.contains(&grant_type.as_str()) {
        return Err(OAuthError::UnsupportedGrantType);
    }
    let client = authenticate(&state, &headers, form.client_id, form.client_secret).await?;
    let scope = form.scope.as_deref();
    let tokens = &state.tokens;
    let answer = match grant_type.as_str() {
        "password" => {
            let username = required(form.username, "username")?;
            let password = required(form.password, "password")?;
            let user_agent = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(512).collect());
            let context = LoginContext { ip, user_agent };
            tokens
                .password_grant(&client, &username, password, scope, context)
                .await?
        }
        "client_credentials" => tokens.client_credentials_grant(&client, scope).await?,
        _ => {
            let refresh = Secret::from_client(required(form.refresh_token, "refresh_token")?);
            tokens.refresh_grant(&client, &refresh, scope).await?
        }
    };
    let mut response = Json(answer).into_response();
    no_store(&mut response);
    Ok(response)
}

#[derive(Deserialize)]
struct TokenParamForm {
    token: Option<String>,
    #[allow(dead_code)] // accepted per RFC 7009/7662; the token format already tells the type
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm<TokenParamForm>,
) -> Result<Response, OAuthError> {
    let client = authenticate(&state, &headers, form.client_id, form.client_secret).await?;
    let token = required(form.token, "token")?;
    state.tokens.revoke(&client, &token).await?;
    let mut response = ().into_response();
    no_store(&mut response);
    Ok(response)
}

#[tracing::instrument(skip_all)]
async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm<TokenParamForm>,
) -> Result<Response, OAuthError> {
    let client = authenticate(&state, &headers, form.client_id, form.client_secret).await?;
    if client.is_public() {
        // Introspection reveals token contents: only authenticated (confidential) clients.
        return Err(OAuthError::InvalidClient);
    }
    let token = required(form.token, "token")?;
    let mut response = Json(state.tokens.introspect(&token).await?).into_response();
    no_store(&mut response);
    Ok(response)
}
