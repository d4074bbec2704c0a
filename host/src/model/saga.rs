//! The records: a saga ([`SagaRun`], [`SagaSummary`], [`SagaDetail`]), its
//! ledger rows ([`StepResult`]), the resources its steps recorded, the
//! human actions taken on it, and a stored plugin ([`PluginInfo`]).

use super::{
    ActionKind, ConcurrencyKey, Digest, Drift, LogLevel, Phase, ResourceState, SagaId, SagaStatus,
    Semantics, Slot, StepStatus, StepWait, StopCause, Timestamp, WaitElement, WaitSpec,
    WaitVerdict,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// One line a plugin call logged (host `log`, or a captured stdout/stderr
/// line, prefixed `[stdout]`/`[stderr]`; the host's own notes start `[host]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// A log line in a step's ledger: which call wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerLogLine {
    pub level: LogLevel,
    pub message: String,
    pub phase: Phase,
    pub attempt: u32,
}

/// A resource a step recorded through `record-resource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordedResource {
    pub kind: String,
    pub external_id: String,
    #[schema(value_type = Object)]
    pub spec: Value,
}

/// A resource in a saga's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaResource {
    pub step_index: u32,
    pub kind: String,
    pub external_id: String,
    #[schema(value_type = Object)]
    pub spec: Value,
    /// 1 for the first record of this (kind, external id) by any saga;
    /// each later record of the same resource bumps it.
    pub spec_version: u32,
    pub created_at: Timestamp,
}

/// A resource in the desired-state ledger (`GET /v1/resources`): one per
/// kind and external id, as last recorded by any saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Resource {
    pub kind: String,
    pub external_id: String,
    /// The spec last recorded.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// How many times it was recorded (1 first; each record bumps it).
    pub spec_version: u32,
    /// The saga and step that recorded it last.
    pub saga_id: SagaId,
    pub step_index: u32,
    /// That saga's deployment.
    pub deployment_id: Option<String>,
    pub state: ResourceState,
    /// When it was first recorded, and last changed.
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When a drift scan last looked at it (`POST /v1/resources/scan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
    /// What that scan found; none until one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
    /// For `changed`: an RFC 6902 JSON Patch from the recorded spec to
    /// the observed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub diff: Option<Value>,
}

/// One step of a start request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StepRequest {
    /// A plugin digest (`sha256:...`) or name.
    Ref(String),
    Detailed(StepOptions),
    /// `{"wait": {...}}`: a wait for a payload (docs/waits.md).
    Wait(WaitElement),
}

/// Each step is a string or an object; say which is wrong and why, rather
/// than serde's "did not match any variant".
pub fn deserialize_steps<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<StepRequest>>, D::Error> {
    use serde::de::Error;
    let Some(values) = Option::<Vec<Value>>::deserialize(d)? else {
        return Ok(None);
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, step)| match step {
            Value::String(reference) => Ok(StepRequest::Ref(reference)),
            Value::Object(ref fields) if fields.contains_key("wait") => {
                WaitElement::deserialize(step)
                    .map(StepRequest::Wait)
                    .map_err(|e| D::Error::custom(format!("steps[{i}]: {e}")))
            }
            Value::Object(_) => StepOptions::deserialize(step)
                .map(StepRequest::Detailed)
                .map_err(|e| D::Error::custom(format!("steps[{i}]: {e}"))),
            other => Err(D::Error::custom(format!(
                "steps[{i}]: a step is a plugin reference (a string) or an object \
                 {{plugin, max_attempts?, timeout_ms?, max_memory_bytes?, max_output_bytes?, max_wait_ms?}} \
                 or a wait {{\"wait\": {{name, timeout, ...}}}}, not {other}"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A step with its own settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepOptions {
    /// A plugin digest or name.
    pub plugin: String,
    /// Attempts per phase, the first call included (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Deadline of one call in milliseconds (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Memory limit of one call, up to the host's ceiling (default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// Size limit of the step's output, up to the host's ceiling (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// Longest total wait through `poll-after` (default one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
    /// `at_least_once` (default): a call cut short by a crash is made
    /// again; `at_most_once`: never, the saga goes `in_doubt` for a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantics: Option<Semantics>,
}

impl StepRequest {
    /// A plugin step's settings; `None` for a wait.
    pub fn options(&self) -> Option<StepOptions> {
        match self {
            StepRequest::Ref(plugin) => Some(StepOptions {
                plugin: plugin.clone(),
                max_attempts: None,
                timeout_ms: None,
                max_memory_bytes: None,
                max_output_bytes: None,
                max_wait_ms: None,
                semantics: None,
            }),
            StepRequest::Detailed(options) => Some(options.clone()),
            StepRequest::Wait(_) => None,
        }
    }
}

/// One version of a saga template: a start request kept under a name
/// (`PUT /v1/templates/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub name: String,
    /// 1 for the first put; each change is the next version.
    pub version: u32,
    pub description: Option<String>,
    /// The steps as in a start request (plugin names or digests, with
    /// per-step settings), resolved to digests when a saga starts.
    #[schema(value_type = Vec<StepRequest>)]
    pub steps: Vec<Value>,
    /// A JSON Schema the inputs of a start must pass.
    #[schema(value_type = Option<Object>)]
    pub inputs_schema: Option<Value>,
    /// Concurrency keys every start from it claims (fields filled in at
    /// start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<ConcurrencyKey>,
    pub created_at: Timestamp,
    /// Who put this version.
    pub created_by: Option<String>,
}

/// One step of a saga, as pinned when the saga started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepSpec {
    /// The plugin's name when the saga started.
    pub name: String,
    /// The exact plugin that runs, whatever is uploaded later.
    pub plugin: Digest,
    /// Attempts per phase, the first call included.
    pub max_attempts: u32,
    /// Deadline of one call, in milliseconds.
    pub timeout_ms: u64,
    /// Memory limit of one call, when not the host's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// Output size limit, when not the host's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// The longest total wait a step may ask for with `poll-after`, when not
    /// the host's default (one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
    /// Set for a wait (its `plugin` is then [`Digest::wait`]): no plugin
    /// is called; the step waits for a payload (docs/waits.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitSpec>,
    /// Whether a call cut short may be made again (docs/recovery.md).
    #[serde(default, skip_serializing_if = "Semantics::is_default")]
    pub semantics: Semantics,
}

/// Why a saga stopped short of `completed`. The original engine recorded
/// `{compensate_from_idx, reason}`; `message` says it all in one sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SagaError {
    /// One sentence for humans.
    pub message: String,
    /// The step whose failure (or interruption) stopped the saga, if any.
    #[serde(default)]
    pub failed_step: Option<u32>,
    /// The step compensation started from, or `null` when no step needed
    /// compensating.
    #[serde(default)]
    pub compensate_from_idx: Option<u32>,
    /// The failure's own message, or `cancelled`.
    pub reason: String,
    /// Why it stopped, as a code: `step_failed` or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<StopCause>,
    /// Steps whose compensation failed after its retries (status `failed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensation_failed_steps: Vec<u32>,
}

/// A human action on a saga, kept on the saga (cancel, pause, resume,
/// retry, resolve).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Action {
    pub action: ActionKind,
    /// The token's label (or `triggered_by`-style name) of who did it.
    pub actor: Option<String>,
    pub at: Timestamp,
    pub note: Option<String>,
    /// The step a resolve (or a wait's answer) was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_index: Option<u32>,
    /// The payload an approval of a wait approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
}

/// A saga, without its ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaRun {
    pub id: SagaId,
    pub kind: String,
    pub status: SagaStatus,
    /// The step being executed or compensated (or the next one to run).
    pub current_step_index: u32,
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// What completed steps output, merged (a JSON object).
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
    pub error: Option<SagaError>,
    pub cancel_requested: bool,
    /// A pause was asked for and takes effect between steps.
    #[serde(default)]
    pub pause_requested: bool,
    pub deployment_id: Option<String>,
    pub triggered_by: Option<String>,
    /// The template it was started from, and its version.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub template_version: Option<u32>,
    /// The steps as pinned at start: plugin digests and per-step settings.
    pub plan: Vec<StepSpec>,
    /// Human actions taken on it, oldest first.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// Bumped by every change to the saga: what a writer expects to find.
    #[serde(default)]
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The W3C `traceparent` its start carried: the saga's spans join that
    /// trace. Absent, the trace is the saga's own (the trace id is the saga
    /// id's 16 bytes: `telemetry::SagaTrace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    /// The concurrency keys it holds for its whole life, or waits for
    /// (docs/flow-control.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<ConcurrencyKey>,
    /// Times it was redriven (each is a `redrive` action).
    #[serde(default)]
    pub redrives: u32,
}

impl SagaRun {
    /// A new saga, not started yet.
    pub fn pending(
        kind: impl Into<String>,
        plan: Vec<StepSpec>,
        inputs: Value,
        deployment_id: Option<String>,
        triggered_by: Option<String>,
        now: Timestamp,
    ) -> SagaRun {
        SagaRun {
            id: SagaId::new(),
            kind: kind.into(),
            status: SagaStatus::Pending,
            current_step_index: 0,
            inputs,
            context: Map::new(),
            error: None,
            cancel_requested: false,
            pause_requested: false,
            deployment_id,
            triggered_by,
            template: None,
            template_version: None,
            plan,
            actions: Vec::new(),
            version: 0,
            created_at: now,
            updated_at: now,
            trace_parent: None,
            concurrency: Vec::new(),
            redrives: 0,
        }
    }

    /// Times `actions` says it was redriven.
    pub fn count_redrives(actions: &[Action]) -> u32 {
        actions
            .iter()
            .filter(|a| a.action == ActionKind::Redrive)
            .count() as u32
    }

    /// What a list shows of it.
    pub fn summary(&self) -> SagaSummary {
        SagaSummary {
            id: self.id,
            kind: self.kind.clone(),
            status: self.status,
            current_step_index: self.current_step_index,
            steps_total: self.plan.len() as u32,
            error: self.error.clone(),
            cancel_requested: self.cancel_requested,
            pause_requested: self.pause_requested,
            deployment_id: self.deployment_id.clone(),
            triggered_by: self.triggered_by.clone(),
            template: self.template.clone(),
            template_version: self.template_version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A saga as `GET /v1/sagas` lists it: no inputs, context, plan or
/// ledger, so that a page of a thousand stays small; the whole saga comes
/// from `GET /v1/sagas/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaSummary {
    pub id: SagaId,
    pub kind: String,
    pub status: SagaStatus,
    pub current_step_index: u32,
    /// How many steps the saga has.
    pub steps_total: u32,
    pub error: Option<SagaError>,
    pub cancel_requested: bool,
    pub pause_requested: bool,
    pub deployment_id: Option<String>,
    pub triggered_by: Option<String>,
    pub template: Option<String>,
    pub template_version: Option<u32>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A step's row in a saga's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepResult {
    pub index: u32,
    pub name: String,
    pub plugin: Digest,
    pub status: StepStatus,
    /// The phase of the latest call: `execute`, or `compensate` once
    /// compensation reached this step.
    pub phase: Phase,
    /// Calls of `execute` begun so far.
    pub attempts: u32,
    /// Calls of `compensate` begun so far.
    pub compensate_attempts: u32,
    /// Calls of `compensate` begun before the saga's latest retry: the
    /// step's `max_attempts` counts from here (0 until a retry).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compensate_attempt_base: u32,
    /// Calls of `execute` begun before the redrive that runs the step
    /// again: its `max_attempts` counts from here, and its calls carry a
    /// new idempotency key (0 until a redrive).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt_base: u32,
    /// The latest calls (at most [`MAX_CALLS_KEPT`]), oldest first: what
    /// the console's timeline draws.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallRecord>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// Set, to the output's size in bytes, when a saga read leaves the
    /// output out for its size (`output` is then null): the whole output
    /// is at `GET /v1/sagas/{id}/steps/{index}/output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_omitted: Option<u64>,
    pub error: Option<String>,
    pub logs: Vec<LedgerLogLine>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// The host (its node id) that ran the latest attempt.
    #[serde(default)]
    pub executed_by: Option<String>,
    /// When the step asked (with `poll-after`) to be called again: it is
    /// waiting until then, holding nothing.
    #[serde(default)]
    pub waiting_until: Option<Timestamp>,
    /// Calls that answered `poll-after` so far, in the current phase.
    #[serde(default)]
    pub polls: u32,
    /// When the current phase's first wait began (bounds the total wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_started_at: Option<Timestamp>,
    /// A wait's: what it received while open (the driver completes or
    /// fails it next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<WaitVerdict>,
    /// The wait the step opened itself with `wait-for` (contract 0.3.0),
    /// kept after it was answered: its payload is in `received`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<StepWait>,
    /// A wait's correlation key, filled in, while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_key: Option<String>,
    /// An open wait's capability URL (`POST` a payload to it, no token):
    /// shown while the wait is open, on a host with a secrets key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// Calls a ledger row keeps in `calls`.
pub const MAX_CALLS_KEPT: usize = 100;

/// One plugin call of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallRecord {
    pub phase: Phase,
    pub attempt: u32,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// `ok`, `poll`, `retryable`, `fatal` or `interrupted`.
    pub outcome: String,
}

/// A saga with its ledger and resources: `GET /v1/sagas/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaDetail {
    #[serde(flatten)]
    pub saga: SagaRun,
    pub steps: Vec<StepResult>,
    pub resources: Vec<SagaResource>,
    /// Where it stands on each of its concurrency keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<Slot>,
}

/// A stored plugin, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PluginInfo {
    pub digest: Digest,
    pub name: String,
    /// Size of the component in bytes.
    pub size: u64,
    pub created_at: Timestamp,
    /// Whether this digest is what its name means now (the latest upload,
    /// or re-upload, of that name).
    #[serde(default)]
    pub current: bool,
    /// The version of the step contract it implements (`0.1.0`, `0.2.0`).
    #[schema(example = "0.2.0")]
    pub contract: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
