//! The SQL both relational backends share word for word. Where the dialects differ (the
//! refresh rotation, the exclusive transaction of key rotation) each backend has its own
//! method, which the shared code calls; where they differ in one clause (the row lock of a
//! claim, the table a batch of reads is unpacked into) the backend passes that clause.

use super::StorageError;
use super::batch::Batched;
use crate::clock::Millis;

/// Maps a unique-constraint violation to [`StorageError::Conflict`]: the one place it is done.
pub fn unique(what: &'static str) -> impl FnOnce(sqlx::Error) -> StorageError {
    move |e| match e.as_database_error() {
        Some(db) if db.is_unique_violation() => StorageError::Conflict(what),
        _ => StorageError::Sql(e),
    }
}

/// An access token's id and session, as one lookup of a batch.
#[derive(Debug, serde::Serialize)]
pub struct TokenLookup {
    pub jti: String,
    pub sid: Option<String>,
}

/// A user's live sessions at `now`, as one lookup of a batch.
#[derive(Debug, serde::Serialize)]
pub struct SessionsLookup {
    pub user: String,
    pub now: crate::clock::Millis,
}

/// A user's sessions, each with its device.
pub type SessionList = Vec<(super::Session, Option<super::Device>)>;

/// The reads of concurrent requests that share statements.
#[derive(Debug, Clone)]
pub struct BatchedReaders {
    pub token_states: Batched<TokenLookup, super::AccessTokenState>,
    pub sessions: Batched<SessionsLookup, SessionList>,
}

/// The most lookups one statement answers, and how many such statements run at once. Few
/// slots make for fewer, larger batches, which cost the database less per lookup at
/// saturation with the same latency below it (docs/benchmarks.md has the comparison).
pub const BATCH: usize = 128;
pub const SLOTS: usize = 2;

/// A batch of lookups as the JSON array the statement reads its rows from: each with its
/// place `n` in the batch, since a join may return rows in any order.
pub fn lookups_json<T: serde::Serialize>(lookups: &[T]) -> Result<String, StorageError> {
    #[derive(serde::Serialize)]
    struct Numbered<'a, T> {
        n: usize,
        #[serde(flatten)]
        lookup: &'a T,
    }
    let rows: Vec<_> =
        lookups.iter().enumerate().map(|(n, lookup)| Numbered { n, lookup }).collect();
    serde_json::to_string(&rows).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// The place in its batch of the lookup a row answers.
pub fn place<T>(places: &mut [T], n: i64) -> Result<&mut T, StorageError> {
    usize::try_from(n)
        .ok()
        .and_then(|n| places.get_mut(n))
        .ok_or_else(|| StorageError::Corrupt(format!("lookup {n} is not in the batch")))
}

/// Admits a login attempt (see `LockoutStore::begin_login_attempt`) in one statement:
/// `$1` key, `$2` now, `$3` start of the current window, `$4` threshold. A window that has
/// passed starts again; `outcome` tells the caller whether this call admitted the attempt
/// (1) or refused it (0), since RETURNING sees only the new row.
pub const BEGIN_LOGIN_ATTEMPT: &str = "INSERT INTO login_attempts \
     (attempt_key, failures, pending, window_start, locked_until, outcome) \
     VALUES ($1, 0, 1, $2, NULL, 1) \
     ON CONFLICT (attempt_key) DO UPDATE SET \
     outcome = CASE WHEN login_attempts.locked_until > $2 THEN 0 \
       WHEN login_attempts.window_start <= $3 THEN 1 \
       WHEN login_attempts.failures + login_attempts.pending >= $4 THEN 0 ELSE 1 END, \
     pending = CASE WHEN login_attempts.locked_until > $2 THEN login_attempts.pending \
       WHEN login_attempts.window_start <= $3 THEN 1 \
       WHEN login_attempts.failures + login_attempts.pending >= $4 THEN login_attempts.pending \
       ELSE login_attempts.pending + 1 END, \
     failures = CASE WHEN login_attempts.locked_until > $2 THEN login_attempts.failures \
       WHEN login_attempts.window_start <= $3 THEN 0 ELSE login_attempts.failures END, \
     window_start = CASE WHEN login_attempts.locked_until > $2 THEN login_attempts.window_start \
       WHEN login_attempts.window_start <= $3 THEN $2 ELSE login_attempts.window_start END \
     RETURNING outcome, locked_until";

/// Ends an admitted attempt: `$1` key, `$2` succeeded, `$3` now, `$4` threshold, `$5` the
/// end of a lock this failure would start. `outcome` 2 says this call locked the key. A lock
/// starts a new window with no failures; a success forgets failures but not a lock.
pub const FINISH_LOGIN_ATTEMPT: &str = "UPDATE login_attempts SET \
     pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END, \
     outcome = CASE WHEN NOT $2 AND failures + 1 >= $4 \
       AND (locked_until IS NULL OR locked_until <= $3) THEN 2 ELSE 0 END, \
     locked_until = CASE WHEN NOT $2 AND failures + 1 >= $4 \
       AND (locked_until IS NULL OR locked_until <= $3) THEN $5 ELSE locked_until END, \
     window_start = CASE WHEN NOT $2 AND failures + 1 >= $4 \
       AND (locked_until IS NULL OR locked_until <= $3) THEN $3 ELSE window_start END, \
     failures = CASE WHEN $2 THEN 0 WHEN failures + 1 >= $4 \
       AND (locked_until IS NULL OR locked_until <= $3) THEN 0 ELSE failures + 1 END \
     WHERE attempt_key = $1 RETURNING outcome, locked_until";

/// The admission a [`BEGIN_LOGIN_ATTEMPT`] row means.
pub fn admission(outcome: i32, locked_until: Option<Millis>, now: Millis) -> super::Admission {
    if outcome == 1 {
        super::Admission::Verify
    } else {
        super::Admission::Refused { locked_until: locked_until.filter(|u| *u > now) }
    }
}

/// The SQL event index's predicate (the index leaves out the per-request events, see
/// [`crate::audit_event::events::UNINDEXED`]), which a query for any other event repeats so
/// that the planner may use the index.
pub fn indexed_event_predicate() -> String {
    let names: Vec<String> =
        crate::audit_event::events::UNINDEXED.iter().map(|e| format!("'{e}'")).collect();
    format!("event NOT IN ({})", names.join(", "))
}

/// Implements every store of [`super::Storage`] on a type with `reader()`, `writer()`,
/// `audit_writer()` (which writes and purges the audit log) and `migrator()` pools, the
/// audit log's table `AUDIT_TABLE` (which the purge deletes from), a `rotate(&Rotation)`
/// method, `begin_exclusive()` and `begin_for_user(user_id)` transactions, the migration
/// scripts `$scripts` and a `batched` field made by the generated `batched_readers($pool)`.
/// `$token_rows` and `$session_rows` are the dialect's tables of the elements of the JSON
/// array `$1` (as `q`, with a column `value`), each joined to its sessions (as `s`) by index:
/// the session whose id is its `sid`, and the sessions of its `user`.
macro_rules! sql_storage {
    (
        $ty:ty,
        $pool:ty,
        $name:literal,
        $scripts:expr,
        $skip_locked:literal,
        $token_rows:literal,
        $session_rows:literal
    ) => {
        impl $ty {
            /// Starts the readers that batch the lookups of concurrent requests.
            fn batched_readers(pool: $pool) -> $crate::storage::sql_common::BatchedReaders {
                use $crate::storage::batch::Batched;
                use $crate::storage::sql_common::{BATCH, SLOTS};
                let tokens = pool.clone();
                $crate::storage::sql_common::BatchedReaders {
                    token_states: Batched::spawn(BATCH, SLOTS, move |lookups| {
                        Self::read_token_states(tokens.clone(), lookups)
                    }),
                    sessions: Batched::spawn(BATCH, SLOTS, move |lookups| {
                        Self::read_user_sessions(pool.clone(), lookups)
                    }),
                }
            }

            /// The states of a batch of access tokens in one statement, in the batch's order.
            async fn read_token_states(
                pool: $pool,
                lookups: Vec<$crate::storage::sql_common::TokenLookup>,
            ) -> StorageResult<Vec<AccessTokenState>> {
                use sqlx::Row;
                // A scalar subquery, never a hashed scan of the whole revocation list.
                let rows = sqlx::query(concat!(
                    "SELECT CAST(q.value ->> 'n' AS BIGINT) AS n, (SELECT 1 FROM revoked_tokens \
                     r WHERE r.jti = (q.value ->> 'jti')) IS NOT NULL AS revoked, \
                     s.revoked_at, s.expires_at, s.idle_expires_at FROM ",
                    $token_rows
                ))
                .bind($crate::storage::sql_common::lookups_json(&lookups)?)
                .fetch_all(&pool)
                .await?;
                let mut states = vec![None; lookups.len()];
                for row in rows {
                    let expires_at: Option<Millis> = row.try_get("expires_at")?;
                    let session = match expires_at {
                        Some(expires_at) => Some($crate::storage::SessionLiveness {
                            revoked: row.try_get::<Option<Millis>, _>("revoked_at")?.is_some(),
                            expires_at,
                            idle_expires_at: row.try_get("idle_expires_at")?,
                        }),
                        None => None,
                    };
                    let place = $crate::storage::sql_common::place(&mut states, row.try_get("n")?)?;
                    *place = Some(AccessTokenState { revoked: row.try_get("revoked")?, session });
                }
                states
                    .into_iter()
                    .map(|s| s.ok_or_else(|| StorageError::Corrupt("a token lookup got no row".into())))
                    .collect()
            }

            /// The live sessions of a batch of users in one statement, newest use first, each
            /// with its device. The device's columns are renamed so the session's keep their
            /// own names.
            async fn read_user_sessions(
                pool: $pool,
                lookups: Vec<$crate::storage::sql_common::SessionsLookup>,
            ) -> StorageResult<Vec<$crate::storage::sql_common::SessionList>> {
                use sqlx::{FromRow, Row};
                let rows = sqlx::query(concat!(
                    "SELECT CAST(q.value ->> 'n' AS BIGINT) AS n, s.*, d.id AS d_id, \
                     d.fingerprint AS d_fingerprint, d.name AS d_name, d.platform AS d_platform, \
                     d.user_agent AS d_user_agent, d.last_ip AS d_last_ip, \
                     d.first_seen_at AS d_first_seen_at, d.last_seen_at AS d_last_seen_at, \
                     d.trusted AS d_trusted FROM ",
                    $session_rows,
                    " LEFT JOIN devices d ON d.id = s.device_id AND d.user_id = s.user_id \
                     WHERE s.revoked_at IS NULL AND s.expires_at > CAST(q.value ->> 'now' AS BIGINT) \
                     AND s.idle_expires_at > CAST(q.value ->> 'now' AS BIGINT) \
                     ORDER BY s.last_used_at DESC, s.id DESC"
                ))
                .bind($crate::storage::sql_common::lookups_json(&lookups)?)
                .fetch_all(&pool)
                .await?;
                let mut lists: Vec<$crate::storage::sql_common::SessionList> =
                    lookups.iter().map(|_| Vec::new()).collect();
                for row in &rows {
                    let session = Session::from_row(row)?;
                    let device = match row.try_get::<Option<String>, _>("d_id")? {
                        Some(id) => Some(Device {
                            id,
                            user_id: session.user_id.clone(),
                            fingerprint: row.try_get("d_fingerprint")?,
                            name: row.try_get("d_name")?,
                            platform: row.try_get("d_platform")?,
                            user_agent: row.try_get("d_user_agent")?,
                            last_ip: row.try_get("d_last_ip")?,
                            first_seen_at: row.try_get("d_first_seen_at")?,
                            last_seen_at: row.try_get("d_last_seen_at")?,
                            trusted: row.try_get("d_trusted")?,
                        }),
                        None => None,
                    };
                    $crate::storage::sql_common::place(&mut lists, row.try_get("n")?)?
                        .push((session, device));
                }
                Ok(lists)
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::UserStore for $ty {
            async fn create_user(&self, user: &User) -> StorageResult<()> {
                sqlx::query(
                    "INSERT INTO users (id, username, password_hash, created_at, disabled, role) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&user.id)
                .bind(&user.username)
                .bind(&user.password_hash)
                .bind(user.created_at)
                .bind(user.disabled)
                .bind(&user.role)
                .execute(self.writer())
                .await
                .map_err($crate::storage::sql_common::unique("user"))?;
                Ok(())
            }

            async fn user_by_username(&self, username: &str) -> StorageResult<Option<User>> {
                Ok(sqlx::query_as("SELECT * FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn user_by_id(&self, id: &str) -> StorageResult<Option<User>> {
                Ok(sqlx::query_as("SELECT * FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn set_user_role(&self, id: &str, role: &str) -> StorageResult<bool> {
                let done = sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
                    .bind(role)
                    .bind(id)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() > 0)
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::ClientStore for $ty {
            async fn create_client(&self, client: &Client) -> StorageResult<()> {
                sqlx::query(
                    "INSERT INTO clients (client_id, name, secret_hash, grant_types, scopes, \
                     created_at, disabled, created_by, resource_server) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&client.client_id)
                .bind(&client.name)
                .bind(&client.secret_hash)
                .bind(&client.grant_types)
                .bind(&client.scopes)
                .bind(client.created_at)
                .bind(client.disabled)
                .bind(&client.created_by)
                .bind(client.resource_server)
                .execute(self.writer())
                .await
                .map_err($crate::storage::sql_common::unique("client"))?;
                Ok(())
            }

            async fn client(&self, client_id: &str) -> StorageResult<Option<Client>> {
                Ok(sqlx::query_as("SELECT * FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn update_client(
                &self,
                client_id: &str,
                secret_hash: Option<&str>,
                disabled: bool,
            ) -> StorageResult<bool> {
                let done = sqlx::query(
                    "UPDATE clients SET secret_hash = $1, disabled = $2 WHERE client_id = $3",
                )
                .bind(secret_hash)
                .bind(disabled)
                .bind(client_id)
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_client(&self, client_id: &str) -> StorageResult<bool> {
                let done = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() > 0)
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::KeyStore for $ty {
            async fn signing_keys(&self, now: Millis) -> StorageResult<Vec<StoredKey>> {
                Ok(sqlx::query_as(
                    "SELECT * FROM signing_keys WHERE expires_at IS NULL OR expires_at > $1 \
                     ORDER BY created_at DESC, kid DESC",
                )
                .bind(now)
                .fetch_all(self.reader())
                .await?)
            }

            async fn rotate_signing_key(
                &self,
                expected_active: Option<&str>,
                key: &StoredKey,
                retire_until: Millis,
            ) -> StorageResult<bool> {
                let mut tx = self.begin_exclusive().await?;
                let active: Option<String> = sqlx::query_scalar(
                    "SELECT kid FROM signing_keys WHERE retired_at IS NULL \
                     ORDER BY created_at DESC, kid DESC LIMIT 1",
                )
                .fetch_optional(&mut *tx)
                .await?;
                if active.as_deref() != expected_active {
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE signing_keys SET retired_at = $1, expires_at = $2 \
                     WHERE retired_at IS NULL",
                )
                .bind(key.created_at)
                .bind(retire_until)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, private_key, encrypted, created_at, \
                     retired_at, expires_at) VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
                )
                .bind(&key.kid)
                .bind(&key.alg)
                .bind(&key.private_key)
                .bind(key.encrypted)
                .bind(key.created_at)
                .execute(&mut *tx)
                .await
                .map_err($crate::storage::sql_common::unique("signing key"))?;
                tx.commit().await?;
                Ok(true)
            }
        }

        $crate::storage::sql_sessions::sql_session_stores!($ty);
        $crate::storage::sql_events::sql_event_stores!($ty, $skip_locked);

        #[async_trait::async_trait]
        impl $crate::storage::LockoutStore for $ty {
            async fn begin_login_attempt(
                &self,
                key: &str,
                p: &$crate::storage::LockoutPolicy,
            ) -> StorageResult<$crate::storage::Admission> {
                let (outcome, locked_until): (i32, Option<Millis>) = sqlx::query_as(
                    $crate::storage::sql_common::BEGIN_LOGIN_ATTEMPT,
                )
                .bind(key)
                .bind(p.now)
                .bind(p.now - p.window_ms)
                .bind(p.threshold)
                .fetch_one(self.writer())
                .await?;
                Ok($crate::storage::sql_common::admission(outcome, locked_until, p.now))
            }

            async fn finish_login_attempt(
                &self,
                key: &str,
                succeeded: bool,
                p: &$crate::storage::LockoutPolicy,
            ) -> StorageResult<Option<Millis>> {
                let row: Option<(i32, Option<Millis>)> = sqlx::query_as(
                    $crate::storage::sql_common::FINISH_LOGIN_ATTEMPT,
                )
                .bind(key)
                .bind(succeeded)
                .bind(p.now)
                .bind(p.threshold)
                .bind(p.now + p.lock_ms)
                .fetch_optional(self.writer())
                .await?;
                Ok(row.and_then(|(outcome, until)| if outcome == 2 { until } else { None }))
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::RevocationStore for $ty {
            async fn revoke_access_token(
                &self,
                jti: &str,
                expires_at: Millis,
            ) -> StorageResult<()> {
                sqlx::query(
                    "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(jti)
                .bind(expires_at)
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn access_token_state(
                &self,
                jti: &str,
                session_id: Option<&str>,
            ) -> StorageResult<AccessTokenState> {
                let lookup = $crate::storage::sql_common::TokenLookup {
                    jti: jti.to_owned(),
                    sid: session_id.map(str::to_owned),
                };
                self.batched.token_states.get(lookup).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::Migrations for $ty {
            async fn migrate_up(&self) -> StorageResult<()> {
                $crate::storage::sql_migrate::up($scripts, self.migrator()).await
            }

            async fn migrate_down(&self, steps: usize) -> StorageResult<()> {
                $crate::storage::sql_migrate::down($scripts, self.migrator(), steps).await
            }

            async fn migration_status(&self) -> StorageResult<Vec<MigrationStatus>> {
                $crate::storage::sql_migrate::status($scripts, self.migrator()).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::Storage for $ty {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn ping(&self) -> StorageResult<()> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            fn pool(&self) -> Option<$crate::storage::PoolState> {
                let mut pools = vec![self.reader()];
                for pool in [self.writer(), self.audit_writer()] {
                    if !pools.iter().any(|p| std::ptr::eq(*p, pool)) {
                        pools.push(pool);
                    }
                }
                Some($crate::storage::PoolState {
                    size: pools.iter().map(|p| p.size()).sum(),
                    idle: pools.iter().map(|p| p.num_idle() as u32).sum(),
                })
            }

            async fn count_active_sessions(&self, now: Millis) -> StorageResult<u64> {
                let count: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL \
                     AND idle_expires_at > $1 AND expires_at > $1",
                )
                .bind(now)
                .fetch_one(self.reader())
                .await?;
                Ok(count as u64)
            }
        }
    };
}

pub(crate) use sql_storage;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_queries_repeat_the_index_predicate_of_every_dialect() {
        let predicate = indexed_event_predicate();
        for script in [
            include_str!("../../migrations/sqlite/0007_audit_event_index.up.sql"),
            include_str!("../../migrations/postgres/0007_audit_event_index.up.sql"),
        ] {
            assert!(script.contains(&format!("WHERE {predicate};")), "{script}");
        }
    }
}
