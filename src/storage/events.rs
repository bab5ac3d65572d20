//! Records of the audit log and of webhook delivery.

use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::clock::Millis;

/// One audit-log record. `details` is a JSON object as text.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct AuditRecord {
    /// UUIDv7: ordering by id is ordering by time.
    pub id: String,
    pub at: Millis,
    pub event: String,
    pub actor: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub details: String,
}

/// A page request of the audit log, newest first (or oldest first when `ascending`).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub user_id: Option<String>,
    pub event: Option<String>,
    /// Inclusive lower bound of `at`.
    pub since: Option<Millis>,
    /// Exclusive upper bound of `at`.
    pub until: Option<Millis>,
    /// The last id of the previous page: only records past it in the page order.
    pub cursor: Option<String>,
    pub ascending: bool,
    pub limit: u32,
}

impl AuditQuery {
    /// Whether a record passes the filters (for backends that filter after an index scan).
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.user_id.as_ref().is_none_or(|u| r.user_id.as_ref() == Some(u))
            && self.event.as_ref().is_none_or(|e| &r.event == e)
            && self.since.is_none_or(|s| r.at >= s)
            && self.until.is_none_or(|u| r.at < u)
            && self
                .cursor
                .as_ref()
                .is_none_or(|c| if self.ascending { r.id > *c } else { r.id < *c })
    }
}

/// A webhook subscription. `secret` is the Standard Webhooks `whsec_…` signing secret.
#[derive(Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct WebhookSubscription {
    pub id: String,
    pub url: String,
    /// Event types, space separated.
    pub events: String,
    pub secret: String,
    pub created_at: Millis,
}

impl std::fmt::Debug for WebhookSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSubscription")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .finish()
    }
}

/// An event to fan out to subscriptions.
#[derive(Debug, Clone)]
pub struct WebhookEvent<'a> {
    /// The message id (`webhook-id`), the same for every subscription and every retry.
    pub id: &'a str,
    pub event: &'a str,
    /// The JSON body to send.
    pub payload: &'a str,
    pub now: Millis,
    /// Deliver to this subscription only, whatever its event types (test events).
    pub only_subscription: Option<&'a str>,
}

/// Delivery states.
pub mod delivery_status {
    pub const PENDING: &str = "pending";
    pub const DELIVERED: &str = "delivered";
    pub const FAILED: &str = "failed";
}

/// One event on its way to one subscription.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub id: String,
    pub subscription_id: String,
    pub event_id: String,
    pub event: String,
    pub payload: String,
    pub status: String,
    /// Attempts started so far (claiming a delivery starts one).
    pub attempts: i32,
    pub next_attempt_at: Option<Millis>,
    pub locked_until: Option<Millis>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
}

/// One attempt of a delivery, as logged.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct WebhookAttempt {
    pub delivery_id: String,
    pub attempt: i32,
    pub at: Millis,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// How an attempt ended and what happens next.
#[derive(Debug, Clone)]
pub struct AttemptResult<'a> {
    pub attempt: &'a WebhookAttempt,
    /// `delivered`, `failed` (no more retries) or `pending` (retry at `next_attempt_at`).
    pub status: &'a str,
    pub next_attempt_at: Option<Millis>,
}

/// How far behind webhook delivery is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WebhookBacklog {
    /// Deliveries waiting (due or scheduled for a retry).
    pub pending: u64,
    /// Deliveries that gave up.
    pub failed: u64,
}
