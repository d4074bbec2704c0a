//! The saga state machine's driver, one saga at a time: the loop that asks
//! `decide` what comes next, calls the plugin, and commits the rows
//! `decide` computes (fenced), following each commit with
//! `Transition::apply_to`. What the machine does is described here; the
//! rules themselves are pure functions in `decide`, and the store only
//! writes what they compute.
//!
//! `pending`/`running`: run the step at `current_step_index` (mark it
//! running with attempt + 1, call `execute`, persist), retrying retryable
//! failures with backoff up to the step's `max_attempts`. A success commits
//! the step's output, the merged context, the next index and (in the same
//! transaction, unless a cancel or pause is known or the host is draining)
//! the next step's running mark. A `poll-after` answer parks the saga: the
//! step row says `waiting_until`, the saga is ready again then, and nothing
//! is held meanwhile; the next call of that step uses no attempt. A pause
//! parks the saga between steps (`paused`, ready only when resumed). A
//! fatal failure, exhausted retries, a wait past its limit or a cancel
//! switch to `compensating`: walk from the last step whose work began down
//! to step 0 calling `compensate` with the same retry policy; a
//! compensation that still fails is marked `compensation_failed` and the
//! walk goes on. The end is `completed`, `rolled_back`, or `failed` when a
//! compensation failed.
//!
//! A wait (a plan element calling no plugin; its rules are `waits`) opens
//! as a `waiting` row until its timeout, taking a message kept for its
//! correlation key in the same commit, and the saga parks holding nothing.
//! Claimed again (answered, or at its timeout) it completes with what it
//! received or its default, merged into the context like a step's output,
//! or fails, and the saga compensates. In the compensation walk a
//! completed wait is undone without a call. A step on contract 0.3.0 may
//! open a wait itself (`wait-for`): its row waits the same way, and its
//! answer calls the step again, same attempt, with the payload.
//!
//! Which step's work began: a completed step's; and, for a step built on
//! contract 0.2.0, one that was waiting or was interrupted from outside (a
//! cancel, its deadline, a crash) when the saga stopped. A 0.1.0 step that
//! did not complete is not compensated, exactly as before 0.2.0.
//!
//! Resume needs nothing special: a claimed saga continues from what is
//! persisted. A step found `running` that this process did not mark (its
//! host died mid-call) runs again with attempt + 1 and the same idempotency
//! key; a step interrupted more times than its attempt limit fails, so a
//! step that crashes its host cannot loop forever. A running mark this
//! process wrote ahead of a call (with the previous step's result, or when
//! the saga was created) is always followed by that call, or undone: a
//! step's attempts are the calls begun.
//!
//! Every write is fenced by this claim's fencing number and the saga's
//! version. A write that finds the version moved on (a cancel or pause was
//! recorded meanwhile) rereads the saga and decides again; a result already
//! obtained from a plugin is never thrown away.

use super::decide::{self, Ledger, Next, Stop, View, attempts, end_saga, outcome_label};
use super::waits;
use super::{ActiveSaga, Runner};
use crate::model::{
    LedgerLogLine, LogLevel, Phase, RecordedResource, SagaRun, SagaStatus, Semantics, StepResult,
    StepSpec, StepStatus, Timestamp, WaitSpec, WaitVerdict,
};
use crate::plugin::{
    CallOutcome, Contract, Observed, Plugin, Progress, StepCall, StepFailure, WaitFor,
};
use crate::store::{
    Admission, Applied, ClaimedSaga, Fence, StoreError, TakeOver, Taken, Transition,
};
use crate::telemetry::{CallInfo, CallSpan};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument;

/// A step this process marked running (with the commit before it) and has
/// not called yet, with the row it replaced.
pub(super) struct Marked {
    pub index: u32,
    pub phase: Phase,
    /// The ledger row before the mark (`None`: the step had none).
    pub previous: Option<StepResult>,
}

impl Marked {
    /// Step 0's execute mark, written with the commit that stores or hands
    /// over a saga that had no ledger row.
    pub fn first() -> Marked {
        Marked {
            index: 0,
            phase: Phase::Execute,
            previous: None,
        }
    }
}

/// How driving a saga ended on this host.
pub(super) enum Ended {
    /// It reached a final status; its release may have handed its keys
    /// to a saga claimed for this host, which takes over its driving slot.
    Final(SagaStatus, Option<Box<Taken>>),
    /// It waits (ready again at that time) or was paused (ready when
    /// resumed); its lease is released.
    Parked(Option<Timestamp>),
    /// This host let go of it (lease lost, shutdown, the store failing).
    Halted,
}

/// Why driving stopped before the saga ended or parked.
#[derive(Debug, thiserror::Error)]
enum Halt {
    /// Another host owns the saga now; it carries on from what we persisted.
    #[error("lease lost")]
    LeaseLost,
    /// Shutdown: leave the saga for the next claim.
    #[error("host shutting down")]
    Stopped,
    /// The database failed in a way retrying does not fix; the saga
    /// resumes when its lease expires.
    #[error("store: {0}")]
    Store(StoreError),
}

/// What one decision left the loop to do.
enum Flow {
    /// Decide again from the (updated) state.
    Continue,
    /// Parked: see [`Ended::Parked`].
    Parked(Option<Timestamp>),
}

/// Drives one claimed saga until it ends, parks, or this host must let go.
pub(super) async fn drive(
    runner: &Runner,
    claim: ClaimedSaga,
    active: &Arc<ActiveSaga>,
    marked: Option<Marked>,
) -> Ended {
    let span = tracing::info_span!("saga", id = %claim.saga.id, kind = %claim.saga.kind);
    let mut driver = Driver {
        runner,
        active,
        ledger: claim.ledger.into_iter().map(|r| (r.index, r)).collect(),
        slots_held: claim.slots_held,
        saga: claim.saga,
        marked,
        successor: None,
    };
    let outcome = driver.run().instrument(span.clone()).await;
    let _enter = span.enter();
    match outcome {
        Ok(ended) => {
            if let Ended::Final(status, _) = &ended {
                tracing::info!(%status, "saga ended");
            }
            return ended;
        }
        Err(Halt::LeaseLost) => tracing::warn!("stopped: the lease was taken by another host"),
        Err(Halt::Stopped) => {
            tracing::info!("stopped for shutdown; another claim resumes it");
            driver.let_go().await;
        }
        Err(Halt::Store(e)) => {
            tracing::error!(error = %e, "stopped: the store failed; the saga resumes when its lease expires")
        }
    }
    Ended::Halted
}

struct Driver<'a> {
    runner: &'a Runner,
    active: &'a Arc<ActiveSaga>,
    saga: SagaRun,
    ledger: Ledger,
    marked: Option<Marked>,
    /// The saga holds its concurrency slots (see [`View::slots_held`]).
    slots_held: bool,
    /// A saga its release admitted and claimed for this host, to be driven
    /// in this saga's slot once it has ended.
    successor: Option<Taken>,
}

impl Driver<'_> {
    /// The loop: decide from the state (`decide`), do what was decided,
    /// commit; until the saga ends, parks, or this host must let go.
    async fn run(&mut self) -> Result<Ended, Halt> {
        loop {
            let flow = match self.view().next(self.now(), self.cancel_seen()) {
                Next::Ended(status) => {
                    return Ok(Ended::Final(status, self.successor.take().map(Box::new)));
                }
                Next::Cancel => self.stop_forward(Stop::Cancelled, None).await?,
                Next::Complete => self.complete_saga().await?,
                Next::Pause => self.park_paused().await?,
                Next::Wait {
                    index,
                    phase,
                    until,
                } => {
                    self.may_go_on(index, phase)?;
                    self.park_waiting(until).await?
                }
                Next::Call { index, phase } if self.spec(index).wait.is_some() => {
                    self.may_go_on(index, phase)?;
                    match phase {
                        Phase::Execute => self.wait_turn(index).await?,
                        Phase::Compensate => self.undo_wait(index).await?,
                    }
                }
                Next::Call {
                    index,
                    phase: Phase::Compensate,
                } if self.view().undo_unsure(index)
                    && self.observe_before_undo(index).await?.is_some() =>
                {
                    Flow::Continue
                }
                Next::Call {
                    index,
                    phase: Phase::Execute,
                } if self.view().step_wait(index).is_some()
                    && self.step_wait_turn(index).await?.is_some() =>
                {
                    Flow::Continue
                }
                Next::Call { index, phase } => {
                    self.may_go_on(index, phase)?;
                    match (self.mark(index, phase).await?, phase) {
                        (None, _) => Flow::Continue,
                        (Some(attempt), Phase::Execute) => self.execute(index, attempt).await?,
                        (Some(attempt), Phase::Compensate) => {
                            self.compensate(index, attempt).await?
                        }
                    }
                }
                Next::FinishCompensation => self.finish_compensation().await?,
                Next::Rewound(floor) => self.rewound(floor).await?,
                Next::Hold => self.hold().await?,
                Next::Admit => self.admit().await?,
            };
            if let Flow::Parked(at) = flow {
                return Ok(Ended::Parked(at));
            }
        }
    }

    /// Takes the saga's concurrency slots, or parks it queued (its lease
    /// given up; a holder's end makes it claimable again).
    async fn admit(&mut self) -> Result<Flow, Halt> {
        self.check_stop()?;
        let admission = self
            .runner
            .inner
            .store
            .admit_saga(
                self.saga.id,
                self.owner(),
                self.active.epoch.load(Ordering::SeqCst),
                self.saga.version,
                self.now(),
            )
            .await;
        match admission {
            Ok(Admission::Admitted) => {
                self.slots_held = true;
                Ok(Flow::Continue)
            }
            Ok(Admission::Queued) => {
                tracing::debug!("queued: a concurrency key has no free slot");
                Ok(Flow::Parked(None))
            }
            Ok(Admission::Stale) => {
                self.refresh().await?;
                Ok(Flow::Continue)
            }
            Ok(Admission::LeaseLost) => Err(Halt::LeaseLost),
            Err(e) => Err(Halt::Store(e)),
        }
    }

    /// The saga and ledger as this driver holds them, for `decide`.
    fn view(&self) -> View<'_> {
        View {
            saga: &self.saga,
            ledger: &self.ledger,
            slots_held: self.slots_held,
        }
    }

    /// Whether this host may go on to the step now: not when it must let
    /// go or is draining; but a step this process marked running is owed
    /// its call, which a draining host makes within the grace rather than
    /// leave a mark that no call made.
    fn may_go_on(&self, index: u32, phase: Phase) -> Result<(), Halt> {
        let marked_here = self
            .marked
            .as_ref()
            .is_some_and(|m| m.index == index && m.phase == phase);
        if !marked_here {
            return self.check_stop();
        }
        if self.active.lease_lost.load(Ordering::SeqCst) || self.active.stop.is_cancelled() {
            return Err(self.halt());
        }
        Ok(())
    }

    fn now(&self) -> Timestamp {
        self.runner.inner.clock.now()
    }

    fn owner(&self) -> &str {
        &self.runner.inner.owner
    }

    fn draining(&self) -> bool {
        self.runner.inner.draining.load(Ordering::SeqCst)
    }

    /// A transition of this claim, from the version last seen.
    fn transition(&self) -> Transition {
        Transition::new(
            self.saga.id,
            Fence::Lease {
                owner: self.runner.inner.owner.clone(),
                epoch: self.active.epoch.load(Ordering::SeqCst),
            },
            self.saga.version,
            self.now(),
        )
    }

    fn cancel_seen(&self) -> bool {
        self.saga.cancel_requested
            || (self.active.cancel.is_cancelled() && !self.active.stop.is_cancelled())
    }

    fn pause_seen(&self) -> bool {
        self.saga.pause_requested
    }

    /// Stops between steps when the host is draining or must let go.
    fn check_stop(&self) -> Result<(), Halt> {
        if self.active.lease_lost.load(Ordering::SeqCst) {
            return Err(Halt::LeaseLost);
        }
        if self.active.stop.is_cancelled() || self.draining() {
            return Err(Halt::Stopped);
        }
        Ok(())
    }

    /// Why this host must stop driving the saga now (its stop token fired).
    fn halt(&self) -> Halt {
        if self.active.lease_lost.load(Ordering::SeqCst) {
            Halt::LeaseLost
        } else {
            Halt::Stopped
        }
    }

    /// Persists the transition `build` makes from the current state,
    /// retrying transient database failures for as long as the lease is
    /// held. When the saga changed meanwhile (a request was recorded), it
    /// is read again and `build` asked again; `build` answers `None` when
    /// what it would write no longer applies (the caller then decides
    /// again). Returns the transition written.
    async fn commit(
        &mut self,
        build: &(dyn Fn(&Self) -> Option<Transition> + Sync),
    ) -> Result<Option<Transition>, Halt> {
        loop {
            let Some(mut t) = build(self) else {
                return Ok(None);
            };
            super::stamp_outbox(&self.saga, &mut t);
            // The sagas its release admits are driven here at once (a
            // handoff with no claim round): one in this saga's own slot,
            // which it gives up as it ends, others (a saga with several
            // keys may let several in) in slots free now.
            let mut permits = Vec::new();
            if t.release_slots && !self.draining() {
                permits = (1..self.saga.concurrency.len())
                    .map_while(|_| self.runner.inner.slots.clone().try_acquire_owned().ok())
                    .collect();
                t.take_over = Some(TakeOver {
                    lease: self.runner.lease(),
                    max: 1 + permits.len(),
                    mark: decide::handoff_mark,
                });
            }
            match self.apply(t.clone()).await? {
                Applied::Done {
                    version,
                    woke,
                    taken,
                } => {
                    if woke {
                        // Sagas queued on its keys are claimable now (on
                        // PostgreSQL every host also hears it).
                        self.runner.wake();
                    }
                    let mut taken = taken.into_iter();
                    self.successor = taken.next();
                    for (taken, permit) in taken.zip(permits) {
                        self.runner.drive_taken(taken, permit);
                    }
                    t.apply_to(&mut self.saga, &mut self.ledger, version);
                    let marked = self.marked.as_ref().map(|m| m.index);
                    if t.steps
                        .iter()
                        .map(|r| r.index)
                        .chain(t.remove_steps.iter().copied())
                        .any(|i| Some(i) == marked)
                    {
                        // The mark was written over: no call is owed.
                        self.marked = None;
                    }
                    self.runner.written(&self.saga, &t);
                    return Ok(Some(t));
                }
                Applied::Stale => self.refresh().await?,
            }
        }
    }

    /// One transition, with the database's transient failures retried:
    /// forever while the lease holds (a full disk retries as soon as a
    /// write succeeds again), never for a failure retrying cannot fix.
    async fn apply(&self, mut t: Transition) -> Result<Applied, Halt> {
        let store = &self.runner.inner.store;
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // This host may have claimed the saga again meanwhile (its
            // lease ran out while writes failed): write under the newest
            // claim.
            if let Fence::Lease { epoch, .. } = &mut t.fence {
                *epoch = self.active.epoch.load(Ordering::SeqCst);
            }
            let started = std::time::Instant::now();
            let applied = store.apply(t.clone()).await;
            crate::metrics::global()
                .store_commit_duration
                .observe(started.elapsed().as_secs_f64());
            match applied {
                Ok(applied) => return Ok(applied),
                Err(StoreError::LeaseLost(_)) => {
                    self.active.lease_lost.store(true, Ordering::SeqCst);
                    return Err(Halt::LeaseLost);
                }
                Err(e) if e.is_transient() && !self.active.stop.is_cancelled() => {
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(error = %e, attempt, "persisting a transition failed; retrying");
                    }
                    if self.active.lease_lost.load(Ordering::SeqCst) {
                        return Err(Halt::LeaseLost);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = store.writable(), if e.is_storage_full() => {}
                        _ = self.active.stop.cancelled() => return Err(self.halt()),
                    }
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(Halt::Store(e)),
            }
        }
    }

    /// Reads the saga again (after a write found it changed).
    async fn refresh(&mut self) -> Result<(), Halt> {
        let store = &self.runner.inner.store;
        let mut delay = Duration::from_millis(50);
        let detail = loop {
            match store.saga(self.saga.id).await {
                Ok(Some(detail)) => break detail,
                Ok(None) => return Err(Halt::LeaseLost),
                Err(e) if e.is_transient() && !self.active.stop.is_cancelled() => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(Halt::Store(e)),
            }
        };
        if detail.saga.status != self.saga.status {
            tracing::warn!(ours = %self.saga.status, stored = %detail.saga.status, "the saga's status changed under its lease");
        }
        self.saga = detail.saga;
        self.ledger = detail.steps.into_iter().map(|r| (r.index, r)).collect();
        if self.saga.cancel_requested {
            self.active.cancel.cancel();
        }
        Ok(())
    }

    fn spec(&self, index: u32) -> &StepSpec {
        &self.saga.plan[index as usize]
    }

    /// A pre-mark this process made and never called, undone in `t`.
    fn unmark_into(&self, t: &mut Transition) {
        if let Some(marked) = &self.marked {
            match &marked.previous {
                Some(previous) => t.steps.push(previous.clone()),
                None => t.remove_steps.push(marked.index),
            }
        }
    }

    /// Shutdown took the saga from this host: undo a running mark never
    /// called (so no attempt is charged for it) and release the lease.
    async fn let_go(&mut self) {
        let store = &self.runner.inner.store;
        let epoch = self.active.epoch.load(Ordering::SeqCst);
        if self.marked.is_some() && !self.active.lease_lost.load(Ordering::SeqCst) {
            let mut t = self.transition();
            self.unmark_into(&mut t);
            t.release_lease = true;
            match store.apply(t).await {
                Ok(Applied::Done { .. }) => return,
                Ok(Applied::Stale) | Err(_) => {}
            }
        }
        let _ = store
            .release_leases(&self.runner.inner.owner, &[(self.saga.id, epoch)])
            .await;
    }

    /// Every step completed: the saga completes.
    async fn complete_saga(&mut self) -> Result<Flow, Halt> {
        self.commit(&|d: &Self| {
            let mut t = d.transition();
            t.saga.status = Some(SagaStatus::Completed);
            end_saga(&mut t, &d.saga);
            Some(t)
        })
        .await?;
        Ok(Flow::Continue)
    }

    /// Parks the saga `paused` between steps: ready only when resumed.
    async fn park_paused(&mut self) -> Result<Flow, Halt> {
        let committed = self
            .commit(&|d: &Self| {
                if d.cancel_seen() {
                    return None;
                }
                let mut t = d.transition();
                t.saga.status = Some(SagaStatus::Paused);
                t.saga.pause_requested = Some(false);
                t.saga.ready_at = Some(None);
                t.release_lease = true;
                d.unmark_into(&mut t);
                Some(t)
            })
            .await?;
        let Some(t) = committed else {
            return Ok(Flow::Continue);
        };
        tracing::info!("paused");
        debug_assert_eq!(t.saga.status, Some(SagaStatus::Paused));
        Ok(Flow::Parked(None))
    }

    /// Parks the saga until its waiting step's time (claimed early: another
    /// host's clock, or a cancel that was withdrawn), or until its open
    /// wait times out. Only while the state still says so: a commit that
    /// finds the saga changed reads it again, and a wait answered meanwhile
    /// (its message arrived as it opened) goes on instead.
    async fn park_waiting(&mut self, until: Timestamp) -> Result<Flow, Halt> {
        let committed = self
            .commit(&|d: &Self| {
                let still = matches!(
                    d.view().next(d.now(), d.cancel_seen()),
                    Next::Wait { until: at, .. } if at == until
                );
                if !still || d.pause_seen() {
                    return None;
                }
                let mut t = d.transition();
                t.saga.ready_at = Some(Some(until));
                t.release_lease = true;
                Some(t)
            })
            .await?;
        Ok(match committed {
            Some(_) => Flow::Parked(Some(until)),
            None => Flow::Continue,
        })
    }

    /// Marks the step running for its next call (unless this process
    /// already did) and returns that call's attempt: the next one, or the
    /// same one when the step was waiting. `None` when it must not run now
    /// (a request arrived: decide again), or when it was interrupted more
    /// often than its attempt limit (then it has failed, and the state
    /// moved on).
    async fn mark(&mut self, index: u32, phase: Phase) -> Result<Option<u32>, Halt> {
        let done = self.view().attempts(index, phase);
        if self
            .marked
            .as_ref()
            .is_some_and(|m| m.index == index && m.phase == phase)
        {
            self.marked = None;
            return Ok(Some(done));
        }
        let waited = self.view().resumes(index, phase);
        if phase == Phase::Execute && !waited && self.view().cut_short(index) {
            // Its host died mid-call: did the call take effect?
            match self
                .observe(index, "before running again a call cut short")
                .await?
            {
                Some((Observed::Applied(output), row, resources)) => {
                    self.complete(index, row, output, resources).await?;
                    return Ok(None);
                }
                Some((Observed::NotApplied, ..)) => {}
                _ if self.spec(index).semantics == Semantics::AtMostOnce => {
                    self.in_doubt(index).await?;
                    return Ok(None);
                }
                _ => {}
            }
        }
        let attempt = if waited { done } else { done + 1 };
        if attempt > self.view().attempt_limit(index, phase) {
            let max = self.spec(index).max_attempts;
            // Its last call was cut short (its host died mid-call), and no
            // attempt is left.
            let why = format!(
                "the step's last call was cut short (its host stopped mid-call) and all {max} \
                 attempts are used: it did not finish"
            );
            let row = self.view().row(index, phase);
            self.step_failed(index, phase, row, why, true).await?;
            return Ok(None);
        }
        let committed = self
            .commit(&|d: &Self| {
                if phase == Phase::Execute && (d.cancel_seen() || d.pause_seen()) {
                    return None;
                }
                let mut row = if waited {
                    let mut row = d.view().row(index, phase);
                    row.executed_by = Some(d.owner().to_string());
                    // A wait the step opened, answered: it runs again.
                    if row.status == StepStatus::Waiting {
                        row.status = StepStatus::Running;
                    }
                    row
                } else {
                    d.view()
                        .running_row(index, phase, attempt, d.now(), d.owner())
                };
                // The call begins: it no longer waits.
                row.waiting_until = None;
                let mut t = d.transition();
                if phase == Phase::Execute {
                    // Set only when it changes: rewriting the status costs
                    // SQLite an index write for nothing.
                    t.saga.status =
                        (d.saga.status != SagaStatus::Running).then_some(SagaStatus::Running);
                    t.saga.current_step_index = Some(index);
                }
                t.steps.push(row);
                Some(t)
            })
            .await?;
        Ok(committed.map(|_| attempt))
    }

    async fn plugin(&self, spec: &StepSpec) -> Result<Arc<Plugin>, StepFailure> {
        self.runner.step_plugin(spec).await
    }

    /// The contract the step's plugin implements (0.1.0 when it cannot be
    /// loaded: nothing of it ran).
    async fn contract(&self, index: u32) -> Contract {
        let spec = self.spec(index).clone();
        self.plugin(&spec)
            .await
            .map_or(Contract::V0_1, |p| p.contract)
    }

    fn call(&self, index: u32, phase: Phase, attempt: u32) -> StepCall {
        StepCall {
            saga_id: self.saga.id.to_string(),
            kind: self.saga.kind.clone(),
            step_index: index,
            attempt,
            idempotency_key: self.view().idempotency_key(index, phase),
            inputs: self.saga.inputs.to_string(),
            context: self.context_for(index, phase).to_string(),
            received: self.ledger.get(&index).and_then(|r| match &r.received {
                Some(WaitVerdict::Completed { payload, .. }) if r.wait_for.is_some() => {
                    Some(payload.to_string())
                }
                _ => None,
            }),
            traceparent: None,
        }
    }

    /// The context a call of the step in `phase` sees: the saga's; for
    /// undoing a step whose execute did not finish but that `observe`
    /// said took effect, with the output it observed.
    fn context_for(&self, index: u32, phase: Phase) -> Value {
        let mut context = self.saga.context.clone();
        if phase == Phase::Compensate
            && let Some(row) = self.ledger.get(&index)
            && row.status != StepStatus::Completed
            && let Some(Value::Object(observed)) = &row.output
        {
            context.extend(observed.clone());
        }
        Value::Object(context)
    }

    /// The step's row with the call's record and log lines (taken from
    /// `outcome`) appended.
    fn with_logs<T>(
        &self,
        index: u32,
        phase: Phase,
        attempt: u32,
        outcome: &mut CallOutcome<Progress<T>>,
    ) -> StepResult {
        decide::record_call(
            self.view().row(index, phase),
            phase,
            attempt,
            outcome,
            self.runner.inner.config.max_step_log_lines,
            self.now(),
        )
    }

    /// Calls the step's plugin for `phase`, in a span. `Err` when the call
    /// was cut off because this host must let go (lease lost, shutdown grace
    /// over): nothing of it is recorded, and whoever resumes runs the step
    /// again with the next attempt.
    async fn call_plugin(
        &self,
        index: u32,
        phase: Phase,
        attempt: u32,
    ) -> Result<CallOutcome<Progress<Map<String, Value>>>, Halt> {
        let spec = self.spec(index).clone();
        let tracing_span =
            tracing::info_span!("step", index, name = %spec.name, phase = %phase, attempt);
        let telemetry = &self.runner.inner.telemetry;
        let span = telemetry.call(
            &self.saga,
            CallInfo {
                phase: phase.as_str(),
                step_index: index,
                plugin: &spec.name,
                attempt,
            },
        );
        let outcome = async {
            let (plugin, limits, access) = match self.runner.call_setup(&spec).await {
                Ok(setup) => setup,
                Err(failure) => return CallOutcome::failed(failure),
            };
            let plugins = &self.runner.inner.plugins;
            let mut call = self.call(index, phase, attempt);
            call.traceparent = span.as_ref().map(CallSpan::traceparent);
            let _watched = self.active.watch_call(
                std::time::Instant::now() + limits.timeout + self.runner.inner.config.call_grace,
            );
            match phase {
                Phase::Execute => {
                    plugins
                        .execute(&plugin, call, &limits, self.active.cancel.clone(), access)
                        .await
                }
                // A user's cancel does not stop compensation; only losing
                // the lease or the end of a shutdown grace does.
                Phase::Compensate => plugins
                    .compensate(&plugin, call, &limits, self.active.stop.clone(), access)
                    .await
                    .and_then(|progress| Ok(progress.map(|()| Map::new()))),
            }
        }
        .instrument(tracing_span)
        .await;
        if let Some(span) = span {
            let error = outcome.result.as_ref().err().map(ToString::to_string);
            telemetry.call_ended(span, outcome_label(&outcome.result), error.as_deref());
        }
        crate::metrics::global().call(
            &spec.name,
            phase.as_str(),
            outcome_label(&outcome.result),
            outcome.elapsed,
        );
        if self.active.stop.is_cancelled() {
            return Err(self.halt());
        }
        Ok(outcome)
    }

    async fn execute(&mut self, index: u32, attempt: u32) -> Result<Flow, Halt> {
        let spec = self.spec(index).clone();
        let mut outcome = self.call_plugin(index, Phase::Execute, attempt).await?;
        let mut row = self.with_logs(index, Phase::Execute, attempt, &mut outcome);
        match outcome.result {
            Ok(Progress::Done(output)) => {
                tracing::debug!(
                    elapsed_ms = outcome.elapsed.as_millis() as u64,
                    "step completed"
                );
                self.complete(index, row, output, outcome.resources).await
            }
            Ok(Progress::PollAfter(delay)) => self.wait(index, Phase::Execute, row, delay).await,
            Ok(Progress::WaitFor(asked)) => self.open_step_wait(index, row, asked).await,
            Err(StepFailure::Cancelled) => {
                tracing::info!("step interrupted by a cancel");
                row.error = Some(StepFailure::Cancelled.to_string());
                self.ledger.insert(index, row);
                self.stop_forward(Stop::Cancelled, Some((index, true)))
                    .await
            }
            Err(failure) if failure.is_retryable() && attempt < spec.max_attempts => {
                tracing::info!(error = %failure, "step failed; will retry");
                row.error = Some(failure.to_string());
                self.commit(&|d: &Self| {
                    let mut t = d.transition();
                    t.steps.push(row.clone());
                    Some(t)
                })
                .await?;
                crate::metrics::global().retry(&spec.name);
                let delay = self.runner.inner.config.retry.backoff(attempt + 1);
                self.back_off(delay, Phase::Execute).await
            }
            Err(failure) => {
                let interrupted = failure.is_interruption();
                let why = if failure.is_retryable() {
                    format!("{failure} (after {})", attempts(attempt))
                } else {
                    failure.to_string()
                };
                tracing::info!(error = %why, "step failed for good");
                self.step_failed(index, Phase::Execute, row, why, interrupted)
                    .await?;
                Ok(Flow::Continue)
            }
        }
    }

    /// Records a completed step: its output merged into the context, its
    /// resources, and (in the same transaction, when nothing stands in the
    /// way) the next step's running mark, or the saga's end.
    async fn complete(
        &mut self,
        index: u32,
        mut row: StepResult,
        output: Map<String, Value>,
        resources: Vec<crate::model::RecordedResource>,
    ) -> Result<Flow, Halt> {
        let config = &self.runner.inner.config;
        let context = match self.view().context_after(
            index,
            &row,
            &output,
            config.max_context_bytes,
            config.max_saga_stored_bytes,
        ) {
            Ok(context) => context,
            Err(why) => {
                self.step_failed(index, Phase::Execute, row, why, false)
                    .await?;
                return Ok(Flow::Continue);
            }
        };
        let now = self.now();
        row.status = StepStatus::Completed;
        row.output = Some(Value::Object(output));
        row.error = None;
        row.finished_at = Some(now);
        row.waiting_until = None;
        let next = index + 1;
        let last = next as usize >= self.saga.plan.len();
        // A step that ran before (a redriven saga's) is marked from its
        // row when its turn comes, its attempts counted on.
        let next_row = (!last && !self.ledger.contains_key(&next))
            .then(|| decide::fresh_mark(self.spec(next), next, self.owner(), now));
        let t = self
            .commit(&|d: &Self| {
                let mut t = d.transition();
                t.saga.current_step_index = Some(next);
                t.saga.context = Some(context.clone());
                t.steps.push(row.clone());
                t.resources = resources.iter().map(|r| (index, r.clone())).collect();
                if last {
                    t.saga.status = Some(SagaStatus::Completed);
                    end_saga(&mut t, &d.saga);
                } else if !d.draining() && !d.cancel_seen() && !d.pause_seen() {
                    // The next step's running mark rides in this transaction.
                    t.steps.extend(next_row.clone());
                }
                Some(t)
            })
            .await?
            .expect("a step's result is always written");
        if !last && t.steps.len() == 2 {
            self.marked = Some(Marked {
                index: next,
                phase: Phase::Execute,
                previous: None,
            });
        }
        Ok(Flow::Continue)
    }

    /// A wait's turn going forward: open it (taking a message kept for
    /// its key), or complete or fail it with what it received or its
    /// timeout, or park the saga until its timeout (`waits::turn`).
    async fn wait_turn(&mut self, index: u32) -> Result<Flow, Halt> {
        let spec = self.spec(index).clone();
        let wait = spec.wait.clone().expect("a wait");
        let open = self
            .ledger
            .get(&index)
            .filter(|r| r.status == StepStatus::Waiting)
            .cloned();
        let Some(mut row) = open else {
            return self.open_wait(index, &wait).await;
        };
        match waits::turn(&spec.name, &wait, &row, self.now()) {
            waits::Turn::Park(until) => self.park_waiting(until).await,
            waits::Turn::Complete { payload, how } => {
                tracing::info!(wait = %spec.name, "{how}");
                row.logs.push(wait_log(&how));
                row.received = None;
                row.correlation_key = None;
                self.complete(index, row, waits::output(&spec.name, payload), Vec::new())
                    .await
            }
            waits::Turn::Fail(why) => {
                tracing::info!(wait = %spec.name, error = %why, "wait failed");
                row.logs.push(wait_log(&why));
                row.correlation_key = None;
                self.step_failed(index, Phase::Execute, row, why, false)
                    .await?;
                Ok(Flow::Continue)
            }
        }
    }

    /// Opens a wait: its row `waiting` until its timeout, holding its
    /// correlation key; a message kept under that key is taken in the same
    /// transaction (and read back).
    async fn open_wait(&mut self, index: u32, wait: &WaitSpec) -> Result<Flow, Halt> {
        let now = self.now();
        let mut row = self.view().row(index, Phase::Execute);
        row.status = StepStatus::Waiting;
        row.phase = Phase::Execute;
        row.attempts = 0;
        row.started_at = Some(now);
        row.finished_at = None;
        row.error = None;
        row.received = None;
        row.executed_by = Some(self.owner().to_string());
        row.waiting_until = Some(Timestamp(now.millis() + wait.timeout_ms as i64));
        row.correlation_key = wait.correlation_key.clone();
        let committed = self
            .commit(&|d: &Self| {
                if d.cancel_seen() || d.pause_seen() {
                    return None;
                }
                let mut t = d.transition();
                t.saga.status =
                    (d.saga.status != SagaStatus::Running).then_some(SagaStatus::Running);
                t.saga.current_step_index = Some(index);
                t.take_message = row.correlation_key.clone().map(|key| (index, key));
                t.steps.push(row.clone());
                announce_wait_opened(&mut t, &d.saga);
                Some(t)
            })
            .await?;
        if committed.is_some() {
            tracing::info!(wait = %self.spec(index).name, "wait opened");
            if wait.correlation_key.is_some() {
                // A message kept for it may be on its row now.
                self.refresh().await?;
            }
        }
        Ok(Flow::Continue)
    }

    /// Asks the step's plugin (contract 0.3.0, with `observe`) whether its
    /// last `execute` call, cut short, took effect: `None` when it cannot
    /// be asked (no `observe`), else what it said (a failed call counts as
    /// `Unknown`), with the step's row with the call recorded on it (logs,
    /// a call record `observe:WORD`; also put in the ledger here unless it
    /// said `applied`) and the resources it saw.
    async fn observe(
        &mut self,
        index: u32,
        why: &str,
    ) -> Result<Option<(Observed, StepResult, Vec<RecordedResource>)>, Halt> {
        let spec = self.spec(index).clone();
        let observes = self.plugin(&spec).await.is_ok_and(|p| p.observes());
        if !observes {
            return Ok(None);
        }
        let attempt = self.view().attempts(index, Phase::Execute);
        let started = self.now();
        let outcome = async {
            let (plugin, limits, access) = match self.runner.call_setup(&spec).await {
                Ok(setup) => setup,
                Err(failure) => return CallOutcome::failed(failure),
            };
            let call = self.call(index, Phase::Execute, attempt);
            let _watched = self.active.watch_call(
                std::time::Instant::now() + limits.timeout + self.runner.inner.config.call_grace,
            );
            self.runner
                .inner
                .plugins
                .observe(&plugin, call, &limits, self.active.stop.clone(), access)
                .await
        }
        .instrument(tracing::info_span!("observe", index, name = %spec.name))
        .await;
        if self.active.stop.is_cancelled() {
            return Err(self.halt());
        }
        let said = decide::observe_label(&outcome.result);
        let mut error = String::new();
        let observed = match outcome.result {
            Ok(observed) => observed,
            Err(failure) => {
                tracing::info!(error = %failure, "observe failed; taken as unknown");
                error = format!(": {failure}");
                Observed::Unknown
            }
        };
        tracing::info!(step = index, said, "observed {why}");
        crate::metrics::global().call(&spec.name, "observe", said, outcome.elapsed);
        let mut recorded = CallOutcome {
            result: Ok(Progress::Done(())),
            logs: outcome.logs,
            resources: Vec::new(),
            elapsed: outcome.elapsed,
        };
        let mut row = decide::record_call(
            self.view().row(index, Phase::Execute),
            Phase::Execute,
            attempt,
            &mut recorded,
            self.runner.inner.config.max_step_log_lines,
            self.now(),
        );
        if let Some(call) = row.calls.last_mut() {
            call.outcome = format!("observe:{said}");
            call.started_at = started;
        }
        row.logs
            .push(wait_log(&format!("observe {why}: {said}{error}")));
        if !matches!(observed, Observed::Applied(_)) {
            self.ledger.insert(index, row.clone());
        }
        Ok(Some((observed, row, outcome.resources)))
    }

    /// Before undoing a step whose `execute` did not finish (cut short,
    /// interrupted, failed): asks `observe` whether it took effect.
    /// `not-applied`: nothing to undo, the walk moves on (`Some`).
    /// `applied`: its output is kept on its row, so that `compensate`
    /// sees it in the context (`None`: compensate it). Else as without.
    async fn observe_before_undo(&mut self, index: u32) -> Result<Option<Flow>, Halt> {
        self.may_go_on(index, Phase::Compensate)?;
        match self
            .observe(index, "before undoing a call that did not finish")
            .await?
        {
            Some((Observed::NotApplied, mut row, _)) => {
                row.phase = Phase::Compensate;
                self.compensated(index, row).await.map(Some)
            }
            Some((Observed::Applied(output), mut row, _)) => {
                row.output = Some(Value::Object(output));
                self.ledger.insert(index, row);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// The step opened a wait (`wait-for`, contract 0.3.0): checked by the
    /// rules of a plan's wait (else the step fails), its row `waiting`
    /// until its timeout, the saga parked holding nothing. Its answer
    /// calls the step again, with the same attempt (`step_wait_turn`).
    async fn open_step_wait(
        &mut self,
        index: u32,
        mut row: StepResult,
        asked: WaitFor,
    ) -> Result<Flow, Halt> {
        let wait = match crate::plan::step_wait(
            &asked.name,
            asked.timeout_ms,
            asked.schema.as_deref(),
            &self.saga.plan,
            &crate::config::SchemaLimits::default(),
        ) {
            Ok(wait) => wait,
            Err(why) => {
                tracing::info!(error = %why, "step asked for a wait it cannot have");
                self.step_failed(index, Phase::Execute, row, why, true)
                    .await?;
                return Ok(Flow::Continue);
            }
        };
        let now = self.now();
        let until = Timestamp(now.millis() + wait.timeout_ms as i64);
        row.status = StepStatus::Waiting;
        row.started_at = Some(now);
        row.error = None;
        row.received = None;
        row.waiting_until = Some(until);
        row.logs.push(wait_log(&format!(
            "opened wait `{}` for {}",
            wait.name,
            humantime::format_duration(Duration::from_millis(wait.timeout_ms))
        )));
        row.wait_for = Some(wait);
        tracing::info!(wait = %asked.name, "step opened a wait");
        self.park_step(index, Phase::Execute, row, until, true)
            .await
    }

    /// A wait the step opened, answered or timed out: when it failed
    /// (rejected, timed out, a payload its schema refuses), the step fails
    /// and `Some` is returned; when it completed, `None`, and the step is
    /// called again with the payload (`mark` keeps its attempt).
    async fn step_wait_turn(&mut self, index: u32) -> Result<Option<Flow>, Halt> {
        self.may_go_on(index, Phase::Execute)?;
        let row = self.view().row(index, Phase::Execute);
        let Some(wait) = row.wait_for.clone() else {
            return Ok(None);
        };
        match waits::turn(&wait.name, &wait.spec(), &row, self.now()) {
            waits::Turn::Park(until) => self.park_waiting(until).await.map(Some),
            waits::Turn::Complete { how, .. } => {
                tracing::info!(wait = %wait.name, "{how}");
                if let Some(row) = self.ledger.get_mut(&index) {
                    row.logs
                        .push(wait_log(&format!("wait `{}` {how}", wait.name)));
                }
                Ok(None)
            }
            waits::Turn::Fail(why) => {
                tracing::info!(wait = %wait.name, error = %why, "wait failed");
                let mut row = row;
                row.logs.push(wait_log(&why));
                self.step_failed(index, Phase::Execute, row, why, true)
                    .await?;
                Ok(Some(Flow::Continue))
            }
        }
    }

    /// A completed wait in the compensation walk: nothing to undo.
    async fn undo_wait(&mut self, index: u32) -> Result<Flow, Halt> {
        let mut row = self.view().row(index, Phase::Compensate);
        row.phase = Phase::Compensate;
        self.compensated(index, row).await
    }

    /// Records the step undone (`row` carries its last call's logs), its
    /// resources gone from the desired state, and moves the walk on.
    async fn compensated(&mut self, index: u32, mut row: StepResult) -> Result<Flow, Halt> {
        row.status = StepStatus::Compensated;
        row.error = self.view().unfinished_cause(&row);
        row.finished_at = Some(self.now());
        row.waiting_until = None;
        self.commit(&|d: &Self| {
            let mut t = d.transition();
            t.steps.push(row.clone());
            t.removed_resources.push(index);
            t.saga.current_step_index = Some(index.saturating_sub(1));
            Some(t)
        })
        .await?
        .expect("always written");
        Ok(Flow::Continue)
    }

    /// The step answered `poll-after`: park the saga until then, holding
    /// nothing, unless its total wait would pass its limit (it fails) or a
    /// cancel arrived (compensation starts, from this step).
    async fn wait(
        &mut self,
        index: u32,
        phase: Phase,
        mut row: StepResult,
        asked: Duration,
    ) -> Result<Flow, Halt> {
        let config = &self.runner.inner.config;
        let waits = self.view().wait_until(
            index,
            &mut row,
            asked,
            config.min_poll_interval,
            config.default_max_wait,
            self.now(),
        );
        let (until, first) = match waits {
            Ok(waits) => waits,
            Err(why) => {
                tracing::info!(error = %why, "wait too long");
                self.step_failed(index, phase, row, why, true).await?;
                return Ok(Flow::Continue);
            }
        };
        row.waiting_until = Some(until);
        row.wait_started_at = Some(first);
        self.park_step(index, phase, row, until, false).await
    }

    /// Parks the saga at a step that waits until `until` (a poll, or a
    /// wait it opened: `announce` sends `wait.opened`), holding nothing;
    /// a cancel seen going forward starts compensation instead, and a
    /// pause parks it paused.
    async fn park_step(
        &mut self,
        index: u32,
        phase: Phase,
        row: StepResult,
        until: Timestamp,
        announce: bool,
    ) -> Result<Flow, Halt> {
        if phase == Phase::Execute && self.cancel_seen() {
            self.ledger.insert(index, row);
            return self
                .stop_forward(Stop::Cancelled, Some((index, true)))
                .await;
        }
        let committed = self
            .commit(&|d: &Self| {
                if phase == Phase::Execute && d.cancel_seen() {
                    return None;
                }
                let mut t = d.transition();
                t.steps.push(row.clone());
                if announce {
                    announce_wait_opened(&mut t, &d.saga);
                }
                t.release_lease = true;
                if phase == Phase::Execute && d.pause_seen() {
                    t.saga.status = Some(SagaStatus::Paused);
                    t.saga.pause_requested = Some(false);
                    t.saga.ready_at = Some(None);
                } else {
                    t.saga.ready_at = Some(Some(until));
                }
                Some(t)
            })
            .await?;
        let Some(t) = committed else {
            // A cancel arrived while the wait was being recorded.
            self.ledger.insert(index, row);
            return self
                .stop_forward(Stop::Cancelled, Some((index, true)))
                .await;
        };
        tracing::debug!(until = %until, polls = self.ledger[&index].polls, "step waits");
        if t.saga.status == Some(SagaStatus::Paused) {
            return Ok(Flow::Parked(None));
        }
        Ok(Flow::Parked(Some(until)))
    }

    /// Waits before the next attempt. An execute backoff is cut short by a
    /// cancel (compensation starts) or a request (the saga is read again:
    /// a pause parks it); a compensate backoff only by the host letting go.
    async fn back_off(&mut self, delay: Duration, phase: Phase) -> Result<Flow, Halt> {
        let sleep = self.runner.inner.clock.sleep(delay);
        match phase {
            Phase::Execute => {
                tokio::select! {
                    _ = sleep => {}
                    _ = self.active.cancel.cancelled() => self.check_stop()?,
                    _ = self.active.nudge.notified() => self.refresh().await?,
                }
            }
            Phase::Compensate => {
                tokio::select! {
                    _ = sleep => {}
                    _ = self.active.stop.cancelled() => self.check_stop()?,
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// The step failed for good in `phase` (its row carries the call's
    /// logs): execute starts compensation, compensate goes on with the
    /// walk. `interrupted`: it was stopped from outside (deadline, crash,
    /// a wait past its limit) rather than by its own error.
    async fn step_failed(
        &mut self,
        index: u32,
        phase: Phase,
        mut row: StepResult,
        why: String,
        interrupted: bool,
    ) -> Result<(), Halt> {
        row.phase = phase;
        row.error = Some(why.clone());
        row.finished_at = Some(self.now());
        match phase {
            Phase::Execute => {
                self.ledger.insert(index, row);
                self.stop_forward(Stop::Failed(why), Some((index, interrupted)))
                    .await
                    .map(drop)
            }
            Phase::Compensate => {
                row.status = StepStatus::CompensationFailed;
                row.waiting_until = None;
                let error = self.view().compensation_failed(index, &why);
                self.commit(&|d: &Self| {
                    let mut t = d.transition();
                    t.steps.push(row.clone());
                    t.saga.error = Some(error.clone());
                    t.saga.current_step_index = Some(index.saturating_sub(1));
                    Some(t)
                })
                .await?
                .expect("always written");
                Ok(())
            }
        }
    }

    /// The saga stops going forward: a step failed for good or a cancel
    /// arrived. `failed` is the step whose failure or interruption stopped
    /// it, with whether it was interrupted from outside (its row, in the
    /// in-memory ledger, carries the call's logs). Compensation starts from
    /// the last step whose work began; with none, the saga is rolled back.
    async fn stop_forward(
        &mut self,
        stop: Stop,
        failed: Option<(u32, bool)>,
    ) -> Result<Flow, Halt> {
        let marked_here = self.marked.as_ref().map(|m| m.index);
        let failed = self.view().stopped_step(failed, marked_here);
        let begun = match failed {
            Some(stopped) if self.view().stopped_from_outside(stopped) => {
                self.contract(stopped.0).await != Contract::V0_1
            }
            _ => false,
        };
        let plan = self.view().stop_plan(&stop, failed, begun, self.now());
        let status = plan.status;
        tracing::info!(%status, error = %plan.error.message, "saga stops going forward");
        self.commit(&|d: &Self| {
            let mut t = d.transition();
            d.unmark_into(&mut t);
            t.steps.extend(plan.failed_row.clone());
            t.saga.status = Some(status);
            t.saga.error = Some(plan.error.clone());
            t.saga.pause_requested = Some(false);
            if let Some(from) = plan.from {
                t.saga.current_step_index = Some(from);
            } else {
                end_saga(&mut t, &d.saga);
            }
            Some(t)
        })
        .await?
        .expect("always written");
        self.marked = None;
        Ok(Flow::Continue)
    }

    /// Calls the step's `compensate` (marked, as attempt `attempt`) and
    /// records what it answered.
    async fn compensate(&mut self, index: u32, attempt: u32) -> Result<Flow, Halt> {
        let limit = self.view().attempt_limit(index, Phase::Compensate);
        // Attempts since the latest retry (all of them, without one).
        let tried = attempt.saturating_sub(limit - self.spec(index).max_attempts);
        let mut outcome = self.call_plugin(index, Phase::Compensate, attempt).await?;
        let mut row = self.with_logs(index, Phase::Compensate, attempt, &mut outcome);
        match outcome.result {
            Ok(Progress::Done(_)) => self.compensated(index, row).await,
            Ok(Progress::PollAfter(delay)) => self.wait(index, Phase::Compensate, row, delay).await,
            Ok(Progress::WaitFor(_)) => {
                unreachable!("PluginHost::compensate answers wait-for as a contract violation")
            }
            Err(failure) if failure.is_retryable() && attempt < limit => {
                tracing::info!(error = %failure, "compensation failed; will retry");
                row.error = Some(failure.to_string());
                self.commit(&|d: &Self| {
                    let mut t = d.transition();
                    t.steps.push(row.clone());
                    Some(t)
                })
                .await?
                .expect("always written");
                crate::metrics::global().retry(&self.spec(index).name);
                let delay = self.runner.inner.config.retry.backoff(tried + 1);
                self.back_off(delay, Phase::Compensate).await
            }
            Err(failure) => {
                let why = if failure.is_retryable() {
                    format!("{failure} (after {})", attempts(tried))
                } else {
                    failure.to_string()
                };
                tracing::warn!(error = %why, "compensation failed for good");
                self.step_failed(index, Phase::Compensate, row, why, false)
                    .await?;
                Ok(Flow::Continue)
            }
        }
    }

    /// An `at_most_once` step's call was cut short: the saga goes
    /// `in_doubt` (then holds, for a human's resolution), the step not
    /// called again.
    async fn in_doubt(&mut self, index: u32) -> Result<(), Halt> {
        let error = self.view().in_doubt_error(index);
        tracing::warn!(step = index, "{}", error.message);
        self.commit(&|d: &Self| {
            let mut t = d.transition();
            t.saga.status = Some(SagaStatus::InDoubt);
            t.saga.current_step_index = Some(index);
            t.saga.error = Some(error.clone());
            Some(t)
        })
        .await?;
        Ok(())
    }

    /// The saga is `in_doubt`: not claimable until a human resolves it.
    async fn hold(&mut self) -> Result<Flow, Halt> {
        self.commit(&|d: &Self| {
            let mut t = d.transition();
            t.saga.ready_at = Some(None);
            t.release_lease = true;
            Some(t)
        })
        .await?;
        Ok(Flow::Parked(None))
    }

    /// A redrive's rewind undid its steps down to `floor`: forward again
    /// from there, each step from `floor` on ready to execute again.
    async fn rewound(&mut self, floor: u32) -> Result<Flow, Halt> {
        self.commit(&|d: &Self| {
            let mut t = d.transition();
            t.saga.status = Some(SagaStatus::Running);
            t.saga.current_step_index = Some(floor);
            t.steps = d
                .ledger
                .range(floor..)
                .map(|(_, r)| decide::redo(r))
                .collect();
            Some(t)
        })
        .await?;
        tracing::info!(step = floor, "rewound; going forward again");
        Ok(Flow::Continue)
    }

    /// No step is left to compensate: `rolled_back`, or `failed` when some
    /// compensation failed.
    async fn finish_compensation(&mut self) -> Result<Flow, Halt> {
        let (status, error) = self.view().compensation_end();
        self.commit(&|d: &Self| {
            let mut t = d.transition();
            t.saga.status = Some(status);
            t.saga.error = Some(error.clone());
            end_saga(&mut t, &d.saga);
            Some(t)
        })
        .await?;
        Ok(Flow::Continue)
    }
}

impl Runner {
    /// The step's plugin, ready: loaded here already, or from the store.
    pub(super) async fn step_plugin(&self, spec: &StepSpec) -> Result<Arc<Plugin>, StepFailure> {
        let plugins = &self.inner.plugins;
        if let Some(plugin) = plugins.get(&spec.plugin) {
            return Ok(plugin);
        }
        let bytes = self
            .inner
            .store
            .plugin_bytes(&spec.plugin)
            .await
            .map_err(|e| StepFailure::Host(format!("reading plugin {}: {e}", spec.plugin)))?
            .ok_or_else(|| {
                StepFailure::Host(format!("plugin {} is not in the store", spec.plugin))
            })?;
        plugins
            .load(&spec.plugin, &bytes, Some(&spec.name))
            .await
            .map_err(|e| StepFailure::Host(format!("loading plugin {}: {e}", spec.plugin)))
    }

    /// What a call of the step's plugin needs: the plugin ready, its
    /// limits, and what it is granted.
    pub(super) async fn call_setup(
        &self,
        spec: &StepSpec,
    ) -> Result<
        (
            Arc<Plugin>,
            crate::config::StepLimits,
            Arc<crate::grants::Access>,
        ),
        StepFailure,
    > {
        let plugin = self.step_plugin(spec).await?;
        let limits = self.inner.plugins.limits_for(
            Some(spec.timeout_ms),
            spec.max_memory_bytes,
            spec.max_output_bytes,
        );
        let access = self.inner.access.access(&spec.name).await.map_err(|e| {
            StepFailure::Host(format!(
                "reading what plugin `{}` is granted: {e}",
                spec.name
            ))
        })?;
        Ok((plugin, limits, access))
    }
}

/// Adds `wait.opened` to the webhook outbox of `t`, which opens a wait
/// of `saga`, with the saga's summary as `t` leaves it.
fn announce_wait_opened(t: &mut Transition, saga: &SagaRun) {
    let mut after = saga.clone();
    t.apply_to_saga(&mut after, saga.version + 1);
    t.outbox.push(crate::webhooks::saga_event(
        crate::model::WebhookEvent::WaitOpened,
        &after.summary(),
        t.now,
    ));
}

/// A line the host writes in a wait's log.
fn wait_log(message: &str) -> LedgerLogLine {
    LedgerLogLine {
        level: LogLevel::Info,
        message: format!("[host] {message}"),
        phase: Phase::Execute,
        attempt: 0,
    }
}
