//! The saga state machine's decisions, as pure functions of the saga, its
//! ledger and what the driver observed (the time, a cancel signalled to
//! this host): what to do next, and every row and error a move writes. No
//! I/O here: the driver (`saga.rs`) calls plugins and commits what these
//! functions compute, and follows its commits with
//! [`Transition::apply_to`](crate::store::Transition::apply_to). Keeping the
//! rules apart keeps them testable without a store or a plugin, and keeps
//! the driver a loop of "decide, do, commit".

use crate::model::{
    ActionKind, CallRecord, LedgerLogLine, LogLevel, MAX_CALLS_KEPT, Phase, SagaError, SagaRun,
    SagaStatus, StepResult, StepSpec, StepStatus, StopCause, Timestamp,
};
use crate::plugin::{CallOutcome, Observed, Progress, StepFailure};
use crate::store::{Pins, Transition};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The ledger by step index.
pub(super) type Ledger = BTreeMap<u32, StepResult>;

/// What the machine does next from a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// The saga has a final status: nothing to do.
    Ended(SagaStatus),
    /// A cancel was seen while going forward (or paused): stop going
    /// forward and compensate.
    Cancel,
    /// Every step completed: the saga completes.
    Complete,
    /// A pause was asked, or the saga was claimed while paused: park it.
    Pause,
    /// The step waits in `phase` (it answered `poll-after`) until then.
    Wait {
        index: u32,
        phase: Phase,
        until: Timestamp,
    },
    /// Call the step for `phase` (after marking it running).
    Call { index: u32, phase: Phase },
    /// Take the saga's concurrency slots before its first step (it was
    /// queued, or stored while no driving slot was free).
    Admit,
    /// No step is left to undo: the saga ends rolled back, or failed.
    FinishCompensation,
    /// A redrive's rewind undid everything down to this step: the saga
    /// goes forward again from it.
    Rewound(u32),
    /// The saga is `in_doubt`: it waits, holding no lease, for a human.
    Hold,
}

/// Why a saga stops going forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stop {
    Cancelled,
    Failed(String),
}

/// What stopping going forward writes.
#[derive(Debug, Clone)]
pub(super) struct StopPlan {
    /// `compensating`, or `rolled_back` when nothing is to be undone.
    pub status: SagaStatus,
    pub error: SagaError,
    /// The row of the step that stopped the saga, finished.
    pub failed_row: Option<StepResult>,
    /// The step compensation starts from.
    pub from: Option<u32>,
}

/// A saga and its ledger, as the driver last read or wrote them.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub saga: &'a SagaRun,
    pub ledger: &'a Ledger,
    /// The saga is known to hold its concurrency slots (it has none, or
    /// this driver took them, or it has begun a step).
    pub slots_held: bool,
}

impl View<'_> {
    /// What to do next. `cancel_seen`: a cancel is recorded, or was
    /// signalled to this host.
    pub fn next(&self, now: Timestamp, cancel_seen: bool) -> Next {
        match self.saga.status {
            SagaStatus::Pending | SagaStatus::Running => {
                let index = self.saga.current_step_index;
                if cancel_seen {
                    Next::Cancel
                } else if index as usize >= self.saga.plan.len() {
                    Next::Complete
                } else if self.saga.pause_requested {
                    Next::Pause
                } else if !self.slots_held && self.ledger.is_empty() {
                    Next::Admit
                } else {
                    self.call_or_wait(index, Phase::Execute, now)
                }
            }
            // Only a cancel makes a paused saga ready.
            SagaStatus::Paused if cancel_seen => Next::Cancel,
            SagaStatus::Paused => Next::Pause,
            // A retried saga waits for its keys again.
            SagaStatus::Compensating if !self.slots_held => Next::Admit,
            SagaStatus::Compensating => match (self.next_to_compensate(), self.rewind_floor()) {
                (Some(index), _) => self.call_or_wait(index, Phase::Compensate, now),
                // A compensation that failed on the way ends the saga
                // `failed`, as any walk.
                (None, Some(floor))
                    if !self
                        .ledger
                        .values()
                        .any(|r| r.status == StepStatus::CompensationFailed) =>
                {
                    Next::Rewound(floor)
                }
                (None, _) => Next::FinishCompensation,
            },
            SagaStatus::InDoubt => Next::Hold,
            status @ (SagaStatus::Completed | SagaStatus::RolledBack | SagaStatus::Failed) => {
                Next::Ended(status)
            }
        }
    }

    fn call_or_wait(&self, index: u32, phase: Phase, now: Timestamp) -> Next {
        match self.waiting(index, phase) {
            Some(until) if until > now => Next::Wait {
                index,
                phase,
                until,
            },
            _ => Next::Call { index, phase },
        }
    }

    pub fn spec(&self, index: u32) -> &StepSpec {
        &self.saga.plan[index as usize]
    }

    /// The step's row, or a fresh one.
    pub fn row(&self, index: u32, phase: Phase) -> StepResult {
        self.ledger
            .get(&index)
            .cloned()
            .unwrap_or_else(|| fresh_row(self.spec(index), index, phase))
    }

    /// When the step waits in `phase` (it answered `poll-after`, or it is
    /// a wait, of the plan or opened by the step, with nothing received
    /// yet).
    pub fn waiting(&self, index: u32, phase: Phase) -> Option<Timestamp> {
        self.ledger
            .get(&index)
            .filter(|r| r.phase == phase && !answered(r))
            .and_then(|r| r.waiting_until)
    }

    /// Whether the step's next call in `phase` goes on from a wait (a poll
    /// whose time came, or a wait it opened that was answered or timed
    /// out): it is the same attempt, not a new one.
    pub fn resumes(&self, index: u32, phase: Phase) -> bool {
        self.ledger
            .get(&index)
            .is_some_and(|r| r.phase == phase && r.waiting_until.is_some())
    }

    /// Whether undoing the step must first ask whether its `execute` took
    /// effect: it did not finish (cut short, interrupted or failed, with
    /// no output) and its compensation has not begun.
    pub fn undo_unsure(&self, index: u32) -> bool {
        self.ledger.get(&index).is_some_and(|r| {
            r.phase == Phase::Execute && r.status == StepStatus::Failed && r.output.is_none()
        })
    }

    /// The wait the step opened itself (`wait-for`), while it is open or
    /// answered but not yet acted on.
    pub fn step_wait(&self, index: u32) -> Option<&crate::model::StepWait> {
        self.ledger
            .get(&index)
            .filter(|r| r.status == StepStatus::Waiting && r.phase == Phase::Execute)
            .and_then(|r| r.wait_for.as_ref())
    }

    /// Calls begun in `phase`.
    pub fn attempts(&self, index: u32, phase: Phase) -> u32 {
        self.ledger.get(&index).map_or(0, |r| match phase {
            Phase::Execute => r.attempts,
            Phase::Compensate => r.compensate_attempts,
        })
    }

    /// The last attempt `phase` may begin: the step's `max_attempts`,
    /// counted after the calls made before the saga's latest retry (or,
    /// for `execute`, the redrive that runs it again).
    pub fn attempt_limit(&self, index: u32, phase: Phase) -> u32 {
        let base = self.ledger.get(&index).map_or(0, |r| match phase {
            Phase::Execute => r.attempt_base,
            Phase::Compensate => r.compensate_attempt_base,
        });
        base + self.spec(index).max_attempts
    }

    /// The idempotency key of the step's calls in `phase`: the same for
    /// every attempt, and new after a redrive that executes the step again
    /// (its earlier execution was undone, or is being redone on purpose, so
    /// a provider must not answer from what it kept for the old key).
    pub fn idempotency_key(&self, index: u32, phase: Phase) -> String {
        let id = self.saga.id;
        match self.ledger.get(&index).map_or(0, |r| r.attempt_base) {
            0 => format!("{id}:{index}:{phase}"),
            base => format!("{id}:{index}:{phase}:r{base}"),
        }
    }

    /// Whether the step's last `execute` call was cut short: its row says
    /// running with no answer (no error, no wait). Its host died mid-call,
    /// or before the call its mark promised: from here, no one can tell.
    pub fn cut_short(&self, index: u32) -> bool {
        self.ledger.get(&index).is_some_and(|r| {
            r.phase == Phase::Execute
                && r.status == StepStatus::Running
                && r.error.is_none()
                && r.waiting_until.is_none()
        })
    }

    /// Why an `at_most_once` step cut short puts its saga `in_doubt`.
    pub fn in_doubt_error(&self, index: u32) -> SagaError {
        let attempt = self.attempts(index, Phase::Execute);
        let message = format!(
            "step {index} ({}) is at_most_once and its call (attempt {attempt}) was cut short: \
             whether it happened is unknown, so it is not made again; resolve it as applied \
             (with its output) or not_applied",
            self.spec(index).name
        );
        SagaError {
            message: message.clone(),
            failed_step: Some(index),
            compensate_from_idx: None,
            reason: message,
            cause: None,
            compensation_failed_steps: Vec::new(),
        }
    }

    /// While a redrive's rewind undoes steps (docs/recovery.md): the step
    /// it goes forward again from, below which nothing is undone. A rewind
    /// is a compensating saga with no error (every other walk has one),
    /// whose latest redrive asked for it; a cancel makes it an ordinary
    /// walk down to step 0.
    pub fn rewind_floor(&self) -> Option<u32> {
        if self.saga.status != SagaStatus::Compensating
            || self.saga.error.is_some()
            || self.saga.cancel_requested
        {
            return None;
        }
        let redrive = self
            .saga
            .actions
            .iter()
            .rev()
            .find(|a| a.action == ActionKind::Redrive)?;
        let rewind = redrive
            .payload
            .as_ref()
            .and_then(|p| p.get("mode"))
            .is_some_and(|m| m == "rewind");
        rewind.then_some(redrive.step_index).flatten()
    }

    /// The step's row marked as running (`execute`) or compensating, with
    /// the attempt count of that phase set to `attempt`.
    pub fn running_row(
        &self,
        index: u32,
        phase: Phase,
        attempt: u32,
        now: Timestamp,
        owner: &str,
    ) -> StepResult {
        let mut row = self.row(index, phase);
        row.phase = phase;
        match phase {
            Phase::Execute => {
                row.status = StepStatus::Running;
                row.attempts = attempt;
                row.started_at = Some(now);
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
        row.executed_by = Some(owner.to_string());
        row
    }

    /// The highest step at or below `current_step_index` to undo.
    fn next_to_compensate(&self) -> Option<u32> {
        let floor = self.rewind_floor().unwrap_or(0);
        if floor > self.saga.current_step_index {
            return None;
        }
        self.ledger
            .range(floor..=self.saga.current_step_index)
            .rev()
            .find(|(_, r)| self.is_undone_by_the_walk(r))
            .map(|(i, _)| *i)
    }

    /// Whether the walk compensates the step whose row is `r`.
    fn is_undone_by_the_walk(&self, r: &StepResult) -> bool {
        match r.status {
            StepStatus::Completed | StepStatus::Compensating => true,
            // A step whose work began when the saga stopped (see the
            // driver's module docs): compensation started from it.
            StepStatus::Failed => self.saga.error.as_ref().is_some_and(|e| {
                e.failed_step == Some(r.index) && e.compensate_from_idx == Some(r.index)
            }),
            _ => false,
        }
    }

    /// For a compensated step whose execute never finished (its work had
    /// begun when the saga stopped), why it did not finish, which its row
    /// keeps; `None` for a step that had completed.
    pub fn unfinished_cause(&self, r: &StepResult) -> Option<String> {
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

    /// The step that stops the saga going forward, with whether it was
    /// interrupted from outside: `failed` when a call just told; else the
    /// current step when its row says running and this process did not
    /// mark it (its call was cut short by a crash, or it waits). Between
    /// retries (the last call answered an error) it was not cut short.
    pub fn stopped_step(
        &self,
        failed: Option<(u32, bool)>,
        marked_here: Option<u32>,
    ) -> Option<(u32, bool)> {
        let index = self.saga.current_step_index;
        failed.or_else(|| {
            self.ledger
                .get(&index)
                .filter(|r| {
                    matches!(r.status, StepStatus::Running | StepStatus::Waiting)
                        && marked_here != Some(index)
                })
                .map(|r| (index, r.error.is_none()))
        })
    }

    /// Whether the stopped step was stopped from outside (interrupted, or
    /// waiting): its work may have begun, which a 0.2.0 step's
    /// compensation undoes.
    pub fn stopped_from_outside(&self, (index, interrupted): (u32, bool)) -> bool {
        if self.spec(index).wait.is_some() {
            // A wait does nothing outside: nothing of it to undo.
            return false;
        }
        let row = &self.ledger[&index];
        interrupted || row.waiting_until.is_some() || row.polls > 0
    }

    /// What stopping going forward writes. `failed`: see
    /// [`View::stopped_step`]; `begun`: its work had begun (stopped from
    /// outside, on a contract whose compensation undoes a partial
    /// execute). Compensation starts from the last step whose work began;
    /// with none, the saga is rolled back.
    pub fn stop_plan(
        &self,
        stop: &Stop,
        failed: Option<(u32, bool)>,
        begun: bool,
        now: Timestamp,
    ) -> StopPlan {
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
        let cause = match (stop, failed) {
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
            reason: match stop {
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
            row.finished_at = Some(now);
            row
        });
        StopPlan {
            status: match from {
                Some(_) => SagaStatus::Compensating,
                None => SagaStatus::RolledBack,
            },
            error,
            failed_row,
            from,
        }
    }

    /// A compensation that failed for good: the saga's error names the
    /// step among those left to a human.
    pub fn compensation_failed(&self, index: u32, why: &str) -> SagaError {
        let mut error = self.saga.error.clone().unwrap_or_else(|| SagaError {
            message: String::new(),
            failed_step: None,
            compensate_from_idx: Some(index),
            reason: why.to_string(),
            cause: Some(StopCause::StepFailed),
            compensation_failed_steps: Vec::new(),
        });
        if !error.compensation_failed_steps.contains(&index) {
            error.compensation_failed_steps.push(index);
        }
        error
    }

    /// No step is left to compensate: `rolled_back`, or `failed` (with the
    /// steps left to a human named) when some compensation failed.
    pub fn compensation_end(&self) -> (SagaStatus, SagaError) {
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
        (status, error)
    }

    /// The context after step `index` completes with `output`, if the
    /// saga's limits allow it: the context within `max_context`, and
    /// everything the saga keeps (the context, every step's output and
    /// log lines, this one's `row` included) within `max_stored`. `Err`
    /// says why the step fails instead.
    pub fn context_after(
        &self,
        index: u32,
        row: &StepResult,
        output: &Map<String, Value>,
        max_context: usize,
        max_stored: usize,
    ) -> Result<Map<String, Value>, String> {
        let mut context = self.saga.context.clone();
        context.extend(output.clone());
        let size = Value::Object(context.clone()).to_string().len();
        if size > max_context {
            return Err(format!(
                "the saga's context would be {} with this step's output, beyond the limit of {}",
                crate::plugin::format_bytes(size as u64),
                crate::plugin::format_bytes(max_context as u64)
            ));
        }
        let stored = size
            + json_len(&Value::Object(output.clone()))
            + logs_len(row)
            + self
                .ledger
                .values()
                .filter(|r| r.index != index)
                .map(|r| r.output.as_ref().map_or(0, json_len) + logs_len(r))
                .sum::<usize>();
        if stored > max_stored {
            return Err(format!(
                "the saga would store {} with this step's output (its context, and every step's \
                 output and logs), beyond the limit of {} (--max-saga-stored)",
                crate::plugin::format_bytes(stored as u64),
                crate::plugin::format_bytes(max_stored as u64)
            ));
        }
        Ok(context)
    }

    /// The step answered `poll-after` (asking for `asked`, at least
    /// `min_interval`): counts the poll on its `row`, and answers until
    /// when it waits and since when it has waited in all; or why the wait
    /// fails (its total would pass the step's `max_wait_ms`, else
    /// `default_max_wait`).
    pub fn wait_until(
        &self,
        index: u32,
        row: &mut StepResult,
        asked: Duration,
        min_interval: Duration,
        default_max_wait: Duration,
        now: Timestamp,
    ) -> Result<(Timestamp, Timestamp), String> {
        let delay = asked.max(min_interval);
        let first = row.wait_started_at.unwrap_or(now);
        let max_wait = self
            .spec(index)
            .max_wait_ms
            .map(Duration::from_millis)
            .unwrap_or(default_max_wait);
        let until = now.plus(delay);
        let waited = first.until(until);
        row.polls += 1;
        row.error = None;
        if waited > max_wait {
            return Err(format!(
                "the step asked to be called again in {} ms, which would make its wait {} ms in all \
                 ({} polls), beyond its max_wait_ms of {}",
                delay.as_millis(),
                waited.as_millis(),
                row.polls,
                max_wait.as_millis()
            ));
        }
        Ok((until, first))
    }
}

/// What a saga that a release admitted and claimed for this host
/// becomes in that same transaction ([`crate::store::TakeOver::mark`]):
/// `running`, with its first step marked for `owner`, when that step is
/// what it does next; else nothing (a cancel or a pause is recorded, or
/// it has begun before), and its driver decides.
pub(super) fn handoff_mark(
    saga: &SagaRun,
    ledger: &[StepResult],
    owner: &str,
    now: Timestamp,
) -> Option<(SagaStatus, StepResult)> {
    let ledger: Ledger = ledger.iter().map(|r| (r.index, r.clone())).collect();
    let view = View {
        saga,
        ledger: &ledger,
        slots_held: true,
    };
    match view.next(now, saga.cancel_requested) {
        Next::Call {
            index: 0,
            phase: Phase::Execute,
        } if ledger.is_empty() => Some((SagaStatus::Running, first_mark(saga, owner, now))),
        _ => None,
    }
}

/// The first step's running mark, for a saga started by this host.
pub(super) fn first_mark(saga: &SagaRun, owner: &str, now: Timestamp) -> StepResult {
    fresh_mark(&saga.plan[0], 0, owner, now)
}

/// The running mark of a step that has no row yet, for its first call
/// (written with the previous step's result, or when the saga starts).
pub(super) fn fresh_mark(spec: &StepSpec, index: u32, owner: &str, now: Timestamp) -> StepResult {
    let mut row = fresh_row(spec, index, Phase::Execute);
    row.attempts = 1;
    row.started_at = Some(now);
    row.executed_by = Some(owner.to_string());
    row
}

/// Whether a wait's row holds an answer the driver has yet to act on.
fn answered(row: &StepResult) -> bool {
    row.status == StepStatus::Waiting && row.received.is_some()
}

/// A step's row made ready to execute again after a redrive: its attempt
/// limits (and its idempotency key) count from the calls begun so far;
/// unless its work is still in effect (`completed`, run again on purpose),
/// the output of its undone execution and whatever its last wait held are
/// gone. Its status, error, log and calls stay as history until it runs.
pub(super) fn redo(row: &StepResult) -> StepResult {
    let mut row = row.clone();
    row.attempt_base = row.attempts;
    row.compensate_attempt_base = row.compensate_attempts;
    if row.status != StepStatus::Completed {
        row.output = None;
        row.waiting_until = None;
        row.polls = 0;
        row.wait_started_at = None;
        row.received = None;
        row.wait_for = None;
        row.correlation_key = None;
    }
    row
}

/// A ledger row for a step that has none yet.
pub(super) fn fresh_row(spec: &StepSpec, index: u32, phase: Phase) -> StepResult {
    StepResult {
        index,
        name: spec.name.clone(),
        plugin: spec.plugin.clone(),
        status: StepStatus::Running,
        phase,
        attempts: 0,
        compensate_attempts: 0,
        compensate_attempt_base: 0,
        attempt_base: 0,
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
        received: None,
        correlation_key: None,
        wait_for: None,
        callback_url: None,
    }
}

/// "1 attempt", "3 attempts".
pub(super) fn attempts(n: u32) -> String {
    if n == 1 {
        "1 attempt".into()
    } else {
        format!("{n} attempts")
    }
}

/// A call's outcome in one word (metrics, and the ledger's call records).
pub(super) fn outcome_label<T>(result: &Result<Progress<T>, StepFailure>) -> &'static str {
    match result {
        Ok(Progress::Done(_)) => "ok",
        Ok(Progress::PollAfter(_)) => "poll",
        Ok(Progress::WaitFor(_)) => "wait",
        Err(StepFailure::Cancelled) => "interrupted",
        Err(f) if f.is_retryable() => "retryable",
        Err(_) => "fatal",
    }
}

/// What an `observe` call said, in one word (metrics, and the ledger's
/// call records as `observe:WORD`).
pub(super) fn observe_label(result: &Result<Observed, StepFailure>) -> &'static str {
    match result {
        Ok(Observed::Applied(_)) => "applied",
        Ok(Observed::NotApplied) => "not-applied",
        Ok(Observed::Unknown) => "unknown",
        Err(_) => "failed",
    }
}

/// `row` with a call's record and log lines appended (the lines taken
/// from `outcome`), within `max_lines` lines kept across the step's calls:
/// past it, the last kept line says how many were dropped.
pub(super) fn record_call<T>(
    mut row: StepResult,
    phase: Phase,
    attempt: u32,
    outcome: &mut CallOutcome<Progress<T>>,
    max_lines: usize,
    finished_at: Timestamp,
) -> StepResult {
    let lines = std::mem::take(&mut outcome.logs);
    row.calls.push(CallRecord {
        phase,
        attempt,
        started_at: finished_at.minus(outcome.elapsed),
        finished_at,
        outcome: outcome_label(&outcome.result).to_string(),
    });
    let excess = row.calls.len().saturating_sub(MAX_CALLS_KEPT);
    row.calls.drain(..excess);
    let room = max_lines.saturating_sub(row.logs.len());
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
            level: LogLevel::Warn,
            message: format!(
                "[host] {} more log lines dropped: a step keeps at most {max_lines} lines across its calls",
                dropped + 1
            ),
            phase,
            attempt,
        };
    }
    row
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
/// its lease given up, its plugins free to delete, its concurrency slots
/// given to the next sagas queued on its keys.
pub(super) fn end_saga(t: &mut Transition, saga: &SagaRun) {
    t.saga.ready_at = Some(None);
    t.release_lease = true;
    t.pins = Pins::Release;
    t.release_slots = !saga.concurrency.is_empty();
}

/// Bytes of a JSON value as stored.
fn json_len(value: &Value) -> usize {
    serde_json::to_string(value).map_or(0, |t| t.len())
}

/// Bytes of a ledger row's log lines.
fn logs_len(row: &StepResult) -> usize {
    row.logs.iter().map(|l| l.message.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Digest;
    use serde_json::json;

    const NOW: Timestamp = Timestamp(1_000_000);

    fn saga(steps: usize) -> SagaRun {
        let plan = (0..steps)
            .map(|i| StepSpec {
                name: format!("step{i}"),
                plugin: Digest::of(format!("plugin {i}").as_bytes()),
                max_attempts: 3,
                timeout_ms: 1000,
                max_memory_bytes: None,
                max_output_bytes: None,
                max_wait_ms: Some(60_000),
                semantics: Default::default(),
                wait: None,
            })
            .collect();
        SagaRun::pending("test", plan, json!({}), None, None, Timestamp(0))
    }

    fn row(saga: &SagaRun, index: u32, status: StepStatus) -> StepResult {
        let mut row = fresh_mark(&saga.plan[index as usize], index, "host", Timestamp(0));
        row.status = status;
        if status == StepStatus::Completed {
            row.output = Some(json!({ format!("out{index}"): index }));
        }
        row
    }

    fn ledger(rows: Vec<StepResult>) -> Ledger {
        rows.into_iter().map(|r| (r.index, r)).collect()
    }

    #[test]
    fn a_saga_takes_its_slots_before_its_first_step_unless_cancelled_or_paused() {
        let mut s = saga(1);
        let empty = Ledger::new();
        let next = |s: &SagaRun, held, cancel| {
            View {
                saga: s,
                ledger: &empty,
                slots_held: held,
            }
            .next(NOW, cancel)
        };
        assert_eq!(next(&s, false, false), Next::Admit);
        assert_eq!(
            next(&s, false, true),
            Next::Cancel,
            "a queued saga is cancelled at once"
        );
        assert!(matches!(next(&s, true, false), Next::Call { index: 0, .. }));
        s.pause_requested = true;
        assert_eq!(
            next(&s, false, false),
            Next::Pause,
            "a queued saga may be paused"
        );
        s.pause_requested = false;
        s.status = SagaStatus::Compensating;
        assert_eq!(
            next(&s, false, false),
            Next::Admit,
            "a retried saga waits for its keys again"
        );
        assert_eq!(next(&s, true, false), Next::FinishCompensation);
    }

    #[test]
    fn a_saga_handed_a_key_begins_its_first_step_in_that_commit_unless_told_otherwise() {
        let mut s = saga(2);
        let (status, row) = handoff_mark(&s, &[], "host-b", NOW).expect("marked");
        assert_eq!(status, SagaStatus::Running);
        assert_eq!(
            (row.index, row.attempts, row.status),
            (0, 1, StepStatus::Running)
        );
        assert_eq!(row.executed_by.as_deref(), Some("host-b"));
        assert_eq!(
            handoff_mark(&s, std::slice::from_ref(&row), "host-b", NOW),
            None,
            "a saga that has begun is left to its driver"
        );
        s.pause_requested = true;
        assert_eq!(handoff_mark(&s, &[], "host-b", NOW), None, "paused in line");
        s.pause_requested = false;
        s.cancel_requested = true;
        assert_eq!(handoff_mark(&s, &[], "host-b", NOW), None, "cancelled");
    }

    #[test]
    fn going_forward_the_next_move_follows_cancel_then_end_then_pause_then_wait() {
        let mut s = saga(2);
        let mut l = ledger(vec![row(&s, 0, StepStatus::Running)]);
        let next = |s: &SagaRun, l: &Ledger, cancel| {
            View {
                saga: s,
                ledger: l,
                slots_held: true,
            }
            .next(NOW, cancel)
        };
        assert_eq!(
            next(&s, &l, false),
            Next::Call {
                index: 0,
                phase: Phase::Execute
            }
        );
        assert_eq!(next(&s, &l, true), Next::Cancel);
        s.pause_requested = true;
        assert_eq!(next(&s, &l, false), Next::Pause);
        assert_eq!(
            next(&s, &l, true),
            Next::Cancel,
            "a cancel outranks a pause"
        );
        s.pause_requested = false;
        l.get_mut(&0).unwrap().waiting_until = Some(NOW.plus(Duration::from_secs(5)));
        assert_eq!(
            next(&s, &l, false),
            Next::Wait {
                index: 0,
                phase: Phase::Execute,
                until: NOW.plus(Duration::from_secs(5))
            }
        );
        l.get_mut(&0).unwrap().waiting_until = Some(NOW);
        assert!(
            matches!(next(&s, &l, false), Next::Call { index: 0, .. }),
            "a wait whose time came is a call"
        );
        s.current_step_index = 2;
        assert_eq!(next(&s, &l, false), Next::Complete);
        s.status = SagaStatus::Paused;
        assert_eq!(next(&s, &l, false), Next::Pause);
        assert_eq!(next(&s, &l, true), Next::Cancel);
        s.status = SagaStatus::RolledBack;
        assert_eq!(next(&s, &l, true), Next::Ended(SagaStatus::RolledBack));
    }

    #[test]
    fn compensation_walks_down_from_the_current_step_over_what_completed() {
        let mut s = saga(4);
        s.status = SagaStatus::Compensating;
        s.current_step_index = 2;
        let l = ledger(vec![
            row(&s, 0, StepStatus::Completed),
            row(&s, 1, StepStatus::Compensated),
            row(&s, 2, StepStatus::Failed),
            row(&s, 3, StepStatus::Completed),
        ]);
        let view = View {
            saga: &s,
            ledger: &l,
            slots_held: true,
        };
        // Step 3 is above the walk; 2 failed (its work had not begun); 1
        // is undone already.
        assert_eq!(
            view.next(NOW, false),
            Next::Call {
                index: 0,
                phase: Phase::Compensate
            }
        );
        s.current_step_index = 0;
        let l = ledger(vec![row(&s, 0, StepStatus::Compensated)]);
        let view = View {
            saga: &s,
            ledger: &l,
            slots_held: true,
        };
        assert_eq!(view.next(NOW, false), Next::FinishCompensation);
        assert_eq!(view.compensation_end().0, SagaStatus::RolledBack);
    }

    #[test]
    fn a_stop_compensates_from_the_last_completed_step_or_from_a_step_whose_work_began() {
        let mut s = saga(3);
        s.current_step_index = 1;
        let mut running = row(&s, 1, StepStatus::Running);
        running.error = Some("boom".into());
        let l = ledger(vec![row(&s, 0, StepStatus::Completed), running]);
        let view = View {
            saga: &s,
            ledger: &l,
            slots_held: true,
        };
        let failed = view.stopped_step(Some((1, false)), None);
        let plan = view.stop_plan(&Stop::Failed("boom".into()), failed, false, NOW);
        assert_eq!(plan.status, SagaStatus::Compensating);
        assert_eq!(plan.from, Some(0));
        assert_eq!(
            plan.error.message,
            "step 1 (step1) failed: boom; compensating from step 0"
        );
        let failed_row = plan.failed_row.unwrap();
        assert_eq!(failed_row.status, StepStatus::Failed);
        assert_eq!(failed_row.finished_at, Some(NOW));

        let plan = view.stop_plan(&Stop::Cancelled, Some((1, true)), true, NOW);
        assert_eq!(plan.from, Some(1), "its work had begun: undo it too");
        assert!(
            plan.error
                .message
                .ends_with("its work had begun, so compensating from step 1"),
            "{}",
            plan.error.message
        );

        // Between retries the running step's last call answered an error:
        // it was not cut short. A mark this process made is not a stop.
        assert_eq!(view.stopped_step(None, None), Some((1, false)));
        assert_eq!(view.stopped_step(None, Some(1)), None);

        let l = Ledger::new();
        let view = View {
            saga: &s,
            ledger: &l,
            slots_held: true,
        };
        let plan = view.stop_plan(&Stop::Cancelled, None, false, NOW);
        assert_eq!(plan.status, SagaStatus::RolledBack);
        assert_eq!(
            plan.error.message,
            "cancelled; no step had completed, nothing to compensate"
        );
    }

    #[test]
    fn a_compensation_that_failed_for_good_leaves_the_saga_failed_naming_the_step() {
        let mut s = saga(2);
        s.status = SagaStatus::Compensating;
        let l = ledger(vec![row(&s, 0, StepStatus::Completed)]);
        let view = View {
            saga: &s,
            ledger: &l,
            slots_held: true,
        };
        s.error = Some(view.compensation_failed(0, "gone"));
        let l = ledger(vec![row(&s, 0, StepStatus::CompensationFailed)]);
        let view = View {
            saga: &s,
            ledger: &l,
            slots_held: true,
        };
        let (status, error) = view.compensation_end();
        assert_eq!(status, SagaStatus::Failed);
        assert_eq!(error.compensation_failed_steps, vec![0]);
        assert!(
            error
                .message
                .ends_with("compensation of step 0 (step0) failed: needs a human"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_step_output_past_the_saga_limits_fails_the_step_instead() {
        let s = saga(1);
        let l = Ledger::new();
        let view = View {
            saga: &s,
            ledger: &l,
            slots_held: true,
        };
        let r = row(&s, 0, StepStatus::Running);
        let output: Map<String, Value> =
            serde_json::from_value(json!({"a": "x".repeat(100)})).unwrap();
        let context = view.context_after(0, &r, &output, 1000, 1000).unwrap();
        assert_eq!(context["a"], output["a"]);
        let why = view.context_after(0, &r, &output, 50, 1000).unwrap_err();
        assert!(why.starts_with("the saga's context would be"), "{why}");
        let why = view.context_after(0, &r, &output, 1000, 150).unwrap_err();
        assert!(why.contains("--max-saga-stored"), "{why}");
    }

    #[test]
    fn a_wait_counts_its_polls_and_fails_past_the_steps_longest_wait() {
        let s = saga(1);
        let l = Ledger::new();
        let view = View {
            saga: &s,
            ledger: &l,
            slots_held: true,
        };
        let mut r = row(&s, 0, StepStatus::Running);
        let second = Duration::from_secs(1);
        let (until, first) = view
            .wait_until(0, &mut r, Duration::ZERO, second, Duration::MAX, NOW)
            .unwrap();
        assert_eq!((until, first, r.polls), (NOW.plus(second), NOW, 1));
        r.wait_started_at = Some(Timestamp(0));
        let why = view
            .wait_until(
                0,
                &mut r,
                Duration::from_secs(61),
                second,
                Duration::MAX,
                Timestamp(0),
            )
            .unwrap_err();
        assert!(why.contains("beyond its max_wait_ms of 60000"), "{why}");
        assert_eq!(r.polls, 2);
    }
}
