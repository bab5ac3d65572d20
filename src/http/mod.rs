//! The HTTP surface: one module per feature, each with its own `router()`, merged here
//! behind the shared middleware (request id, tracing, body limit).

mod account;
mod admin;
mod auth;
mod extract;
mod oauth;
mod ops;
mod wellknown;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::AppState;
use crate::domain::audit::{REQUEST, RequestMeta};
use crate::error::problem;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .merge(oauth::router())
        .merge(account::router())
        .merge(admin::router())
        .merge(wellknown::router())
        .merge(ops::router())
        .fallback(not_found)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state, request_meta))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request<_>| {
                            let id = req
                                .headers()
                                .get(REQUEST_ID)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default();
                            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                        })
                        .on_response(|res: &Response, latency: Duration, _: &tracing::Span| {
                            tracing::debug!(status = res.status().as_u16(), ?latency, "response");
                        }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}

/// Makes the request's id, client address and user agent available to the audit records
/// the request causes.
async fn request_meta(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let text =
        |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let peer = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
    let meta = RequestMeta {
        request_id: text(&REQUEST_ID),
        ip: peer.map(|p| auth::client_ip(p.0.ip(), headers, &state.trusted_proxies).to_string()),
        user_agent: text(&axum::http::header::USER_AGENT).map(|ua| ua.chars().take(512).collect()),
    };
    REQUEST.scope(meta, next.run(request)).await
}

async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "no such resource")
}
