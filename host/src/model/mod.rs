//! The saga domain's nouns: ids, digests, statuses, and the saga, step and
//! plugin records that the store persists and the API returns.
//!
//! These types are shared by every seam, so they hold data and the rules
//! that belong to the data (which statuses are final, what a digest looks
//! like, how a timestamp is written), never behaviour of a seam. Their serde
//! shapes are the JSON of HTTP API v1 (a contract: fields may be added, never
//! renamed or removed).

mod access;
mod budget;
mod concurrency;
mod ids;
mod redrive;
mod saga;
mod schedule;
mod status;
mod tokens;
mod wait;
mod webhook;

pub use access::{
    BadOrigin, BadSecretName, Grants, Origin, SealedSecret, SecretInfo, SecretMode, SecretName,
};
pub use budget::{
    Budget, BudgetRequest, BudgetStatus, MAX_BUDGET_NAME, MAX_BUDGET_ORIGINS, interval_us,
    retry_after,
};
pub use concurrency::{
    Arrival, Blocked, ConcurrencyKey, KeyStatus, MAX_KEY_BYTES, MAX_KEYS, OnConflict, Slot,
    SlotAge, SlotState, admit, arrive, key_prefix,
};
pub use ids::{BadDigest, Digest, SagaId, Timestamp};
pub use redrive::{
    BulkRedrive, BulkRedriveRequest, RedriveDoes, RedriveFilter, RedriveMode, RedrivePlan,
    RedrivePlugins, RedriveRefusal, RedriveRequest, RedriveStep, StepRef, patched_inputs,
};
pub use saga::{
    Action, CallRecord, LedgerLogLine, LogLine, MAX_CALLS_KEPT, PluginInfo, RecordedResource,
    Resource, SagaDetail, SagaError, SagaResource, SagaRun, SagaSummary, StepOptions, StepRequest,
    StepResult, StepSpec, Template, deserialize_steps,
};
pub use schedule::{
    Calendar, Fire, FireOutcome, MAX_SCHEDULE_NAME, Overlap, Schedule, ScheduleRequest,
    ScheduleSpec, ScheduleStatus,
};
pub(crate) use status::string_enum;
pub use status::{
    ActionKind, Drift, LogLevel, Phase, Resolution, ResourceState, SagaStatus, Semantics,
    StepStatus, StopCause,
};
pub use tokens::{Caller, Role, Tokens, TokensError};
pub use wait::{
    MAX_APPROVERS, Message, MessageDelivery, MessageRequest, OnTimeout, StepWait, WaitAnswer,
    WaitElement, WaitRequest, WaitSpec, WaitVerdict,
};
pub use webhook::{
    AttemptOutcome, Delivery, DeliveryStatus, DueDelivery, NewWebhook, OutboxEvent, SealedKey,
    Webhook, WebhookEvent, WebhookFilter, WebhookKeys,
};
