//! Endpoints for orchestrators.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/health/live", get(live))
}

/// The process is up and serving HTTP.
async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "healthy" }))
}
