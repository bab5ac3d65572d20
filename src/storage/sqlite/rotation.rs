//! Refresh-token rotations, group-committed: one task takes every rotation waiting at the
//! time, runs them one after another in a single transaction and answers each after the
//! commit. A durable commit (an fsync) is the floor of a rotation, so under load one fsync
//! serves many rotations, while a lone rotation waits for nothing but its own commit.

use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::SqliteBackend;
use crate::clock::Millis;
use crate::storage::sql::sessions::{rotate_by_rule, seen_and_spent};
use crate::storage::{Rotation, RotationOutcome, Session, StorageError, StorageResult};

/// The most writes one group commit takes.
const GROUP: usize = 64;

/// A rotation waiting for the next group commit, with where its outcome goes once the group
/// is committed.
type GroupWrite = (QueuedRotation, oneshot::Sender<StorageResult<RotationOutcome>>);

/// A rotation's own copy of the request.
#[derive(Debug)]
struct QueuedRotation {
    session_id: String,
    presented_generation: Option<i64>,
    presented_hash: Vec<u8>,
    new_hash: Vec<u8>,
    new_generation: i64,
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
            session_id: &self.session_id,
            presented_generation: self.presented_generation,
            presented_hash: &self.presented_hash,
            new_hash: &self.new_hash,
            new_generation: self.new_generation,
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
            session_id: r.session_id.to_owned(),
            presented_generation: r.presented_generation,
            presented_hash: r.presented_hash.to_vec(),
            new_hash: r.new_hash.to_vec(),
            new_generation: r.new_generation,
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

/// One rotation inside the group's transaction: the live token of an active session of the
/// client is one update of the session row (and, at most once a minute, of its device);
/// anything else goes by the rule, which writes nothing for outcomes that change nothing.
async fn rotate_in(
    tx: &mut Transaction<'static, Sqlite>,
    r: &Rotation<'_>,
) -> StorageResult<RotationOutcome> {
    let rotated: Option<Session> = sqlx::query_as(
        "UPDATE sessions SET generation = $1, previous_hash = current_hash, current_hash = $2, \
         rotated_at = $3, last_used_at = $3, idle_expires_at = MIN($3 + $4, expires_at), \
         access_jti = $5 WHERE id = $6 AND current_hash = $7 AND client_id = $8 \
         AND revoked_at IS NULL AND expires_at > $3 AND idle_expires_at > $3 RETURNING *",
    )
    .bind(r.new_generation)
    .bind(r.new_hash)
    .bind(r.now)
    .bind(r.idle_timeout_ms)
    .bind(r.new_jti)
    .bind(r.session_id)
    .bind(r.presented_hash)
    .bind(r.client_id)
    .fetch_optional(&mut **tx)
    .await?;
    match rotated {
        Some(session) => {
            seen_and_spent::<SqliteBackend>(tx, r, session.device_id.as_deref()).await?;
            Ok(RotationOutcome::Rotated(session))
        }
        None => rotate_by_rule::<SqliteBackend>(tx, r).await,
    }
}
