//! What end users and admins do with sessions and devices, and the purge job. Every call
//! takes the owner's user id, so a user can never see or touch another user's records.

use std::sync::Arc;

use serde::Serialize;

use super::audit::{Audit, entry, events};
use super::tokens::session_revoked;
use crate::clock::{Clock, Millis, rfc3339};
use crate::ids::{DeviceId, SessionId, UserId};
use crate::storage::{
    Device, PurgePolicy, PurgeReport, Session, Storage, StorageResult, revoke_reason,
};

/// A session as its owner sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: String,
    pub client_id: String,
    pub scope: String,
    pub active: bool,
    /// Whether the request was made with this session's access token.
    pub current: bool,
    pub created_at: String,
    pub last_used_at: String,
    pub idle_expires_at: String,
    pub expires_at: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
    pub device: Option<DeviceView>,
}

/// A device as its owner sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub platform: Option<String>,
    pub user_agent: Option<String>,
    pub last_ip: Option<String>,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub trusted: bool,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        Self {
            id: d.id.clone(),
            name: d.name.clone(),
            platform: d.platform.clone(),
            user_agent: d.user_agent.clone(),
            last_ip: d.last_ip.clone(),
            first_seen_at: rfc3339(d.first_seen_at),
            last_seen_at: rfc3339(d.last_seen_at),
            trusted: d.trusted,
        }
    }
}

/// How the purge job runs.
#[derive(Debug, Clone, Copy)]
pub struct PurgeSettings {
    /// Ended sessions are kept this long before they are deleted.
    pub ended_retention_ms: Millis,
    /// Used refresh tokens are remembered this long for reuse detection.
    pub reuse_window_ms: Millis,
    /// Audit records and finished webhook deliveries are kept this long.
    pub audit_retention_ms: Millis,
    /// Registered clients unused this long are deleted (0: never).
    pub unused_client_ms: Millis,
    pub batch: u32,
}

/// Session and device operations over storage.
pub struct SessionService {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    purge: PurgeSettings,
    audit: Arc<Audit>,
}

impl SessionService {
    pub fn new(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        purge: PurgeSettings,
        audit: Arc<Audit>,
    ) -> Self {
        Self { storage, clock, purge, audit }
    }

    fn view(
        &self,
        s: &Session,
        current: Option<SessionId<'_>>,
        device: Option<&Device>,
    ) -> SessionView {
        SessionView {
            id: s.id.clone(),
            client_id: s.client_id.clone(),
            scope: s.scope.clone(),
            active: s.is_active(self.clock.now_ms()),
            current: current.is_some_and(|c| c == *s.id),
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            idle_expires_at: rfc3339(s.idle_expires_at),
            expires_at: rfc3339(s.expires_at),
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
            revoked_at: s.revoked_at.map(rfc3339),
            revoke_reason: s.revoke_reason.clone(),
            device: device.map(DeviceView::from),
        }
    }

    /// The user's active sessions, most recently used first, `current` marked.
    pub async fn list(
        &self,
        user_id: UserId<'_>,
        current: Option<SessionId<'_>>,
    ) -> StorageResult<Vec<SessionView>> {
        let sessions = self.storage.user_sessions(user_id.as_str(), self.clock.now_ms()).await?;
        Ok(sessions.iter().map(|(s, d)| self.view(s, current, d.as_ref())).collect())
    }

    /// One of the user's sessions (active or ended); `None` when it is not theirs.
    pub async fn get(
        &self,
        user_id: UserId<'_>,
        id: SessionId<'_>,
        current: Option<SessionId<'_>>,
    ) -> StorageResult<Option<SessionView>> {
        let session = self.storage.session(id.as_str()).await?;
        let Some(session) = session.filter(|s| user_id == *s.user_id) else {
            return Ok(None);
        };
        let device = match session.device_id.as_deref() {
            Some(device_id) => self.storage.device(user_id, DeviceId::new(device_id)).await?,
            None => None,
        };
        Ok(Some(self.view(&session, current, device.as_ref())))
    }

    async fn audit_ended(&self, ended: &[Session], actor: &str) -> StorageResult<()> {
        for session in ended {
            self.audit.record(session_revoked(session, actor)).await?;
        }
        Ok(())
    }

    /// Ends one of the user's sessions. `false` when the user has no such session; ending an
    /// ended session again succeeds.
    pub async fn end(
        &self,
        user_id: UserId<'_>,
        id: SessionId<'_>,
        reason: &str,
    ) -> StorageResult<bool> {
        let owned = self.storage.session(id.as_str()).await?.is_some_and(|s| user_id == *s.user_id);
        if owned {
            let now = self.clock.now_ms();
            let ended = self.storage.revoke_session(id.as_str(), now, reason).await?;
            self.audit_ended(ended.as_slice(), &format!("user:{user_id}")).await?;
        }
        Ok(owned)
    }

    /// Ends every active session of the user but `except`; returns how many ended.
    pub async fn end_all(
        &self,
        user_id: UserId<'_>,
        except: Option<SessionId<'_>>,
        reason: &str,
        actor: &str,
    ) -> StorageResult<usize> {
        let now = self.clock.now_ms();
        let ended = self.storage.revoke_user_sessions(user_id, except, now, reason).await?;
        self.audit_ended(&ended, actor).await?;
        Ok(ended.len())
    }

    pub async fn devices(&self, user_id: &str) -> StorageResult<Vec<DeviceView>> {
        Ok(self.storage.user_devices(user_id).await?.iter().map(DeviceView::from).collect())
    }

    pub async fn update_device(
        &self,
        user_id: UserId<'_>,
        id: DeviceId<'_>,
        name: Option<&str>,
        trusted: Option<bool>,
    ) -> StorageResult<Option<DeviceView>> {
        let device = self.storage.update_device(user_id, id, name, trusted).await?;
        Ok(device.as_ref().map(DeviceView::from))
    }

    /// Deletes a device and ends its sessions; `None` when the user has no such device.
    pub async fn delete_device(
        &self,
        user_id: UserId<'_>,
        id: DeviceId<'_>,
    ) -> StorageResult<Option<usize>> {
        let Some(ended) = self.storage.delete_device(user_id, id, self.clock.now_ms()).await?
        else {
            return Ok(None);
        };
        self.audit_ended(&ended, &format!("user:{user_id}")).await?;
        Ok(Some(ended.len()))
    }

    /// Ends every session of a user, and with them their refresh families and access tokens.
    /// `None` when there is no such user.
    pub async fn revoke_user(&self, user_id: &str, actor: &str) -> StorageResult<Option<usize>> {
        if self.storage.user_by_id(user_id).await?.is_none() {
            return Ok(None);
        }
        self.end_all(UserId::new(user_id), None, revoke_reason::USER_REVOKED, actor).await.map(Some)
    }

    /// One purge pass over every kind of record, at most one batch each; sessions that
    /// ended by a timeout are audited as expired.
    pub async fn purge_once(&self) -> StorageResult<PurgeReport> {
        let now = self.clock.now_ms();
        let policy = PurgePolicy {
            now,
            ended_before: now - self.purge.ended_retention_ms,
            used_before: now - self.purge.reuse_window_ms,
            audit_before: now - self.purge.audit_retention_ms,
            batch: self.purge.batch,
        };
        let mut report = self.storage.purge(&policy).await?;
        if self.purge.unused_client_ms > 0 {
            let cutoff = now - self.purge.unused_client_ms;
            let batch = i64::from(self.purge.batch);
            let expired = self.storage.purge_unused_clients(cutoff, batch).await?;
            report.clients = expired.len() as u64;
            for client_id in &expired {
                let deleted = entry(events::CLIENT_DELETED)
                    .actor("system")
                    .client(client_id)
                    .detail("reason", "unused");
                self.audit.record(deleted).await?;
            }
        }
        for s in &report.expired {
            let expired = entry(events::SESSION_EXPIRED)
                .actor("system")
                .user(&s.user_id)
                .session(&s.id)
                .client(&s.client_id)
                .detail("expired_at", rfc3339(s.idle_expires_at.min(s.expires_at)));
            self.audit.record(expired).await?;
        }
        Ok(report)
    }

    /// Purge passes until a pass finds less than a batch of every kind.
    pub async fn purge(&self) -> StorageResult<PurgeReport> {
        let mut total = PurgeReport::default();
        loop {
            let pass = self.purge_once().await?;
            let full = pass.full(self.purge.batch);
            total.add(pass);
            if !full {
                return Ok(total);
            }
            // Let requests through between batches.
            tokio::task::yield_now().await;
        }
    }
}
