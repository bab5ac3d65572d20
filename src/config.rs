//! Typed configuration: built-in defaults, then an optional TOML file, then `ATOMS_AUTH_*`
//! environment variables. Every default works out of the box; secrets are redacted.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The whole server configuration, in sections. Each setting keeps the flat name it has in
/// a TOML file and, upper-cased after `ATOMS_AUTH_`, as an environment variable (the
/// `rename` of each field); durations are read as whole seconds (`_secs`) or milliseconds
/// (`_ms`), as their names say.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub server: ServerConfig,
    #[serde(flatten)]
    pub storage: StorageConfig,
    #[serde(flatten)]
    pub tokens: TokenConfig,
    #[serde(flatten)]
    pub sessions: SessionConfig,
    #[serde(flatten)]
    pub lockout: LockoutConfig,
    #[serde(flatten)]
    pub keys: KeyConfig,
    #[serde(flatten)]
    pub audit: AuditConfig,
    #[serde(flatten)]
    pub purge: PurgeConfig,
    #[serde(flatten)]
    pub webhooks: WebhookConfig,
    #[serde(flatten)]
    pub rate_limits: RateLimitConfig,
    #[serde(flatten)]
    pub registration: RegistrationConfig,
}

/// How clients with no prior relationship identify themselves: dynamic client registration
/// (RFC 7591) at `/auth/register`, and client ID metadata documents (a `client_id` that is an
/// https URL).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistrationConfig {
    /// `off` (no endpoint), `open` (anyone may register), or `token` (registration needs the
    /// initial access token).
    #[serde(rename = "registration_policy")]
    pub policy: RegistrationPolicy,
    /// The initial access token of the `token` policy, sent as a bearer token.
    #[serde(rename = "registration_initial_access_token", skip_serializing)]
    pub initial_access_token: Option<SecretString>,
    /// A registered client unused for this long is deleted by the purge job (0: never).
    #[serde(rename = "registered_client_unused_ttl_secs", with = "secs")]
    pub unused_client_ttl: Duration,
    /// Accept client ID metadata documents.
    #[serde(rename = "client_metadata_documents")]
    pub metadata_documents: bool,
    /// A fetched document is kept as its `Cache-Control` says, but at least and at most this.
    #[serde(rename = "client_metadata_cache_min_secs", with = "secs")]
    pub metadata_cache_min: Duration,
    #[serde(rename = "client_metadata_cache_max_secs", with = "secs")]
    pub metadata_cache_max: Duration,
    /// Fetch documents from loopback, private and link-local addresses, and over http
    /// (development, tests).
    #[serde(rename = "client_metadata_allow_private")]
    pub metadata_allow_private: bool,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            policy: RegistrationPolicy::Off,
            initial_access_token: None,
            unused_client_ttl: Duration::from_secs(90 * DAY),
            metadata_documents: true,
            metadata_cache_min: Duration::from_secs(300),
            metadata_cache_max: Duration::from_secs(DAY),
            metadata_allow_private: false,
        }
    }
}

/// Who may register clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationPolicy {
    #[default]
    Off,
    Open,
    Token,
}

/// The HTTP listeners, the names the server goes by, and the limits on what clients send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Serve `/metrics` on this address only (not on `listen`), e.g. a port that only the
    /// monitoring network reaches. Unset: `/metrics` is on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// The `iss` of issued tokens and the base of the metadata URLs. Defaults to
    /// `http://{listen}`.
    pub issuer: Option<String>,
    /// The `aud` of issued access tokens. Defaults to the issuer.
    pub audience: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed: addresses or CIDR ranges.
    pub trusted_proxies: Networks,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers at all.
    pub cors_origins: List,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// A request that takes longer is answered 503.
    #[serde(rename = "request_timeout_secs", with = "secs")]
    pub request_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// A request's headers must arrive within this time (HTTP/1); it also bounds how long an
    /// idle keep-alive connection waits for its next request.
    #[serde(rename = "header_read_timeout_secs", with = "secs")]
    pub header_read_timeout: Duration,
    /// A connection that moves no byte for this long is closed.
    #[serde(rename = "idle_timeout_secs", with = "secs")]
    pub idle_timeout: Duration,
    /// Serve HTTPS on `listen` with this PEM certificate chain and key (both or neither);
    /// the files are read again when they change.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM certificates of further root authorities trusted by outbound requests (webhook
    /// deliveries, client metadata documents), e.g. a company's own CA.
    pub outbound_ca_file: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            issuer: None,
            audience: None,
            trusted_proxies: Networks::default(),
            cors_origins: List::default(),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            tls_cert: None,
            tls_key: None,
            outbound_ca_file: None,
        }
    }
}

/// Where the state lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Storage URL; the scheme picks the backend (`sqlite`, `postgres`, `redis`). It may
    /// carry a password, so it is kept as a secret.
    #[serde(serialize_with = "exposed")]
    pub database_url: SecretString,
    /// Maximum pooled storage connections.
    #[serde(rename = "database_pool_size")]
    pub pool_size: u32,
    /// Prefix of every Redis key, so several deployments or tests can share one Redis.
    pub redis_key_prefix: String,
    /// Redis for state shared by instances (rate limits), and the health check's cache.
    /// Unset with a Redis storage URL: that Redis is used.
    #[serde(skip_serializing)]
    pub redis_url: Option<SecretString>,
    /// Run pending migrations when the server starts.
    pub auto_migrate: bool,
    /// The longest a request waits for a storage connection or a Redis answer: while the
    /// database is away, requests answer 503 within this time.
    #[serde(rename = "storage_timeout_secs", with = "secs")]
    pub timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            database_url: SecretString::from("sqlite://atoms-auth.db?mode=rwc"),
            pool_size: 16,
            redis_key_prefix: "atoms-auth".to_owned(),
            redis_url: None,
            auto_migrate: true,
            timeout: Duration::from_secs(5),
        }
    }
}

impl StorageConfig {
    /// The storage URL.
    pub fn url(&self) -> &str {
        self.database_url.expose_secret()
    }

    /// The Redis shared by instances: the configured one, else the storage's when it is Redis.
    pub fn shared_redis_url(&self) -> Option<&str> {
        let configured = self.redis_url.as_ref().map(|u| u.expose_secret());
        configured
            .filter(|u| !u.is_empty())
            .or_else(|| crate::storage::shared::is_redis_url(self.url()).then_some(self.url()))
    }
}

/// Lifetimes of tokens and of what the server remembers about them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// Access-token lifetime.
    #[serde(rename = "access_token_ttl_secs", with = "secs")]
    pub access_ttl: Duration,
    /// How long the refresh token that was just rotated may be presented again.
    #[serde(rename = "refresh_grace_secs", with = "secs")]
    pub refresh_grace: Duration,
    /// How long a used refresh token is remembered, so that presenting it again is detected
    /// as reuse (and revokes the family) rather than answered as an unknown token.
    #[serde(rename = "refresh_reuse_window_secs", with = "secs")]
    pub refresh_reuse_window: Duration,
    /// How long a client record is cached in memory: changes to a client reach a running
    /// instance within this time.
    #[serde(rename = "client_cache_ttl_secs", with = "secs")]
    pub client_cache_ttl: Duration,
    /// Resources (RFC 8707) registered at start when they are not yet: entries
    /// `URI=scope scope…`, e.g. `https://mcp.example.com/mcp=notes:read notes:write`.
    pub resources: List,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_grace: Duration::from_secs(300),
            refresh_reuse_window: Duration::from_secs(7 * DAY),
            client_cache_ttl: Duration::from_secs(30),
            resources: List::default(),
        }
    }
}

/// How long sessions live, and how many a user may have.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionConfig {
    /// A session ends after this long without a refresh.
    #[serde(rename = "session_idle_timeout_secs", with = "secs")]
    pub idle_timeout: Duration,
    /// A session ends this long after the login, whatever its use.
    #[serde(rename = "session_max_lifetime_secs", with = "secs")]
    pub max_lifetime: Duration,
    /// Live sessions a user may have; a login beyond it evicts the least recently used one.
    #[serde(rename = "max_sessions_per_user")]
    pub max_per_user: usize,
    /// Ended sessions are deleted this long after they ended.
    #[serde(rename = "ended_session_retention_secs", with = "secs")]
    pub ended_retention: Duration,
    /// A browser signed in at the authorization endpoint stays signed in this long without
    /// a visit.
    #[serde(rename = "browser_session_idle_timeout_secs", with = "secs")]
    pub browser_idle_timeout: Duration,
    /// A browser's sign-in ends this long after it began, however it is used.
    #[serde(rename = "browser_session_max_lifetime_secs", with = "secs")]
    pub browser_max_lifetime: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(7 * DAY),
            max_lifetime: Duration::from_secs(30 * DAY),
            max_per_user: 10,
            ended_retention: Duration::from_secs(DAY),
            browser_idle_timeout: Duration::from_secs(DAY),
            browser_max_lifetime: Duration::from_secs(14 * DAY),
        }
    }
}

/// Locking an account after failed logins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LockoutConfig {
    /// Failed logins within `window` that lock an account (0 disables).
    #[serde(rename = "lockout_threshold")]
    pub threshold: i32,
    #[serde(rename = "lockout_window_secs", with = "secs")]
    pub window: Duration,
    /// How long a locked account stays locked.
    #[serde(rename = "lockout_duration_secs", with = "secs")]
    pub duration: Duration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            threshold: 5,
            window: Duration::from_secs(15 * 60),
            duration: Duration::from_secs(15 * 60),
        }
    }
}

/// The signing keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyConfig {
    /// Algorithm of newly generated signing keys: `EdDSA`, `ES256` or `RS256`.
    #[serde(rename = "signing_algorithm")]
    pub algorithm: SigningAlgorithm,
    /// Rotate the active signing key when it is older than this (0 disables).
    #[serde(rename = "key_rotation_interval_secs", with = "secs")]
    pub rotation_interval: Duration,
    /// How often every instance reads the signing keys again: the longest another instance
    /// keeps signing with a key after one instance rotated it.
    #[serde(rename = "key_reload_interval_secs", with = "secs")]
    pub reload_interval: Duration,
    /// Encrypts signing keys at rest when set.
    #[serde(skip_serializing)]
    pub master_key: Option<SecretString>,
}

impl Default for KeyConfig {
    fn default() -> Self {
        Self {
            algorithm: SigningAlgorithm::EdDSA,
            rotation_interval: Duration::from_secs(30 * DAY),
            reload_interval: Duration::from_secs(60),
            master_key: None,
        }
    }
}

/// The audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditConfig {
    /// Event types not written to the audit log, for very high volumes: e.g.
    /// `token.issued,token.refreshed`. Webhooks still receive their events.
    #[serde(rename = "audit_exclude")]
    pub exclude: List,
    /// Audit records (and finished webhook deliveries) are kept this long.
    #[serde(rename = "audit_retention_secs", with = "secs")]
    pub retention: Duration,
    /// Answer a request only once its audit records are stored (so a crash loses none of an
    /// answered request's); false answers first, and records still queued are lost if the
    /// process dies.
    #[serde(rename = "audit_durable")]
    pub durable: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { exclude: List::default(), retention: Duration::from_secs(30 * DAY), durable: true }
    }
}

/// The job deleting what has outlived its retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PurgeConfig {
    /// How often the purge job runs.
    #[serde(rename = "purge_interval_secs", with = "secs")]
    pub interval: Duration,
    /// Rows of each kind the purge job deletes per batch.
    #[serde(rename = "purge_batch")]
    pub batch: u32,
}

impl Default for PurgeConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(60), batch: 1000 }
    }
}

/// How webhook deliveries run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// Timeout of one delivery attempt.
    #[serde(rename = "webhook_timeout_secs", with = "secs")]
    pub timeout: Duration,
    /// Deliveries in flight at once, per instance.
    #[serde(rename = "webhook_concurrency")]
    pub concurrency: usize,
    /// Attempts before a delivery is marked failed.
    #[serde(rename = "webhook_max_attempts")]
    pub max_attempts: i32,
    /// Delay before the first retry; each further retry doubles it (with jitter).
    #[serde(rename = "webhook_retry_base_ms", with = "millis")]
    pub retry_base: Duration,
    /// Longest delay between two attempts.
    #[serde(rename = "webhook_retry_max_ms", with = "millis")]
    pub retry_max: Duration,
    /// How often the queue is checked for due deliveries.
    #[serde(rename = "webhook_poll_interval_ms", with = "millis")]
    pub poll_interval: Duration,
    /// Allow targets on loopback, private and link-local addresses (development, tests).
    #[serde(rename = "webhook_allow_private_targets")]
    pub allow_private_targets: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            concurrency: 16,
            max_attempts: 8,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            poll_interval: Duration::from_millis(500),
            allow_private_targets: false,
        }
    }
}

/// Request rates on each OAuth endpoint, per client id and per client address (a rate of 0:
/// no limit).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    #[serde(rename = "rate_limit_client_per_sec")]
    pub client_per_sec: u32,
    #[serde(rename = "rate_limit_client_burst")]
    pub client_burst: u32,
    #[serde(rename = "rate_limit_ip_per_sec")]
    pub ip_per_sec: u32,
    #[serde(rename = "rate_limit_ip_burst")]
    pub ip_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { client_per_sec: 1000, client_burst: 2000, ip_per_sec: 200, ip_burst: 400 }
    }
}

const DAY: u64 = 24 * 3600;

/// A duration written as whole seconds.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

/// A duration written as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// Writes a secret as it is: only for the defaults a configuration is built on, which hold no
/// secret of anyone's.
fn exposed<S: serde::Serializer>(value: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value.expose_secret())
}

/// Addresses and CIDR ranges, given as a list setting (see [`List`]); an entry that is
/// neither is an error when the configuration is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<IpNet>);

impl Serialize for Networks {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(IpNet::to_string))
    }
}

impl FromStr for Networks {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        List::from(text).iter().map(network).collect::<Result<_, _>>().map(Self)
    }
}

fn network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text} is not an address or CIDR range"))
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = List::deserialize(deserializer)?;
        list.iter()
            .map(network)
            .collect::<Result<_, _>>()
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// A list setting: a TOML array, or (as an environment variable must be) one string of
/// comma-separated items. Items are trimmed; empty ones are dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct List(pub Vec<String>);

impl List {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for List {
    fn from(text: &str) -> Self {
        Self(text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
    }
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Items(Vec<String>),
        }
        Ok(match Form::deserialize(deserializer)? {
            Form::Text(text) => Self::from(text.as_str()),
            Form::Items(items) => Self::from(items.join(",").as_str()),
        })
    }
}

/// Signing algorithms the server can generate keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    EdDSA,
    ES256,
    RS256,
}

impl SigningAlgorithm {
    /// The JOSE algorithm.
    pub fn jose(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::ES256 => Algorithm::ES256,
            Self::RS256 => Algorithm::RS256,
        }
    }

    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    /// Parses a JOSE `alg` name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            _ => None,
        }
    }
}

impl Config {
    /// Loads defaults < `file` (when given, or `ATOMS_AUTH_CONFIG`) < `ATOMS_AUTH_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let env_file = std::env::var_os("ATOMS_AUTH_CONFIG");
        if let Some(path) = file.or(env_file.as_deref().map(Path::new)) {
            figment = figment.merge(Toml::file_exact(path));
        }
        let config: Config = figment
            .merge(Env::prefixed("ATOMS_AUTH_").ignore(&["config"]))
            .extract()
            .map_err(Box::new)?;
        Ok(config.sanitized())
    }

    /// The configuration with settings that would stop the server from working raised to
    /// their least working value (a zero timeout, no delivery at once), and an empty master
    /// key (as a compose file's `${ATOMS_AUTH_MASTER_KEY:-}` gives) taken for no key: it would
    /// "encrypt" signing keys with a key anyone can compute.
    pub fn sanitized(mut self) -> Self {
        let at_least = |value: &mut Duration, least: Duration| *value = (*value).max(least);
        let second = Duration::from_secs(1);
        at_least(&mut self.server.request_timeout, second);
        at_least(&mut self.server.header_read_timeout, second);
        at_least(&mut self.server.idle_timeout, second);
        at_least(&mut self.purge.interval, second);
        at_least(&mut self.keys.reload_interval, second);
        at_least(&mut self.storage.timeout, second);
        self.purge.batch = self.purge.batch.max(1);
        let webhooks = &mut self.webhooks;
        at_least(&mut webhooks.timeout, second);
        at_least(&mut webhooks.retry_base, Duration::from_millis(1));
        at_least(&mut webhooks.retry_max, Duration::from_millis(1));
        at_least(&mut webhooks.poll_interval, Duration::from_millis(10));
        webhooks.concurrency = webhooks.concurrency.max(1);
        webhooks.max_attempts = webhooks.max_attempts.max(1);
        let registration = &mut self.registration;
        registration.metadata_cache_max =
            registration.metadata_cache_max.max(registration.metadata_cache_min);
        // A used token is remembered at least as long as it may still be presented.
        self.tokens.refresh_reuse_window =
            self.tokens.refresh_reuse_window.max(self.tokens.refresh_grace);
        let keys = &mut self.keys;
        if keys.master_key.as_ref().is_some_and(|k| k.expose_secret().trim().is_empty()) {
            tracing::warn!("ATOMS_AUTH_MASTER_KEY is empty: signing keys are stored unencrypted");
            keys.master_key = None;
        }
        self
    }

    /// The token issuer.
    pub fn issuer(&self) -> String {
        self.server
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.server.listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The access-token audience.
    pub fn audience(&self) -> String {
        self.server.audience.clone().unwrap_or_else(|| self.issuer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration `settings` (name, value) give over the defaults, as a file or the
    /// environment gives them.
    fn with(settings: &[(&str, serde_json::Value)]) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        for (name, value) in settings {
            figment = figment.merge(Serialized::default(name, value));
        }
        figment.extract().map(Config::sanitized).map_err(Box::new)
    }

    #[test]
    fn defaults_work_without_any_setting() {
        let config = with(&[]).expect("defaults");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.issuer(), "http://127.0.0.1:8080");
        assert_eq!(config.audience(), config.issuer());
        assert_eq!(config.storage.url(), "sqlite://atoms-auth.db?mode=rwc");
        assert_eq!(config.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(config.webhooks.poll_interval, Duration::from_millis(500));
    }

    #[test]
    fn settings_keep_their_flat_names_and_units() {
        let config = with(&[
            ("access_token_ttl_secs", 60.into()),
            ("webhook_retry_base_ms", 250.into()),
            ("max_sessions_per_user", 3.into()),
            ("database_url", "postgres://u:pw@db/auth".into()),
            ("signing_algorithm", "ES256".into()),
        ])
        .expect("settings");
        assert_eq!(config.tokens.access_ttl, Duration::from_secs(60));
        assert_eq!(config.webhooks.retry_base, Duration::from_millis(250));
        assert_eq!(config.sessions.max_per_user, 3);
        assert_eq!(config.storage.url(), "postgres://u:pw@db/auth");
        assert_eq!(config.keys.algorithm, SigningAlgorithm::ES256);
    }

    #[test]
    fn lists_come_as_comma_separated_text_or_as_arrays() {
        let text = with(&[("trusted_proxies", " 10.0.0.0/8, ,127.0.0.1 ".into())]).expect("text");
        let nets: Networks = "10.0.0.0/8, 127.0.0.1/32".parse().expect("networks");
        assert_eq!(text.server.trusted_proxies, nets);
        let array = with(&[("trusted_proxies", serde_json::json!(["10.0.0.0/8", "127.0.0.1"]))]);
        assert_eq!(array.expect("array").server.trusted_proxies, text.server.trusted_proxies);
        let excluded = with(&[("audit_exclude", "token.issued,token.refreshed".into())]);
        assert_eq!(excluded.expect("list").audit.exclude.0, ["token.issued", "token.refreshed"]);
        assert!(with(&[("trusted_proxies", 42.into())]).is_err());
    }

    #[test]
    fn a_proxy_that_is_no_address_is_refused_when_read() {
        let error = with(&[("trusted_proxies", "10.0.0.0/8, proxy.internal".into())])
            .expect_err("not an address");
        assert!(error.to_string().contains("proxy.internal is not an address"), "{error}");
    }

    #[test]
    fn settings_that_would_stop_the_server_are_raised_to_their_least_working_value() {
        let config = with(&[
            ("request_timeout_secs", 0.into()),
            ("webhook_concurrency", 0.into()),
            ("webhook_poll_interval_ms", 0.into()),
            ("refresh_grace_secs", 600.into()),
            ("refresh_reuse_window_secs", 60.into()),
        ])
        .expect("settings");
        assert_eq!(config.server.request_timeout, Duration::from_secs(1));
        assert_eq!(config.webhooks.concurrency, 1);
        assert_eq!(config.webhooks.poll_interval, Duration::from_millis(10));
        assert_eq!(config.tokens.refresh_reuse_window, Duration::from_secs(600));
    }

    #[test]
    fn an_empty_master_key_is_no_master_key() {
        let config = with(&[("master_key", "  ".into())]).expect("settings");
        assert!(config.keys.master_key.is_none());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = with(&[
            ("master_key", "super-secret-value".into()),
            ("database_url", "postgres://u:db-password@db/auth".into()),
            ("redis_url", "redis://:redis-password@cache".into()),
        ])
        .expect("settings");
        let shown = format!("{config:?}");
        for secret in ["super-secret-value", "db-password", "redis-password"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
