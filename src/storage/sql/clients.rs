//! [`ClientStore`] in SQL.

use async_trait::async_trait;

use super::{Dialect, SqlStorage, Statement, unique};
use crate::storage::{Client, ClientStore, StorageResult};

#[async_trait]
impl<D: Dialect> ClientStore for SqlStorage<D> {
    async fn create_client(&self, client: &Client) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO clients (client_id, name, secret_hash, grant_types, scopes, \
             created_at, disabled, created_by, resource_server) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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

    async fn update_client(
        &self,
        client_id: &str,
        secret_hash: Option<&str>,
        disabled: bool,
    ) -> StorageResult<bool> {
        let changed =
            sqlx::query("UPDATE clients SET secret_hash = $1, disabled = $2 WHERE client_id = $3")
                .arg(secret_hash)
                .arg(disabled)
                .arg(client_id)
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
}
