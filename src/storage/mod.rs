//! Storage behind traits. Each rule that must be atomic is one trait method, so each backend
//! makes it atomic in its own way: a PostgreSQL function call, a Redis Lua script, a SQLite
//! `BEGIN IMMEDIATE` transaction. Nothing outside this module knows which backend runs.

mod batch;
mod events;
mod instrumented;
mod models;
pub mod postgres;
pub mod redis;
pub mod shared;
mod sql;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Millis;
use crate::ids::{DeviceId, SessionId, UserId};
pub use events::*;
pub use instrumented::Instrumented;
pub use models::*;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique constraint was violated (a username or client id that exists).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The storage URL is not understood.
    #[error("unsupported storage url: {0}")]
    UnsupportedUrl(String),
    /// A stored value could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("migration error: {0}")]
    Migration(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Redis(#[from] ::redis::RedisError),
    #[error("storage timed out: {0}")]
    Timeout(&'static str),
    /// A group commit failed: every operation of the group reports it.
    #[error("storage write failed: {0}")]
    Write(String),
    /// A batched read failed: every lookup of the batch reports it.
    #[error("storage read failed: {0}")]
    Read(String),
    /// The storage could not be reached (a batched read's failure, passed to each caller).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StorageError {
    /// Whether the storage could not be reached or did not answer in time, rather than
    /// refused the operation: the request may succeed when retried later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Unavailable(_) => true,
            Self::Sql(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // Class 08 (connection exception) and 57P01-57P03 (the server shutting down
                // or starting up).
                sqlx::Error::Database(e) => e.code().is_some_and(|code| {
                    code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
                }),
                _ => false,
            },
            Self::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_connection_dropped()
            }
            _ => false,
        }
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// Users and their password hashes.
#[async_trait]
pub trait UserStore {
    async fn create_user(&self, user: &User) -> StorageResult<()>;
    async fn user_by_username(&self, username: &str) -> StorageResult<Option<User>>;
    async fn user_by_id(&self, id: &str) -> StorageResult<Option<User>>;
    /// Changes a user's role; false when there is no such user.
    async fn set_user_role(&self, id: &str, role: &str) -> StorageResult<bool>;
    /// Deletes the account with everything that is only its own: its sessions (ended or
    /// not), devices, consents, browser sign-ins and codes. False when there is no such user.
    async fn delete_user(&self, id: &str) -> StorageResult<bool>;
}

/// Registered OAuth clients.
#[async_trait]
pub trait ClientStore {
    async fn create_client(&self, client: &Client) -> StorageResult<()>;
    async fn client(&self, client_id: &str) -> StorageResult<Option<Client>>;
    /// Every client, by id.
    async fn clients(&self) -> StorageResult<Vec<Client>>;
    /// Replaces what can change of a client (its secret hash, disabled flag, redirect URIs
    /// and consent setting); false when there is no such client.
    async fn update_client(&self, client: &Client) -> StorageResult<bool>;
    /// Deletes a client; false when there was none. Its sessions stay until they end.
    async fn delete_client(&self, client_id: &str) -> StorageResult<bool>;
    /// Notes that a registered client was used at `at`.
    async fn touch_client(&self, client_id: &str, at: Millis) -> StorageResult<()>;
    /// Deletes up to `limit` registered clients last used (or, never used, registered)
    /// before `cutoff`; returns their ids.
    async fn purge_unused_clients(&self, cutoff: Millis, limit: i64) -> StorageResult<Vec<String>>;
}

/// Signing keys. The active key is the newest one not retired.
#[async_trait]
pub trait KeyStore {
    /// Every key whose tokens may still be alive at `now` (not retired, or retired with
    /// `expires_at` in the future), newest first.
    async fn signing_keys(&self, now: Millis) -> StorageResult<Vec<StoredKey>>;
    /// Atomically: when the active key is `expected_active` (None: no key at all), inserts `key`
    /// and retires every other key with `retired_at = key.created_at` and `expires_at =
    /// retire_until`. Returns false, changing nothing, when another instance rotated first.
    async fn rotate_signing_key(
        &self,
        expected_active: Option<&str>,
        key: &StoredKey,
        retire_until: Millis,
    ) -> StorageResult<bool>;
    /// The server secret `name`: `candidate` is stored when there is none yet, atomically,
    /// so every instance gets the same one. Returns it as stored.
    async fn server_secret(
        &self,
        name: &str,
        candidate: &ServerSecret,
    ) -> StorageResult<ServerSecret>;
}

/// Sessions and their refresh-token families.
#[async_trait]
pub trait SessionStore {
    /// A login, atomically: see [`Login`].
    async fn create_session(&self, login: &Login<'_>) -> StorageResult<LoginOutcome>;
    async fn session(&self, id: &str) -> StorageResult<Option<Session>>;
    /// The user's sessions that are active at `now`, most recently used first, each with its
    /// device (one read: listing sessions is a hot path).
    async fn user_sessions(
        &self,
        user_id: &str,
        now: Millis,
    ) -> StorageResult<Vec<(Session, Option<Device>)>>;
    /// Ends every active session of a user but `except`; returns the ended sessions.
    async fn revoke_user_sessions(
        &self,
        user_id: UserId<'_>,
        except: Option<SessionId<'_>>,
        now: Millis,
        reason: &str,
    ) -> StorageResult<Vec<Session>>;
    /// The session a refresh token belongs to, and whether it is the family's live token:
    /// the session `session_id` names (a token that names its session), or the one
    /// `refresh_tokens` knows the hash of (a token of the format before, when `None`).
    async fn session_by_refresh(
        &self,
        hash: &[u8],
        session_id: Option<&str>,
    ) -> StorageResult<Option<(Session, bool)>>;
    /// The refresh rule, atomically: see [`Rotation`] and [`RotationOutcome`].
    async fn rotate_refresh(&self, rotation: &Rotation<'_>) -> StorageResult<RotationOutcome>;
    /// Ends a session; returns it when it was live (no effect when it had ended already).
    async fn revoke_session(
        &self,
        id: &str,
        now: Millis,
        reason: &str,
    ) -> StorageResult<Option<Session>>;
}

/// Loading users and sessions as they are, in bulk and without the session limit: for data
/// moved from another system, and for seeding benchmarks. Not part of [`Storage`]: the
/// server never imports; [`connect_bulk_import`] opens a backend for it.
#[async_trait]
pub trait BulkImport: Send + Sync {
    /// Stores users and their sessions as they are. Each device must be new; an existing id
    /// is a conflict.
    async fn import_sessions(
        &self,
        users: &[User],
        sessions: &[ImportedSession],
    ) -> StorageResult<()>;
}

/// Devices of users. Every method takes the owner, so no user reaches another's device.
#[async_trait]
pub trait DeviceStore {
    async fn user_devices(&self, user_id: &str) -> StorageResult<Vec<Device>>;
    async fn device(&self, user_id: UserId<'_>, id: DeviceId<'_>) -> StorageResult<Option<Device>>;
    /// Renames and/or (un)trusts a device; `None` when the user has no such device.
    async fn update_device(
        &self,
        user_id: UserId<'_>,
        id: DeviceId<'_>,
        name: Option<&str>,
        trusted: Option<bool>,
    ) -> StorageResult<Option<Device>>;
    /// Deletes a device and ends its sessions; `None` when the user has no such device.
    async fn delete_device(
        &self,
        user_id: UserId<'_>,
        id: DeviceId<'_>,
        now: Millis,
    ) -> StorageResult<Option<Vec<Session>>>;
}

/// The registered resources (RFC 8707).
#[async_trait]
pub trait ResourceStore {
    /// Registers a resource; a URI registered already is a conflict.
    async fn create_resource(&self, resource: &Resource) -> StorageResult<()>;
    /// Every registered resource, by URI.
    async fn resources(&self) -> StorageResult<Vec<Resource>>;
    async fn resource(&self, uri: &str) -> StorageResult<Option<Resource>>;
    /// Deletes a resource; false when there was none.
    async fn delete_resource(&self, uri: &str) -> StorageResult<bool>;
}

/// Browser sign-in: the browsers signed in at the authorization endpoint, the consents users
/// gave, and authorization codes.
#[async_trait]
pub trait SignInStore {
    async fn create_browser_session(&self, session: &BrowserSession) -> StorageResult<()>;
    /// The browser session with this hash when it is active at `now`; its idle expiry moves
    /// to `idle_until` (never past its absolute expiry).
    async fn touch_browser_session(
        &self,
        hash: &[u8],
        now: Millis,
        idle_until: Millis,
    ) -> StorageResult<Option<BrowserSession>>;
    /// Ends a browser session (sign-out); no effect when there is none.
    async fn end_browser_session(&self, hash: &[u8]) -> StorageResult<()>;
    /// Ends every browser session of a user; returns how many there were.
    async fn end_user_browser_sessions(&self, user_id: UserId<'_>) -> StorageResult<u64>;
    /// The scopes the user allowed the client, space separated.
    async fn consent(&self, user_id: UserId<'_>, client_id: &str) -> StorageResult<Option<String>>;
    /// Remembers the scopes the user allowed the client (replacing what was remembered).
    async fn save_consent(
        &self,
        user_id: UserId<'_>,
        client_id: &str,
        scopes: &str,
        now: Millis,
    ) -> StorageResult<()>;
    async fn create_code(&self, code: &AuthorizationCode) -> StorageResult<()>;
    /// Takes a code, atomically: the first taker gets it; any later one marks it replayed.
    async fn take_code(&self, hash: &[u8], now: Millis) -> StorageResult<CodeTaken>;
    /// Records the session that the code's exchange opened. Returns false when the code was
    /// replayed meanwhile (so the session must end).
    async fn bind_code_session(&self, hash: &[u8], session_id: &str) -> StorageResult<bool>;
}

/// Housekeeping.
#[async_trait]
pub trait Maintenance {
    /// Deletes at most `policy.batch` ended sessions, forgotten refresh tokens and stale
    /// revocation entries each.
    async fn purge(&self, policy: &PurgePolicy) -> StorageResult<PurgeReport>;
}

/// Login attempts per account and address, for the lockout. An attempt is counted before
/// its password is verified, so a burst of parallel guesses cannot pass the threshold.
#[async_trait]
pub trait LockoutStore {
    /// Admits one attempt under `key`, atomically: refused while the key is locked, or while
    /// failed and pending attempts of the window reach the threshold; else counted pending.
    async fn begin_login_attempt(
        &self,
        key: &str,
        policy: &LockoutPolicy,
    ) -> StorageResult<Admission>;
    /// Ends an admitted attempt, atomically: a success forgets the failures, a failure counts
    /// one. When a failure reaches the threshold the key is locked and the lock's end is
    /// returned (by exactly one of several concurrent failures).
    async fn finish_login_attempt(
        &self,
        key: &str,
        succeeded: bool,
        policy: &LockoutPolicy,
    ) -> StorageResult<Option<Millis>>;
}

/// The audit log.
#[async_trait]
pub trait AuditStore {
    /// Appends records (one batch, one round trip where the backend allows).
    /// Shared, so a backend that hands the batch to another task does not copy it.
    async fn append_audit(&self, records: Arc<[AuditRecord]>) -> StorageResult<()>;
    /// Records matching the query, newest first, at most `limit`.
    async fn query_audit(&self, query: &AuditQuery) -> StorageResult<Vec<AuditRecord>>;
    /// Stores `records` over the stored records of the same ids, which were `user_id`'s;
    /// their id, time and event are unchanged, the rest (their user too) may change.
    async fn rewrite_audit(&self, user_id: &str, records: &[AuditRecord]) -> StorageResult<()>;
}

/// Webhook subscriptions and the durable delivery queue.
#[async_trait]
pub trait WebhookStore {
    async fn create_webhook(&self, subscription: &WebhookSubscription) -> StorageResult<()>;
    async fn webhooks(&self) -> StorageResult<Vec<WebhookSubscription>>;
    async fn webhook(&self, id: &str) -> StorageResult<Option<WebhookSubscription>>;
    /// Deletes a subscription and its deliveries; false when there was none.
    async fn delete_webhook(&self, id: &str) -> StorageResult<bool>;
    /// Fans an event out, atomically, to every subscription of its type (or the one named):
    /// one pending delivery each. Returns how many were queued.
    async fn enqueue_webhook(&self, event: &WebhookEvent<'_>) -> StorageResult<u64>;
    /// Claims up to `limit` due deliveries until `lease_until`, starting an attempt of each.
    /// A claimed delivery is invisible to every other claimer until its lease ends, so no two
    /// instances deliver the same attempt at once.
    async fn claim_deliveries(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> StorageResult<Vec<WebhookDelivery>>;
    /// Logs an attempt and moves its delivery to its next state.
    async fn finish_attempt(&self, result: &AttemptResult<'_>) -> StorageResult<()>;
    /// A subscription's newest deliveries with their attempts.
    async fn deliveries(
        &self,
        subscription_id: &str,
        limit: u32,
    ) -> StorageResult<Vec<(WebhookDelivery, Vec<WebhookAttempt>)>>;
    async fn webhook_backlog(&self) -> StorageResult<WebhookBacklog>;
}

/// Revoked access-token ids, kept until the token would have expired.
#[async_trait]
pub trait RevocationStore {
    async fn revoke_access_token(&self, jti: &str, expires_at: Millis) -> StorageResult<()>;
    /// What introspection of an access token needs, in one round trip where possible.
    async fn access_token_state(
        &self,
        jti: &str,
        session_id: Option<&str>,
    ) -> StorageResult<AccessTokenState>;
}

/// Schema management.
#[async_trait]
pub trait Migrations {
    /// Applies every pending migration.
    async fn migrate_up(&self) -> StorageResult<()>;
    /// Reverts the newest `steps` applied migrations.
    async fn migrate_down(&self, steps: usize) -> StorageResult<()>;
    /// Every known migration and whether (and how faithfully) it is applied.
    async fn migration_status(&self) -> StorageResult<Vec<MigrationStatus>>;
}

/// The whole storage of the server.
#[async_trait]
pub trait Storage:
    UserStore
    + ClientStore
    + KeyStore
    + SessionStore
    + DeviceStore
    + SignInStore
    + ResourceStore
    + RevocationStore
    + LockoutStore
    + AuditStore
    + WebhookStore
    + Maintenance
    + Migrations
    + Send
    + Sync
{
    /// Backend name for logs and metrics.
    fn backend(&self) -> &'static str;
    /// One real round trip.
    async fn ping(&self) -> StorageResult<()>;
    /// Connections of the pool, where the backend pools them.
    fn pool(&self) -> Option<PoolState> {
        None
    }
    /// Sessions neither ended nor expired at `now`.
    async fn count_active_sessions(&self, now: Millis) -> StorageResult<u64>;
}

/// Connection-pool occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    pub size: u32,
    pub idle: u32,
    /// The most connections the pools may open.
    pub max: u32,
}

/// Connection options that are not part of the URL.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub pool_size: u32,
    pub redis_key_prefix: String,
    /// The longest a connection or a Redis answer is waited for.
    pub timeout: std::time::Duration,
}

/// The storage timeout when none is configured.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the backend named by the URL scheme for a bulk import.
pub async fn connect_bulk_import(
    url: &str,
    options: &ConnectOptions,
) -> StorageResult<Arc<dyn BulkImport>> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "sqlite" => Ok(Arc::new(sqlite::connect(url, options).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(postgres::connect(url, options).await?)),
        "redis" | "rediss" => Ok(Arc::new(redis::RedisStorage::connect(url, options).await?)),
        _ => Err(StorageError::UnsupportedUrl(scheme.to_owned())),
    }
}

/// Opens the backend named by the URL scheme.
pub async fn connect(url: &str, options: &ConnectOptions) -> StorageResult<Arc<dyn Storage>> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "sqlite" => Ok(Arc::new(sqlite::connect(url, options).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(postgres::connect(url, options).await?)),
        "redis" | "rediss" => Ok(Arc::new(redis::RedisStorage::connect(url, options).await?)),
        _ => Err(StorageError::UnsupportedUrl(scheme.to_owned())),
    }
}
