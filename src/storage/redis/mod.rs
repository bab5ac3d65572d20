//! Redis backend for many stateless instances. Records live under one key prefix; every
//! atomic rule is a Lua script (a script runs alone on the server), and data that expires
//! carries a TTL: sessions and their token index until the session's absolute expiry,
//! revoked access-token ids until the token would have expired.
//!
//! Scripts build some key names from their arguments, so the backend targets a single Redis
//! (or a primary with replicas), not Redis Cluster.

use std::collections::HashMap;

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands, Script};
use async_trait::async_trait;

use super::*;

mod events;
mod layout;
mod resources;
mod sessions;
mod sign_in;

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
    delete_user: Script,
    create_session: Script,
    revoke_user_sessions: Script,
    update_device: Script,
    delete_device: Script,
    purge_sessions: Script,
    enqueue_webhook: Script,
    claim_deliveries: Script,
    finish_attempt: Script,
    delete_webhook: Script,
    purge_events: Script,
    login_attempt: Script,
    touch_browser_session: Script,
    take_code: Script,
    bind_code_session: Script,
}

/// How a Redis connection waits: `timeout` for a connection and for each answer. While
/// Redis is away, a command waits for one short round of reconnection attempts (the
/// library's default round held each request for seconds; docs/reliability.md, section 3)
/// and fails; the next command tries again.
pub(crate) fn manager_config(
    timeout: std::time::Duration,
) -> ::redis::aio::ConnectionManagerConfig {
    ::redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(std::time::Duration::from_millis(500))
}

impl RedisStorage {
    /// Connects to `url`; fails within the storage timeout when nothing answers. A command
    /// waits for its answer that long too: while Redis is away, requests fail in time, and the
    /// connection is made again when it is back.
    pub async fn connect(url: &str, options: &ConnectOptions) -> StorageResult<Self> {
        let client = ::redis::Client::open(url)?;
        let config = manager_config(options.timeout);
        let conn = tokio::time::timeout(
            options.timeout,
            ConnectionManager::new_with_config(client, config),
        )
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
                delete_user: Script::new(include_str!("delete_user.lua")),
                create_session: Script::new(include_str!("create_session.lua")),
                revoke_user_sessions: Script::new(include_str!("revoke_user_sessions.lua")),
                update_device: Script::new(include_str!("update_device.lua")),
                delete_device: Script::new(include_str!("delete_device.lua")),
                purge_sessions: Script::new(include_str!("purge_sessions.lua")),
                enqueue_webhook: Script::new(include_str!("enqueue_webhook.lua")),
                claim_deliveries: Script::new(include_str!("claim_deliveries.lua")),
                finish_attempt: Script::new(include_str!("finish_attempt.lua")),
                delete_webhook: Script::new(include_str!("delete_webhook.lua")),
                purge_events: Script::new(include_str!("purge_events.lua")),
                login_attempt: Script::new(include_str!("login_attempt.lua")),
                touch_browser_session: Script::new(include_str!("touch_browser_session.lua")),
                take_code: Script::new(include_str!("take_code.lua")),
                bind_code_session: Script::new(include_str!("bind_code_session.lua")),
            }),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    /// The prefix scripts prepend to key names.
    fn script_prefix(&self) -> String {
        format!("{}:", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn refresh_key(&self, hash: &[u8]) -> String {
        self.key("rt", &hex(hash))
    }

    /// The records stored as JSON under `keys`, in their order, with one MGET; keys that are
    /// gone are skipped.
    async fn get_jsons<T: serde::de::DeserializeOwned>(
        &self,
        keys: &[String],
    ) -> StorageResult<Vec<T>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let raws: Vec<Option<String>> =
            ::redis::cmd("MGET").arg(keys).query_async(&mut self.conn()).await?;
        raws.iter()
            .flatten()
            .map(|r| serde_json::from_str(r).map_err(|e| StorageError::Corrupt(e.to_string())))
            .collect()
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

/// The bytes of `hex` text.
fn unhex(text: &str) -> StorageResult<Vec<u8>> {
    let corrupt = || StorageError::Corrupt("hex field".into());
    if !text.len().is_multiple_of(2) {
        return Err(corrupt());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()).ok_or_else(corrupt)
        })
        .collect()
}

/// A Redis hash as field → value.
type Fields = HashMap<String, String>;

/// A required field of a hash.
fn field<T: std::str::FromStr>(map: &Fields, name: &str) -> StorageResult<T> {
    map.get(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StorageError::Corrupt(format!("field {name}")))
}

/// A record read as a hash, or `None` when the hash is empty (missing).
fn present<T>(map: &Fields, read: fn(&Fields) -> StorageResult<T>) -> StorageResult<Option<T>> {
    if map.is_empty() { Ok(None) } else { read(map).map(Some) }
}

/// An optional field of a hash.
fn optional<T: std::str::FromStr>(map: &Fields, name: &str) -> Option<T> {
    map.get(name).and_then(|v| v.parse().ok())
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

    /// Read, change, write back only if the key still exists (`SET XX`). The role is the
    /// only field that changes, so the last change wins.
    async fn set_user_role(&self, id: &str, role: &str) -> StorageResult<bool> {
        let Some(mut user) = self.user_by_id(id).await? else {
            return Ok(false);
        };
        user.role = role.to_owned();
        let json =
            serde_json::to_string(&user).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let set: Option<String> = ::redis::cmd("SET")
            .arg(self.key("user", id))
            .arg(json)
            .arg("XX")
            .query_async(&mut self.conn())
            .await?;
        Ok(set.is_some())
    }

    async fn delete_user(&self, id: &str) -> StorageResult<bool> {
        let deleted: i64 = self
            .scripts
            .delete_user
            .arg(self.script_prefix())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(deleted == 1)
    }
}

#[async_trait]
impl ClientStore for RedisStorage {
    async fn create_client(&self, client: &Client) -> StorageResult<()> {
        if !self.put_client(client, "NX").await? {
            return Err(StorageError::Conflict("client"));
        }
        if client.registered {
            let used = client.last_used_at.unwrap_or(client.created_at);
            let _: () = self.conn().zadd(self.unused_clients(), &client.client_id, used).await?;
        }
        Ok(())
    }

    async fn client(&self, client_id: &str) -> StorageResult<Option<Client>> {
        self.get_json(&self.key("client", client_id)).await
    }

    /// Clients have no index of their own: the keys are walked, a page at a time (an admin
    /// listing, not a request path).
    async fn clients(&self) -> StorageResult<Vec<Client>> {
        let mut keys = self.scan(&format!("{}client:*", self.script_prefix())).await?;
        keys.sort();
        let mut clients: Vec<Client> = self.get_jsons(&keys).await?;
        // A registered client's last use is kept in the index only.
        let registered: Vec<&str> =
            clients.iter().filter(|c| c.registered).map(|c| c.client_id.as_str()).collect();
        if !registered.is_empty() {
            let used: Vec<Option<f64>> = ::redis::cmd("ZMSCORE")
                .arg(self.unused_clients())
                .arg(&registered)
                .query_async(&mut self.conn())
                .await?;
            let mut used = used.into_iter();
            for client in clients.iter_mut().filter(|c| c.registered) {
                client.last_used_at = used.next().flatten().map(|at| at as Millis);
            }
        }
        Ok(clients)
    }

    async fn update_client(&self, client: &Client) -> StorageResult<bool> {
        self.put_client(client, "XX").await
    }

    async fn delete_client(&self, client_id: &str) -> StorageResult<bool> {
        let deleted: u64 = self.conn().del(self.key("client", client_id)).await?;
        let _: () = self.conn().zrem(self.unused_clients(), client_id).await?;
        Ok(deleted > 0)
    }

    async fn touch_client(&self, client_id: &str, at: Millis) -> StorageResult<()> {
        // XX: only a registered client is in the index.
        let _: () = ::redis::cmd("ZADD")
            .arg(self.unused_clients())
            .arg("XX")
            .arg(at)
            .arg(client_id)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn purge_unused_clients(&self, cutoff: Millis, limit: i64) -> StorageResult<Vec<String>> {
        let index = self.unused_clients();
        let ids: Vec<String> = self
            .conn()
            .zrangebyscore_limit(&index, "-inf", format!("({cutoff}"), 0, limit as isize)
            .await?;
        for id in &ids {
            let _: () = ::redis::pipe()
                .atomic()
                .del(self.key("client", id))
                .zrem(&index, id)
                .query_async(&mut self.conn())
                .await?;
        }
        Ok(ids)
    }
}

impl RedisStorage {
    /// The registered clients by last use (or registration), for their expiry.
    fn unused_clients(&self) -> String {
        self.key("clients", "registered_by_use")
    }

    /// Stores a client as JSON: `NX` creates, `XX` replaces. False when the condition failed.
    async fn put_client(&self, client: &Client, condition: &str) -> StorageResult<bool> {
        let json =
            serde_json::to_string(client).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        Ok(::redis::cmd("SET")
            .arg(self.key("client", &client.client_id))
            .arg(json)
            .arg(condition)
            .query_async::<Option<String>>(&mut self.conn())
            .await?
            .is_some())
    }
}

#[async_trait]
impl KeyStore for RedisStorage {
    async fn signing_keys(&self, now: Millis) -> StorageResult<Vec<StoredKey>> {
        let kids: Vec<String> = self.conn().zrevrange(self.key("keys", "all"), 0, -1).await?;
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

    /// A hash of the value (hex), whether it is encrypted, and when it was made; HSETNX on the
    /// value decides which instance's candidate is kept.
    async fn server_secret(
        &self,
        name: &str,
        candidate: &ServerSecret,
    ) -> StorageResult<ServerSecret> {
        let key = self.key("secret", name);
        let (_, _, _, stored): ((), (), (), Fields) = ::redis::pipe()
            .atomic()
            .hset_nx(&key, "value", hex(&candidate.value))
            .hset_nx(&key, "encrypted", if candidate.encrypted { "1" } else { "0" })
            .hset_nx(&key, "created_at", candidate.created_at)
            .hgetall(&key)
            .query_async(&mut self.conn())
            .await?;
        let value: String = field(&stored, "value")?;
        Ok(ServerSecret {
            value: unhex(&value)?,
            encrypted: stored.get("encrypted").is_some_and(|v| v == "1"),
            created_at: field(&stored, "created_at")?,
        })
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
impl Storage for RedisStorage {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StorageResult<()> {
        let _: String = ::redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// `session_ends` scores each session by when it ends (idle expiry, capped by the
    /// absolute one, or its revocation), so the live ones are those scored after now.
    async fn count_active_sessions(&self, now: Millis) -> StorageResult<u64> {
        let min = format!("({now}");
        Ok(self.conn().zcount(format!("{}session_ends", self.script_prefix()), min, "+inf").await?)
    }
}
