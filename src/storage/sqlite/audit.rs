//! The audit log lives in a database file of its own beside the main one (see
//! [`audit_file`]), with its own single writer and write-ahead log. Its records cost one
//! random leaf of the user index each, a page written to a log and again at a checkpoint:
//! in a file of their own those pages are written and synced beside the rotations' commits
//! instead of inside them. The readers and the migrations attach it as the schema `audit`, so
//! queries name `audit_events` as if it were in the main file. The main file's writer does
//! not: `BEGIN IMMEDIATE` takes the write lock of every attached database, and a commit over
//! two would cost a super-journal, so the writer would queue behind the audit log's writer
//! and pay for files it never changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{QueryBuilder, SqliteConnection, SqlitePool};

use crate::storage::sql::AUDIT_COLUMNS;
use crate::storage::{AuditRecord, StorageResult};

/// One transaction of the audit log's own writer per batch.
pub(super) async fn append(writer: &SqlitePool, records: &[AuditRecord]) -> StorageResult<()> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    insert_audit(&mut tx, records).await?;
    tx.commit().await?;
    Ok(())
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
pub(super) fn attaching(pool: SqlitePoolOptions, audit: &Path) -> SqlitePoolOptions {
    let audit: Arc<str> = audit.to_string_lossy().into();
    pool.after_connect(move |conn, _| {
        let audit = Arc::clone(&audit);
        Box::pin(async move {
            sqlx::query("ATTACH DATABASE $1 AS audit").bind(&*audit).execute(conn).await?;
            Ok(())
        })
    })
}

/// Records per insert statement: few enough calls that the driver's worker thread is woken a
/// handful of times per batch, not per record, and 11 values each stays far below SQLite's
/// limit of bound values. sqlx keeps each distinct statement prepared.
const ROWS_PER_INSERT: usize = 64;

/// Multi-row inserts of whole batches.
///
/// `OR IGNORE`, not `ON CONFLICT (id) DO NOTHING`: both skip a record already stored (a batch
/// written again), but the latter leaves the NOT NULL checks able to abort a multi-row
/// statement halfway, so SQLite keeps a statement journal, a copy of every page the statement
/// changes in a temporary file. Every NOT NULL column is a field the record always has.
async fn insert_audit(tx: &mut SqliteConnection, records: &[AuditRecord]) -> StorageResult<()> {
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let mut insert =
            QueryBuilder::new(format!("INSERT OR IGNORE INTO audit_events ({AUDIT_COLUMNS}) "));
        insert.push_values(chunk, |mut row, r| {
            row.push_bind(&r.id)
                .push_bind(r.at)
                .push_bind(&r.event)
                .push_bind(&r.actor)
                .push_bind(&r.user_id)
                .push_bind(&r.session_id)
                .push_bind(&r.client_id)
                .push_bind(&r.ip)
                .push_bind(&r.user_agent)
                .push_bind(&r.request_id)
                .push_bind(&r.details);
        });
        insert.build().persistent(true).execute(&mut *tx).await?;
    }
    Ok(())
}
