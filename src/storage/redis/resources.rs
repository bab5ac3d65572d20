//! [`ResourceStore`] on Redis: each resource as JSON under its URI, and a set of the URIs.

use ::redis::AsyncCommands;
use async_trait::async_trait;

use super::RedisStorage;
use crate::storage::*;

#[async_trait]
impl ResourceStore for RedisStorage {
    async fn create_resource(&self, r: &Resource) -> StorageResult<()> {
        let json = serde_json::to_string(r).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let created: bool = self.conn().set_nx(self.key("resource", &r.uri), json).await?;
        if !created {
            return Err(StorageError::Conflict("resource"));
        }
        let _: () = self.conn().sadd(self.key("resources", "all"), &r.uri).await?;
        Ok(())
    }

    async fn resources(&self) -> StorageResult<Vec<Resource>> {
        let mut uris: Vec<String> = self.conn().smembers(self.key("resources", "all")).await?;
        uris.sort();
        let keys: Vec<String> = uris.iter().map(|uri| self.key("resource", uri)).collect();
        self.get_jsons(&keys).await
    }

    async fn resource(&self, uri: &str) -> StorageResult<Option<Resource>> {
        self.get_json(&self.key("resource", uri)).await
    }

    async fn delete_resource(&self, uri: &str) -> StorageResult<bool> {
        let deleted: u64 = self.conn().del(self.key("resource", uri)).await?;
        let _: () = self.conn().srem(self.key("resources", "all"), uri).await?;
        Ok(deleted > 0)
    }
}
