//! Typed configuration: built-in defaults, then an optional TOML file, then `ATOMS_AUTH_*`
//! environment variables. Every default works out of the box; secrets are redacted.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use jsonwebtoken::Algorithm;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The whole server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Storage URL; the scheme picks the backend (`sqlite`, `postgres`, `redis`).
    pub database_url: String,
    /// Maximum pooled storage connections.
    pub database_pool_size: u32,
    /// Prefix of every Redis key, so several deployments or tests can share one Redis.
    pub redis_key_prefix: String,
    /// Run pending migrations when the server starts.
    pub auto_migrate: bool,
    /// The `iss` of issued tokens and the base of the metadata URLs. Defaults to
    /// `http://{listen}`.
    pub issuer: Option<String>,
    /// The `aud` of issued access tokens. Defaults to the issuer.
    pub audience: Option<String>,
    /// Access-token lifetime in seconds.
    pub access_token_ttl_secs: u64,
    /// How long the refresh token that was just rotated may be presented again.
    pub refresh_grace_secs: u64,
    /// A session ends after this many seconds without a refresh.
    pub session_idle_timeout_secs: u64,
    /// A session ends this many seconds after the login, whatever its use.
    pub session_max_lifetime_secs: u64,
    /// Live sessions a user may have; a login beyond it evicts the least recently used one.
    pub max_sessions_per_user: usize,
    /// How long a used refresh token is remembered, so that presenting it again is detected
    /// as reuse (and revokes the family) rather than answered as an unknown token.
    pub refresh_reuse_window_secs: u64,
    /// Ended sessions are deleted this long after they ended.
    pub ended_session_retention_secs: u64,
    /// How often the purge job runs.
    pub purge_interval_secs: u64,
    /// Rows of each kind the purge job deletes per batch.
    pub purge_batch: u32,
    /// How long a client record is cached in memory: changes to a client reach a running
    /// instance within this time.
    pub client_cache_ttl_secs: u64,
    /// Peers whose `X-Forwarded-For` is believed: comma-separated addresses or CIDR ranges.
    pub trusted_proxies: List,
    /// Failed logins within `lockout_window_secs` that lock an account (0 disables).
    pub lockout_threshold: i32,
    pub lockout_window_secs: u64,
    /// How long a locked account stays locked.
    pub lockout_duration_secs: u64,
    /// Event types not written to the audit log (comma separated), for very high volumes:
    /// e.g. `token.issued,token.refreshed`. Webhooks still receive their events.
    pub audit_exclude: List,
    /// Audit records (and finished webhook deliveries) are kept this long.
    pub audit_retention_secs: u64,
    /// Timeout of one webhook delivery attempt.
    pub webhook_timeout_secs: u64,
    /// Webhook deliveries in flight at once, per instance.
    pub webhook_concurrency: usize,
    /// Attempts before a delivery is marked failed.
    pub webhook_max_attempts: i32,
    /// Delay before the first retry; each further retry doubles it (with jitter).
    pub webhook_retry_base_ms: u64,
    /// Longest delay between two attempts.
    pub webhook_retry_max_ms: u64,
    /// How often the queue is checked for due deliveries.
    pub webhook_poll_interval_ms: u64,
    /// Allow webhook URLs on loopback, private and link-local addresses (development only).
    pub webhook_allow_private_targets: bool,
    /// Algorithm of newly generated signing keys: `EdDSA`, `ES256` or `RS256`.
    pub signing_algorithm: SigningAlgorithm,
    /// Rotate the active signing key when it is older than this (0 disables).
    pub key_rotation_interval_secs: u64,
    /// Encrypts signing keys at rest when set.
    #[serde(skip_serializing)]
    pub master_key: Option<SecretString>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// A request that takes longer is answered 503.
    pub request_timeout_secs: u64,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// A request's headers must arrive within this many seconds (HTTP/1); it also bounds
    /// how long an idle keep-alive connection waits for its next request.
    pub header_read_timeout_secs: u64,
    /// A connection that moves no byte for this many seconds is closed.
    pub idle_timeout_secs: u64,
    /// Serve `/metrics` on this address only (not on `listen`), e.g. a port that only the
    /// monitoring network reaches. Unset: `/metrics` is on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Origins allowed by CORS, comma separated (`*` for any); empty: no CORS headers at all.
    pub cors_origins: List,
    /// Redis for state shared by instances (rate limits), and the health check's cache.
    /// Unset with a Redis storage URL: that Redis is used.
    pub redis_url: Option<String>,
    /// Requests per second per client id on each OAuth endpoint (0: no limit).
    pub rate_limit_client_per_sec: u32,
    pub rate_limit_client_burst: u32,
    /// Requests per second per client address on each OAuth endpoint (0: no limit).
    pub rate_limit_ip_per_sec: u32,
    pub rate_limit_ip_burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://atoms-auth.db?mode=rwc".to_owned(),
            database_pool_size: 16,
            redis_key_prefix: "atoms-auth".to_owned(),
            auto_migrate: true,
            issuer: None,
            audience: None,
            access_token_ttl_secs: 15 * 60,
            refresh_grace_secs: 300,
            session_idle_timeout_secs: 7 * 24 * 3600,
            session_max_lifetime_secs: 30 * 24 * 3600,
            max_sessions_per_user: 10,
            refresh_reuse_window_secs: 7 * 24 * 3600,
            ended_session_retention_secs: 24 * 3600,
            purge_interval_secs: 60,
            purge_batch: 1000,
            client_cache_ttl_secs: 30,
            trusted_proxies: List::default(),
            lockout_threshold: 5,
            lockout_window_secs: 15 * 60,
            lockout_duration_secs: 15 * 60,
            audit_exclude: List::default(),
            audit_retention_secs: 30 * 24 * 3600,
            webhook_timeout_secs: 10,
            webhook_concurrency: 16,
            webhook_max_attempts: 8,
            webhook_retry_base_ms: 5_000,
            webhook_retry_max_ms: 3_600_000,
            webhook_poll_interval_ms: 500,
            webhook_allow_private_targets: false,
            signing_algorithm: SigningAlgorithm::EdDSA,
            key_rotation_interval_secs: 30 * 24 * 3600,
            master_key: None,
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 30,
            max_connections: 4096,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            metrics_listen: None,
            cors_origins: List::default(),
            redis_url: None,
            rate_limit_client_per_sec: 1000,
            rate_limit_client_burst: 2000,
            rate_limit_ip_per_sec: 200,
            rate_limit_ip_burst: 400,
        }
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
        let mut config: Config = figment
            .merge(Env::prefixed("ATOMS_AUTH_").ignore(&["config"]))
            .extract()
            .map_err(Box::new)?;
        config.drop_empty_master_key();
        Ok(config)
    }

    /// An empty master key (as a compose file's `${ATOMS_AUTH_MASTER_KEY:-}` gives) is no
    /// key: it would "encrypt" signing keys with a key anyone can compute.
    pub fn drop_empty_master_key(&mut self) {
        use secrecy::ExposeSecret;
        if self.master_key.as_ref().is_some_and(|k| k.expose_secret().trim().is_empty()) {
            tracing::warn!("ATOMS_AUTH_MASTER_KEY is empty: signing keys are stored unencrypted");
            self.master_key = None;
        }
    }

    /// The token issuer.
    pub fn issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The trusted proxy ranges; an entry that does not parse is an error.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("trusted_proxies: {s} is not an address or CIDR range"))
            })
            .collect()
    }

    /// The access-token audience.
    /// The Redis shared by instances: the configured one, else the storage's when it is Redis.
    pub fn shared_redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.is_empty()).or_else(|| {
            crate::storage::shared::is_redis_url(&self.database_url)
                .then_some(self.database_url.as_str())
        })
    }

    pub fn audience(&self) -> String {
        self.audience.clone().unwrap_or_else(|| self.issuer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_without_any_setting() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.issuer(), "http://127.0.0.1:8080");
        assert_eq!(config.audience(), config.issuer());
        assert_eq!(config.database_url, "sqlite://atoms-auth.db?mode=rwc");
    }

    #[test]
    fn lists_come_as_comma_separated_text_or_as_arrays() {
        let from = |value: serde_json::Value| -> Result<Config, Box<figment::Error>> {
            Figment::from(Serialized::defaults(Config::default()))
                .merge(Serialized::default("trusted_proxies", value))
                .extract()
                .map_err(Box::new)
        };
        let text = from(serde_json::json!(" 10.0.0.0/8, ,127.0.0.1 ")).expect("text");
        assert_eq!(text.trusted_proxies.0, ["10.0.0.0/8", "127.0.0.1"]);
        let array = from(serde_json::json!(["10.0.0.0/8", "127.0.0.1"])).expect("array");
        assert_eq!(array.trusted_proxies, text.trusted_proxies);
        assert_eq!(Config::default().trusted_proxy_nets().map(|n| n.len()), Ok(0));
        assert!(from(serde_json::json!(42)).is_err());
    }

    #[test]
    fn an_empty_master_key_is_no_master_key() {
        let mut config = Config { master_key: Some(SecretString::from("  ")), ..Config::default() };
        config.drop_empty_master_key();
        assert!(config.master_key.is_none());
    }

    #[test]
    fn master_key_is_redacted_in_debug_output() {
        let config = Config {
            master_key: Some(SecretString::from("super-secret-value")),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("super-secret-value"));
    }
}
