//! What a redrive asks and answers (docs/recovery.md): a `failed` or
//! `rolled_back` saga driven forward again from a chosen step, by one of
//! three modes. The rules that turn a request into a plan are the runner's
//! (`runner::redrive`); these are the shapes clients send and read.

use super::{Digest, SagaId, SagaStatus, StepStatus, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// How a redrive goes forward again.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RedriveMode {
    /// From the first step whose work is not in effect (the failed step, or
    /// step 0 of a rolled-back saga): what completed before it is kept.
    #[default]
    Resume,
    /// From `from_step`, executing again even steps that had completed.
    Rerun,
    /// Compensates what is in effect from the last step down to
    /// `from_step`, then executes forward from it.
    Rewind,
}

/// Which plugin each step executed again runs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RedrivePlugins {
    /// The digests pinned when the saga started.
    #[default]
    Pinned,
    /// The newest upload of each step's plugin, pinned from now on.
    Current,
}

/// A step named by its index in the plan or by its name (the first step of
/// that name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StepRef {
    Index(u32),
    Name(String),
}

/// `POST /v1/sagas/{id}/redrive`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Where `rerun` and `rewind` start; `resume` finds its own step (and
    /// refuses another).
    #[serde(default)]
    pub from_step: Option<StepRef>,
    #[serde(default)]
    pub mode: RedriveMode,
    /// A JSON merge patch (RFC 7396) on the saga's inputs, checked against
    /// its template's `inputs_schema`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub inputs_patch: Option<Value>,
    #[serde(default)]
    pub plugins: RedrivePlugins,
    /// Why; kept on the `redrive` action.
    #[serde(default)]
    pub note: Option<String>,
    /// Answer the plan and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a redrive does to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RedriveDoes {
    /// Its work is in effect and its output stays in the context.
    Keep,
    /// Executed again.
    Execute,
    /// Compensated (what is in effect of it is undone), then executed again.
    CompensateThenExecute,
}

/// One step of a redrive's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RedriveStep {
    pub index: u32,
    pub name: String,
    /// Its ledger status before the redrive; `null` if it never ran.
    pub status: Option<StepStatus>,
    pub does: RedriveDoes,
    /// The plugin that runs it from now on.
    pub plugin: Digest,
    /// `plugins: current` changed its digest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plugin_changed: bool,
}

/// A redrive's plan: what it did, or (`dry_run`) would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RedrivePlan {
    pub saga_id: SagaId,
    pub mode: RedriveMode,
    /// The first step executed again.
    pub from_step: u32,
    pub dry_run: bool,
    pub steps: Vec<RedriveStep>,
}

/// Which sagas `POST /v1/sagas/redrive` redrives: `failed` and
/// `rolled_back` ones (or the one `status` named), matching every field
/// given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveFilter {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    /// `failed` or `rolled_back`; both when absent.
    #[serde(default)]
    pub status: Option<SagaStatus>,
    /// A substring of the saga's error message.
    #[serde(default)]
    pub error_contains: Option<String>,
    /// Started at or after (RFC 3339).
    #[serde(default)]
    pub started_after: Option<Timestamp>,
    /// Started before (RFC 3339).
    #[serde(default)]
    pub started_before: Option<Timestamp>,
}

/// `POST /v1/sagas/redrive`: one redrive for every saga the filter finds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRedriveRequest {
    pub filter: RedriveFilter,
    #[serde(default)]
    pub from_step: Option<StepRef>,
    #[serde(default)]
    pub mode: RedriveMode,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub inputs_patch: Option<Value>,
    #[serde(default)]
    pub plugins: RedrivePlugins,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

impl BulkRedriveRequest {
    /// The redrive each saga found gets.
    pub fn each(&self) -> RedriveRequest {
        RedriveRequest {
            from_step: self.from_step.clone(),
            mode: self.mode,
            inputs_patch: self.inputs_patch.clone(),
            plugins: self.plugins,
            note: self.note.clone(),
            dry_run: self.dry_run,
        }
    }
}

/// A saga the bulk redrive found and could not redrive, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RedriveRefusal {
    pub saga_id: SagaId,
    pub error: String,
}

/// What `POST /v1/sagas/redrive` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BulkRedrive {
    /// The sagas redriven (or, on a dry run, that would be), oldest first.
    pub redriven: Vec<SagaId>,
    pub refused: Vec<RedriveRefusal>,
    /// On a dry run: each saga's plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<RedrivePlan>,
}

/// A saga's inputs with a redrive's `inputs_patch` merged in (RFC 7396:
/// `null` removes a field).
pub fn patched_inputs(inputs: &Value, patch: Option<&Value>) -> Value {
    let mut inputs = inputs.clone();
    if let Some(patch) = patch {
        json_patch::merge(&mut inputs, patch);
    }
    inputs
}
