//! Waits for people and systems (docs/waits.md): a plan element that is
//! not a plugin call but a pause until a payload arrives, by an approval
//! (`POST /v1/sagas/{id}/waits/{name}/complete`), a capability URL, or a
//! message posted under its correlation key; or until its timeout.
//!
//! The request's shape ([`WaitRequest`]), the wait as pinned in a saga's
//! plan ([`WaitSpec`]), what a wait received ([`WaitVerdict`], kept on its
//! ledger row), and a message kept in the mailbox ([`Message`]).

use super::{SagaId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Most approvers a wait may name, and most approvals it may ask.
pub const MAX_APPROVERS: usize = 32;

/// A plan element `{"wait": {...}}` as a start or a template gives it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WaitElement {
    pub wait: WaitRequest,
}

/// A wait as a request states it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitRequest {
    /// Unique in the plan; a path segment (`/waits/{name}`), and the key
    /// its payload gets in the saga's context.
    pub name: String,
    /// A JSON Schema every payload must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// How long it waits, e.g. `72h`, `15m`.
    pub timeout: String,
    /// What its timeout does: `{"fail": true}` (the default: the saga
    /// compensates) or `{"default": {...}}` (goes on with that payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub on_timeout: Option<OnTimeout>,
    /// Distinct actors whose approval completes it (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<u32>,
    /// Token labels that may complete it besides operators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Messages posted under this key (`{{inputs.PATH}}` and
    /// `{{deployment_id}}` filled at start) complete it, even those posted
    /// before it opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_key: Option<String>,
}

/// What a wait's timeout does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OnTimeout {
    /// `{"fail": true}`: the wait fails and the saga compensates.
    Fail(bool),
    /// `{"default": PAYLOAD}`: the wait completes with this payload.
    Default(Value),
}

/// A wait as pinned in a saga's plan: its timeout in milliseconds and its
/// correlation key filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WaitSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    pub timeout_ms: u64,
    /// `None`: it fails at its timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub on_timeout_default: Option<Value>,
    pub approvals: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_key: Option<String>,
}

/// A wait a step opened itself (contract 0.3.0, `wait-for`), kept on its
/// ledger row: answered like a plan element's wait (by an operator, or its
/// capability URL), after which the step is called again with the payload
/// in `saga-state.received`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepWait {
    pub name: String,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
}

impl StepWait {
    /// The wait's rules, as a plan element's with the same fields: one
    /// approval, by an operator; its timeout fails the step.
    pub fn spec(&self) -> WaitSpec {
        WaitSpec {
            schema: self.schema.clone(),
            timeout_ms: self.timeout_ms,
            on_timeout_default: None,
            approvals: 1,
            approvers: Vec::new(),
            correlation_key: None,
        }
    }
}

/// What an open wait received, kept on its ledger row until the saga's
/// driver moves on: the wait completes with the payload, or fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum WaitVerdict {
    /// Approved (by as many distinct actors as it asks), called back, or
    /// sent a message.
    Completed {
        #[schema(value_type = Object)]
        payload: Value,
        /// Who completed it: the actors of its approvals, `callback`, or
        /// `message:ID`.
        by: Vec<String>,
    },
    /// Rejected: the wait fails and the saga compensates.
    Rejected {
        by: Option<String>,
        note: Option<String>,
    },
}

/// `POST /v1/sagas/{id}/waits/{name}/complete` and `/reject` body.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitAnswer {
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /v1/messages` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// The correlation key of the wait it is for.
    pub key: String,
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// A message: delivered to the wait open under its key, or kept until one
/// opens (or it expires).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: String,
    pub key: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The wait it went to: `null` while it is kept.
    pub delivered_to: Option<MessageDelivery>,
}

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageDelivery {
    pub saga_id: SagaId,
    pub step_index: u32,
    pub at: Timestamp,
}
