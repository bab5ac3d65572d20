//! [`WebhookStore`] in SQL: subscriptions and the durable delivery queue.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, QueryBuilder, SqlSafeStr, SqlStr};

use super::{Builder, Dialect, SqlStorage, Statement, unique};
use crate::clock::Millis;
use crate::storage::{
    AttemptResult, StorageResult, WebhookAttempt, WebhookBacklog, WebhookDelivery, WebhookEvent,
    WebhookStore, WebhookSubscription, delivery_status,
};

/// The claim of due deliveries, with the dialect's row-lock clause.
pub(super) fn claim_statement(lock: &str) -> SqlStr {
    AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET locked_until = $1, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' \
         AND next_attempt_at <= $2 AND (locked_until IS NULL OR locked_until <= $2) \
         ORDER BY next_attempt_at LIMIT $3 {lock}) RETURNING *"
    ))
    .into_sql_str()
}

#[async_trait]
impl<D: Dialect> WebhookStore for SqlStorage<D> {
    async fn create_webhook(&self, w: &WebhookSubscription) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO webhook_subscriptions (id, url, events, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .arg(&w.id)
        .arg(&w.url)
        .arg(&w.events)
        .arg(&w.secret)
        .arg(w.created_at)
        .run(self.writer())
        .await
        .map_err(unique("webhook"))?;
        Ok(())
    }

    async fn webhooks(&self) -> StorageResult<Vec<WebhookSubscription>> {
        sqlx::query("SELECT * FROM webhook_subscriptions ORDER BY created_at, id")
            .all(self.reader())
            .await
    }

    async fn webhook(&self, id: &str) -> StorageResult<Option<WebhookSubscription>> {
        sqlx::query("SELECT * FROM webhook_subscriptions WHERE id = $1")
            .arg(id)
            .optional(self.reader())
            .await
    }

    async fn delete_webhook(&self, id: &str) -> StorageResult<bool> {
        let deleted = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1")
            .arg(id)
            .run(self.writer())
            .await?;
        Ok(deleted > 0)
    }

    async fn enqueue_webhook(&self, e: &WebhookEvent<'_>) -> StorageResult<u64> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, subscription_id, event_id, event, payload, \
             status, attempts, next_attempt_at, created_at) \
             SELECT $1 || ':' || s.id, s.id, $1, $2, $3, 'pending', 0, $4, $4 \
             FROM webhook_subscriptions s WHERE CASE WHEN $5 IS NULL \
             THEN (' ' || s.events || ' ') LIKE ('% ' || $2 || ' %') ELSE s.id = $5 END",
        )
        .arg(e.id)
        .arg(e.event)
        .arg(e.payload)
        .arg(e.now)
        .arg(e.only_subscription)
        .run(self.writer())
        .await
    }

    async fn claim_deliveries(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> StorageResult<Vec<WebhookDelivery>> {
        // Most polls find nothing due: a read says so without taking the write lock (SQLite's
        // one writer is what rotations queue for).
        let (due,): (bool,) = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'pending' \
             AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1))",
        )
        .arg(now)
        .one(self.reader())
        .await?;
        if !due {
            return Ok(Vec::new());
        }
        sqlx::query(self.claim.clone())
            .arg(lease_until)
            .arg(now)
            .arg(Millis::from(limit))
            .all(self.writer())
            .await
    }

    async fn finish_attempt(&self, r: &AttemptResult<'_>) -> StorageResult<()> {
        let a = r.attempt;
        let finished = (r.status != delivery_status::PENDING).then_some(a.at);
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, \
             locked_until = NULL, last_status_code = $3, last_error = $4, finished_at = $5 \
             WHERE id = $6",
        )
        .arg(r.status)
        .arg(r.next_attempt_at)
        .arg(a.status_code)
        .arg(&a.error)
        .arg(finished)
        .arg(&a.delivery_id)
        .run(&mut tx)
        .await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, \
             duration_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (delivery_id, attempt) DO NOTHING",
        )
        .arg(&a.delivery_id)
        .arg(a.attempt)
        .arg(a.at)
        .arg(a.status_code)
        .arg(&a.error)
        .arg(a.duration_ms)
        .run(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn deliveries(
        &self,
        subscription_id: &str,
        limit: u32,
    ) -> StorageResult<Vec<(WebhookDelivery, Vec<WebhookAttempt>)>> {
        let deliveries: Vec<WebhookDelivery> = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE subscription_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .arg(subscription_id)
        .arg(Millis::from(limit))
        .all(self.reader())
        .await?;
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let mut select = QueryBuilder::new("SELECT * FROM webhook_attempts WHERE delivery_id IN (");
        for (i, d) in deliveries.iter().enumerate() {
            select.push(if i == 0 { "" } else { ", " }).push_arg(&d.id);
        }
        select.push(") ORDER BY attempt");
        let attempts: Vec<WebhookAttempt> = select.build().all(self.reader()).await?;
        Ok(deliveries
            .into_iter()
            .map(|d| {
                let mine = attempts.iter().filter(|a| a.delivery_id == d.id).cloned().collect();
                (d, mine)
            })
            .collect())
    }

    async fn webhook_backlog(&self) -> StorageResult<WebhookBacklog> {
        let (pending, failed): (Millis, Millis) = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) \
             FROM webhook_deliveries",
        )
        .one(self.reader())
        .await?;
        Ok(WebhookBacklog { pending: pending as u64, failed: failed as u64 })
    }
}
