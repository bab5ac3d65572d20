//! Redis backend for many stateless instances. Records live under one key prefix; every
//! atomic rule is a Lua script (a script runs alone on the server), and data that expires
//! carries a TTL: sessions and their token index until the session's absolute expiry,
//! revoked access-token ids until the token would have expired.
//!
//! Scripts build some key names from their arguments, so the backend targets a single Redis
//! (or a primary with replicas), not Redis Cluster.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands, Script};
use async_trait::async_trait;

use super::*;

/// The schema version this binary writes.
const SCHEMA_VERSION: i64 = 1;

/// Redis storage.
#[derive(Clone)]
pub struct RedisStorage {
    conn: ConnectionManager,
    prefix: String,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    rotate_refresh: Script,
    session_by_refresh: Script,
    rotate_key: Script,
    revoke_session: Script,
    create_user: Script,
}

impl RedisStorage {
    /// Connects to `url`; fails within five seconds when nothing answers.
    pub async fn connect(url: &str, options: &ConnectOptions) -> StorageResult<Self> {
        let client = ::redis::Client::open(url)?;
        let conn = tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
            .await
            .map_err(|_| StorageError::Timeout("redis connect"))??;
        Ok(Self {
            conn,
            prefix: options.redis_key_prefix.clone(),
            scripts: std::sync::Arc::new(Scripts {
                rotate_refresh: Script::new(include_str!("rotate_refresh.lua")),
                session_by_refresh: Script::new(include_str!("session_by_refresh.lua")),
                rotate_key: Script::new(include_str!("rotate_key.lua")),
                revoke_session: Script::new(include_str!("revoke_session.lua")),
                create_user: Script::new(include_str!("create_user.lua")),
            }),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn refresh_key(&self, hash: &[u8]) -> String {
        self.key("rt", &hex(hash))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> StorageResult<Option<T>> {
        let raw: Option<String> = self.conn().get(key).await?;
        raw.map(|r| serde_json::from_str(&r).map_err(|e| StorageError::Corrupt(e.to_string())))
            .transpose()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn field<T: std::str::FromStr>(map: &HashMap<String, String>, name: &str) -> StorageResult<T> {
    map.get(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StorageError::Corrupt(format!("session field {name}")))
}

fn optional<T: std::str::FromStr>(map: &HashMap<String, String>, name: &str) -> Option<T> {
    map.get(name).and_then(|v| v.parse().ok())
}

fn session_from_map(map: &HashMap<String, String>) -> StorageResult<Session> {
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
    })
}

#[async_trait]
impl UserStore for RedisStorage {
    async fn create_user(&self, user: &User) -> StorageResult<()> {
        let json = serde_json::to_string(user).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let created: i64 = self
            .scripts
            .create_user
            .key(self.key("username", &user.username))
            .key(self.key("user", &user.id))
            .arg(&user.id)
            .arg(json)
            .invoke_async(&mut self.conn())
            .await?;
        if created == 0 {
            return Err(StorageError::Conflict("user"));
        }
        Ok(())
    }

    async fn user_by_username(&self, username: &str) -> StorageResult<Option<User>> {
        let id: Option<String> = self.conn().get(self.key("username", username)).await?;
        match id {
            Some(id) => self.user_by_id(&id).await,
            None => Ok(None),
        }
    }

    async fn user_by_id(&self, id: &str) -> StorageResult<Option<User>> {
        self.get_json(&self.key("user", id)).await
    }
}

#[async_trait]
impl ClientStore for RedisStorage {
    async fn create_client(&self, client: &Client) -> StorageResult<()> {
        let json =
            serde_json::to_string(client).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let created: bool = ::redis::cmd("SET")
            .arg(self.key("client", &client.client_id))
            .arg(json)
            .arg("NX")
            .query_async::<Option<String>>(&mut self.conn())
            .await?
            .is_some();
        if !created {
            return Err(StorageError::Conflict("client"));
        }
        Ok(())
    }

    async fn client(&self, client_id: &str) -> StorageResult<Option<Client>> {
        self.get_json(&self.key("client", client_id)).await
    }
}

#[async_trait]
impl KeyStore for RedisStorage {
    async fn signing_keys(&self, now: Millis) -> StorageResult<Vec<StoredKey>> {
        let kids: Vec<String> = self
            .conn()
            .zrevrange(self.key("keys", "all"), 0, -1)
            .await?;
        if kids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for kid in &kids {
            pipe.hgetall(self.key("key", kid));
        }
        let maps: Vec<HashMap<String, Vec<u8>>> = pipe.query_async(&mut self.conn()).await?;
        let text = |m: &HashMap<String, Vec<u8>>, name: &str| {
            m.get(name).and_then(|v| String::from_utf8(v.clone()).ok())
        };
        let number = |m: &HashMap<String, Vec<u8>>, name: &str| {
            text(m, name).and_then(|v| v.parse::<Millis>().ok())
        };
        let mut keys = Vec::with_capacity(maps.len());
        for m in maps.iter().filter(|m| !m.is_empty()) {
            let key = StoredKey {
                kid: text(m, "kid").ok_or(StorageError::Corrupt("key kid".into()))?,
                alg: text(m, "alg").ok_or(StorageError::Corrupt("key alg".into()))?,
                private_key: m.get("private_key").cloned().unwrap_or_default(),
                encrypted: text(m, "encrypted").as_deref() == Some("1"),
                created_at: number(m, "created_at").unwrap_or_default(),
                retired_at: number(m, "retired_at"),
                expires_at: number(m, "expires_at"),
            };
            if key.expires_at.is_none_or(|at| at > now) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    async fn rotate_signing_key(
        &self,
        expected_active: Option<&str>,
        key: &StoredKey,
        retire_until: Millis,
    ) -> StorageResult<bool> {
        let done: i64 = self
            .scripts
            .rotate_key
            .key(self.key("keys", "all"))
            .arg(expected_active.unwrap_or_default())
            .arg(format!("{}:key:", self.prefix))
            .arg(&key.kid)
            .arg(&key.alg)
            .arg(key.private_key.as_slice())
            .arg(if key.encrypted { "1" } else { "0" })
            .arg(key.created_at)
            .arg(retire_until)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }
}

#[async_trait]
impl SessionStore for RedisStorage {
    async fn create_session(&self, s: &Session, refresh_hash: &[u8]) -> StorageResult<()> {
        let key = self.key("session", &s.id);
        let mut fields: Vec<(&str, String)> = vec![
            ("id", s.id.clone()),
            ("user_id", s.user_id.clone()),
            ("client_id", s.client_id.clone()),
            ("scope", s.scope.clone()),
            ("created_at", s.created_at.to_string()),
            ("last_used_at", s.last_used_at.to_string()),
            ("idle_expires_at", s.idle_expires_at.to_string()),
            ("expires_at", s.expires_at.to_string()),
            ("current_hash", hex(refresh_hash)),
        ];
        if let Some(ip) = &s.ip {
            fields.push(("ip", ip.clone()));
        }
        if let Some(ua) = &s.user_agent {
            fields.push(("user_agent", ua.clone()));
        }
        let expire = s.expires_at;
        let (set,): (bool,) = ::redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.refresh_key(refresh_hash))
            .arg(&s.id)
            .arg("NX")
            .arg("PXAT")
            .arg(expire)
            .hset_multiple(&key, &fields)
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(expire)
            .ignore()
            .query_async::<(Option<String>,)>(&mut self.conn())
            .await
            .map(|(v,)| (v.is_some(),))?;
        if !set {
            return Err(StorageError::Conflict("refresh token"));
        }
        Ok(())
    }

    async fn session(&self, id: &str) -> StorageResult<Option<Session>> {
        let map: HashMap<String, String> = self.conn().hgetall(self.key("session", id)).await?;
        if map.is_empty() {
            return Ok(None);
        }
        session_from_map(&map).map(Some)
    }

    async fn session_by_refresh(&self, hash: &[u8]) -> StorageResult<Option<(Session, bool)>> {
        let (current, map): (i64, HashMap<String, String>) = self
            .scripts
            .session_by_refresh
            .key(self.refresh_key(hash))
            .arg(hex(hash))
            .arg(format!("{}:session:", self.prefix))
            .invoke_async(&mut self.conn())
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        Ok(Some((session_from_map(&map)?, current == 1)))
    }

    async fn rotate_refresh(&self, r: &Rotation<'_>) -> StorageResult<RotationOutcome> {
        let (outcome, map): (String, HashMap<String, String>) = self
            .scripts
            .rotate_refresh
            .key(self.refresh_key(r.presented_hash))
            .key(self.refresh_key(r.new_hash))
            .arg(hex(r.presented_hash))
            .arg(hex(r.new_hash))
            .arg(r.client_id)
            .arg(r.now)
            .arg(r.grace_ms)
            .arg(r.idle_timeout_ms)
            .arg(format!("{}:session:", self.prefix))
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

    async fn revoke_session(&self, id: &str, now: Millis, reason: &str) -> StorageResult<bool> {
        let done: i64 = self
            .scripts
            .revoke_session
            .key(self.key("session", id))
            .arg(now)
            .arg(reason)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }
}

#[async_trait]
impl RevocationStore for RedisStorage {
    async fn revoke_access_token(&self, jti: &str, expires_at: Millis) -> StorageResult<()> {
        let _: Option<String> = ::redis::cmd("SET")
            .arg(self.key("revoked", jti))
            .arg(1)
            .arg("PXAT")
            .arg(expires_at)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn access_token_state(
        &self,
        jti: &str,
        session_id: Option<&str>,
    ) -> StorageResult<AccessTokenState> {
        let mut pipe = ::redis::pipe();
        pipe.exists(self.key("revoked", jti));
        if let Some(sid) = session_id {
            pipe.cmd("HMGET")
                .arg(self.key("session", sid))
                .arg("revoked_at")
                .arg("expires_at")
                .arg("idle_expires_at");
        }
        let mut conn = self.conn();
        let (revoked, session) = if session_id.is_some() {
            let (revoked, fields): (bool, (Option<Millis>, Option<Millis>, Option<Millis>)) =
                pipe.query_async(&mut conn).await?;
            let session = match fields {
                (revoked_at, Some(expires_at), Some(idle_expires_at)) => Some(SessionLiveness {
                    revoked: revoked_at.is_some(),
                    expires_at,
                    idle_expires_at,
                }),
                _ => None,
            };
            (revoked, session)
        } else {
            let (revoked,): (bool,) = pipe.query_async(&mut conn).await?;
            (revoked, None)
        };
        Ok(AccessTokenState { revoked, session })
    }
}

#[async_trait]
impl Migrations for RedisStorage {
    async fn migrate_up(&self) -> StorageResult<()> {
        let key = self.key("meta", "schema_version");
        let current: Option<i64> = self.conn().get(&key).await?;
        if current.unwrap_or(0) < SCHEMA_VERSION {
            let _: () = self.conn().set(&key, SCHEMA_VERSION).await?;
        }
        Ok(())
    }

    async fn migrate_down(&self, steps: usize) -> StorageResult<()> {
        if steps == 0 {
            return Ok(());
        }
        // Version 1 created the key space; reverting it removes every key of the prefix.
        let pattern = format!("{}:*", self.prefix);
        let mut conn = self.conn();
        let keys: Vec<String> = {
            let mut iter = conn.scan_match::<_, String>(&pattern).await?;
            let mut keys = Vec::new();
            while let Some(key) = iter.next_item().await {
                keys.push(key?);
            }
            keys
        };
        for chunk in keys.chunks(500) {
            let _: () = self.conn().del(chunk).await?;
        }
        Ok(())
    }

    async fn migration_status(&self) -> StorageResult<Vec<MigrationStatus>> {
        let current: Option<i64> = self.conn().get(self.key("meta", "schema_version")).await?;
        Ok(vec![MigrationStatus {
            version: 1,
            description: "init".into(),
            applied: current.unwrap_or(0) >= 1,
            checksum_ok: current.is_none_or(|v| v <= SCHEMA_VERSION),
        }])
    }
}

#[async_trait]
impl Storage for RedisStorage {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StorageResult<()> {
        let _: String = ::redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }
}
