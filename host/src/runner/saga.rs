//! The saga state machine, one saga at a time: every rule about which row
//! comes next lives here; the store only writes what this decides, fenced.
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

use super::{ActiveSaga, Runner};
use crate::model::{
    CallRecord, LedgerLogLine, MAX_CALLS_KEPT, Phase, SagaError, SagaRun, SagaStatus, StepResult,
    StepSpec, StepStatus, StopCause, Timestamp,
};
use crate::plugin::{CallOutcome, Contract, Plugin, Progress, StepCall, StepFailure};
use crate::store::{Applied, ClaimedSaga, Fence, Pins, StoreError, Transition};
use crate::telemetry::{CallInfo, CallSpan};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
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

/// How driving a saga ended on this host.
pub(super) enum Ended {
    /// It reached a final status.
    Final(SagaStatus),
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

/// Why a saga stops going forward.
enum Stop {
    Cancelled,
    Failed(String),
}

/// The first step's running mark, for a saga started by this host.
pub(super) fn first_mark(saga: &SagaRun, owner: &str, now: Timestamp) -> StepResult {
    let mut row = fresh_row(&saga.plan[0], 0, Phase::Execute);
    row.attempts = 1;
    row.started_at = Some(now);
    row.executed_by = Some(owner.to_string());
    row
}

/// A ledger row for a step that has none yet.
fn fresh_row(spec: &StepSpec, index: u32, phase: Phase) -> StepResult {
    StepResult {
        index,
        name: spec.name.clone(),
        plugin: spec.plugin.clone(),
        status: StepStatus::Running,
        phase,
        attempts: 0,
        compensate_attempts: 0,
        compensate_attempt_base: 0,
        calls: Vec::new(),
        output: None,
        output_omitted: None,
        error: None,
        logs: Vec::new(),
        started_at: None,
        finished_at: None,
        executed_by: None,
        waiting_until: None,
        polls: 0,
        wait_started_at: None,
    }
}

/// "1 attempt", "3 attempts".
fn attempts(n: u32) -> String {
    if n == 1 {
        "1 attempt".into()
    } else {
        format!("{n} attempts")
    }
}

fn attempts_of(row: Option<&StepResult>, phase: Phase) -> u32 {
    row.map_or(0, |r| match phase {
        Phase::Execute => r.attempts,
        Phase::Compensate => r.compensate_attempts,
    })
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
        saga: claim.saga,
        marked,
    };
    let outcome = driver.run().instrument(span.clone()).await;
    let _enter = span.enter();
    match outcome {
        Ok(ended) => {
            if let Ended::Final(status) = &ended {
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
    ledger: BTreeMap<u32, StepResult>,
    marked: Option<Marked>,
}

impl Driver<'_> {
    async fn run(&mut self) -> Result<Ended, Halt> {
        loop {
            let flow = match self.saga.status {
                SagaStatus::Pending | SagaStatus::Running => self.advance().await?,
                SagaStatus::Paused => self.claimed_while_paused().await?,
                SagaStatus::Compensating => self.compensate_next().await?,
                SagaStatus::Completed | SagaStatus::RolledBack | SagaStatus::Failed => {
                    return Ok(Ended::Final(self.saga.status));
                }
            };
            if let Flow::Parked(at) = flow {
                return Ok(Ended::Parked(at));
            }
        }
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
            match self.apply(t.clone()).await? {
                Applied::Done { version } => {
                    super::apply_update(&mut self.saga, &t, version);
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

    /// The last attempt `phase` may begin: the step's `max_attempts`,
    /// counted after the calls made before the saga's latest retry.
    fn attempt_limit(&self, index: u32, phase: Phase) -> u32 {
        let base = match phase {
            Phase::Execute => 0,
            Phase::Compensate => self
                .ledger
                .get(&index)
                .map_or(0, |r| r.compensate_attempt_base),
        };
        base + self.spec(index).max_attempts
    }

    fn spec(&self, index: u32) -> &StepSpec {
        &self.saga.plan[index as usize]
    }

    fn row(&self, index: u32, phase: Phase) -> StepResult {
        self.ledger
            .get(&index)
            .cloned()
            .unwrap_or_else(|| fresh_row(self.spec(index), index, phase))
    }

    /// The step's row marked as running (`execute`) or compensating, with
    /// the attempt count of that phase set to `attempt`.
    fn running_row(&self, index: u32, phase: Phase, attempt: u32) -> StepResult {
        let mut row = self.row(index, phase);
        row.phase = phase;
        match phase {
            Phase::Execute => {
                row.status = StepStatus::Running;
                row.attempts = attempt;
                row.started_at = Some(self.now());
            }
            Phase::Compensate => {
                row.status = StepStatus::Compensating;
                row.compensate_attempts = attempt;
            }
        }
        if row.waiting_until.is_none() && row.phase != phase {
            row.polls = 0;
            row.wait_started_at = None;
        }
        row.finished_at = None;
        row.executed_by = Some(self.owner().to_string());
        row
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

    /// Runs the step at `current_step_index`, or ends the saga.
    async fn advance(&mut self) -> Result<Flow, Halt> {
        let index = self.saga.current_step_index;
        if self.cancel_seen() {
            return self.stop_forward(Stop::Cancelled, None).await;
        }
        if index as usize >= self.saga.plan.len() {
            self.commit(&|d: &Self| {
                let mut t = d.transition();
                t.saga.status = Some(SagaStatus::Completed);
                end_saga(&mut t);
                Some(t)
            })
            .await?;
            self.saga.status = SagaStatus::Completed;
            return Ok(Flow::Continue);
        }
        if self.pause_seen() {
            return self.park_paused().await;
        }
        let marked_here = self
            .marked
            .as_ref()
            .is_some_and(|m| m.index == index && m.phase == Phase::Execute);
        if marked_here {
            // Marked running by this process, so owed a call: a draining
            // host makes it within the grace rather than leave a mark that
            // no call made.
            if self.active.lease_lost.load(Ordering::SeqCst) || self.active.stop.is_cancelled() {
                return Err(self.halt());
            }
        } else {
            self.check_stop()?;
        }
        if let Some(until) = self.waiting(index, Phase::Execute)
            && until > self.now()
        {
            return self.park_waiting(until).await;
        }
        let Some(attempt) = self.mark(index, Phase::Execute).await? else {
            return Ok(Flow::Continue);
        };
        self.execute(index, attempt).await
    }

    /// When the step waits in `phase` (it answered `poll-after`).
    fn waiting(&self, index: u32, phase: Phase) -> Option<Timestamp> {
        self.ledger
            .get(&index)
            .filter(|r| r.phase == phase)
            .and_then(|r| r.waiting_until)
    }

    /// Claimed while paused: only a cancel makes a paused saga ready.
    async fn claimed_while_paused(&mut self) -> Result<Flow, Halt> {
        if self.cancel_seen() {
            return self.stop_forward(Stop::Cancelled, None).await;
        }
        self.park_paused().await
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
        self.absorb(&t);
        self.saga.status = SagaStatus::Paused;
        self.saga.pause_requested = false;
        Ok(Flow::Parked(None))
    }

    /// Parks the saga until its waiting step's time (claimed early: another
    /// host's clock, or a cancel that was withdrawn).
    async fn park_waiting(&mut self, until: Timestamp) -> Result<Flow, Halt> {
        let committed = self
            .commit(&|d: &Self| {
                if d.cancel_seen() || d.pause_seen() {
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

    /// Applies what a committed transition wrote to the in-memory ledger.
    fn absorb(&mut self, t: &Transition) {
        for index in &t.remove_steps {
            self.ledger.remove(index);
        }
        for row in &t.steps {
            self.ledger.insert(row.index, row.clone());
        }
        if t.steps
            .iter()
            .any(|r| Some(r.index) == self.marked.as_ref().map(|m| m.index))
            || t.remove_steps
                .iter()
                .any(|i| Some(*i) == self.marked.as_ref().map(|m| m.index))
        {
            self.marked = None;
        }
    }

    /// Marks the step running for its next call (unless this process
    /// already did) and returns that call's attempt: the next one, or the
    /// same one when the step was waiting. `None` when it must not run now
    /// (a request arrived: decide again), or when it was interrupted more
    /// often than its attempt limit (then it has failed, and the state
    /// moved on).
    async fn mark(&mut self, index: u32, phase: Phase) -> Result<Option<u32>, Halt> {
        let done = attempts_of(self.ledger.get(&index), phase);
        if self
            .marked
            .as_ref()
            .is_some_and(|m| m.index == index && m.phase == phase)
        {
            self.marked = None;
            return Ok(Some(done));
        }
        let waited = self.waiting(index, phase).is_some();
        let attempt = if waited { done } else { done + 1 };
        if attempt > self.attempt_limit(index, phase) {
            let max = self.spec(index).max_attempts;
            // Its last call was cut short (its host died mid-call), and no
            // attempt is left.
            let why = format!(
                "the step's last call was cut short (its host stopped mid-call) and all {max} \
                 attempts are used: it did not finish"
            );
            let row = self.row(index, phase);
            self.step_failed(index, phase, row, why, true).await?;
            return Ok(None);
        }
        let committed = self
            .commit(&|d: &Self| {
                if phase == Phase::Execute && (d.cancel_seen() || d.pause_seen()) {
                    return None;
                }
                let mut row = if waited {
                    let mut row = d.row(index, phase);
                    row.executed_by = Some(d.owner().to_string());
                    row
                } else {
                    d.running_row(index, phase, attempt)
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
        let Some(t) = committed else {
            return Ok(None);
        };
        self.absorb(&t);
        if phase == Phase::Execute {
            self.saga.status = SagaStatus::Running;
        }
        Ok(Some(attempt))
    }

    async fn plugin(&self, spec: &StepSpec) -> Result<Arc<Plugin>, StepFailure> {
        let plugins = &self.runner.inner.plugins;
        if let Some(plugin) = plugins.get(&spec.plugin) {
            return Ok(plugin);
        }
        let bytes = self
            .runner
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
            idempotency_key: format!("{}:{index}:{phase}", self.saga.id),
            inputs: self.saga.inputs.to_string(),
            context: Value::Object(self.saga.context.clone()).to_string(),
            traceparent: None,
        }
    }

    /// The step's row with a call's log lines appended, within the limit of
    /// lines a step keeps across its calls.
    fn with_logs<T>(
        &self,
        index: u32,
        phase: Phase,
        attempt: u32,
        outcome: &mut CallOutcome<Progress<T>>,
    ) -> StepResult {
        let lines = std::mem::take(&mut outcome.logs);
        let mut row = self.row(index, phase);
        let finished_at = self.now();
        row.calls.push(CallRecord {
            phase,
            attempt,
            started_at: finished_at.minus(outcome.elapsed),
            finished_at,
            outcome: outcome_label(&outcome.result).to_string(),
        });
        let excess = row.calls.len().saturating_sub(MAX_CALLS_KEPT);
        row.calls.drain(..excess);
        let max = self.runner.inner.config.max_step_log_lines;
        let room = max.saturating_sub(row.logs.len());
        let dropped = lines.len().saturating_sub(room);
        row.logs
            .extend(lines.into_iter().take(room).map(|l| LedgerLogLine {
                level: l.level,
                message: l.message,
                phase,
                attempt,
            }));
        if dropped > 0
            && let Some(last) = row.logs.last_mut()
        {
            // The last kept line says what was dropped, so the row stays
            // within its bound whatever the step does.
            *last = LedgerLogLine {
                level: crate::model::LogLevel::Warn,
                message: format!(
                    "[host] {} more log lines dropped: a step keeps at most {max} lines across its calls",
                    dropped + 1
                ),
                phase,
                attempt,
            };
        }
        row
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
            let plugin = match self.plugin(&spec).await {
                Ok(plugin) => plugin,
                Err(failure) => return CallOutcome::failed(failure),
            };
            let plugins = &self.runner.inner.plugins;
            let limits = plugins.limits_for(
                Some(spec.timeout_ms),
                spec.max_memory_bytes,
                spec.max_output_bytes,
            );
            let access = match self.runner.inner.access.access(&spec.name).await {
                Ok(access) => access,
                Err(e) => {
                    return CallOutcome::failed(StepFailure::Host(format!(
                        "reading what plugin `{}` is granted: {e}",
                        spec.name
                    )));
                }
            };
            let mut call = self.call(index, phase, attempt);
            call.traceparent = span.as_ref().map(CallSpan::traceparent);
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
                let t = self
                    .commit(&|d: &Self| {
                        let mut t = d.transition();
                        t.steps.push(row.clone());
                        Some(t)
                    })
                    .await?;
                if let Some(t) = t {
                    self.absorb(&t);
                }
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
        let mut context = self.saga.context.clone();
        context.extend(output.clone());
        let size = Value::Object(context.clone()).to_string().len();
        let limit = self.runner.inner.config.max_context_bytes;
        if size > limit {
            let why = format!(
                "the saga's context would be {} with this step's output, beyond the limit of {}",
                crate::plugin::format_bytes(size as u64),
                crate::plugin::format_bytes(limit as u64)
            );
            self.step_failed(index, Phase::Execute, row, why, false)
                .await?;
            return Ok(Flow::Continue);
        }
        // Everything the saga keeps: the context, and every step's output
        // and log lines (this one's included).
        let stored = size
            + json_len(&Value::Object(output.clone()))
            + logs_len(&row)
            + self
                .ledger
                .values()
                .filter(|r| r.index != index)
                .map(|r| r.output.as_ref().map_or(0, json_len) + logs_len(r))
                .sum::<usize>();
        let budget = self.runner.inner.config.max_saga_stored_bytes;
        if stored > budget {
            let why = format!(
                "the saga would store {} with this step's output (its context, and every step's \
                 output and logs), beyond the limit of {} (--max-saga-stored)",
                crate::plugin::format_bytes(stored as u64),
                crate::plugin::format_bytes(budget as u64)
            );
            self.step_failed(index, Phase::Execute, row, why, false)
                .await?;
            return Ok(Flow::Continue);
        }
        let now = self.now();
        row.status = StepStatus::Completed;
        row.output = Some(Value::Object(output));
        row.error = None;
        row.finished_at = Some(now);
        row.waiting_until = None;
        let next = index + 1;
        let last = next as usize >= self.saga.plan.len();
        let next_row = (!last).then(|| {
            let mut r = fresh_row(self.spec(next), next, Phase::Execute);
            r.attempts = 1;
            r.started_at = Some(now);
            r.executed_by = Some(self.owner().to_string());
            r
        });
        let t = self
            .commit(&|d: &Self| {
                let mut t = d.transition();
                t.saga.current_step_index = Some(next);
                t.saga.context = Some(context.clone());
                t.steps.push(row.clone());
                t.resources = resources.iter().map(|r| (index, r.clone())).collect();
                if last {
                    t.saga.status = Some(SagaStatus::Completed);
                    end_saga(&mut t);
                } else if !d.draining() && !d.cancel_seen() && !d.pause_seen() {
                    // The next step's running mark rides in this transaction.
                    t.steps.extend(next_row.clone());
                }
                Some(t)
            })
            .await?
            .expect("a step's result is always written");
        self.absorb(&t);
        self.saga.context = context;
        self.saga.current_step_index = next;
        if last {
            self.saga.status = SagaStatus::Completed;
        } else if t.steps.len() == 2 {
            self.marked = Some(Marked {
                index: next,
                phase: Phase::Execute,
                previous: None,
            });
        }
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
        let delay = asked.max(config.min_poll_interval);
        let now = self.now();
        let first = row.wait_started_at.unwrap_or(now);
        let max_wait = self
            .spec(index)
            .max_wait_ms
            .map(Duration::from_millis)
            .unwrap_or(config.default_max_wait);
        let until = now.plus(delay);
        let waited = first.until(until);
        row.polls += 1;
        row.error = None;
        if waited > max_wait {
            let why = format!(
                "the step asked to be called again in {} ms, which would make its wait {} ms in all \
                 ({} polls), beyond its max_wait_ms of {}",
                delay.as_millis(),
                waited.as_millis(),
                row.polls,
                max_wait.as_millis()
            );
            tracing::info!(error = %why, "wait too long");
            self.step_failed(index, phase, row, why, true).await?;
            return Ok(Flow::Continue);
        }
        if phase == Phase::Execute && self.cancel_seen() {
            self.ledger.insert(index, row);
            return self
                .stop_forward(Stop::Cancelled, Some((index, true)))
                .await;
        }
        row.waiting_until = Some(until);
        row.wait_started_at = Some(first);
        let committed = self
            .commit(&|d: &Self| {
                if phase == Phase::Execute && d.cancel_seen() {
                    return None;
                }
                let mut t = d.transition();
                t.steps.push(row.clone());
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
        self.absorb(&t);
        tracing::debug!(until = %until, polls = self.ledger[&index].polls, "step waits");
        if t.saga.status == Some(SagaStatus::Paused) {
            self.saga.status = SagaStatus::Paused;
            self.saga.pause_requested = false;
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
                let mut error = self.saga.error.clone().unwrap_or_else(|| SagaError {
                    message: String::new(),
                    failed_step: None,
                    compensate_from_idx: Some(index),
                    reason: why.clone(),
                    cause: Some(StopCause::StepFailed),
                    compensation_failed_steps: Vec::new(),
                });
                if !error.compensation_failed_steps.contains(&index) {
                    error.compensation_failed_steps.push(index);
                }
                let t = self
                    .commit(&|d: &Self| {
                        let mut t = d.transition();
                        t.steps.push(row.clone());
                        t.saga.error = Some(error.clone());
                        t.saga.current_step_index = Some(index.saturating_sub(1));
                        Some(t)
                    })
                    .await?
                    .expect("always written");
                self.absorb(&t);
                self.saga.error = Some(error);
                self.saga.current_step_index = index.saturating_sub(1);
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
        // A running row not marked by this process and not just called:
        // its call was cut short (a crash) or it waits.
        let index = self.saga.current_step_index;
        let failed = failed.or_else(|| {
            let pre_marked = self.marked.as_ref().is_some_and(|m| m.index == index);
            // Between retries (the last call answered an error), its call
            // was not cut short.
            self.ledger
                .get(&index)
                .filter(|r| r.status == StepStatus::Running && !pre_marked)
                .map(|r| (index, r.error.is_none()))
        });
        let begun = match failed {
            Some((i, interrupted)) => {
                let row = &self.ledger[&i];
                let from_outside = interrupted || row.waiting_until.is_some() || row.polls > 0;
                from_outside && self.contract(i).await == Contract::V0_2
            }
            None => false,
        };
        let last_completed = self
            .ledger
            .values()
            .filter(|r| r.status == StepStatus::Completed)
            .map(|r| r.index)
            .max();
        let from = match failed {
            Some((i, _)) if begun => Some(i),
            _ => last_completed,
        };
        let cause = match (&stop, failed) {
            (Stop::Cancelled, Some((i, _))) => {
                let how = if self.ledger[&i].waiting_until.is_some() {
                    "was waiting"
                } else {
                    "ran"
                };
                format!("cancelled while step {i} ({}) {how}", self.spec(i).name)
            }
            (Stop::Cancelled, None) => "cancelled".to_string(),
            (Stop::Failed(why), Some((i, _))) => {
                format!("step {i} ({}) failed: {why}", self.spec(i).name)
            }
            (Stop::Failed(why), None) => why.clone(),
        };
        let message = match from {
            Some(from) if begun => {
                format!("{cause}; its work had begun, so compensating from step {from}")
            }
            Some(from) => format!("{cause}; compensating from step {from}"),
            None => format!("{cause}; no step had completed, nothing to compensate"),
        };
        let error = SagaError {
            message,
            failed_step: failed.map(|(i, _)| i),
            compensate_from_idx: from,
            reason: match &stop {
                Stop::Cancelled => "cancelled".into(),
                Stop::Failed(why) => why.clone(),
            },
            cause: Some(match stop {
                Stop::Cancelled => StopCause::Cancelled,
                Stop::Failed(_) => StopCause::StepFailed,
            }),
            compensation_failed_steps: Vec::new(),
        };
        let failed_row = failed.map(|(i, _)| {
            let mut row = self.ledger[&i].clone();
            if row.phase == Phase::Execute {
                row.status = StepStatus::Failed;
            }
            if row.error.is_none() {
                row.error = Some(StepFailure::Cancelled.to_string());
            }
            row.waiting_until = None;
            row.finished_at = Some(self.now());
            row
        });
        let status = match from {
            Some(_) => SagaStatus::Compensating,
            None => SagaStatus::RolledBack,
        };
        tracing::info!(%status, error = %error.message, "saga stops going forward");
        let t = self
            .commit(&|d: &Self| {
                let mut t = d.transition();
                d.unmark_into(&mut t);
                t.steps.extend(failed_row.clone());
                t.saga.status = Some(status);
                t.saga.error = Some(error.clone());
                t.saga.pause_requested = Some(false);
                if let Some(from) = from {
                    t.saga.current_step_index = Some(from);
                } else {
                    end_saga(&mut t);
                }
                Some(t)
            })
            .await?
            .expect("always written");
        self.absorb(&t);
        self.marked = None;
        self.saga.status = status;
        self.saga.error = Some(error);
        self.saga.pause_requested = false;
        if let Some(from) = from {
            self.saga.current_step_index = from;
        }
        Ok(Flow::Continue)
    }

    /// Whether the walk compensates step `index` (its row is `r`).
    /// For a compensated step whose execute never finished (its work had
    /// begun when the saga stopped), why it did not finish, which its row
    /// keeps; `None` for a step that had completed.
    fn unfinished_cause(&self, r: &StepResult) -> Option<String> {
        if r.output.is_some() {
            return None;
        }
        let error = self.saga.error.as_ref()?;
        if error.failed_step != Some(r.index) {
            return None;
        }
        Some(match error.cause {
            Some(StopCause::Cancelled) => StepFailure::Cancelled.to_string(),
            _ => error.reason.clone(),
        })
    }

    fn to_compensate(&self, r: &StepResult) -> bool {
        match r.status {
            StepStatus::Completed | StepStatus::Compensating => true,
            // A step whose work began when the saga stopped (see the
            // module docs): compensation started from it.
            StepStatus::Failed => self.saga.error.as_ref().is_some_and(|e| {
                e.failed_step == Some(r.index) && e.compensate_from_idx == Some(r.index)
            }),
            _ => false,
        }
    }

    /// Compensates the next step to undo at or below
    /// `current_step_index`, or ends the saga when none is left.
    async fn compensate_next(&mut self) -> Result<Flow, Halt> {
        let from = self.saga.current_step_index;
        let next = self
            .ledger
            .range(..=from)
            .rev()
            .find(|(_, r)| self.to_compensate(r))
            .map(|(i, _)| *i);
        let Some(index) = next else {
            return self.finish_compensation().await;
        };
        self.check_stop()?;
        if let Some(until) = self.waiting(index, Phase::Compensate)
            && until > self.now()
        {
            return self.park_waiting(until).await;
        }
        let Some(attempt) = self.mark(index, Phase::Compensate).await? else {
            return Ok(Flow::Continue);
        };
        let limit = self.attempt_limit(index, Phase::Compensate);
        // Attempts since the latest retry (all of them, without one).
        let tried = attempt.saturating_sub(limit - self.spec(index).max_attempts);
        let mut outcome = self.call_plugin(index, Phase::Compensate, attempt).await?;
        let mut row = self.with_logs(index, Phase::Compensate, attempt, &mut outcome);
        match outcome.result {
            Ok(Progress::Done(_)) => {
                row.status = StepStatus::Compensated;
                row.error = self.unfinished_cause(&row);
                row.finished_at = Some(self.now());
                row.waiting_until = None;
                let t = self
                    .commit(&|d: &Self| {
                        let mut t = d.transition();
                        t.steps.push(row.clone());
                        t.removed_resources.push(index);
                        t.saga.current_step_index = Some(index.saturating_sub(1));
                        Some(t)
                    })
                    .await?
                    .expect("always written");
                self.absorb(&t);
                self.saga.current_step_index = index.saturating_sub(1);
                Ok(Flow::Continue)
            }
            Ok(Progress::PollAfter(delay)) => self.wait(index, Phase::Compensate, row, delay).await,
            Err(failure) if failure.is_retryable() && attempt < limit => {
                tracing::info!(error = %failure, "compensation failed; will retry");
                row.error = Some(failure.to_string());
                let t = self
                    .commit(&|d: &Self| {
                        let mut t = d.transition();
                        t.steps.push(row.clone());
                        Some(t)
                    })
                    .await?
                    .expect("always written");
                self.absorb(&t);
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

    /// No step is left to compensate: `rolled_back`, or `failed` when some
    /// compensation failed.
    async fn finish_compensation(&mut self) -> Result<Flow, Halt> {
        let failed: Vec<u32> = self
            .ledger
            .values()
            .filter(|r| r.status == StepStatus::CompensationFailed)
            .map(|r| r.index)
            .collect();
        let mut error = self.saga.error.clone().unwrap_or_else(|| SagaError {
            message: "compensated".into(),
            failed_step: None,
            compensate_from_idx: None,
            reason: "unknown".into(),
            cause: None,
            compensation_failed_steps: Vec::new(),
        });
        let status = if failed.is_empty() {
            SagaStatus::RolledBack
        } else {
            SagaStatus::Failed
        };
        // After a retry, steps that failed before may be undone now.
        needs_a_human(&mut error, &self.saga.plan, failed);
        self.commit(&|d: &Self| {
            let mut t = d.transition();
            t.saga.status = Some(status);
            t.saga.error = Some(error.clone());
            end_saga(&mut t);
            Some(t)
        })
        .await?;
        self.saga.status = status;
        self.saga.error = Some(error);
        Ok(Flow::Continue)
    }
}

/// A call's outcome in one word (metrics, and the ledger's call records).
fn outcome_label<T>(result: &Result<Progress<T>, StepFailure>) -> &'static str {
    match result {
        Ok(Progress::Done(_)) => "ok",
        Ok(Progress::PollAfter(_)) => "poll",
        Err(StepFailure::Cancelled) => "interrupted",
        Err(f) if f.is_retryable() => "retryable",
        Err(_) => "fatal",
    }
}

/// Records in a `failed` saga's error which steps' compensation failed
/// and are left to a human (the message's first part, why the saga
/// stopped, stays).
pub(super) fn needs_a_human(error: &mut SagaError, plan: &[StepSpec], failed: Vec<u32>) {
    let base = error
        .message
        .split("; compensation of step")
        .next()
        .unwrap_or_default()
        .to_string();
    error.message = if failed.is_empty() {
        base
    } else {
        let names: Vec<String> = failed
            .iter()
            .map(|i| {
                let name = plan.get(*i as usize).map_or("?", |s| s.name.as_str());
                format!("{i} ({name})")
            })
            .collect();
        format!(
            "{base}; compensation of step{} {} failed: needs a human",
            if failed.len() == 1 { "" } else { "s" },
            names.join(", ")
        )
    };
    error.compensation_failed_steps = failed;
}

/// What ending a saga writes beside its final status: no longer ready,
/// its lease given up, its plugins free to delete.
fn end_saga(t: &mut Transition) {
    t.saga.ready_at = Some(None);
    t.release_lease = true;
    t.pins = Pins::Release;
}

/// Bytes of a JSON value as stored.
fn json_len(value: &Value) -> usize {
    serde_json::to_string(value).map_or(0, |t| t.len())
}

/// Bytes of a ledger row's log lines.
fn logs_len(row: &StepResult) -> usize {
    row.logs.iter().map(|l| l.message.len()).sum()
}
