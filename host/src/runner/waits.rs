//! Waits for people and systems (docs/waits.md): the rules of a wait's
//! life, as pure functions, and the runner's actions that answer one.
//!
//! A wait opens when the saga reaches it (its ledger row `waiting` until
//! its timeout, the saga parked holding nothing). What answers it is
//! recorded on that row as `received` (a [`WaitVerdict`]) and the saga made
//! ready: an approval by as many distinct actors as it asks, a rejection,
//! a call of its capability URL, or a message under its correlation key
//! (`store::mailbox`). The driver then completes it (its payload becomes
//! its output, under its name in the context) or fails it (the saga
//! compensates); at its timeout it goes on with its default or fails.
//! Every answer is fenced by the saga's version, like every action, so
//! two answers racing are decided one after the other.

use super::Runner;
use super::actions::{ActionError, Decision, with_action};
use crate::config::SchemaLimits;
use crate::model::{
    ActionKind, SagaDetail, SagaId, SagaRun, SagaStatus, StepResult, StepStatus, Timestamp,
    WaitSpec, WaitVerdict,
};
use crate::plan::InputsSchema;
use crate::store::{Fence, NewMessage, Posted, Transition};
use serde_json::{Map, Value};

/// Who answers a wait.
#[derive(Debug, Clone)]
pub struct Answerer {
    /// The token's label; `None` on a server without tokens.
    pub actor: Option<String>,
    /// The caller has the operator role (or admin).
    pub operator: bool,
}

impl Answerer {
    /// How the actor is counted among a wait's approvals.
    fn name(&self) -> String {
        self.actor.clone().unwrap_or_else(|| "anonymous".into())
    }
}

/// An answer to a wait.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Approve or complete it with this payload (`{}` when none is given).
    Complete(Value),
    /// Reject it: it fails and the saga compensates.
    Reject,
}

/// What the driver does at a wait whose row is `waiting`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Turn {
    /// It completes with this payload; `how` says by whom, for its log.
    Complete { payload: Value, how: String },
    /// It fails, for this reason.
    Fail(String),
    /// Nothing yet: it waits until its timeout.
    Park(Timestamp),
}

/// What a wait's row says now (see [`Turn`]).
pub(super) fn turn(name: &str, spec: &WaitSpec, row: &StepResult, now: Timestamp) -> Turn {
    match &row.received {
        Some(WaitVerdict::Completed { payload, by }) => {
            if let Err(why) = check_payload(spec, payload) {
                return Turn::Fail(format!(
                    "wait `{name}` received a payload from {} that does not pass its schema: {why}",
                    by.join(", ")
                ));
            }
            Turn::Complete {
                payload: payload.clone(),
                how: format!("completed by {}", by.join(", ")),
            }
        }
        Some(WaitVerdict::Rejected { by, note }) => Turn::Fail(format!(
            "wait `{name}` was rejected by {}{}",
            by.as_deref().unwrap_or("an operator"),
            note.as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        )),
        None => match row.waiting_until {
            Some(until) if until > now => Turn::Park(until),
            _ => {
                let after =
                    humantime::format_duration(std::time::Duration::from_millis(spec.timeout_ms));
                match &spec.on_timeout_default {
                    Some(default) => Turn::Complete {
                        payload: default.clone(),
                        how: format!("timed out after {after}; went on with its default"),
                    },
                    None => Turn::Fail(format!(
                        "wait `{name}` timed out after {after} with no answer"
                    )),
                }
            }
        },
    }
}

/// Whether `payload` passes the wait's schema (the reason when not).
pub fn check_payload(spec: &WaitSpec, payload: &Value) -> Result<(), String> {
    let Some(schema) = &spec.schema else {
        return Ok(());
    };
    // Bounded when the plan was made; compiled per answer, which is rare.
    let compiled =
        InputsSchema::compile(schema, &SchemaLimits::default()).map_err(|e| e.to_string())?;
    compiled.check(payload).map_err(|e| {
        e.to_string()
            .replace("the inputs' root", "the payload's root")
            .replace("the inputs", "the payload")
    })
}

/// The output a completed wait records: its payload under its name.
pub(super) fn output(name: &str, payload: Value) -> Map<String, Value> {
    let mut output = Map::new();
    output.insert(name.to_string(), payload);
    output
}

/// A wait named in a request: a plan element, or one a step opened.
struct Found {
    index: u32,
    spec: WaitSpec,
    /// Opened by a step (`wait-for`): its payload goes to the step, and
    /// its output is the step's, not `{name: payload}`.
    by_step: bool,
}

/// The wait named `name`: in the saga's plan, or opened by a step with
/// `wait-for` (the latest wait of that name a step opened).
fn find(detail: &SagaDetail, name: &str) -> Option<Found> {
    let in_plan = detail.saga.plan.iter().enumerate().find_map(|(i, s)| {
        (s.name == name).then_some(Found {
            index: i as u32,
            spec: s.wait.clone()?,
            by_step: false,
        })
    });
    in_plan.or_else(|| {
        detail.steps.iter().find_map(|r| {
            let wait = r.wait_for.as_ref().filter(|w| w.name == name)?;
            Some(Found {
                index: r.index,
                spec: wait.spec(),
                by_step: true,
            })
        })
    })
}

/// What an answer to the wait `name` writes, from the saga as read: the
/// rules of `POST .../waits/{name}/complete` and `/reject`.
fn decide_answer(
    detail: &SagaDetail,
    name: &str,
    who: &Answerer,
    answer: &Answer,
    note: &Option<String>,
    now: Timestamp,
) -> Result<Decision, ActionError> {
    let saga = &detail.saga;
    let id = saga.id;
    let Found {
        index,
        spec,
        by_step,
    } = find(detail, name)
        .ok_or_else(|| ActionError::NoWait(format!("saga {id} has no wait `{name}`")))?;
    let spec = &spec;
    if !who.operator
        && !who
            .actor
            .as_ref()
            .is_some_and(|a| spec.approvers.contains(a))
    {
        return Err(ActionError::Forbidden(format!(
            "wait `{name}` is answered by an operator or by one of its approvers ({})",
            if spec.approvers.is_empty() {
                "none named".to_string()
            } else {
                spec.approvers.join(", ")
            }
        )));
    }
    let row = detail.steps.iter().find(|r| r.index == index);
    // Answered before: the same completion again is a success.
    let done_with = match row {
        Some(r) if r.status == StepStatus::Completed && !by_step => {
            r.output.as_ref().and_then(|o| o.get(name))
        }
        Some(r) => match &r.received {
            Some(WaitVerdict::Completed { payload, .. }) => Some(payload),
            _ => None,
        },
        None => None,
    };
    if let Some(payload) = done_with {
        return match answer {
            Answer::Complete(p) if p == payload => Ok(Decision::Done),
            Answer::Complete(_) => Err(ActionError::Conflict(format!(
                "wait `{name}` of saga {id} was completed with another payload"
            ))),
            Answer::Reject => Err(ActionError::Conflict(format!(
                "wait `{name}` of saga {id} was completed; it cannot be rejected now"
            ))),
        };
    }
    if saga.cancel_requested || saga.status.is_final() || saga.status == SagaStatus::Compensating {
        return Err(ActionError::Gone(format!(
            "saga {id} is {}; its wait `{name}` is over",
            if saga.cancel_requested && !saga.status.is_final() {
                "being cancelled".to_string()
            } else {
                saga.status.to_string()
            }
        )));
    }
    let Some(row) = row.filter(|r| r.status == StepStatus::Waiting) else {
        return Err(match row {
            Some(r) => {
                ActionError::Gone(format!("wait `{name}` of saga {id} is over ({})", r.status))
            }
            None => ActionError::Conflict(format!(
                "saga {id} is not at wait `{name}` yet (it is at step {} of {})",
                saga.current_step_index,
                saga.plan.len()
            )),
        });
    };
    if let Some(WaitVerdict::Rejected { .. }) = row.received {
        return Err(ActionError::Gone(format!(
            "wait `{name}` of saga {id} was rejected"
        )));
    }
    let mut row = row.clone();
    let mut t = Transition::new(id, Fence::Version, saga.version, now);
    // A paused saga stays parked; its resume finds the answer.
    let ready = (saga.status != SagaStatus::Paused).then_some(Some(now));
    let kind = match answer {
        Answer::Reject => {
            row.received = Some(WaitVerdict::Rejected {
                by: who.actor.clone(),
                note: note.clone(),
            });
            ActionKind::Reject
        }
        Answer::Complete(payload) => {
            check_payload(spec, payload).map_err(|why| {
                ActionError::Invalid(format!(
                    "the payload does not pass the schema of wait `{name}`: {why}"
                ))
            })?;
            // This opening's approvals so far (a wait may open again).
            let opened = row.started_at.unwrap_or(Timestamp(0));
            let approvals: Vec<_> = saga
                .actions
                .iter()
                .filter(|a| {
                    a.action == ActionKind::Complete
                        && a.step_index == Some(index)
                        && a.at >= opened
                })
                .collect();
            let me = who.name();
            if approvals
                .iter()
                .any(|a| a.actor.as_deref().unwrap_or("anonymous") == me)
            {
                return Err(ActionError::Conflict(format!(
                    "{me} has approved wait `{name}` of saga {id} already; it needs {} distinct approvers",
                    spec.approvals
                )));
            }
            if let Some(first) = approvals.first().and_then(|a| a.payload.as_ref())
                && first != payload
            {
                return Err(ActionError::Conflict(format!(
                    "wait `{name}` of saga {id} has approvals of another payload; every approval \
                     approves the same one"
                )));
            }
            if approvals.len() + 1 >= spec.approvals as usize {
                let mut by: Vec<String> = approvals
                    .iter()
                    .map(|a| a.actor.clone().unwrap_or_else(|| "anonymous".into()))
                    .collect();
                by.push(me);
                row.received = Some(WaitVerdict::Completed {
                    payload: payload.clone(),
                    by,
                });
            }
            ActionKind::Complete
        }
    };
    let mut actions = with_action(saga, kind, &who.actor, now, note.clone(), Some(index));
    if let (Answer::Complete(payload), Some(last)) = (answer, actions.last_mut()) {
        last.payload = Some(payload.clone());
    }
    t.saga.actions = Some(actions);
    if row.received.is_some() {
        t.saga.ready_at = ready;
        t.steps.push(row);
    }
    Ok(Decision::Write(Box::new(t)))
}

/// A message's outcome, as `POST /v1/messages` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Delivered to this wait now.
    Delivered { saga_id: SagaId, step_index: u32 },
    /// Kept for a wait that opens later.
    Kept,
    /// Posted before under this id: where it went then.
    Repeat { delivered_to: Option<(SagaId, u32)> },
}

impl Runner {
    /// Answers the wait `name` of saga `id`: see [`decide_answer`]. The
    /// saga is driven on at once when its wait is answered.
    pub async fn answer_wait(
        &self,
        id: SagaId,
        name: &str,
        who: Answerer,
        answer: Answer,
        note: Option<String>,
    ) -> Result<SagaRun, ActionError> {
        let saga = self
            .act(id, |d, now| {
                decide_answer(d, name, &who, &answer, &note, now)
            })
            .await?;
        tracing::info!(saga = %id, wait = name, actor = ?who.actor, "wait answered");
        self.wake();
        if let Err(e) = self.inner.store.announce_work().await {
            tracing::debug!(error = %e, "announcing an answered wait");
        }
        Ok(saga)
    }

    /// The open wait a callback token was made for, by index, and when it
    /// opened; `Gone` when that opening is over.
    pub async fn callback_wait(
        &self,
        id: SagaId,
        index: u32,
        opened: Timestamp,
    ) -> Result<String, ActionError> {
        let detail = self
            .inner
            .store
            .saga(id)
            .await?
            .ok_or(ActionError::NotFound(id))?;
        let row = detail.steps.iter().find(|r| r.index == index);
        let name = detail
            .saga
            .plan
            .get(index as usize)
            .filter(|s| s.wait.is_some())
            .map(|s| s.name.clone())
            .or_else(|| {
                row.and_then(|r| r.wait_for.as_ref())
                    .map(|w| w.name.clone())
            })
            .ok_or_else(|| ActionError::NoWait(format!("saga {id} has no such wait")))?;
        if row.and_then(|r| r.started_at) != Some(opened) {
            return Err(ActionError::Gone(format!(
                "this callback URL's wait `{name}` of saga {id} is over"
            )));
        }
        Ok(name)
    }

    /// Posts a message for the wait with its key: delivered now, or kept
    /// (until `message.expires_at`) for a wait that opens later.
    pub async fn post_message(&self, message: NewMessage) -> Result<MessageOutcome, ActionError> {
        let key = message.key.clone();
        match self.inner.store.post_message(message).await? {
            Posted::Delivered {
                saga_id,
                step_index,
            } => {
                tracing::info!(saga = %saga_id, step = step_index, key, "message delivered");
                self.wake();
                Ok(MessageOutcome::Delivered {
                    saga_id,
                    step_index,
                })
            }
            Posted::Kept => {
                tracing::info!(key, "message kept for a wait to come");
                Ok(MessageOutcome::Kept)
            }
            Posted::Repeat { delivered_to } => Ok(MessageOutcome::Repeat { delivered_to }),
            Posted::IdConflict => Err(ActionError::Conflict(
                "the Idempotency-Key was used for another message".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Digest, Phase, StepSpec};
    use serde_json::json;

    const NOW: Timestamp = Timestamp(1_000_000);

    fn spec(approvals: u32, approvers: &[&str]) -> WaitSpec {
        WaitSpec {
            schema: Some(json!({"type": "object", "required": ["ok"]})),
            timeout_ms: 60_000,
            on_timeout_default: None,
            approvals,
            approvers: approvers.iter().map(|a| a.to_string()).collect(),
            correlation_key: None,
        }
    }

    fn saga_at_wait(wait: WaitSpec) -> SagaDetail {
        let mut saga = SagaRun::pending(
            "t",
            vec![StepSpec {
                name: "approval".into(),
                plugin: Digest::wait(),
                max_attempts: 1,
                timeout_ms: 60_000,
                max_memory_bytes: None,
                max_output_bytes: None,
                max_wait_ms: None,
                semantics: Default::default(),
                wait: Some(wait),
            }],
            json!({}),
            None,
            None,
            Timestamp(0),
        );
        saga.status = SagaStatus::Running;
        let mut row = crate::runner::decide::fresh_row(&saga.plan[0], 0, Phase::Execute);
        row.status = StepStatus::Waiting;
        row.phase = Phase::Execute;
        row.started_at = Some(Timestamp(10));
        row.waiting_until = Some(Timestamp(10 + 60_000));
        SagaDetail {
            saga,
            steps: vec![row],
            resources: Vec::new(),
            slots: Vec::new(),
        }
    }

    fn who(actor: &str, operator: bool) -> Answerer {
        Answerer {
            actor: Some(actor.into()),
            operator,
        }
    }

    /// `actor`'s answer to the wait `approval`, with no note, at `NOW`.
    fn ask(
        d: &SagaDetail,
        actor: &str,
        operator: bool,
        answer: &Answer,
    ) -> Result<Decision, ActionError> {
        decide_answer(d, "approval", &who(actor, operator), answer, &None, NOW)
    }

    fn written(d: Result<Decision, ActionError>) -> Transition {
        match d {
            Ok(Decision::Write(t)) => *t,
            Ok(Decision::Done) => panic!("nothing written"),
            Err(e) => panic!("refused: {e}"),
        }
    }

    fn refused(d: Result<Decision, ActionError>) -> String {
        match d {
            Err(e) => e.to_string(),
            Ok(_) => panic!("allowed"),
        }
    }

    #[test]
    fn two_distinct_approvers_complete_a_two_of_three_wait() {
        let mut d = saga_at_wait(spec(2, &["alice", "bob", "carol"]));
        let ok = Answer::Complete(json!({"ok": true}));
        let t = written(ask(&d, "alice", false, &ok));
        assert!(t.steps.is_empty(), "one approval of two completes nothing");
        d.saga.actions = t.saga.actions.clone().unwrap();
        let again = refused(ask(&d, "alice", false, &ok));
        assert!(again.contains("alice has approved"), "{again}");
        let other = Answer::Complete(json!({"ok": false}));
        let mixed = refused(ask(&d, "bob", false, &other));
        assert!(mixed.contains("another payload"), "{mixed}");
        let t = written(ask(&d, "bob", false, &ok));
        assert_eq!(
            t.steps[0].received,
            Some(WaitVerdict::Completed {
                payload: json!({"ok": true}),
                by: vec!["alice".into(), "bob".into()]
            })
        );
        assert_eq!(t.saga.ready_at, Some(Some(NOW)));
    }

    #[test]
    fn answers_are_refused_by_role_schema_name_and_state() {
        let d = saga_at_wait(spec(1, &["alice"]));
        let ok = Answer::Complete(json!({"ok": true}));
        let stranger = refused(ask(&d, "eve", false, &ok));
        assert!(
            stranger.contains("operator or by one of its approvers"),
            "{stranger}"
        );
        let bad = Answer::Complete(json!({"nope": 1}));
        assert!(matches!(
            ask(&d, "alice", false, &bad),
            Err(ActionError::Invalid(_))
        ));
        assert!(matches!(
            decide_answer(&d, "other", &who("alice", false), &ok, &None, NOW),
            Err(ActionError::NoWait(_))
        ));
        let mut cancelled = d.clone();
        cancelled.saga.cancel_requested = true;
        assert!(matches!(
            ask(&cancelled, "ops", true, &ok),
            Err(ActionError::Gone(_))
        ));
        let mut done = d.clone();
        done.steps[0].status = StepStatus::Completed;
        done.steps[0].output = Some(json!({"approval": {"ok": true}}));
        assert!(matches!(ask(&done, "ops", true, &ok), Ok(Decision::Done)));
        assert!(matches!(
            ask(&done, "ops", true, &bad),
            Err(ActionError::Conflict(_))
        ));
    }

    #[test]
    fn a_turn_completes_fails_or_parks() {
        let d = saga_at_wait(spec(1, &[]));
        let mut row = d.steps[0].clone();
        row.waiting_until = Some(Timestamp(NOW.0 + 1));
        assert_eq!(
            turn("approval", &spec(1, &[]), &row, NOW),
            Turn::Park(Timestamp(NOW.0 + 1))
        );
        let late = Timestamp(NOW.0 + 1);
        assert!(
            matches!(turn("approval", &spec(1, &[]), &row, late), Turn::Fail(why) if why.contains("timed out after 1m"))
        );
        let mut with_default = spec(1, &[]);
        with_default.on_timeout_default = Some(json!({"ok": "default"}));
        assert!(
            matches!(turn("approval", &with_default, &row, late), Turn::Complete { payload, .. } if payload == json!({"ok": "default"}))
        );
        row.received = Some(WaitVerdict::Completed {
            payload: json!({"wrong": 1}),
            by: vec!["message:m1".into()],
        });
        assert!(
            matches!(turn("approval", &spec(1, &[]), &row, NOW), Turn::Fail(why) if why.contains("message:m1"))
        );
        row.received = Some(WaitVerdict::Rejected {
            by: Some("alice".into()),
            note: Some("no".into()),
        });
        assert_eq!(
            turn("approval", &spec(1, &[]), &row, NOW),
            Turn::Fail("wait `approval` was rejected by alice: no".into())
        );
    }
}
