//! [`KeyStore`] in SQL.

use async_trait::async_trait;

use super::{Dialect, SqlStorage, Statement, unique};
use crate::clock::Millis;
use crate::storage::{KeyStore, ServerSecret, StorageResult, StoredKey};

#[async_trait]
impl<D: Dialect> KeyStore for SqlStorage<D> {
    async fn signing_keys(&self, now: Millis) -> StorageResult<Vec<StoredKey>> {
        sqlx::query(
            "SELECT * FROM signing_keys WHERE expires_at IS NULL OR expires_at > $1 \
             ORDER BY created_at DESC, kid DESC",
        )
        .arg(now)
        .all(self.reader())
        .await
    }

    async fn rotate_signing_key(
        &self,
        expected_active: Option<&str>,
        key: &StoredKey,
        retire_until: Millis,
    ) -> StorageResult<bool> {
        let mut tx = self.dialect.begin_exclusive().await?;
        let active: Option<(String,)> = sqlx::query(
            "SELECT kid FROM signing_keys WHERE retired_at IS NULL \
             ORDER BY created_at DESC, kid DESC LIMIT 1",
        )
        .optional(&mut tx)
        .await?;
        if active.as_ref().map(|(kid,)| kid.as_str()) != expected_active {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE signing_keys SET retired_at = $1, expires_at = $2 WHERE retired_at IS NULL",
        )
        .arg(key.created_at)
        .arg(retire_until)
        .run(&mut tx)
        .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, encrypted, created_at, \
             retired_at, expires_at) VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
        )
        .arg(&key.kid)
        .arg(&key.alg)
        .arg(&key.private_key)
        .arg(key.encrypted)
        .arg(key.created_at)
        .run(&mut tx)
        .await
        .map_err(unique("signing key"))?;
        tx.commit().await?;
        Ok(true)
    }

    async fn server_secret(
        &self,
        name: &str,
        candidate: &ServerSecret,
    ) -> StorageResult<ServerSecret> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value, encrypted, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .arg(name)
        .arg(&candidate.value)
        .arg(candidate.encrypted)
        .arg(candidate.created_at)
        .run(self.writer())
        .await?;
        sqlx::query("SELECT value, encrypted, created_at FROM server_secrets WHERE name = $1")
            .arg(name)
            .one(self.writer())
            .await
    }
}
