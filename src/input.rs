//! Every parser of what arrives from outside, callable on raw input: the fuzz targets in
//! `fuzz/` drive these, so each one runs the same code a request does. Each returns whether
//! the input was accepted; none may panic, whatever it is given.

use axum::http::{HeaderMap, HeaderValue, header};

use crate::domain::devices::{DeviceHints, sighting};
use crate::domain::refresh_tokens::{Presented, RefreshTokens};

/// A token endpoint form body (`application/x-www-form-urlencoded`).
pub fn token_form(body: &[u8]) -> bool {
    crate::http::extract::parse_form::<crate::http::oauth::TokenForm>(body).is_ok()
}

/// An `Authorization` header's value as client credentials (HTTP Basic), alone and beside a
/// form's client id.
pub fn basic_credentials(value: &[u8]) -> bool {
    let Ok(value) = HeaderValue::from_bytes(value) else { return false };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    let alone = crate::http::extract::client_credentials(&headers, None, None);
    let _ = crate::http::extract::client_credentials(&headers, Some("client".into()), None);
    alone.is_ok()
}

/// A presented token: told apart as a JWT or a refresh token, a JWT's header read as
/// verification reads it, a refresh token's fields and tag checked.
pub fn bearer(token: &str) -> bool {
    let jwt = crate::domain::tokens::looks_like_jwt(token)
        && jsonwebtoken::decode_header(token).is_ok_and(|h| h.typ.as_deref() == Some("at+jwt"));
    let Ok(tokens) = RefreshTokens::new([7; 32]) else { return false };
    let refresh = !matches!(tokens.read(token), Presented::Forged);
    jwt || refresh
}

/// A login's device fields and user agent, as a device is made of them.
pub fn device(user_agent: &str, name: &str, platform: &str, device_id: &str) -> bool {
    let hints = DeviceHints {
        device_id: Some(device_id.to_owned()),
        name: Some(name.to_owned()),
        platform: Some(platform.to_owned()),
        user_agent: Some(user_agent.to_owned()),
        ip: None,
    };
    let (device, named) = sighting("user", &hints, 0);
    let _ = crate::domain::devices::fingerprint("user", &DeviceHints { device_id: None, ..hints });
    named || !device.name.is_empty()
}

/// A URL someone asks the server to call or trust: a webhook target, a client ID metadata
/// document's URL, a redirect URI (and its match against itself).
pub fn outbound_url(url: &str) -> bool {
    let webhook = crate::net::outbound_url(url).is_ok();
    let document = crate::domain::client_documents::document_url(url, false).is_ok();
    let redirect = crate::domain::sign_in::check_redirect_uri(url).is_ok()
        && crate::domain::sign_in::redirect_matches(url, url);
    webhook || document || redirect
}

/// An audit listing's query string: filters, time bounds, cursor, order and limit.
pub fn audit_query(query: &str) -> bool {
    serde_urlencoded::from_str::<crate::http::admin::AuditParams>(query)
        .ok()
        .is_some_and(|p| crate::http::admin::audit_query(p).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_parser_tells_good_input_from_bad() {
        assert!(token_form(b"grant_type=refresh_token&refresh_token=abc"));
        assert!(!token_form(b"grant_type=password&resource=a&resource=b"));
        assert!(!token_form(b"grant_type=%00"));
        assert!(basic_credentials(b"Basic Y2xpZW50OnNlY3JldA=="));
        assert!(!basic_credentials(b"Basic !!!"));
        assert!(!basic_credentials(b"Bearer Y2xpZW50OnNlY3JldA=="));
        assert!(!bearer("not a token"));
        assert!(!bearer("a.b.c"));
        assert!(device(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Firefox/133.0",
            "",
            "",
            ""
        ));
        assert!(outbound_url("https://hooks.example.com/receive"));
        assert!(!outbound_url("ftp://example.com/x"));
        assert!(audit_query("order=asc&limit=10&cursor=01a23d63-ed17-750c-a94e-9abec27b0fc5"));
        assert!(!audit_query("cursor=1'%20OR%201=1"));
        assert!(!audit_query("limit=0"));
        assert!(!audit_query("since=yesterday"));
    }
}
