//! The audit log and the webhook queue in the SQL both relational backends share. Claiming
//! deliveries differs only in the row-lock clause: `$skip_locked` is `FOR UPDATE SKIP LOCKED`
//! on PostgreSQL, where several instances claim at once, and empty on SQLite, whose single
//! writer makes the claim atomic by itself.

/// The audit table's columns in the order each dialect's bulk insert writes them.
pub(super) const AUDIT_COLUMNS: &str =
    "id, at, event, actor, user_id, session_id, client_id, ip, user_agent, request_id, details";

/// Implements [`super::AuditStore`] and [`super::WebhookStore`].
macro_rules! sql_event_stores {
    ($ty:ty, $skip_locked:literal) => {
        #[async_trait::async_trait]
        impl $crate::storage::AuditStore for $ty {
            async fn append_audit(
                &self,
                records: Arc<[AuditRecord]>,
            ) -> StorageResult<()> {
                // Each dialect has its own fastest bulk insert with one cached statement.
                self.append_audit_batch(records).await
            }

            async fn query_audit(&self, q: &AuditQuery) -> StorageResult<Vec<AuditRecord>> {
                let mut select = sqlx::QueryBuilder::new("SELECT * FROM audit_events WHERE 1 = 1");
                if let Some(user_id) = &q.user_id {
                    select.push(" AND user_id = ").push_bind(user_id);
                }
                if let Some(event) = &q.event {
                    select.push(" AND event = ").push_bind(event);
                    use $crate::audit_event::events;
                    if !events::UNINDEXED.contains(&event.as_str()) {
                        select.push(" AND ").push($crate::storage::sql_common::indexed_event_predicate());
                    }
                }
                // Ids are UUIDv7 and start with their time, so a time range is an id range.
                if let Some(since) = q.since {
                    select.push(" AND id >= ").push_bind($crate::audit_event::id_floor(since));
                }
                if let Some(until) = q.until {
                    select.push(" AND id < ").push_bind($crate::audit_event::id_floor(until));
                }
                let (past, order) = if q.ascending { (" AND id > ", " ORDER BY id ASC") } else { (" AND id < ", " ORDER BY id DESC") };
                if let Some(cursor) = &q.cursor {
                    select.push(past).push_bind(cursor);
                }
                select.push(order).push(" LIMIT ").push_bind(i64::from(q.limit));
                Ok(select.build_query_as().fetch_all(self.reader()).await?)
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::WebhookStore for $ty {
            async fn create_webhook(&self, w: &WebhookSubscription) -> StorageResult<()> {
                sqlx::query(
                    "INSERT INTO webhook_subscriptions (id, url, events, secret, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&w.id)
                .bind(&w.url)
                .bind(&w.events)
                .bind(&w.secret)
                .bind(w.created_at)
                .execute(self.writer())
                .await
                .map_err($crate::storage::sql_common::unique("webhook"))?;
                Ok(())
            }

            async fn webhooks(&self) -> StorageResult<Vec<WebhookSubscription>> {
                Ok(sqlx::query_as("SELECT * FROM webhook_subscriptions ORDER BY created_at, id")
                    .fetch_all(self.reader())
                    .await?)
            }

            async fn webhook(&self, id: &str) -> StorageResult<Option<WebhookSubscription>> {
                Ok(sqlx::query_as("SELECT * FROM webhook_subscriptions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn delete_webhook(&self, id: &str) -> StorageResult<bool> {
                let done = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1")
                    .bind(id)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn enqueue_webhook(&self, e: &WebhookEvent<'_>) -> StorageResult<u64> {
                let done = sqlx::query(
                    "INSERT INTO webhook_deliveries (id, subscription_id, event_id, event, payload, \
                     status, attempts, next_attempt_at, created_at) \
                     SELECT $1 || ':' || s.id, s.id, $1, $2, $3, 'pending', 0, $4, $4 \
                     FROM webhook_subscriptions s WHERE CASE WHEN $5 IS NULL \
                     THEN (' ' || s.events || ' ') LIKE ('% ' || $2 || ' %') ELSE s.id = $5 END",
                )
                .bind(e.id)
                .bind(e.event)
                .bind(e.payload)
                .bind(e.now)
                .bind(e.only_subscription)
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected())
            }

            async fn claim_deliveries(
                &self,
                now: Millis,
                lease_until: Millis,
                limit: u32,
            ) -> StorageResult<Vec<WebhookDelivery>> {
                // Most polls find nothing due: a read says so without taking the write lock
                // (SQLite's one writer is what rotations queue for).
                let due: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'pending' \
                     AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1))",
                )
                .bind(now)
                .fetch_one(self.reader())
                .await?;
                if !due {
                    return Ok(Vec::new());
                }
                Ok(sqlx::query_as(concat!(
                    "UPDATE webhook_deliveries SET locked_until = $1, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' \
                     AND next_attempt_at <= $2 AND (locked_until IS NULL OR locked_until <= $2) \
                     ORDER BY next_attempt_at LIMIT $3 ",
                    $skip_locked,
                    ") RETURNING *"
                ))
                .bind(lease_until)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(self.writer())
                .await?)
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
                .bind(r.status)
                .bind(r.next_attempt_at)
                .bind(a.status_code)
                .bind(&a.error)
                .bind(finished)
                .bind(&a.delivery_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, \
                     duration_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (delivery_id, attempt) DO NOTHING",
                )
                .bind(&a.delivery_id)
                .bind(a.attempt)
                .bind(a.at)
                .bind(a.status_code)
                .bind(&a.error)
                .bind(a.duration_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn deliveries(
                &self,
                subscription_id: &str,
                limit: u32,
            ) -> StorageResult<Vec<(WebhookDelivery, Vec<WebhookAttempt>)>> {
                let deliveries: Vec<WebhookDelivery> = sqlx::query_as(
                    "SELECT * FROM webhook_deliveries WHERE subscription_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2",
                )
                .bind(subscription_id)
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
                if deliveries.is_empty() {
                    return Ok(Vec::new());
                }
                let mut select =
                    sqlx::QueryBuilder::new("SELECT * FROM webhook_attempts WHERE delivery_id IN (");
                let mut ids = select.separated(", ");
                for d in &deliveries {
                    ids.push_bind(&d.id);
                }
                select.push(") ORDER BY attempt");
                let attempts: Vec<WebhookAttempt> =
                    select.build_query_as().fetch_all(self.reader()).await?;
                Ok(deliveries
                    .into_iter()
                    .map(|d| {
                        let mine = attempts.iter().filter(|a| a.delivery_id == d.id).cloned().collect();
                        (d, mine)
                    })
                    .collect())
            }

            async fn webhook_backlog(&self) -> StorageResult<WebhookBacklog> {
                let (pending, failed): (i64, i64) = sqlx::query_as(
                    "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0), \
                     COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) \
                     FROM webhook_deliveries",
                )
                .fetch_one(self.reader())
                .await?;
                Ok(WebhookBacklog { pending: pending as u64, failed: failed as u64 })
            }
        }
    };
}

pub(crate) use sql_event_stores;
