//! Persistence: one [`Store`] trait, one implementation per database.
//!
//! The store decides nothing about sagas. The runner computes every change
//! (a [`Transition`]: the saga row's new fields, ledger rows, resources,
//! pins) and the store writes it in one transaction if its [`Fence`] and the
//! saga's `version` still hold: a writer that lost its lease, or that
//! missed a change (a cancel, a pause), writes nothing and is told so. The
//! other primitives are as plain: create a saga (with the plugins it pins,
//! which foreign keys protect), claim ready sagas under a lease with a fresh
//! fencing number, renew and release leases, read. SQLite
//! ([`sqlite::SqliteStore`]) is the embedded default; PostgreSQL
//! ([`postgres::PgStore`]) lets several hosts share one queue, with lease
//! expiry on the database's clock.
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
      finished_at, executed_by, waiting_until, polls, wait_started_at, compensate_attempt_base, calls,
      received, correlation_key, attempt_base, wait_for)"
    };
}

/// A ledger upsert's conflict clause: the new row replaces the old.
macro_rules! step_on_conflict {
    () => {
        " ON CONFLICT (saga_id, step_index) DO UPDATE SET
     phase = excluded.phase, status = excluded.status, output = excluded.output, error = excluded.error,
     attempts = excluded.attempts, compensate_attempts = excluded.compensate_attempts, logs = excluded.logs,
     started_at = excluded.started_at, finished_at = excluded.finished_at, executed_by = excluded.executed_by,
     waiting_until = excluded.waiting_until, polls = excluded.polls, wait_started_at = excluded.wait_started_at,
     compensate_attempt_base = excluded.compensate_attempt_base, calls = excluded.calls,
     received = excluded.received, correlation_key = excluded.correlation_key,
     attempt_base = excluded.attempt_base, wait_for = excluded.wait_for"
    };
}

pub mod budgets;
pub mod drift;
mod error;
pub mod mailbox;
pub mod postgres;
mod rows;
pub mod schedules;
pub mod schema;
pub mod space;
pub mod sqlite;
pub mod webhooks;

pub use budgets::{BudgetStore, PutBudget, Take};
pub use drift::{DriftFinding, DriftStore};
pub use error::{StoreError, StoreResult, redact_url};
pub use mailbox::{MailboxStore, NewMessage, Posted};
pub(crate) use rows::*;
pub use schedules::{FireDone, ScheduleStore, StoredSchedule};
pub use schema::Schema;
pub use webhooks::WebhookStore;

use crate::model::Grants;
use crate::model::{
    Action, Blocked, Digest, Drift, OutboxEvent, PluginInfo, RecordedResource, Resource,
    ResourceState, SagaDetail, SagaError, SagaId, SagaRun, SagaStatus, SagaSummary, Slot,
    StepResult, StepSpec, Template, Timestamp,
};
use crate::model::{SealedSecret, SecretInfo, SecretName};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// What storing an uploaded plugin did. Either way the digest is now what
/// its name means (`current`); `previous` is the digest it replaced as
/// current for that name, if another one was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutPlugin {
    pub info: PluginInfo,
    /// False when the same digest was already stored.
    pub created: bool,
    pub previous: Option<Digest>,
}

/// What deleting a plugin did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletePlugin {
    Deleted,
    NotFound,
    /// Unfinished sagas pin it (some of their ids).
    Pinned(Vec<SagaId>),
}

/// Counts keys by their metric label (the key up to its first `:`).
pub(crate) fn count_prefixes(keys: impl Iterator<Item = String>) -> Vec<(String, u64)> {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for key in keys {
        *counts
            .entry(crate::model::key_prefix(&key).to_string())
            .or_default() += 1;
    }
    counts.into_iter().collect()
}

/// A saga to store, as the runner prepared it.
#[derive(Debug, Clone)]
pub struct NewSaga {
    pub saga: SagaRun,
    /// The idempotency key and the hash of the request: a repeat returns
    /// the first saga (or a conflict).
    pub idempotency: Option<(String, String)>,
    /// Stored already leased to this owner (its first claim), so that the
    /// host that creates it drives it without a claim round trip.
    pub lease: Option<Lease>,
    /// Ledger rows stored with it (the first step's running mark).
    pub ledger: Vec<StepResult>,
    /// When it may be claimed (`None`: not until a human acts).
    pub ready_at: Option<Timestamp>,
}

/// What putting a template did.
#[derive(Debug, Clone, PartialEq)]
pub struct PutTemplate {
    /// The latest version now.
    pub template: Template,
    /// No live version of that name existed (a first put, or after a
    /// delete).
    pub created: bool,
    /// False when the put said what the latest version already says (no
    /// new version).
    pub changed: bool,
}

/// Who holds a saga's lease, for how long.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: Arc<str>,
    pub ttl: Duration,
    /// The owner's clock (SQLite); PostgreSQL uses the database's.
    pub now: Timestamp,
}

/// What starting a saga did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateSaga {
    /// Stored (and, with a lease, claimed for the caller).
    Created(ClaimedSaga),
    /// The idempotency key was used before with the same request.
    Existing(SagaRun),
    /// The idempotency key was used before with another request.
    KeyConflict(SagaId),
    /// A plugin the plan pins is no longer stored (deleted meanwhile).
    PluginGone(Digest),
    /// Stored `pending`, queued on its concurrency keys: no lease, no
    /// ledger, not claimable until a slot frees.
    Queued(SagaRun),
    /// A concurrency key with `on_conflict: reject` has no room: nothing
    /// was stored.
    ConcurrencyConflict(Blocked),
}

/// What asking for a claimed saga's concurrency slots did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It holds every key now (or already did).
    Admitted,
    /// A key has no room: it stays queued, its lease given up and not
    /// claimable until a holder of its keys ends.
    Queued,
    /// The saga changed since the version given: read it again.
    Stale,
    /// Another host holds its lease.
    LeaseLost,
}

/// Filters of `GET /v1/sagas`, and where the page starts.
#[derive(Debug, Clone, Default)]
pub struct SagaFilter {
    pub status: Option<SagaStatus>,
    pub kind: Option<String>,
    pub deployment_id: Option<String>,
    pub template: Option<String>,
    /// Newest first; at most this many.
    pub limit: u32,
    /// Only sagas older than this one (created_at, id): the cursor.
    pub before: Option<(Timestamp, SagaId)>,
}

/// Filters of `GET /v1/resources`, and where the page starts.
#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    pub kind: Option<String>,
    pub deployment_id: Option<String>,
    pub saga_id: Option<SagaId>,
    pub state: Option<ResourceState>,
    pub drift: Option<Drift>,
    /// Ordered by kind, then external id; at most this many.
    pub limit: u32,
    /// Only resources after this (kind, external id): the cursor.
    pub after: Option<(String, String)>,
}

/// A saga claimed under a lease, with its ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedSaga {
    pub saga: SagaRun,
    pub ledger: Vec<StepResult>,
    /// The lease's fencing number: every write of this claim carries it.
    pub epoch: u64,
    /// It holds every concurrency slot it asked for (or asked for none):
    /// no admission is owed before its first step.
    pub slots_held: bool,
}

/// Who claims sagas, and for how long.
pub type Claim = Lease;

/// The state of a held lease, as seen when renewing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub saga_id: SagaId,
    /// False when another host took the saga or it was released.
    pub held: bool,
    pub cancel_requested: bool,
    pub pause_requested: bool,
}

/// What a transition's writer must still hold for it to apply (beside the
/// saga's `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// The lease this claim took: owner and fencing number.
    Lease { owner: Arc<str>, epoch: u64 },
    /// No live lease: the saga is not being driven (paused, waiting,
    /// ended). Bumps the fencing number, so a host whose lease had expired
    /// cannot write after it.
    Unleased,
    /// Nothing but the version: a request recorded on the saga (a cancel
    /// or pause flag), which whoever drives it reads.
    Version,
}

/// Changes to the saga row; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SagaUpdate {
    pub status: Option<SagaStatus>,
    pub current_step_index: Option<u32>,
    pub context: Option<Map<String, Value>>,
    pub error: Option<SagaError>,
    pub cancel_requested: Option<bool>,
    pub pause_requested: Option<bool>,
    pub actions: Option<Vec<Action>>,
    /// `Some(None)`: not claimable until a human acts.
    pub ready_at: Option<Option<Timestamp>>,
    /// A redrive: the saga's inputs and plan from now on, and its error
    /// cleared.
    pub redrive: Option<Redriven>,
    /// The error is cleared (an `in_doubt` step resolved).
    pub clear_error: bool,
}

/// What a redrive replaces on the saga row (see [`SagaUpdate::redrive`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Redriven {
    pub inputs: Value,
    pub plan: Vec<StepSpec>,
}

/// What happens to the saga's plugin pins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Pins {
    #[default]
    Keep,
    /// The saga ended: its plugins may be deleted now.
    Release,
    /// The saga runs again (a retry): pin these (fails if one is gone).
    Restore(Vec<Digest>),
}

/// One saga's move from one persisted state to the next, applied in one
/// transaction, only if the fence and the version still hold.
#[derive(Debug, Clone)]
pub struct Transition {
    pub saga_id: SagaId,
    pub fence: Fence,
    /// The version the writer last saw.
    pub version: u64,
    pub now: Timestamp,
    pub saga: SagaUpdate,
    /// Ledger rows to write (whole rows: insert or replace).
    pub steps: Vec<StepResult>,
    /// Ledger rows to remove (a running mark whose call never began).
    pub remove_steps: Vec<u32>,
    /// Resources recorded by the step whose result this is.
    pub resources: Vec<(u32, RecordedResource)>,
    /// Steps now compensated: the resources they recorded last are
    /// `removed` from the desired state.
    pub removed_resources: Vec<u32>,
    /// Give up the lease (the saga ended, waits or is paused).
    pub release_lease: bool,
    /// Give up its concurrency slots (the saga ended), and admit the
    /// sagas queued next on those keys that now fit.
    pub release_slots: bool,
    /// With `release_slots`: claim up to this many of the sagas the release
    /// admits for the writer, in the same transaction, so it drives them
    /// at once (a handoff with no claim round and no poll); the others are
    /// made claimable for any host.
    pub take_over: Option<TakeOver>,
    /// Take the saga's concurrency keys again (a retry of a saga that
    /// ended): holding when they have room, else queued at the back of
    /// the arrival order, the saga then claimable only once admitted.
    pub retake_slots: bool,
    /// A wait this transition opens, with its correlation key: the oldest
    /// message kept under the key goes to it in the same transaction
    /// (`store::mailbox`).
    pub take_message: Option<(u32, String)>,
    pub pins: Pins,
    /// Webhook events this change causes, written to the outbox in the
    /// same transaction (one delivery per subscribed endpoint).
    pub outbox: Vec<OutboxEvent>,
}

impl Transition {
    pub fn new(saga_id: SagaId, fence: Fence, version: u64, now: Timestamp) -> Transition {
        Transition {
            saga_id,
            fence,
            version,
            now,
            saga: SagaUpdate::default(),
            steps: Vec::new(),
            remove_steps: Vec::new(),
            resources: Vec::new(),
            removed_resources: Vec::new(),
            release_lease: false,
            release_slots: false,
            take_over: None,
            retake_slots: false,
            take_message: None,
            pins: Pins::Keep,
            outbox: Vec::new(),
        }
    }

    /// What this transition, written at `version`, makes of a copy of the
    /// saga read before it: the one way a writer's copy follows its own
    /// commits (the driver, an action's answer, the outbox's summary).
    pub fn apply_to_saga(&self, saga: &mut SagaRun, version: u64) {
        let u = &self.saga;
        if let Some(status) = u.status {
            saga.status = status;
        }
        if let Some(index) = u.current_step_index {
            saga.current_step_index = index;
        }
        if let Some(context) = &u.context {
            saga.context = context.clone();
        }
        if let Some(error) = &u.error {
            saga.error = Some(error.clone());
        }
        if let Some(flag) = u.cancel_requested {
            saga.cancel_requested = flag;
        }
        if let Some(flag) = u.pause_requested {
            saga.pause_requested = flag;
        }
        if let Some(actions) = &u.actions {
            saga.actions = actions.clone();
            saga.redrives = SagaRun::count_redrives(actions);
        }
        if let Some(redriven) = &u.redrive {
            saga.inputs = redriven.inputs.clone();
            saga.plan = redriven.plan.clone();
        }
        if u.redrive.is_some() || u.clear_error {
            saga.error = None;
        }
        saga.version = version;
        saga.updated_at = self.now;
    }

    /// [`Transition::apply_to_saga`], and the ledger rows it writes and
    /// removes.
    pub fn apply_to(
        &self,
        saga: &mut SagaRun,
        ledger: &mut std::collections::BTreeMap<u32, StepResult>,
        version: u64,
    ) {
        self.apply_to_saga(saga, version);
        for index in &self.remove_steps {
            ledger.remove(index);
        }
        for row in &self.steps {
            ledger.insert(row.index, row.clone());
        }
    }
}

/// Sagas a release may claim for its writer (see
/// [`Transition::take_over`]).
#[derive(Debug, Clone)]
pub struct TakeOver {
    pub lease: Lease,
    pub max: usize,
    /// What a saga claimed so becomes at once, decided by the runner
    /// from the saga and its ledger as claimed (with the lease's owner and
    /// time): its new status and its first step's running mark, written
    /// in the same transaction; `None` leaves it as it is.
    pub mark: HandoffMark,
}

/// See [`TakeOver::mark`].
pub type HandoffMark =
    fn(&SagaRun, &[StepResult], &str, Timestamp) -> Option<(SagaStatus, StepResult)>;

/// A saga a release admitted and claimed for its writer.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    pub claim: ClaimedSaga,
    /// Its first step was marked running for the writer, which owes that
    /// call.
    pub marked: bool,
}

impl Taken {
    /// A saga just claimed by a release for `t`'s writer (holding its
    /// slots), with [`TakeOver::mark`] applied: what the store is to write
    /// (its status, then the row), if anything, and the claim as it is
    /// once written.
    pub fn marking(
        saga: SagaRun,
        ledger: Vec<StepResult>,
        epoch: u64,
        t: &TakeOver,
    ) -> (Taken, Option<(SagaStatus, StepResult)>) {
        let mut claim = ClaimedSaga {
            saga,
            ledger,
            epoch,
            slots_held: true,
        };
        let mark = (t.mark)(&claim.saga, &claim.ledger, &t.lease.owner, t.lease.now);
        if let Some((status, row)) = &mark {
            claim.saga.status = *status;
            claim.saga.version += 1;
            claim.saga.updated_at = t.lease.now;
            claim.ledger.push(row.clone());
        }
        let marked = mark.is_some();
        (Taken { claim, marked }, mark)
    }
}

/// What applying a transition found.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Written; the saga is now at this version.
    Done {
        version: u64,
        /// Ending it made sagas queued on its concurrency keys claimable
        /// by any host.
        woke: bool,
        /// The sagas it admitted and claimed for the writer
        /// ([`Transition::take_over`]).
        taken: Vec<Taken>,
    },
    /// Not written: the saga changed since the writer read it (a request,
    /// another writer). Read it again and decide again.
    Stale,
}

/// A wake-up from another host sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Work may be waiting: a saga was started unclaimed, or leases were
    /// released.
    Work,
    /// The connection that listens was lost and made again: notices may
    /// have been missed (look for work, read access again).
    Reconnected,
    /// A request was recorded for this saga: a cancel (`true`) or a pause.
    Request { id: SagaId, cancel: bool },
    /// A grant or a secret changed: what plugins may reach is to be read
    /// again.
    AccessChanged,
    /// A transition was written to this saga, which is now at `version`
    /// (for live events on every host), by the lease holder `origin` (empty
    /// for a request or an unleased write).
    Changed {
        id: SagaId,
        version: u64,
        origin: String,
    },
}

/// How the store is doing, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Reads work, writes fail (a full disk): the message says why.
    Degraded(String),
}

/// The persistence the runner and the API need.
#[async_trait]
pub trait Store:
    WebhookStore + BudgetStore + MailboxStore + DriftStore + ScheduleStore + Send + Sync + 'static
{
    /// Which database this is ("sqlite", "postgres").
    fn backend(&self) -> &'static str;

    /// Answers when the database answers; degraded while writes fail.
    async fn health(&self) -> StoreResult<Health>;

    /// The database's schema against this binary's migrations.
    async fn schema(&self) -> StoreResult<Schema>;

    /// Stores a plugin (or finds it stored) and makes it current for its
    /// name.
    async fn put_plugin(&self, info: &PluginInfo, wasm: &[u8]) -> StoreResult<PutPlugin>;
    async fn plugin(&self, digest: &Digest) -> StoreResult<Option<PluginInfo>>;
    /// The current plugin of that name.
    async fn plugin_by_name(&self, name: &str) -> StoreResult<Option<PluginInfo>>;
    async fn plugin_bytes(&self, digest: &Digest) -> StoreResult<Option<Vec<u8>>>;
    /// Newest first.
    async fn list_plugins(&self) -> StoreResult<Vec<PluginInfo>>;
    /// Refused while an unfinished saga pins the plugin.
    async fn delete_plugin(&self, digest: &Digest) -> StoreResult<DeletePlugin>;

    /// Stores a new saga with its pins, unless a pinned plugin is gone.
    async fn create_saga(&self, new: NewSaga) -> StoreResult<CreateSaga>;
    async fn saga(&self, id: SagaId) -> StoreResult<Option<SagaDetail>>;
    /// The saga as people read it (the API, the console, a stream's
    /// snapshot): a step output over `shown_bytes` is left in the database
    /// (`output` null, `output_omitted` its size), so a read never holds
    /// every output of a large saga at once.
    async fn saga_shown(&self, id: SagaId, shown_bytes: usize) -> StoreResult<Option<SagaDetail>>;
    /// One step's whole output, as stored (JSON text).
    async fn step_output(&self, id: SagaId, index: u32) -> StoreResult<Option<String>>;
    /// How many sagas are in `status` (for /metrics: `pending`, started and
    /// not yet taken by a host; `in_doubt`, waiting for a human).
    async fn count_status(&self, status: SagaStatus) -> StoreResult<u64>;
    /// Newest first, from the filter's cursor.
    async fn list_sagas(&self, filter: &SagaFilter) -> StoreResult<Vec<SagaSummary>>;
    /// The desired-state ledger, by kind and external id, from the
    /// filter's cursor.
    async fn list_resources(&self, filter: &ResourceFilter) -> StoreResult<Vec<Resource>>;

    /// Claims up to `limit` sagas that are ready at `claim.now` and whose
    /// lease is free or expired, oldest ready first; each claim bumps the
    /// saga's fencing number.
    async fn claim_sagas(&self, claim: &Claim, limit: usize) -> StoreResult<Vec<ClaimedSaga>>;
    /// Extends the leases `owner` holds (saga, epoch), and reports on each.
    async fn renew_leases(
        &self,
        owner: &str,
        held: &[(SagaId, u64)],
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<Vec<LeaseState>>;
    /// Gives up leases (at shutdown).
    async fn release_leases(&self, owner: &str, held: &[(SagaId, u64)]) -> StoreResult<()>;
    /// Applies a transition atomically, if its fence and version hold.
    async fn apply(&self, transition: Transition) -> StoreResult<Applied>;

    /// Takes a claimed `pending` saga's concurrency slots if every key has
    /// room (in arrival order), under its lease and at `version`; else
    /// leaves it queued, gives up its lease and makes it unclaimable until
    /// a holder of one of its keys ends.
    async fn admit_saga(
        &self,
        id: SagaId,
        owner: &str,
        epoch: u64,
        version: u64,
        now: Timestamp,
    ) -> StoreResult<Admission>;

    /// The live slots (holding, then queued) of a key, in arrival order.
    async fn concurrency_key(&self, key: &str) -> StoreResult<Vec<Slot>>;

    /// Queued slots per key prefix (the key up to its first `:`).
    async fn queued_by_prefix(&self) -> StoreResult<Vec<(String, u64)>>;

    /// Notices from the other hosts sharing this database, or `None` when
    /// no other host can share it (SQLite).
    async fn notices(&self) -> StoreResult<Option<futures::stream::BoxStream<'static, Notice>>> {
        Ok(None)
    }

    /// Tells the other hosts about a request recorded on a saga (they may
    /// be driving it). Nothing to do where no other host can share the
    /// database.
    async fn announce_request(&self, _id: SagaId, _cancel: bool) -> StoreResult<()> {
        Ok(())
    }

    /// Deletes up to `limit` sagas that ended before `before` (oldest
    /// first), with their ledger, pins and resource history; the resource
    /// ledger keeps their rows. Returns how many were deleted.
    async fn delete_ended(&self, before: Timestamp, limit: usize) -> StoreResult<usize>;

    /// Stores `template` as its name's next version (numbering goes on
    /// after a delete), unless it says what the latest live version says.
    /// Its `version` is ignored.
    async fn put_template(&self, template: &Template) -> StoreResult<PutTemplate>;
    /// The latest version, or that version, of a template not deleted.
    async fn template(&self, name: &str, version: Option<u32>) -> StoreResult<Option<Template>>;
    /// The latest version of each template not deleted, by name.
    async fn list_templates(&self) -> StoreResult<Vec<Template>>;
    /// Deletes every version; `false` when there was none live.
    async fn delete_template(&self, name: &str, now: Timestamp) -> StoreResult<bool>;

    /// What a plugin name is granted, if anything.
    async fn grants(&self, plugin_name: &str) -> StoreResult<Option<Grants>>;
    /// Replaces what a plugin name is granted.
    async fn put_grants(
        &self,
        plugin_name: &str,
        grants: &Grants,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Stores a secret (a new one, or a new value and origins for one).
    async fn put_secret(&self, secret: &SealedSecret) -> StoreResult<()>;
    /// Every secret, by name, without values.
    async fn list_secrets(&self) -> StoreResult<Vec<SecretInfo>>;
    /// `false` when there was none of that name.
    async fn delete_secret(&self, name: &SecretName) -> StoreResult<bool>;
    /// The sealed secrets of these names that exist.
    async fn sealed_secrets(&self, names: &[SecretName]) -> StoreResult<Vec<SealedSecret>>;

    /// Stores a console session, and drops the ones expired by `now`.
    async fn put_session(&self, session: &ConsoleSession, now: Timestamp) -> StoreResult<()>;
    /// The session whose id hashes to `id_sha256`, unless it expired by
    /// `now` (or was revoked).
    async fn session(&self, id_sha256: &str, now: Timestamp)
    -> StoreResult<Option<ConsoleSession>>;
    /// Revokes a session (a logout); nothing when there is none.
    async fn delete_session(&self, id_sha256: &str) -> StoreResult<()>;

    /// Tells the other hosts that a grant or secret changed.
    async fn announce_access(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Resolves when writes that failed for want of space may succeed
    /// again; never, where the store cannot tell (callers retry on a
    /// timer as well).
    async fn writable(&self) {
        futures::future::pending::<()>().await
    }

    /// Tells the other hosts that work is ready (a resumed saga).
    async fn announce_work(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// The ledger columns with the output left out past `shown_bytes`.
pub(crate) fn shown_step_columns(shown_bytes: usize) -> String {
    STEP_COLUMNS.replacen(
        "output,",
        &format!("CASE WHEN octet_length(output) <= {shown_bytes} THEN output END AS output,"),
        1,
    )
}

/// Marks the ledger rows whose outputs a shown read left out:
/// `(index, bytes)`.
pub(crate) fn mark_omitted(steps: &mut [StepResult], omitted: &[(i64, i64)]) {
    for (index, bytes) in omitted {
        if let Some(step) = steps.iter_mut().find(|s| i64::from(s.index) == *index) {
            step.output = None;
            step.output_omitted = Some(*bytes as u64);
        }
    }
}

/// A console session as stored: the SHA-256 (hex) of its id, never the id,
/// and of the token that logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub id_sha256: String,
    pub label: String,
    pub token_sha256: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl ConsoleSession {
    /// A row of `console_sessions`, in its columns' order.
    pub(crate) fn from_row(
        (id_sha256, label, token_sha256, created, expires): (String, String, String, i64, i64),
    ) -> ConsoleSession {
        ConsoleSession {
            id_sha256,
            label,
            token_sha256,
            created_at: Timestamp(created),
            expires_at: Timestamp(expires),
        }
    }
}

/// Opens the store a database URL names: `sqlite://path` (or a plain
/// path) or `postgres://...`.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    open_with(url, &crate::config::StoreConfig::default()).await
}

/// [`open`], with the store's settings.
pub async fn open_with(
    url: &str,
    config: &crate::config::StoreConfig,
) -> StoreResult<Arc<dyn Store>> {
    let sqlite_path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .or_else(|| (!url.contains("://")).then_some(url));
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect_with(url, config).await?,
        ))
    } else if let Some(path) = sqlite_path {
        Ok(Arc::new(
            sqlite::SqliteStore::open_with(std::path::Path::new(path), config).await?,
        ))
    } else {
        Err(StoreError::BadUrl(format!(
            "`{}`: use sqlite://PATH or postgres://USER@HOST/DB",
            redact_url(url)
        )))
    }
}
