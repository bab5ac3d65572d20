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
use sqlx::{SqliteConnection, SqlitePool};

use crate::encoding::json_string;
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
