//! Refresh-token rotations, group-committed: one task takes every rotation waiting at the
//! time, runs them one after another in a single transaction and answers each after the
//! commit. A durable commit (an fsync) is the floor of a rotation, so under load one fsync
//! serves many rotations, while a lone rotation waits for nothing but its own commit.

use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Millis;
use crate::storage::{
    Rotation, RotationDecision, RotationOutcome, Session, StorageError, StorageResult,
    revoke_reason,
};

/// The most writes one group commit takes.
const GROUP: usize = 64;

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

/// The queue of the task that commits rotations in groups.
#[derive(Debug, Clone)]
pub(super) struct GroupCommits {
    queue: mpsc::Sender<GroupWrite>,
}

impl GroupCommits {
    /// Starts the task that commits on `writer`; it ends when the last handle is dropped.
    pub(super) fn start(writer: SqlitePool) -> Self {
        let (queue, waiting) = mpsc::channel(4 * GROUP);
        tokio::spawn(commit_groups(writer, waiting));
        Self { queue }
    }

    /// Tells whether every handle is gone (the storage is closed), without keeping one.
    pub(super) fn closed(&self) -> impl Fn() -> bool + Send + 'static {
        let queue = self.queue.downgrade();
        move || queue.upgrade().is_none()
    }

    /// Queues the rotation for the next group commit and waits for its outcome.
    pub(super) async fn rotate(&self, r: &Rotation<'_>) -> StorageResult<RotationOutcome> {
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
        self.queue.send((queued, reply)).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
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
