//! The audit log's bulk insert on PostgreSQL: one `INSERT … SELECT FROM UNNEST` per batch,
//! each column bound as one array, whatever the batch's size.
//!
//! Requests wait for their batch to be stored before they answer, so a batch's latency is
//! theirs. `COPY`, cheaper per row, is sent as two writes (the data, then its end), and with
//! Nagle's algorithm on (the driver's default) the second waits for the server's delayed
//! acknowledgement of the first (docs/benchmarks.md, "Durable audit records"). One
//! statement is one write.

use std::sync::Arc;

use sqlx::PgPool;

use crate::storage::{AuditRecord, StorageResult};

const INSERT: &str = "INSERT INTO audit_events \
     (id, at, event, actor, user_id, session_id, client_id, ip, user_agent, request_id, details) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) \
     ON CONFLICT (id) DO NOTHING";

/// Appends a batch. A batch is written whole or not at all, and its ids are made before, so
/// one already stored (by an attempt whose answer was lost) is skipped.
pub(super) async fn append(pool: &PgPool, records: Arc<[AuditRecord]>) -> StorageResult<()> {
    let text = |field: fn(&AuditRecord) -> Option<&str>| -> Vec<Option<&str>> {
        records.iter().map(field).collect()
    };
    sqlx::query(INSERT)
        .bind(text(|r| Some(r.id.as_str())))
        .bind(records.iter().map(|r| r.at).collect::<Vec<i64>>())
        .bind(text(|r| Some(r.event.as_str())))
        .bind(text(|r| r.actor.as_deref()))
        .bind(text(|r| r.user_id.as_deref()))
        .bind(text(|r| r.session_id.as_deref()))
        .bind(text(|r| r.client_id.as_deref()))
        .bind(text(|r| r.ip.as_deref()))
        .bind(text(|r| r.user_agent.as_deref()))
        .bind(text(|r| r.request_id.as_deref()))
        .bind(text(|r| Some(r.details.as_str())))
        .execute(pool)
        .await?;
    Ok(())
}
