//! [`AuditStore`] in SQL. Appending is the dialect's own bulk insert; a query is built from
//! the filters it has.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::{Builder, Dialect, SqlStorage, Statement};
use crate::audit_event::{events, id_floor};
use crate::storage::{AuditQuery, AuditRecord, AuditStore, StorageResult};

/// The audit table's columns in the order each dialect's bulk insert writes them.
pub const AUDIT_COLUMNS: &str =
    "id, at, event, actor, user_id, session_id, client_id, ip, user_agent, request_id, details";

/// The SQL event index's predicate (the index leaves out the per-request events, see
/// [`events::UNINDEXED`]), which a query for any other event repeats so that the planner may
/// use the index.
pub fn indexed_event_predicate() -> String {
    let names: Vec<String> = events::UNINDEXED.iter().map(|e| format!("'{e}'")).collect();
    format!("event NOT IN ({})", names.join(", "))
}

#[async_trait]
impl<D: Dialect> AuditStore for SqlStorage<D> {
    async fn append_audit(&self, records: Arc<[AuditRecord]>) -> StorageResult<()> {
        self.dialect.append_audit(records).await
    }

    async fn query_audit(&self, q: &AuditQuery) -> StorageResult<Vec<AuditRecord>> {
        let mut select = QueryBuilder::new("SELECT * FROM audit_events WHERE 1 = 1");
        if let Some(user_id) = &q.user_id {
            select.push(" AND user_id = ").push_arg(user_id);
        }
        if let Some(event) = &q.event {
            select.push(" AND event = ").push_arg(event);
            if !events::UNINDEXED.contains(&event.as_str()) {
                select.push(" AND ").push(indexed_event_predicate());
            }
        }
        // Ids are UUIDv7 and start with their time, so a time range is an id range.
        if let Some(since) = q.since {
            select.push(" AND id >= ").push_arg(id_floor(since));
        }
        if let Some(until) = q.until {
            select.push(" AND id < ").push_arg(id_floor(until));
        }
        let (past, order) = if q.ascending {
            (" AND id > ", " ORDER BY id ASC")
        } else {
            (" AND id < ", " ORDER BY id DESC")
        };
        if let Some(cursor) = &q.cursor {
            select.push(past).push_arg(cursor);
        }
        select.push(order).push(" LIMIT ").push_arg(i64::from(q.limit));
        select.build().all(self.reader()).await
    }

    async fn rewrite_audit(&self, user_id: &str, records: &[AuditRecord]) -> StorageResult<()> {
        let mut tx = self.dialect.audit_writer().begin().await?;
        for r in records {
            sqlx::query(
                "UPDATE audit_events SET actor = $1, user_id = $2, session_id = $3, \
                 client_id = $4, ip = $5, user_agent = $6, request_id = $7, details = $8 \
                 WHERE id = $9 AND user_id = $10",
            )
            .arg(&r.actor)
            .arg(&r.user_id)
            .arg(&r.session_id)
            .arg(&r.client_id)
            .arg(&r.ip)
            .arg(&r.user_agent)
            .arg(&r.request_id)
            .arg(&r.details)
            .arg(&r.id)
            .arg(user_id)
            .run(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_queries_repeat_the_index_predicate_of_every_dialect() {
        let predicate = indexed_event_predicate();
        for script in [
            include_str!("../../../migrations/sqlite/0007_audit_event_index.up.sql"),
            include_str!("../../../migrations/postgres/0007_audit_event_index.up.sql"),
        ] {
            assert!(script.contains(&format!("WHERE {predicate};")), "{script}");
        }
    }
}
