//! The versions of the Redis key layout and the conversions between them. Redis has no
//! schema: a version is the set of key kinds a binary reads and the shape of their values,
//! recorded under `meta:schema_version`. A conversion walks the keys it changes a page at a
//! time, so that no command blocks Redis for long, and is safe to run again when interrupted.
//! The conversions stay while databases written by older versions may still need them.

use ::redis::AsyncCommands;
use async_trait::async_trait;

use super::{RedisStorage, events};
use crate::storage::*;

/// The schema version this binary writes.
const SCHEMA_VERSION: i64 = 8;

/// Members per command when a layout change walks the audit indexes.
const LAYOUT_PAGE: usize = 1000;

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
    // Browser sign-in: signed-in browsers, consents and authorization codes.
    (7, "browser sign-in", &["browser", "user_browsers", "consents", "code"]),
    // The resources (RFC 8707) tokens may be issued for.
    (8, "resources", &["resource", "resources"]),
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
        // The kind is the name's first part after the prefix.
        let own = self.script_prefix();
        let keys: Vec<String> = self
            .scan(&format!("{own}*"))
            .await?
            .into_iter()
            .filter(|key| {
                let kind = key.strip_prefix(own.as_str()).and_then(|rest| rest.split(':').next());
                kind.is_some_and(|k| kinds.contains(&k))
            })
            .collect();
        for chunk in keys.chunks(500) {
            let _: () = self.conn().del(chunk).await?;
        }
        Ok(())
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
    pub(super) async fn scan(&self, pattern: &str) -> StorageResult<Vec<String>> {
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
