//! Bearer-token authentication of the end-user and admin APIs, and the client address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ipnet::IpNet;

use crate::AppState;
use crate::domain::roles::{self, Permission, Role};
use crate::domain::tokens::AccessClaims;
use crate::error::ApiError;
use crate::ids::{SessionId, UserId};

/// The scope an admin token must carry.
pub const ADMIN_SCOPE: &str = "admin";

async fn bearer_claims(parts: &Parts, state: &AppState) -> Result<AccessClaims, ApiError> {
    let missing = ApiError::Unauthorized("a bearer access token is required");
    let value = parts.headers.get(header::AUTHORIZATION).ok_or(missing)?;
    let value =
        value.to_str().map_err(|_| ApiError::Unauthorized("malformed authorization header"))?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(ApiError::Unauthorized("a bearer access token is required")),
    };
    state
        .tokens
        .active_access_token(token)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?
        .ok_or(ApiError::Unauthorized("the access token is invalid, expired or revoked"))
}

/// An active access token of a user session.
pub struct UserToken {
    pub user_id: String,
    pub session_id: String,
    pub claims: AccessClaims,
}

impl UserToken {
    /// The token's user.
    pub fn user(&self) -> UserId<'_> {
        UserId::new(&self.user_id)
    }

    /// The session the token was issued in.
    pub fn session(&self) -> SessionId<'_> {
        SessionId::new(&self.session_id)
    }
}

impl FromRequestParts<AppState> for UserToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = bearer_claims(parts, state).await?;
        let session_id = claims
            .sid
            .clone()
            .ok_or(ApiError::Forbidden("this endpoint needs a user's access token"))?;
        Ok(Self { user_id: claims.sub.clone(), session_id, claims })
    }
}

/// The scope a token needs to see and end its user's sessions and devices: a client that
/// only needs to call APIs on the user's behalf should not be able to list the user's
/// addresses or sign them out everywhere.
pub const ACCOUNT_SCOPE: &str = "account";

/// A user's access token with the [`ACCOUNT_SCOPE`].
pub struct AccountUser(pub UserToken);

impl FromRequestParts<AppState> for AccountUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = UserToken::from_request_parts(parts, state).await?;
        if !user.claims.scope.split(' ').any(|s| s == ACCOUNT_SCOPE) {
            return Err(ApiError::Forbidden("this endpoint needs the account scope"));
        }
        Ok(Self(user))
    }
}

/// An active access token with the admin scope, and the role it acts with, read now so a
/// change applies at once: its user's role; for a client's own token, the role of the user
/// who registered the client (a demoted admin's client is demoted with them), or `admin`
/// for a client registered from the command line. A disabled or deleted client's tokens
/// act for nobody.
pub struct Admin {
    pub claims: AccessClaims,
    pub role: Role,
    /// The user the token acts for, when there is one.
    pub user_id: Option<String>,
}

impl Admin {
    /// Refuses, with 403, what the access matrix does not give this role.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if roles::allows(self.role, permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden("your role does not allow this"))
        }
    }

    /// Who acts, for audit records.
    pub fn actor(&self) -> String {
        match self.claims.sid {
            Some(_) => format!("user:{}", self.claims.sub),
            None => format!("client:{}", self.claims.client_id),
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = bearer_claims(parts, state).await?;
        if !claims.scope.split(' ').any(|s| s == ADMIN_SCOPE) {
            return Err(ApiError::Forbidden("this endpoint needs the admin scope"));
        }
        let user_id = if claims.sid.is_some() {
            Some(claims.sub.clone())
        } else {
            let client = state.accounts.client(&claims.client_id).await?;
            let client = client.filter(|c| !c.disabled);
            let client = client.ok_or(ApiError::Unauthorized("the token's client is disabled"))?;
            client.created_by
        };
        let role = match &user_id {
            Some(id) => {
                let user = state.accounts.user(id).await?;
                let user =
                    user.ok_or(ApiError::Unauthorized("the token's user no longer exists"))?;
                user.role.parse().map_err(|e: String| ApiError::Internal(anyhow::anyhow!(e)))?
            }
            None => Role::Admin,
        };
        Ok(Self { claims, role, user_id })
    }
}

/// The address of the client: the peer, or, when the peer is a trusted proxy, the nearest
/// untrusted address of `X-Forwarded-For`.
pub struct ClientIp(pub Option<String>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        Ok(Self(peer.map(|p| {
            client_ip(p, &parts.headers, &state.config.server.trusted_proxies.0).to_string()
        })))
    }
}

/// Walks `X-Forwarded-For` from the right (the hop nearest to us) while the hops are
/// trusted; the first untrusted one is the client. A malformed entry stops the walk there.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = crate::net::canonical_ip(peer);
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // Proxies may write a port, brackets, or an IPv4-mapped IPv6 form.
        match crate::net::parse_ip(hop).ok_or(()) {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("header"));
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        assert_eq!(client_ip(ip("203.0.113.9"), &xff("1.2.3.4"), &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("10.0.0.1"), &xff("1.2.3.4"), &[]), ip("10.0.0.1"));
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        // A client cannot spoof its address by sending its own X-Forwarded-For.
        let chain = xff("6.6.6.6, 198.51.100.7, 10.1.1.1");
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("10.0.0.1"), &xff("garbage"), &trusted), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_hops_lose_their_ports_and_mapped_forms() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let chain = xff("198.51.100.7:4711");
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &trusted), ip("198.51.100.7"));
        let chain = xff("[2001:db8::7]:443");
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &trusted), ip("2001:db8::7"));
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &xff("::ffff:1.2.3.4"), &trusted),
            ip("1.2.3.4")
        );
    }
}
