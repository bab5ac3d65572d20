//! Webhooks: subscriptions, the signed payloads (Standard Webhooks: `webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`),
//! and the deliverer that works the durable queue: bounded parallel deliveries with a
//! timeout, retried with exponential backoff and full jitter, then marked failed.
//!
//! Scheduling uses the wall clock (not the injectable one): retries are real waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use rand::Rng;
use reqwest::Url;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::{Clock, Millis, SystemClock, rfc3339};
use crate::config::WebhookConfig;
use crate::metrics::Metrics;
use crate::storage::{
    AttemptResult, AuditRecord, Storage, StorageError, StorageResult, WebhookAttempt,
    WebhookDelivery, WebhookEvent, WebhookSubscription, delivery_status,
};

/// The events a subscription may ask for.
pub const EVENTS: [&str; 5] = [
    "session.created",
    "session.revoked",
    "token.reuse_detected",
    "device.registered",
    "user.locked",
];

/// The event `POST /admin/webhooks/{id}/test` sends.
pub const TEST_EVENT: &str = "webhook.test";

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Webhook subscriptions and delivery.
pub struct Webhooks {
    storage: Arc<dyn Storage>,
    settings: WebhookConfig,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    /// Seals signing secrets at rest with the master key.
    sealer: Arc<super::keys::Sealer>,
}

/// What a subscription's sealed secret is bound to.
fn secret_label(subscription_id: &str) -> String {
    format!("webhook:{subscription_id}")
}

type HmacSha256 = Hmac<Sha256>;

/// The Standard Webhooks signature of a message.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String, String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| "the signing secret is not base64".to_owned())?;
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

impl Webhooks {
    pub fn new(
        storage: Arc<dyn Storage>,
        settings: WebhookConfig,
        metrics: Arc<Metrics>,
        ca_file: Option<&std::path::Path>,
        sealer: Arc<super::keys::Sealer>,
    ) -> anyhow::Result<Self> {
        let http = crate::net::outbound_client(
            settings.timeout,
            concat!("atoms-auth-webhooks/", env!("CARGO_PKG_VERSION")),
            settings.allow_private_targets,
            ca_file,
        )?;
        Ok(Self { storage, settings, http, metrics, sealer })
    }

    /// Refuses non-http(s) URLs and, unless allowed, hosts that are or resolve to
    /// special-purpose addresses (checked again at each connection).
    async fn check_target(&self, url: &str) -> Result<Url, WebhookError> {
        crate::net::check_url(url, self.settings.allow_private_targets)
            .await
            .map_err(|e| WebhookError::Invalid(e.to_string()))
    }

    /// Creates a subscription with a new signing secret.
    pub async fn create(
        &self,
        url: &str,
        events: &[String],
        now: Millis,
    ) -> Result<WebhookSubscription, WebhookError> {
        if events.is_empty() {
            return Err(WebhookError::Invalid("events must name at least one event".into()));
        }
        if let Some(unknown) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(WebhookError::Invalid(format!(
                "unknown event {unknown}; known: {}",
                EVENTS.join(", ")
            )));
        }
        if url.len() > 2048 {
            return Err(WebhookError::Invalid("the url is too long".into()));
        }
        self.check_target(url).await?;
        let mut secret = [0u8; 32];
        rand::rng().fill(&mut secret);
        let mut unique: Vec<&str> = Vec::new();
        for e in events {
            if !unique.contains(&e.as_str()) {
                unique.push(e);
            }
        }
        let id = super::id_text(Uuid::now_v7());
        let secret = format!("whsec_{}", STANDARD.encode(secret));
        let stored = WebhookSubscription {
            secret: self.sealer.seal_text(&secret_label(&id), &secret)?,
            id,
            url: url.to_owned(),
            events: unique.join(" "),
            created_at: now,
        };
        self.storage.create_webhook(&stored).await?;
        // The caller gets the secret itself, once.
        Ok(WebhookSubscription { secret, ..stored })
    }

    /// Queues an audit record's event for its subscribers.
    pub async fn publish(&self, record: &AuditRecord) -> StorageResult<()> {
        let mut data = serde_json::from_str::<Value>(&record.details).unwrap_or_else(|_| json!({}));
        for (key, value) in [
            ("user_id", &record.user_id),
            ("session_id", &record.session_id),
            ("client_id", &record.client_id),
            ("ip", &record.ip),
        ] {
            if let Some(value) = value {
                data[key] = json!(value);
            }
        }
        let payload =
            json!({ "type": record.event, "timestamp": rfc3339(record.at), "data": data });
        let event = WebhookEvent {
            id: &record.id,
            event: &record.event,
            payload: &payload.to_string(),
            now: SystemClock.now_ms(),
            only_subscription: None,
        };
        self.storage.enqueue_webhook(&event).await?;
        Ok(())
    }

    /// Queues a test event for one subscription; `None` when it does not exist.
    /// Every subscription.
    pub async fn list(&self) -> StorageResult<Vec<WebhookSubscription>> {
        self.storage.webhooks().await
    }

    pub async fn get(&self, id: &str) -> StorageResult<Option<WebhookSubscription>> {
        self.storage.webhook(id).await
    }

    /// Deletes a subscription and its deliveries; false when there was none.
    pub async fn delete(&self, id: &str) -> StorageResult<bool> {
        self.storage.delete_webhook(id).await
    }

    /// A subscription's newest deliveries with their attempts; `None` without such a
    /// subscription.
    pub async fn deliveries(
        &self,
        id: &str,
        limit: u32,
    ) -> StorageResult<Option<Vec<(WebhookDelivery, Vec<WebhookAttempt>)>>> {
        if self.storage.webhook(id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.storage.deliveries(id, limit).await?))
    }

    pub async fn send_test(&self, subscription_id: &str) -> StorageResult<Option<String>> {
        if self.storage.webhook(subscription_id).await?.is_none() {
            return Ok(None);
        }
        let now = SystemClock.now_ms();
        let id = super::id_text(Uuid::now_v7());
        let payload = json!({
            "type": TEST_EVENT,
            "timestamp": rfc3339(now),
            "data": { "subscription_id": subscription_id },
        });
        let event = WebhookEvent {
            id: &id,
            event: TEST_EVENT,
            payload: &payload.to_string(),
            now,
            only_subscription: Some(subscription_id),
        };
        self.storage.enqueue_webhook(&event).await?;
        Ok(Some(id))
    }

    /// Works the queue until `stop`, then lets in-flight deliveries finish.
    pub async fn deliver_until(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let worked = match self.deliver_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery pass failed");
                    0
                }
            };
            if worked == self.settings.concurrency && !stop.is_cancelled() {
                continue; // a full batch: more may be due
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// Claims and delivers one batch of due deliveries; returns how many.
    pub async fn deliver_due(&self) -> StorageResult<usize> {
        let now = SystemClock.now_ms();
        let lease = now + self.settings.timeout.as_millis() as Millis + 30_000;
        let claimed =
            self.storage.claim_deliveries(now, lease, self.settings.concurrency as u32).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let subscriptions: HashMap<String, WebhookSubscription> =
            self.storage.webhooks().await?.into_iter().map(|s| (s.id.clone(), s)).collect();
        let count = claimed.len();
        futures::stream::iter(claimed)
            .for_each_concurrent(self.settings.concurrency, |d| {
                let subscription = subscriptions.get(&d.subscription_id);
                async move {
                    if let Err(e) = self.deliver(d, subscription).await {
                        tracing::warn!(error = %e, "recording a webhook attempt failed");
                    }
                }
            })
            .await;
        Ok(count)
    }

    async fn deliver(
        &self,
        d: WebhookDelivery,
        subscription: Option<&WebhookSubscription>,
    ) -> StorageResult<()> {
        let started = Instant::now();
        let at = SystemClock.now_ms();
        let (status_code, error, permanent) = match subscription {
            None => (None, Some("the subscription no longer exists".to_owned()), true),
            Some(s) => self.post(s, &d).await,
        };
        let delivered = status_code.is_some_and(|c| (200..300).contains(&c));
        let attempt = WebhookAttempt {
            delivery_id: d.id.clone(),
            attempt: d.attempts,
            at,
            status_code,
            error,
            duration_ms: started.elapsed().as_millis() as i64,
        };
        let (status, next) = if delivered {
            (delivery_status::DELIVERED, None)
        } else if permanent || d.attempts >= self.settings.max_attempts {
            (delivery_status::FAILED, None)
        } else {
            (delivery_status::PENDING, Some(SystemClock.now_ms() + self.backoff(d.attempts)))
        };
        tracing::debug!(delivery = %d.id, attempt = d.attempts, status, ?status_code, "webhook attempt");
        let outcome = match status {
            delivery_status::DELIVERED => "delivered",
            delivery_status::FAILED => "failed",
            _ => "retry",
        };
        self.metrics.webhook_deliveries.with_label_values(&[outcome]).inc();
        self.storage
            .finish_attempt(&AttemptResult { attempt: &attempt, status, next_attempt_at: next })
            .await
    }

    /// Sends one attempt: (status code, error, whether retrying is pointless).
    async fn post(
        &self,
        s: &WebhookSubscription,
        d: &WebhookDelivery,
    ) -> (Option<i32>, Option<String>, bool) {
        if let Err(e) = self.check_target(&s.url).await {
            return (None, Some(e.to_string()), true);
        }
        let timestamp = SystemClock.now_ms() / 1000;
        let secret = match self.sealer.open_text(&secret_label(&s.id), &s.secret) {
            Ok(secret) => secret,
            Err(e) => return (None, Some(e.to_string()), true),
        };
        let signature = match sign(&secret, &d.event_id, timestamp, &d.payload) {
            Ok(sig) => sig,
            Err(e) => return (None, Some(e), true),
        };
        let sent = self
            .http
            .post(&s.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.payload.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let code = response.status().as_u16();
                let error = (!response.status().is_success()).then(|| format!("HTTP {code}"));
                // 410 Gone: the receiver asks not to be sent this again.
                (Some(i32::from(code)), error, code == 410)
            }
            Err(e) => (
                None,
                Some(if e.is_timeout() { "timed out".to_owned() } else { e.to_string() }),
                false,
            ),
        }
    }

    /// Exponential backoff with full jitter: a random delay in [d/2, d] where d doubles each
    /// attempt up to the maximum.
    fn backoff(&self, attempts: i32) -> Millis {
        let exponent = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(30);
        let base = self.settings.retry_base.as_millis() as u64;
        let max = self.settings.retry_max.as_millis() as u64;
        let delay = base.saturating_mul(1u64 << exponent).min(max).max(1);
        rand::rng().random_range(delay / 2..=delay) as Millis
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_follows_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).expect("sign");
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
