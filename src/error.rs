//! One error type per boundary: [`OAuthError`] for the OAuth endpoints (RFC 6749 §5.2 codes)
//! and [`ApiError`] for everything else (RFC 9457 problem details). Storage and internal
//! failures become an opaque 500 whose cause is logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::client_documents::DocumentError;
use crate::domain::ratelimit::Verdict;
use crate::storage::StorageError;

/// Errors of the OAuth endpoints.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("client authentication failed")]
    InvalidClient,
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("{0}")]
    UnauthorizedClient(&'static str),
    #[error("the grant type is not supported")]
    UnsupportedGrantType,
    #[error("{0}")]
    InvalidScope(String),
    /// A resource (RFC 8707 §2) that is unknown, malformed or not for this client.
    #[error("{0}")]
    InvalidTarget(String),
    /// Dynamic registration (RFC 7591 §3.2.2).
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
    /// A bearer token that is missing or wrong (RFC 6750 §3.1).
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("too many requests; retry later")]
    RateLimited(Verdict),
    /// The server is saturated (password hashing): retry after a second.
    #[error("the server is busy; retry later")]
    Overloaded,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl OAuthError {
    /// The RFC 6749 error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::PayloadTooLarge => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::InvalidTarget(_) => "invalid_target",
            Self::InvalidRedirectUri(_) => "invalid_redirect_uri",
            Self::InvalidClientMetadata(_) => "invalid_client_metadata",
            Self::InvalidToken(_) => "invalid_token",
            Self::RateLimited(_) | Self::Overloaded => "temporarily_unavailable",
            Self::Storage(e) if e.is_unavailable() => "temporarily_unavailable",
            Self::Storage(_) | Self::Internal(_) => "server_error",
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidClient | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The `RateLimit-*` headers of a verdict (the tightest limit), and `Retry-After` when it
/// refused the request.
pub fn rate_limit_headers(response: &mut Response, v: &Verdict) {
    let headers = response.headers_mut();
    let number = |n: u64| HeaderValue::from(n);
    headers.insert("ratelimit-limit", number(u64::from(v.limit)));
    headers.insert("ratelimit-remaining", number(u64::from(v.remaining)));
    headers.insert("ratelimit-reset", number(v.reset_secs));
    if let Some(retry) = v.retry_after_secs {
        headers.insert(header::RETRY_AFTER, number(retry));
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache`, as RFC 6749 §5.1 asks of token answers.
pub fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let description = match &self {
            Self::Storage(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "storage unavailable");
                UNAVAILABLE.to_owned()
            }
            Self::Storage(e) => {
                tracing::error!(error = %e, "storage error");
                "internal error".to_owned()
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let body = json!({ "error": self.code(), "error_description": description });
        let mut response = (self.status_code(), Json(body)).into_response();
        no_store(&mut response);
        if let Self::RateLimited(verdict) = &self {
            rate_limit_headers(&mut response, verdict);
        }
        if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, Self::InvalidToken(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="atoms-auth", error="invalid_token""#),
            );
        }
        if matches!(self, Self::InvalidClient) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="atoms-auth", error="invalid_client""#),
            );
        }
        response
    }
}

impl From<crate::domain::registration::RegistrationError> for OAuthError {
    fn from(e: crate::domain::registration::RegistrationError) -> Self {
        use crate::domain::registration::RegistrationError;
        match e {
            RegistrationError::InvalidRedirectUri(why) => Self::InvalidRedirectUri(why),
            RegistrationError::InvalidClientMetadata(why) => Self::InvalidClientMetadata(why),
            RegistrationError::Storage(e) => Self::Storage(e),
        }
    }
}

impl From<crate::domain::tokens::TokenError> for OAuthError {
    fn from(e: crate::domain::tokens::TokenError) -> Self {
        use crate::domain::tokens::TokenError;
        match e {
            TokenError::InvalidClient => Self::InvalidClient,
            TokenError::InvalidGrant(why) => Self::InvalidGrant(why),
            TokenError::UnauthorizedClient(why) => Self::UnauthorizedClient(why),
            TokenError::InvalidScope(why) => Self::InvalidScope(why),
            TokenError::InvalidTarget(why) => Self::InvalidTarget(why),
            TokenError::ClientDocument(DocumentError::Storage(e)) => {
                Self::Internal(anyhow::anyhow!("storage: {e}"))
            }
            TokenError::ClientDocument(e) => {
                tracing::info!(error = %e, "client metadata document refused");
                Self::InvalidClient
            }
            TokenError::Overloaded(_) => Self::Overloaded,
            TokenError::Storage(e) => Self::Storage(e),
            TokenError::Internal(e) => Self::Internal(e),
        }
    }
}

/// Errors outside the OAuth endpoints, answered as `application/problem+json`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::domain::accounts::AccountError> for ApiError {
    fn from(e: crate::domain::accounts::AccountError) -> Self {
        use crate::domain::accounts::AccountError;
        match e {
            AccountError::Invalid(why) => Self::BadRequest(why),
            AccountError::Storage(e) => Self::Storage(e),
            AccountError::Internal(e) => Self::Internal(e),
        }
    }
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Storage(StorageError::Conflict(_)) => StatusCode::CONFLICT,
            Self::Storage(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let detail = match &self {
            Self::Storage(StorageError::Conflict(what)) => format!("{what} already exists"),
            Self::Storage(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "storage unavailable");
                UNAVAILABLE.to_owned()
            }
            Self::Storage(e) => {
                tracing::error!(error = %e, "storage error");
                "internal error".to_owned()
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = problem(status, &detail);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        match self {
            Self::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="atoms-auth", error="invalid_token""#),
                );
            }
            Self::Forbidden(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        r#"Bearer realm="atoms-auth", error="insufficient_scope""#,
                    ),
                );
            }
            _ => {}
        }
        response
    }
}

/// What a request hears while the storage cannot be reached.
const UNAVAILABLE: &str = "the storage is unavailable; retry shortly";

/// An RFC 9457 problem response, with the id of the request it answers.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    let request_id = crate::request::REQUEST.try_with(|r| r.request_id.clone()).ok().flatten();
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "request_id": request_id,
    });
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}
