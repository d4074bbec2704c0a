//! Human actions on a saga: cancel, pause and resume, and on a `failed`
//! saga, retry and resolve. The runner decides whether each is allowed in
//! the saga's state (a `409` that says the state when not), and writes it
//! fenced by the version it read: an action that races another change is
//! decided again on the new state.
//!
//! A saga some host is driving is never written under that host's feet:
//! cancel and pause are recorded as requests (a flag the driver reads at
//! its next write, and a notice to whichever host runs it), which the
//! driver carries out between steps. A saga nobody drives (paused, or
//! parked in a wait) is moved directly, under a fence that fails if a host
//! holds its lease. Every action is kept on the saga as `actions`.

use super::Runner;
use crate::model::{
    Action, ActionKind, Resolution, SagaDetail, SagaId, SagaRun, SagaStatus, StepStatus, Timestamp,
};
use crate::store::{Applied, Fence, Pins, StoreError, Transition};
use serde_json::{Map, Value};

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no saga {0}")]
    NotFound(SagaId),
    /// Not allowed in the saga's state; the message says the state.
    #[error("{0}")]
    Conflict(String),
    /// The saga has no wait of that name (404).
    #[error("{0}")]
    NoWait(String),
    /// The caller may not answer this wait (403).
    #[error("{0}")]
    Forbidden(String),
    /// What the action brings fails a rule (a wait's schema): 422, the
    /// saga unchanged.
    #[error("{0}")]
    Invalid(String),
    /// What the action is about is over (a wait past, or cancelled): 410.
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Whether an action may be asked of a saga in its state: the one rule the
/// runner's actions and the console's buttons both follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permit {
    /// Allowed, and it changes the saga.
    Change,
    /// Allowed, and already in effect (asked before): nothing to write.
    InEffect,
    /// Not in this state; why (the `409`'s message).
    Refused(String),
}

/// Whether `kind` may be asked of `saga` as it is. `Start` is never an
/// action on a stored saga. `Retry` and `Resolve` also need a
/// `compensation_failed` step, which the ledger tells (checked when they
/// run).
pub fn permits(saga: &SagaRun, kind: ActionKind) -> Permit {
    let id = saga.id;
    let status = saga.status;
    let ended = || Permit::Refused(format!("saga {id} has already ended ({status})"));
    match kind {
        ActionKind::Resolve if status == SagaStatus::InDoubt => Permit::Change,
        _ if status == SagaStatus::InDoubt => Permit::Refused(format!(
            "saga {id} is in_doubt: resolve step {} first (applied, with its output, or \
             not_applied)",
            saga.current_step_index
        )),
        ActionKind::Start => Permit::Refused(format!("saga {id} has already started")),
        ActionKind::Cancel if status.is_final() => ended(),
        ActionKind::Cancel if saga.cancel_requested => Permit::InEffect,
        ActionKind::Cancel => Permit::Change,
        ActionKind::Pause if status.is_final() => ended(),
        ActionKind::Pause if status == SagaStatus::Compensating => Permit::Refused(format!(
            "saga {id} is compensating; a pause stops a saga going forward, not its compensation"
        )),
        ActionKind::Pause if status == SagaStatus::Paused => Permit::InEffect,
        ActionKind::Pause if saga.cancel_requested => {
            Permit::Refused(format!("saga {id} is being cancelled"))
        }
        ActionKind::Pause if saga.pause_requested => Permit::InEffect,
        ActionKind::Pause => Permit::Change,
        ActionKind::Resume => match status {
            SagaStatus::Paused => Permit::Change,
            SagaStatus::Pending | SagaStatus::Running if saga.pause_requested => Permit::Change,
            status => Permit::Refused(format!("saga {id} is {status}, not paused")),
        },
        ActionKind::Retry if status == SagaStatus::Failed => Permit::Change,
        ActionKind::Retry => Permit::Refused(format!(
            "saga {id} is {status}; only a failed saga can be retried"
        )),
        ActionKind::Resolve if status == SagaStatus::Failed => Permit::Change,
        ActionKind::Redrive if matches!(status, SagaStatus::Failed | SagaStatus::RolledBack) => {
            Permit::Change
        }
        ActionKind::Redrive => Permit::Refused(format!(
            "saga {id} is {status}; only a failed or rolled_back saga can be redriven"
        )),
        ActionKind::Complete | ActionKind::Reject => Permit::Refused(format!(
            "a wait of saga {id} is answered at /v1/sagas/{id}/waits/NAME/complete or /reject"
        )),
        ActionKind::Resolve => Permit::Refused(format!(
            "saga {id} is {status}; only a failed or in_doubt saga's steps can be resolved"
        )),
    }
}

/// What `act` does with a permit: write, nothing, or refuse.
fn permitted(saga: &SagaRun, kind: ActionKind) -> Result<bool, ActionError> {
    match permits(saga, kind) {
        Permit::Change => Ok(true),
        Permit::InEffect => Ok(false),
        Permit::Refused(why) => Err(ActionError::Conflict(why)),
    }
}

/// How many times an action is decided again when the saga keeps changing
/// under it.
const MAX_RACES: usize = 20;

/// What an action decided, from the saga as read.
pub(super) enum Decision {
    /// Nothing to write (the action is already in effect).
    Done,
    Write(Box<Transition>),
}

impl Runner {
    /// Reads the saga, asks `decide` what to write, writes it if nothing
    /// changed meanwhile (else decides again), and returns the saga.
    pub(super) async fn act(
        &self,
        id: SagaId,
        decide: impl Fn(&SagaDetail, Timestamp) -> Result<Decision, ActionError>,
    ) -> Result<SagaRun, ActionError> {
        let store = &self.inner.store;
        for _ in 0..MAX_RACES {
            let detail = store.saga(id).await?.ok_or(ActionError::NotFound(id))?;
            let now = self.inner.clock.now();
            let mut t = match decide(&detail, now)? {
                Decision::Done => return Ok(detail.saga),
                Decision::Write(t) => *t,
            };
            super::stamp_outbox(&detail.saga, &mut t);
            match store.apply(t.clone()).await {
                Ok(Applied::Done { version, woke, .. }) => {
                    if woke {
                        // A queued saga cancelled let the next ones in.
                        self.wake();
                    }
                    let mut saga = detail.saga;
                    t.apply_to_saga(&mut saga, version);
                    self.written(&saga, &t);
                    return Ok(saga);
                }
                // Changed meanwhile, or a host holds it now: decide again.
                Ok(Applied::Stale) | Err(StoreError::LeaseLost(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ActionError::Conflict(format!(
            "saga {id} kept changing; try again"
        )))
    }

    /// Asks a saga to stop: its step in flight is interrupted and the
    /// steps whose work began are compensated. A paused or waiting saga is
    /// made ready, so the next claim compensates it at once.
    pub async fn cancel(&self, id: SagaId, actor: Option<String>) -> Result<SagaRun, ActionError> {
        let saga = self
            .act(id, |d, now| {
                let s = &d.saga;
                if !permitted(s, ActionKind::Cancel)? {
                    return Ok(Decision::Done);
                }
                let mut t = Transition::new(id, Fence::Version, s.version, now);
                t.saga.cancel_requested = Some(true);
                t.saga.ready_at = Some(Some(now));
                t.saga.actions = Some(with_action(s, ActionKind::Cancel, &actor, now, None, None));
                Ok(Decision::Write(Box::new(t)))
            })
            .await?;
        tracing::info!(saga = %id, "cancel requested");
        self.announce(id, true).await;
        Ok(saga)
    }

    /// Asks a saga to pause: no new step (or poll) starts; a step in flight
    /// finishes; then it is `paused` until resumed.
    pub async fn pause(&self, id: SagaId, actor: Option<String>) -> Result<SagaRun, ActionError> {
        let saga = self
            .act(id, |d, now| {
                let s = &d.saga;
                if !permitted(s, ActionKind::Pause)? {
                    return Ok(Decision::Done);
                }
                let mut t = Transition::new(id, Fence::Version, s.version, now);
                t.saga.pause_requested = Some(true);
                // A waiting saga is claimed now, and parked paused.
                t.saga.ready_at = Some(Some(now));
                t.saga.actions = Some(with_action(s, ActionKind::Pause, &actor, now, None, None));
                Ok(Decision::Write(Box::new(t)))
            })
            .await?;
        tracing::info!(saga = %id, "pause requested");
        self.announce(id, false).await;
        Ok(saga)
    }

    /// Resumes a paused saga where it stopped (a waiting step is called at
    /// its time, not before), or withdraws a pause not yet in effect.
    pub async fn resume(&self, id: SagaId, actor: Option<String>) -> Result<SagaRun, ActionError> {
        let saga = self
            .act(id, |d, now| {
                let s = &d.saga;
                permitted(s, ActionKind::Resume)?;
                let action = with_action(s, ActionKind::Resume, &actor, now, None, None);
                match s.status {
                    SagaStatus::Paused => {
                        let started = !d.steps.is_empty();
                        let ready = d
                            .steps
                            .iter()
                            // A wait answered while paused goes on at once.
                            .filter(|r| r.received.is_none())
                            .filter_map(|r| r.waiting_until)
                            .max()
                            .map_or(now, |until| until.max(now));
                        let mut t = Transition::new(id, Fence::Unleased, s.version, now);
                        t.saga.status = Some(if started {
                            SagaStatus::Running
                        } else {
                            SagaStatus::Pending
                        });
                        t.saga.pause_requested = Some(false);
                        t.saga.ready_at = Some(Some(ready));
                        t.saga.actions = Some(action);
                        Ok(Decision::Write(Box::new(t)))
                    }
                    // A pause asked for and not yet in effect, withdrawn.
                    _ => {
                        let mut t = Transition::new(id, Fence::Version, s.version, now);
                        t.saga.pause_requested = Some(false);
                        t.saga.actions = Some(action);
                        Ok(Decision::Write(Box::new(t)))
                    }
                }
            })
            .await?;
        tracing::info!(saga = %id, "resumed");
        self.wake();
        if let Err(e) = self.inner.store.announce_work().await {
            tracing::debug!(error = %e, "announcing a resumed saga");
        }
        Ok(saga)
    }

    /// Runs compensate again on every `compensation_failed` step of a
    /// `failed` saga, each with fresh attempts (its `max_attempts` counts
    /// again, while `compensate_attempts` goes on counting every call
    /// begun). The saga compensates from its highest such step down and
    /// ends `rolled_back`, or `failed` again. Its plugins are pinned again
    /// first: a plugin deleted since the saga ended is a conflict naming it.
    pub async fn retry(&self, id: SagaId, actor: Option<String>) -> Result<SagaRun, ActionError> {
        let result = self
            .act(id, |d, now| {
                let s = &d.saga;
                permitted(s, ActionKind::Retry)?;
                let mut t = Transition::new(id, Fence::Unleased, s.version, now);
                for row in d
                    .steps
                    .iter()
                    .filter(|r| r.status == StepStatus::CompensationFailed)
                {
                    let mut row = row.clone();
                    row.status = StepStatus::Compensating;
                    row.compensate_attempt_base = row.compensate_attempts;
                    row.waiting_until = None;
                    row.polls = 0;
                    row.wait_started_at = None;
                    row.finished_at = None;
                    t.steps.push(row);
                }
                let Some(from) = t.steps.iter().map(|r| r.index).max() else {
                    return Err(ActionError::Conflict(format!(
                        "saga {id} is failed but no step's compensation failed; nothing to retry"
                    )));
                };
                t.pins = Pins::Restore(crate::store::pinned_digests(&s.plan));
                t.saga.status = Some(SagaStatus::Compensating);
                t.saga.current_step_index = Some(from);
                t.saga.ready_at = Some(Some(now));
                // Its compensation is part of its life: it holds its keys.
                t.retake_slots = !s.concurrency.is_empty();
                t.saga.actions = Some(with_action(s, ActionKind::Retry, &actor, now, None, None));
                Ok(Decision::Write(Box::new(t)))
            })
            .await;
        let saga = match result {
            Err(ActionError::Store(StoreError::PinFailed(digest))) => {
                return Err(ActionError::Conflict(format!(
                    "saga {id} cannot be retried: its plugin {digest} was deleted since it ended; \
                     upload the same component again (same digest) and retry"
                )));
            }
            other => other?,
        };
        tracing::info!(saga = %id, "retry: compensating again");
        self.wake();
        if let Err(e) = self.inner.store.announce_work().await {
            tracing::debug!(error = %e, "announcing a retried saga");
        }
        Ok(saga)
    }

    /// Marks a `compensation_failed` step of a `failed` saga `compensated`
    /// by hand (someone undid its work outside wasaga); when no such step
    /// is left, the saga ends `rolled_back`. The row keeps its last error,
    /// followed by who resolved it and their note.
    pub async fn resolve(
        &self,
        id: SagaId,
        index: u32,
        resolution: Option<(Resolution, Option<Value>)>,
        note: Option<String>,
        actor: Option<String>,
    ) -> Result<SagaRun, ActionError> {
        let saga = self
            .act(id, |d, now| {
                let s = &d.saga;
                permitted(s, ActionKind::Resolve)?;
                if s.status == SagaStatus::InDoubt {
                    return resolve_in_doubt(d, index, resolution.clone(), &note, &actor, now);
                }
                if resolution.is_some() {
                    return Err(ActionError::Invalid(format!(
                        "saga {id} is {}: a `resolution` is for a step of an in_doubt saga; a \
                         compensation_failed step is resolved with a note alone",
                        s.status
                    )));
                }
                let Some(row) = d.steps.iter().find(|r| r.index == index) else {
                    return Err(ActionError::Conflict(format!(
                        "step {index} of saga {id} never ran; only a compensation_failed step can be resolved"
                    )));
                };
                if row.status != StepStatus::CompensationFailed {
                    return Err(ActionError::Conflict(format!(
                        "step {index} of saga {id} is {}, not compensation_failed",
                        row.status
                    )));
                }
                let mut row = row.clone();
                row.status = StepStatus::Compensated;
                let by = actor.as_deref().unwrap_or("an operator");
                let resolved = match &note {
                    Some(note) => format!("resolved by hand by {by}: {note}"),
                    None => format!("resolved by hand by {by}"),
                };
                row.error = Some(match row.error.take() {
                    Some(error) => format!("{error}; {resolved}"),
                    None => resolved,
                });
                let left: Vec<u32> = d
                    .steps
                    .iter()
                    .filter(|r| r.index != index && r.status == StepStatus::CompensationFailed)
                    .map(|r| r.index)
                    .collect();
                let mut t = Transition::new(id, Fence::Unleased, s.version, now);
                if let Some(mut error) = s.error.clone() {
                    super::decide::needs_a_human(&mut error, &s.plan, left.clone());
                    t.saga.error = Some(error);
                }
                if left.is_empty() {
                    t.saga.status = Some(SagaStatus::RolledBack);
                }
                t.steps.push(row);
                // Undone by hand: what it recorded is no longer meant to be.
                t.removed_resources.push(index);
                t.saga.actions = Some(with_action(
                    s,
                    ActionKind::Resolve,
                    &actor,
                    now,
                    note.clone(),
                    Some(index),
                ));
                Ok(Decision::Write(Box::new(t)))
            })
            .await?;
        tracing::info!(saga = %id, step = index, status = %saga.status, "step resolved by hand");
        if saga.status == SagaStatus::Running {
            // An in_doubt step resolved: the saga goes on.
            self.wake();
            if let Err(e) = self.inner.store.announce_work().await {
                tracing::debug!(error = %e, "announcing a resolved saga");
            }
        }
        Ok(saga)
    }

    /// Tells whoever drives `id` (here or on another host) about a request.
    async fn announce(&self, id: SagaId, cancel: bool) {
        self.notify_request(id, cancel);
        if let Err(e) = self.inner.store.announce_request(id, cancel).await {
            tracing::debug!(error = %e, "announcing a request");
        }
    }
}

/// Resolves the `in_doubt` step `index` of `d` (docs/recovery.md):
/// `applied` completes it with the output given (merged into the context)
/// and the saga goes on after it; `not_applied` has it called again, with
/// fresh attempts and a new idempotency key.
fn resolve_in_doubt(
    d: &SagaDetail,
    index: u32,
    resolution: Option<(Resolution, Option<Value>)>,
    note: &Option<String>,
    actor: &Option<String>,
    now: Timestamp,
) -> Result<Decision, ActionError> {
    let s = &d.saga;
    let id = s.id;
    if index != s.current_step_index {
        return Err(ActionError::Conflict(format!(
            "step {index} of saga {id} is not in doubt; step {} is",
            s.current_step_index
        )));
    }
    let Some((resolution, output)) = resolution else {
        return Err(ActionError::Invalid(format!(
            "saga {id} is in_doubt: say `resolution`: `applied` (with its `output`) or \
             `not_applied`"
        )));
    };
    let row = d
        .steps
        .iter()
        .find(|r| r.index == index)
        .ok_or_else(|| ActionError::Conflict(format!("step {index} of saga {id} never ran")))?;
    let mut row = row.clone();
    let by = actor.as_deref().unwrap_or("an operator");
    let mut t = Transition::new(id, Fence::Unleased, s.version, now);
    match (resolution, output) {
        (Resolution::Applied, output) => {
            let output = match output {
                None => Map::new(),
                Some(Value::Object(output)) => output,
                Some(_) => {
                    return Err(ActionError::Invalid(
                        "`output` must be a JSON object (what the step would have output)".into(),
                    ));
                }
            };
            let mut context = s.context.clone();
            context.extend(output.clone());
            row.status = StepStatus::Completed;
            row.output = Some(Value::Object(output));
            row.finished_at = Some(now);
            row.error = None;
            t.saga.context = Some(context);
            t.saga.current_step_index = Some(index + 1);
        }
        (Resolution::NotApplied, Some(_)) => {
            return Err(ActionError::Invalid(
                "`output` goes with `applied`; a call not applied output nothing".into(),
            ));
        }
        (Resolution::NotApplied, None) => {
            row.attempt_base = row.attempts;
            row.error = Some(format!(
                "its call was cut short; resolved by {by} as not applied: called again"
            ));
        }
    }
    t.steps.push(row);
    t.saga.status = Some(SagaStatus::Running);
    t.saga.clear_error = true;
    t.saga.ready_at = Some(Some(now));
    let mut actions = with_action(
        s,
        ActionKind::Resolve,
        actor,
        now,
        note.clone(),
        Some(index),
    );
    if let Some(action) = actions.last_mut() {
        action.payload = Some(serde_json::json!({ "resolution": resolution }));
    }
    t.saga.actions = Some(actions);
    Ok(Decision::Write(Box::new(t)))
}

/// The saga's actions with one more.
pub(super) fn with_action(
    saga: &SagaRun,
    action: ActionKind,
    actor: &Option<String>,
    at: Timestamp,
    note: Option<String>,
    step_index: Option<u32>,
) -> Vec<Action> {
    let mut actions = saga.actions.clone();
    actions.push(Action {
        action,
        actor: actor.clone(),
        at,
        note,
        step_index,
        payload: None,
    });
    actions
}
