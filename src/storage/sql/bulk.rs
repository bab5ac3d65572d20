//! [`BulkImport`] in SQL: multi-row inserts of at most 1,000 rows (within every dialect's
//! parameter limit), all in one transaction.

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::db::{Binds, SqlDb};
use super::{Builder, Dialect, SqlStorage, Statement, unique};
use crate::storage::{BulkImport, ImportedSession, StorageResult, User};

const ROWS: usize = 1_000;

/// One row of a multi-row insert, its values pushed in order.
struct Values<'b, DB: SqlDb> {
    builder: &'b mut QueryBuilder<DB>,
    first: bool,
}

impl<DB: SqlDb> Values<'_, DB> {
    fn arg<'t, T>(&mut self, value: T) -> &mut Self
    where
        DB: Binds<'t, T>,
    {
        if !std::mem::take(&mut self.first) {
            self.builder.push(", ");
        }
        self.builder.push_arg(value);
        self
    }
}

/// `head` (an `INSERT INTO t (columns) `) with a row of values for each of `rows`.
fn insert<DB: SqlDb, T>(
    head: &'static str,
    rows: &[T],
    mut values: impl FnMut(&mut Values<'_, DB>, &T),
) -> QueryBuilder<DB> {
    let mut builder = QueryBuilder::new(head);
    builder.push("VALUES ");
    for (i, row) in rows.iter().enumerate() {
        builder.push(if i == 0 { "(" } else { ", (" });
        values(&mut Values { builder: &mut builder, first: true }, row);
        builder.push(")");
    }
    builder
}

#[async_trait]
impl<D: Dialect> BulkImport for SqlStorage<D> {
    async fn import_sessions(
        &self,
        users: &[User],
        sessions: &[ImportedSession],
    ) -> StorageResult<()> {
        let mut tx = self.writer().begin().await?;
        for chunk in users.chunks(ROWS) {
            let mut statement = insert(
                "INSERT INTO users (id, username, password_hash, created_at, disabled, role) ",
                chunk,
                |row, u| {
                    row.arg(&u.id)
                        .arg(&u.username)
                        .arg(&u.password_hash)
                        .arg(u.created_at)
                        .arg(u.disabled)
                        .arg(&u.role);
                },
            );
            statement.build().run(&mut tx).await.map_err(unique("user"))?;
        }
        for chunk in sessions.chunks(ROWS) {
            let mut statement = insert(
                "INSERT INTO devices (id, user_id, fingerprint, name, platform, user_agent, \
                 last_ip, first_seen_at, last_seen_at, trusted) ",
                chunk,
                |row, i| {
                    let d = &i.device;
                    row.arg(&d.id)
                        .arg(&d.user_id)
                        .arg(&d.fingerprint)
                        .arg(&d.name)
                        .arg(&d.platform)
                        .arg(&d.user_agent)
                        .arg(&d.last_ip)
                        .arg(d.first_seen_at)
                        .arg(d.last_seen_at)
                        .arg(d.trusted);
                },
            );
            statement.build().run(&mut tx).await.map_err(unique("device"))?;
            let mut statement = insert(
                "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, \
                 idle_expires_at, expires_at, ip, user_agent, current_hash, device_id, resource) ",
                chunk,
                |row, i| {
                    let s = &i.session;
                    row.arg(&s.id)
                        .arg(&s.user_id)
                        .arg(&s.client_id)
                        .arg(&s.scope)
                        .arg(s.created_at)
                        .arg(s.last_used_at)
                        .arg(s.idle_expires_at)
                        .arg(s.expires_at)
                        .arg(&s.ip)
                        .arg(&s.user_agent)
                        .arg(&i.refresh_hash)
                        .arg(&i.device.id)
                        .arg(&s.resource);
                },
            );
            statement.build().run(&mut tx).await.map_err(unique("session"))?;
            let mut statement = insert(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at) ",
                chunk,
                |row, i| {
                    row.arg(&i.refresh_hash).arg(&i.session.id).arg(i.session.created_at);
                },
            );
            statement.build().run(&mut tx).await.map_err(unique("refresh token"))?;
        }
        tx.commit().await?;
        Ok(())
    }
}
