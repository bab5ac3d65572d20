//! The HTTP surface: one module per feature, each with its own `router()`, merged here
//! behind the shared middleware (request id, tracing, body limit).

mod account;
pub(crate) mod admin;
mod auth;
pub(crate) mod extract;
pub(crate) mod oauth;
pub(crate) mod openapi;
mod ops;
mod pages;
pub mod server;
pub mod tls;
pub(crate) use ops::{metrics_router, refresh_health};
mod wellknown;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::problem;
use crate::request::{REQUEST, RequestMeta};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route with its OpenAPI description.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(oauth::router())
        .merge(account::router())
        .merge(admin::router())
        .merge(wellknown::router())
        .merge(ops::router())
        .merge(pages::router())
        .routes(routes!(openapi::document))
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.server.max_body_bytes;
    let cors = cors(&state.config.server.cors_origins);
    let (routes, _) = documented_routes().split_for_parts();
    routes
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .fallback(not_found)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state, request_meta))
        .layer(
            ServiceBuilder::new()
                .map_request(drop_unusable_request_id)
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
        .layer(cors)
        // Headers every response carries unless its handler chose otherwise: no sniffing, no
        // framing, no referrer, no active content, HTTPS only, and nothing cached by default.
        .layer(default_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(default_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(default_header(header::REFERRER_POLICY, "no-referrer"))
        .layer(default_header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .layer(default_header(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        ))
        .layer(default_header(header::CACHE_CONTROL, "no-store"))
}

/// The longest request id taken from a client.
const MAX_REQUEST_ID_LEN: usize = 64;

/// A client's `x-request-id` is kept only when it is short and plain (`[A-Za-z0-9._-]`, at
/// most 64): it is echoed, logged on every line and stored in every audit record of the
/// request, so anything else is replaced by a generated id.
fn drop_unusable_request_id<B>(mut request: Request<B>) -> Request<B> {
    let usable = |v: &HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let headers = request.headers_mut();
    let values = headers.get_all(REQUEST_ID).iter().count();
    if values > 1 || headers.get(REQUEST_ID).is_some_and(|v| !usable(v)) {
        headers.remove(REQUEST_ID);
    }
    request
}

fn default_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// CORS for the configured origins; with none configured no CORS header is ever sent, so
/// browsers keep cross-origin pages out.
fn cors(origins: &crate::config::List) -> CorsLayer {
    let origins: Vec<&str> = origins.iter().collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
        .expose_headers([REQUEST_ID, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// Per matched route: the in-flight gauge, the request timeout, and the count and duration by
/// route template (never the raw path, which holds ids).
async fn observe(
    State(state): State<AppState>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    // A matched path is a shared string: cloning it allocates nothing.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let metrics = &state.metrics;
    metrics.http_in_flight.inc();
    let limit = state.config.server.request_timeout;
    let handled = crate::request::with_durable_audit(next.run(request));
    let response = match tokio::time::timeout(limit, handled).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(route, "request timed out");
            problem(StatusCode::SERVICE_UNAVAILABLE, "the request took too long; try again")
        }
    };
    metrics.http_in_flight.dec();
    count(metrics, method, route, &response);
    metrics
        .http_duration
        .with_label_values(&[method, route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: the standard ones by name, anything else as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
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
        ip: peer.map(|p| {
            auth::client_ip(p.0.ip(), headers, &state.config.server.trusted_proxies.0).to_string()
        }),
        user_agent: text(&axum::http::header::USER_AGENT).map(|ua| ua.chars().take(512).collect()),
    };
    REQUEST.scope(meta, next.run(request)).await
}

/// Unknown paths: the route layer does not run for them, so they are counted here.
async fn not_found(State(state): State<AppState>, method: Method) -> Response {
    let response = problem(StatusCode::NOT_FOUND, "no such resource");
    count(&state.metrics, method_label(&method), "unmatched", &response);
    response
}

/// Counts an answered request by method, route template and status.
fn count(metrics: &crate::metrics::Metrics, method: &str, route: &str, response: &Response) {
    metrics.http_requests.with_label_values(&[method, route, response.status().as_str()]).inc();
}
