//! [`ResourceStore`] in SQL.

use async_trait::async_trait;

use super::{Dialect, SqlStorage, Statement, unique};
use crate::storage::{Resource, ResourceStore, StorageResult};

#[async_trait]
impl<D: Dialect> ResourceStore for SqlStorage<D> {
    async fn create_resource(&self, r: &Resource) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO resources (uri, name, scopes, created_at) VALUES ($1, $2, $3, $4)",
        )
        .arg(&r.uri)
        .arg(&r.name)
        .arg(&r.scopes)
        .arg(r.created_at)
        .run(self.writer())
        .await
        .map_err(unique("resource"))?;
        Ok(())
    }

    async fn resources(&self) -> StorageResult<Vec<Resource>> {
        sqlx::query("SELECT * FROM resources ORDER BY uri").all(self.reader()).await
    }

    async fn resource(&self, uri: &str) -> StorageResult<Option<Resource>> {
        sqlx::query("SELECT * FROM resources WHERE uri = $1").arg(uri).optional(self.reader()).await
    }

    async fn delete_resource(&self, uri: &str) -> StorageResult<bool> {
        let deleted =
            sqlx::query("DELETE FROM resources WHERE uri = $1").arg(uri).run(self.writer()).await?;
        Ok(deleted > 0)
    }
}
