//! The end-user API: a user's own sessions and devices, logout and userinfo, authenticated
//! by the user's bearer access token. Another user's ids answer 404, as unknown ones do.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::{AccountUser, UserToken};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::ids::{DeviceId, SessionId};
use crate::storage::revoke_reason;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions, end_sessions))
        .routes(routes!(get_session, end_session))
        .routes(routes!(logout))
        .routes(routes!(list_devices))
        .routes(routes!(update_device, delete_device))
        .routes(routes!(userinfo))
}

const NO_SESSION: ApiError = ApiError::NotFound("no such session");
const NO_DEVICE: ApiError = ApiError::NotFound("no such device");

#[utoipa::path(get, path = "/auth/sessions", tag = "account", summary = "The user's active sessions", security(("bearer" = [])),
    responses((status = 200, description = "`{sessions: [...]}`, the current one marked", body = Object), crate::http::openapi::UserErrors))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn list_sessions(
    State(state): State<AppState>,
    AccountUser(user): AccountUser,
) -> Result<Response, ApiError> {
    let sessions = state.sessions.list(user.user(), Some(user.session())).await?;
    Ok(Json(json!({ "sessions": sessions })).into_response())
}

#[utoipa::path(get, path = "/auth/sessions/{id}", tag = "account", summary = "One of the user's sessions", params(("id" = String, Path, description = "Session id")), security(("bearer" = [])),
    responses((status = 200, description = "The session", body = crate::domain::sessions::SessionView), (status = 404, description = "No such session of this user", body = crate::http::openapi::Problem, content_type = "application/problem+json"), crate::http::openapi::UserErrors))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn get_session(
    State(state): State<AppState>,
    AccountUser(user): AccountUser,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let session =
        state.sessions.get(user.user(), SessionId::new(&id), Some(user.session())).await?;
    Ok(Json(session.ok_or(NO_SESSION)?).into_response())
}

#[utoipa::path(delete, path = "/auth/sessions/{id}", tag = "account", summary = "End one of the user's sessions", params(("id" = String, Path, description = "Session id")), security(("bearer" = [])),
    responses((status = 204, description = "Ended"), (status = 404, description = "No such session of this user", body = crate::http::openapi::Problem, content_type = "application/problem+json"), crate::http::openapi::UserErrors))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn end_session(
    State(state): State<AppState>,
    AccountUser(user): AccountUser,
    ApiPath(id): ApiPath,
) -> Result<StatusCode, ApiError> {
    if state.sessions.end(user.user(), SessionId::new(&id), revoke_reason::REVOKED_BY_USER).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(NO_SESSION)
    }
}

#[derive(Deserialize)]
struct EndSessionsQuery {
    #[serde(default)]
    except_current: bool,
}

#[utoipa::path(delete, path = "/auth/sessions", tag = "account", summary = "End all the user's sessions", params(("except_current" = Option<bool>, Query, description = "Keep the session of this token")), security(("bearer" = [])),
    responses((status = 200, description = "`{revoked: n}`", body = Object), (status = 400, description = "Bad query", body = crate::http::openapi::Problem, content_type = "application/problem+json"), crate::http::openapi::UserErrors))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn end_sessions(
    State(state): State<AppState>,
    AccountUser(user): AccountUser,
    ApiQuery(query): ApiQuery<EndSessionsQuery>,
) -> Result<Response, ApiError> {
    let except = query.except_current.then_some(user.session());
    let actor = format!("user:{}", user.user_id);
    let ended =
        state.sessions.end_all(user.user(), except, revoke_reason::REVOKED_BY_USER, &actor).await?;
    Ok(Json(json!({ "revoked": ended })).into_response())
}

#[utoipa::path(post, path = "/auth/logout", tag = "account", summary = "End the session of this token", security(("bearer" = [])),
    responses((status = 204, description = "Ended"), crate::http::openapi::UserErrors))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn logout(State(state): State<AppState>, user: UserToken) -> Result<StatusCode, ApiError> {
    state.sessions.end(user.user(), user.session(), revoke_reason::LOGOUT).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/auth/devices", tag = "account", summary = "The user's devices", security(("bearer" = [])),
    responses((status = 200, description = "`{devices: [...]}`", body = Object), crate::http::openapi::UserErrors))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn list_devices(
    State(state): State<AppState>,
    AccountUser(user): AccountUser,
) -> Result<Response, ApiError> {
    let devices = state.sessions.devices(&user.user_id).await?;
    Ok(Json(json!({ "devices": devices })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DevicePatch {
    name: Option<String>,
    trusted: Option<bool>,
}

#[utoipa::path(patch, path = "/auth/devices/{id}", tag = "account", summary = "Rename and/or (un)trust a device", params(("id" = String, Path, description = "Device id")), request_body = DevicePatch, security(("bearer" = [])),
    responses((status = 200, description = "The device", body = crate::domain::sessions::DeviceView), (status = 400, description = "Bad body", body = crate::http::openapi::Problem, content_type = "application/problem+json"), (status = 404, description = "No such device of this user", body = crate::http::openapi::Problem, content_type = "application/problem+json"), crate::http::openapi::UserErrors))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn update_device(
    State(state): State<AppState>,
    AccountUser(user): AccountUser,
    ApiPath(id): ApiPath,
    ApiJson(patch): ApiJson<DevicePatch>,
) -> Result<Response, ApiError> {
    let name = patch.name.as_deref().map(str::trim);
    if name.is_some_and(|n| n.is_empty() || n.chars().count() > 100 || n.contains('\0')) {
        return Err(ApiError::BadRequest("name must have 1 to 100 characters".into()));
    }
    if name.is_none() && patch.trusted.is_none() {
        return Err(ApiError::BadRequest("nothing to change: give name and/or trusted".into()));
    }
    let device =
        state.sessions.update_device(user.user(), DeviceId::new(&id), name, patch.trusted).await?;
    Ok(Json(device.ok_or(NO_DEVICE)?).into_response())
}

#[utoipa::path(delete, path = "/auth/devices/{id}", tag = "account", summary = "Forget a device and end its sessions", params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "`{revoked_sessions: n}`", body = Object), (status = 404, description = "No such device of this user", body = crate::http::openapi::Problem, content_type = "application/problem+json"), crate::http::openapi::UserErrors))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn delete_device(
    State(state): State<AppState>,
    AccountUser(user): AccountUser,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let ended =
        state.sessions.delete_device(user.user(), DeviceId::new(&id)).await?.ok_or(NO_DEVICE)?;
    Ok(Json(json!({ "revoked_sessions": ended })).into_response())
}

#[utoipa::path(get, path = "/auth/userinfo", tag = "account", summary = "Who the token's user is", security(("bearer" = [])),
    responses((status = 200, description = "`sub`, `preferred_username`, ...", body = Object), crate::http::openapi::UserErrors))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn userinfo(State(state): State<AppState>, user: UserToken) -> Result<Response, ApiError> {
    let found = state.accounts.user(&user.user_id).await?;
    let found = found.ok_or(ApiError::Unauthorized("the user no longer exists"))?;
    Ok(Json(json!({
        "sub": found.id,
        "preferred_username": found.username,
        "sid": user.session_id,
        "client_id": user.claims.client_id,
        "scope": user.claims.scope,
    }))
    .into_response())
}
