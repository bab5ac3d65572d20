//! [`SessionStore`] in SQL. Listing a user's sessions is a hot path: under load the lookups
//! of concurrent requests share one statement (see `storage::batch`).

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Pool, SqlSafeStr, Transaction};

use super::{Dialect, SqlStorage, Statement, batched_reader, place, unique};
use crate::clock::Millis;
use crate::ids::{SessionId, UserId};
use crate::storage::batch::Batched;
use crate::storage::{
    DEVICE_SEEN_EVERY_MS, Device, Family, Login, LoginOutcome, Rotation, RotationDecision,
    RotationOutcome, Session, SessionStore, StorageResult, revoke_reason,
};

/// A session row with its refresh-token family.
#[derive(sqlx::FromRow)]
pub struct FamilyRow {
    #[sqlx(flatten)]
    session: Session,
    #[sqlx(flatten)]
    family: Family,
}

/// The refresh rule on the session row, read (and locked where the dialect locks rows) in
/// `tx`: every case the dialect's one-statement rotation of the live token does not take (a
/// grace retry, reuse, an ended or unknown session, another client's token).
pub(crate) async fn rotate_by_rule<D: Dialect>(
    tx: &mut Transaction<'static, D::Db>,
    r: &Rotation<'_>,
) -> StorageResult<RotationOutcome> {
    let read = AssertSqlSafe(format!("SELECT * FROM sessions WHERE id = $1{}", D::ROW_LOCK));
    let found: Option<FamilyRow> =
        sqlx::query(read.into_sql_str()).arg(r.session_id).optional(&mut *tx).await?;
    let Some(FamilyRow { session, family }) = found else {
        return Ok(RotationOutcome::Invalid);
    };
    let decision = r.decide(&session, &family);
    let updated: Session = match decision {
        RotationDecision::Invalid => return Ok(RotationOutcome::Invalid),
        RotationDecision::Ended => return Ok(RotationOutcome::Ended(session)),
        RotationDecision::Rotate | RotationDecision::Grace => {
            // A grace retry is allowed once per rotation: it forgets the previous token, so
            // presenting that again is reuse; and the access token issued with the pair it
            // supersedes is revoked.
            let grace = decision == RotationDecision::Grace;
            if let (true, Some(jti)) = (grace, &session.access_jti) {
                sqlx::query(
                    "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
                     ON CONFLICT (jti) DO NOTHING",
                )
                .arg(jti)
                .arg(r.superseded_until)
                .run(&mut *tx)
                .await?;
            }
            let sql = if grace {
                "UPDATE sessions SET generation = $1, current_hash = $2, previous_hash = NULL, \
                 last_used_at = $3, idle_expires_at = $4, access_jti = $5 WHERE id = $6 \
                 RETURNING *"
            } else {
                "UPDATE sessions SET generation = $1, previous_hash = current_hash, \
                 current_hash = $2, rotated_at = $3, last_used_at = $3, idle_expires_at = $4, \
                 access_jti = $5 WHERE id = $6 RETURNING *"
            };
            let updated = sqlx::query(sql)
                .arg(r.reached_generation(&family))
                .arg(r.new_hash)
                .arg(r.now)
                .arg(r.idle_expiry(&session))
                .arg(r.new_jti)
                .arg(&session.id)
                .one(&mut *tx)
                .await?;
            seen_and_spent::<D>(tx, r, session.device_id.as_deref()).await?;
            updated
        }
        RotationDecision::Reuse => {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 \
                 RETURNING *",
            )
            .arg(r.now)
            .arg(revoke_reason::REFRESH_TOKEN_REUSE)
            .arg(&session.id)
            .one(&mut *tx)
            .await?
        }
    };
    Ok(match decision {
        RotationDecision::Rotate => RotationOutcome::Rotated(updated),
        RotationDecision::Grace => RotationOutcome::Grace(updated),
        _ => RotationOutcome::Reused(updated),
    })
}

/// After a rotation: the device is marked seen (at most once a minute), and a presented
/// token of the format before is marked used in `refresh_tokens` (so its reuse is detected
/// until it is purged).
pub(crate) async fn seen_and_spent<D: Dialect>(
    tx: &mut Transaction<'static, D::Db>,
    r: &Rotation<'_>,
    device_id: Option<&str>,
) -> StorageResult<()> {
    if let Some(device_id) = device_id {
        sqlx::query(
            "UPDATE devices SET last_seen_at = $1, last_ip = COALESCE($2, last_ip) \
             WHERE id = $3 AND last_seen_at <= $4",
        )
        .arg(r.now)
        .arg(r.ip)
        .arg(device_id)
        .arg(r.now - DEVICE_SEEN_EVERY_MS)
        .run(&mut *tx)
        .await?;
    }
    if r.presented_generation.is_none() {
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL")
            .arg(r.now)
            .arg(r.presented_hash)
            .run(&mut *tx)
            .await?;
    }
    Ok(())
}

/// A user's live sessions at `now`, as one lookup of a batch.
#[derive(Debug, serde::Serialize)]
pub(super) struct SessionsLookup {
    user: String,
    now: Millis,
}

/// A user's sessions, each with its device.
pub(super) type SessionList = Vec<(Session, Option<Device>)>;

/// A row of a batch of session lists: a session and its device.
#[derive(sqlx::FromRow)]
pub struct SessionRow {
    n: i64,
    #[sqlx(flatten)]
    session: Session,
    #[sqlx(flatten)]
    device: DeviceColumns,
}

/// A session's device, its columns renamed so that the session's keep their own names; all
/// NULL for a session without a device.
#[derive(sqlx::FromRow)]
pub struct DeviceColumns {
    d_id: Option<String>,
    d_fingerprint: Option<String>,
    d_name: Option<String>,
    d_platform: Option<String>,
    d_user_agent: Option<String>,
    d_last_ip: Option<String>,
    d_first_seen_at: Option<Millis>,
    d_last_seen_at: Option<Millis>,
    d_trusted: Option<bool>,
}

impl DeviceColumns {
    fn device(self, user_id: &str) -> Option<Device> {
        Some(Device {
            id: self.d_id?,
            user_id: user_id.to_owned(),
            fingerprint: self.d_fingerprint?,
            name: self.d_name?,
            platform: self.d_platform,
            user_agent: self.d_user_agent,
            last_ip: self.d_last_ip,
            first_seen_at: self.d_first_seen_at?,
            last_seen_at: self.d_last_seen_at?,
            trusted: self.d_trusted?,
        })
    }
}

/// Starts the reader of batches of session lists: each user's live sessions, newest use
/// first, each with its device.
pub(super) fn batched<D: Dialect>(pool: Pool<D::Db>) -> Batched<SessionsLookup, SessionList> {
    let sql = format!(
        "SELECT CAST(q.value ->> 'n' AS BIGINT) AS n, s.*, d.id AS d_id, \
         d.fingerprint AS d_fingerprint, d.name AS d_name, d.platform AS d_platform, \
         d.user_agent AS d_user_agent, d.last_ip AS d_last_ip, \
         d.first_seen_at AS d_first_seen_at, d.last_seen_at AS d_last_seen_at, \
         d.trusted AS d_trusted FROM {} \
         LEFT JOIN devices d ON d.id = s.device_id AND d.user_id = s.user_id \
         WHERE s.revoked_at IS NULL AND s.expires_at > CAST(q.value ->> 'now' AS BIGINT) \
         AND s.idle_expires_at > CAST(q.value ->> 'now' AS BIGINT) \
         ORDER BY s.last_used_at DESC, s.id DESC",
        D::SESSION_ROWS
    );
    batched_reader::<D, _, _, _>(pool, sql, session_lists)
}

/// The sessions of each user of a batch of `lookups`, from the rows of its statement.
fn session_lists(lookups: usize, rows: Vec<SessionRow>) -> StorageResult<Vec<SessionList>> {
    let mut lists: Vec<SessionList> = (0..lookups).map(|_| Vec::new()).collect();
    for row in rows {
        let device = row.device.device(&row.session.user_id);
        place(&mut lists, row.n)?.push((row.session, device));
    }
    Ok(lists)
}

/// A session with whether the refresh token it was found by is its family's live one.
#[derive(sqlx::FromRow)]
pub struct SessionByToken {
    #[sqlx(flatten)]
    session: Session,
    is_current: bool,
}

#[async_trait]
impl<D: Dialect> SessionStore for SqlStorage<D> {
    async fn create_session(&self, login: &Login<'_>) -> StorageResult<LoginOutcome> {
        let (s, d) = (login.session, login.device);
        let mut tx = self.dialect.begin_for_user(&s.user_id).await?;
        let existing: Option<Device> =
            sqlx::query("SELECT * FROM devices WHERE user_id = $1 AND fingerprint = $2")
                .arg(&d.user_id)
                .arg(&d.fingerprint)
                .optional(&mut tx)
                .await?;
        let new_device = existing.is_none();
        let device: Device = match existing {
            Some(old) => {
                sqlx::query(
                    "UPDATE devices SET last_seen_at = $1, last_ip = COALESCE($2, last_ip), \
                     user_agent = COALESCE($3, user_agent), platform = COALESCE($4, platform), \
                     name = CASE WHEN $5 THEN $6 ELSE name END WHERE id = $7 RETURNING *",
                )
                .arg(d.last_seen_at)
                .arg(&d.last_ip)
                .arg(&d.user_agent)
                .arg(&d.platform)
                .arg(login.device_named_by_client)
                .arg(&d.name)
                .arg(&old.id)
                .one(&mut tx)
                .await?
            }
            None => {
                sqlx::query(
                    "INSERT INTO devices (id, user_id, fingerprint, name, platform, \
                     user_agent, last_ip, first_seen_at, last_seen_at, trusted) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
                )
                .arg(&d.id)
                .arg(&d.user_id)
                .arg(&d.fingerprint)
                .arg(&d.name)
                .arg(&d.platform)
                .arg(&d.user_agent)
                .arg(&d.last_ip)
                .arg(d.first_seen_at)
                .arg(d.last_seen_at)
                .arg(d.trusted)
                .one(&mut tx)
                .await?
            }
        };
        let live: Vec<Session> = sqlx::query(
            "SELECT * FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
             AND expires_at > $2 AND idle_expires_at > $2 ORDER BY last_used_at, id",
        )
        .arg(&s.user_id)
        .arg(s.created_at)
        .all(&mut tx)
        .await?;
        let excess = (live.len() + 1).saturating_sub(login.max_sessions.max(1));
        let mut evicted = Vec::with_capacity(excess);
        for old in live.into_iter().take(excess) {
            let session: Session = sqlx::query(
                "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 \
                 RETURNING *",
            )
            .arg(s.created_at)
            .arg(revoke_reason::EVICTED)
            .arg(&old.id)
            .one(&mut tx)
            .await?;
            evicted.push(session);
        }
        let session: Session = sqlx::query(
            "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, \
             idle_expires_at, expires_at, ip, user_agent, current_hash, device_id, access_jti, \
             resource) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             RETURNING *",
        )
        .arg(&s.id)
        .arg(&s.user_id)
        .arg(&s.client_id)
        .arg(&s.scope)
        .arg(s.created_at)
        .arg(s.last_used_at)
        .arg(s.idle_expires_at)
        .arg(s.expires_at)
        .arg(&s.ip)
        .arg(&s.user_agent)
        .arg(login.refresh_hash)
        .arg(&device.id)
        .arg(&s.access_jti)
        .arg(&s.resource)
        .one(&mut tx)
        .await
        .map_err(unique("session"))?;
        if login.index_token {
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ($1, $2, $3)",
            )
            .arg(login.refresh_hash)
            .arg(&s.id)
            .arg(s.created_at)
            .run(&mut tx)
            .await
            .map_err(unique("refresh token"))?;
        }
        tx.commit().await?;
        Ok(LoginOutcome { session, device, new_device, evicted })
    }

    async fn session(&self, id: &str) -> StorageResult<Option<Session>> {
        sqlx::query("SELECT * FROM sessions WHERE id = $1").arg(id).optional(self.reader()).await
    }

    async fn user_sessions(&self, user_id: &str, now: Millis) -> StorageResult<SessionList> {
        self.batched.sessions.get(SessionsLookup { user: user_id.to_owned(), now }).await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: UserId<'_>,
        except: Option<SessionId<'_>>,
        now: Millis,
        reason: &str,
    ) -> StorageResult<Vec<Session>> {
        sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
             WHERE user_id = $3 AND revoked_at IS NULL AND expires_at > $1 \
             AND idle_expires_at > $1 AND ($4 IS NULL OR id <> $4) RETURNING *",
        )
        .arg(now)
        .arg(reason)
        .arg(user_id.as_str())
        .arg(except.map(SessionId::as_str))
        .all(self.writer())
        .await
    }

    async fn session_by_refresh(
        &self,
        hash: &[u8],
        session_id: Option<&str>,
    ) -> StorageResult<Option<(Session, bool)>> {
        let found: Option<SessionByToken> = match session_id {
            Some(id) => {
                sqlx::query(
                    "SELECT s.*, s.current_hash = $1 AS is_current FROM sessions s \
                     WHERE s.id = $2",
                )
                .arg(hash)
                .arg(id)
                .optional(self.reader())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT s.*, s.current_hash = $1 AS is_current FROM refresh_tokens t \
                     JOIN sessions s ON s.id = t.session_id WHERE t.hash = $1",
                )
                .arg(hash)
                .optional(self.reader())
                .await?
            }
        };
        Ok(found.map(|f| (f.session, f.is_current)))
    }

    async fn rotate_refresh(&self, rotation: &Rotation<'_>) -> StorageResult<RotationOutcome> {
        self.dialect.rotate(rotation).await
    }

    async fn revoke_session(
        &self,
        id: &str,
        now: Millis,
        reason: &str,
    ) -> StorageResult<Option<Session>> {
        sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
             WHERE id = $3 AND revoked_at IS NULL RETURNING *",
        )
        .arg(now)
        .arg(reason)
        .arg(id)
        .optional(self.writer())
        .await
    }
}
