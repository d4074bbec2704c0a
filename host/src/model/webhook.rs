//! Webhooks' records (a contract: the JSON of `/v1/webhooks`): the event
//! types an endpoint can subscribe to, an endpoint as listed, the outbox
//! event a transition writes, and a delivery of it to one endpoint.
//!
//! They live in `model`, beside the saga records, because the store writes
//! them (the outbox, in the transaction of the change) and the runner makes
//! them; sending them is `crate::webhooks`.

use super::ids::{SagaId, Timestamp};
use super::status::string_enum;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

string_enum! {
    /// What an endpoint can subscribe to. `saga.*` fire when a saga reaches
    /// that status; `saga.in_doubt`, `wait.opened` and `schedule.skipped`
    /// are accepted now and fire once the features that make them land
    /// (docs/integrations.md).
    pub enum WebhookEvent {
        #[serde(rename = "saga.completed")]
        #[strum(serialize = "saga.completed")]
        SagaCompleted,
        #[serde(rename = "saga.rolled_back")]
        #[strum(serialize = "saga.rolled_back")]
        SagaRolledBack,
        #[serde(rename = "saga.failed")]
        #[strum(serialize = "saga.failed")]
        SagaFailed,
        #[serde(rename = "saga.in_doubt")]
        #[strum(serialize = "saga.in_doubt")]
        SagaInDoubt,
        #[serde(rename = "wait.opened")]
        #[strum(serialize = "wait.opened")]
        WaitOpened,
        #[serde(rename = "schedule.skipped")]
        #[strum(serialize = "schedule.skipped")]
        ScheduleSkipped,
    }
}

string_enum! {
    /// Where a delivery is: `pending` (to be sent, or backing off),
    /// `delivered` (the endpoint answered 2xx), `failed` (given up after the
    /// retry window; the endpoint was disabled).
    pub enum DeliveryStatus {
        Pending,
        Delivered,
        Failed,
    }
}

/// Which sagas' events an endpoint receives (every field that is set must
/// match).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookFilter {
    /// The saga's `kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The template the saga was started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// An endpoint, as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    /// `wh_...`
    pub id: String,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub filter: WebhookFilter,
    pub created_at: Timestamp,
    pub created_by: Option<String>,
    /// Until when the secret replaced by the last rotation still signs.
    pub previous_secret_expires_at: Option<Timestamp>,
    /// Set when deliveries failed for the whole retry window; nothing is
    /// sent until `POST /v1/webhooks/{id}/enable`.
    pub disabled_at: Option<Timestamp>,
    pub disabled_reason: Option<String>,
}

/// A signing secret as stored: sealed under the host's secrets key.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedKey(..)")
    }
}

/// An endpoint's signing secrets: the current one, and the one a rotation
/// replaced while it still signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookKeys {
    pub current: SealedKey,
    pub previous: Option<(SealedKey, Timestamp)>,
}

/// A new endpoint, as the store writes it.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub webhook: Webhook,
    pub key: SealedKey,
}

/// An event a transition writes to the outbox: one delivery for each
/// endpoint subscribed to `event` whose filter matches `kind`/`template`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub event: WebhookEvent,
    /// The Standard Webhooks `webhook-id` (`msg_...`).
    pub message_id: String,
    pub saga_id: Option<SagaId>,
    pub kind: String,
    pub template: Option<String>,
    /// The JSON body: `{type, timestamp, data}`.
    pub body: String,
}

/// One message to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: String,
    /// The `webhook-id` header: the same on every attempt.
    pub message_id: String,
    pub saga_id: Option<SagaId>,
    pub event: WebhookEvent,
    pub status: DeliveryStatus,
    /// Requests begun.
    pub attempts: u32,
    /// When the next attempt is due (while `pending`).
    pub next_at: Timestamp,
    /// The HTTP status of the last attempt that got an answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// A delivery claimed for sending, with what sending needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: Delivery,
    pub url: String,
    pub body: String,
    pub keys: WebhookKeys,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered {
        status: u16,
    },
    /// Try again at `next_at`.
    Retry {
        status: Option<u16>,
        error: String,
        next_at: Timestamp,
    },
    /// The retry window is over: the delivery fails and the endpoint is
    /// disabled with `error` as the reason.
    GiveUp {
        status: Option<u16>,
        error: String,
    },
}

impl WebhookEvent {
    /// The event a saga reaching `status` causes, if any.
    pub fn of_status(status: super::SagaStatus) -> Option<WebhookEvent> {
        use super::SagaStatus;
        match status {
            SagaStatus::Completed => Some(WebhookEvent::SagaCompleted),
            SagaStatus::RolledBack => Some(WebhookEvent::SagaRolledBack),
            SagaStatus::Failed => Some(WebhookEvent::SagaFailed),
            // A human must resolve it: the event that calls one.
            SagaStatus::InDoubt => Some(WebhookEvent::SagaInDoubt),
            _ => None,
        }
    }
}
