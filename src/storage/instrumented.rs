//! A storage wrapper that times every operation and counts its failures, for any backend.

use std::sync::Arc;

use async_trait::async_trait;

use super::*;
use crate::metrics::Metrics;

/// Any storage, with each call timed into [`Metrics`].
pub struct Instrumented {
    inner: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn wrap(inner: Arc<dyn Storage>, metrics: Arc<Metrics>) -> Arc<dyn Storage> {
        Arc::new(Self { inner, metrics })
    }
}

/// Implements each storage trait by timing the same call on the inner storage.
macro_rules! timed {
    ($($trait:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* })*) => {
        $(
            #[async_trait]
            impl $trait for Instrumented {
                $(
                    async fn $name(&self $(, $arg: $ty)*) -> StorageResult<$ret> {
                        let timer = self.metrics.storage_op(stringify!($name));
                        let result = self.inner.$name($($arg),*).await;
                        timer.finish(result.is_ok());
                        result
                    }
                )*
            }
        )*
    };
}

timed! {
    UserStore {
        fn create_user(&self, user: &User) -> ();
        fn user_by_username(&self, username: &str) -> Option<User>;
        fn user_by_id(&self, id: &str) -> Option<User>;
        fn set_user_role(&self, id: &str, role: &str) -> bool;
        fn delete_user(&self, id: &str) -> bool;
    }
    ClientStore {
        fn create_client(&self, client: &Client) -> ();
        fn client(&self, client_id: &str) -> Option<Client>;
        fn clients(&self) -> Vec<Client>;
        fn update_client(&self, client: &Client) -> bool;
        fn delete_client(&self, client_id: &str) -> bool;
        fn touch_client(&self, client_id: &str, at: Millis) -> ();
        fn purge_unused_clients(&self, cutoff: Millis, limit: i64) -> Vec<String>;
    }
    KeyStore {
        fn signing_keys(&self, now: Millis) -> Vec<StoredKey>;
        fn rotate_signing_key(&self, expected: Option<&str>, key: &StoredKey, until: Millis) -> bool;
        fn server_secret(&self, name: &str, candidate: &ServerSecret) -> ServerSecret;
    }
    SessionStore {
        fn create_session(&self, login: &Login<'_>) -> LoginOutcome;
        fn session(&self, id: &str) -> Option<Session>;
        fn user_sessions(&self, user_id: &str, now: Millis) -> Vec<(Session, Option<Device>)>;
        fn revoke_user_sessions(&self, user_id: UserId<'_>, except: Option<SessionId<'_>>, now: Millis, reason: &str) -> Vec<Session>;
        fn session_by_refresh(&self, hash: &[u8], session_id: Option<&str>) -> Option<(Session, bool)>;
        fn rotate_refresh(&self, rotation: &Rotation<'_>) -> RotationOutcome;
        fn revoke_session(&self, id: &str, now: Millis, reason: &str) -> Option<Session>;
    }
    DeviceStore {
        fn user_devices(&self, user_id: &str) -> Vec<Device>;
        fn device(&self, user_id: UserId<'_>, id: DeviceId<'_>) -> Option<Device>;
        fn update_device(&self, user_id: UserId<'_>, id: DeviceId<'_>, name: Option<&str>, trusted: Option<bool>) -> Option<Device>;
        fn delete_device(&self, user_id: UserId<'_>, id: DeviceId<'_>, now: Millis) -> Option<Vec<Session>>;
    }
    Maintenance {
        fn purge(&self, policy: &PurgePolicy) -> PurgeReport;
    }
    LockoutStore {
        fn begin_login_attempt(&self, key: &str, policy: &LockoutPolicy) -> Admission;
        fn finish_login_attempt(&self, key: &str, succeeded: bool, policy: &LockoutPolicy) -> Option<Millis>;
    }
    AuditStore {
        fn append_audit(&self, records: Arc<[AuditRecord]>) -> ();
        fn query_audit(&self, query: &AuditQuery) -> Vec<AuditRecord>;
        fn rewrite_audit(&self, user_id: &str, records: &[AuditRecord]) -> ();
    }
    WebhookStore {
        fn create_webhook(&self, subscription: &WebhookSubscription) -> ();
        fn webhooks(&self) -> Vec<WebhookSubscription>;
        fn webhook(&self, id: &str) -> Option<WebhookSubscription>;
        fn delete_webhook(&self, id: &str) -> bool;
        fn enqueue_webhook(&self, event: &WebhookEvent<'_>) -> u64;
        fn claim_deliveries(&self, now: Millis, lease_until: Millis, limit: u32) -> Vec<WebhookDelivery>;
        fn finish_attempt(&self, result: &AttemptResult<'_>) -> ();
        fn deliveries(&self, subscription_id: &str, limit: u32) -> Vec<(WebhookDelivery, Vec<WebhookAttempt>)>;
        fn webhook_backlog(&self) -> WebhookBacklog;
    }
    ResourceStore {
        fn create_resource(&self, resource: &Resource) -> ();
        fn resources(&self) -> Vec<Resource>;
        fn resource(&self, uri: &str) -> Option<Resource>;
        fn delete_resource(&self, uri: &str) -> bool;
    }
    SignInStore {
        fn create_browser_session(&self, session: &BrowserSession) -> ();
        fn touch_browser_session(&self, hash: &[u8], now: Millis, idle_until: Millis) -> Option<BrowserSession>;
        fn end_browser_session(&self, hash: &[u8]) -> ();
        fn end_user_browser_sessions(&self, user_id: UserId<'_>) -> u64;
        fn consent(&self, user_id: UserId<'_>, client_id: &str) -> Option<String>;
        fn save_consent(&self, user_id: UserId<'_>, client_id: &str, scopes: &str, now: Millis) -> ();
        fn create_code(&self, code: &AuthorizationCode) -> ();
        fn take_code(&self, hash: &[u8], now: Millis) -> CodeTaken;
        fn bind_code_session(&self, hash: &[u8], session_id: &str) -> bool;
    }
    RevocationStore {
        fn revoke_access_token(&self, jti: &str, expires_at: Millis) -> ();
        fn access_token_state(&self, jti: &str, session_id: Option<&str>) -> AccessTokenState;
    }
    Migrations {
        fn migrate_up(&self) -> ();
        fn migrate_down(&self, steps: usize) -> ();
        fn migration_status(&self) -> Vec<MigrationStatus>;
    }
}

#[async_trait]
impl Storage for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> StorageResult<()> {
        let timer = self.metrics.storage_op("ping");
        let result = self.inner.ping().await;
        timer.finish(result.is_ok());
        result
    }

    fn pool(&self) -> Option<PoolState> {
        self.inner.pool()
    }

    async fn count_active_sessions(&self, now: Millis) -> StorageResult<u64> {
        let timer = self.metrics.storage_op("count_active_sessions");
        let result = self.inner.count_active_sessions(now).await;
        timer.finish(result.is_ok());
        result
    }
}
