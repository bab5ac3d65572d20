//! Extractors that answer malformed input in the endpoint's own error format instead of
//! axum's plain-text rejections, and the OAuth client credentials of a request.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;

use crate::domain::secrets::Secret;
use crate::error::{ApiError, OAuthError};

/// A form body whose rejection is an OAuth `invalid_request` (413 when too large). Values
/// with a NUL character are refused here, once, since no backend can store them as text.
pub struct OAuthForm<T>(pub T);

impl<T, S> FromRequest<S> for OAuthForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(OAuthError::InvalidRequest(
                "the body must be application/x-www-form-urlencoded".into(),
            ));
        }
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                OAuthError::PayloadTooLarge
            } else {
                OAuthError::InvalidRequest(rejection.body_text())
            }
        })?;
        parse_form(&body).map(Self)
    }
}

/// A form body's fields as `T`, by the rules of [`OAuthForm`].
pub(crate) fn parse_form<T: DeserializeOwned>(body: &[u8]) -> Result<T, OAuthError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| OAuthError::InvalidRequest(format!("malformed form: {e}")))?;
    if pairs.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
        return Err(OAuthError::InvalidRequest("form values must not contain NUL".into()));
    }
    // RFC 8707 allows several resources in one request; tokens here have one audience.
    if pairs.iter().filter(|(k, _)| k == "resource").count() > 1 {
        return Err(OAuthError::InvalidTarget("one resource per request".into()));
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|e| OAuthError::InvalidRequest(format!("malformed form: {e}")))
}

/// A JSON body whose rejection is a problem+json 4xx. A string with a NUL character
/// (`\u0000`), anywhere in the document, is refused here, once: PostgreSQL cannot store it
/// as text, and no name, URL or secret needs one.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::PayloadTooLarge);
            }
            Err(r) => return Err(ApiError::BadRequest(r.body_text())),
        };
        if has_nul(&value) {
            return Err(ApiError::BadRequest("strings must not contain NUL".into()));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
    }
}

/// Whether any string (or key) of a JSON document holds a NUL character.
fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// A path parameter (an id) whose rejection is a problem+json 400. Ids with a NUL are
/// refused, since no backend can look them up as text.
pub struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::BadRequest(r.body_text()))?;
        if id.contains('\0') {
            return Err(ApiError::BadRequest("ids must not contain NUL".into()));
        }
        Ok(Self(id))
    }
}

/// A query string whose rejection is a problem+json 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|r| ApiError::BadRequest(r.body_text()))
    }
}

/// The client id and secret of a request, from HTTP Basic (RFC 6749 §2.3.1) or the form
/// body; using both is an error.
pub fn client_credentials(
    headers: &HeaderMap,
    form_id: Option<String>,
    form_secret: Option<String>,
) -> Result<(String, Option<Secret>), OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        let id = form_id.filter(|id| !id.is_empty()).ok_or(OAuthError::InvalidClient)?;
        return Ok((id, form_secret.map(Secret::from_client)));
    };
    let value = value.to_str().map_err(|_| OAuthError::InvalidClient)?;
    let (scheme, encoded) = value.split_once(' ').ok_or(OAuthError::InvalidClient)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidClient);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| OAuthError::InvalidClient)?;
    let decoded = String::from_utf8(decoded).map_err(|_| OAuthError::InvalidClient)?;
    let (id, secret) = decoded.split_once(':').ok_or(OAuthError::InvalidClient)?;
    let (id, secret) = (form_decode(id)?, form_decode(secret)?);
    if id.contains('\0') || secret.contains('\0') {
        return Err(OAuthError::InvalidClient);
    }
    if form_secret.is_some() {
        return Err(OAuthError::InvalidRequest(
            "use one client authentication method, not two".into(),
        ));
    }
    if form_id.is_some_and(|form_id| form_id != id) {
        return Err(OAuthError::InvalidRequest(
            "client_id differs from the authenticated client".into(),
        ));
    }
    Ok((id, Some(Secret::from_client(secret))))
}

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
fn form_decode(value: &str) -> Result<String, OAuthError> {
    percent_encoding::percent_decode_str(&value.replace('+', " "))
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| OAuthError::InvalidClient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let encoded = format!("Basic {}", STANDARD.encode(value));
        headers.insert(header::AUTHORIZATION, encoded.parse().expect("header"));
        headers
    }

    #[test]
    fn nul_is_found_anywhere_in_a_document() {
        let nested = serde_json::json!({ "a": [1, { "b": "x\u{0}y" }] });
        assert!(has_nul(&nested));
        assert!(has_nul(&serde_json::json!({ "k\u{0}": 1 })));
        assert!(!has_nul(&serde_json::json!({ "a": ["b", 1, null, true] })));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let (id, secret) =
            client_credentials(&basic("my%20app:s%3Acret+x"), None, None).expect("ok");
        assert_eq!(id, "my app");
        assert_eq!(secret.map(|s| s.expose().to_owned()).as_deref(), Some("s:cret x"));
    }

    #[test]
    fn two_authentication_methods_are_refused() {
        let err = client_credentials(&basic("a:b"), None, Some("b".into()));
        assert!(matches!(err, Err(OAuthError::InvalidRequest(_))));
    }

    #[test]
    fn missing_client_is_invalid_client() {
        assert!(matches!(
            client_credentials(&HeaderMap::new(), None, None),
            Err(OAuthError::InvalidClient)
        ));
        assert!(matches!(
            client_credentials(&basic("nocolon"), None, None),
            Err(OAuthError::InvalidClient)
        ));
    }
}
