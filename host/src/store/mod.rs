//! Persistence: one [`Store`] trait, one implementation per database.
//!
//! The runner and the API see only the trait. The saga state machine lives
//! in the runner: it computes each [`Transition`] (a step result, the saga's
//! context and `current_step_index`, resources, and where it can the next
//! step's running mark) and the store applies it in one transaction, fenced
//! by the saga's lease, so that an acknowledged transition is on disk and a
//! host that lost its lease cannot write over the new owner. SQLite
//! ([`sqlite::SqliteStore`]) is the embedded default; PostgreSQL
//! ([`postgres::PgStore`]) lets several hosts share one queue.
//!
//! Timestamps are stored as milliseconds since the epoch, and JSON documents
//! (plan, inputs, context, outputs, logs, errors, specs) as text, so both
//! databases hold the same shapes and the same queries read them back.

/// `INSERT INTO saga_step_results (<every column>)`, for both backends'
/// ledger upserts (the same SQL in SQLite and PostgreSQL).
macro_rules! step_insert {
    () => {
        "INSERT INTO saga_step_results
     (saga_id, step_index, phase, status, output, error, attempts, compensate_attempts, logs, started_at,
      finished_at, executed_by)"
    };
}

/// A ledger upsert's conflict clause: the new row replaces the old.
macro_rules! step_on_conflict {
    () => {
        " ON CONFLICT (saga_id, step_index) DO UPDATE SET
     phase = excluded.phase, status = excluded.status, output = excluded.output, error = excluded.error,
     attempts = excluded.attempts, compensate_attempts = excluded.compensate_attempts, logs = excluded.logs,
     started_at = excluded.started_at, finished_at = excluded.finished_at, executed_by = excluded.executed_by"
    };
}

pub mod postgres;
pub mod sqlite;

use crate::model::{
    Digest, LedgerLogLine, Phase, PluginInfo, RecordedResource, SagaDetail, SagaError, SagaId,
    SagaRun, SagaStatus, StepResult, StepStatus, Timestamp,
};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The saga's lease is held by another host (or was released): the
    /// caller must stop working on it.
    #[error("the lease on saga {0} is no longer held by this host")]
    LeaseLost(SagaId),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row that does not parse: a bug or a hand-edited database.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Another process has the embedded database open.
    #[error("{0}")]
    Locked(String),
    #[error("the database URL is not supported: {0}")]
    BadUrl(String),
    /// A write that did not reach the disk (the transaction did not begin
    /// or commit); nothing of it was applied.
    #[error("the database write failed: {0}")]
    WriteFailed(String),
    #[error("the store is shut down")]
    Closed,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What storing an uploaded plugin did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutPlugin {
    Created(PluginInfo),
    /// The same digest was already stored.
    Existing(PluginInfo),
}

/// What deleting a plugin did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletePlugin {
    Deleted,
    NotFound,
    /// Unfinished sagas pin it (some of their ids).
    Pinned(Vec<SagaId>),
}

/// What starting a saga did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateSaga {
    /// Stored; with a claim, also claimed (and maybe started) for the caller.
    Created(ClaimedSaga),
    /// The idempotency key was used before with the same request.
    Existing(SagaRun),
    /// The idempotency key was used before with another request.
    KeyConflict(SagaId),
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelSaga {
    /// The flag is set (or already was); the runner does the rest.
    Requested(SagaRun),
    /// The saga had already ended.
    AlreadyEnded(SagaRun),
    NotFound,
}

/// Filters of `GET /v1/sagas`.
#[derive(Debug, Clone, Default)]
pub struct SagaFilter {
    pub status: Option<SagaStatus>,
    pub kind: Option<String>,
    pub deployment_id: Option<String>,
    /// Newest first; at most this many.
    pub limit: u32,
}

/// A saga the runner claimed, with its ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedSaga {
    pub saga: SagaRun,
    pub ledger: Vec<StepResult>,
    /// The claim also started it: step 0 is marked running with attempt 1
    /// and has not been called yet.
    pub first_step_started: bool,
}

/// Who claims sagas, and until when.
#[derive(Debug, Clone)]
pub struct Claim {
    pub owner: Arc<str>,
    pub now: Timestamp,
    pub lease_until: Timestamp,
    /// Start the pending sagas claimed (unless cancelled): status running,
    /// step 0 marked running with attempt 1, in the claim's transaction,
    /// which saves the runner a commit per saga.
    pub start_pending: bool,
}

/// The state of a held lease, as seen when renewing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub saga_id: SagaId,
    /// False when another host took the saga or it was released.
    pub held: bool,
    pub cancel_requested: bool,
}

/// Changes to the saga row in a transition; `None` leaves a field as is.
#[derive(Debug, Clone, Default)]
pub struct SagaUpdate {
    pub status: Option<SagaStatus>,
    pub current_step_index: Option<u32>,
    pub context: Option<Map<String, Value>>,
    pub error: Option<SagaError>,
}

/// One saga's move from one persisted state to the next, applied in one
/// transaction, only while `owner` holds the saga's lease.
#[derive(Debug, Clone)]
pub struct Transition {
    pub saga_id: SagaId,
    pub owner: Arc<str>,
    pub now: Timestamp,
    pub saga: SagaUpdate,
    /// Ledger rows to write (whole rows: insert or replace).
    pub steps: Vec<StepResult>,
    /// Resources recorded by the step whose result this is.
    pub resources: Vec<(u32, RecordedResource)>,
    /// The next step's running mark, written only if no cancel was
    /// requested (checked inside the transaction): no step starts after a
    /// cancel was observed. It also sets the saga `running` at its index.
    pub start: Option<StepResult>,
}

impl Transition {
    pub fn new(saga_id: SagaId, owner: Arc<str>, now: Timestamp) -> Transition {
        Transition {
            saga_id,
            owner,
            now,
            saga: SagaUpdate::default(),
            steps: Vec::new(),
            resources: Vec::new(),
            start: None,
        }
    }
}

impl Transition {
    /// The ledger rows to write, in order (results, then the next running
    /// mark), each with whether it is written despite a requested cancel: a
    /// cancel blocks a step from starting to execute, never a result or
    /// compensation.
    pub(crate) fn ledger_rows(&self) -> impl Iterator<Item = (&StepResult, bool)> {
        self.steps
            .iter()
            .map(|s| (s, true))
            .chain(self.start.iter().map(|s| (s, s.phase != Phase::Execute)))
    }
}

/// A ledger row as JSON, for PostgreSQL's statements that take their rows
/// as JSON (`jsonb_to_recordset`).
pub(crate) fn ledger_row_json(
    step: &StepResult,
    ignore_cancel: bool,
) -> serde_json::Map<String, serde_json::Value> {
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
        "ignore_cancel": ignore_cancel,
    }) else {
        unreachable!("an object literal")
    };
    row
}

/// What applying a transition found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub cancel_requested: bool,
    /// Whether `start` was written (false when a cancel was requested).
    pub started: bool,
}

impl Applied {
    /// What applying `t` found, once its saga's cancel flag is known.
    pub(crate) fn found(t: &Transition, cancel_requested: bool) -> Applied {
        Applied {
            cancel_requested,
            // A cancel blocks a step from starting to execute, never compensation.
            started: t
                .start
                .as_ref()
                .is_some_and(|s| !(cancel_requested && s.phase == Phase::Execute)),
        }
    }
}

/// A wake-up from another host sharing the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Work may be waiting: a saga was started unclaimed, or leases were
    /// released (also sent after a lost connection, when notices may have
    /// been missed).
    Work,
    /// A cancel was recorded for this saga.
    Cancel(SagaId),
}

/// The persistence the runner and the API need.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which database this is ("sqlite", "postgres").
    fn backend(&self) -> &'static str;

    /// Answers when the database answers.
    async fn health(&self) -> StoreResult<()>;

    async fn put_plugin(&self, info: &PluginInfo, wasm: &[u8]) -> StoreResult<PutPlugin>;
    async fn plugin(&self, digest: &Digest) -> StoreResult<Option<PluginInfo>>;
    /// The newest upload of that name.
    async fn plugin_by_name(&self, name: &str) -> StoreResult<Option<PluginInfo>>;
    async fn plugin_bytes(&self, digest: &Digest) -> StoreResult<Option<Vec<u8>>>;
    /// Newest first.
    async fn list_plugins(&self) -> StoreResult<Vec<PluginInfo>>;
    /// Refused while an unfinished saga pins the plugin.
    async fn delete_plugin(&self, digest: &Digest) -> StoreResult<DeletePlugin>;

    /// Stores a new saga (status pending). With an idempotency key and the
    /// hash of the request, a repeat returns the first saga (or a conflict).
    /// With a claim, the new saga is stored already claimed (and, with
    /// `start_pending`, started), for a runner that drives it at once.
    async fn create_saga(
        &self,
        saga: &SagaRun,
        idempotency: Option<(&str, &str)>,
        claim: Option<&Claim>,
    ) -> StoreResult<CreateSaga>;
    async fn saga(&self, id: SagaId) -> StoreResult<Option<SagaDetail>>;
    async fn list_sagas(&self, filter: &SagaFilter) -> StoreResult<Vec<SagaRun>>;
    async fn request_cancel(&self, id: SagaId, now: Timestamp) -> StoreResult<CancelSaga>;

    /// Claims up to `limit` unfinished sagas whose lease is free or expired
    /// at `claim.now`, oldest first.
    async fn claim_sagas(&self, claim: &Claim, limit: usize) -> StoreResult<Vec<ClaimedSaga>>;
    /// Extends the leases `owner` holds on `ids`, and reports on each.
    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[SagaId],
        until: Timestamp,
    ) -> StoreResult<Vec<LeaseState>>;
    /// Gives up leases (at shutdown, or when a saga ends).
    async fn release_leases(&self, owner: &str, ids: &[SagaId]) -> StoreResult<()>;
    /// Applies a transition atomically, fenced by the lease.
    async fn apply(&self, transition: Transition) -> StoreResult<Applied>;

    /// Notices from the other hosts sharing this database, or `None` when
    /// no other host can share it (SQLite).
    async fn notices(&self) -> StoreResult<Option<futures::stream::BoxStream<'static, Notice>>> {
        Ok(None)
    }
}

/// Opens the store a database URL names: `sqlite://path` (or a plain
/// path) or `postgres://...`.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Ok(Arc::new(
            sqlite::SqliteStore::open(std::path::Path::new(path)).await?,
        ))
    } else if !url.contains("://") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(std::path::Path::new(url)).await?,
        ))
    } else {
        Err(StoreError::BadUrl(format!(
            "`{}`: use sqlite://PATH or postgres://USER@HOST/DB",
            redact_url(url)
        )))
    }
}

/// The URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The effect of `Claim::start_pending` on a claimed or created saga: the
/// saga as it is once started, and its first ledger row. `None` when it
/// must not start (not pending, cancelled, or the claim does not start).
pub(crate) fn start_of(saga: &SagaRun, claim: &Claim) -> Option<(SagaRun, StepResult)> {
    if !claim.start_pending || saga.status != SagaStatus::Pending || saga.cancel_requested {
        return None;
    }
    let spec = saga.plan.first()?;
    let row = StepResult::first_attempt(0, spec, &claim.owner, claim.now);
    Some((
        SagaRun {
            status: SagaStatus::Running,
            updated_at: claim.now,
            ..saga.clone()
        },
        row,
    ))
}

/// Parses the JSON of a stored column.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("model types serialize")
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
}

impl StepRow {
    /// The ledger row, named and pinned from the saga's plan.
    pub(crate) fn into_result(self, plan: &[crate::model::StepSpec]) -> StoreResult<StepResult> {
        let index = self.step_index as u32;
        let spec = plan.get(index as usize).ok_or_else(|| {
            StoreError::Corrupt(format!("ledger row for step {index} beyond the plan"))
        })?;
        Ok(StepResult {
            index,
            name: spec.name.clone(),
            plugin: spec.plugin.clone(),
            status: self
                .status
                .parse::<StepStatus>()
                .map_err(StoreError::Corrupt)?,
            phase: self.phase.parse::<Phase>().map_err(StoreError::Corrupt)?,
            attempts: self.attempts as u32,
            compensate_attempts: self.compensate_attempts as u32,
            output: self
                .output
                .as_deref()
                .map(|o| from_json("step output", o))
                .transpose()?,
            error: self.error,
            logs: from_json::<Vec<LedgerLogLine>>("step logs", &self.logs)?,
            started_at: self.started_at.map(Timestamp),
            finished_at: self.finished_at.map(Timestamp),
            executed_by: self.executed_by,
        })
    }
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
    pub deployment_id: Option<String>,
    pub triggered_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The saga columns every query selects, in [`SagaRow`]'s order.
pub(crate) const SAGA_COLUMNS: &str = "id, kind, status, steps, inputs, current_step_index, context, error, \
     cancel_requested, deployment_id, triggered_by, created_at, updated_at";

/// The ledger columns every query selects, in [`StepRow`]'s order.
pub(crate) const STEP_COLUMNS: &str = "step_index, phase, status, output, error, attempts, compensate_attempts, \
     logs, started_at, finished_at, executed_by";

impl TryFrom<SagaRow> for SagaRun {
    type Error = StoreError;
    fn try_from(r: SagaRow) -> StoreResult<SagaRun> {
        Ok(SagaRun {
            id: r
                .id
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("saga id {}: {e}", r.id)))?,
            kind: r.kind,
            status: r.status.parse().map_err(StoreError::Corrupt)?,
            current_step_index: r.current_step_index as u32,
            inputs: from_json("saga inputs", &r.inputs)?,
            context: from_json("saga context", &r.context)?,
            error: r
                .error
                .as_deref()
                .map(|e| from_json("saga error", e))
                .transpose()?,
            cancel_requested: r.cancel_requested,
            deployment_id: r.deployment_id,
            triggered_by: r.triggered_by,
            plan: from_json("saga steps", &r.steps)?,
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

impl TryFrom<ResourceRow> for crate::model::SagaResource {
    type Error = StoreError;
    fn try_from(r: ResourceRow) -> StoreResult<Self> {
        Ok(crate::model::SagaResource {
            step_index: r.step_index as u32,
            kind: r.kind,
            external_id: r.external_id,
            spec: from_json("resource spec", &r.spec)?,
            spec_version: r.spec_version as u32,
            created_at: Timestamp(r.created_at),
        })
    }
}

/// A plugin row as stored (without the bytes).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PluginRow {
    pub digest: String,
    pub name: String,
    pub size: i64,
    pub created_at: i64,
}

impl TryFrom<PluginRow> for PluginInfo {
    type Error = StoreError;
    fn try_from(r: PluginRow) -> StoreResult<Self> {
        Ok(PluginInfo {
            digest: r
                .digest
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("{e}")))?,
            name: r.name,
            size: r.size as u64,
            created_at: Timestamp(r.created_at),
        })
    }
}

/// A delete refused because of the unfinished sagas `ids` (as stored).
fn pinned_by(ids: &[String]) -> StoreResult<DeletePlugin> {
    ids.iter()
        .map(|id| {
            id.parse()
                .map_err(|e| StoreError::Corrupt(format!("saga id {id}: {e}")))
        })
        .collect::<StoreResult<Vec<SagaId>>>()
        .map(DeletePlugin::Pinned)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://./data/w.db"), "sqlite://./data/w.db");
    }
}
