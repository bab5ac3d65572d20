//! The audit log and the webhook queue on Redis. Audit records are indexed per event type and
//! per user in sorted sets of equal scores ordered by member, the UUIDv7 id, so that a
//! lexicographic range is a time range and a cursor. Deliveries wait in a sorted set scored
//! by when they are due; claiming one moves its score to the end of its lease.

use std::collections::HashMap;

use ::redis::AsyncCommands;
use async_trait::async_trait;

use super::{Fields, RedisStorage, field, optional};
use crate::audit_event::id_floor;
use crate::storage::*;

fn delivery_from_map(map: &Fields) -> StorageResult<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: field(map, "id")?,
        subscription_id: field(map, "subscription_id")?,
        event_id: field(map, "event_id")?,
        event: field(map, "event")?,
        payload: field(map, "payload")?,
        status: field(map, "status")?,
        attempts: field(map, "attempts")?,
        next_attempt_at: optional(map, "next_attempt_at"),
        locked_until: optional(map, "locked_until"),
        last_status_code: optional(map, "last_status_code"),
        last_error: optional(map, "last_error"),
        created_at: field(map, "created_at")?,
        finished_at: optional(map, "finished_at"),
    })
}

fn json<T: serde::Serialize>(value: &T) -> StorageResult<String> {
    serde_json::to_string(value).map_err(|e| StorageError::Corrupt(e.to_string()))
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(raw: &str) -> StorageResult<T> {
    serde_json::from_str(raw).map_err(|e| StorageError::Corrupt(e.to_string()))
}

#[async_trait]
impl AuditStore for RedisStorage {
    async fn append_audit(&self, records: Arc<[AuditRecord]>) -> StorageResult<()> {
        // A batch is a few commands, not a few per record: one ZADD per event type and per
        // user among them. A record lives inside its event's index (layout 5), so it has no
        // key of its own; the user's index names the record's id and event.
        let mut member = Vec::with_capacity(1024);
        for chunk in records.chunks(500) {
            let mut indexes: HashMap<(&str, &str), ::redis::Cmd> = HashMap::new();
            for r in chunk {
                write_event_member(&mut member, r)?;
                let user = r.user_id.as_deref().map(|u| (u, index_member(&r.id, &r.event)));
                let members = std::iter::once(("audit_event", r.event.as_str(), &member[..]))
                    .chain(user.as_ref().map(|(u, m)| ("audit_user", *u, m.as_bytes())));
                for (kind, name, m) in members {
                    let zadd = indexes.entry((kind, name)).or_insert_with(|| {
                        let mut zadd = ::redis::cmd("ZADD");
                        zadd.arg(self.key(kind, name));
                        zadd
                    });
                    zadd.arg(0).arg(m);
                }
            }
            let mut pipe = ::redis::pipe();
            for zadd in indexes.into_values() {
                pipe.add_command(zadd).ignore();
            }
            let _: () = pipe.query_async(&mut self.conn()).await?;
        }
        Ok(())
    }

    async fn query_audit(&self, q: &AuditQuery) -> StorageResult<Vec<AuditRecord>> {
        // One index, or without a filter every event's, merged in id order.
        let (indexes, by_user): (Vec<String>, bool) = match (&q.user_id, &q.event) {
            (Some(user_id), _) => (vec![self.key("audit_user", user_id)], true),
            (None, Some(event)) => (vec![self.key("audit_event", event)], false),
            (None, None) => (
                crate::audit_event::events::ALL
                    .iter()
                    .map(|event| self.key("audit_event", event))
                    .collect(),
                false,
            ),
        };
        // Lexicographic bounds on members, which start with their record's id: "[x" includes
        // x, "(x" excludes it, and "(x\x7f" excludes every member of id x.
        let mut low = q.since.map(|s| format!("[{}", id_floor(s))).unwrap_or_else(|| "-".into());
        let mut high = q.until.map(|u| format!("({}", id_floor(u))).unwrap_or_else(|| "+".into());
        let past = |id: &str, ascending: bool| {
            if ascending { format!("({id}{PAST_ID}") } else { format!("({id}") }
        };
        if let Some(cursor) = &q.cursor {
            if q.ascending {
                if low == "-" || cursor.as_str() >= &low[1..] {
                    low = past(cursor, true);
                }
            } else if high == "+" || cursor.as_str() < &high[1..] {
                high = past(cursor, false);
            }
        }
        let want = q.limit as usize;
        let page = (want * 2).clamp(50, 1000);
        let mut found = Vec::new();
        while found.len() < want {
            let (command, first, second) = if q.ascending {
                ("ZRANGEBYLEX", &low, &high)
            } else {
                ("ZREVRANGEBYLEX", &high, &low)
            };
            let mut pipe = ::redis::pipe();
            for index in &indexes {
                pipe.cmd(command).arg(index).arg(first).arg(second).arg("LIMIT").arg(0).arg(page);
            }
            let lists: Vec<Vec<String>> = pipe.query_async(&mut self.conn()).await?;
            // Each list is its index's next `page` members, so the first `page` of them all,
            // in page order, are the next `page` members of the merged order.
            let more = lists.iter().any(|members| members.len() == page);
            let mut members = lists.concat();
            members.sort_unstable();
            if !q.ascending {
                members.reverse();
            }
            members.truncate(page);
            let Some(last) = members.last() else { break };
            // The next page starts past the last record read.
            let next = past(split_member(last)?.0, q.ascending);
            if q.ascending {
                low = next;
            } else {
                high = next;
            }
            let records = if by_user {
                self.records_named(&members).await?
            } else {
                members.iter().map(|m| parse(split_member(m)?.1)).collect::<StorageResult<_>>()?
            };
            for record in records {
                if q.matches(&record) && found.len() < want {
                    found.push(record);
                }
            }
            if !more && members.len() < page {
                break;
            }
        }
        Ok(found)
    }

    /// Each record's member is replaced in its event index, and its user index entry moves
    /// to its new user, in one transaction.
    async fn rewrite_audit(&self, user_id: &str, records: &[AuditRecord]) -> StorageResult<()> {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let mut member = Vec::with_capacity(1024);
        for r in records {
            let events = self.key("audit_event", &r.event);
            pipe.zrembylex(&events, format!("[{}", r.id), format!("({}{PAST_ID}", r.id)).ignore();
            write_event_member(&mut member, r)?;
            pipe.zadd(&events, &member[..], 0).ignore();
            let named = index_member(&r.id, &r.event);
            pipe.zrem(self.key("audit_user", user_id), &named).ignore();
            if let Some(user) = &r.user_id {
                pipe.zadd(self.key("audit_user", user), &named, 0).ignore();
            }
        }
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }
}

/// Writes into `member` (cleared first) the member of `r`'s event index that holds it.
fn write_event_member(member: &mut Vec<u8>, r: &AuditRecord) -> StorageResult<()> {
    member.clear();
    member.extend_from_slice(r.id.as_bytes());
    member.push(MEMBER_SEPARATOR);
    serde_json::to_writer(&mut *member, r).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// What separates a record's id from the rest of an index member (below every id character,
/// so members sort as their ids do).
const MEMBER_SEPARATOR: u8 = b'\t';

/// Above every id character: `(id` + this excludes every member of id `id`.
pub(super) const PAST_ID: char = '\x7f';

/// An index member: the record's id, then its JSON (in its event's index) or its event (in
/// its user's index, naming the event index that holds it).
pub(super) fn index_member(id: &str, rest: &str) -> String {
    format!("{id}{}{rest}", MEMBER_SEPARATOR as char)
}

/// The record id a member starts with, in layout 5's form or as the bare id of layouts 3-4.
pub(super) fn member_id(member: &str) -> &str {
    member.split_once(MEMBER_SEPARATOR as char).map_or(member, |(id, _)| id)
}

/// An index member's id and the rest (the record's JSON, or in a user index its event).
pub(super) fn split_member(member: &str) -> StorageResult<(&str, &str)> {
    member
        .split_once(MEMBER_SEPARATOR as char)
        .ok_or_else(|| StorageError::Corrupt(format!("audit index member {member:?}")))
}

impl RedisStorage {
    /// The records that user index members name, in their order.
    async fn records_named(&self, members: &[String]) -> StorageResult<Vec<AuditRecord>> {
        let mut pipe = ::redis::pipe();
        for member in members {
            let (id, event) = split_member(member)?;
            pipe.cmd("ZRANGEBYLEX")
                .arg(self.key("audit_event", event))
                .arg(format!("[{id}"))
                .arg(format!("({id}{PAST_ID}"))
                .arg("LIMIT")
                .arg(0)
                .arg(1);
        }
        let found: Vec<Vec<String>> = pipe.query_async(&mut self.conn()).await?;
        // A record purged since its user's index was read is skipped.
        found.iter().flatten().map(|m| parse(split_member(m)?.1)).collect()
    }
}

#[async_trait]
impl WebhookStore for RedisStorage {
    async fn create_webhook(&self, w: &WebhookSubscription) -> StorageResult<()> {
        let created: Option<String> = ::redis::cmd("SET")
            .arg(self.key("webhook", &w.id))
            .arg(json(w)?)
            .arg("NX")
            .query_async(&mut self.conn())
            .await?;
        if created.is_none() {
            return Err(StorageError::Conflict("webhook"));
        }
        let _: () = self.conn().sadd(self.key("webhooks", "all"), &w.id).await?;
        Ok(())
    }

    async fn webhooks(&self) -> StorageResult<Vec<WebhookSubscription>> {
        let ids: Vec<String> = self.conn().smembers(self.key("webhooks", "all")).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key("webhook", id)).collect();
        let raws: Vec<Option<String>> = self.conn().mget(&keys).await?;
        let mut subs: Vec<WebhookSubscription> =
            raws.iter().flatten().map(|raw| parse(raw)).collect::<StorageResult<_>>()?;
        subs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(subs)
    }

    async fn webhook(&self, id: &str) -> StorageResult<Option<WebhookSubscription>> {
        let raw: Option<String> = self.conn().get(self.key("webhook", id)).await?;
        raw.map(|r| parse(&r)).transpose()
    }

    async fn delete_webhook(&self, id: &str) -> StorageResult<bool> {
        let done: i64 = self
            .scripts
            .delete_webhook
            .arg(self.script_prefix())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }

    async fn enqueue_webhook(&self, e: &WebhookEvent<'_>) -> StorageResult<u64> {
        Ok(self
            .scripts
            .enqueue_webhook
            .arg(self.script_prefix())
            .arg(e.id)
            .arg(e.event)
            .arg(e.payload)
            .arg(e.now)
            .arg(e.only_subscription.unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await?)
    }

    async fn claim_deliveries(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> StorageResult<Vec<WebhookDelivery>> {
        let claimed: Vec<Fields> = self
            .scripts
            .claim_deliveries
            .arg(self.script_prefix())
            .arg(now)
            .arg(lease_until)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await?;
        claimed.iter().map(delivery_from_map).collect()
    }

    async fn finish_attempt(&self, r: &AttemptResult<'_>) -> StorageResult<()> {
        let a = r.attempt;
        let _: i64 = self
            .scripts
            .finish_attempt
            .arg(self.script_prefix())
            .arg(&a.delivery_id)
            .arg(r.status)
            .arg(r.next_attempt_at.map(|n| n.to_string()).unwrap_or_default())
            .arg(a.status_code.map(|c| c.to_string()).unwrap_or_default())
            .arg(a.error.clone().unwrap_or_default())
            .arg(json(a)?)
            .arg(a.at)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn deliveries(
        &self,
        subscription_id: &str,
        limit: u32,
    ) -> StorageResult<Vec<(WebhookDelivery, Vec<WebhookAttempt>)>> {
        let ids: Vec<String> = self
            .conn()
            .zrevrange(self.key("webhook_deliveries", subscription_id), 0, limit as isize - 1)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in &ids {
            pipe.hgetall(self.key("delivery", id));
            pipe.lrange(self.key("delivery_attempts", id), 0, -1);
        }
        let rows: Vec<(Fields, Vec<String>)> = {
            let flat: Vec<::redis::Value> = pipe.query_async(&mut self.conn()).await?;
            let mut rows = Vec::with_capacity(ids.len());
            let mut values = flat.into_iter();
            while let (Some(hash), Some(list)) = (values.next(), values.next()) {
                let corrupt = |e: ::redis::ParsingError| StorageError::Corrupt(e.to_string());
                rows.push((
                    ::redis::from_redis_value(hash).map_err(corrupt)?,
                    ::redis::from_redis_value(list).map_err(corrupt)?,
                ));
            }
            rows
        };
        rows.iter()
            .filter(|(hash, _)| !hash.is_empty())
            .map(|(hash, attempts)| {
                let attempts = attempts.iter().map(|a| parse(a)).collect::<StorageResult<_>>()?;
                Ok((delivery_from_map(hash)?, attempts))
            })
            .collect()
    }

    async fn webhook_backlog(&self) -> StorageResult<WebhookBacklog> {
        let (pending, failed): (u64, u64) = ::redis::pipe()
            .zcard(self.key("deliveries_due", "all"))
            .zcard(self.key("deliveries_failed", "all"))
            .query_async(&mut self.conn())
            .await?;
        Ok(WebhookBacklog { pending, failed })
    }
}
