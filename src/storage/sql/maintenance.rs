//! [`Maintenance`] in SQL: each purge deletes a bounded batch, so it never holds the write
//! lock for long.

use async_trait::async_trait;

use super::{Dialect, SqlStorage, Statement};
use crate::clock::Millis;
use crate::storage::{CODE_KEPT_MS, Maintenance, PurgePolicy, PurgeReport, Session, StorageResult};

#[async_trait]
impl<D: Dialect> Maintenance for SqlStorage<D> {
    async fn purge(&self, p: &PurgePolicy) -> StorageResult<PurgeReport> {
        let batch = Millis::from(p.batch);
        let deleted: Vec<Session> = sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
             WHERE revoked_at <= $1 OR expires_at <= $1 OR idle_expires_at <= $1 LIMIT $2) \
             RETURNING *",
        )
        .arg(p.ended_before)
        .arg(batch)
        .all(self.writer())
        .await?;
        let delete = |sql: &'static str, before: Millis| {
            sqlx::query(sql).arg(before).arg(batch).run(self.writer())
        };
        let refresh_tokens = delete(
            "DELETE FROM refresh_tokens WHERE hash IN (SELECT hash FROM refresh_tokens \
             WHERE used_at <= $1 LIMIT $2)",
            p.used_before,
        )
        .await?;
        let revocations = delete(
            "DELETE FROM revoked_tokens WHERE jti IN (SELECT jti FROM revoked_tokens \
             WHERE expires_at <= $1 LIMIT $2)",
            p.now,
        )
        .await?;
        // Ids are UUIDv7 and start with their time: the id order is the time order.
        let audit_events = sqlx::query(
            "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events \
             WHERE id < $1 LIMIT $2)",
        )
        .arg(crate::audit_event::id_floor(p.audit_before))
        .arg(batch)
        .run(self.dialect.audit_writer())
        .await?;
        let webhook_deliveries = delete(
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE finished_at < $1 LIMIT $2)",
            p.audit_before,
        )
        .await?;
        let browser_sessions = delete(
            "DELETE FROM browser_sessions WHERE hash IN (SELECT hash FROM browser_sessions \
             WHERE expires_at <= $1 OR idle_expires_at <= $1 LIMIT $2)",
            p.now,
        )
        .await?;
        let codes = delete(
            "DELETE FROM authorization_codes WHERE hash IN (SELECT hash FROM \
             authorization_codes WHERE created_at <= $1 LIMIT $2)",
            p.now - CODE_KEPT_MS,
        )
        .await?;
        Ok(PurgeReport {
            sessions: deleted.len() as u64,
            refresh_tokens,
            revocations,
            audit_events,
            webhook_deliveries,
            sign_ins: browser_sessions + codes,
            clients: 0,
            expired: deleted.into_iter().filter(|s| s.revoked_at.is_none()).collect(),
        })
    }
}
