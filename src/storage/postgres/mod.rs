//! PostgreSQL backend for many stateless instances. A refresh of the live token is one
//! statement on the session row (whose row lock serialises concurrent refreshes of one
//! family); the other outcomes read and lock the row in a transaction.

mod audit;

use std::str::FromStr;
use std::sync::Arc;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::sql::sessions::{rotate_by_rule, seen_and_spent};
use super::sql::{Dialect, SqlStorage};
use super::{
    AuditRecord, ConnectOptions, DEVICE_SEEN_EVERY_MS, Rotation, RotationOutcome, Session,
    StorageResult,
};

/// PostgreSQL storage.
pub type PgStorage = SqlStorage<PgBackend>;

/// PostgreSQL's connections.
#[derive(Debug)]
pub struct PgBackend {
    pool: PgPool,
}

/// Connects a pool to `url` (`options=-c search_path=…` in the URL selects a schema).
pub async fn connect(url: &str, options: &ConnectOptions) -> StorageResult<PgStorage> {
    let connect = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(options.pool_size.max(1))
        .acquire_timeout(options.timeout)
        .connect_with(connect)
        .await?;
    Ok(SqlStorage::new(PgBackend { pool }))
}

impl Dialect for PgBackend {
    type Db = Postgres;
    const NAME: &'static str = "postgres";
    const MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");
    const CLAIM_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";
    const ROW_LOCK: &'static str = " FOR UPDATE";
    // LATERAL subqueries that cannot be flattened (LIMIT, OFFSET) keep each join an index
    // probe per lookup: as a plain join, the planner's guess of 100 elements can make a hash
    // of the whole sessions table look cheaper.
    const TOKEN_ROWS: &'static str = "jsonb_array_elements($1::jsonb) AS q(value) \
         LEFT JOIN LATERAL (SELECT * FROM sessions WHERE id = (q.value ->> 'sid') LIMIT 1) s \
         ON true";
    const SESSION_ROWS: &'static str = "jsonb_array_elements($1::jsonb) AS q(value) \
         JOIN LATERAL (SELECT * FROM sessions WHERE user_id = (q.value ->> 'user') OFFSET 0) s \
         ON true";

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn audit_writer(&self) -> &PgPool {
        &self.pool
    }

    fn migrator(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_exclusive(&self) -> StorageResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Locks the user's row, which serialises the user's logins and device changes.
    async fn begin_for_user(&self, user_id: &str) -> StorageResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// The live token of an active session of the client: one statement, which updates the
    /// session row and, at most once a minute, its device. Anything else: the rule, on the
    /// row locked in a transaction.
    async fn rotate(&self, r: &Rotation<'_>) -> StorageResult<RotationOutcome> {
        let rotated: Option<Session> = sqlx::query_as(
            "WITH s AS (UPDATE sessions SET generation = $1, previous_hash = current_hash, \
             current_hash = $2, rotated_at = $3, last_used_at = $3, \
             idle_expires_at = LEAST($3 + $4, expires_at), access_jti = $5 \
             WHERE id = $6 AND current_hash = $7 AND client_id = $8 AND revoked_at IS NULL \
             AND expires_at > $3 AND idle_expires_at > $3 RETURNING *), \
             d AS (UPDATE devices SET last_seen_at = $3, last_ip = COALESCE($9, devices.last_ip) \
             FROM s WHERE devices.id = s.device_id AND devices.last_seen_at <= $10) \
             SELECT * FROM s",
        )
        .bind(r.new_generation)
        .bind(r.new_hash)
        .bind(r.now)
        .bind(r.idle_timeout_ms)
        .bind(r.new_jti)
        .bind(r.session_id)
        .bind(r.presented_hash)
        .bind(r.client_id)
        .bind(r.ip)
        .bind(r.now - DEVICE_SEEN_EVERY_MS)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(session) = rotated {
            if r.presented_generation.is_none() {
                // A token of the format before: marked used, so its reuse is detected.
                let mut tx = self.pool.begin().await?;
                seen_and_spent::<Self>(&mut tx, r, None).await?;
                tx.commit().await?;
            }
            return Ok(RotationOutcome::Rotated(session));
        }
        let mut tx = self.pool.begin().await?;
        let outcome = rotate_by_rule::<Self>(&mut tx, r).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn append_audit(&self, records: Arc<[AuditRecord]>) -> StorageResult<()> {
        audit::append(&self.pool, records).await
    }
}
