//! Endpoints for operators and orchestrators: metrics, health, liveness and readiness.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::metrics::{HEALTH_CHECKS, Metrics};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(health))
        .routes(routes!(live))
        .routes(routes!(ready))
}

/// The Prometheus exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
    responses((status = 200, description = "Text exposition format 0.0.4", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    if state.config.server.metrics_listen.is_some() {
        return crate::error::problem(StatusCode::NOT_FOUND, "no such resource");
    }
    render_metrics(&state)
}

/// `/metrics` alone, for the separate metrics address.
pub fn metrics_router(state: AppState) -> axum::Router {
    let (router, _) = OpenApiRouter::new().routes(routes!(metrics_only)).split_for_parts();
    router.with_state(state)
}

/// The Prometheus exposition on the separate metrics address.
#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics (metrics address)",
    responses((status = 200, description = "Text exposition format 0.0.4", body = String, content_type = "text/plain")))]
async fn metrics_only(State(state): State<AppState>) -> Response {
    render_metrics(&state)
}

fn render_metrics(state: &AppState) -> Response {
    if let Some(pool) = state.storage.pool() {
        let gauge = &state.metrics.pool_connections;
        gauge.with_label_values(&["idle"]).set(i64::from(pool.idle));
        gauge.with_label_values(&["in_use"]).set(i64::from(pool.size.saturating_sub(pool.idle)));
        state.metrics.pool_max_connections.set(i64::from(pool.max));
    }
    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/health/live", tag = "operations", summary = "Liveness",
    responses((status = 200, description = "The process serves HTTP", body = Object)))]
async fn live() -> Json<Value> {
    Json(json!({ "status": "healthy" }))
}

/// Ready for traffic: the schema is current and storage answers.
#[utoipa::path(get, path = "/health/ready", tag = "operations", summary = "Readiness",
    responses((status = 200, description = "Schema current and storage answering", body = Object), (status = 503, description = "Not ready", body = Object)))]
async fn ready(State(state): State<AppState>) -> Response {
    // Checked at most once a second, like `/health`, however often it is polled.
    let mut cache = state.ready_cache.lock().await;
    let body = match cache.as_ref() {
        Some((at, body)) if at.elapsed() < HEALTH_TTL => body.clone(),
        _ => {
            let storage = check_storage(&state).await;
            let schema = state.storage.migration_status().await;
            let current =
                schema.as_ref().is_ok_and(|s| s.iter().all(|m| m.applied && m.checksum_ok));
            let ready = storage.status == Status::Healthy && current;
            let body = json!({
                "status": if ready { "ready" } else { "not_ready" },
                "storage": storage,
                "schema_current": current,
            });
            *cache = Some((Instant::now(), body.clone()));
            body
        }
    };
    drop(cache);
    let ready = body["status"] == "ready";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// A check's verdict; the order is from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy = 0,
    Unknown = 1,
    Degraded = 2,
    Unhealthy = 3,
}

#[derive(Debug, Serialize)]
pub struct Check {
    status: Status,
    latency_ms: Option<f64>,
    #[serde(flatten)]
    details: serde_json::Map<String, Value>,
}

impl Check {
    fn new(status: Status, latency: Option<Duration>) -> Self {
        Self {
            status,
            latency_ms: latency.map(|l| (l.as_secs_f64() * 1e6).round() / 1e3),
            details: serde_json::Map::new(),
        }
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// How long a check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// A round trip slower than this is degraded.
const SLOW: Duration = Duration::from_millis(250);

/// Runs a probe with a timeout: its latency and, on failure, what anyone may be told. The
/// health endpoints answer without authentication, so the error itself (which may name
/// hosts, users or databases) goes only to the log.
async fn timed<T, E: std::fmt::Display>(
    probe: impl Future<Output = Result<T, E>>,
) -> (Duration, Result<T, String>) {
    let started = Instant::now();
    let result = match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a health check failed");
            Err("the check failed; the server log has the cause".to_owned())
        }
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    };
    (started.elapsed(), result)
}

fn round_trip(latency: Duration, result: Result<(), String>) -> Check {
    match result {
        Ok(()) if latency > SLOW => {
            Check::new(Status::Degraded, Some(latency)).with("error", "slow")
        }
        Ok(()) => Check::new(Status::Healthy, Some(latency)),
        Err(e) => Check::new(Status::Unhealthy, Some(latency)).with("error", e),
    }
}

async fn check_storage(state: &AppState) -> Check {
    let (latency, result) = timed(state.storage.ping()).await;
    round_trip(latency, result).with("backend", state.storage.backend())
}

async fn check_cache(state: &AppState) -> Check {
    let Some(shared) = &state.shared else {
        return Check::new(Status::Unknown, None).with("detail", "not configured");
    };
    let (latency, result) = timed(shared.ping()).await;
    round_trip(latency, result).with("backend", "redis")
}

/// The active key must exist; a rotation overdue by more than a day is degraded.
fn check_keys(state: &AppState) -> Check {
    let Some(signer) = state.keys.signer() else {
        return Check::new(Status::Unhealthy, None).with("error", "no active signing key");
    };
    let age_ms = state.clock.now_ms() - signer.created_at;
    let interval_ms = state.config.keys.rotation_interval.as_millis() as i64;
    let overdue = interval_ms > 0 && age_ms > interval_ms + 24 * 3600 * 1000;
    let status = if overdue { Status::Degraded } else { Status::Healthy };
    let check = Check::new(status, None)
        .with("active_kid", signer.kid.clone())
        .with("algorithm", signer.alg.as_str())
        .with("age_seconds", age_ms / 1000);
    if overdue { check.with("error", "key rotation is overdue") } else { check }
}

/// Degraded when deliveries pile up or most recent attempts fail.
async fn check_webhooks(state: &AppState, metrics: &Metrics) -> Check {
    let (latency, result) = timed(state.storage.webhook_backlog()).await;
    let backlog = match result {
        Ok(b) => b,
        Err(e) => return Check::new(Status::Unhealthy, Some(latency)).with("error", e),
    };
    metrics.webhook_backlog.with_label_values(&["pending"]).set(backlog.pending as i64);
    metrics.webhook_backlog.with_label_values(&["failed"]).set(backlog.failed as i64);
    let count = |outcome: &str| metrics.webhook_deliveries.with_label_values(&[outcome]).get();
    let (delivered, retried, failed) = (count("delivered"), count("retry"), count("failed"));
    let attempts = delivered + retried + failed;
    let failure_rate =
        if attempts == 0 { 0.0 } else { (retried + failed) as f64 / attempts as f64 };
    let degraded = backlog.pending > 1000 || (attempts >= 10 && failure_rate > 0.5);
    Check::new(if degraded { Status::Degraded } else { Status::Healthy }, Some(latency))
        .with("pending", backlog.pending)
        .with("failed", backlog.failed)
        .with("failure_rate", (failure_rate * 1000.0).round() / 1000.0)
}

/// How long a `/health` answer is reused.
const HEALTH_TTL: Duration = Duration::from_secs(1);

/// Every dependency, checked at most once a second (concurrent callers wait for the one
/// running check); the overall status is the worst, and 503 when unhealthy.
#[utoipa::path(get, path = "/health", tag = "operations", summary = "Health of every dependency",
    responses((status = 200, description = "Healthy or degraded", body = Object), (status = 503, description = "Unhealthy", body = Object)))]
async fn health(State(state): State<AppState>) -> Response {
    let mut cache = state.health_cache.lock().await;
    let body = match cache.as_ref() {
        Some((at, body)) if at.elapsed() < HEALTH_TTL => body.clone(),
        _ => {
            let body = check_health(&state).await;
            *cache = Some((Instant::now(), body.clone()));
            body
        }
    };
    drop(cache);
    let unhealthy = body["status"] == json!(Status::Unhealthy);
    let code = if unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let mut response = (code, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// Runs every check now, records the verdicts in the health gauges and stores the answer for
/// `/health` (the background sampler calls this every 15 s, so alerts see health even when
/// nobody polls it).
pub async fn refresh_health(state: &AppState) -> Value {
    let body = check_health(state).await;
    *state.health_cache.lock().await = Some((Instant::now(), body.clone()));
    body
}

async fn check_health(state: &AppState) -> Value {
    let (storage, cache, webhooks) = tokio::join!(
        check_storage(state),
        check_cache(state),
        check_webhooks(state, &state.metrics)
    );
    let keys = check_keys(state);
    let overall = [&storage, &cache, &keys, &webhooks]
        .iter()
        .map(|c| c.status)
        .filter(|s| *s != Status::Unknown)
        .max()
        .unwrap_or(Status::Healthy);
    let gauge = &state.metrics.health;
    for (name, check) in HEALTH_CHECKS.into_iter().zip([&storage, &cache, &keys, &webhooks]) {
        gauge.with_label_values(&[name]).set(check.status as i64);
    }
    gauge.with_label_values(&["overall"]).set(overall as i64);
    json!({
        "status": overall,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "checks": { "storage": storage, "cache": cache, "signing_keys": keys, "webhooks": webhooks },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_check_tells_nothing_of_its_cause() {
        let (_, result) =
            timed(async { Err::<(), _>("password authentication failed for user \"atoms\"") })
                .await;
        let shown = result.expect_err("failed");
        assert!(!shown.contains("password") && !shown.contains("atoms"), "{shown}");
    }
}
