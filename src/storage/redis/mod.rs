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

mod events;
mod sessions;

/// The schema version this binary writes.
const SCHEMA_VERSION: i64 = 6;

/// Members per command when a layout change walks the audit indexes.
const LAYOUT_PAGE: usize = 1000;

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

    /// Read, change, write back only if the key still exists (`SET XX`). Users are never
    /// deleted, and the role is the only field that changes, so the last change wins.
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
}

#[async_trait]
impl ClientStore for RedisStorage {
    async fn create_client(&self, client: &Client) -> StorageResult<()> {
        if !self.put_client(client, "NX").await? {
            return Err(StorageError::Conflict("client"));
        }
        Ok(())
    }

    async fn client(&self, client_id: &str) -> StorageResult<Option<Client>> {
        self.get_json(&self.key("client", client_id)).await
    }

    async fn update_client(
        &self,
        client_id: &str,
        secret_hash: Option<&str>,
        disabled: bool,
    ) -> StorageResult<bool> {
        let key = self.key("client", client_id);
        let Some(mut client) = self.get_json::<Client>(&key).await? else {
            return Ok(false);
        };
        client.secret_hash = secret_hash.map(str::to_owned);
        client.disabled = disabled;
        self.put_client(&client, "XX").await
    }

    async fn delete_client(&self, client_id: &str) -> StorageResult<bool> {
        let deleted: u64 = self.conn().del(self.key("client", client_id)).await?;
        Ok(deleted > 0)
    }
}

impl RedisStorage {
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

    /// Layout 6: the clients that may use the password grant, and their live sessions,
    /// gain the `account` scope the end-user API now requires.
    async fn grant_account_scope(&self) -> StorageResult<()> {
        let mut conn = self.conn();
        let clients: Vec<String> = self.scan(&format!("{}client:*", self.script_prefix())).await?;
        let mut granted = std::collections::HashSet::new();
        for key in clients {
            let Some(mut client) = self.get_json::<Client>(&key).await? else { continue };
            if client.allows_grant("password") {
                granted.insert(client.client_id.clone());
                if !client.scope_list().any(|s| s == "account") {
                    client.scopes = format!("{} account", client.scopes).trim().to_owned();
                    self.put_client(&client, "XX").await?;
                }
            }
        }
        if granted.is_empty() {
            return Ok(());
        }
        for key in self.scan(&format!("{}session:*", self.script_prefix())).await? {
            let (client_id, scope, revoked): (Option<String>, Option<String>, Option<String>) =
                ::redis::cmd("HMGET")
                    .arg(&key)
                    .arg("client_id")
                    .arg("scope")
                    .arg("revoked_at")
                    .query_async(&mut conn)
                    .await?;
            let (Some(client_id), Some(scope), None) = (client_id, scope, revoked) else {
                continue;
            };
            if granted.contains(&client_id) && !scope.split(' ').any(|s| s == "account") {
                let scope = format!("{scope} account").trim().to_owned();
                let _: () = conn.hset(&key, "scope", scope).await?;
            }
        }
        Ok(())
    }

    /// Every key matching `pattern`, a page at a time so no command blocks Redis.
    async fn scan(&self, pattern: &str) -> StorageResult<Vec<String>> {
        let mut conn = self.conn();
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let (next, page): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            keys.extend(page);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
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

/// The versions of the Redis key layout: what each added, and the key kinds it owns.
const LAYOUT: &[(i64, &str, &[&str])] = &[
    (1, "init", &["user", "username", "client", "key", "keys", "session", "rt", "revoked", "meta"]),
    (
        2,
        "sessions devices",
        &["device", "device_fp", "user_devices", "user_sessions", "session_ends"],
    ),
    (
        3,
        "audit webhooks",
        &[
            "audit",
            "audit_all",
            "audit_user",
            "audit_event",
            "webhook",
            "webhooks",
            "delivery",
            "delivery_attempts",
            "webhook_deliveries",
            "deliveries_due",
            "deliveries_finished",
            "deliveries_failed",
            "login_failures",
        ],
    ),
    // The audit log loses its index of every record: the event indexes together hold them.
    (4, "audit without a global index", &[]),
    // Each audit record lives inside its event's index instead of under a key of its own.
    (5, "audit records inside their indexes", &[]),
    // Login attempts counted per account name and address; the `account` scope.
    (6, "security review", &["login_attempts"]),
];

/// Where a walk over an event index stands: the lexicographic bound of the next page.
struct IndexPages {
    index: String,
    low: String,
    done: bool,
}

impl IndexPages {
    fn new(index: String) -> Self {
        Self { index, low: "-".to_owned(), done: false }
    }
}

impl RedisStorage {
    /// The index of every audit record that layout 3 kept and layout 4 does without.
    fn audit_all_key(&self) -> String {
        self.key("audit_all", "ids")
    }

    async fn schema_version(&self) -> StorageResult<i64> {
        let current: Option<i64> = self.conn().get(self.key("meta", "schema_version")).await?;
        Ok(current.unwrap_or(0))
    }

    /// The next [`LAYOUT_PAGE`] members of an event index, or `None` past its end: the
    /// layout conversions walk the event indexes this way so that no command blocks Redis
    /// for long.
    async fn next_page(&self, pages: &mut IndexPages) -> StorageResult<Option<Vec<String>>> {
        if pages.done {
            return Ok(None);
        }
        let members: Vec<String> = ::redis::cmd("ZRANGEBYLEX")
            .arg(&pages.index)
            .arg(&pages.low)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(LAYOUT_PAGE)
            .query_async(&mut self.conn())
            .await?;
        let Some(last) = members.last() else { return Ok(None) };
        // Past every member of the last id, a bare id or a layout 5 member.
        pages.low = format!("({}{})", events::member_id(last), events::PAST_ID);
        pages.done = members.len() < LAYOUT_PAGE;
        Ok(Some(members))
    }

    /// Layout 3 reads unfiltered audit listings from an index of every record: the union of
    /// the event indexes, copied a page at a time.
    async fn rebuild_audit_all(&self) -> StorageResult<()> {
        let all = self.audit_all_key();
        for event in crate::audit_event::events::ALL {
            let mut pages = IndexPages::new(self.key("audit_event", event));
            while let Some(ids) = self.next_page(&mut pages).await? {
                let mut zadd = ::redis::cmd("ZADD");
                zadd.arg(&all);
                for id in &ids {
                    zadd.arg(0).arg(id);
                }
                let _: () = zadd.query_async(&mut self.conn()).await?;
            }
        }
        Ok(())
    }

    /// Layout 5 keeps each audit record inside its event's index, as the member
    /// `<id>\t<record JSON>`, and its user's index names it as `<id>\t<event>`; layout 4 kept
    /// the record under a key of its own and both indexes held bare ids. Converts every event
    /// index a page at a time, towards layout 5 when `inline`, else back. Members already in
    /// the wanted form are left alone, so an interrupted conversion can simply run again.
    async fn convert_audit_records(&self, inline: bool) -> StorageResult<()> {
        use events::{index_member, member_id, parse, split_member};
        for event in crate::audit_event::events::ALL {
            let index = self.key("audit_event", event);
            let mut pages = IndexPages::new(index.clone());
            while let Some(members) = self.next_page(&mut pages).await? {
                let is_inline = |m: &str| member_id(m) != m;
                let pending: Vec<&String> =
                    members.iter().filter(|m| is_inline(m) != inline).collect();
                if pending.is_empty() {
                    continue;
                }
                let mut pipe = ::redis::pipe();
                if inline {
                    let keys: Vec<String> =
                        pending.iter().map(|id| self.key("audit", id)).collect();
                    let raws: Vec<Option<String>> = self.conn().mget(&keys).await?;
                    for (id, raw) in pending.iter().zip(raws) {
                        pipe.zrem(&index, id.as_str()).ignore();
                        let Some(raw) = raw else { continue };
                        let record: AuditRecord = parse(&raw)?;
                        pipe.zadd(&index, index_member(id, &raw), 0).ignore();
                        if let Some(user) = &record.user_id {
                            let by_user = self.key("audit_user", user);
                            pipe.zrem(&by_user, id.as_str()).ignore();
                            pipe.zadd(&by_user, index_member(id, event), 0).ignore();
                        }
                    }
                    pipe.del(keys).ignore();
                } else {
                    for member in &pending {
                        let (id, raw) = split_member(member)?;
                        let record: AuditRecord = parse(raw)?;
                        pipe.set(self.key("audit", id), raw).ignore();
                        pipe.zrem(&index, member.as_str()).ignore();
                        pipe.zadd(&index, id, 0).ignore();
                        if let Some(user) = &record.user_id {
                            let by_user = self.key("audit_user", user);
                            pipe.zrem(&by_user, index_member(id, event)).ignore();
                            pipe.zadd(&by_user, id, 0).ignore();
                        }
                    }
                }
                let _: () = pipe.query_async(&mut self.conn()).await?;
            }
        }
        Ok(())
    }

    /// Deletes every key of the given kinds, in batches.
    async fn delete_kinds(&self, kinds: &[&str]) -> StorageResult<()> {
        // One pass over the prefix's keys, a thousand a step; the kind is the name's first
        // part after the prefix.
        let own = format!("{}:", self.prefix);
        let options =
            ::redis::ScanOptions::default().with_pattern(format!("{own}*")).with_count(1000);
        let mut conn = self.conn();
        let mut keys = Vec::new();
        {
            let mut iter = conn.scan_options::<String>(options).await?;
            while let Some(key) = iter.next_item().await {
                let key = key?;
                let kind = key.strip_prefix(&own).and_then(|rest| rest.split(':').next());
                if kind.is_some_and(|k| kinds.contains(&k)) {
                    keys.push(key);
                }
            }
        }
        for chunk in keys.chunks(500) {
            let _: () = self.conn().del(chunk).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Migrations for RedisStorage {
    async fn migrate_up(&self) -> StorageResult<()> {
        let current = self.schema_version().await?;
        if current < SCHEMA_VERSION {
            if current == 3 {
                // Freed in the background: the index may be large.
                let _: () = ::redis::cmd("UNLINK")
                    .arg(self.audit_all_key())
                    .query_async(&mut self.conn())
                    .await?;
            }
            if (3..5).contains(&current) {
                self.convert_audit_records(true).await?;
            }
            if (1..6).contains(&current) {
                self.grant_account_scope().await?;
            }
            let _: () = self.conn().set(self.key("meta", "schema_version"), SCHEMA_VERSION).await?;
        }
        Ok(())
    }

    /// Reverting a version deletes the keys of the kinds it introduced.
    async fn migrate_down(&self, steps: usize) -> StorageResult<()> {
        let mut version = self.schema_version().await?;
        let target = version.saturating_sub(i64::try_from(steps).unwrap_or(i64::MAX));
        for step in 1..=steps {
            let Some((_, _, kinds)) = LAYOUT.iter().find(|(v, _, _)| *v == version) else {
                break;
            };
            if !kinds.is_empty() {
                self.delete_kinds(kinds).await?;
            }
            // Layouts 3 and 4 read records from keys of their own; a revert past them
            // deletes the audit log anyway.
            if version == 5 && target >= 3 {
                self.convert_audit_records(false).await?;
            }
            // Only a revert that stops at layout 3 reads the index; reverting past it
            // deletes the audit log.
            if version == 4 && step == steps {
                self.rebuild_audit_all().await?;
            }
            version -= 1;
            if version > 0 {
                let _: () = self.conn().set(self.key("meta", "schema_version"), version).await?;
            }
        }
        Ok(())
    }

    async fn migration_status(&self) -> StorageResult<Vec<MigrationStatus>> {
        let current = self.schema_version().await?;
        Ok(LAYOUT
            .iter()
            .map(|(version, description, _)| MigrationStatus {
                version: *version,
                description: (*description).to_owned(),
                applied: current >= *version,
                // A layout newer than this binary knows cannot be vouched for.
                checksum_ok: current <= SCHEMA_VERSION,
            })
            .collect())
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
