//! PostgreSQL backend for many stateless instances. The refresh rule runs inside the
//! database as the function `atoms_rotate_refresh` (one round trip; the session row lock
//! serialises concurrent refreshes of one family).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};

use super::sql_common::{BatchedReaders, sql_storage};
use super::sql_events::AUDIT_COLUMNS;
use super::sql_migrate::Script;
use super::*;

const SCRIPTS: &[Script] = super::sql_migrate::scripts!("postgres");

/// PostgreSQL storage.
#[derive(Debug, Clone)]
pub struct PgStorage {
    pool: PgPool,
    batched: BatchedReaders,
}

impl PgStorage {
    /// Connects a pool to `url` (`options=-c search_path=…` in the URL selects a schema).
    pub async fn connect(url: &str, options: &ConnectOptions) -> StorageResult<Self> {
        let connect = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        Ok(Self { batched: Self::batched_readers(pool.clone()), pool })
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    /// The audit log's table, which the purge deletes from.
    const AUDIT_TABLE: &'static str = "audit_events";

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

    /// One `COPY` per batch, whatever its size: the cheapest bulk insert PostgreSQL has. A
    /// batch is written whole or not at all, and its ids are generated here, so a unique
    /// violation means an earlier attempt whose answer was lost did store it.
    async fn append_audit_batch(&self, records: Arc<[AuditRecord]>) -> StorageResult<()> {
        use sqlx::postgres::PgPoolCopyExt;
        let mut rows = Vec::with_capacity(records.len() * 320);
        for r in records.iter() {
            copy_row(&mut rows, r);
        }
        let statement = format!("COPY audit_events ({AUDIT_COLUMNS}) FROM STDIN");
        let written = async {
            let mut copy = self.pool.copy_in_raw(&statement).await?;
            copy.send(rows).await?;
            copy.finish().await
        };
        match written.await {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(()),
            Err(e) => Err(e.into()),
        }
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
}

sql_storage!(
    PgStorage,
    PgPool,
    "postgres",
    SCRIPTS,
    "FOR UPDATE SKIP LOCKED",
    // LATERAL subqueries that cannot be flattened (LIMIT, OFFSET) keep each join an index
    // probe per lookup: as a plain join, the planner's guess of 100 elements can make a hash
    // of the whole sessions table look cheaper.
    "jsonb_array_elements($1::jsonb) AS q(value) LEFT JOIN LATERAL (SELECT * FROM sessions \
     WHERE id = (q.value ->> 'sid') LIMIT 1) s ON true",
    "jsonb_array_elements($1::jsonb) AS q(value) JOIN LATERAL (SELECT * FROM sessions \
     WHERE user_id = (q.value ->> 'user') OFFSET 0) s ON true"
);

/// Appends `r` as one line of `COPY`'s text format: tab-separated columns in the order of
/// [`AUDIT_COLUMNS`], `\N` for none.
fn copy_row(out: &mut Vec<u8>, r: &AuditRecord) {
    use std::io::Write;
    copy_escape(out, &r.id);
    // Writing into a vector cannot fail.
    let _ = write!(out, "\t{}", r.at);
    let columns = [
        Some(r.event.as_str()),
        r.actor.as_deref(),
        r.user_id.as_deref(),
        r.session_id.as_deref(),
        r.client_id.as_deref(),
        r.ip.as_deref(),
        r.user_agent.as_deref(),
        r.request_id.as_deref(),
        Some(r.details.as_str()),
    ];
    for column in columns {
        out.push(b'\t');
        match column {
            None => out.extend_from_slice(b"\\N"),
            Some(text) => copy_escape(out, text),
        }
    }
    out.push(b'\n');
}

/// Escapes the bytes `COPY`'s text format gives a meaning to.
fn copy_escape(out: &mut Vec<u8>, text: &str) {
    if !crate::encoding::any_byte(text, |b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}
