//! Firing schedules (docs/schedules.md): every host looks for schedules
//! due, claims each fire through the store (one host wins it), applies the
//! schedule's overlap policy, starts the saga, and records the outcome.
//!
//! The overlap policies rest on the concurrency keys of flow control, so
//! they hold across hosts and crashes with nothing of their own: runs of a
//! `skip` schedule hold `schedule:NAME` with limit 1 and `reject` (a fire
//! while one runs is refused by the store and recorded as skipped);
//! `buffer_one` and `cancel_other` runs queue on it instead (the queued run
//! starts when the one before ends, compensation included), `buffer_one`
//! keeping at most one in the queue and `cancel_other` cancelling the
//! holders first. `allow` holds no key. A fire's saga has the idempotency
//! key `schedule:NAME:NOMINAL`, so a fire acted on again after its host
//! died starts nothing twice.

use super::Runner;
use super::start::StartError;
use crate::config::{
    SCHEDULE_CLAIM_LEASE, SCHEDULE_FIRES_AT_ONCE, SCHEDULE_FIRES_KEPT, SCHEDULE_TICK,
    SCHEDULES_PER_TICK,
};
use crate::model::{
    ConcurrencyKey, Fire, FireOutcome, OnConflict, Overlap, SagaId, Schedule, SlotState, Timestamp,
};
use crate::plan::{Planner, StartSaga};
use crate::store::{CreateSaga, FireDone, StoreError, StoredSchedule};
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Most missed nominal times counted for a `missed` record's reason.
const MISSED_COUNTED: usize = 10_000;

/// Fires of one schedule acted on in one look (a schedule far behind
/// catches up over several looks).
const CATCHUP_PER_LOOK: usize = 100;

/// What a fire did.
struct Fired {
    outcome: FireOutcome,
    saga_id: Option<SagaId>,
    reason: Option<String>,
}

impl Fired {
    fn new(outcome: FireOutcome, saga_id: Option<SagaId>, reason: Option<String>) -> Fired {
        Fired {
            outcome,
            saga_id,
            reason,
        }
    }
}

impl Runner {
    /// Fires this host's share of the schedules until shutdown.
    pub fn start_schedules(&self, planner: Arc<Planner>) {
        let runner = self.clone();
        self.inner
            .loops
            .spawn(async move { runner.schedule_loop(planner).await });
    }

    async fn schedule_loop(self, planner: Arc<Planner>) {
        let inner = &self.inner;
        loop {
            if inner.draining.load(Ordering::SeqCst) {
                return;
            }
            let now = inner.clock.now();
            match inner.store.due_schedules(now, SCHEDULES_PER_TICK).await {
                Ok(due) => {
                    futures::stream::iter(due)
                        .for_each_concurrent(SCHEDULE_FIRES_AT_ONCE, |stored| {
                            self.fire_due(&planner, stored)
                        })
                        .await
                }
                Err(e) => tracing::warn!(error = %e, "looking for schedules due"),
            }
            // Until the next one is due, and no longer than a tick, so that
            // a schedule put on another host is seen.
            let now = inner.clock.now();
            let wait = match inner.store.next_schedule_due().await {
                Ok(Some(next)) if next > now => now.until(next).min(SCHEDULE_TICK),
                // Due, but another host is acting on it.
                Ok(Some(_)) => Duration::from_millis(100),
                _ => SCHEDULE_TICK,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = inner.stop_all.cancelled() => return,
            }
        }
    }

    /// Acts on a schedule that is due: records what its hosts missed past
    /// the catch-up window, then fires each nominal time due, in order,
    /// while this host wins their claims.
    async fn fire_due(&self, planner: &Planner, stored: StoredSchedule) {
        let schedule = &stored.schedule;
        let Some(mut nominal) = stored.next_fire_at else {
            return;
        };
        let calendar = match schedule.calendar() {
            Ok(calendar) => calendar,
            Err(e) => {
                tracing::warn!(schedule = %schedule.name, error = %e, "a stored schedule does not read");
                return;
            }
        };
        let now = self.inner.clock.now();
        let oldest = now.minus(schedule.catchup());
        if nominal < oldest {
            // Every nominal time before the window is missed; the first in
            // it is next.
            let first_kept = calendar.next_after(Timestamp(oldest.millis() - 1));
            let missed = std::iter::successors(Some(nominal), |at| calendar.next_after(*at))
                .take_while(|at| first_kept.is_none_or(|kept| *at < kept))
                .take(MISSED_COUNTED)
                .count();
            let reason = format!(
                "{}{missed} nominal time{} from {nominal} {} not fired by any host within the catch-up window ({})",
                if missed == MISSED_COUNTED {
                    "at least "
                } else {
                    ""
                },
                if missed == 1 { "" } else { "s" },
                if missed == 1 { "was" } else { "were" },
                schedule.spec.catchup_window,
            );
            match self
                .inner
                .store
                .miss_fires(&schedule.name, nominal, first_kept, &reason, now)
                .await
            {
                Ok(true) => {
                    tracing::warn!(schedule = %schedule.name, missed, "schedule fires missed");
                    crate::metrics::global().schedule_fired(FireOutcome::Missed);
                }
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(schedule = %schedule.name, error = %e, "recording missed fires");
                    return;
                }
            }
            match first_kept {
                Some(kept) => nominal = kept,
                None => return,
            }
        }
        for _ in 0..CATCHUP_PER_LOOK {
            if nominal > self.inner.clock.now() || self.inner.draining.load(Ordering::SeqCst) {
                return;
            }
            let next = calendar.next_after(nominal);
            match self
                .fire_schedule(planner, schedule, nominal, false, next)
                .await
            {
                Ok(Some(_)) => {}
                // Another host has this fire.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(schedule = %schedule.name, %nominal, error = %e, "firing a schedule");
                    return;
                }
            }
            match next {
                Some(next) => nominal = next,
                None => return,
            }
        }
    }

    /// Fires `schedule` at `nominal` if this host wins the claim: the
    /// overlap policy applied, the saga started, the outcome recorded (and,
    /// unless by hand, the schedule moved on to `next`). `None`: another
    /// host has the fire.
    pub async fn fire_schedule(
        &self,
        planner: &Planner,
        schedule: &Schedule,
        nominal: Timestamp,
        manual: bool,
        next: Option<Timestamp>,
    ) -> Result<Option<Fire>, StoreError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        if !inner
            .store
            .claim_fire(
                &schedule.name,
                nominal,
                &inner.owner,
                now,
                now.minus(SCHEDULE_CLAIM_LEASE),
                manual,
            )
            .await?
        {
            return Ok(None);
        }
        let fired = self.start_fire(planner, schedule, nominal).await?;
        let done = FireDone {
            schedule: schedule.name.clone(),
            nominal_at: nominal,
            owner: inner.owner.to_string(),
            fired_at: inner.clock.now(),
            outcome: fired.outcome,
            saga_id: fired.saga_id,
            reason: fired.reason,
            manual,
            next_fire_at: next,
        };
        if !inner.store.finish_fire(&done, SCHEDULE_FIRES_KEPT).await? {
            // Its claim went stale and another host took it over.
            return Ok(None);
        }
        crate::metrics::global().schedule_fired(done.outcome);
        tracing::info!(
            schedule = %schedule.name,
            nominal = %nominal,
            outcome = done.outcome.as_str(),
            saga = ?done.saga_id,
            reason = done.reason.as_deref().unwrap_or(""),
            "schedule fired"
        );
        Ok(Some(Fire {
            nominal_at: nominal,
            fired_at: Some(done.fired_at),
            outcome: Some(done.outcome),
            saga_id: done.saga_id,
            reason: done.reason,
            manual,
        }))
    }

    /// The overlap policy and the start of one fire.
    async fn start_fire(
        &self,
        planner: &Planner,
        schedule: &Schedule,
        nominal: Timestamp,
    ) -> Result<Fired, StoreError> {
        let store = self.inner.store.as_ref();
        let key = schedule.fire_key(nominal);
        // Acted on before by a host that died before recording it.
        if let Some(id) = store.saga_by_idempotency_key(&key).await? {
            return Ok(Fired::new(FireOutcome::Started, Some(id), None));
        }
        let overlap_key = schedule.overlap_key();
        let on_conflict = match schedule.spec.overlap {
            Overlap::Allow => None,
            Overlap::Skip => Some(OnConflict::Reject),
            Overlap::BufferOne | Overlap::CancelOther => Some(OnConflict::Queue),
        };
        let mut note = None;
        match schedule.spec.overlap {
            Overlap::BufferOne => {
                let slots = store.concurrency_key(&overlap_key).await?;
                if let Some(waiting) = slots.iter().find(|s| s.state == SlotState::Queued) {
                    return Ok(Fired::new(
                        FireOutcome::Skipped,
                        None,
                        Some(format!(
                            "buffer_one: run {} already waits for the one before it",
                            waiting.saga_id
                        )),
                    ));
                }
            }
            Overlap::CancelOther => {
                let slots = store.concurrency_key(&overlap_key).await?;
                let mut cancelled = Vec::new();
                for slot in slots.iter().filter(|s| s.state != SlotState::Released) {
                    match self
                        .cancel(slot.saga_id, Some(format!("schedule:{}", schedule.name)))
                        .await
                    {
                        Ok(_) => cancelled.push(slot.saga_id.to_string()),
                        Err(e) => {
                            tracing::info!(saga = %slot.saga_id, error = %e, "cancel_other: not cancelled")
                        }
                    }
                }
                if !cancelled.is_empty() {
                    note = Some(format!(
                        "cancel_other: cancelled {}; this run starts when they have compensated",
                        cancelled.join(", ")
                    ));
                }
            }
            Overlap::Skip | Overlap::Allow => {}
        }
        let request = StartSaga {
            template: Some(schedule.spec.template.clone()),
            inputs: Some(schedule.spec.inputs.clone()),
            triggered_by: Some(format!("schedule:{}", schedule.name)),
            concurrency: on_conflict.map(|on_conflict| {
                vec![ConcurrencyKey {
                    key: overlap_key.clone(),
                    limit: 1,
                    on_conflict,
                }]
            }),
            ..StartSaga::default()
        };
        let saga = match planner
            .start(store, request, Some(format!("schedule:{}", schedule.name)))
            .await
        {
            Ok(saga) => saga,
            Err(e) => {
                return Ok(Fired::new(FireOutcome::Failed, None, Some(e.to_string())));
            }
        };
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        let created = match self.start_saga(saga, Some((key, hash))).await {
            Ok(created) => created,
            Err(StartError::Store(e)) => return Err(e),
            Err(StartError::Interrupted(e)) => {
                return Ok(Fired::new(FireOutcome::Failed, None, Some(e)));
            }
        };
        Ok(match created {
            CreateSaga::Created(claimed) => {
                Fired::new(FireOutcome::Started, Some(claimed.saga.id), note)
            }
            CreateSaga::Queued(saga) if schedule.spec.overlap == Overlap::BufferOne => Fired::new(
                FireOutcome::Buffered,
                Some(saga.id),
                Some("buffer_one: starts when the run before it ends".into()),
            ),
            CreateSaga::Queued(saga) => Fired::new(FireOutcome::Started, Some(saga.id), note),
            CreateSaga::Existing(saga) => Fired::new(FireOutcome::Started, Some(saga.id), note),
            CreateSaga::KeyConflict(id) => Fired::new(FireOutcome::Started, Some(id), note),
            CreateSaga::ConcurrencyConflict(blocked) => {
                let holders = blocked
                    .holders
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let reason = if blocked.key == overlap_key {
                    format!("skip: run {holders} is still going")
                } else {
                    format!(
                        "the template's concurrency key `{}` has no free slot (held by {holders})",
                        blocked.key
                    )
                };
                Fired::new(FireOutcome::Skipped, None, Some(reason))
            }
            CreateSaga::PluginGone(digest) => Fired::new(
                FireOutcome::Failed,
                None,
                Some(format!(
                    "plugin {digest} was deleted while the saga started"
                )),
            ),
        })
    }
}
