//! [`DeviceStore`] in SQL. Every statement names the owner, so no user reaches another's
//! device.

use async_trait::async_trait;

use super::{Dialect, SqlStorage, Statement};
use crate::clock::Millis;
use crate::ids::{DeviceId, UserId};
use crate::storage::{Device, DeviceStore, Session, StorageResult, revoke_reason};

#[async_trait]
impl<D: Dialect> DeviceStore for SqlStorage<D> {
    async fn user_devices(&self, user_id: &str) -> StorageResult<Vec<Device>> {
        sqlx::query("SELECT * FROM devices WHERE user_id = $1 ORDER BY last_seen_at DESC, id")
            .arg(user_id)
            .all(self.reader())
            .await
    }

    async fn device(&self, user_id: UserId<'_>, id: DeviceId<'_>) -> StorageResult<Option<Device>> {
        sqlx::query("SELECT * FROM devices WHERE id = $1 AND user_id = $2")
            .arg(id.as_str())
            .arg(user_id.as_str())
            .optional(self.reader())
            .await
    }

    async fn update_device(
        &self,
        user_id: UserId<'_>,
        id: DeviceId<'_>,
        name: Option<&str>,
        trusted: Option<bool>,
    ) -> StorageResult<Option<Device>> {
        sqlx::query(
            "UPDATE devices SET name = COALESCE($1, name), trusted = COALESCE($2, trusted) \
             WHERE id = $3 AND user_id = $4 RETURNING *",
        )
        .arg(name)
        .arg(trusted)
        .arg(id.as_str())
        .arg(user_id.as_str())
        .optional(self.writer())
        .await
    }

    async fn delete_device(
        &self,
        user_id: UserId<'_>,
        id: DeviceId<'_>,
        now: Millis,
    ) -> StorageResult<Option<Vec<Session>>> {
        let (user_id, id) = (user_id.as_str(), id.as_str());
        let mut tx = self.dialect.begin_for_user(user_id).await?;
        let owned: Option<(String,)> =
            sqlx::query("SELECT id FROM devices WHERE id = $1 AND user_id = $2")
                .arg(id)
                .arg(user_id)
                .optional(&mut tx)
                .await?;
        if owned.is_none() {
            return Ok(None);
        }
        let ended: Vec<Session> = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
             WHERE device_id = $3 AND revoked_at IS NULL RETURNING *",
        )
        .arg(now)
        .arg(revoke_reason::DEVICE_REMOVED)
        .arg(id)
        .all(&mut tx)
        .await?;
        sqlx::query("UPDATE sessions SET device_id = NULL WHERE device_id = $1")
            .arg(id)
            .run(&mut tx)
            .await?;
        sqlx::query("DELETE FROM devices WHERE id = $1").arg(id).run(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(ended))
    }
}
