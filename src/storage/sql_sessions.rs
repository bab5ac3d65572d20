//! Sessions, devices and the purge job in the SQL both relational backends share. The
//! backend supplies `begin_for_user(user_id)`, a transaction that serialises every login of
//! one user (so two logins never both see room for one more session), and `rotate()`.

/// Implements [`super::SessionStore`], [`super::DeviceStore`] and [`super::Maintenance`].
macro_rules! sql_session_stores {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::SessionStore for $ty {
            async fn create_session(&self, login: &Login<'_>) -> StorageResult<LoginOutcome> {
                let (s, d) = (login.session, login.device);
                let mut tx = self.begin_for_user(&s.user_id).await?;
                let existing: Option<Device> =
                    sqlx::query_as("SELECT * FROM devices WHERE user_id = $1 AND fingerprint = $2")
                        .bind(&d.user_id)
                        .bind(&d.fingerprint)
                        .fetch_optional(&mut *tx)
                        .await?;
                let new_device = existing.is_none();
                let device: Device = match existing {
                    Some(old) => {
                        sqlx::query_as(
                            "UPDATE devices SET last_seen_at = $1, last_ip = COALESCE($2, last_ip), \
                             user_agent = COALESCE($3, user_agent), platform = COALESCE($4, platform), \
                             name = CASE WHEN $5 THEN $6 ELSE name END WHERE id = $7 RETURNING *",
                        )
                        .bind(d.last_seen_at)
                        .bind(&d.last_ip)
                        .bind(&d.user_agent)
                        .bind(&d.platform)
                        .bind(login.device_named_by_client)
                        .bind(&d.name)
                        .bind(&old.id)
                        .fetch_one(&mut *tx)
                        .await?
                    }
                    None => {
                        sqlx::query_as(
                            "INSERT INTO devices (id, user_id, fingerprint, name, platform, \
                             user_agent, last_ip, first_seen_at, last_seen_at, trusted) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
                        )
                        .bind(&d.id)
                        .bind(&d.user_id)
                        .bind(&d.fingerprint)
                        .bind(&d.name)
                        .bind(&d.platform)
                        .bind(&d.user_agent)
                        .bind(&d.last_ip)
                        .bind(d.first_seen_at)
                        .bind(d.last_seen_at)
                        .bind(d.trusted)
                        .fetch_one(&mut *tx)
                        .await?
                    }
                };
                let live: Vec<Session> = sqlx::query_as(
                    "SELECT * FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
                     AND expires_at > $2 AND idle_expires_at > $2 ORDER BY last_used_at, id",
                )
                .bind(&s.user_id)
                .bind(s.created_at)
                .fetch_all(&mut *tx)
                .await?;
                let excess = (live.len() + 1).saturating_sub(login.max_sessions.max(1));
                let mut evicted = Vec::with_capacity(excess);
                for old in live.into_iter().take(excess) {
                    let session: Session = sqlx::query_as(
                        "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 \
                         RETURNING *",
                    )
                    .bind(s.created_at)
                    .bind(revoke_reason::EVICTED)
                    .bind(&old.id)
                    .fetch_one(&mut *tx)
                    .await?;
                    evicted.push(session);
                }
                let session: Session = sqlx::query_as(
                    "INSERT INTO sessions (id, user_id, client_id, scope, created_at, \
                     last_used_at, idle_expires_at, expires_at, ip, user_agent, current_hash, \
                     device_id, access_jti) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     RETURNING *",
                )
                .bind(&s.id)
                .bind(&s.user_id)
                .bind(&s.client_id)
                .bind(&s.scope)
                .bind(s.created_at)
                .bind(s.last_used_at)
                .bind(s.idle_expires_at)
                .bind(s.expires_at)
                .bind(&s.ip)
                .bind(&s.user_agent)
                .bind(login.refresh_hash)
                .bind(&device.id)
                .bind(&s.access_jti)
                .fetch_one(&mut *tx)
                .await
                .map_err($crate::storage::sql_common::unique("session"))?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ($1, $2, $3)",
                )
                .bind(login.refresh_hash)
                .bind(&s.id)
                .bind(s.created_at)
                .execute(&mut *tx)
                .await
                .map_err($crate::storage::sql_common::unique("refresh token"))?;
                tx.commit().await?;
                Ok(LoginOutcome { session, device, new_device, evicted })
            }

            /// Multi-row inserts of at most 1,000 rows (within every dialect's parameter
            /// limit), all in one transaction.
            async fn session(&self, id: &str) -> StorageResult<Option<Session>> {
                Ok(sqlx::query_as("SELECT * FROM sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn user_sessions(
                &self,
                user_id: &str,
                now: Millis,
            ) -> StorageResult<Vec<(Session, Option<Device>)>> {
                let lookup =
                    $crate::storage::sql_common::SessionsLookup { user: user_id.to_owned(), now };
                self.batched.sessions.get(lookup).await
            }

            async fn revoke_user_sessions(
                &self,
                user_id: &str,
                except: Option<&str>,
                now: Millis,
                reason: &str,
            ) -> StorageResult<Vec<Session>> {
                Ok(sqlx::query_as(
                    "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
                     WHERE user_id = $3 AND revoked_at IS NULL AND expires_at > $1 \
                     AND idle_expires_at > $1 AND ($4 IS NULL OR id <> $4) RETURNING *",
                )
                .bind(now)
                .bind(reason)
                .bind(user_id)
                .bind(except)
                .fetch_all(self.writer())
                .await?)
            }

            async fn session_by_refresh(
                &self,
                hash: &[u8],
            ) -> StorageResult<Option<(Session, bool)>> {
                use sqlx::{FromRow, Row};
                let row = sqlx::query(
                    "SELECT s.*, s.current_hash = $1 AS is_current FROM refresh_tokens t \
                     JOIN sessions s ON s.id = t.session_id WHERE t.hash = $1",
                )
                .bind(hash)
                .fetch_optional(self.reader())
                .await?;
                row.map(|row| Ok((Session::from_row(&row)?, row.try_get("is_current")?)))
                    .transpose()
            }

            async fn rotate_refresh(&self, rotation: &Rotation<'_>) -> StorageResult<RotationOutcome> {
                self.rotate(rotation).await
            }

            async fn revoke_session(
                &self,
                id: &str,
                now: Millis,
                reason: &str,
            ) -> StorageResult<Option<Session>> {
                Ok(sqlx::query_as(
                    "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
                     WHERE id = $3 AND revoked_at IS NULL RETURNING *",
                )
                .bind(now)
                .bind(reason)
                .bind(id)
                .fetch_optional(self.writer())
                .await?)
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::BulkImport for $ty {
            async fn import_sessions(
                &self,
                users: &[User],
                sessions: &[ImportedSession],
            ) -> StorageResult<()> {
                use $crate::storage::sql_common::unique;
                const ROWS: usize = 1_000;
                let mut tx = self.writer().begin().await?;
                for chunk in users.chunks(ROWS) {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO users (id, username, password_hash, created_at, disabled, role) ",
                    );
                    insert.push_values(chunk, |mut row, u| {
                        row.push_bind(&u.id)
                            .push_bind(&u.username)
                            .push_bind(&u.password_hash)
                            .push_bind(u.created_at)
                            .push_bind(u.disabled)
                            .push_bind(&u.role);
                    });
                    insert.build().execute(&mut *tx).await.map_err(unique("user"))?;
                }
                for chunk in sessions.chunks(ROWS) {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO devices (id, user_id, fingerprint, name, platform, user_agent, \
                         last_ip, first_seen_at, last_seen_at, trusted) ",
                    );
                    insert.push_values(chunk, |mut row, i| {
                        let d = &i.device;
                        row.push_bind(&d.id)
                            .push_bind(&d.user_id)
                            .push_bind(&d.fingerprint)
                            .push_bind(&d.name)
                            .push_bind(&d.platform)
                            .push_bind(&d.user_agent)
                            .push_bind(&d.last_ip)
                            .push_bind(d.first_seen_at)
                            .push_bind(d.last_seen_at)
                            .push_bind(d.trusted);
                    });
                    insert.build().execute(&mut *tx).await.map_err(unique("device"))?;
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO sessions (id, user_id, client_id, scope, created_at, \
                         last_used_at, idle_expires_at, expires_at, ip, user_agent, current_hash, \
                         device_id) ",
                    );
                    insert.push_values(chunk, |mut row, i| {
                        let s = &i.session;
                        row.push_bind(&s.id)
                            .push_bind(&s.user_id)
                            .push_bind(&s.client_id)
                            .push_bind(&s.scope)
                            .push_bind(s.created_at)
                            .push_bind(s.last_used_at)
                            .push_bind(s.idle_expires_at)
                            .push_bind(s.expires_at)
                            .push_bind(&s.ip)
                            .push_bind(&s.user_agent)
                            .push_bind(&i.refresh_hash)
                            .push_bind(&i.device.id);
                    });
                    insert.build().execute(&mut *tx).await.map_err(unique("session"))?;
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO refresh_tokens (hash, session_id, issued_at) ",
                    );
                    insert.push_values(chunk, |mut row, i| {
                        row.push_bind(&i.refresh_hash)
                            .push_bind(&i.session.id)
                            .push_bind(i.session.created_at);
                    });
                    insert.build().execute(&mut *tx).await.map_err(unique("refresh token"))?;
                }
                tx.commit().await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::DeviceStore for $ty {
            async fn user_devices(&self, user_id: &str) -> StorageResult<Vec<Device>> {
                Ok(sqlx::query_as(
                    "SELECT * FROM devices WHERE user_id = $1 ORDER BY last_seen_at DESC, id",
                )
                .bind(user_id)
                .fetch_all(self.reader())
                .await?)
            }

            async fn device(&self, user_id: &str, id: &str) -> StorageResult<Option<Device>> {
                Ok(sqlx::query_as("SELECT * FROM devices WHERE id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(user_id)
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn update_device(
                &self,
                user_id: &str,
                id: &str,
                name: Option<&str>,
                trusted: Option<bool>,
            ) -> StorageResult<Option<Device>> {
                Ok(sqlx::query_as(
                    "UPDATE devices SET name = COALESCE($1, name), trusted = COALESCE($2, trusted) \
                     WHERE id = $3 AND user_id = $4 RETURNING *",
                )
                .bind(name)
                .bind(trusted)
                .bind(id)
                .bind(user_id)
                .fetch_optional(self.writer())
                .await?)
            }

            async fn delete_device(
                &self,
                user_id: &str,
                id: &str,
                now: Millis,
            ) -> StorageResult<Option<Vec<Session>>> {
                let mut tx = self.begin_for_user(user_id).await?;
                let owned: Option<String> =
                    sqlx::query_scalar("SELECT id FROM devices WHERE id = $1 AND user_id = $2")
                        .bind(id)
                        .bind(user_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if owned.is_none() {
                    return Ok(None);
                }
                let ended: Vec<Session> = sqlx::query_as(
                    "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
                     WHERE device_id = $3 AND revoked_at IS NULL RETURNING *",
                )
                .bind(now)
                .bind(revoke_reason::DEVICE_REMOVED)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                sqlx::query("UPDATE sessions SET device_id = NULL WHERE device_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM devices WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(ended))
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::Maintenance for $ty {
            async fn purge(&self, p: &PurgePolicy) -> StorageResult<PurgeReport> {
                let batch = i64::from(p.batch);
                let deleted: Vec<Session> = sqlx::query_as(
                    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                     WHERE revoked_at <= $1 OR expires_at <= $1 OR idle_expires_at <= $1 LIMIT $2) \
                     RETURNING *",
                )
                .bind(p.ended_before)
                .bind(batch)
                .fetch_all(self.writer())
                .await?;
                let delete = |sql: &'static str, before: Millis| {
                    sqlx::query(sql).bind(before).bind(batch).execute(self.writer())
                };
                let refresh_tokens = delete(
                    "DELETE FROM refresh_tokens WHERE hash IN (SELECT hash FROM refresh_tokens \
                     WHERE used_at <= $1 LIMIT $2)",
                    p.used_before,
                )
                .await?
                .rows_affected();
                let revocations = delete(
                    "DELETE FROM revoked_tokens WHERE jti IN (SELECT jti FROM revoked_tokens \
                     WHERE expires_at <= $1 LIMIT $2)",
                    p.now,
                )
                .await?
                .rows_affected();
                // Ids are UUIDv7 and start with their time: the id order is the time order.
                // The table's name is one of two constants.
                let purge_audit = sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE id < $1 LIMIT $2)",
                    table = Self::AUDIT_TABLE,
                ));
                let audit_events = sqlx::query(purge_audit)
                .bind($crate::audit_event::id_floor(p.audit_before))
                .bind(batch)
                .execute(self.audit_writer())
                .await?
                .rows_affected();
                let webhook_deliveries = delete(
                    "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
                     WHERE finished_at < $1 LIMIT $2)",
                    p.audit_before,
                )
                .await?
                .rows_affected();
                Ok(PurgeReport {
                    sessions: deleted.len() as u64,
                    refresh_tokens,
                    revocations,
                    audit_events,
                    webhook_deliveries,
                    expired: deleted.into_iter().filter(|s| s.revoked_at.is_none()).collect(),
                })
            }
        }
    };
}

pub(crate) use sql_session_stores;
