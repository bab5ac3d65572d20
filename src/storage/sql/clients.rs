//! [`ClientStore`] in SQL.

use async_trait::async_trait;

use super::{Dialect, SqlStorage, Statement, unique};
use crate::clock::Millis;
use crate::storage::{Client, ClientStore, StorageResult};

#[async_trait]
impl<D: Dialect> ClientStore for SqlStorage<D> {
    async fn create_client(&self, client: &Client) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO clients (client_id, name, secret_hash, grant_types, scopes, \
             created_at, disabled, created_by, resource_server, redirect_uris, skip_consent, \
             registered) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .arg(&client.client_id)
        .arg(&client.name)
        .arg(&client.secret_hash)
        .arg(&client.grant_types)
        .arg(&client.scopes)
        .arg(client.created_at)
        .arg(client.disabled)
        .arg(&client.created_by)
        .arg(client.resource_server)
        .arg(&client.redirect_uris)
        .arg(client.skip_consent)
        .arg(client.registered)
        .run(self.writer())
        .await
        .map_err(unique("client"))?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> StorageResult<Option<Client>> {
        sqlx::query("SELECT * FROM clients WHERE client_id = $1")
            .arg(client_id)
            .optional(self.reader())
            .await
    }

    async fn clients(&self) -> StorageResult<Vec<Client>> {
        sqlx::query("SELECT * FROM clients ORDER BY client_id").all(self.reader()).await
    }

    async fn update_client(&self, client: &Client) -> StorageResult<bool> {
        let changed = sqlx::query(
            "UPDATE clients SET secret_hash = $1, disabled = $2, redirect_uris = $3, \
             skip_consent = $4 WHERE client_id = $5",
        )
        .arg(&client.secret_hash)
        .arg(client.disabled)
        .arg(&client.redirect_uris)
        .arg(client.skip_consent)
        .arg(&client.client_id)
        .run(self.writer())
        .await?;
        Ok(changed > 0)
    }

    async fn delete_client(&self, client_id: &str) -> StorageResult<bool> {
        let deleted = sqlx::query("DELETE FROM clients WHERE client_id = $1")
            .arg(client_id)
            .run(self.writer())
            .await?;
        Ok(deleted > 0)
    }

    async fn touch_client(&self, client_id: &str, at: Millis) -> StorageResult<()> {
        sqlx::query("UPDATE clients SET last_used_at = $1 WHERE client_id = $2")
            .arg(at)
            .arg(client_id)
            .run(self.writer())
            .await?;
        Ok(())
    }

    async fn purge_unused_clients(&self, cutoff: Millis, limit: i64) -> StorageResult<Vec<String>> {
        let ids: Vec<(String,)> = sqlx::query(
            "DELETE FROM clients WHERE client_id IN (SELECT client_id FROM clients \
             WHERE registered AND COALESCE(last_used_at, created_at) < $1 LIMIT $2) \
             RETURNING client_id",
        )
        .arg(cutoff)
        .arg(limit)
        .all(self.writer())
        .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }
}
