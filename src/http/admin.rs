//! The admin API, authenticated by an access token with the admin scope.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::auth::AdminToken;
use super::extract::ApiPath;
use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/users/{id}/revoke", post(revoke_user))
}

/// Ends every session of the user: their refresh families and access tokens stop working.
#[tracing::instrument(skip_all, fields(admin = %admin.0.sub, user_id = %id))]
async fn revoke_user(
    State(state): State<AppState>,
    admin: AdminToken,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let ended = state.sessions.revoke_user(&id).await?.ok_or(ApiError::NotFound("no such user"))?;
    Ok(Json(json!({ "user_id": id, "revoked_sessions": ended })).into_response())
}
