//! The records the storage keeps, and the refresh-rotation rule every backend applies.

use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::clock::Millis;

/// An end user.
#[derive(Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    /// PHC string of an argon2id hash.
    pub password_hash: String,
    pub created_at: Millis,
    pub disabled: bool,
    /// `owner`, `admin`, `member` or `viewer` (see `domain::roles`).
    #[serde(default = "member")]
    pub role: String,
}

fn member() -> String {
    "member".to_owned()
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("password_hash", &"[redacted]")
            .finish()
    }
}

/// A registered OAuth client.
#[derive(Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    /// Hex SHA-256 of the secret; `None` for a public client.
    pub secret_hash: Option<String>,
    /// Allowed grant types, space separated.
    pub grant_types: String,
    /// Allowed scopes, space separated.
    pub scopes: String,
    pub created_at: Millis,
    /// A disabled client authenticates no more, and its tokens act for nobody.
    #[serde(default)]
    pub disabled: bool,
    /// The user who registered the client (through the admin API); `None` for the CLI.
    #[serde(default)]
    pub created_by: Option<String>,
    /// A resource server may introspect tokens issued to any client.
    #[serde(default)]
    pub resource_server: bool,
    /// Where the authorization endpoint may send the browser back, space separated.
    #[serde(default)]
    pub redirect_uris: String,
    /// A first-party client: its users are not asked for consent.
    #[serde(default)]
    pub skip_consent: bool,
    /// The client registered itself (RFC 7591) rather than being registered by an operator.
    #[serde(default)]
    pub registered: bool,
    /// When a registered client was last used (written at most once an hour); unused ones
    /// expire.
    #[serde(default)]
    pub last_used_at: Option<Millis>,
    /// The client is described by its client ID metadata document, fetched from its id; it is
    /// never stored.
    #[serde(skip)]
    #[sqlx(skip)]
    pub metadata_document: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("public", &self.secret_hash.is_none())
            .field("grant_types", &self.grant_types)
            .field("scopes", &self.scopes)
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl Client {
    /// Whether the client has no secret.
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }

    /// Whether the client may use `grant_type`.
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.split_whitespace().any(|g| g == grant_type)
    }

    /// The scopes the client may ask for.
    pub fn scope_list(&self) -> std::str::SplitWhitespace<'_> {
        self.scopes.split_whitespace()
    }

    /// The registered redirect URIs.
    pub fn redirect_uri_list(&self) -> std::str::SplitWhitespace<'_> {
        self.redirect_uris.split_whitespace()
    }
}

/// A resource server tokens may be issued for (RFC 8707): an MCP server of the platform, named
/// by its URI, with the scopes it understands.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct Resource {
    pub uri: String,
    pub name: String,
    /// Space separated.
    pub scopes: String,
    pub created_at: Millis,
}

/// A browser signed in at the authorization endpoint. Its cookie holds a secret; storage
/// keeps the secret's SHA-256. It is not an OAuth session: each authorization code it leads
/// to opens one of those when it is exchanged.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct BrowserSession {
    pub hash: Vec<u8>,
    pub user_id: String,
    pub created_at: Millis,
    pub idle_expires_at: Millis,
    pub expires_at: Millis,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl BrowserSession {
    /// Whether the sign-in still holds at `now`.
    pub fn is_active(&self, now: Millis) -> bool {
        self.expires_at > now && self.idle_expires_at > now
    }
}

/// An authorization code, stored by the SHA-256 of the code, with everything it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct AuthorizationCode {
    pub hash: Vec<u8>,
    pub client_id: String,
    pub redirect_uri: String,
    /// The PKCE S256 challenge: base64url of the SHA-256 of the verifier.
    pub code_challenge: String,
    pub scope: String,
    /// The resource (RFC 8707) the tokens are asked for.
    #[serde(default)]
    pub resource: Option<String>,
    pub user_id: String,
    /// The browser's address and user agent, which describe the device of the session the
    /// code opens.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// How long an authorization code is remembered after it is made, far past its use: a
/// replay within this time still ends what the code opened.
pub const CODE_KEPT_MS: Millis = 3_600_000;

/// What taking an authorization code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeTaken {
    /// The code, taken now for the first time.
    First(Box<AuthorizationCode>),
    /// The code was taken before; it is now marked replayed. The session its first exchange
    /// opened, if that exchange got so far.
    Again { session_id: Option<String> },
    /// No such code (or it was purged).
    Unknown,
}

/// A secret of the server as stored (encrypted with the master key when `encrypted`).
#[derive(Clone, FromRow, PartialEq, Eq)]
pub struct ServerSecret {
    pub value: Vec<u8>,
    pub encrypted: bool,
    pub created_at: Millis,
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSecret").field("encrypted", &self.encrypted).finish()
    }
}

/// A signing key as stored: PKCS#8 DER of the private key, encrypted when `encrypted`.
#[derive(Clone, FromRow)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub private_key: Vec<u8>,
    pub encrypted: bool,
    pub created_at: Millis,
    pub retired_at: Option<Millis>,
    /// When a retired key leaves the JWKS: every token it signed has expired by then.
    pub expires_at: Option<Millis>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("encrypted", &self.encrypted)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

/// A login session; it owns one refresh-token family.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    pub created_at: Millis,
    pub last_used_at: Millis,
    pub idle_expires_at: Millis,
    pub expires_at: Millis,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub revoked_at: Option<Millis>,
    pub revoke_reason: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    /// The `jti` of the access token issued with the live refresh token: a grace retry that
    /// supersedes that pair revokes it.
    #[serde(default)]
    pub access_jti: Option<String>,
    /// The resource (RFC 8707) the session's access tokens are for, their `aud`; `None`: this
    /// server's own audience.
    #[serde(default)]
    pub resource: Option<String>,
}

impl Session {
    /// Whether the session is neither revoked nor past either timeout at `now`.
    pub fn is_active(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at > now && self.idle_expires_at > now
    }
}

/// Why a session ended, as stored in `revoke_reason`.
pub mod revoke_reason {
    pub const REFRESH_TOKEN_REUSE: &str = "refresh_token_reuse";
    pub const REVOKED_BY_CLIENT: &str = "revoked_by_client";
    pub const EVICTED: &str = "evicted";
    pub const LOGOUT: &str = "logout";
    pub const REVOKED_BY_USER: &str = "revoked_by_user";
    pub const DEVICE_REMOVED: &str = "device_removed";
    pub const USER_REVOKED: &str = "user_revoked";
    /// The account was erased.
    pub const USER_ERASED: &str = "user_erased";
    /// The authorization code that opened the session was presented again.
    pub const CODE_REPLAYED: &str = "authorization_code_replayed";
}

/// A device a user signs in from.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub user_id: String,
    /// Hex SHA-256 of the user id with the client's device id, or with the normalised user
    /// agent and platform.
    pub fingerprint: String,
    pub name: String,
    pub platform: Option<String>,
    pub user_agent: Option<String>,
    pub last_ip: Option<String>,
    pub first_seen_at: Millis,
    pub last_seen_at: Millis,
    pub trusted: bool,
}

/// A login as the storage applies it, atomically: upsert the device, evict the least
/// recently used sessions beyond the limit, store the session and its refresh token.
#[derive(Debug, Clone)]
pub struct Login<'a> {
    /// The new session; its `device_id` is set to the device's id by the storage.
    pub session: &'a Session,
    pub refresh_hash: &'a [u8],
    /// The device as seen now; `id` is used only when the device is new.
    pub device: &'a Device,
    /// Whether `device.name` was chosen by the client (and so replaces the stored one).
    pub device_named_by_client: bool,
    /// Live sessions a user may have; the oldest-used ones beyond it are evicted.
    pub max_sessions: usize,
    /// Also index the token by its hash in `refresh_tokens`: only for tokens of the format
    /// before, which do not name their session (imports of such tokens).
    pub index_token: bool,
}

/// A session stored as it is by [`BulkImport::import_sessions`](super::BulkImport):
/// the session (its `device_id` is the device's id), its device and its live refresh token.
#[derive(Debug, Clone)]
pub struct ImportedSession {
    pub session: Session,
    pub device: Device,
    pub refresh_hash: Vec<u8>,
}

/// What a login did.
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub session: Session,
    pub device: Device,
    pub new_device: bool,
    /// Sessions evicted to stay within the limit, revoked with reason `evicted`.
    pub evicted: Vec<Session>,
}

/// Rows removed by one purge pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub revocations: u64,
    pub audit_events: u64,
    pub webhook_deliveries: u64,
    /// Timed-out browser sessions and forgotten authorization codes.
    pub sign_ins: u64,
    /// Registered clients unused for too long.
    pub clients: u64,
    /// The deleted sessions that ended by a timeout rather than a revocation.
    #[serde(skip)]
    pub expired: Vec<Session>,
}

impl PurgeReport {
    /// The count of each kind.
    fn counts(&self) -> [u64; 7] {
        [
            self.sessions,
            self.refresh_tokens,
            self.revocations,
            self.audit_events,
            self.webhook_deliveries,
            self.sign_ins,
            self.clients,
        ]
    }

    /// Whether any kind reached a full batch (so another pass may find more).
    pub fn full(&self, batch: u32) -> bool {
        self.counts().iter().any(|n| *n >= u64::from(batch))
    }

    pub fn add(&mut self, other: PurgeReport) {
        self.sessions += other.sessions;
        self.refresh_tokens += other.refresh_tokens;
        self.revocations += other.revocations;
        self.audit_events += other.audit_events;
        self.webhook_deliveries += other.webhook_deliveries;
        self.sign_ins += other.sign_ins;
        self.clients += other.clients;
        self.expired.extend(other.expired);
    }

    pub fn total(&self) -> u64 {
        self.counts().iter().sum()
    }
}

/// When failed logins lock an account.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub now: Millis,
    /// Failures within this window count together.
    pub window_ms: Millis,
    /// Failures that lock the account.
    pub threshold: i32,
    /// How long the lock lasts.
    pub lock_ms: Millis,
}

/// Whether a login attempt may have its password verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Verify it; report the result with `finish_login_attempt`.
    Verify,
    /// Refused unverified: the account is locked for this address (until then), or as many
    /// attempts as the threshold allows are failed or still being verified.
    Refused { locked_until: Option<Millis> },
}

/// What the purge job removes.
#[derive(Debug, Clone, Copy)]
pub struct PurgePolicy {
    pub now: Millis,
    /// Sessions that ended (revoked, or past a timeout) before this are deleted.
    pub ended_before: Millis,
    /// Refresh tokens used before this are forgotten (reuse of them is no longer detected).
    pub used_before: Millis,
    /// Audit records and finished webhook deliveries older than this are deleted.
    pub audit_before: Millis,
    /// At most this many rows of each kind per pass.
    pub batch: u32,
}

/// One refresh request, as the storage sees it.
#[derive(Debug, Clone)]
pub struct Rotation<'a> {
    /// The session the presented token names (or, for a token of the format before, the
    /// session `refresh_tokens` found for it).
    pub session_id: &'a str,
    /// The presented token's generation; `None` for a token of the format before.
    pub presented_generation: Option<i64>,
    /// SHA-256 of the presented refresh token.
    pub presented_hash: &'a [u8],
    /// SHA-256 of the refresh token to issue, and its generation.
    pub new_hash: &'a [u8],
    pub new_generation: i64,
    /// The authenticated client: a token of another client changes nothing.
    pub client_id: &'a str,
    pub now: Millis,
    pub grace_ms: Millis,
    pub idle_timeout_ms: Millis,
    /// Where the request came from: the session's device is marked seen from there.
    pub ip: Option<&'a str>,
    /// How long a used token is remembered for reuse detection (where storage expires
    /// records by itself).
    pub reuse_window_ms: Millis,
    /// The `jti` of the access token issued with the new refresh token.
    pub new_jti: &'a str,
    /// Until when the access token of a pair that a grace retry supersedes stays on the
    /// revocation list (when it would have expired).
    pub superseded_until: Millis,
}

/// The refresh-token family's state on a session row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Family {
    pub current_hash: Vec<u8>,
    pub previous_hash: Option<Vec<u8>>,
    pub rotated_at: Option<Millis>,
    pub generation: i64,
}

/// A device's last sighting is written at most this often by refreshes.
pub const DEVICE_SEEN_EVERY_MS: Millis = 60_000;

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOutcome {
    /// The live token was used: it is now spent and `new_hash` is live.
    Rotated(Session),
    /// The token rotated last was presented again within the grace period, for the first
    /// time since that rotation: its successor and the access token issued with it are
    /// revoked and `new_hash` is live. A second retry of the same token is reuse.
    Grace(Session),
    /// Any other token of the family: the session is revoked.
    Reused(Session),
    /// The session had ended already (revoked or expired); nothing changed.
    Ended(Session),
    /// Unknown token or session, a token of another client, or a generation the session
    /// never reached; nothing changed.
    Invalid,
}

/// The decision of [`RotationOutcome`] before it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationDecision {
    Rotate,
    Grace,
    Reuse,
    Ended,
    /// Another client's session, or a generation from the future.
    Invalid,
}

impl Rotation<'_> {
    /// The refresh rule. The PostgreSQL function `atoms_rotate_refresh` and the Redis script
    /// apply the same rule in the database; the contract suite proves they agree.
    pub fn decide(&self, session: &Session, family: &Family) -> RotationDecision {
        let from_the_future = self.presented_generation.is_some_and(|g| g > family.generation);
        if session.client_id != self.client_id || from_the_future {
            RotationDecision::Invalid
        } else if !session.is_active(self.now) {
            RotationDecision::Ended
        } else if family.current_hash == self.presented_hash {
            RotationDecision::Rotate
        } else if family.previous_hash.as_deref() == Some(self.presented_hash)
            && family.rotated_at.is_some_and(|at| self.now - at <= self.grace_ms)
        {
            RotationDecision::Grace
        } else {
            RotationDecision::Reuse
        }
    }

    /// The generation the session reaches: a grace retry issues the generation of the token
    /// it replaces, so the session's never goes back.
    pub fn reached_generation(&self, family: &Family) -> i64 {
        self.new_generation.max(family.generation)
    }

    /// The idle expiry a session gets when it is used now.
    pub fn idle_expiry(&self, session: &Session) -> Millis {
        (self.now + self.idle_timeout_ms).min(session.expires_at)
    }
}

/// What introspection needs to know of an access token beyond its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessTokenState {
    /// The token id is on the revocation list.
    pub revoked: bool,
    /// The token's session, when it has one, is active: `None` when the token has no session
    /// or the session is gone.
    pub session: Option<SessionLiveness>,
}

/// The liveness fields of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLiveness {
    pub revoked: bool,
    pub expires_at: Millis,
    pub idle_expires_at: Millis,
}

impl AccessTokenState {
    /// Whether a token with this state is active at `now`.
    pub fn is_active(&self, has_session: bool, now: Millis) -> bool {
        if self.revoked {
            return false;
        }
        match (has_session, self.session) {
            (false, _) => true,
            (true, None) => false,
            (true, Some(s)) => !s.revoked && s.expires_at > now && s.idle_expires_at > now,
        }
    }
}

/// One migration and its state in the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub applied: bool,
    /// False when the applied migration differs from the one this binary carries.
    pub checksum_ok: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: Millis) -> Session {
        Session {
            id: "s".into(),
            user_id: "u".into(),
            client_id: "c".into(),
            scope: "read".into(),
            created_at: now,
            last_used_at: now,
            idle_expires_at: now + 1_000_000,
            expires_at: now + 2_000_000,
            ip: None,
            user_agent: None,
            revoked_at: None,
            revoke_reason: None,
            device_id: None,
            access_jti: None,
            resource: None,
        }
    }

    fn rotation<'a>(presented: &'a [u8], now: Millis) -> Rotation<'a> {
        Rotation {
            session_id: "s",
            presented_generation: Some(4),
            presented_hash: presented,
            new_hash: b"new",
            new_generation: 5,
            client_id: "c",
            now,
            grace_ms: 300_000,
            idle_timeout_ms: 1_000_000,
            ip: None,
            reuse_window_ms: 1_000_000,
            new_jti: "j",
            superseded_until: 0,
        }
    }

    fn family(previous: Option<&[u8]>) -> Family {
        Family {
            current_hash: b"cur".to_vec(),
            previous_hash: previous.map(<[u8]>::to_vec),
            rotated_at: previous.map(|_| 0),
            generation: 4,
        }
    }

    #[test]
    fn live_token_rotates() {
        let s = session(0);
        let r = rotation(b"cur", 10);
        assert_eq!(r.decide(&s, &family(Some(b"prev"))), RotationDecision::Rotate);
        assert_eq!(r.reached_generation(&family(None)), 5);
    }

    #[test]
    fn just_rotated_token_within_grace_is_grace() {
        let s = session(0);
        let mut r = rotation(b"prev", 300_000);
        r.presented_generation = Some(3);
        r.new_generation = 4;
        assert_eq!(r.decide(&s, &family(Some(b"prev"))), RotationDecision::Grace);
        assert_eq!(r.reached_generation(&family(None)), 4, "never goes back");
    }

    #[test]
    fn just_rotated_token_after_grace_is_reuse() {
        let s = session(0);
        let r = rotation(b"prev", 300_001);
        assert_eq!(r.decide(&s, &family(Some(b"prev"))), RotationDecision::Reuse);
    }

    #[test]
    fn older_token_is_reuse_even_within_grace() {
        let s = session(0);
        let mut r = rotation(b"older", 1);
        r.presented_generation = Some(1);
        assert_eq!(r.decide(&s, &family(Some(b"prev"))), RotationDecision::Reuse);
        // A token of the format before that is no longer live: reuse too.
        r.presented_generation = None;
        assert_eq!(r.decide(&s, &family(Some(b"prev"))), RotationDecision::Reuse);
    }

    #[test]
    fn a_generation_from_the_future_changes_nothing() {
        let s = session(0);
        let mut r = rotation(b"unknown", 1);
        r.presented_generation = Some(5);
        assert_eq!(r.decide(&s, &family(None)), RotationDecision::Invalid);
    }

    #[test]
    fn token_of_another_client_changes_nothing() {
        let s = session(0);
        let mut r = rotation(b"cur", 1);
        r.client_id = "other";
        assert_eq!(r.decide(&s, &family(None)), RotationDecision::Invalid);
    }

    #[test]
    fn ended_session_is_not_rotated() {
        let mut s = session(0);
        s.revoked_at = Some(1);
        assert_eq!(rotation(b"cur", 2).decide(&s, &family(None)), RotationDecision::Ended);
        let s = session(0);
        assert_eq!(rotation(b"cur", 1_000_000).decide(&s, &family(None)), RotationDecision::Ended);
    }

    #[test]
    fn idle_expiry_never_passes_the_absolute_expiry() {
        let s = session(0);
        assert_eq!(rotation(b"cur", 1_500_000).idle_expiry(&s), 2_000_000);
        assert_eq!(rotation(b"cur", 10).idle_expiry(&s), 1_000_010);
    }

    #[test]
    fn access_token_state_follows_its_session() {
        let live = SessionLiveness { revoked: false, expires_at: 10, idle_expires_at: 10 };
        let state = AccessTokenState { revoked: false, session: Some(live) };
        assert!(state.is_active(true, 5));
        assert!(!state.is_active(true, 10));
        let revoked = AccessTokenState { revoked: true, session: None };
        assert!(!revoked.is_active(false, 0));
        let gone = AccessTokenState { revoked: false, session: None };
        assert!(!gone.is_active(true, 0));
        assert!(gone.is_active(false, 0));
    }
}
