//! Sessions, devices and the purge job on Redis. Per user, a sorted set indexes sessions by
//! last use (for eviction and listing) and a set holds device ids; one sorted set indexes
//! every session by when it ends, for the purge job.

use ::redis::AsyncCommands;
use async_trait::async_trait;

use super::{Fields, RedisStorage, field, hex, optional, present};
use crate::clock::Millis;
use crate::storage::*;

pub(super) fn session_from_map(map: &Fields) -> StorageResult<Session> {
    Ok(Session {
        id: field(map, "id")?,
        user_id: field(map, "user_id")?,
        client_id: field(map, "client_id")?,
        scope: field(map, "scope")?,
        created_at: field(map, "created_at")?,
        last_used_at: field(map, "last_used_at")?,
        idle_expires_at: field(map, "idle_expires_at")?,
        expires_at: field(map, "expires_at")?,
        ip: optional(map, "ip"),
        user_agent: optional(map, "user_agent"),
        revoked_at: optional(map, "revoked_at"),
        revoke_reason: optional(map, "revoke_reason"),
        device_id: optional(map, "device_id"),
        access_jti: optional(map, "access_jti"),
        resource: optional(map, "resource"),
    })
}

fn device_from_map(map: &Fields) -> StorageResult<Device> {
    Ok(Device {
        id: field(map, "id")?,
        user_id: field(map, "user_id")?,
        fingerprint: field(map, "fingerprint")?,
        name: field(map, "name")?,
        platform: optional(map, "platform"),
        user_agent: optional(map, "user_agent"),
        last_ip: optional(map, "last_ip"),
        first_seen_at: field(map, "first_seen_at")?,
        last_seen_at: field(map, "last_seen_at")?,
        trusted: map.get("trusted").is_some_and(|v| v == "1"),
    })
}

fn sessions_from_maps(maps: &[Fields]) -> StorageResult<Vec<Session>> {
    maps.iter().filter(|m| !m.is_empty()).map(session_from_map).collect()
}

fn or_empty(value: Option<&str>) -> &str {
    value.unwrap_or_default()
}

impl RedisStorage {
    /// HGETALL of each key, in one round trip.
    async fn hashes(&self, keys: &[String]) -> StorageResult<Vec<Fields>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for key in keys {
            pipe.hgetall(key);
        }
        Ok(pipe.query_async(&mut self.conn()).await?)
    }
}

#[async_trait]
impl BulkImport for RedisStorage {
    async fn import_sessions(
        &self,
        users: &[User],
        sessions: &[ImportedSession],
    ) -> StorageResult<()> {
        use futures::{StreamExt, TryStreamExt};
        // Indices rather than references keep the stream's closures free of higher-ranked
        // lifetimes, which the async trait's Send bound cannot prove.
        futures::stream::iter(0..users.len())
            .map(|n| self.create_user(&users[n]))
            .buffer_unordered(64)
            .try_collect::<()>()
            .await?;
        futures::stream::iter(0..sessions.len())
            .map(|n| async move {
                let i = &sessions[n];
                let login = Login {
                    session: &i.session,
                    refresh_hash: &i.refresh_hash,
                    device: &i.device,
                    device_named_by_client: false,
                    max_sessions: usize::MAX,
                    index_token: true,
                };
                self.create_session(&login).await.map(drop)
            })
            .buffer_unordered(64)
            .try_collect::<()>()
            .await
    }
}

#[async_trait]
impl SessionStore for RedisStorage {
    async fn create_session(&self, login: &Login<'_>) -> StorageResult<LoginOutcome> {
        let (s, d) = (login.session, login.device);
        let (status, session, device, new_device, evicted): (
            String,
            Fields,
            Fields,
            i64,
            Vec<Fields>,
        ) = self
            .scripts
            .create_session
            .arg(self.script_prefix())
            .arg(login.max_sessions)
            .arg(s.created_at)
            .arg(hex(login.refresh_hash))
            .arg(if login.device_named_by_client { "1" } else { "0" })
            .arg(&d.id)
            .arg(&d.fingerprint)
            .arg(&d.name)
            .arg(or_empty(d.platform.as_deref()))
            .arg(or_empty(d.user_agent.as_deref()))
            .arg(or_empty(d.last_ip.as_deref()))
            .arg(&s.id)
            .arg(&s.user_id)
            .arg(&s.client_id)
            .arg(&s.scope)
            .arg(s.last_used_at)
            .arg(s.idle_expires_at)
            .arg(s.expires_at)
            .arg(or_empty(s.ip.as_deref()))
            .arg(or_empty(s.user_agent.as_deref()))
            .arg(or_empty(s.access_jti.as_deref()))
            .arg(or_empty(s.resource.as_deref()))
            .arg(if login.index_token { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await?;
        if status != "ok" {
            return Err(StorageError::Conflict("refresh token"));
        }
        Ok(LoginOutcome {
            session: session_from_map(&session)?,
            device: device_from_map(&device)?,
            new_device: new_device == 1,
            evicted: sessions_from_maps(&evicted)?,
        })
    }

    /// Each user and session through its own script (so each is stored whole, with every
    /// index), 64 in flight at once.
    async fn session(&self, id: &str) -> StorageResult<Option<Session>> {
        let map: Fields = self.conn().hgetall(self.key("session", id)).await?;
        present(&map, session_from_map)
    }

    async fn user_sessions(
        &self,
        user_id: &str,
        now: Millis,
    ) -> StorageResult<Vec<(Session, Option<Device>)>> {
        let listing = async {
            let ids: Vec<String> =
                self.conn().zrevrange(self.key("user_sessions", user_id), 0, -1).await?;
            let keys: Vec<String> = ids.iter().map(|id| self.key("session", id)).collect();
            sessions_from_maps(&self.hashes(&keys).await?)
        };
        // Both reads at once: a user's devices are few, so fetching them all costs less than a
        // third round trip for just the listed sessions' ones.
        let (mut sessions, devices) = tokio::try_join!(listing, self.user_devices(user_id))?;
        sessions.retain(|s| s.is_active(now));
        sessions.sort_by(|a, b| b.last_used_at.cmp(&a.last_used_at).then(b.id.cmp(&a.id)));
        Ok(sessions
            .into_iter()
            .map(|s| {
                let device = devices.iter().find(|d| s.device_id.as_ref() == Some(&d.id));
                (s, device.cloned())
            })
            .collect())
    }

    async fn revoke_user_sessions(
        &self,
        user_id: UserId<'_>,
        except: Option<SessionId<'_>>,
        now: Millis,
        reason: &str,
    ) -> StorageResult<Vec<Session>> {
        let ended: Vec<Fields> = self
            .scripts
            .revoke_user_sessions
            .arg(self.script_prefix())
            .arg(user_id.as_str())
            .arg(or_empty(except.map(SessionId::as_str)))
            .arg(now)
            .arg(reason)
            .invoke_async(&mut self.conn())
            .await?;
        sessions_from_maps(&ended)
    }

    async fn session_by_refresh(
        &self,
        hash: &[u8],
        session_id: Option<&str>,
    ) -> StorageResult<Option<(Session, bool)>> {
        if let Some(id) = session_id {
            let map: Fields = self.conn().hgetall(self.key("session", id)).await?;
            let current = map.get("current_hash").is_some_and(|c| *c == hex(hash));
            return Ok(present(&map, session_from_map)?.map(|s| (s, current)));
        }
        let (current, map): (i64, Fields) = self
            .scripts
            .session_by_refresh
            .key(self.refresh_key(hash))
            .arg(hex(hash))
            .arg(self.script_prefix())
            .invoke_async(&mut self.conn())
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        Ok(Some((session_from_map(&map)?, current == 1)))
    }

    async fn rotate_refresh(&self, r: &Rotation<'_>) -> StorageResult<RotationOutcome> {
        let (outcome, map): (String, Fields) = self
            .scripts
            .rotate_refresh
            .key(self.key("session", r.session_id))
            .key(self.refresh_key(r.presented_hash))
            .arg(hex(r.presented_hash))
            .arg(hex(r.new_hash))
            .arg(r.client_id)
            .arg(r.now)
            .arg(r.grace_ms)
            .arg(r.idle_timeout_ms)
            .arg(self.script_prefix())
            .arg(or_empty(r.ip))
            .arg(r.reuse_window_ms)
            .arg(r.new_jti)
            .arg(r.superseded_until)
            .arg(r.presented_generation.map(|g| g.to_string()).unwrap_or_default())
            .arg(r.new_generation)
            .arg(DEVICE_SEEN_EVERY_MS)
            .invoke_async(&mut self.conn())
            .await?;
        let session = || session_from_map(&map);
        Ok(match outcome.as_str() {
            "rotated" => RotationOutcome::Rotated(session()?),
            "grace" => RotationOutcome::Grace(session()?),
            "reused" => RotationOutcome::Reused(session()?),
            "ended" => RotationOutcome::Ended(session()?),
            "invalid" => RotationOutcome::Invalid,
            other => return Err(StorageError::Corrupt(format!("rotation outcome {other}"))),
        })
    }

    async fn revoke_session(
        &self,
        id: &str,
        now: Millis,
        reason: &str,
    ) -> StorageResult<Option<Session>> {
        let map: Fields = self
            .scripts
            .revoke_session
            .key(self.key("session", id))
            .arg(now)
            .arg(reason)
            .arg(self.script_prefix())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        present(&map, session_from_map)
    }
}

#[async_trait]
impl DeviceStore for RedisStorage {
    async fn user_devices(&self, user_id: &str) -> StorageResult<Vec<Device>> {
        let ids: Vec<String> = self.conn().smembers(self.key("user_devices", user_id)).await?;
        let keys: Vec<String> = ids.iter().map(|id| self.key("device", id)).collect();
        let mut devices: Vec<Device> = self
            .hashes(&keys)
            .await?
            .iter()
            .filter(|m| !m.is_empty())
            .map(device_from_map)
            .collect::<StorageResult<_>>()?;
        devices.sort_by(|a, b| b.last_seen_at.cmp(&a.last_seen_at).then(a.id.cmp(&b.id)));
        Ok(devices)
    }

    async fn device(&self, user_id: UserId<'_>, id: DeviceId<'_>) -> StorageResult<Option<Device>> {
        let map: Fields = self.conn().hgetall(self.key("device", id.as_str())).await?;
        if map.get("user_id").map(String::as_str) != Some(user_id.as_str()) {
            return Ok(None);
        }
        device_from_map(&map).map(Some)
    }

    async fn update_device(
        &self,
        user_id: UserId<'_>,
        id: DeviceId<'_>,
        name: Option<&str>,
        trusted: Option<bool>,
    ) -> StorageResult<Option<Device>> {
        let trusted = trusted.map(|t| if t { "1" } else { "0" });
        let map: Fields = self
            .scripts
            .update_device
            .key(self.key("device", id.as_str()))
            .arg(user_id.as_str())
            .arg(or_empty(name))
            .arg(or_empty(trusted))
            .invoke_async(&mut self.conn())
            .await?;
        present(&map, device_from_map)
    }

    async fn delete_device(
        &self,
        user_id: UserId<'_>,
        id: DeviceId<'_>,
        now: Millis,
    ) -> StorageResult<Option<Vec<Session>>> {
        let (found, ended): (i64, Vec<Fields>) = self
            .scripts
            .delete_device
            .arg(self.script_prefix())
            .arg(user_id.as_str())
            .arg(id.as_str())
            .arg(now)
            .invoke_async(&mut self.conn())
            .await?;
        if found == 0 {
            return Ok(None);
        }
        sessions_from_maps(&ended).map(Some)
    }
}

#[async_trait]
impl Maintenance for RedisStorage {
    /// Ended sessions go in batches; used refresh tokens and revocation entries carry TTLs, so
    /// Redis removes them by itself.
    async fn purge(&self, p: &PurgePolicy) -> StorageResult<PurgeReport> {
        let deleted: Vec<Fields> = self
            .scripts
            .purge_sessions
            .arg(self.script_prefix())
            .arg(p.ended_before)
            .arg(p.batch)
            .invoke_async(&mut self.conn())
            .await?;
        let deleted = sessions_from_maps(&deleted)?;
        let (audit_events, webhook_deliveries): (u64, u64) = self
            .scripts
            .purge_events
            .arg(self.script_prefix())
            .arg(crate::audit_event::id_floor(p.audit_before))
            .arg(p.audit_before)
            .arg(p.batch)
            .arg(&crate::audit_event::events::ALL[..])
            .invoke_async(&mut self.conn())
            .await?;
        Ok(PurgeReport {
            sessions: deleted.len() as u64,
            audit_events,
            webhook_deliveries,
            expired: deleted.into_iter().filter(|s| s.revoked_at.is_none()).collect(),
            ..PurgeReport::default()
        })
    }
}

#[async_trait]
impl LockoutStore for RedisStorage {
    async fn begin_login_attempt(&self, key: &str, p: &LockoutPolicy) -> StorageResult<Admission> {
        let (outcome, until): (i32, Millis) = self.login_attempt(key, "begin", false, p).await?;
        Ok(if outcome == 1 {
            Admission::Verify
        } else {
            Admission::Refused { locked_until: (until > p.now).then_some(until) }
        })
    }

    async fn finish_login_attempt(
        &self,
        key: &str,
        succeeded: bool,
        p: &LockoutPolicy,
    ) -> StorageResult<Option<Millis>> {
        let (outcome, until): (i32, Millis) =
            self.login_attempt(key, "finish", succeeded, p).await?;
        Ok((outcome == 2).then_some(until))
    }
}

impl RedisStorage {
    async fn login_attempt(
        &self,
        key: &str,
        step: &str,
        succeeded: bool,
        p: &LockoutPolicy,
    ) -> StorageResult<(i32, Millis)> {
        Ok(self
            .scripts
            .login_attempt
            .key(self.key("login_attempts", key))
            .arg(step)
            .arg(p.now)
            .arg(p.now - p.window_ms)
            .arg(p.threshold)
            .arg(p.now + p.lock_ms)
            .arg(if succeeded { "1" } else { "0" })
            .arg(p.window_ms)
            .invoke_async(&mut self.conn())
            .await?)
    }
}
