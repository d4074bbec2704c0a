//! Webhooks: the messages a saga's end sends to the endpoints an admin
//! subscribed, signed per the Standard Webhooks specification, delivered
//! at least once and in order per saga from an outbox written in the
//! transaction of the change (docs/integrations.md).
//!
//! The runner puts an [`OutboxEvent`] (made by [`saga_event`]) on the
//! transition that ends a saga; the store writes a delivery per subscribed
//! endpoint in that transaction. Every host runs a [`Deliverer`], which
//! claims due deliveries under leases (so hosts share the work without a
//! leader), signs and posts them through [`egress::Egress`], and records
//! each attempt: delivered on a 2xx, otherwise retried on the
//! [`WebhookConfig`] schedule until the retry window ends, when the
//! delivery fails and its endpoint is disabled.

pub mod egress;
pub mod signing;

use crate::config::WebhookConfig;
use crate::model::{
    AttemptOutcome, DueDelivery, OutboxEvent, SagaSummary, Timestamp, WebhookEvent,
};
use crate::secrets::SecretBox;
use crate::store::Store;
use egress::Egress;
use futures::StreamExt;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use signing::SigningKey;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The associated data an endpoint's secret is sealed with.
pub fn key_context(webhook_id: &str) -> String {
    format!("webhook:{webhook_id}")
}

/// The outbox event for a saga reaching a status (`summary` is the saga
/// after the change, `at` its time): the body is
/// `{"type", "timestamp", "data": summary}`.
pub fn saga_event(event: WebhookEvent, summary: &SagaSummary, at: Timestamp) -> OutboxEvent {
    let body = serde_json::json!({
        "type": event,
        "timestamp": at,
        "data": summary,
    });
    OutboxEvent {
        event,
        message_id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
        saga_id: Some(summary.id),
        kind: summary.kind.clone(),
        template: summary.template.clone(),
        body: body.to_string(),
    }
}

/// Sends the outbox's deliveries from this host.
pub struct Deliverer {
    store: Arc<dyn Store>,
    key: Option<Arc<SecretBox>>,
    config: WebhookConfig,
    egress: Egress,
    owner: String,
    /// Woken when this host wrote deliveries (the poll finds the others').
    wake: Arc<Notify>,
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn Store>,
        key: Option<Arc<SecretBox>>,
        config: WebhookConfig,
        owner: &str,
        wake: Arc<Notify>,
    ) -> Deliverer {
        Deliverer {
            store,
            key,
            egress: Egress::new(config.allow.clone(), config.request_timeout),
            config,
            owner: format!("{owner}/webhooks"),
            wake,
        }
    }

    /// Claims and sends until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let mut last_sweep = Timestamp(0);
        loop {
            let now = Timestamp::now();
            let claimed = match self
                .store
                .claim_deliveries(
                    &self.owner,
                    now,
                    self.config.lease(),
                    self.config.concurrency,
                )
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming webhook deliveries failed");
                    Vec::new()
                }
            };
            let full = claimed.len() >= self.config.concurrency;
            futures::stream::iter(claimed)
                .for_each_concurrent(None, |due| self.attempt(due))
                .await;
            if now.millis() - last_sweep.millis() > 3_600_000 {
                last_sweep = now;
                let before = now.minus(self.config.keep_finished);
                if let Err(e) = self.store.delete_finished_deliveries(before).await {
                    tracing::warn!(error = %e, "deleting old webhook deliveries failed");
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One attempt of a claimed delivery, recorded.
    async fn attempt(&self, due: DueDelivery) {
        let d = &due.delivery;
        let outcome = match self.send(&due).await {
            Ok(status) if (200..300).contains(&status) => AttemptOutcome::Delivered { status },
            Ok(status) => self.retry(&due, Some(status), answer_error(status)),
            Err(error) => self.retry(&due, None, error),
        };
        match &outcome {
            AttemptOutcome::Delivered { .. } => {
                tracing::debug!(webhook = %d.webhook_id, delivery = d.id, "webhook delivered")
            }
            AttemptOutcome::Retry { error, .. } => {
                tracing::info!(webhook = %d.webhook_id, delivery = d.id, attempt = d.attempts, %error, "webhook delivery failed; will retry")
            }
            AttemptOutcome::GiveUp { error, .. } => {
                tracing::warn!(webhook = %d.webhook_id, delivery = d.id, %error, "webhook delivery failed for the whole retry window; endpoint disabled")
            }
        }
        let recorded = self
            .store
            .finish_attempt(d.id, &self.owner, Timestamp::now(), &outcome)
            .await;
        if let Err(e) = recorded {
            // The lease runs out and the next claim sends it again: at
            // least once.
            tracing::warn!(error = %e, delivery = d.id, "recording a webhook attempt failed");
        }
    }

    /// Signs and posts; the endpoint's HTTP status, or why none came.
    async fn send(&self, due: &DueDelivery) -> Result<u16, String> {
        let d = &due.delivery;
        let keys = self.keys(due)?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signing::signature_header(&keys, &d.message_id, timestamp, &due.body);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let header = |v: &str| HeaderValue::from_str(v).map_err(|e| e.to_string());
        headers.insert("webhook-id", header(&d.message_id)?);
        headers.insert("webhook-timestamp", header(&timestamp.to_string())?);
        headers.insert("webhook-signature", header(&signature)?);
        let answer = self
            .egress
            .post(&due.url, headers, due.body.clone())
            .await?;
        Ok(answer.status().as_u16())
    }

    /// The endpoint's live signing keys, opened.
    fn keys(&self, due: &DueDelivery) -> Result<Vec<SigningKey>, String> {
        let Some(key) = &self.key else {
            return Err(
                "this host has no secrets key to open the endpoint's secret with \
                        (--secrets-key-file)"
                    .into(),
            );
        };
        let context = key_context(&due.delivery.webhook_id);
        let what = format!("webhook {}'s secret", due.delivery.webhook_id);
        let open = |k: &crate::model::SealedKey| {
            key.open_for(&what, &context, &k.nonce, &k.ciphertext)
                .map(SigningKey::from_bytes)
                .map_err(|e| e.to_string())
        };
        let mut keys = vec![open(&due.keys.current)?];
        if let Some((previous, until)) = &due.keys.previous
            && *until > Timestamp::now()
        {
            keys.push(open(previous)?);
        }
        Ok(keys)
    }

    /// The next attempt on the schedule, or the end once the retry window
    /// is over.
    fn retry(&self, due: &DueDelivery, status: Option<u16>, error: String) -> AttemptOutcome {
        let d = &due.delivery;
        let now = Timestamp::now();
        let window_ends = d.created_at.plus(self.config.retry_window);
        if now >= window_ends {
            return AttemptOutcome::GiveUp { status, error };
        }
        let delay = self.config.retry_delay(d.attempts);
        AttemptOutcome::Retry {
            status,
            error,
            next_at: now.plus(delay).min(window_ends),
        }
    }
}

/// The error recorded for a non-2xx answer.
fn answer_error(status: u16) -> String {
    if (300..400).contains(&status) {
        format!("the endpoint answered {status} (redirects are not followed)")
    } else {
        format!("the endpoint answered {status}")
    }
}
