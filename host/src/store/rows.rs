//! Rows as both databases store them, and their conversions to and from the
//! model: one definition of each table's columns for the two backends.

use super::{StoreError, StoreResult};
use crate::model::{
    Action, Digest, Drift, LedgerLogLine, Phase, PluginInfo, Resource, ResourceState, SagaId,
    SagaResource, SagaRun, SagaStatus, SagaSummary, Slot, SlotState, StepResult, StepSpec,
    StepStatus, Template, Timestamp,
};

/// Parses the JSON of a stored column.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("model types serialize")
}

pub(crate) fn parse_saga_id(text: &str) -> StoreResult<SagaId> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("saga id {text}: {e}")))
}

/// A ledger row as stored; both backends read rows into this.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct StepRow {
    pub step_index: i64,
    pub phase: String,
    pub status: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub attempts: i64,
    pub compensate_attempts: i64,
    pub logs: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub executed_by: Option<String>,
    pub waiting_until: Option<i64>,
    pub polls: i64,
    pub wait_started_at: Option<i64>,
    pub compensate_attempt_base: i64,
    pub calls: String,
    pub received: Option<String>,
    pub correlation_key: Option<String>,
    pub attempt_base: i64,
    pub wait_for: Option<String>,
}

/// The ledger columns every query selects, in [`StepRow`]'s order.
pub(crate) const STEP_COLUMNS: &str = "step_index, phase, status, output, error, attempts, compensate_attempts, \
     logs, started_at, finished_at, executed_by, waiting_until, polls, wait_started_at, compensate_attempt_base, calls, \
     received, correlation_key, attempt_base, wait_for";

impl StepRow {
    /// The ledger row, named and pinned from the saga's plan.
    pub(crate) fn into_result(self, plan: &[StepSpec]) -> StoreResult<StepResult> {
        let index = self.step_index as u32;
        let spec = plan.get(index as usize).ok_or_else(|| {
            StoreError::Corrupt(format!("ledger row for step {index} beyond the plan"))
        })?;
        Ok(StepResult {
            index,
            name: spec.name.clone(),
            plugin: spec.plugin.clone(),
            status: StepStatus::parse(&self.status).map_err(StoreError::Corrupt)?,
            phase: Phase::parse(&self.phase).map_err(StoreError::Corrupt)?,
            attempts: self.attempts as u32,
            compensate_attempts: self.compensate_attempts as u32,
            output: self
                .output
                .as_deref()
                .map(|o| from_json("step output", o))
                .transpose()?,
            output_omitted: None,
            error: self.error,
            logs: from_json::<Vec<LedgerLogLine>>("step logs", &self.logs)?,
            started_at: self.started_at.map(Timestamp),
            finished_at: self.finished_at.map(Timestamp),
            executed_by: self.executed_by,
            waiting_until: self.waiting_until.map(Timestamp),
            polls: self.polls as u32,
            wait_started_at: self.wait_started_at.map(Timestamp),
            compensate_attempt_base: self.compensate_attempt_base as u32,
            attempt_base: self.attempt_base as u32,
            calls: from_json("step calls", &self.calls)?,
            received: self
                .received
                .as_deref()
                .map(|r| from_json("what a wait received", r))
                .transpose()?,
            correlation_key: self.correlation_key,
            wait_for: self
                .wait_for
                .as_deref()
                .map(|w| from_json("the wait a step opened", w))
                .transpose()?,
            callback_url: None,
        })
    }
}

/// A ledger row as JSON, for PostgreSQL's statements that take their rows
/// as JSON (`jsonb_to_recordset`).
pub(crate) fn ledger_row_json(step: &StepResult) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(row) = serde_json::json!({
        "step_index": step.index,
        "phase": step.phase.as_str(),
        "status": step.status.as_str(),
        "output": step.output.as_ref().map(to_json),
        "error": step.error.as_deref(),
        "attempts": step.attempts,
        "compensate_attempts": step.compensate_attempts,
        "logs": to_json(&step.logs),
        "started_at": step.started_at.map(Timestamp::millis),
        "finished_at": step.finished_at.map(Timestamp::millis),
        "executed_by": step.executed_by.as_deref(),
        "waiting_until": step.waiting_until.map(Timestamp::millis),
        "polls": step.polls,
        "wait_started_at": step.wait_started_at.map(Timestamp::millis),
        "compensate_attempt_base": step.compensate_attempt_base,
        "calls": to_json(&step.calls),
        "received": step.received.as_ref().map(to_json),
        "correlation_key": step.correlation_key.as_deref(),
        "attempt_base": step.attempt_base,
        "wait_for": step.wait_for.as_ref().map(to_json),
    }) else {
        unreachable!("an object literal")
    };
    row
}

/// A saga row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SagaRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub steps: String,
    pub inputs: String,
    pub current_step_index: i64,
    pub context: String,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub pause_requested: bool,
    pub deployment_id: Option<String>,
    pub triggered_by: Option<String>,
    pub template: Option<String>,
    pub template_version: Option<i64>,
    pub actions: String,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub trace_parent: Option<String>,
    pub concurrency: String,
}

/// The saga columns every query selects, in [`SagaRow`]'s order.
pub(crate) const SAGA_COLUMNS: &str = "id, kind, status, steps, inputs, current_step_index, context, error, \
     cancel_requested, pause_requested, deployment_id, triggered_by, template, template_version, actions, \
     version, created_at, updated_at, trace_parent, concurrency";

impl TryFrom<SagaRow> for SagaRun {
    type Error = StoreError;
    fn try_from(r: SagaRow) -> StoreResult<SagaRun> {
        let actions = from_json::<Vec<Action>>("saga actions", &r.actions)?;
        Ok(SagaRun {
            id: parse_saga_id(&r.id)?,
            kind: r.kind,
            status: SagaStatus::parse(&r.status).map_err(StoreError::Corrupt)?,
            current_step_index: r.current_step_index as u32,
            inputs: from_json("saga inputs", &r.inputs)?,
            context: from_json("saga context", &r.context)?,
            error: r
                .error
                .as_deref()
                .map(|e| from_json("saga error", e))
                .transpose()?,
            cancel_requested: r.cancel_requested,
            pause_requested: r.pause_requested,
            deployment_id: r.deployment_id,
            triggered_by: r.triggered_by,
            template: r.template,
            template_version: r.template_version.map(|v| v as u32),
            plan: from_json("saga steps", &r.steps)?,
            redrives: SagaRun::count_redrives(&actions),
            actions,
            version: r.version as u64,
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
            trace_parent: r.trace_parent,
            concurrency: from_json("saga concurrency", &r.concurrency)?,
        })
    }
}

/// A saga row as a list reads it: no inputs, context or plan.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SummaryRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub current_step_index: i64,
    pub steps_total: i64,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub pause_requested: bool,
    pub deployment_id: Option<String>,
    pub triggered_by: Option<String>,
    pub template: Option<String>,
    pub template_version: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The columns of [`SummaryRow`]; `steps_total` is the length of the plan's
/// JSON array, an expression per backend.
pub(crate) fn summary_columns(steps_total: &str) -> String {
    format!(
        "id, kind, status, current_step_index, {steps_total} AS steps_total, error, \
         cancel_requested, pause_requested, deployment_id, triggered_by, template, template_version, \
         created_at, updated_at"
    )
}

impl TryFrom<SummaryRow> for SagaSummary {
    type Error = StoreError;
    fn try_from(r: SummaryRow) -> StoreResult<SagaSummary> {
        Ok(SagaSummary {
            id: parse_saga_id(&r.id)?,
            kind: r.kind,
            status: SagaStatus::parse(&r.status).map_err(StoreError::Corrupt)?,
            current_step_index: r.current_step_index as u32,
            steps_total: r.steps_total as u32,
            error: r
                .error
                .as_deref()
                .map(|e| from_json("saga error", e))
                .transpose()?,
            cancel_requested: r.cancel_requested,
            pause_requested: r.pause_requested,
            deployment_id: r.deployment_id,
            triggered_by: r.triggered_by,
            template: r.template,
            template_version: r.template_version.map(|v| v as u32),
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
        })
    }
}

/// A resource row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ResourceRow {
    pub step_index: i64,
    pub kind: String,
    pub external_id: String,
    pub spec: String,
    pub spec_version: i64,
    pub created_at: i64,
}

impl TryFrom<ResourceRow> for SagaResource {
    type Error = StoreError;
    fn try_from(r: ResourceRow) -> StoreResult<Self> {
        Ok(SagaResource {
            step_index: r.step_index as u32,
            kind: r.kind,
            external_id: r.external_id,
            spec: from_json("resource spec", &r.spec)?,
            spec_version: r.spec_version as u32,
            created_at: Timestamp(r.created_at),
        })
    }
}

/// A row of the desired-state ledger, in [`RESOURCE_COLUMNS`]' order.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LedgerResourceRow {
    pub kind: String,
    pub external_id: String,
    pub spec: String,
    pub spec_version: i64,
    pub saga_id: String,
    pub step_index: i64,
    pub deployment_id: Option<String>,
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub observed_at: Option<i64>,
    pub drift: Option<String>,
    pub drift_diff: Option<String>,
}

/// The desired-state ledger's columns, in [`LedgerResourceRow`]'s order.
pub(crate) const RESOURCE_COLUMNS: &str = "kind, external_id, spec, spec_version, saga_id, \
     step_index, deployment_id, state, created_at, updated_at, observed_at, drift, drift_diff";

impl TryFrom<LedgerResourceRow> for Resource {
    type Error = StoreError;
    fn try_from(r: LedgerResourceRow) -> StoreResult<Self> {
        Ok(Resource {
            spec: from_json("resource spec", &r.spec)?,
            spec_version: r.spec_version as u32,
            saga_id: parse_saga_id(&r.saga_id)?,
            step_index: r.step_index as u32,
            state: ResourceState::parse(&r.state).map_err(StoreError::Corrupt)?,
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
            observed_at: r.observed_at.map(Timestamp),
            drift: r
                .drift
                .as_deref()
                .map(Drift::parse)
                .transpose()
                .map_err(StoreError::Corrupt)?,
            diff: r
                .drift_diff
                .as_deref()
                .map(|d| from_json("drift diff", d))
                .transpose()?,
            kind: r.kind,
            external_id: r.external_id,
            deployment_id: r.deployment_id,
        })
    }
}

/// A template version as stored, in [`TEMPLATE_COLUMNS`]' order.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TemplateRow {
    pub name: String,
    pub version: i64,
    pub description: Option<String>,
    pub steps: String,
    pub inputs_schema: Option<String>,
    pub created_at: i64,
    pub created_by: Option<String>,
    pub concurrency: String,
}

pub(crate) const TEMPLATE_COLUMNS: &str =
    "name, version, description, steps, inputs_schema, created_at, created_by, concurrency";

impl TryFrom<TemplateRow> for Template {
    type Error = StoreError;
    fn try_from(r: TemplateRow) -> StoreResult<Self> {
        Ok(Template {
            version: r.version as u32,
            steps: from_json("template steps", &r.steps)?,
            inputs_schema: r
                .inputs_schema
                .as_deref()
                .map(|s| from_json("template inputs schema", s))
                .transpose()?,
            created_at: Timestamp(r.created_at),
            concurrency: from_json("template concurrency", &r.concurrency)?,
            name: r.name,
            description: r.description,
            created_by: r.created_by,
        })
    }
}

/// Whether a put would store what the latest version already says.
pub(crate) fn same_template(latest: &Template, new: &Template) -> bool {
    latest.description == new.description
        && latest.steps == new.steps
        && latest.inputs_schema == new.inputs_schema
        && latest.concurrency == new.concurrency
}

/// A plugin row as stored (without the bytes), with whether it is current.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PluginRow {
    pub digest: String,
    pub name: String,
    pub size: i64,
    pub created_at: i64,
    pub current: bool,
    pub contract: String,
}

/// The plugin columns every query selects, in [`PluginRow`]'s order
/// (`current` compares the row's promotion with its name's newest).
pub(crate) const PLUGIN_COLUMNS: &str = "digest, name, size, created_at, \
     promoted_seq = (SELECT MAX(p2.promoted_seq) FROM plugins p2 WHERE p2.name = plugins.name) AS current, \
     contract";

impl TryFrom<PluginRow> for PluginInfo {
    type Error = StoreError;
    fn try_from(r: PluginRow) -> StoreResult<Self> {
        Ok(PluginInfo {
            digest: r
                .digest
                .parse::<Digest>()
                .map_err(|e| StoreError::Corrupt(format!("{e}")))?,
            name: r.name,
            size: r.size as u64,
            created_at: Timestamp(r.created_at),
            current: r.current,
            contract: r.contract,
        })
    }
}

/// A delete refused because of the unfinished sagas `ids` (as stored).
pub(crate) fn pinned_by(ids: &[String]) -> StoreResult<super::DeletePlugin> {
    ids.iter()
        .map(|id| parse_saga_id(id))
        .collect::<StoreResult<Vec<SagaId>>>()
        .map(super::DeletePlugin::Pinned)
}

/// The distinct digests a plan pins, in plan order.
pub(crate) fn pinned_digests(plan: &[StepSpec]) -> Vec<Digest> {
    let mut digests: Vec<Digest> = Vec::new();
    for step in plan.iter().filter(|s| s.wait.is_none()) {
        if !digests.contains(&step.plugin) {
            digests.push(step.plugin.clone());
        }
    }
    digests
}

/// A secret row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SecretRow {
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub origins: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The secret columns every query selects, in [`SecretRow`]'s order.
pub(crate) const SECRET_COLUMNS: &str = "name, nonce, ciphertext, origins, created_at, updated_at";

impl TryFrom<SecretRow> for crate::model::SealedSecret {
    type Error = StoreError;
    fn try_from(r: SecretRow) -> StoreResult<Self> {
        Ok(crate::model::SealedSecret {
            name: r
                .name
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("{e}")))?,
            nonce: r.nonce,
            ciphertext: r.ciphertext,
            origins: from_json("secret origins", &r.origins)?,
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
        })
    }
}

/// A grants row as stored: (http, secrets) JSON.
pub(crate) fn grants_from_row(http: &str, secrets: &str) -> StoreResult<crate::model::Grants> {
    Ok(crate::model::Grants {
        http: from_json("grants http", http)?,
        secrets: from_json("grants secrets", secrets)?,
    })
}

/// A concurrency slot as stored, in [`SLOT_COLUMNS`]' order.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SlotRow {
    pub key: String,
    pub saga_id: String,
    pub slot_limit: i64,
    pub state: String,
    pub seq: i64,
    pub since: i64,
}

pub(crate) const SLOT_COLUMNS: &str = "key, saga_id, slot_limit, state, seq, since";

impl TryFrom<SlotRow> for Slot {
    type Error = StoreError;
    fn try_from(r: SlotRow) -> StoreResult<Slot> {
        Ok(Slot {
            saga_id: parse_saga_id(&r.saga_id)?,
            key: r.key,
            limit: r.slot_limit as u32,
            state: SlotState::parse(&r.state).map_err(StoreError::Corrupt)?,
            seq: r.seq,
            since: Timestamp(r.since),
        })
    }
}
