//! Schedules' persistence (docs/schedules.md): one row per schedule with
//! the nominal time it fires next, and one row per fire.
//!
//! Hosts need no leader to fire a schedule. The fire row of a nominal time
//! is the claim: the host whose insert lands acts on it, and a claim whose
//! host died is taken over after its lease. The host that finishes a fire
//! records its outcome and moves the schedule's next time forward in one
//! transaction, and only from the nominal time it fired, so a host that
//! read the schedule before is refused. The saga a fire starts carries the
//! idempotency key `schedule:NAME:NOMINAL`, so even a fire acted on twice
//! (a claim taken over from a host that had started the saga) starts one.
//! A [`Store`](super::Store) is a [`ScheduleStore`]; each backend
//! implements it in its own `schedules` module.

use super::StoreResult;
use crate::model::{Fire, FireOutcome, SagaId, Schedule, ScheduleSpec, Timestamp};
use async_trait::async_trait;

/// A schedule and the nominal time it fires next (`None` while paused).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSchedule {
    pub schedule: Schedule,
    pub next_fire_at: Option<Timestamp>,
}

/// What a host did with a fire it claimed.
#[derive(Debug, Clone)]
pub struct FireDone {
    pub schedule: String,
    pub nominal_at: Timestamp,
    /// The host that claimed it: another's claim is not overwritten.
    pub owner: String,
    pub fired_at: Timestamp,
    pub outcome: FireOutcome,
    pub saga_id: Option<SagaId>,
    pub reason: Option<String>,
    /// Fired by hand: the schedule's next nominal time stays.
    pub manual: bool,
    /// The schedule's next nominal time (`None`: its calendar ends), set
    /// only if it still is `nominal_at`.
    pub next_fire_at: Option<Timestamp>,
}

/// Schedules and their fires.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates or replaces a schedule (its `created_at` and fires kept),
    /// firing next at `next_fire_at`. True when it was created.
    async fn put_schedule(
        &self,
        schedule: &Schedule,
        next_fire_at: Option<Timestamp>,
    ) -> StoreResult<bool>;
    async fn schedule(&self, name: &str) -> StoreResult<Option<StoredSchedule>>;
    /// Every schedule, by name.
    async fn list_schedules(&self) -> StoreResult<Vec<StoredSchedule>>;
    /// Deletes a schedule and its fires; the sagas it started stay.
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool>;
    /// Pauses (`next_fire_at` none) or resumes a schedule. False when
    /// there is no such schedule.
    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_fire_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Unpaused schedules due at `now`, soonest first, at most `limit`.
    async fn due_schedules(&self, now: Timestamp, limit: usize)
    -> StoreResult<Vec<StoredSchedule>>;
    /// The soonest nominal time of any unpaused schedule.
    async fn next_schedule_due(&self) -> StoreResult<Option<Timestamp>>;
    /// Claims the fire of `schedule` at `nominal_at` for `owner`: true
    /// when no host has, or when the one that did has neither finished it
    /// nor renewed its claim since `stale_before`.
    async fn claim_fire(
        &self,
        schedule: &str,
        nominal_at: Timestamp,
        owner: &str,
        now: Timestamp,
        stale_before: Timestamp,
        manual: bool,
    ) -> StoreResult<bool>;
    /// Records a claimed fire's outcome and moves the schedule on (see
    /// [`FireDone`]); keeps the newest `keep` fires. False when the claim
    /// was no longer `owner`'s.
    async fn finish_fire(&self, done: &FireDone, keep: usize) -> StoreResult<bool>;
    /// Records nominal times no host fired in time as one `missed` fire at
    /// `from`, and moves the schedule from `from` to `to` (`None`: its
    /// calendar ends), if it still fires next at `from`.
    async fn miss_fires(
        &self,
        schedule: &str,
        from: Timestamp,
        to: Option<Timestamp>,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// The newest `limit` fires of a schedule, newest first.
    async fn schedule_fires(&self, schedule: &str, limit: usize) -> StoreResult<Vec<Fire>>;
    /// The saga stored under an idempotency key, if any.
    async fn saga_by_idempotency_key(&self, key: &str) -> StoreResult<Option<SagaId>>;
}

/// The schedule columns, in [`ScheduleRow`]'s order.
pub(crate) const SCHEDULE_COLUMNS: &str =
    "name, spec, paused, next_fire_at, created_at, updated_at";

/// A schedule row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ScheduleRow {
    pub name: String,
    pub spec: String,
    pub paused: bool,
    pub next_fire_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ScheduleRow {
    pub fn into_stored(self) -> StoreResult<StoredSchedule> {
        let spec: ScheduleSpec = super::rows::from_json("schedule spec", &self.spec)?;
        Ok(StoredSchedule {
            schedule: Schedule {
                name: self.name,
                spec,
                paused: self.paused,
                created_at: Timestamp(self.created_at),
                updated_at: Timestamp(self.updated_at),
            },
            next_fire_at: self.next_fire_at.map(Timestamp),
        })
    }
}

/// The fire columns, in [`FireRow`]'s order.
pub(crate) const FIRE_COLUMNS: &str = "nominal_at, fired_at, outcome, saga_id, reason, manual";

/// A fire row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct FireRow {
    pub nominal_at: i64,
    pub fired_at: Option<i64>,
    pub outcome: Option<String>,
    pub saga_id: Option<String>,
    pub reason: Option<String>,
    pub manual: bool,
}

impl FireRow {
    pub fn into_fire(self) -> StoreResult<Fire> {
        Ok(Fire {
            nominal_at: Timestamp(self.nominal_at),
            fired_at: self.fired_at.map(Timestamp),
            outcome: self
                .outcome
                .map(|o| FireOutcome::parse(&o).map_err(super::StoreError::Corrupt))
                .transpose()?,
            saga_id: self
                .saga_id
                .as_deref()
                .map(super::rows::parse_saga_id)
                .transpose()?,
            reason: self.reason,
            manual: self.manual,
        })
    }
}
