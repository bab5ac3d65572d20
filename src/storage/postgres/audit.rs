//! The audit log's bulk insert on PostgreSQL: one `COPY` per batch, whatever its size, the
//! cheapest bulk insert PostgreSQL has.

use std::sync::Arc;

use sqlx::PgPool;
use sqlx::postgres::PgPoolCopyExt;

use crate::storage::sql::AUDIT_COLUMNS;
use crate::storage::{AuditRecord, StorageResult};

/// Appends a batch. A batch is written whole or not at all, and its ids are generated before,
/// so a unique violation means an earlier attempt whose answer was lost did store it.
pub(super) async fn append(pool: &PgPool, records: Arc<[AuditRecord]>) -> StorageResult<()> {
    let mut rows = Vec::with_capacity(records.len() * 320);
    for r in records.iter() {
        copy_row(&mut rows, r);
    }
    let statement = format!("COPY audit_events ({AUDIT_COLUMNS}) FROM STDIN");
    let written = async {
        let mut copy = pool.copy_in_raw(&statement).await?;
        copy.send(rows).await?;
        copy.finish().await
    };
    match written.await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

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
