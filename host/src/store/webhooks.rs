//! The webhooks' persistence: endpoints, their sealed signing secrets, and
//! the outbox of deliveries. A [`Store`](super::Store) is a
//! [`WebhookStore`]; each backend implements it in its own `webhooks`
//! module. The outbox rows themselves are written by each backend's
//! `apply`, in the transaction of the change ([`Transition::outbox`]).
//!
//! Claims follow the sagas' pattern: a lease per row with an owner, taken
//! and renewed on the database's rows, so several hosts deliver without a
//! leader and a host that dies mid-request leaves its rows to the next
//! claim once the lease runs out. Every claim counts an attempt (requests
//! begun, as a step's attempts are calls begun).
//!
//! [`Transition::outbox`]: super::Transition::outbox

use super::{StoreError, StoreResult};
use crate::model::{
    AttemptOutcome, Delivery, DeliveryStatus, DueDelivery, NewWebhook, SealedKey, Timestamp,
    Webhook, WebhookEvent, WebhookFilter, WebhookKeys,
};
use async_trait::async_trait;
use std::time::Duration;

/// Endpoints and the outbox.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn put_webhook(&self, new: &NewWebhook) -> StoreResult<()>;
    /// Every endpoint, oldest first.
    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>>;
    async fn webhook(&self, id: &str) -> StoreResult<Option<Webhook>>;
    /// Deletes the endpoint and its deliveries.
    async fn delete_webhook(&self, id: &str) -> StoreResult<bool>;
    /// Makes `key` the signing secret; the one it replaces signs too until
    /// `previous_until`. False when there is no such endpoint.
    async fn rotate_webhook(
        &self,
        id: &str,
        key: &SealedKey,
        previous_until: Timestamp,
    ) -> StoreResult<bool>;
    /// Clears `disabled_at`: its pending deliveries go again.
    async fn enable_webhook(&self, id: &str) -> StoreResult<bool>;
    /// The endpoint's deliveries, newest first.
    async fn deliveries(&self, webhook_id: &str, limit: usize) -> StoreResult<Vec<Delivery>>;
    /// A new pending delivery of delivery `id`'s message (same `webhook-id`),
    /// due now; `None` when the endpoint has no such delivery.
    async fn redeliver(
        &self,
        webhook_id: &str,
        id: i64,
        now: Timestamp,
    ) -> StoreResult<Option<Delivery>>;
    /// Claims up to `limit` due deliveries for `owner` under a lease of
    /// `lease`, counting an attempt on each: pending, due, of an enabled
    /// endpoint, and the oldest pending one of their (endpoint, saga).
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<DueDelivery>>;
    /// Records what a claimed attempt came to (nothing if `owner` no longer
    /// holds the row). A give-up disables the endpoint.
    async fn finish_attempt(
        &self,
        id: i64,
        owner: &str,
        now: Timestamp,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()>;
    /// Deletes delivered and failed rows finished before `before`.
    async fn delete_finished_deliveries(&self, before: Timestamp) -> StoreResult<u64>;
}

/// An endpoint as stored; both backends read rows into this.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WebhookRow {
    pub id: String,
    pub url: String,
    pub filter_kind: Option<String>,
    pub filter_template: Option<String>,
    pub previous_expires_at: Option<i64>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    /// The subscribed events, comma-separated (an aggregate).
    pub events: String,
}

/// The endpoint columns every query selects, in [`WebhookRow`]'s order
/// (`w` is `webhooks`; `{events}` is each backend's string aggregate of
/// `webhook_events.event`).
pub(crate) fn webhook_select(events_aggregate: &str) -> String {
    format!(
        "SELECT w.id, w.url, w.filter_kind, w.filter_template, w.previous_expires_at, w.created_by,
                w.created_at, w.disabled_at, w.disabled_reason,
                COALESCE((SELECT {events_aggregate} FROM webhook_events e WHERE e.webhook_id = w.id), '') AS events
         FROM webhooks w"
    )
}

impl TryFrom<WebhookRow> for Webhook {
    type Error = StoreError;
    fn try_from(r: WebhookRow) -> StoreResult<Webhook> {
        let mut events = r
            .events
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| WebhookEvent::parse(e).map_err(StoreError::Corrupt))
            .collect::<StoreResult<Vec<_>>>()?;
        events.sort();
        Ok(Webhook {
            id: r.id,
            url: r.url,
            events,
            filter: WebhookFilter {
                kind: r.filter_kind,
                template: r.filter_template,
            },
            created_at: Timestamp(r.created_at),
            created_by: r.created_by,
            previous_secret_expires_at: r.previous_expires_at.map(Timestamp),
            disabled_at: r.disabled_at.map(Timestamp),
            disabled_reason: r.disabled_reason,
        })
    }
}

/// A delivery as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    pub id: i64,
    pub webhook_id: String,
    pub message_id: String,
    pub saga_id: Option<String>,
    pub event: String,
    pub status: String,
    pub attempts: i64,
    pub next_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// The delivery columns every query selects, in [`DeliveryRow`]'s order.
pub(crate) const DELIVERY_COLUMNS: &str = "id, webhook_id, message_id, saga_id, event, status, attempts, \
     next_at, last_status, last_error, created_at, finished_at";

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;
    fn try_from(r: DeliveryRow) -> StoreResult<Delivery> {
        Ok(Delivery {
            id: r.id,
            webhook_id: r.webhook_id,
            message_id: r.message_id,
            saga_id: r.saga_id.as_deref().map(super::parse_saga_id).transpose()?,
            event: WebhookEvent::parse(&r.event).map_err(StoreError::Corrupt)?,
            status: DeliveryStatus::parse(&r.status).map_err(StoreError::Corrupt)?,
            attempts: r.attempts as u32,
            next_at: Timestamp(r.next_at),
            last_status: r.last_status.map(|s| s as u16),
            last_error: r.last_error,
            created_at: Timestamp(r.created_at),
            finished_at: r.finished_at.map(Timestamp),
        })
    }
}

/// A claimed delivery with its endpoint's URL, body and keys.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DueRow {
    #[sqlx(flatten)]
    pub delivery: DeliveryRow,
    pub url: String,
    pub body: String,
    pub secret_nonce: Vec<u8>,
    pub secret_ciphertext: Vec<u8>,
    pub previous_nonce: Option<Vec<u8>>,
    pub previous_ciphertext: Option<Vec<u8>>,
    pub previous_expires_at: Option<i64>,
}

/// The columns of a claimed delivery, in [`DueRow`]'s order (`d` is the
/// delivery, `w` its endpoint).
pub(crate) const DUE_COLUMNS: &str = "d.id, d.webhook_id, d.message_id, d.saga_id, d.event, d.status, \
     d.attempts, d.next_at, d.last_status, d.last_error, d.created_at, d.finished_at, w.url, d.body, \
     w.secret_nonce, w.secret_ciphertext, w.previous_nonce, w.previous_ciphertext, w.previous_expires_at";

impl TryFrom<DueRow> for DueDelivery {
    type Error = StoreError;
    fn try_from(r: DueRow) -> StoreResult<DueDelivery> {
        let previous = match (
            r.previous_nonce,
            r.previous_ciphertext,
            r.previous_expires_at,
        ) {
            (Some(nonce), Some(ciphertext), Some(until)) => {
                Some((SealedKey { nonce, ciphertext }, Timestamp(until)))
            }
            _ => None,
        };
        Ok(DueDelivery {
            delivery: r.delivery.try_into()?,
            url: r.url,
            body: r.body,
            keys: WebhookKeys {
                current: SealedKey {
                    nonce: r.secret_nonce,
                    ciphertext: r.secret_ciphertext,
                },
                previous,
            },
        })
    }
}

/// An attempt's outcome as the row's new columns: status, next_at,
/// last_status, last_error, finished.
pub(crate) struct OutcomeColumns {
    pub status: &'static str,
    pub next_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub finished: bool,
    /// The reason the endpoint is disabled with (a give-up).
    pub disable: Option<String>,
}

impl From<&AttemptOutcome> for OutcomeColumns {
    fn from(outcome: &AttemptOutcome) -> OutcomeColumns {
        match outcome {
            AttemptOutcome::Delivered { status } => OutcomeColumns {
                status: DeliveryStatus::Delivered.as_str(),
                next_at: None,
                last_status: Some(i64::from(*status)),
                last_error: None,
                finished: true,
                disable: None,
            },
            AttemptOutcome::Retry {
                status,
                error,
                next_at,
            } => OutcomeColumns {
                status: DeliveryStatus::Pending.as_str(),
                next_at: Some(next_at.millis()),
                last_status: status.map(i64::from),
                last_error: Some(error.clone()),
                finished: false,
                disable: None,
            },
            AttemptOutcome::GiveUp { status, error } => OutcomeColumns {
                status: DeliveryStatus::Failed.as_str(),
                next_at: None,
                last_status: status.map(i64::from),
                last_error: Some(error.clone()),
                finished: true,
                disable: Some(format!(
                    "deliveries failed for the whole retry window: {error}"
                )),
            },
        }
    }
}
