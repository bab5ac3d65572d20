//! PostgreSQL backend for many stateless instances. The refresh rule runs inside the
//! database as the function `atoms_rotate_refresh` (one round trip; the session row lock
//! serialises concurrent refreshes of one family).

mod audit;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};

use super::sql::{Dialect, SqlStorage};
use super::{
    AuditRecord, ConnectOptions, Rotation, RotationOutcome, Session, StorageError, StorageResult,
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
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect)
        .await?;
    Ok(SqlStorage::new(PgBackend { pool }))
}

impl Dialect for PgBackend {
    type Db = Postgres;
    const NAME: &'static str = "postgres";
    const MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");
    const CLAIM_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";
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

    async fn rotate(&self, r: &Rotation<'_>) -> StorageResult<RotationOutcome> {
        let (outcome, session): (String, Option<Json<Session>>) = sqlx::query_as(
            "SELECT outcome, session FROM atoms_rotate_refresh($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(r.presented_hash)
        .bind(r.new_hash)
        .bind(r.client_id)
        .bind(r.now)
        .bind(r.grace_ms)
        .bind(r.idle_timeout_ms)
        .bind(r.ip)
        .bind(r.new_jti)
        .bind(r.superseded_until)
        .fetch_one(&self.pool)
        .await?;
        let session = session.map(|s| s.0);
        Ok(match (outcome.as_str(), session) {
            ("rotated", Some(s)) => RotationOutcome::Rotated(s),
            ("grace", Some(s)) => RotationOutcome::Grace(s),
            ("reused", Some(s)) => RotationOutcome::Reused(s),
            ("ended", Some(s)) => RotationOutcome::Ended(s),
            ("invalid", None) => RotationOutcome::Invalid,
            (other, _) => return Err(StorageError::Corrupt(format!("rotation outcome {other}"))),
        })
    }

    async fn append_audit(&self, records: Arc<[AuditRecord]>) -> StorageResult<()> {
        audit::append(&self.pool, records).await
    }
}
