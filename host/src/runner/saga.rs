//! The saga state machine, one saga at a time. This is the only place that
//! decides transitions; the store only applies them.
//!
//! `pending`/`running`: run the step at `current_step_index` (mark it
//! running with attempt + 1, call `execute`, persist), retrying retryable
//! failures with backoff up to the step's `max_attempts`. A success commits
//! the step's output, the merged context, the next index and (in the same
//! transaction, unless a cancel arrived) the next step's running mark. A
//! fatal failure, exhausted retries or a cancel switch to `compensating`:
//! walk from the last completed step down to step 0 calling `compensate`
//! with the same retry policy; a compensation that still fails is marked
//! `compensation_failed` and the walk goes on. The end is `completed`,
//! `rolled_back`, or `failed` when a compensation failed.
//!
//! Resume needs nothing special: a claimed saga continues from what is
//! persisted. A step found `running` (its host died mid-call) runs again
//! with attempt + 1 and the same idempotency key; a step interrupted more
//! times than its attempt limit fails, so a step that crashes its host
//! cannot loop forever.

use super::{ActiveSaga, RunnerInner};
use crate::model::{
    LedgerLogLine, LogLine, Phase, SagaError, SagaRun, SagaStatus, StepResult, StepSpec, StepStatus,
};
use crate::plugin::{CallOutcome, Plugin, StepCall, StepFailure};
use crate::store::{Applied, ClaimedSaga, StoreError, Transition};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument;

/// The ledger error of a step whose call a cancel interrupted.
const CANCELLED: &str = "interrupted by a cancel request";

/// Why driving stopped before the saga ended.
#[derive(Debug, thiserror::Error)]
enum Halt {
    /// Another host owns the saga now; it carries on from what we persisted.
    #[error("lease lost")]
    LeaseLost,
    /// Shutdown: leave the saga for the next claim.
    #[error("host shutting down")]
    Stopped,
    /// The database keeps failing; let the lease expire and retry later.
    #[error("store: {0}")]
    Store(StoreError),
}

/// Drives one claimed saga until it ends (returning its final status) or
/// this host must let go of it.
pub(super) async fn drive(
    runner: &Arc<RunnerInner>,
    claim: ClaimedSaga,
    active: &Arc<ActiveSaga>,
) -> Option<SagaStatus> {
    let span = tracing::info_span!("saga", id = %claim.saga.id, kind = %claim.saga.kind);
    let mut driver = Driver {
        runner,
        active,
        ledger: claim.ledger.into_iter().map(|r| (r.index, r)).collect(),
        saga: claim.saga,
        // The claim may have marked step 0 running already.
        marked: claim.first_step_started.then_some((0, Phase::Execute)),
    };
    let outcome = driver.run().instrument(span.clone()).await;
    let _enter = span.enter();
    match outcome {
        Ok(()) => {
            tracing::info!(status = %driver.saga.status, "saga ended");
            return Some(driver.saga.status);
        }
        Err(Halt::LeaseLost) => tracing::warn!("stopped: the lease was taken by another host"),
        Err(Halt::Stopped) => {
            tracing::info!("stopped for shutdown; another claim resumes it");
            let _ = runner
                .store
                .release_leases(&runner.owner, &[driver.saga.id])
                .await;
        }
        Err(Halt::Store(e)) => {
            tracing::error!(error = %e, "stopped: the store keeps failing; the saga resumes when its lease expires")
        }
    }
    None
}

struct Driver<'a> {
    runner: &'a Arc<RunnerInner>,
    active: &'a Arc<ActiveSaga>,
    saga: SagaRun,
    ledger: BTreeMap<u32, StepResult>,
    /// The (step, phase) this process marked running and has not called
    /// yet. A running mark not made by this process means its call may have
    /// happened before a crash, so the next call is a new attempt.
    marked: Option<(u32, Phase)>,
}

/// What one call of a step ended in.
enum Attempt {
    Succeeded,
    /// A retryable failure with attempts left: back off, then try again.
    Retry(Duration),
    /// The step failed for good (status already persisted).
    Failed,
}

impl Driver<'_> {
    async fn run(&mut self) -> Result<(), Halt> {
        loop {
            match self.saga.status {
                SagaStatus::Pending | SagaStatus::Running => self.advance().await?,
                SagaStatus::Compensating => self.compensate_next().await?,
                SagaStatus::Completed | SagaStatus::RolledBack | SagaStatus::Failed => {
                    return Ok(());
                }
            }
        }
    }

    fn now(&self) -> crate::model::Timestamp {
        self.runner.clock.now()
    }

    fn transition(&self) -> Transition {
        Transition::new(self.saga.id, self.runner.owner.clone(), self.now())
    }

    fn cancel_seen(&self) -> bool {
        self.saga.cancel_requested
            || (self.active.cancel.is_cancelled() && !self.active.stop.is_cancelled())
    }

    /// Stops between steps when the host is draining or must let go.
    fn check_stop(&self) -> Result<(), Halt> {
        if self.active.lease_lost.load(Ordering::SeqCst) {
            return Err(Halt::LeaseLost);
        }
        if self.active.stop.is_cancelled() || self.runner.draining.load(Ordering::SeqCst) {
            return Err(Halt::Stopped);
        }
        Ok(())
    }

    /// Persists a transition, retrying transient database failures; the
    /// in-memory state is updated by the caller only after this succeeds.
    async fn commit(&mut self, transition: Transition) -> Result<Applied, Halt> {
        let mut delay = Duration::from_millis(50);
        for attempt in 1.. {
            match self.runner.store.apply(transition.clone()).await {
                Ok(applied) => {
                    if applied.cancel_requested {
                        self.saga.cancel_requested = true;
                    }
                    return Ok(applied);
                }
                Err(StoreError::LeaseLost(_)) => {
                    self.active.lease_lost.store(true, Ordering::SeqCst);
                    return Err(Halt::LeaseLost);
                }
                Err(e) if attempt < 8 && !self.active.stop.is_cancelled() => {
                    tracing::warn!(error = %e, attempt, "persisting a transition failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(Halt::Store(e)),
            }
        }
        unreachable!("the loop returns")
    }

    fn spec(&self, index: u32) -> &StepSpec {
        &self.saga.plan[index as usize]
    }

    fn fresh_row(&self, index: u32, phase: Phase) -> StepResult {
        let spec = self.spec(index);
        StepResult {
            index,
            name: spec.name.clone(),
            plugin: spec.plugin.clone(),
            status: StepStatus::Running,
            phase,
            attempts: 0,
            compensate_attempts: 0,
            output: None,
            error: None,
            logs: Vec::new(),
            started_at: None,
            finished_at: None,
            executed_by: None,
        }
    }

    /// The step's row marked as running (`execute`) or compensating, with
    /// the attempt count of that phase set to `attempt`.
    fn running_row(&self, index: u32, phase: Phase, attempt: u32) -> StepResult {
        let mut row = self
            .ledger
            .get(&index)
            .cloned()
            .unwrap_or_else(|| self.fresh_row(index, phase));
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
        row.finished_at = None;
        row.executed_by = Some(self.runner.owner.to_string());
        row
    }

    /// Runs the step at `current_step_index`, or ends the saga.
    async fn advance(&mut self) -> Result<(), Halt> {
        let index = self.saga.current_step_index;
        if self.cancel_seen() {
            // A step marked running (its call interrupted, between retries,
            // or cut off by a crash) did not complete: it failed.
            let marked = self
                .ledger
                .get(&index)
                .is_some_and(|r| r.status == StepStatus::Running);
            self.marked = None;
            return if marked {
                self.fail_step(index, Phase::Execute, CANCELLED.into())
                    .await
            } else {
                self.begin_compensation(None, "cancelled".into()).await
            };
        }
        if index as usize >= self.saga.plan.len() {
            let mut t = self.transition();
            t.saga.status = Some(SagaStatus::Completed);
            self.commit(t).await?;
            self.saga.status = SagaStatus::Completed;
            return Ok(());
        }
        if self.marked == Some((index, Phase::Execute)) {
            // Marked running by this process (in the commit that ended the
            // step before, or that claimed the saga), so in flight: a
            // draining host runs it within the grace rather than leave a
            // running mark that no call made.
            if self.active.lease_lost.load(Ordering::SeqCst) || self.active.stop.is_cancelled() {
                return Err(self.halt());
            }
        } else {
            self.check_stop()?;
        }
        let Some(attempt) = self.mark(index, Phase::Execute).await? else {
            return Ok(());
        };
        match self.execute(index, attempt).await? {
            Attempt::Succeeded | Attempt::Failed => Ok(()),
            Attempt::Retry(delay) => self.back_off(delay, Phase::Execute).await,
        }
    }

    /// Marks the step running for its next attempt (unless this process
    /// already did) and returns that attempt. `None` when it must not run:
    /// a cancel was seen, or it was interrupted more often than its attempt
    /// limit (then it has failed, and the state moved on).
    async fn mark(&mut self, index: u32, phase: Phase) -> Result<Option<u32>, Halt> {
        let row = self.ledger.get(&index);
        let done = row.map_or(0, |r| match phase {
            Phase::Execute => r.attempts,
            Phase::Compensate => r.compensate_attempts,
        });
        if self.marked == Some((index, phase)) {
            self.marked = None;
            return Ok(Some(done));
        }
        let attempt = done + 1;
        let max = self.spec(index).max_attempts;
        if attempt > max {
            // Each earlier attempt was interrupted (its host died mid-call).
            let why = format!(
                "the step was interrupted {done} times (attempt limit {max}) without finishing"
            );
            self.fail_step(index, phase, why).await?;
            return Ok(None);
        }
        let row = self.running_row(index, phase, attempt);
        let mut t = self.transition();
        if phase == Phase::Execute {
            // Set only when it changes: rewriting the status costs the store
            // an index write (SQLite rewrites the partial index of unfinished
            // sagas whenever an update names the column).
            t.saga.status =
                (self.saga.status != SagaStatus::Running).then_some(SagaStatus::Running);
            t.saga.current_step_index = Some(index);
        }
        t.start = Some(row.clone());
        let applied = self.commit(t).await?;
        if phase == Phase::Execute {
            self.saga.status = SagaStatus::Running;
        }
        if !applied.started {
            // A cancel was requested before this step could start.
            return self
                .begin_compensation(None, "cancelled".into())
                .await
                .map(|()| None);
        }
        self.ledger.insert(index, row);
        Ok(Some(attempt))
    }

    async fn plugin(&self, spec: &StepSpec) -> Result<Arc<Plugin>, StepFailure> {
        let plugins = &self.runner.plugins;
        if let Some(plugin) = plugins.get(&spec.plugin) {
            return Ok(plugin);
        }
        let bytes = self
            .runner
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

    fn call(&self, index: u32, phase: Phase, attempt: u32) -> StepCall {
        StepCall {
            saga_id: self.saga.id.to_string(),
            kind: self.saga.kind.clone(),
            step_index: index,
            attempt,
            idempotency_key: format!("{}:{index}:{phase}", self.saga.id),
            inputs: self.saga.inputs.to_string(),
            context: serde_json::Value::Object(self.saga.context.clone()).to_string(),
        }
    }

    /// Appends a call's log to the step's ledger logs.
    fn with_logs(&self, index: u32, phase: Phase, attempt: u32, lines: Vec<LogLine>) -> StepResult {
        let mut row = self
            .ledger
            .get(&index)
            .cloned()
            .unwrap_or_else(|| self.fresh_row(index, phase));
        row.logs.extend(lines.into_iter().map(|l| LedgerLogLine {
            level: l.level,
            message: l.message,
            phase,
            attempt,
        }));
        row
    }

    /// Why this host must stop driving the saga now (its stop token fired).
    fn halt(&self) -> Halt {
        if self.active.lease_lost.load(Ordering::SeqCst) {
            Halt::LeaseLost
        } else {
            Halt::Stopped
        }
    }

    /// Calls the step's plugin for `phase`, in a span. `Err` when the call
    /// was cut off because this host must let go (lease lost, shutdown grace
    /// over): nothing of it is recorded, and whoever resumes runs the step
    /// again with the next attempt. Compensation outputs nothing.
    async fn call_plugin(
        &self,
        index: u32,
        phase: Phase,
        attempt: u32,
    ) -> Result<CallOutcome<serde_json::Map<String, serde_json::Value>>, Halt> {
        let spec = self.spec(index).clone();
        let span = tracing::info_span!("step", index, name = %spec.name, phase = %phase, attempt);
        let outcome = async {
            let plugin = match self.plugin(&spec).await {
                Ok(plugin) => plugin,
                Err(failure) => return CallOutcome::failed(failure),
            };
            let plugins = &self.runner.plugins;
            let limits = plugins.limits_for(
                Some(spec.timeout_ms),
                spec.max_memory_bytes,
                spec.max_output_bytes,
            );
            let call = self.call(index, phase, attempt);
            match phase {
                Phase::Execute => {
                    plugins
                        .execute(&plugin, call, &limits, self.active.cancel.clone())
                        .await
                }
                // A user's cancel does not stop compensation; only losing
                // the lease or the end of a shutdown grace does.
                Phase::Compensate => plugins
                    .compensate(&plugin, call, &limits, self.active.stop.clone())
                    .await
                    .and_then(|()| Ok(serde_json::Map::new())),
            }
        }
        .instrument(span)
        .await;
        if self.active.stop.is_cancelled() {
            return Err(self.halt());
        }
        Ok(outcome)
    }

    async fn execute(&mut self, index: u32, attempt: u32) -> Result<Attempt, Halt> {
        let spec = self.spec(index).clone();
        let outcome = self.call_plugin(index, Phase::Execute, attempt).await?;
        let now = self.now();
        let mut row = self.with_logs(index, Phase::Execute, attempt, outcome.logs);
        match outcome.result {
            Ok(output) => {
                tracing::debug!(
                    elapsed_ms = outcome.elapsed.as_millis() as u64,
                    "step completed"
                );
                let mut context = self.saga.context.clone();
                context.extend(output.clone());
                row.status = StepStatus::Completed;
                row.output = Some(serde_json::Value::Object(output));
                row.error = None;
                row.finished_at = Some(now);
                let next = index + 1;
                let mut t = self.transition();
                t.saga.current_step_index = Some(next);
                t.saga.context = Some(context.clone());
                t.steps.push(row.clone());
                t.resources = outcome.resources.into_iter().map(|r| (index, r)).collect();
                let last = next as usize >= self.saga.plan.len();
                let next_row = (!last).then(|| self.running_row(next, Phase::Execute, 1));
                if last {
                    t.saga.status = Some(SagaStatus::Completed);
                } else if !self.runner.draining.load(Ordering::SeqCst) && !self.cancel_seen() {
                    // The next step's running mark rides in this transaction.
                    t.start = next_row.clone();
                }
                let applied = self.commit(t).await?;
                self.ledger.insert(index, row);
                self.saga.context = context;
                self.saga.current_step_index = next;
                if last {
                    self.saga.status = SagaStatus::Completed;
                } else if applied.started {
                    self.ledger.insert(next, next_row.expect("a next step"));
                    self.marked = Some((next, Phase::Execute));
                }
                Ok(Attempt::Succeeded)
            }
            Err(StepFailure::Cancelled) => {
                tracing::info!("step interrupted by a cancel");
                self.ledger.insert(index, row);
                self.fail_step(index, Phase::Execute, CANCELLED.into())
                    .await?;
                Ok(Attempt::Failed)
            }
            Err(failure) if failure.is_retryable() && attempt < spec.max_attempts => {
                tracing::info!(error = %failure, "step failed; will retry");
                row.error = Some(failure.to_string());
                let mut t = self.transition();
                t.steps.push(row.clone());
                self.commit(t).await?;
                self.ledger.insert(index, row);
                Ok(Attempt::Retry(
                    self.runner.config.retry.backoff(attempt + 1),
                ))
            }
            Err(failure) => {
                let why = if failure.is_retryable() {
                    format!("{failure} (after {attempt} attempts)")
                } else {
                    failure.to_string()
                };
                tracing::info!(error = %why, "step failed for good");
                self.ledger.insert(index, row);
                self.fail_step(index, Phase::Execute, why).await?;
                Ok(Attempt::Failed)
            }
        }
    }

    /// Waits before the next attempt; a cancel cuts an execute backoff
    /// short (and starts compensation).
    async fn back_off(&mut self, delay: Duration, phase: Phase) -> Result<(), Halt> {
        let sleep = self.runner.clock.sleep(delay);
        let interrupt = match phase {
            Phase::Execute => self.active.cancel.clone(),
            Phase::Compensate => self.active.stop.clone(),
        };
        tokio::select! {
            _ = sleep => Ok(()),
            _ = interrupt.cancelled() => self.check_stop(),
        }
    }

    /// Marks the step failed (execute) or compensation_failed, and moves the
    /// saga on: compensation starts, or the walk continues.
    async fn fail_step(&mut self, index: u32, phase: Phase, why: String) -> Result<(), Halt> {
        let mut row = self
            .ledger
            .get(&index)
            .cloned()
            .unwrap_or_else(|| self.fresh_row(index, phase));
        row.phase = phase;
        row.status = match phase {
            Phase::Execute => StepStatus::Failed,
            Phase::Compensate => StepStatus::CompensationFailed,
        };
        row.error = Some(why.clone());
        row.finished_at = Some(self.now());
        self.ledger.insert(index, row);
        match phase {
            Phase::Execute => {
                let reason = if why == CANCELLED {
                    "cancelled".to_string()
                } else {
                    why
                };
                self.begin_compensation(Some(index), reason).await
            }
            Phase::Compensate => {
                let mut error = self.saga.error.clone().unwrap_or_else(|| SagaError {
                    message: String::new(),
                    failed_step: None,
                    compensate_from_idx: Some(index),
                    reason: why.clone(),
                    compensation_failed_steps: Vec::new(),
                });
                error.compensation_failed_steps.push(index);
                let mut t = self.transition();
                t.steps.push(self.ledger[&index].clone());
                t.saga.error = Some(error.clone());
                t.saga.current_step_index = Some(index.saturating_sub(1));
                self.commit(t).await?;
                self.saga.error = Some(error);
                self.saga.current_step_index = index.saturating_sub(1);
                Ok(())
            }
        }
    }

    /// The saga stops going forward: `failed_step` failed (or was
    /// interrupted), or a cancel arrived between steps. Compensation starts
    /// from the last completed step; with none, the saga is rolled back.
    async fn begin_compensation(
        &mut self,
        failed_step: Option<u32>,
        reason: String,
    ) -> Result<(), Halt> {
        let last_completed = self
            .ledger
            .values()
            .filter(|r| r.status == StepStatus::Completed)
            .map(|r| r.index)
            .max();
        let cause = match failed_step {
            Some(i) if reason == "cancelled" => {
                format!("cancelled while step {i} ({}) ran", self.spec(i).name)
            }
            Some(i) => format!("step {i} ({}) failed: {reason}", self.spec(i).name),
            None if reason == "cancelled" => "cancelled".to_string(),
            None => reason.clone(),
        };
        let message = match last_completed {
            Some(from) => format!("{cause}; compensating from step {from}"),
            None => format!("{cause}; no step had completed, nothing to compensate"),
        };
        let error = SagaError {
            message,
            failed_step,
            compensate_from_idx: last_completed,
            reason,
            compensation_failed_steps: Vec::new(),
        };
        let mut t = self.transition();
        if let Some(i) = failed_step {
            t.steps.push(self.ledger[&i].clone());
        }
        let status = match last_completed {
            Some(_) => SagaStatus::Compensating,
            None => SagaStatus::RolledBack,
        };
        t.saga.status = Some(status);
        t.saga.error = Some(error.clone());
        if let Some(from) = last_completed {
            t.saga.current_step_index = Some(from);
        }
        tracing::info!(%status, error = %error.message, "saga stops going forward");
        self.commit(t).await?;
        self.saga.status = status;
        self.saga.error = Some(error);
        if let Some(from) = last_completed {
            self.saga.current_step_index = from;
        }
        self.marked = None;
        Ok(())
    }

    /// Compensates the next completed step at or below
    /// `current_step_index`, or ends the saga when none is left.
    async fn compensate_next(&mut self) -> Result<(), Halt> {
        let from = self.saga.current_step_index;
        let next = self
            .ledger
            .range(..=from)
            .rev()
            .find(|(_, r)| matches!(r.status, StepStatus::Completed | StepStatus::Compensating))
            .map(|(i, _)| *i);
        let Some(index) = next else {
            return self.finish_compensation().await;
        };
        self.check_stop()?;
        let Some(attempt) = self.mark(index, Phase::Compensate).await? else {
            return Ok(());
        };
        let spec = self.spec(index).clone();
        let outcome = self.call_plugin(index, Phase::Compensate, attempt).await?;
        let mut row = self.with_logs(index, Phase::Compensate, attempt, outcome.logs);
        match outcome.result {
            Ok(_) => {
                row.status = StepStatus::Compensated;
                row.finished_at = Some(self.now());
                let mut t = self.transition();
                t.steps.push(row.clone());
                t.saga.current_step_index = Some(index.saturating_sub(1));
                self.commit(t).await?;
                self.ledger.insert(index, row);
                self.saga.current_step_index = index.saturating_sub(1);
                Ok(())
            }
            Err(failure) if failure.is_retryable() && attempt < spec.max_attempts => {
                tracing::info!(error = %failure, "compensation failed; will retry");
                row.error = Some(failure.to_string());
                let mut t = self.transition();
                t.steps.push(row.clone());
                self.commit(t).await?;
                self.ledger.insert(index, row);
                self.back_off(
                    self.runner.config.retry.backoff(attempt + 1),
                    Phase::Compensate,
                )
                .await
            }
            Err(failure) => {
                let why = if failure.is_retryable() {
                    format!("{failure} (after {attempt} attempts)")
                } else {
                    failure.to_string()
                };
                tracing::warn!(error = %why, "compensation failed for good");
                self.ledger.insert(index, row);
                self.fail_step(index, Phase::Compensate, why).await
            }
        }
    }

    /// No completed step is left to compensate: `rolled_back`, or `failed`
    /// when some compensation failed.
    async fn finish_compensation(&mut self) -> Result<(), Halt> {
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
            compensation_failed_steps: Vec::new(),
        });
        let status = if failed.is_empty() {
            SagaStatus::RolledBack
        } else {
            let names: Vec<String> = failed
                .iter()
                .map(|i| format!("{i} ({})", self.spec(*i).name))
                .collect();
            error.message = format!(
                "{}; compensation of step{} {} failed: needs a human",
                error.message,
                if failed.len() == 1 { "" } else { "s" },
                names.join(", ")
            );
            error.compensation_failed_steps = failed;
            SagaStatus::Failed
        };
        let mut t = self.transition();
        t.saga.status = Some(status);
        t.saga.error = Some(error.clone());
        self.commit(t).await?;
        self.saga.status = status;
        self.saga.error = Some(error);
        Ok(())
    }
}
