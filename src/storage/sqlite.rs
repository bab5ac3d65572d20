//! The embedded default backend. Writes go through a pool of one connection, so write
//! transactions queue in the pool instead of spinning in SQLite's busy handler; reads use a
//! pool of their own (WAL mode lets them run beside the writer). Atomic rules run in
//! `BEGIN IMMEDIATE` transactions, which take the write lock up front.
//!
//! Refresh-token rotations are group-committed: one task takes every rotation waiting at the
//! time, runs them one after another in a single transaction and answers each after the
//! commit. A durable commit (an fsync) is the floor of a rotation, so under load one fsync
//! serves many rotations, while a lone rotation waits for nothing but its own commit.
//!
//! The audit log lives in a database file of its own beside the main one (see
//! [`audit_file`]), with its own single writer and write-ahead log. Its records cost one
//! random leaf of the user index each, a page written to a log and again at a checkpoint:
//! in a file of their own those pages are written and synced beside the rotations' commits
//! instead of inside them. The readers and the migrations attach it as the schema `audit`, so
//! queries name `audit_events` as if it were in the main file. The main file's writer does
//! not: `BEGIN IMMEDIATE` takes the write lock of every attached database, and a commit over
//! two would cost a super-journal, so the writer would queue behind the audit log's writer
//! and pay for files it never changes.
//!
//! The main write-ahead log is checkpointed by a connection of its own, every
//! [`CHECKPOINT_EVERY`], instead of by whichever commit fills it: a checkpoint copies the log
//! into the database file and syncs it, and a commit that did that would keep every rotation
//! of its group waiting several milliseconds longer. A passive checkpoint runs beside the
//! writer and the readers. The audit log's writer checkpoints its own log as it commits:
//! nothing waits on it but the audit queue.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::sql_common::{BatchedReaders, sql_storage};
use super::sql_migrate::Script;
use super::*;
use crate::encoding::json_string;

const SCRIPTS: &[Script] = super::sql_migrate::scripts!("sqlite");

/// The most writes one group commit takes.
const GROUP: usize = 64;

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
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    reader: SqlitePool,
    writer: SqlitePool,
    audit_writer: SqlitePool,
    /// Runs migrations, with the audit log's file attached; it connects when first used.
    migrator: SqlitePool,
    group_writes: mpsc::Sender<GroupWrite>,
    batched: BatchedReaders,
}

/// A rotation waiting for the next group commit, with where its outcome goes once the group
/// is committed.
type GroupWrite = (QueuedRotation, oneshot::Sender<StorageResult<RotationOutcome>>);

/// A rotation's own copy of the request.
#[derive(Debug)]
struct QueuedRotation {
    presented_hash: Vec<u8>,
    new_hash: Vec<u8>,
    client_id: String,
    ip: Option<String>,
    now: Millis,
    grace_ms: Millis,
    idle_timeout_ms: Millis,
    reuse_window_ms: Millis,
    new_jti: String,
    superseded_until: Millis,
}

impl QueuedRotation {
    fn rotation(&self) -> Rotation<'_> {
        Rotation {
            presented_hash: &self.presented_hash,
            new_hash: &self.new_hash,
            client_id: &self.client_id,
            now: self.now,
            grace_ms: self.grace_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            ip: self.ip.as_deref(),
            reuse_window_ms: self.reuse_window_ms,
            new_jti: &self.new_jti,
            superseded_until: self.superseded_until,
        }
    }
}

/// Checkpoints the write-ahead log every [`CHECKPOINT_EVERY`] while the storage is open (its
/// group-commit queue has a sender).
async fn checkpoints(pool: SqlitePool, open: mpsc::WeakSender<GroupWrite>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if open.upgrade().is_none() {
            break;
        }
        // A failed checkpoint leaves the log as it is; the next one takes it up.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::warn!(error = %e, "write-ahead log checkpoint failed");
        }
    }
    pool.close().await;
}

/// Commits queued writes in groups until every sender is gone.
async fn commit_groups(writer: SqlitePool, mut queue: mpsc::Receiver<GroupWrite>) {
    let mut group = Vec::with_capacity(GROUP);
    while queue.recv_many(&mut group, GROUP).await > 0 {
        // On failure nothing of the group was committed: each caller may retry.
        let (committed, outcomes) = match write_group(&writer, &group).await {
            Ok(outcomes) => (Ok(()), outcomes),
            Err(e) => (Err(e.to_string()), Vec::new()),
        };
        // Each rotation takes the next of the outcomes.
        let mut outcomes = outcomes.into_iter();
        for (_, reply) in group.drain(..) {
            let outcome = match &committed {
                Ok(()) => outcomes.next().ok_or_else(|| "no outcome".to_owned()),
                Err(e) => Err(e.clone()),
            };
            drop(reply.send(outcome.map_err(StorageError::Write)));
        }
    }
}

/// Runs the rotations of `group` in order in one transaction; returns their outcomes.
async fn write_group(
    writer: &SqlitePool,
    group: &[GroupWrite],
) -> StorageResult<Vec<RotationOutcome>> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let mut outcomes = Vec::with_capacity(group.len());
    for (queued, _) in group {
        outcomes.push(rotate_in(&mut tx, &queued.rotation()).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// The audit log's database file for the main file `main`: beside it, named with `-audit`
/// after the main file's stem (`atoms-auth.db`: `atoms-auth-audit.db`).
pub fn audit_file(main: &Path) -> PathBuf {
    let mut name = main.file_stem().unwrap_or_default().to_os_string();
    name.push("-audit");
    if let Some(extension) = main.extension() {
        name.push(".");
        name.push(extension);
    }
    main.with_file_name(name)
}

/// `pool` with every connection attaching the audit log's file as the schema `audit`. A
/// connection that attaches it must not begin write transactions on the main file while the
/// server runs (see the module's notes).
fn attaching(pool: SqlitePoolOptions, audit: &Path) -> SqlitePoolOptions {
    let audit: Arc<str> = audit.to_string_lossy().into();
    pool.after_connect(move |conn, _| {
        let audit = Arc::clone(&audit);
        Box::pin(async move {
            sqlx::query("ATTACH DATABASE $1 AS audit").bind(&*audit).execute(conn).await?;
            Ok(())
        })
    })
}

/// Multi-row inserts in chunks whose sizes are powers of two: at most seven distinct
/// statements, each built and prepared once, and few enough calls that the driver's worker
/// thread is woken a handful of times per batch, not per record.
async fn insert_audit(tx: &mut SqliteConnection, records: &[AuditRecord]) -> StorageResult<()> {
    let mut rest = records;
    while !rest.is_empty() {
        let (sql, size) = insert_audit_statement(rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut insert = sqlx::query(sql).persistent(true);
        // In the order of `AUDIT_LOG_COLUMNS`.
        for r in chunk {
            insert = insert.bind(&r.id).bind(&r.event).bind(&r.user_id).bind(packed_record(r));
        }
        insert.execute(&mut *tx).await?;
    }
    Ok(())
}

/// The columns of `audit_log`, the table under the `audit_events` view (migration 11).
const AUDIT_LOG_COLUMNS: &str = "id, event, user_id, record";

/// What `audit_log` keeps of a record beside its id, event and user: one JSON object, with
/// the details object inside it and no key for a field the record lacks. Built here, it is
/// handed to the driver without a copy.
fn packed_record(r: &AuditRecord) -> String {
    // Each key as it is written, with its separators: the keys are fixed names that JSON
    // needs no escape for, so only the values go through `json_string`.
    let optional = [
        (",\"actor\":", &r.actor),
        (",\"session_id\":", &r.session_id),
        (",\"client_id\":", &r.client_id),
        (",\"ip\":", &r.ip),
        (",\"user_agent\":", &r.user_agent),
        (",\"request_id\":", &r.request_id),
    ];
    let length: usize = optional.iter().filter_map(|(_, v)| v.as_ref()).map(|v| v.len() + 16).sum();
    let mut out = Vec::with_capacity(length + r.details.len() + 40);
    out.extend_from_slice(b"{\"at\":");
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &r.at);
    for (key, value) in optional {
        if let Some(value) = value {
            out.extend_from_slice(key.as_bytes());
            json_string(&mut out, value);
        }
    }
    // The details are a JSON object already (`AuditRecord::details`): they go in as they
    // are, not escaped into a string, which cost more than the rest of the record.
    out.extend_from_slice(b",\"details\":");
    out.extend_from_slice(r.details.as_bytes());
    out.push(b'}');
    // Only text and JSON escapes of text were written.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The statement inserting the largest power of two up to 64 of `rows` records, and that
/// count. The seven statements are built once rather than for every chunk of every batch.
///
/// `OR IGNORE`, not `ON CONFLICT (id) DO NOTHING`: both skip a record already stored (a batch
/// written again), but the latter leaves the NOT NULL checks able to abort a multi-row
/// statement halfway, so SQLite keeps a statement journal, a copy of every page the statement
/// changes in a temporary file, about a fifth of the audit writer's time. Every NOT NULL
/// column is a field the record always has.
fn insert_audit_statement(rows: usize) -> (&'static str, usize) {
    static STATEMENTS: std::sync::OnceLock<[String; 7]> = std::sync::OnceLock::new();
    let statements = STATEMENTS.get_or_init(|| {
        let placeholders: Vec<&str> = AUDIT_LOG_COLUMNS.split(", ").map(|_| "?").collect();
        let row = format!("({})", placeholders.join(", "));
        std::array::from_fn(|power| {
            format!(
                "INSERT OR IGNORE INTO audit_log ({AUDIT_LOG_COLUMNS}) VALUES {}",
                vec![row.as_str(); 1 << power].join(", ")
            )
        })
    });
    let power = rows.max(1).ilog2().min(6) as usize;
    (&statements[power], 1 << power)
}

impl SqliteStorage {
    /// Opens (and with `mode=rwc`, creates) the database file of `url` and the audit log's
    /// file beside it.
    pub async fn connect(url: &str, options: &ConnectOptions) -> StorageResult<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let audit = audit_file(connect.get_filename());
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
        let migrator = attaching(single(), &audit)
            .min_connections(0)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(role("sqlite-migrate"));
        let reader = attaching(SqlitePoolOptions::new(), &audit)
            .max_connections(options.pool_size.max(1))
            .connect_with(role("sqlite-reader"))
            .await?;
        let (group_writes, queue) = mpsc::channel(4 * GROUP);
        tokio::spawn(checkpoints(checkpointer, group_writes.downgrade()));
        tokio::spawn(commit_groups(writer.clone(), queue));
        let batched = Self::batched_readers(reader.clone());
        Ok(Self { reader, writer, audit_writer, migrator, group_writes, batched })
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The table under the `audit_events` view, which the purge deletes from.
    const AUDIT_TABLE: &'static str = "audit_log";

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

    /// One transaction of the audit log's own writer per batch.
    async fn append_audit_batch(&self, records: Arc<[AuditRecord]>) -> StorageResult<()> {
        let mut tx = self.audit_writer.begin_with("BEGIN IMMEDIATE").await?;
        insert_audit(&mut tx, &records).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues the rotation for the next group commit and waits for its outcome.
    async fn rotate(&self, r: &Rotation<'_>) -> StorageResult<RotationOutcome> {
        let queued = QueuedRotation {
            presented_hash: r.presented_hash.to_vec(),
            new_hash: r.new_hash.to_vec(),
            client_id: r.client_id.to_owned(),
            ip: r.ip.map(str::to_owned),
            now: r.now,
            grace_ms: r.grace_ms,
            idle_timeout_ms: r.idle_timeout_ms,
            reuse_window_ms: r.reuse_window_ms,
            new_jti: r.new_jti.to_owned(),
            superseded_until: r.superseded_until,
        };
        let (reply, done) = oneshot::channel();
        let stopped = || StorageError::Write("the group committer has stopped".into());
        self.group_writes.send((queued, reply)).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

/// One rotation inside the group's transaction. Outcomes that change nothing write nothing.
async fn rotate_in(tx: &mut SqliteConnection, r: &Rotation<'_>) -> StorageResult<RotationOutcome> {
    use sqlx::{FromRow, Row};
    let row = sqlx::query(
        "SELECT s.* FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
         WHERE t.hash = $1",
    )
    .bind(r.presented_hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(RotationOutcome::Invalid);
    };
    let session = Session::from_row(&row)?;
    let current: Vec<u8> = row.try_get("current_hash")?;
    let previous: Option<Vec<u8>> = row.try_get("previous_hash")?;
    let rotated_at: Option<Millis> = row.try_get("rotated_at")?;
    let decision = r.decide(&session, &current, previous.as_deref(), rotated_at);
    let updated: Session = match decision {
        RotationDecision::WrongClient => return Ok(RotationOutcome::Invalid),
        RotationDecision::Ended => return Ok(RotationOutcome::Ended(session)),
        RotationDecision::Rotate | RotationDecision::Grace => {
            // A grace retry is allowed once per rotation: it forgets the previous token, so
            // presenting that again is reuse; and the access token issued with the pair it
            // supersedes is revoked.
            let sql = if decision == RotationDecision::Rotate {
                "UPDATE sessions SET previous_hash = current_hash, current_hash = $1, \
                 rotated_at = $2, last_used_at = $2, idle_expires_at = $3, access_jti = $5 \
                 WHERE id = $4 RETURNING *"
            } else {
                "UPDATE sessions SET current_hash = $1, previous_hash = NULL, last_used_at = $2, \
                 idle_expires_at = $3, access_jti = $5 WHERE id = $4 RETURNING *"
            };
            if let (RotationDecision::Grace, Some(jti)) = (decision, &session.access_jti) {
                sqlx::query(
                    "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(jti)
                .bind(r.superseded_until)
                .execute(&mut *tx)
                .await?;
            }
            let spent: &[u8] =
                if decision == RotationDecision::Rotate { r.presented_hash } else { &current };
            sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE hash = $2")
                .bind(r.now)
                .bind(spent)
                .execute(&mut *tx)
                .await?;
            let updated = sqlx::query_as(sql)
                .bind(r.new_hash)
                .bind(r.now)
                .bind(r.idle_expiry(&session))
                .bind(&session.id)
                .bind(r.new_jti)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE devices SET last_seen_at = $1, last_ip = COALESCE($2, last_ip) \
                 WHERE id = $3",
            )
            .bind(r.now)
            .bind(r.ip)
            .bind(&session.device_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ($1, $2, $3)",
            )
            .bind(r.new_hash)
            .bind(&session.id)
            .bind(r.now)
            .execute(&mut *tx)
            .await?;
            updated
        }
        RotationDecision::Reuse => {
            sqlx::query_as(
                "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 \
                 RETURNING *",
            )
            .bind(r.now)
            .bind(revoke_reason::REFRESH_TOKEN_REUSE)
            .bind(&session.id)
            .fetch_one(&mut *tx)
            .await?
        }
    };
    Ok(match decision {
        RotationDecision::Rotate => RotationOutcome::Rotated(updated),
        RotationDecision::Grace => RotationOutcome::Grace(updated),
        _ => RotationOutcome::Reused(updated),
    })
}

sql_storage!(
    SqliteStorage,
    SqlitePool,
    "sqlite",
    SCRIPTS,
    "",
    "json_each($1) AS q LEFT JOIN sessions s ON s.id = (q.value ->> 'sid')",
    "json_each($1) AS q JOIN sessions s ON s.user_id = (q.value ->> 'user')"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A storage on `url`, with two readers.
    async fn open(url: &str) -> SqliteStorage {
        let options = ConnectOptions { pool_size: 2, redis_key_prefix: String::new() };
        SqliteStorage::connect(url, &options).await.expect("open")
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
        assert_eq!(cache(storage.writer()).await, [(-i64::from(WRITER_CACHE_KIB),)]);
        assert_eq!(cache(storage.audit_writer()).await, [(-i64::from(WRITER_CACHE_KIB),)]);
        assert_eq!(cache(storage.reader()).await, [(-2000,)]);
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
        assert_eq!(schemas(storage.writer()).await, [("main".to_owned(), main)]);
        assert_eq!(schemas(storage.audit_writer()).await, [("main".to_owned(), audit)]);
        assert_eq!(schemas(storage.reader()).await, both);
        assert_eq!(schemas(storage.migrator()).await, both);
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
