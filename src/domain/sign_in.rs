//! Browser sign-in (OAuth 2.1 authorization code with PKCE): which requests the authorization
//! endpoint accepts and where it may send the browser back, the browser's session, consent,
//! and the codes it issues. Exchanging a code is a grant of [`super::tokens::TokenService`].

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::audit::{Audit, entry, events};
use super::secrets::Secret;
use super::tokens::{TokenError, TokenService};
use crate::clock::{Clock, Millis};
use crate::ids::UserId;
use crate::storage::{AuthorizationCode, BrowserSession, Client, Storage, StorageResult, User};

/// How long an authorization code may be exchanged.
pub const CODE_TTL_MS: Millis = 60_000;

/// The longest `state` taken back to the client.
const MAX_STATE_LEN: usize = 1024;

/// The parameters of an authorization request (RFC 6749 §4.1.1 with PKCE, RFC 7636 §4.3),
/// as the query of `GET /auth/authorize` or the hidden fields of its forms.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    /// The resource (RFC 8707) the tokens are for.
    pub resource: Option<String>,
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub client: Client,
    pub redirect_uri: String,
    pub scope: String,
    /// The resource the tokens will be for, when the request named one.
    pub resource: Option<String>,
    pub state: Option<String>,
    pub code_challenge: String,
}

/// Why an authorization request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// Before the client and its redirect URI are trusted: shown to the user, never sent
    /// anywhere (RFC 6749 §4.1.2.1), so the endpoint cannot be an open redirector.
    #[error("{0}")]
    Page(&'static str),
    /// The client's metadata document is not usable: shown to the user, as `Page`.
    #[error("{0}")]
    Document(String),
    /// After: sent back to the client's redirect URI.
    #[error("{error}: {description}")]
    Redirect { to: Box<Redirect>, error: &'static str, description: String },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Where an answer to an authorization request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub redirect_uri: String,
    pub state: Option<String>,
}

impl Redirect {
    /// The redirect URI with `params`, the request's `state` and the issuer (RFC 9207) added to
    /// its query.
    pub fn url(&self, issuer: &str, params: &[(&str, &str)]) -> String {
        let mut url = match url::Url::parse(&self.redirect_uri) {
            Ok(url) => url,
            // Registered URIs are checked when they are registered.
            Err(_) => return self.redirect_uri.clone(),
        };
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in params {
                query.append_pair(name, value);
            }
            if let Some(state) = &self.state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", issuer);
        }
        url.into()
    }
}

impl Authorization {
    pub fn redirect(&self) -> Redirect {
        Redirect { redirect_uri: self.redirect_uri.clone(), state: self.state.clone() }
    }
}

/// Lifetimes of browser sessions.
#[derive(Debug, Clone, Copy)]
pub struct SignInPolicy {
    pub idle_ms: Millis,
    pub lifetime_ms: Millis,
}

/// The browser sign-in service.
pub struct SignIn {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    tokens: Arc<TokenService>,
    audit: Arc<Audit>,
    policy: SignInPolicy,
}

impl SignIn {
    pub fn new(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        tokens: Arc<TokenService>,
        audit: Arc<Audit>,
        policy: SignInPolicy,
    ) -> Self {
        Self { storage, clock, tokens, audit, policy }
    }

    /// Checks an authorization request: first the client and its redirect URI (a failure is
    /// shown to the user), then the rest (a failure goes back to the client).
    pub async fn check(&self, p: &AuthorizeParams) -> Result<Authorization, AuthorizeError> {
        let client_id = p.client_id.as_deref().filter(|id| !id.is_empty());
        let client_id = client_id.ok_or(AuthorizeError::Page("the request names no client"))?;
        let client = match self.tokens.find_client(client_id).await {
            Err(TokenError::ClientDocument(e)) => {
                return Err(AuthorizeError::Document(e.to_string()));
            }
            found => found?,
        };
        let client = client
            .filter(|c| !c.disabled)
            .ok_or(AuthorizeError::Page("the client is not registered, or is disabled"))?;
        let redirect_uri = match p.redirect_uri.as_deref().filter(|u| !u.is_empty()) {
            Some(asked) => client
                .redirect_uri_list()
                .any(|registered| redirect_matches(registered, asked))
                .then(|| asked.to_owned()),
            // Only a client with one redirect URI may leave it out (OAuth 2.1 §4.1.1).
            None => {
                let mut registered = client.redirect_uri_list();
                match (registered.next(), registered.next()) {
                    (Some(only), None) => Some(only.to_owned()),
                    _ => None,
                }
            }
        };
        let redirect_uri = redirect_uri.ok_or(AuthorizeError::Page(
            "the redirect_uri is missing or is not registered for this client",
        ))?;
        let state = p.state.clone().filter(|s| !s.is_empty());
        let to = Redirect { redirect_uri, state };
        let refuse = |error: &'static str, description: &str| AuthorizeError::Redirect {
            to: Box::new(to.clone()),
            error,
            description: description.to_owned(),
        };
        if to.state.as_ref().is_some_and(|s| s.len() > MAX_STATE_LEN) {
            return Err(refuse("invalid_request", "state is too long"));
        }
        match p.response_type.as_deref() {
            Some("code") => {}
            None | Some("") => return Err(refuse("invalid_request", "response_type is required")),
            Some(_) => {
                return Err(refuse(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                ));
            }
        }
        if !client.allows_grant("authorization_code") {
            return Err(refuse(
                "unauthorized_client",
                "the client may not use the authorization_code grant",
            ));
        }
        let Some(code_challenge) = p.code_challenge.clone().filter(|c| !c.is_empty()) else {
            return Err(refuse("invalid_request", "code_challenge is required (PKCE)"));
        };
        if p.code_challenge_method.as_deref() != Some("S256") {
            return Err(refuse("invalid_request", "code_challenge_method must be S256"));
        }
        if !is_challenge(&code_challenge) {
            return Err(refuse("invalid_request", "code_challenge is not a S256 challenge"));
        }
        let resource = p.resource.as_deref().filter(|r| !r.is_empty());
        let grant = match self.tokens.resolve_grant(&client, resource, p.scope.as_deref()).await {
            Ok(grant) => grant,
            Err(TokenError::InvalidScope(why)) => return Err(refuse("invalid_scope", &why)),
            Err(TokenError::InvalidTarget(why)) => return Err(refuse("invalid_target", &why)),
            Err(e) => return Err(e.into()),
        };
        Ok(Authorization {
            client,
            redirect_uri: to.redirect_uri,
            scope: grant.scope,
            resource: grant.resource,
            state: to.state,
            code_challenge,
        })
    }

    /// The browser session a cookie names, when it is active; using it moves its idle expiry.
    pub async fn browser_session(&self, cookie: &str) -> StorageResult<Option<BrowserSession>> {
        let now = self.clock.now_ms();
        let hash = Secret::from_client(cookie.to_owned()).sha256();
        self.storage.touch_browser_session(&hash, now, now + self.policy.idle_ms).await
    }

    /// Verifies a username and password entered on the login page (with the lockout, the
    /// timing defence and the audit of the `password` grant) and opens a browser session.
    /// Returns the cookie's secret and the user.
    pub async fn sign_in(
        &self,
        client: Option<&Client>,
        username: &str,
        password: String,
        ip: Option<&str>,
        user_agent: Option<&str>,
    ) -> Result<(Secret, User), TokenError> {
        let user = self.tokens.verify_login(client, username, password, ip).await?;
        let now = self.clock.now_ms();
        let expires_at = now + self.policy.lifetime_ms;
        let secret = Secret::generate();
        let session = BrowserSession {
            hash: secret.sha256().to_vec(),
            user_id: user.id.clone(),
            created_at: now,
            idle_expires_at: (now + self.policy.idle_ms).min(expires_at),
            expires_at,
            ip: ip.map(str::to_owned),
            user_agent: user_agent.map(str::to_owned),
        };
        self.storage.create_browser_session(&session).await?;
        let mut signed_in = entry(events::LOGIN_SUCCEEDED)
            .actor(format!("user:{}", user.id))
            .user(&user.id)
            .detail("method", "browser");
        if let Some(client) = client {
            signed_in = signed_in.client(&client.client_id);
        }
        self.audit.record(signed_in).await?;
        Ok((secret, user))
    }

    /// How long a browser's session cookie is kept.
    pub fn cookie_lifetime_secs(&self) -> i64 {
        self.policy.lifetime_ms / 1000
    }

    /// Ends the browser session a cookie names.
    pub async fn sign_out(&self, cookie: &str) -> StorageResult<()> {
        let hash = Secret::from_client(cookie.to_owned()).sha256();
        self.storage.end_browser_session(&hash).await
    }

    /// Ends every browser session of a user (signing out everywhere).
    pub async fn sign_out_everywhere(&self, user_id: UserId<'_>) -> StorageResult<u64> {
        self.storage.end_user_browser_sessions(user_id).await
    }

    /// Whether the user must be asked before the client gets the request's scopes: not for a
    /// first-party client, nor when the user allowed these scopes (or more) before.
    pub async fn needs_consent(
        &self,
        user_id: UserId<'_>,
        a: &Authorization,
    ) -> StorageResult<bool> {
        if a.client.skip_consent {
            return Ok(false);
        }
        let given = self.storage.consent(user_id, &a.client.client_id).await?;
        let given = given.unwrap_or_default();
        Ok(!consent_items(a).iter().all(|s| given.split_whitespace().any(|g| g == s)))
    }

    /// Remembers that the user allowed the client the request's scopes (with any allowed
    /// before), and audits it.
    pub async fn allow(&self, user_id: UserId<'_>, a: &Authorization) -> StorageResult<()> {
        let client_id = &a.client.client_id;
        let before = self.storage.consent(user_id, client_id).await?.unwrap_or_default();
        let mut scopes: Vec<&str> = before.split_whitespace().collect();
        let asked = consent_items(a);
        for scope in &asked {
            if !scopes.contains(&scope.as_str()) {
                scopes.push(scope);
            }
        }
        let scopes = scopes.join(" ");
        self.storage.save_consent(user_id, client_id, &scopes, self.clock.now_ms()).await?;
        let granted = entry(events::CONSENT_GRANTED)
            .actor(format!("user:{user_id}"))
            .user(user_id.as_str())
            .client(client_id)
            .detail("scope", a.scope.as_str())
            .detail("resource", a.resource.clone());
        self.audit.record(granted).await?;
        Ok(())
    }

    /// Issues a code for the request, bound to it, the user and the browser; returns the code.
    pub async fn issue_code(
        &self,
        user_id: UserId<'_>,
        a: &Authorization,
        ip: Option<&str>,
        user_agent: Option<&str>,
    ) -> StorageResult<Secret> {
        let code = Secret::generate();
        let now = self.clock.now_ms();
        let stored = AuthorizationCode {
            hash: code.sha256().to_vec(),
            client_id: a.client.client_id.clone(),
            redirect_uri: a.redirect_uri.clone(),
            code_challenge: a.code_challenge.clone(),
            scope: a.scope.clone(),
            resource: a.resource.clone(),
            user_id: user_id.as_str().to_owned(),
            ip: ip.map(str::to_owned),
            user_agent: user_agent.map(str::to_owned),
            created_at: now,
            expires_at: now + CODE_TTL_MS,
        };
        self.storage.create_code(&stored).await?;
        Ok(code)
    }
}

/// What a user allows when allowing a request, as consent remembers it: each scope, and for a
/// request bound to a resource each scope on that resource (`scope@uri`; a resource URI has
/// no space), so that allowing one MCP server's scope does not allow another's of that name.
fn consent_items(a: &Authorization) -> Vec<String> {
    a.scope
        .split_whitespace()
        .map(|s| match &a.resource {
            Some(resource) => format!("{s}@{resource}"),
            None => s.to_owned(),
        })
        .collect()
}

/// Whether the redirect URI a request asks for is the registered one: exactly, except that a
/// loopback URI of a native client may use any port (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, asked: &str) -> bool {
    if registered == asked {
        return true;
    }
    let (Ok(registered), Ok(asked)) = (url::Url::parse(registered), url::Url::parse(asked)) else {
        return false;
    };
    let loopback = |u: &url::Url| u.scheme() == "http" && crate::net::is_loopback_host(u);
    loopback(&registered)
        && loopback(&asked)
        && registered.scheme() == asked.scheme()
        && registered.host() == asked.host()
        && registered.path() == asked.path()
        && registered.query() == asked.query()
        && asked.fragment().is_none()
}

/// Why a redirect URI cannot be registered, if it cannot: it must be absolute and have no
/// fragment; https, or http on a loopback or localhost host (development, native apps), or a
/// private-use scheme with a dot in it for a native app (RFC 8252 §7.1).
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|_| format!("{uri} is not an absolute URI"))?;
    if url.fragment().is_some() {
        return Err(format!("{uri} has a fragment"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if crate::net::is_local_host(&url) => Ok(()),
        "http" => Err(format!("{uri}: http is only for localhost and loopback addresses")),
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(format!("{uri}: use https, a loopback http URI, or a private-use scheme")),
    }
}

/// Whether `challenge` can be an S256 challenge: base64url of a SHA-256, 43 characters.
fn is_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a PKCE verifier (RFC 7636 §4.1: 43 to 128 unreserved characters) matches an S256
/// challenge. Compared in constant time.
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_match_exactly_except_a_loopback_port() {
        let same = "https://app.example/cb";
        assert!(redirect_matches(same, same));
        assert!(!redirect_matches(same, "https://app.example/cb/"));
        assert!(!redirect_matches(same, "https://app.example/cb?x=1"));
        assert!(!redirect_matches("https://app.example:8443/cb", "https://app.example:9443/cb"));
        assert!(redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1:53114/cb"));
        assert!(redirect_matches("http://127.0.0.1:8080/cb", "http://127.0.0.1:53114/cb"));
        assert!(redirect_matches("http://[::1]/cb", "http://[::1]:6000/cb"));
        assert!(!redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1:5000/other"));
        assert!(!redirect_matches("http://127.0.0.1/cb", "http://[::1]:5000/cb"));
        // "localhost" is a name that can be made to point elsewhere: exact match only.
        assert!(!redirect_matches("http://localhost/cb", "http://localhost:5000/cb"));
    }

    #[test]
    fn redirect_uris_to_register_are_https_loopback_or_private_use() {
        for ok in [
            "https://app.example/cb",
            "http://127.0.0.1/cb",
            "http://[::1]:8000/cb",
            "http://localhost:3000/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in ["http://app.example/cb", "/cb", "https://app.example/cb#x", "myapp:/cb"] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_verifier_matches_its_s256_challenge_only() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_challenge(challenge));
        assert!(verifier_matches(verifier, challenge));
        assert!(!verifier_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK", challenge));
        assert!(!verifier_matches("short", challenge));
        assert!(!verifier_matches(challenge, challenge));
    }

    #[test]
    fn an_answer_carries_state_and_issuer_after_the_redirect_uris_own_query() {
        let to = Redirect {
            redirect_uri: "https://app.example/cb?tenant=a".into(),
            state: Some("x y&z".into()),
        };
        assert_eq!(
            to.url("https://auth.example", &[("code", "abc")]),
            "https://app.example/cb?tenant=a&code=abc&state=x+y%26z&iss=https%3A%2F%2Fauth.example"
        );
    }
}
