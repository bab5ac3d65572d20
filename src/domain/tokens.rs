//! The token rules: client authentication, the three grants, refresh rotation, revocation
//! (RFC 7009) and introspection (RFC 7662). Access tokens are RFC 9068 JWTs signed with the
//! key the [`KeyManager`] holds parsed; refresh tokens are opaque and stored as SHA-256.

use std::sync::Arc;

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::audit::{Audit, Entry, entry, events};
use super::client_documents::ClientDocuments;
use super::devices::{self, DeviceHints};
use super::keys::{KeyManager, b64};
use super::refresh_tokens::{Presented, RefreshTokens};
use super::secrets::{Secret, VerifyGate, verify_password};
use crate::clock::{Clock, Millis, rfc3339};
use crate::metrics::Metrics;
use crate::storage::{
    Admission, Client, CodeTaken, LockoutPolicy, Login, Rotation, RotationOutcome, Session,
    Storage, User, revoke_reason,
};

/// Why a token request failed, in the domain's words; the HTTP layer answers each with its
/// RFC 6749 error code.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Client authentication failed.
    #[error("client authentication failed")]
    InvalidClient,
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("{0}")]
    UnauthorizedClient(&'static str),
    #[error("{0}")]
    InvalidScope(String),
    /// The requested resource (RFC 8707) is unknown, malformed or not for this client.
    #[error("{0}")]
    InvalidTarget(String),
    /// The client id is a metadata document URL whose document is not usable.
    #[error(transparent)]
    ClientDocument(#[from] super::client_documents::DocumentError),
    /// Password hashing is saturated: retry later.
    #[error(transparent)]
    Overloaded(#[from] super::secrets::Overloaded),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The longest a revoked access-token id is kept.
const MAX_REVOCATION_MS: Millis = 7 * 24 * 3600 * 1000;

/// The grant types the token endpoint knows.
pub const GRANT_TYPES: [&str; 4] =
    ["authorization_code", "password", "client_credentials", "refresh_token"];

/// Claims of an access token (RFC 9068 §2.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// A successful token answer (RFC 6749 §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// What a token request is granted: the scope, and the resource (RFC 8707) its access tokens
/// are for (`None`: this server's own audience).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub scope: String,
    pub resource: Option<String>,
}

/// Lifetimes and names the token rules use.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: i64,
    pub refresh_grace_ms: Millis,
    pub session_idle_ms: Millis,
    pub session_lifetime_ms: Millis,
    /// Live sessions per user; a login beyond it evicts the least recently used.
    pub max_sessions: usize,
    /// How long a used refresh token is remembered, so that presenting it is detected as reuse.
    pub reuse_window_ms: Millis,
    /// How long a client record is cached.
    pub client_cache_ttl_ms: Millis,
    /// Failed logins that lock an account (0: never), within `lockout_window_ms`.
    pub lockout_threshold: i32,
    pub lockout_window_ms: Millis,
    pub lockout_ms: Millis,
}

/// The token rules over storage, keys and a clock.
pub struct TokenService {
    storage: Arc<dyn Storage>,
    keys: Arc<KeyManager>,
    clock: Arc<dyn Clock>,
    policy: TokenPolicy,
    validations: [Validation; 3],
    clients: moka::future::Cache<String, Client>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    verifying: VerifyGate,
    /// Client ID metadata documents, when they are accepted.
    documents: Option<ClientDocuments>,
    refresh_tokens: RefreshTokens,
}

/// Password verifications of one account that may run at once in one process.
const VERIFICATIONS_PER_ACCOUNT: usize = 2;

/// How often, and how far apart, an attempt asks again for a slot that attempts still being
/// verified hold: about three seconds in all.
const ADMISSION_TRIES: usize = 60;
const ADMISSION_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The longest client id the token endpoints look up.
const MAX_CLIENT_ID_LEN: usize = 200;

/// A registered client's last use is written at most this often: its expiry is counted in
/// days, and a write per request would cost the token paths a storage operation.
const CLIENT_USE_EVERY_MS: Millis = 3600 * 1000;

/// What the lockout counts an attempt under: the account name as given (so an unknown one
/// costs the same as a known one) with the client address, so nobody can keep an account
/// locked from one address for everybody. Hashed, to bound its length.
fn lockout_key(username: &str, ip: Option<&str>) -> String {
    let address = ip.map(crate::net::address_key).unwrap_or_default();
    Secret::from_client(format!("{username}\0{address}")).sha256_hex()
}

impl TokenService {
    pub fn new(
        storage: Arc<dyn Storage>,
        keys: Arc<KeyManager>,
        clock: Arc<dyn Clock>,
        policy: TokenPolicy,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
        refresh_tokens: RefreshTokens,
    ) -> Self {
        // One validation per algorithm, built once: verifying a token allocates none.
        let validations = [
            jsonwebtoken::Algorithm::EdDSA,
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::Algorithm::RS256,
        ]
        .map(|alg| {
            let mut validation = Validation::new(alg);
            // Expiry is checked against the injectable clock, not the system time.
            validation.validate_exp = false;
            validation.leeway = 0;
            validation.set_issuer(&[&policy.issuer]);
            // The audience is this server's or a registered resource's: each use checks the
            // one it accepts (`active_access_token`: this server's only).
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation
        });
        let clients = moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(
                std::time::Duration::from_millis(policy.client_cache_ttl_ms.max(1) as u64),
            )
            .build();
        let verifying = VerifyGate::new(VERIFICATIONS_PER_ACCOUNT);
        Self {
            storage,
            keys,
            clock,
            policy,
            validations,
            clients,
            audit,
            metrics,
            verifying,
            documents: None,
            refresh_tokens,
        }
    }

    /// Accepts client ID metadata documents.
    pub fn with_documents(mut self, documents: ClientDocuments) -> Self {
        self.documents = Some(documents);
        self
    }

    /// Whether client ID metadata documents are accepted.
    pub fn accepts_documents(&self) -> bool {
        self.documents.is_some()
    }

    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// Forgets a cached client, so a change made through this instance applies at once (other
    /// instances see it within the cache's lifetime).
    pub async fn forget_client(&self, client_id: &str) {
        self.clients.invalidate(client_id).await;
    }

    /// A client: registered, or described by the metadata document its id names. Found
    /// clients are cached for a short while so the token hot paths stay at one storage
    /// operation; unknown ids are always looked up. A registered client's use is noted (at
    /// most once an hour) when it is read from storage.
    pub async fn find_client(&self, client_id: &str) -> Result<Option<Client>, TokenError> {
        if let Some(documents) = self.documents.as_ref().filter(|d| d.is_document_url(client_id)) {
            return Ok(Some(documents.client(client_id, self.clock.now_ms()).await?));
        }
        if client_id.len() > MAX_CLIENT_ID_LEN {
            return Ok(None);
        }
        if let Some(client) = self.clients.get(client_id).await {
            self.metrics.cache("clients", true);
            return Ok(Some(client));
        }
        self.metrics.cache("clients", false);
        let mut client = self.storage.client(client_id).await?;
        if let Some(client) = &mut client {
            let now = self.clock.now_ms();
            if client.registered
                && client.last_used_at.is_none_or(|at| at + CLIENT_USE_EVERY_MS <= now)
            {
                self.storage.touch_client(client_id, now).await?;
                client.last_used_at = Some(now);
            }
            self.clients.insert(client_id.to_owned(), client.clone()).await;
        }
        Ok(client)
    }

    /// Authenticates a client by id and, for a confidential client, its secret.
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: Option<Secret>,
    ) -> Result<Client, TokenError> {
        // An id past the longest is not looked up (`find_client`): it is no client.
        let client = self.find_client(client_id).await?.ok_or(TokenError::InvalidClient)?;
        if client.disabled {
            return Err(TokenError::InvalidClient);
        }
        let ok = match (&client.secret_hash, secret) {
            (Some(hash), Some(secret)) => secret.matches_hex(hash),
            (None, None) => true,
            _ => false,
        };
        if ok { Ok(client) } else { Err(TokenError::InvalidClient) }
    }

    /// The `password` grant (RFC 6749 §4.3): verifies the user and opens a session.
    pub async fn password_grant(
        &self,
        client: &Client,
        username: &str,
        password: String,
        scope: Option<&str>,
        resource: Option<&str>,
        device: DeviceHints,
    ) -> Result<TokenResponse, TokenError> {
        require_grant(client, "password")?;
        let grant = self.resolve_grant(client, resource, scope).await?;
        let user =
            self.verify_login(Some(client), username, password, device.ip.as_deref()).await?;
        let (tokens, _) = self.open_session(client, &user.id, grant, device, "password").await?;
        Ok(tokens)
    }

    /// The scope and resource a request is granted. Without a resource, as ever: the client's
    /// scopes, for this server's audience. With one (RFC 8707): it must be an absolute URI
    /// without a fragment, registered, and share at least one scope with the client (else
    /// `invalid_target`); the scope granted is within both.
    pub async fn resolve_grant(
        &self,
        client: &Client,
        resource: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Grant, TokenError> {
        let Some(uri) = resource else {
            return Ok(Grant { scope: resolve_scope(scope, client.scope_list())?, resource: None });
        };
        super::resources::check_resource_uri(uri).map_err(TokenError::InvalidTarget)?;
        let registered = self.storage.resource(uri).await?;
        let registered = registered
            .ok_or_else(|| TokenError::InvalidTarget(format!("{uri} is not a known resource")))?;
        let allowed: Vec<&str> = registered
            .scopes
            .split_whitespace()
            .filter(|s| client.scope_list().any(|c| c == *s))
            .collect();
        if allowed.is_empty() {
            return Err(TokenError::InvalidTarget(format!(
                "the client may not ask for tokens for {uri}"
            )));
        }
        let scope = resolve_scope(scope, allowed.iter().copied())?;
        Ok(Grant { scope, resource: Some(registered.uri) })
    }

    /// Opens a session of the user on the device `device` describes, as a login does: the
    /// device is recognised or registered, the least recently used session beyond the limit
    /// is evicted, and each step is audited. Returns the tokens and the session's id.
    async fn open_session(
        &self,
        client: &Client,
        user_id: &str,
        grant: Grant,
        device: DeviceHints,
        grant_type: &'static str,
    ) -> Result<(TokenResponse, String), TokenError> {
        let Grant { scope, resource } = grant;
        let now = self.clock.now_ms();
        let expires_at = now + self.policy.session_lifetime_ms;
        let session = Session {
            id: super::id_text(Uuid::now_v7()),
            user_id: user_id.to_owned(),
            client_id: client.client_id.clone(),
            scope: scope.clone(),
            created_at: now,
            last_used_at: now,
            idle_expires_at: (now + self.policy.session_idle_ms).min(expires_at),
            expires_at,
            ip: device.ip.clone(),
            user_agent: device.user_agent.clone(),
            revoked_at: None,
            revoke_reason: None,
            device_id: None,
            access_jti: Some(new_jti()),
            resource,
        };
        let (seen, named) = devices::sighting(user_id, &device, now);
        let refresh = self.mint_refresh(&session.id, 0)?;
        let login = Login {
            session: &session,
            refresh_hash: &refresh.sha256(),
            device: &seen,
            device_named_by_client: named,
            max_sessions: self.policy.max_sessions,
            index_token: false,
        };
        let outcome = self.storage.create_session(&login).await?;
        let actor = format!("user:{user_id}");
        let by_user = |event| entry(event).actor(&actor).user(user_id).client(&client.client_id);
        if grant_type == "password" {
            // The password was checked by this request: its login is this session's.
            self.audit.record(by_user(events::LOGIN_SUCCEEDED).session(&session.id)).await?;
        }
        if outcome.new_device {
            let d = &outcome.device;
            let registered = by_user(events::DEVICE_REGISTERED)
                .detail("device_id", d.id.as_str())
                .detail("name", d.name.as_str())
                .detail("platform", d.platform.clone())
                .detail("first_seen_at", rfc3339(d.first_seen_at));
            self.audit.record(registered).await?;
        }
        let created = by_user(events::SESSION_CREATED)
            .session(&session.id)
            .detail("device_id", outcome.device.id.as_str())
            .detail("user_agent", session.user_agent.clone())
            .detail("created_at", rfc3339(session.created_at))
            .detail("expires_at", rfc3339(session.expires_at));
        self.audit.record(created).await?;
        for evicted in &outcome.evicted {
            self.audit.record(session_revoked(evicted, "system")).await?;
        }
        let refresh = client.allows_grant("refresh_token").then_some(refresh);
        let issued = by_user(events::TOKEN_ISSUED)
            .session(&session.id)
            .detail("grant_type", grant_type)
            .detail("scope", scope.as_str())
            .detail("resource", session.resource.clone());
        self.audit.record(issued).await?;
        let jti = session.access_jti.clone().unwrap_or_else(new_jti);
        let access = Access {
            subject: user_id,
            client,
            scope,
            session_id: Some(&session.id),
            resource: session.resource.as_deref(),
            jti,
        };
        let tokens = self.respond(access, refresh)?;
        Ok((tokens, session.id))
    }

    /// The `authorization_code` grant (RFC 6749 §4.1.3, OAuth 2.1 §4.1.3) with PKCE: takes
    /// the code once, checks what it is bound to, and opens a session on the browser's device.
    /// A code presented again is refused, and the session its first exchange opened ends.
    pub async fn authorization_code_grant(
        &self,
        client: &Client,
        code: &Secret,
        redirect_uri: Option<&str>,
        verifier: &str,
        resource: Option<&str>,
    ) -> Result<TokenResponse, TokenError> {
        require_grant(client, "authorization_code")?;
        let hash = code.sha256();
        let now = self.clock.now_ms();
        let invalid =
            TokenError::InvalidGrant("the authorization code is invalid, expired or used");
        let code = match self.storage.take_code(&hash, now).await? {
            CodeTaken::First(code) => code,
            CodeTaken::Again { session_id } => {
                self.code_replayed(client, session_id.as_deref()).await?;
                return Err(invalid);
            }
            CodeTaken::Unknown => return Err(invalid),
        };
        if code.client_id != client.client_id || code.expires_at <= now {
            return Err(invalid);
        }
        // The request must name the redirect URI the code was sent to; a client with one
        // registered URI may leave it out, as it could at the authorization endpoint.
        let redirect_uri = match redirect_uri {
            Some(uri) => uri == code.redirect_uri,
            None => client.redirect_uri_list().count() == 1,
        };
        if !redirect_uri {
            return Err(TokenError::InvalidGrant(
                "redirect_uri differs from the authorization request",
            ));
        }
        if !super::sign_in::verifier_matches(verifier, &code.code_challenge) {
            return Err(TokenError::InvalidGrant("the code_verifier does not match the challenge"));
        }
        // The tokens are for the resource the user authorized, and no other.
        if resource.is_some_and(|r| code.resource.as_deref() != Some(r)) {
            return Err(TokenError::InvalidTarget(
                "the resource differs from the authorization request".into(),
            ));
        }
        let device = DeviceHints {
            device_id: None,
            name: None,
            platform: None,
            user_agent: code.user_agent.clone(),
            ip: code.ip.clone(),
        };
        let grant = Grant { scope: code.scope.clone(), resource: code.resource.clone() };
        let (tokens, session_id) =
            self.open_session(client, &code.user_id, grant, device, "authorization_code").await?;
        if !self.storage.bind_code_session(&hash, &session_id).await? {
            // Presented again while this exchange ran: what it opened ends as well.
            self.code_replayed(client, Some(&session_id)).await?;
            return Err(invalid);
        }
        Ok(tokens)
    }

    /// A code presented again: audited as reuse, and the session it opened (if it got so far)
    /// ends with its tokens.
    async fn code_replayed(
        &self,
        client: &Client,
        session_id: Option<&str>,
    ) -> Result<(), TokenError> {
        let mut reuse = entry(events::TOKEN_REUSE_DETECTED)
            .actor(format!("client:{}", client.client_id))
            .client(&client.client_id)
            .detail("token", "authorization_code");
        if let Some(id) = session_id {
            let now = self.clock.now_ms();
            if let Some(ended) =
                self.storage.revoke_session(id, now, revoke_reason::CODE_REPLAYED).await?
            {
                reuse = reuse.user(&ended.user_id).session(&ended.id);
                self.audit.record(reuse).await?;
                self.audit.record(session_revoked(&ended, "system")).await?;
                return Ok(());
            }
        }
        self.audit.record(reuse).await?;
        Ok(())
    }

    /// Checks a username and password, with the lockout: the attempt is counted (per account
    /// name and client address) before the password is verified, so parallel guesses cannot
    /// pass the threshold. Every path costs the same: one user read, one attempt write, one
    /// argon2 verification (against a dummy hash for an unknown or locked account), and one
    /// more write for an admitted attempt; so timing tells nothing of which accounts exist.
    /// `client` is the client the user signs in to (none for the account page).
    pub async fn verify_login(
        &self,
        client: Option<&Client>,
        username: &str,
        password: String,
        ip: Option<&str>,
    ) -> Result<User, TokenError> {
        let policy = LockoutPolicy {
            now: self.clock.now_ms(),
            window_ms: self.policy.lockout_window_ms,
            threshold: self.policy.lockout_threshold,
            lock_ms: self.policy.lockout_ms,
        };
        let key = lockout_key(username, ip);
        let lockout = policy.threshold > 0;
        let mut admission = Admission::Verify;
        if lockout {
            // Every slot of the window is taken by attempts still being verified (not by
            // failures, which would have locked the key): wait for them, since each either
            // frees its slot or locks the key within a hash's time.
            for _ in 0..ADMISSION_TRIES {
                admission = self.storage.begin_login_attempt(&key, &policy).await?;
                if admission != (Admission::Refused { locked_until: None }) {
                    break;
                }
                tokio::time::sleep(ADMISSION_PAUSE).await;
            }
        }
        let user = self.storage.user_by_username(username).await?;
        let admitted = admission == Admission::Verify;
        let hash = user.as_ref().filter(|_| admitted).map(|u| u.password_hash.clone());
        let verified = {
            // At most a few verifications of one account run at once in this process, so a
            // flood of guesses for one account cannot take every hashing thread.
            let _turn = self.verifying.enter(username).await;
            verify_password(password, hash).await?
        };
        let locked = if lockout && admitted {
            let done = LockoutPolicy { now: self.clock.now_ms(), ..policy };
            self.storage.finish_login_attempt(&key, verified, &done).await?
        } else {
            None
        };
        let failed = |reason: &str| {
            let mut e =
                entry(events::LOGIN_FAILED)
                    .actor(client.map_or_else(
                        || "browser".to_owned(),
                        |c| format!("client:{}", c.client_id),
                    ))
                    .detail("username", username.chars().take(256).collect::<String>())
                    .detail("reason", reason);
            if let Some(u) = &user {
                e = e.user(&u.id);
            }
            if let Some(c) = client {
                e = e.client(&c.client_id);
            }
            e
        };
        let invalid = TokenError::InvalidGrant("invalid username or password");
        let Some(user) = user.clone().filter(|_| verified) else {
            let reason = match (&user, admitted) {
                (_, false) => "locked",
                (None, true) => "unknown_user",
                (Some(_), true) => "wrong_password",
            };
            self.audit.record(failed(reason)).await?;
            if let (Some(until), Some(u)) = (locked, &user) {
                tracing::warn!(user_id = %u.id, "account locked after repeated login failures");
                let mut locked = entry(events::USER_LOCKED)
                    .actor("system")
                    .user(&u.id)
                    .detail("username", u.username.as_str())
                    .detail("failures", policy.threshold)
                    .detail("locked_until", rfc3339(until));
                if let Some(c) = client {
                    locked = locked.client(&c.client_id);
                }
                self.audit.record(locked).await?;
            }
            return Err(invalid);
        };
        if user.disabled {
            self.audit.record(failed("disabled")).await?;
            return Err(TokenError::InvalidGrant("the account is disabled"));
        }
        Ok(user)
    }

    /// The `client_credentials` grant (RFC 6749 §4.4): confidential clients only.
    pub async fn client_credentials_grant(
        &self,
        client: &Client,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, TokenError> {
        if client.is_public() {
            return Err(TokenError::UnauthorizedClient(
                "public clients may not use client_credentials",
            ));
        }
        require_grant(client, "client_credentials")?;
        let Grant { scope, resource } = self.resolve_grant(client, resource, scope).await?;
        let issued = entry(events::TOKEN_ISSUED)
            .actor(format!("client:{}", client.client_id))
            .client(&client.client_id)
            .detail("grant_type", "client_credentials")
            .detail("scope", scope.as_str())
            .detail("resource", resource.clone());
        self.audit.record(issued).await?;
        let jti = new_jti();
        let access = Access {
            subject: &client.client_id,
            client,
            scope,
            session_id: None,
            resource: resource.as_deref(),
            jti,
        };
        self.respond(access, None)
    }

    /// The `refresh_token` grant (RFC 6749 §6) with rotation: one atomic storage operation and
    /// one signature.
    pub async fn refresh_grant(
        &self,
        client: &Client,
        refresh_token: &Secret,
        scope: Option<&str>,
        resource: Option<&str>,
        ip: Option<&str>,
    ) -> Result<TokenResponse, TokenError> {
        require_grant(client, "refresh_token")?;
        let presented = refresh_token.sha256();
        let invalid = || {
            self.metrics.refresh_outcomes.with_label_values(&["invalid"]).inc();
            TokenError::InvalidGrant("invalid refresh token")
        };
        // A token names its session; one of the format before is looked up once, by its hash.
        let (session_id, presented_generation) =
            match self.refresh_tokens.read(refresh_token.expose()) {
                Presented::Family { session_id, generation } => (session_id, Some(generation)),
                Presented::Legacy => match self.storage.session_by_refresh(&presented, None).await?
                {
                    Some((session, _)) => (session.id, None),
                    None => return Err(invalid()),
                },
                Presented::Forged => return Err(invalid()),
            };
        let new_generation = presented_generation.unwrap_or(0) + 1;
        let next = self.mint_refresh(&session_id, new_generation)?;
        let next_hash = next.sha256();
        let jti = new_jti();
        let now = self.clock.now_ms();
        let rotation = Rotation {
            session_id: &session_id,
            presented_generation,
            presented_hash: &presented,
            new_hash: &next_hash,
            new_generation,
            client_id: &client.client_id,
            now,
            grace_ms: self.policy.refresh_grace_ms,
            idle_timeout_ms: self.policy.session_idle_ms,
            ip,
            reuse_window_ms: self.policy.reuse_window_ms,
            new_jti: &jti,
            superseded_until: now + self.policy.access_ttl_secs * 1000,
        };
        let outcome = self.storage.rotate_refresh(&rotation).await?;
        let label = match &outcome {
            RotationOutcome::Rotated(_) => "rotated",
            RotationOutcome::Grace(_) => "grace",
            RotationOutcome::Reused(_) => "reuse",
            RotationOutcome::Ended(_) | RotationOutcome::Invalid => "invalid",
        };
        self.metrics.refresh_outcomes.with_label_values(&[label]).inc();
        let (session, grace) = match outcome {
            RotationOutcome::Rotated(s) => (s, false),
            RotationOutcome::Grace(s) => (s, true),
            RotationOutcome::Reused(s) => {
                tracing::warn!(session_id = %s.id, user_id = %s.user_id, "refresh token reuse detected; session revoked");
                let reuse = entry(events::TOKEN_REUSE_DETECTED)
                    .actor(format!("client:{}", client.client_id))
                    .user(&s.user_id)
                    .session(&s.id)
                    .client(&s.client_id)
                    .detail("detected_at", rfc3339(rotation.now));
                self.audit.record(reuse).await?;
                self.audit.record(session_revoked(&s, "system")).await?;
                return Err(TokenError::InvalidGrant(
                    "refresh token reuse detected; the session is revoked",
                ));
            }
            RotationOutcome::Ended(_) => {
                return Err(TokenError::InvalidGrant("the session has ended"));
            }
            RotationOutcome::Invalid => {
                return Err(TokenError::InvalidGrant("invalid refresh token"));
            }
        };
        let scope = resolve_scope(scope, session.scope.split_whitespace())?;
        self.check_session_resource(client, &session, resource).await?;
        let refreshed = entry(events::TOKEN_REFRESHED)
            .actor(format!("user:{}", session.user_id))
            .user(&session.user_id)
            .session(&session.id)
            .client(&client.client_id)
            .detail("grace_retry", grace)
            .detail("scope", scope.as_str());
        self.audit.record(refreshed).await?;
        let access = Access {
            subject: &session.user_id,
            client,
            scope,
            session_id: Some(&session.id),
            resource: session.resource.as_deref(),
            jti,
        };
        self.respond(access, Some(next))
    }

    /// A new refresh token of a session.
    fn mint_refresh(&self, session_id: &str, generation: i64) -> Result<Secret, TokenError> {
        self.refresh_tokens
            .mint(session_id, generation)
            .ok_or_else(|| anyhow::anyhow!("session id {session_id} is not a UUID").into())
    }

    /// The session a presented refresh token belongs to, and whether it is the live one;
    /// `None` for a token that is unknown or not made here.
    async fn session_of_refresh(&self, token: &str) -> Result<Option<(Session, bool)>, TokenError> {
        let hash = Secret::from_client(token.to_owned()).sha256();
        Ok(match self.refresh_tokens.read(token) {
            Presented::Family { session_id, .. } => {
                self.storage.session_by_refresh(&hash, Some(&session_id)).await?
            }
            Presented::Legacy => self.storage.session_by_refresh(&hash, None).await?,
            Presented::Forged => None,
        })
    }

    /// A refresh keeps the session's resource: asking for another one is `invalid_target`
    /// (the audience may stay or narrow, never widen), as is a resource removed, or no longer
    /// shared with the client, since the session began.
    async fn check_session_resource(
        &self,
        client: &Client,
        session: &Session,
        asked: Option<&str>,
    ) -> Result<(), TokenError> {
        if asked.is_some_and(|r| session.resource.as_deref() != Some(r)) {
            return Err(TokenError::InvalidTarget(
                "a refresh keeps the resource the session was granted for".into(),
            ));
        }
        if let Some(uri) = &session.resource {
            self.resolve_grant(client, Some(uri), None).await?;
        }
        Ok(())
    }

    fn respond(
        &self,
        access: Access<'_>,
        refresh: Option<Secret>,
    ) -> Result<TokenResponse, TokenError> {
        let Access { subject, client, scope, session_id, resource, jti } = access;
        let audience = resource.unwrap_or(&self.policy.audience);
        let access_token =
            self.sign_access_token(subject, &client.client_id, &scope, audience, session_id, jti)?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: self.policy.access_ttl_secs,
            refresh_token: refresh.map(|r| r.expose().to_owned()),
            scope,
        })
    }

    /// Signs an RFC 9068 access token with the active key (parsed once, never per token).
    pub fn sign_access_token(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
        audience: &str,
        session_id: Option<&str>,
        jti: String,
    ) -> Result<String, TokenError> {
        let signer = self.keys.signer().ok_or_else(|| anyhow::anyhow!("no active signing key"))?;
        let iat = self.clock.now_ms() / 1000;
        let claims = AccessClaims {
            iss: self.policy.issuer.clone(),
            sub: subject.to_owned(),
            aud: audience.to_owned(),
            exp: iat + self.policy.access_ttl_secs,
            iat,
            jti,
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            sid: session_id.map(str::to_owned),
        };
        let header = json!({ "alg": signer.alg.as_str(), "typ": "at+jwt", "kid": signer.kid });
        let mut token = b64(&serde_json::to_vec(&header).map_err(anyhow::Error::from)?);
        token.push('.');
        token.push_str(&b64(&serde_json::to_vec(&claims).map_err(anyhow::Error::from)?));
        let signature = signer.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&b64(&signature));
        Ok(token)
    }

    /// Checks an access token's signature, type, issuer and expiry (not its audience, which is
    /// this server's or a resource's, nor its revocation state).
    pub async fn verify_access_token(&self, token: &str) -> Option<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.typ.as_deref() != Some("at+jwt") {
            return None;
        }
        let verifier = self.keys.verifier(header.kid.as_deref()?).await?;
        if header.alg != verifier.alg {
            return None;
        }
        let validation = self.validations.iter().find(|v| v.algorithms == [verifier.alg])?;
        let claims =
            jsonwebtoken::decode::<AccessClaims>(token, &verifier.key, validation).ok()?.claims;
        (claims.exp * 1000 > self.clock.now_ms()).then_some(claims)
    }

    /// Whether an access token for this server's own APIs is valid (its audience is this
    /// server's: one issued for a resource is not accepted here) and neither revoked nor of an
    /// ended session: a signature check and one storage read.
    pub async fn active_access_token(
        &self,
        token: &str,
    ) -> Result<Option<AccessClaims>, TokenError> {
        let claims = self.live_access_token(token).await?;
        Ok(claims.filter(|c| c.aud == self.policy.audience))
    }

    /// Whether an access token of any audience is valid and neither revoked nor of an ended
    /// session.
    async fn live_access_token(&self, token: &str) -> Result<Option<AccessClaims>, TokenError> {
        let Some(claims) = self.verify_access_token(token).await else {
            return Ok(None);
        };
        let state = self.storage.access_token_state(&claims.jti, claims.sid.as_deref()).await?;
        Ok(state.is_active(claims.sid.is_some(), self.clock.now_ms()).then_some(claims))
    }

    /// RFC 7662 introspection of an access or refresh token. A token is reported active only
    /// to its own client or to a resource server (RFC 7662 §4: a caller may learn nothing of
    /// tokens it has no business with); to anyone else it is inactive.
    pub async fn introspect(
        &self,
        caller: &Client,
        token: &str,
    ) -> Result<serde_json::Value, TokenError> {
        let inactive = json!({ "active": false });
        let entitled = |client_id: &str| caller.resource_server || caller.client_id == client_id;
        if looks_like_jwt(token) {
            let Some(c) = self.live_access_token(token).await? else {
                return Ok(inactive);
            };
            if !entitled(&c.client_id) {
                return Ok(inactive);
            }
            let mut answer = json!({
                "active": true, "token_type": "Bearer", "scope": c.scope, "client_id": c.client_id,
                "sub": c.sub, "exp": c.exp, "iat": c.iat, "iss": c.iss, "aud": c.aud, "jti": c.jti,
            });
            if let Some(sid) = c.sid {
                answer["sid"] = json!(sid);
            }
            return Ok(answer);
        }
        match self.session_of_refresh(token).await? {
            Some((s, true)) if s.is_active(self.clock.now_ms()) && entitled(&s.client_id) => {
                let mut answer = json!({
                    "active": true, "token_type": "refresh_token", "scope": s.scope,
                    "client_id": s.client_id, "sub": s.user_id, "exp": s.expires_at / 1000,
                    "iat": s.last_used_at / 1000, "iss": self.policy.issuer, "sid": s.id,
                });
                if let Some(resource) = s.resource {
                    answer["aud"] = json!(resource);
                }
                Ok(answer)
            }
            _ => Ok(inactive),
        }
    }

    /// RFC 7009 revocation. Revoking a refresh token ends its session. The answer is the
    /// same whatever the token's state (§2.2): unknown, dead and other clients' tokens
    /// succeed and change nothing, so the answer tells the caller nothing about a token.
    pub async fn revoke(&self, client: &Client, token: &str) -> Result<(), TokenError> {
        if looks_like_jwt(token) {
            if let Some(claims) = self.verify_access_token(token).await {
                if claims.client_id != client.client_id {
                    return Ok(());
                }
                // Listed until the token would have expired, and never longer than 7 days.
                let until = (claims.exp * 1000).min(self.clock.now_ms() + MAX_REVOCATION_MS);
                self.storage.revoke_access_token(&claims.jti, until).await?;
                let mut revoked = entry(events::TOKEN_REVOKED)
                    .actor(format!("client:{}", client.client_id))
                    .client(&client.client_id)
                    .detail("token_type", "access_token")
                    .detail("jti", claims.jti.as_str());
                if let Some(sid) = &claims.sid {
                    revoked = revoked.session(sid).user(&claims.sub);
                }
                self.audit.record(revoked).await?;
            }
            return Ok(());
        }
        if let Some((session, _)) = self.session_of_refresh(token).await? {
            if session.client_id != client.client_id {
                return Ok(());
            }
            let actor = format!("client:{}", client.client_id);
            let revoked = entry(events::TOKEN_REVOKED)
                .actor(&actor)
                .client(&client.client_id)
                .user(&session.user_id)
                .session(&session.id)
                .detail("token_type", "refresh_token");
            self.audit.record(revoked).await?;
            let now = self.clock.now_ms();
            let reason = revoke_reason::REVOKED_BY_CLIENT;
            if let Some(ended) = self.storage.revoke_session(&session.id, now, reason).await? {
                self.audit.record(session_revoked(&ended, &actor)).await?;
            }
        }
        Ok(())
    }
}

/// An access token to sign: whom and what for.
struct Access<'a> {
    subject: &'a str,
    client: &'a Client,
    scope: String,
    session_id: Option<&'a str>,
    /// Its audience; `None`: this server's.
    resource: Option<&'a str>,
    jti: String,
}

/// The `session.revoked` record of a session that just ended.
pub fn session_revoked(s: &Session, actor: &str) -> Entry {
    entry(events::SESSION_REVOKED)
        .actor(actor)
        .user(&s.user_id)
        .session(&s.id)
        .client(&s.client_id)
        .detail("reason", s.revoke_reason.clone())
        .detail("revoked_at", s.revoked_at.map(rfc3339))
        .detail("device_id", s.device_id.clone())
}

/// A new access-token id.
fn new_jti() -> String {
    super::id_text(Uuid::new_v4())
}

/// Refresh tokens are base64url, which has no dot; a JWT has two.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

fn require_grant(client: &Client, grant: &'static str) -> Result<(), TokenError> {
    if client.allows_grant(grant) {
        Ok(())
    } else {
        Err(TokenError::UnauthorizedClient("the client may not use this grant type"))
    }
}

/// The scope to grant: the requested one when every token of it is allowed, else all allowed
/// scopes when none was requested (RFC 6749 §3.3).
pub fn resolve_scope<'a>(
    requested: Option<&str>,
    allowed: impl Iterator<Item = &'a str> + Clone,
) -> Result<String, TokenError> {
    let requested = requested.map(str::trim).filter(|s| !s.is_empty());
    let Some(requested) = requested else {
        return Ok(allowed.collect::<Vec<_>>().join(" "));
    };
    let mut granted: Vec<&str> = Vec::new();
    for token in requested.split(' ') {
        let valid = !token.is_empty()
            && token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            return Err(TokenError::InvalidScope("the scope is malformed".into()));
        }
        if !allowed.clone().any(|a| a == token) {
            return Err(TokenError::InvalidScope(format!("scope {token} is not allowed")));
        }
        if !granted.contains(&token) {
            granted.push(token);
        }
    }
    Ok(granted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_scope_grants_everything_allowed() {
        assert_eq!(resolve_scope(None, "a b".split(' ')).ok().as_deref(), Some("a b"));
        assert_eq!(resolve_scope(Some("  "), "a b".split(' ')).ok().as_deref(), Some("a b"));
    }

    #[test]
    fn requested_scope_must_be_allowed() {
        assert_eq!(resolve_scope(Some("b b"), "a b".split(' ')).ok().as_deref(), Some("b"));
        assert!(matches!(
            resolve_scope(Some("a c"), "a b".split(' ')),
            Err(TokenError::InvalidScope(_))
        ));
        assert!(matches!(
            resolve_scope(Some("a\"b"), "a b".split(' ')),
            Err(TokenError::InvalidScope(_))
        ));
        assert!(matches!(
            resolve_scope(Some("a  b"), "a b".split(' ')),
            Err(TokenError::InvalidScope(_))
        ));
    }

    #[test]
    fn only_three_part_tokens_look_like_jwts() {
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("abc_-"));
        assert!(!looks_like_jwt("a.b"));
    }
}
