//! The embedded default backend. Writes go through a pool of one connection, so write
//! transactions queue in the pool instead of spinning in SQLite's busy handler; reads use a
//! pool of their own (WAL mode lets them run beside the writer). Atomic rules run in
//! `BEGIN IMMEDIATE` transactions, which take the write lock up front. Refresh rotations are
//! group-committed (see [`rotation`]); the audit log has a file of its own (see [`audit`]).
//!
//! The main write-ahead log is checkpointed by a connection of its own, every
//! [`CHECKPOINT_EVERY`], instead of by whichever commit fills it: a checkpoint copies the log
//! into the database file and syncs it, and a commit that did that would keep every rotation
//! of its group waiting several milliseconds longer. A passive checkpoint runs beside the
//! writer and the readers. The audit log's writer checkpoints its own log as it commits:
//! nothing waits on it but the audit queue.

mod audit;
mod rotation;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool, Transaction};

pub use audit::audit_file;
use rotation::GroupCommits;

use super::sql::{Dialect, SqlStorage};
use super::{AuditRecord, ConnectOptions, Rotation, RotationOutcome, StorageResult};

/// The page cache of each single writer (the main file's and the audit log's), in KiB:
/// SQLite's default, set here so that it stays small. A commit whose B-tree splits reordered
/// pages makes SQLite's page cache scan every page it holds at the commit, and such commits
/// are frequent under write load, so a large cache makes every such commit slower; a small
/// one costs only pages read again from the kernel's cache (docs/benchmarks.md has the
/// measurements).
const WRITER_CACHE_KIB: u32 = 2000;

/// How often the write-ahead log is copied into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// SQLite storage.
pub type SqliteStorage = SqlStorage<SqliteBackend>;

/// SQLite's connections and group committer.
#[derive(Debug)]
pub struct SqliteBackend {
    reader: SqlitePool,
    writer: SqlitePool,
    audit_writer: SqlitePool,
    /// Runs migrations, with the audit log's file attached; it connects when first used.
    migrator: SqlitePool,
    group_commits: GroupCommits,
}

/// Checkpoints the write-ahead log every [`CHECKPOINT_EVERY`] until `closed`.
async fn checkpoints(pool: SqlitePool, closed: impl Fn() -> bool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if closed() {
            break;
        }
        // A failed checkpoint leaves the log as it is; the next one takes it up.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::warn!(error = %e, "write-ahead log checkpoint failed");
        }
    }
    pool.close().await;
}

/// Opens (and with `mode=rwc`, creates) the database file of `url` and the audit log's file
/// beside it.
pub async fn connect(url: &str, options: &ConnectOptions) -> StorageResult<SqliteStorage> {
    let connect = SqliteConnectOptions::from_str(url)?
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let audit = audit::audit_file(connect.get_filename());
    let single = || SqlitePoolOptions::new().max_connections(1);
    let cache = format!("-{WRITER_CACHE_KIB}");
    // Each connection's driver thread is named for its role (`top -H`, `perf`).
    let role = |role: &'static str| connect.clone().thread_name(move |_| role.to_owned());
    // First, so that the file exists, in WAL mode, before anything attaches it.
    let audit_writer = single()
        .connect_with(role("sqlite-audit").filename(&audit).pragma("cache_size", cache.clone()))
        .await?;
    // No commit checkpoints: the checkpointer below does.
    let writer = single()
        .connect_with(
            role("sqlite-writer").pragma("wal_autocheckpoint", "0").pragma("cache_size", cache),
        )
        .await?;
    let checkpointer = single().connect_with(role("sqlite-ckpt")).await?;
    let migrator = audit::attaching(single(), &audit)
        .min_connections(0)
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(role("sqlite-migrate"));
    let reader = audit::attaching(SqlitePoolOptions::new(), &audit)
        .max_connections(options.pool_size.max(1))
        .connect_with(role("sqlite-reader"))
        .await?;
    let group_commits = GroupCommits::start(writer.clone());
    tokio::spawn(checkpoints(checkpointer, group_commits.closed()));
    let backend = SqliteBackend { reader, writer, audit_writer, migrator, group_commits };
    Ok(SqlStorage::new(backend))
}

impl Dialect for SqliteBackend {
    type Db = Sqlite;
    const NAME: &'static str = "sqlite";
    const MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
    const CLAIM_LOCK: &'static str = "";
    const ROW_LOCK: &'static str = "";
    const TOKEN_ROWS: &'static str =
        "json_each($1) AS q LEFT JOIN sessions s ON s.id = (q.value ->> 'sid')";
    const SESSION_ROWS: &'static str =
        "json_each($1) AS q JOIN sessions s ON s.user_id = (q.value ->> 'user')";

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The audit log's own single writer, whose main database is the audit file.
    fn audit_writer(&self) -> &SqlitePool {
        &self.audit_writer
    }

    fn migrator(&self) -> &SqlitePool {
        &self.migrator
    }

    async fn begin_exclusive(&self) -> StorageResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// SQLite has one writer at a time: the write lock serialises the user's logins.
    async fn begin_for_user(&self, _user_id: &str) -> StorageResult<Transaction<'static, Sqlite>> {
        self.begin_exclusive().await
    }

    async fn rotate(&self, rotation: &Rotation<'_>) -> StorageResult<RotationOutcome> {
        self.group_commits.rotate(rotation).await
    }

    async fn append_audit(&self, records: Arc<[AuditRecord]>) -> StorageResult<()> {
        audit::append(&self.audit_writer, &records).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::storage::{AuditQuery, AuditStore, Migrations};

    /// A storage on `url`, with two readers.
    async fn open(url: &str) -> SqliteStorage {
        let options = ConnectOptions {
            pool_size: 2,
            redis_key_prefix: String::new(),
            timeout: crate::storage::DEFAULT_TIMEOUT,
        };
        connect(url, &options).await.expect("open")
    }

    /// The rows of `sql` (a pragma) on one of `pool`'s connections.
    async fn pragma<T>(pool: &SqlitePool, sql: &'static str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        sqlx::query_as(sql).fetch_all(pool).await.expect(sql)
    }

    #[tokio::test]
    async fn the_writers_keep_a_small_page_cache() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = open(&format!("sqlite://{}?mode=rwc", dir.path().join("db").display())).await;
        let cache = |pool| pragma::<(i64,)>(pool, "PRAGMA cache_size");
        assert_eq!(cache(storage.dialect().writer()).await, [(-i64::from(WRITER_CACHE_KIB),)]);
        assert_eq!(
            cache(storage.dialect().audit_writer()).await,
            [(-i64::from(WRITER_CACHE_KIB),)]
        );
        assert_eq!(cache(storage.dialect().reader()).await, [(-2000,)]);
    }

    /// Only the readers and the migrations see the audit log's file: the main writer's
    /// `BEGIN IMMEDIATE` would otherwise lock it as well.
    #[tokio::test]
    async fn the_main_writer_leaves_the_audit_file_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = open(&format!("sqlite://{}?mode=rwc", dir.path().join("db").display())).await;
        let schemas = |pool| async move {
            let list = pragma::<(i64, String, String)>(pool, "PRAGMA database_list").await;
            list.into_iter().map(|(_, name, file)| (name, file)).collect::<Vec<_>>()
        };
        let main = dir.path().join("db").display().to_string();
        let audit = dir.path().join("db-audit").display().to_string();
        let both = vec![("main".to_owned(), main.clone()), ("audit".to_owned(), audit.clone())];
        assert_eq!(schemas(storage.dialect().writer()).await, [("main".to_owned(), main)]);
        assert_eq!(schemas(storage.dialect().audit_writer()).await, [("main".to_owned(), audit)]);
        assert_eq!(schemas(storage.dialect().reader()).await, both);
        assert_eq!(schemas(storage.dialect().migrator()).await, both);
    }

    /// An in-memory database keeps its audit log in memory as well, shared by every
    /// connection like the main one.
    #[tokio::test]
    async fn an_in_memory_database_has_an_in_memory_audit_log() {
        let storage = open("sqlite::memory:").await;
        storage.migrate_up().await.expect("migrate");
        let record = AuditRecord {
            id: crate::audit_event::id_floor(1_700_000_000_000),
            at: 1_700_000_000_000,
            event: crate::audit_event::events::KEY_ROTATED.to_owned(),
            actor: None,
            user_id: None,
            session_id: None,
            client_id: None,
            ip: None,
            user_agent: None,
            request_id: None,
            details: "{}".to_owned(),
        };
        storage.append_audit(Arc::new([record.clone()])).await.expect("append");
        let all = AuditQuery { limit: 10, ..Default::default() };
        assert_eq!(storage.query_audit(&all).await.expect("query"), [record]);
    }

    #[test]
    fn the_audit_file_sits_beside_the_main_file_with_its_stem_marked() {
        let audit = |main: &str| audit_file(Path::new(main)).display().to_string();
        assert_eq!(audit("atoms-auth.db"), "atoms-auth-audit.db");
        assert_eq!(audit("/var/lib/atoms/auth.sqlite3"), "/var/lib/atoms/auth-audit.sqlite3");
        assert_eq!(audit("data/db"), "data/db-audit");
        assert_eq!(audit("a.b.c"), "a.b-audit.c");
    }
}
