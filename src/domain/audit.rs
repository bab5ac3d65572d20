//! The audit log. Records are queued in memory and written in batches by one background
//! writer, so the token hot paths pay a channel send, not a storage round trip; a clean
//! shutdown drains the queue before the process ends. Events that webhooks subscribe to are
//! also put on the durable webhook queue before the request that caused them answers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::webhooks::Webhooks;
use crate::clock::{Clock, Millis, rfc3339};
use crate::metrics::Metrics;
use crate::storage::{AuditRecord, Storage, StorageResult};

pub use crate::audit_event::{events, id_floor};
pub use crate::request::{REQUEST, RequestMeta};

/// An audit record being built.
#[derive(Debug, Clone)]
pub struct Entry {
    event: &'static str,
    actor: Option<String>,
    user_id: Option<String>,
    session_id: Option<String>,
    client_id: Option<String>,
    /// The details as a JSON object being written: `{` and each `"key":value,` so far.
    details: Vec<u8>,
}

/// An empty details object being written, with room for the usual few details.
fn details_start() -> Vec<u8> {
    let mut details = Vec::with_capacity(128);
    details.push(b'{');
    details
}

/// Starts a record of `event`.
pub fn entry(event: &'static str) -> Entry {
    Entry {
        event,
        actor: None,
        user_id: None,
        session_id: None,
        client_id: None,
        details: details_start(),
    }
}

impl Entry {
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }
    pub fn user(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }
    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }
    pub fn client(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }
    /// Adds `key` to the details; each key is given once. The value is written straight
    /// into the record's JSON, without a map or a value of its own in between.
    pub fn detail(mut self, key: &str, value: impl serde::Serialize) -> Self {
        let start = self.details.len();
        crate::encoding::json_string(&mut self.details, key);
        self.details.push(b':');
        match serde_json::to_writer(&mut self.details, &value) {
            Ok(()) => self.details.push(b','),
            // Only a value that is not JSON (a map with other than text keys) can fail: the
            // detail is left out rather than the record.
            Err(_) => self.details.truncate(start),
        }
        self
    }

    /// The finished record at `at`, with the current request's id, address and agent.
    pub fn at(self, at: Millis) -> AuditRecord {
        let meta = REQUEST.try_with(Clone::clone).unwrap_or_default();
        let secs = u64::try_from(at.div_euclid(1000)).unwrap_or_default();
        let nanos = u32::try_from(at.rem_euclid(1000) * 1_000_000).unwrap_or_default();
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos);
        AuditRecord {
            // Ids carry the record's own time, so id order is time order even under a test clock.
            id: super::id_text(Uuid::new_v7(ts)),
            at,
            event: self.event.to_owned(),
            actor: self.actor,
            user_id: self.user_id,
            session_id: self.session_id,
            client_id: self.client_id,
            ip: meta.ip,
            user_agent: meta.user_agent,
            request_id: meta.request_id,
            details: finish_object(self.details),
        }
    }
}

/// Closes a JSON object written as `{` and `"key":value,` pairs.
fn finish_object(mut object: Vec<u8>) -> String {
    match object.last_mut() {
        Some(last @ b',') => *last = b'}',
        _ => object.push(b'}'),
    }
    // Only serde_json wrote after the opening brace, and it writes UTF-8.
    String::from_utf8(object).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A record as the API and exports show it.
pub fn record_json(r: &AuditRecord) -> Value {
    json!({
        "id": r.id,
        "at": rfc3339(r.at),
        "event": r.event,
        "actor": r.actor,
        "user_id": r.user_id,
        "session_id": r.session_id,
        "client_id": r.client_id,
        "ip": r.ip,
        "user_agent": r.user_agent,
        "request_id": r.request_id,
        "details": serde_json::from_str::<Value>(&r.details).unwrap_or(Value::Null),
    })
}

/// The details that describe a person rather than an event: an account name, a browser's
/// agent, a device's name and platform.
const PERSONAL_DETAILS: [&str; 4] = ["username", "user_agent", "name", "platform"];

/// `record` of an erased user, under `pseudonym`: the user and (when it was them) the actor
/// become the pseudonym, and the address, the agent and the personal details go. The event,
/// its time, session, client and request stay, so the security trail still reads whole.
pub fn pseudonymised(mut record: AuditRecord, user_id: &str, pseudonym: &str) -> AuditRecord {
    let own = |actor: &str| actor == user_id || actor.strip_prefix("user:") == Some(user_id);
    if record.actor.as_deref().is_some_and(own) {
        record.actor = Some(format!("user:{pseudonym}"));
    }
    record.user_id = Some(pseudonym.to_owned());
    record.ip = None;
    record.user_agent = None;
    if let Ok(Value::Object(mut details)) = serde_json::from_str::<Value>(&record.details) {
        let before = details.len();
        details.retain(|key, _| !PERSONAL_DETAILS.contains(&key.as_str()));
        if details.len() != before {
            record.details = Value::Object(details).to_string();
        }
    }
    record
}

/// How many records one rewrite of an erased user's audit records holds.
const ERASURE_PAGE: u32 = 500;

/// How long the writer waits for more records before writing a batch.
const LINGER: Duration = Duration::from_millis(50);

// Nearly every message is a record: boxing it would cost an allocation per record to save
// the space of the rare flush.
#[allow(clippy::large_enum_variant)]
enum Message {
    /// A record, and whom to tell once it is stored (a request waiting to answer).
    Record(AuditRecord, Option<oneshot::Sender<()>>),
    Flush(oneshot::Sender<()>),
}

/// The audit log of a running server.
pub struct Audit {
    storage: Arc<dyn Storage>,
    sender: mpsc::Sender<Message>,
    clock: Arc<dyn Clock>,
    webhooks: Arc<Webhooks>,
    metrics: Arc<Metrics>,
    /// Each event type's counter, resolved once: looking a label up costs more than the
    /// rest of queueing a record.
    counted: Vec<(&'static str, prometheus::IntCounter)>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Event types not written (the operator's choice, for volume).
    excluded: Vec<String>,
    /// Requests wait until their records are stored.
    durable: bool,
}

impl Audit {
    /// Starts the background writer.
    pub fn start(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        webhooks: Arc<Webhooks>,
        metrics: Arc<Metrics>,
        excluded: &[String],
        durable: bool,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(65_536);
        let writer = tokio::spawn(write_batches(storage.clone(), receiver));
        let excluded = excluded.to_vec();
        let counted = events::ALL
            .iter()
            .map(|&event| (event, metrics.audit_events.with_label_values(&[event])))
            .collect();
        Self {
            storage,
            sender,
            clock,
            webhooks,
            metrics,
            counted,
            writer: Mutex::new(Some(writer)),
            excluded,
            durable,
        }
    }

    /// Records an event. When webhooks subscribe to its type, it is on the durable webhook
    /// queue when this returns.
    pub async fn record(&self, entry: Entry) -> StorageResult<()> {
        let published = super::webhooks::EVENTS.contains(&entry.event);
        let excluded = self.excluded.iter().any(|e| e == entry.event);
        if excluded && !published {
            return Ok(());
        }
        let record = entry.at(self.clock.now_ms());
        if published {
            self.webhooks.publish(&record).await?;
        }
        if excluded {
            return Ok(());
        }
        match self.counted.iter().find(|(event, _)| *event == record.event) {
            Some((_, counter)) => counter.inc(),
            None => self.metrics.audit_events.with_label_values(&[&record.event]).inc(),
        }
        // Inside a request, the request answers once the record is stored (see
        // `request::AUDIT_RECEIPT`); elsewhere (background jobs) nothing waits for it.
        let in_request = self.durable && crate::request::AUDIT_RECEIPT.try_with(|_| ()).is_ok();
        let (stored, receipt) = if in_request {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        // The queue nearly always has room, and trying first spares a wait's bookkeeping; a
        // full queue waits: records are never dropped.
        let queued = match self.sender.try_send(Message::Record(record, stored)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.sender.send(message).await.is_ok()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        };
        if !queued {
            tracing::error!("audit writer has stopped; record lost");
        } else if let Some(receipt) = receipt {
            // Records of one request are queued in order and batches are stored in order,
            // so the last record's receipt covers the earlier ones.
            let _ = crate::request::AUDIT_RECEIPT.try_with(|r| r.replace(Some(receipt)));
        }
        Ok(())
    }

    /// Records matching `query` (those still queued are not yet among them).
    pub async fn query(
        &self,
        query: &crate::storage::AuditQuery,
    ) -> StorageResult<Vec<AuditRecord>> {
        self.storage.query_audit(query).await
    }

    /// Rewrites every stored record of `user_id` as [`pseudonymised`] under `pseudonym`,
    /// those still queued included; returns how many.
    pub async fn pseudonymise_user(&self, user_id: &str, pseudonym: &str) -> StorageResult<u64> {
        self.flush().await;
        let mut query = crate::storage::AuditQuery {
            user_id: Some(user_id.to_owned()),
            ascending: true,
            limit: ERASURE_PAGE,
            ..Default::default()
        };
        let mut rewritten = 0;
        loop {
            let page = self.storage.query_audit(&query).await?;
            let Some(last) = page.last() else { break };
            query.cursor = Some(last.id.clone());
            let records: Vec<AuditRecord> =
                page.into_iter().map(|r| pseudonymised(r, user_id, pseudonym)).collect();
            self.storage.rewrite_audit(user_id, &records).await?;
            rewritten += records.len() as u64;
        }
        Ok(rewritten)
    }

    /// Waits until every record queued so far is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.sender.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stores what is queued and stops the writer (at shutdown, after the last request).
    pub async fn close(&self) {
        self.flush().await;
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            writer.abort();
            let _ = writer.await;
        }
    }
}

/// The most records in one batch. A batch's write can take tens of milliseconds however
/// small its CPU cost (on PostgreSQL, a large write waits about 40 ms for a delayed TCP
/// acknowledgement, since the driver leaves Nagle's algorithm on), so the writer's rate is
/// about `BATCH * IN_FLIGHT` per such wait: 512 capped it near 20,000 records/s, below what
/// one instance issues, and requests then waited for room in the queue.
const BATCH: usize = 4096;

/// The most batches being written at once: one batch's commit waits on the storage's
/// durable write, and a writer that waited for each in turn would fall behind a busy
/// server, whose requests would then wait for room in the queue.
const IN_FLIGHT: usize = 2;

/// Writes queued records in batches of up to [`BATCH`], up to [`IN_FLIGHT`] at once,
/// retrying a failed batch until storage takes it: a record is dropped only if the process
/// dies. A flush is answered once its batch and every batch before it are stored.
async fn write_batches(storage: Arc<dyn Storage>, mut receiver: mpsc::Receiver<Message>) {
    let mut messages = Vec::with_capacity(BATCH);
    let mut in_flight: VecDeque<tokio::task::JoinHandle<Vec<oneshot::Sender<()>>>> =
        VecDeque::new();
    loop {
        let room = in_flight.len() < IN_FLIGHT;
        let oldest = async {
            match in_flight.front_mut() {
                Some(batch) => batch.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // The oldest batch is stored: answer its flushes (every earlier batch is, too).
            stored = oldest => {
                in_flight.pop_front();
                answer(stored);
            }
            taken = receiver.recv_many(&mut messages, BATCH), if room => {
                if taken == 0 {
                    break;
                }
                // Linger briefly so a busy server writes a few large batches rather than
                // many small ones: each batch is one commit. Not when a request waits for
                // one of them: its batch grows while the batch before it is written.
                let awaited = messages.iter().any(|m| {
                    matches!(m, Message::Record(_, Some(_)) | Message::Flush(_))
                });
                if messages.len() < BATCH && !awaited {
                    tokio::time::sleep(LINGER).await;
                    while messages.len() < BATCH {
                        match receiver.try_recv() {
                            Ok(message) => messages.push(message),
                            Err(_) => break,
                        }
                    }
                }
                let mut batch = Vec::with_capacity(messages.len());
                let mut waiting = Vec::new();
                for message in messages.drain(..) {
                    match message {
                        Message::Record(r, stored) => {
                            batch.push(r);
                            waiting.extend(stored);
                        }
                        Message::Flush(done) => waiting.push(done),
                    }
                }
                in_flight.push_back(tokio::spawn(store(storage.clone(), batch.into(), waiting)));
            }
        }
    }
    for batch in in_flight {
        answer(batch.await);
    }
}

/// Stores one batch, retrying until storage takes it; hands back the flushes it answers.
async fn store(
    storage: Arc<dyn Storage>,
    records: Arc<[AuditRecord]>,
    waiting: Vec<oneshot::Sender<()>>,
) -> Vec<oneshot::Sender<()>> {
    let mut delay = Duration::from_millis(50);
    while !records.is_empty() {
        match storage.append_audit(records.clone()).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, records = records.len(), "audit write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    waiting
}

fn answer(stored: Result<Vec<oneshot::Sender<()>>, tokio::task::JoinError>) {
    for done in stored.unwrap_or_default() {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_floor_orders_like_time() {
        for at in [0, 1, 999, 1_700_000_000_123, 1_700_000_065_535, 1_700_000_065_536] {
            let id = entry(events::KEY_ROTATED).at(at).id;
            assert!(id_floor(at) <= id, "{at}: {id}");
            assert!(id < id_floor(at + 1), "{at}: {id}");
            assert!(id_floor(at) < id_floor(at + 1));
        }
        assert_eq!(id_floor(-5), id_floor(0));
    }

    #[test]
    fn a_pseudonymised_record_keeps_the_event_and_loses_the_person() {
        let record = AuditRecord {
            ip: Some("203.0.113.9".into()),
            user_agent: Some("Firefox".into()),
            ..entry(events::SESSION_CREATED)
                .actor("user:u1")
                .user("u1")
                .session("s1")
                .client("c1")
                .detail("device_id", "d1")
                .detail("name", "Ann's phone")
                .detail("platform", "iOS")
                .detail("user_agent", "Firefox")
                .detail("username", "ann")
                .at(5)
        };
        let p = pseudonymised(record.clone(), "u1", "erased-1");
        assert_eq!(
            (p.id.as_str(), p.at, p.event.as_str()),
            (record.id.as_str(), 5, "session.created")
        );
        assert_eq!(p.actor.as_deref(), Some("user:erased-1"));
        assert_eq!(p.user_id.as_deref(), Some("erased-1"));
        assert_eq!((p.session_id.as_deref(), p.client_id.as_deref()), (Some("s1"), Some("c1")));
        assert_eq!((p.ip, p.user_agent), (None, None));
        assert_eq!(p.details, r#"{"device_id":"d1"}"#);
        // Another actor (an admin acting on the user) stays who they were.
        let by_admin = entry(events::USER_ROLE_CHANGED).actor("user:admin").user("u1").at(6);
        let p = pseudonymised(by_admin, "u1", "erased-1");
        assert_eq!(p.actor.as_deref(), Some("user:admin"));
        assert_eq!(p.details, "{}");
    }

    #[test]
    fn details_are_one_json_object_in_the_order_given() {
        assert_eq!(entry(events::KEY_ROTATED).at(0).details, "{}");
        let not_json = std::collections::BTreeMap::from([((1, 2), 3)]);
        let details = entry(events::TOKEN_ISSUED)
            .detail("scope", "read \"all\"\n\u{e9}")
            .detail("grace_retry", true)
            .detail("skipped", not_json)
            .detail("failures", 5)
            .detail("reason", None::<String>)
            .at(0)
            .details;
        assert_eq!(
            details,
            r#"{"scope":"read \"all\"\né","grace_retry":true,"failures":5,"reason":null}"#
        );
        let parsed: Value = serde_json::from_str(&details).expect("JSON");
        assert_eq!(parsed["scope"], "read \"all\"\n\u{e9}");
    }
}
