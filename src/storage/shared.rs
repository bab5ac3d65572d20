//! State that instances share beyond the storage proper: the rate-limit counters, kept in a
//! Redis when one is configured (the storage's own, or `ATOMS_AUTH_REDIS_URL`), so every
//! instance enforces one limit. The domain sees only [`SharedState`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{StorageError, StorageResult};

/// One charge of a rate counter (generic cell rate algorithm), as the shared store answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub allowed: bool,
    /// When allowed, the slack left (µs); when refused, how long until a retry passes (µs).
    pub slack_or_wait_us: u64,
    /// How long until the allowance is whole again (µs).
    pub until_full_us: u64,
}

/// Counters and a liveness probe shared by every instance.
#[async_trait]
pub trait SharedState: Send + Sync {
    /// Charges one request to the counter `key`: `interval_us` per request, at most
    /// `capacity_us` of burst. The shared store's own clock is the time.
    async fn charge(&self, key: &str, interval_us: u64, capacity_us: u64) -> StorageResult<Charge>;
    /// One round trip.
    async fn ping(&self) -> StorageResult<()>;
}

/// Whether a storage URL names a Redis.
pub fn is_redis_url(url: &str) -> bool {
    matches!(url.split_once(':').map(|(scheme, _)| scheme), Some("redis" | "rediss"))
}

/// The shared Redis at `url`, its keys under `prefix`; fails within five seconds when
/// nothing answers.
pub async fn connect_shared(url: &str, prefix: &str) -> StorageResult<Arc<dyn SharedState>> {
    let client = ::redis::Client::open(url)?;
    let config = super::redis::manager_config(Duration::from_secs(2));
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        ::redis::aio::ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| StorageError::Timeout("shared redis connect"))??;
    Ok(Arc::new(SharedRedis {
        conn,
        prefix: format!("{prefix}:"),
        script: ::redis::Script::new(include_str!("redis/ratelimit.lua")),
    }))
}

struct SharedRedis {
    conn: ::redis::aio::ConnectionManager,
    prefix: String,
    script: ::redis::Script,
}

#[async_trait]
impl SharedState for SharedRedis {
    async fn charge(&self, key: &str, interval_us: u64, capacity_us: u64) -> StorageResult<Charge> {
        let answers: Vec<(i64, i64, i64)> = self
            .script
            .key(format!("{}ratelimit:{key}", self.prefix))
            .arg(interval_us)
            .arg(capacity_us)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let (allowed, slack_or_wait, until_full) = answers
            .into_iter()
            .next()
            .ok_or_else(|| StorageError::Corrupt("the rate script answered nothing".into()))?;
        Ok(Charge {
            allowed: allowed == 1,
            slack_or_wait_us: slack_or_wait.max(0) as u64,
            until_full_us: until_full.max(0) as u64,
        })
    }

    async fn ping(&self) -> StorageResult<()> {
        let _: String = ::redis::cmd("PING").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }
}
