//! The OAuth endpoints: token (RFC 6749), revocation (RFC 7009), introspection (RFC 7662).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::ClientIp;
use super::extract::{OAuthForm, client_credentials};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::domain::devices::DeviceHints;
use crate::domain::ratelimit::{Scope, Verdict, tightest};
use crate::domain::secrets::Secret;
use crate::domain::tokens::GRANT_TYPES;
use crate::error::{OAuthError, no_store, rate_limit_headers};
use crate::net::address_key;
use crate::storage::Client;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(revoke))
        .routes(routes!(introspect))
        .routes(routes!(register))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    /// The `authorization_code` grant's code, the redirect URI it was sent to, and the PKCE
    /// verifier.
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    scope: Option<String>,
    /// The resource (RFC 8707) the access token is for: its `aud`. One per request.
    resource: Option<String>,
    device_id: Option<String>,
    device_name: Option<String>,
    device_platform: Option<String>,
}

/// Free text a client sends about its device, bounded so no record grows without limit.
fn bounded(value: Option<String>, max_chars: usize) -> Option<String> {
    value.map(|v| v.trim().chars().take(max_chars).collect::<String>()).filter(|v| !v.is_empty())
}

fn required(value: Option<String>, name: &str) -> Result<String, OAuthError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required")))
}

/// Rate-limits and authenticates the client. The address's limit is charged first, before
/// the secret is checked, so guessing secrets is limited; the client's limit only once the
/// client has authenticated, so nobody can spend another client's allowance by claiming its
/// id. A public client has no secret to prove its id with, so its limit counts per address.
async fn authenticate(
    state: &AppState,
    route: &'static str,
    ip: Option<&str>,
    headers: &HeaderMap,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<(Client, Option<Verdict>), OAuthError> {
    let (id, secret) = client_credentials(headers, client_id, client_secret)?;
    let address = ip.map(address_key);
    let by_address = match &address {
        Some(address) => limited(state, route, Scope::Ip, address).await?,
        None => None,
    };
    let client = state.tokens.authenticate_client(&id, secret).await?;
    let key = match (&address, client.is_public()) {
        (Some(address), true) => format!("{id}|{address}"),
        _ => id,
    };
    let by_client = limited(state, route, Scope::Client, &key).await?;
    Ok((client, tightest(by_address, by_client)))
}

/// Charges one limit; a refusal is the error.
pub(super) async fn limited(
    state: &AppState,
    route: &'static str,
    scope: Scope,
    key: &str,
) -> Result<Option<Verdict>, OAuthError> {
    let verdict = state.limits.check(route, scope, key).await?;
    if let Some(v) = verdict.filter(|v| v.retry_after_secs.is_some()) {
        state.metrics.rate_limited.with_label_values(&[route, v.scope.as_str()]).inc();
        return Err(OAuthError::RateLimited(v));
    }
    Ok(verdict)
}

/// A successful OAuth answer: never cached, with the rate-limit state.
fn answer(mut response: Response, verdict: Option<Verdict>) -> Response {
    no_store(&mut response);
    if let Some(v) = verdict {
        rate_limit_headers(&mut response, &v);
    }
    response
}

#[utoipa::path(post, path = "/auth/token", tag = "oauth", summary = "Issue tokens: authorization_code (with PKCE), password, client_credentials or refresh_token grant", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"), security(("client" = [])),
    responses((status = 200, description = "Tokens", body = crate::domain::tokens::TokenResponse, headers(("ratelimit-limit" = u32, description = "Burst of the tightest limit"), ("ratelimit-remaining" = u32), ("ratelimit-reset" = u64, description = "Seconds until the allowance is whole"))), crate::http::openapi::OAuthErrors))]
#[tracing::instrument(skip_all, fields(grant_type))]
async fn token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm<TokenForm>,
) -> Result<Response, OAuthError> {
    let grant_type = required(form.grant_type, "grant_type")?;
    tracing::Span::current().record("grant_type", grant_type.as_str());
    if !GRANT_TYPES.contains(&grant_type.as_str()) {
        return Err(OAuthError::UnsupportedGrantType);
    }
    let (client, verdict) = authenticate(
        &state,
        "/auth/token",
        ip.as_deref(),
        &headers,
        form.client_id,
        form.client_secret,
    )
    .await?;
    let scope = form.scope.as_deref();
    let resource = form.resource.as_deref().filter(|r| !r.is_empty());
    let tokens = &state.tokens;
    let tokens_issued = match grant_type.as_str() {
        "password" => {
            let username = required(form.username, "username")?;
            let password = required(form.password, "password")?;
            let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
            let device = DeviceHints {
                device_id: bounded(form.device_id, 200),
                name: bounded(form.device_name, 100),
                platform: bounded(form.device_platform, 50),
                user_agent: bounded(user_agent.map(str::to_owned), 512),
                ip,
            };
            tokens.password_grant(&client, &username, password, scope, resource, device).await?
        }
        "client_credentials" => tokens.client_credentials_grant(&client, scope, resource).await?,
        "authorization_code" => {
            let code = Secret::from_client(required(form.code, "code")?);
            let verifier = required(form.code_verifier, "code_verifier")?;
            let redirect_uri = form.redirect_uri.as_deref().filter(|u| !u.is_empty());
            tokens
                .authorization_code_grant(&client, &code, redirect_uri, &verifier, resource)
                .await?
        }
        _ => {
            let refresh = Secret::from_client(required(form.refresh_token, "refresh_token")?);
            tokens.refresh_grant(&client, &refresh, scope, resource, ip.as_deref()).await?
        }
    };
    state.metrics.tokens_issued.with_label_values(&[grant_type.as_str()]).inc();
    Ok(answer(Json(tokens_issued).into_response(), verdict))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct TokenParamForm {
    token: Option<String>,
    #[allow(dead_code)] // accepted per RFC 7009/7662; the token format already tells the type
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[utoipa::path(post, path = "/auth/revoke", tag = "oauth", summary = "Revoke a refresh or access token (RFC 7009)", request_body(content = TokenParamForm, content_type = "application/x-www-form-urlencoded"), security(("client" = [])),
    responses((status = 200, description = "Revoked, or the token was unknown", headers(("ratelimit-limit" = u32, description = "Burst of the tightest limit"), ("ratelimit-remaining" = u32), ("ratelimit-reset" = u64, description = "Seconds until the allowance is whole"))), crate::http::openapi::OAuthErrors))]
#[tracing::instrument(skip_all)]
async fn revoke(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm<TokenParamForm>,
) -> Result<Response, OAuthError> {
    let (client, verdict) = authenticate(
        &state,
        "/auth/revoke",
        ip.as_deref(),
        &headers,
        form.client_id,
        form.client_secret,
    )
    .await?;
    let token = required(form.token, "token")?;
    state.tokens.revoke(&client, &token).await?;
    Ok(answer(().into_response(), verdict))
}

#[utoipa::path(post, path = "/auth/introspect", tag = "oauth", summary = "Introspect a token (RFC 7662; confidential clients)", request_body(content = TokenParamForm, content_type = "application/x-www-form-urlencoded"), security(("client" = [])),
    responses((status = 200, description = "`active` and, when active, the token's claims", body = Object, headers(("ratelimit-limit" = u32, description = "Burst of the tightest limit"), ("ratelimit-remaining" = u32), ("ratelimit-reset" = u64, description = "Seconds until the allowance is whole"))), crate::http::openapi::OAuthErrors))]
#[tracing::instrument(skip_all)]
async fn introspect(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm<TokenParamForm>,
) -> Result<Response, OAuthError> {
    let (client, verdict) = authenticate(
        &state,
        "/auth/introspect",
        ip.as_deref(),
        &headers,
        form.client_id,
        form.client_secret,
    )
    .await?;
    if client.is_public() {
        // Introspection reveals token contents: only authenticated (confidential) clients.
        return Err(OAuthError::InvalidClient);
    }
    let token = required(form.token, "token")?;
    Ok(answer(Json(state.tokens.introspect(&client, &token).await?).into_response(), verdict))
}

/// Client metadata (RFC 7591 §2): the fields read; others are ignored.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the body; the handler reads it as JSON to report wrong types
struct ClientMetadata {
    redirect_uris: Option<Vec<String>>,
    /// `none` (public) or `client_secret_basic`.
    token_endpoint_auth_method: Option<String>,
    /// `authorization_code` and/or `refresh_token`.
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    client_name: Option<String>,
    /// Space separated; among the metadata's `scopes_supported`.
    scope: Option<String>,
    /// `native` (loopback or private-use redirect URIs) or `web` (https).
    application_type: Option<String>,
}

#[utoipa::path(post, path = "/auth/register", tag = "oauth", summary = "Dynamic client registration (RFC 7591), when the registration policy allows it", request_body(content = ClientMetadata, content_type = "application/json"),
    responses((status = 201, description = "The client: `client_id`, `client_secret` (confidential only), `client_id_issued_at` and its metadata", body = Object), (status = 400, description = "`invalid_redirect_uri` or `invalid_client_metadata`", body = Object), (status = 401, description = "The initial access token is missing or wrong (`token` policy)", body = Object), (status = 404, description = "Registration is off"), (status = 429, description = "Too many registrations from this address", body = Object)))]
#[tracing::instrument(skip_all)]
async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    use crate::config::RegistrationPolicy;
    let settings = &state.config.registration;
    if settings.policy == RegistrationPolicy::Off {
        let off = "client registration is not enabled on this server";
        return Ok(crate::error::problem(axum::http::StatusCode::NOT_FOUND, off));
    }
    let verdict = match ip.as_deref().map(address_key) {
        Some(address) => limited(&state, "/auth/register", Scope::Ip, &address).await?,
        None => None,
    };
    if settings.policy == RegistrationPolicy::Token {
        use secrecy::ExposeSecret;
        use subtle::ConstantTimeEq;
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(OAuthError::InvalidToken("an initial access token is required"))?;
        let expected = settings.initial_access_token.as_ref().map(|t| t.expose_secret());
        let matches =
            expected.is_some_and(|t| bool::from(t.as_bytes().ct_eq(presented.trim().as_bytes())));
        if !matches {
            return Err(OAuthError::InvalidToken("the initial access token is wrong"));
        }
    }
    let metadata: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        OAuthError::InvalidClientMetadata(format!("the body is not JSON client metadata: {e}"))
    })?;
    let answer = state.accounts.register_dynamic(&metadata).await?;
    let response = (axum::http::StatusCode::CREATED, Json(answer)).into_response();
    Ok(self::answer(response, verdict))
}
