//! The two relational backends, SQLite and PostgreSQL, as one [`SqlStorage`] over a
//! [`Dialect`]. The files here mirror the storage traits and hold the SQL both dialects run
//! word for word; each dialect (`storage/sqlite/`, `storage/postgres/`) holds its pools and
//! what it does its own way: the refresh rotation, the audit log's bulk insert, the
//! transactions that serialise key rotations and one user's logins, a few clauses.

mod audit;
mod bulk;
mod clients;
mod db;
mod devices;
mod keys;
mod lockout;
mod maintenance;
pub mod migrate;
mod resources;
mod revocations;
pub(crate) mod sessions;
mod sign_in;
mod users;
mod webhooks;

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::{Pool, SqlStr, Transaction};

pub use audit::AUDIT_COLUMNS;
pub use db::SqlDb;
use db::{Builder, Statement, unique};

use super::batch::Batched;
use super::{
    AccessTokenState, AuditRecord, MigrationStatus, Migrations, PoolState, Rotation,
    RotationOutcome, Storage, StorageResult,
};
use crate::clock::Millis;

/// What one SQL backend does its own way.
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx database.
    type Db: SqlDb;
    /// Backend name for logs and metrics.
    const NAME: &'static str;
    /// The migrations, in order.
    const MIGRATOR: Migrator;
    /// The row-lock clause of a claim of webhook deliveries: `FOR UPDATE SKIP LOCKED` where
    /// several instances claim at once; empty where a single writer makes it atomic.
    const CLAIM_LOCK: &'static str;
    /// The clause that locks a row read for update (` FOR UPDATE`); empty where a single
    /// writer serialises writes.
    const ROW_LOCK: &'static str;
    /// The table of a batch of token lookups: the elements of the JSON array `$1` as `q`
    /// (with a column `value`), each left-joined to the session (as `s`) whose id is its
    /// `sid`.
    const TOKEN_ROWS: &'static str;
    /// The table of a batch of session-list lookups: the elements of `$1` as `q`, each
    /// joined to the sessions (as `s`) of its `user`.
    const SESSION_ROWS: &'static str;

    /// Connections for reads.
    fn reader(&self) -> &Pool<Self::Db>;
    /// Connections for writes.
    fn writer(&self) -> &Pool<Self::Db>;
    /// The connections that write and purge the audit log.
    fn audit_writer(&self) -> &Pool<Self::Db>;
    /// The connections that run migrations.
    fn migrator(&self) -> &Pool<Self::Db>;
    /// A write transaction no other key rotation runs beside.
    fn begin_exclusive(
        &self,
    ) -> impl Future<Output = StorageResult<Transaction<'static, Self::Db>>> + Send;
    /// A write transaction that serialises every login and device change of one user (so
    /// two logins never both see room for one more session).
    fn begin_for_user(
        &self,
        user_id: &str,
    ) -> impl Future<Output = StorageResult<Transaction<'static, Self::Db>>> + Send;
    /// The refresh rule, atomically (see [`super::SessionStore::rotate_refresh`]).
    fn rotate(
        &self,
        rotation: &Rotation<'_>,
    ) -> impl Future<Output = StorageResult<RotationOutcome>> + Send;
    /// Appends a batch of audit records with the dialect's cheapest bulk insert.
    fn append_audit(
        &self,
        records: Arc<[AuditRecord]>,
    ) -> impl Future<Output = StorageResult<()>> + Send;
}

/// A relational storage: the shared SQL over a dialect.
#[derive(Debug)]
pub struct SqlStorage<D> {
    dialect: D,
    batched: BatchedReaders,
    claim: SqlStr,
}

impl<D: Dialect> SqlStorage<D> {
    /// The storage over `dialect`'s connections; starts the readers that batch the lookups of
    /// concurrent requests.
    pub fn new(dialect: D) -> Self {
        let batched = BatchedReaders {
            token_states: revocations::batched::<D>(dialect.reader().clone()),
            sessions: sessions::batched::<D>(dialect.reader().clone()),
        };
        Self { claim: webhooks::claim_statement(D::CLAIM_LOCK), batched, dialect }
    }

    /// The dialect's own part.
    pub fn dialect(&self) -> &D {
        &self.dialect
    }

    fn reader(&self) -> &Pool<D::Db> {
        self.dialect.reader()
    }

    fn writer(&self) -> &Pool<D::Db> {
        self.dialect.writer()
    }
}

/// The reads of concurrent requests that share statements.
#[derive(Debug, Clone)]
struct BatchedReaders {
    token_states: Batched<revocations::TokenLookup, AccessTokenState>,
    sessions: Batched<sessions::SessionsLookup, sessions::SessionList>,
}

/// The most lookups one statement answers, and how many such statements run at once. Few
/// slots make for fewer, larger batches, which cost the database less per lookup at
/// saturation with the same latency below it (docs/benchmarks.md has the comparison).
const BATCH: usize = 128;
const SLOTS: usize = 2;

/// A batch of lookups as the JSON array the statement reads its rows from: each with its
/// place `n` in the batch, since a join may return rows in any order.
fn lookups_json<T: serde::Serialize>(lookups: &[T]) -> StorageResult<String> {
    #[derive(serde::Serialize)]
    struct Numbered<'a, T> {
        n: usize,
        #[serde(flatten)]
        lookup: &'a T,
    }
    let rows: Vec<_> =
        lookups.iter().enumerate().map(|(n, lookup)| Numbered { n, lookup }).collect();
    serde_json::to_string(&rows).map_err(|e| super::StorageError::Corrupt(e.to_string()))
}

/// Starts a reader that answers each batch of lookups with one statement `sql`, whose `$1`
/// is the batch as JSON (see [`lookups_json`]); `answer` sorts the rows into the batch's
/// answers, in its order (`answer(lookups, rows)`).
fn batched_reader<D, Q, R, A>(
    pool: Pool<D::Db>,
    sql: String,
    answer: fn(usize, Vec<R>) -> StorageResult<Vec<A>>,
) -> Batched<Q, A>
where
    D: Dialect,
    D::Db: db::Reads<R>,
    Q: serde::Serialize + Send + Sync + 'static,
    R: Send + 'static,
    A: Send + 'static,
{
    let sql: Arc<str> = sql.into();
    Batched::spawn(BATCH, SLOTS, move |lookups: Vec<Q>| {
        let (pool, sql) = (pool.clone(), sql.clone());
        async move {
            let rows: Vec<R> = sqlx::query(sqlx::AssertSqlSafe(sql))
                .arg(lookups_json(&lookups)?)
                .all(&pool)
                .await?;
            answer(lookups.len(), rows)
        }
    })
}

/// The place in its batch of the lookup a row answers.
fn place<T>(places: &mut [T], n: i64) -> StorageResult<&mut T> {
    usize::try_from(n)
        .ok()
        .and_then(|n| places.get_mut(n))
        .ok_or_else(|| super::StorageError::Corrupt(format!("lookup {n} is not in the batch")))
}

#[async_trait]
impl<D: Dialect> Migrations for SqlStorage<D> {
    async fn migrate_up(&self) -> StorageResult<()> {
        migrate::up(&D::MIGRATOR, self.dialect.migrator()).await
    }

    async fn migrate_down(&self, steps: usize) -> StorageResult<()> {
        migrate::down(&D::MIGRATOR, self.dialect.migrator(), steps).await
    }

    async fn migration_status(&self) -> StorageResult<Vec<MigrationStatus>> {
        migrate::status(&D::MIGRATOR, self.dialect.migrator()).await
    }
}

#[async_trait]
impl<D: Dialect> Storage for SqlStorage<D> {
    fn backend(&self) -> &'static str {
        D::NAME
    }

    async fn ping(&self) -> StorageResult<()> {
        sqlx::query("SELECT 1").run(self.reader()).await?;
        Ok(())
    }

    fn pool(&self) -> Option<PoolState> {
        let mut pools = vec![self.reader()];
        for pool in [self.writer(), self.dialect.audit_writer()] {
            if !pools.iter().any(|p| std::ptr::eq(*p, pool)) {
                pools.push(pool);
            }
        }
        Some(PoolState {
            size: pools.iter().map(|p| p.size()).sum(),
            idle: pools.iter().map(|p| p.num_idle() as u32).sum(),
            max: pools.iter().map(|p| p.options().get_max_connections()).sum(),
        })
    }

    async fn count_active_sessions(&self, now: Millis) -> StorageResult<u64> {
        let (count,): (Millis,) = sqlx::query(
            "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL \
             AND idle_expires_at > $1 AND expires_at > $1",
        )
        .arg(now)
        .one(self.reader())
        .await?;
        Ok(count as u64)
    }
}
