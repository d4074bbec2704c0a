//! Redrive (docs/recovery.md): a `failed` or `rolled_back` saga driven
//! forward again, keeping its id. [`plan`] is the rule, a pure function of
//! the saga, its ledger and the request: which steps are kept (their work
//! is in effect), which are executed again, which a rewind compensates
//! first, and with which digests. [`Runner::redrive`] writes what it
//! decides in one transaction fenced by the version it read, and the driver
//! then carries the saga on as any other (a rewind's walk stops at its step:
//! `decide::View::rewind_floor`).
//!
//! A step's work is in effect when its row is `completed`. Everything
//! before the first step executed again must be: a rerun from step 3 of a
//! saga whose step 1 was compensated would run without step 1's work, so it
//! is refused, naming step 1.

use super::Runner;
use super::actions::{ActionError, Decision, Permit, permits, with_action};
use super::decide;
use crate::model::{
    ActionKind, BulkRedrive, BulkRedriveRequest, Digest, RedriveDoes, RedriveMode, RedrivePlan,
    RedrivePlugins, RedriveRefusal, RedriveRequest, RedriveStep, SagaDetail, SagaId, SagaRun,
    SagaStatus, StepRef, StepSpec, StepStatus,
};
use crate::store::{Fence, Pins, Redriven, SagaFilter, StoreError, Transition};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// A redrive's plan, with the plan of steps the saga runs from now on.
pub(super) struct Planned {
    pub plan: RedrivePlan,
    pub steps: Vec<StepSpec>,
}

/// What redriving `detail` as `request` does, or why it may not. `current`:
/// the newest digest of each plugin name (for `plugins: current`).
pub(super) fn plan(
    detail: &SagaDetail,
    request: &RedriveRequest,
    current: &HashMap<String, Digest>,
) -> Result<Planned, ActionError> {
    let saga = &detail.saga;
    let id = saga.id;
    if let Permit::Refused(why) = permits(saga, ActionKind::Redrive) {
        return Err(ActionError::Conflict(why));
    }
    let ledger: decide::Ledger = detail.steps.iter().map(|r| (r.index, r.clone())).collect();
    let status_of = |i: u32| ledger.get(&i).map(|r| r.status);
    let len = saga.plan.len() as u32;
    let first_gap = (0..len)
        .find(|&i| status_of(i) != Some(StepStatus::Completed))
        .ok_or_else(|| {
            ActionError::Conflict(format!(
                "every step of saga {id} is completed; nothing to redrive"
            ))
        })?;
    let asked = request
        .from_step
        .as_ref()
        .map(|step| step_index(saga, step))
        .transpose()?;
    let from = match (request.mode, asked) {
        (RedriveMode::Resume, Some(asked)) if asked != first_gap => {
            return Err(ActionError::Invalid(format!(
                "resume goes on from step {first_gap} ({}), the first step whose work is not in \
                 effect; `from_step` {asked} is for `rerun` and `rewind`",
                saga.plan[first_gap as usize].name
            )));
        }
        (RedriveMode::Resume, _) => first_gap,
        (mode, None) => {
            return Err(ActionError::Invalid(format!(
                "`{mode}` needs `from_step` (a step's index or name)"
            )));
        }
        (_, Some(asked)) if asked > first_gap => {
            let status =
                status_of(first_gap).map_or_else(|| "never ran".to_string(), |s| format!("is {s}"));
            return Err(ActionError::Conflict(format!(
                "step {first_gap} ({}) {status}: its work is not in effect, so running from step \
                 {asked} would run without it; redrive from step {first_gap} or earlier, or resume",
                saga.plan[first_gap as usize].name
            )));
        }
        (_, Some(asked)) => asked,
    };
    let mut steps = saga.plan.clone();
    let mut planned = Vec::with_capacity(steps.len());
    for (i, spec) in steps.iter_mut().enumerate() {
        let i = i as u32;
        let status = status_of(i);
        let does = if i < from {
            RedriveDoes::Keep
        } else if request.mode == RedriveMode::Rewind && undone_by_a_rewind(status) {
            RedriveDoes::CompensateThenExecute
        } else {
            RedriveDoes::Execute
        };
        let mut plugin_changed = false;
        if request.plugins == RedrivePlugins::Current && i >= from && spec.wait.is_none() {
            let newest = current.get(&spec.name).ok_or_else(|| {
                ActionError::Conflict(format!(
                    "plugin `{}` (step {i}) has no upload now; upload it, or redrive with \
                     `plugins: pinned`",
                    spec.name
                ))
            })?;
            plugin_changed = *newest != spec.plugin;
            spec.plugin = newest.clone();
        }
        planned.push(RedriveStep {
            index: i,
            name: spec.name.clone(),
            status,
            does,
            plugin: spec.plugin.clone(),
            plugin_changed,
        });
    }
    Ok(Planned {
        plan: RedrivePlan {
            saga_id: id,
            mode: request.mode,
            from_step: from,
            dry_run: request.dry_run,
            steps: planned,
        },
        steps,
    })
}

/// Whether a rewind compensates a step in `status` before executing it
/// again: what may still be in effect of it.
fn undone_by_a_rewind(status: Option<StepStatus>) -> bool {
    matches!(
        status,
        Some(StepStatus::Completed | StepStatus::CompensationFailed | StepStatus::Compensating)
    )
}

/// The index `step` names in the saga's plan.
fn step_index(saga: &SagaRun, step: &StepRef) -> Result<u32, ActionError> {
    let len = saga.plan.len();
    match step {
        StepRef::Index(i) if (*i as usize) < len => Ok(*i),
        StepRef::Index(i) => Err(ActionError::Invalid(format!(
            "`from_step` {i}: saga {} has {len} steps (0 to {})",
            saga.id,
            len - 1
        ))),
        StepRef::Name(name) => saga
            .plan
            .iter()
            .position(|s| s.name == *name)
            .map(|i| i as u32)
            .ok_or_else(|| {
                let names: Vec<&str> = saga.plan.iter().map(|s| s.name.as_str()).collect();
                ActionError::Invalid(format!(
                    "`from_step` `{name}`: saga {} has no step of that name (its steps: {})",
                    saga.id,
                    names.join(", ")
                ))
            }),
    }
}

/// The redrive's transition: the saga running (or, for a rewind with
/// something to undo, compensating) from its step, its context what the
/// kept steps output, every step executed again ready for it.
fn transition(
    detail: &SagaDetail,
    request: &RedriveRequest,
    planned: &Planned,
    actor: &Option<String>,
    now: crate::model::Timestamp,
) -> Transition {
    let saga = &detail.saga;
    let from = planned.plan.from_step;
    let mut t = Transition::new(saga.id, Fence::Unleased, saga.version, now);
    let mut context = Map::new();
    let mut undo_from = None;
    for row in &detail.steps {
        match planned.plan.steps[row.index as usize].does {
            RedriveDoes::Keep => {
                if let Some(Value::Object(output)) = &row.output {
                    context.extend(output.clone());
                }
            }
            RedriveDoes::Execute => t.steps.push(decide::redo(row)),
            RedriveDoes::CompensateThenExecute => {
                // Undone by the rewind's walk with fresh attempts; made
                // ready to execute again when the walk reaches `from`.
                let mut row = row.clone();
                if row.status == StepStatus::CompensationFailed {
                    row.status = StepStatus::Compensating;
                }
                row.compensate_attempt_base = row.compensate_attempts;
                row.finished_at = None;
                undo_from = undo_from.max(Some(row.index));
                t.steps.push(row);
            }
        }
    }
    let inputs = crate::model::patched_inputs(&saga.inputs, request.inputs_patch.as_ref());
    t.saga.status = Some(if undo_from.is_some() {
        SagaStatus::Compensating
    } else {
        SagaStatus::Running
    });
    t.saga.current_step_index = Some(undo_from.unwrap_or(from));
    t.saga.context = Some(context);
    t.saga.cancel_requested = Some(false);
    t.saga.pause_requested = Some(false);
    t.saga.ready_at = Some(Some(now));
    t.saga.redrive = Some(Redriven {
        inputs,
        plan: planned.steps.clone(),
    });
    let mut actions = with_action(
        saga,
        ActionKind::Redrive,
        actor,
        now,
        request.note.clone(),
        Some(from),
    );
    if let Some(action) = actions.last_mut() {
        action.payload = Some(json!({
            "mode": request.mode,
            "plugins": request.plugins,
            "inputs_patch": request.inputs_patch,
        }));
    }
    t.saga.actions = Some(actions);
    t.pins = Pins::Restore(crate::store::pinned_digests(&planned.steps));
    // Its new life holds its keys again, queued behind their holders.
    t.retake_slots = !saga.concurrency.is_empty();
    t
}

impl Runner {
    /// Redrives a `failed` or `rolled_back` saga (see [`plan`]); on a dry
    /// run answers the plan and writes nothing.
    pub async fn redrive(
        &self,
        id: SagaId,
        request: RedriveRequest,
        actor: Option<String>,
    ) -> Result<RedrivePlan, ActionError> {
        let store = &self.inner.store;
        let current = match request.plugins {
            RedrivePlugins::Pinned => HashMap::new(),
            RedrivePlugins::Current => {
                let detail = store.saga(id).await?.ok_or(ActionError::NotFound(id))?;
                let mut current = HashMap::new();
                for spec in detail.saga.plan.iter().filter(|s| s.wait.is_none()) {
                    if current.contains_key(&spec.name) {
                        continue;
                    }
                    if let Some(plugin) = store.plugin_by_name(&spec.name).await? {
                        current.insert(spec.name.clone(), plugin.digest);
                    }
                }
                current
            }
        };
        if request.dry_run {
            let detail = store.saga(id).await?.ok_or(ActionError::NotFound(id))?;
            return Ok(plan(&detail, &request, &current)?.plan);
        }
        let answer = std::sync::Mutex::new(None);
        let result = self
            .act(id, |d, now| {
                let planned = plan(d, &request, &current)?;
                let t = transition(d, &request, &planned, &actor, now);
                *answer.lock().expect("redrive answer") = Some(planned.plan);
                Ok(Decision::Write(Box::new(t)))
            })
            .await;
        match result {
            Err(ActionError::Store(StoreError::PinFailed(digest))) => {
                return Err(ActionError::Conflict(format!(
                    "saga {id} cannot be redriven: its plugin {digest} was deleted since it ended; \
                     upload the same component again, or redrive with `plugins: current`"
                )));
            }
            other => other?,
        };
        let plan = answer
            .into_inner()
            .expect("redrive answer")
            .expect("a written redrive was planned");
        tracing::info!(saga = %id, mode = %plan.mode, from = plan.from_step, "redriven");
        self.wake();
        if let Err(e) = store.announce_work().await {
            tracing::debug!(error = %e, "announcing a redriven saga");
        }
        Ok(plan)
    }

    /// Redrives every `failed` or `rolled_back` saga the filter finds (at
    /// most `limit`), oldest first, each on its own: one refused does not
    /// stop the others. `check` passes on each saga's patched inputs (its
    /// template's schema) when the request patches them.
    pub async fn redrive_many<F, Fut>(
        &self,
        request: &BulkRedriveRequest,
        actor: Option<String>,
        limit: usize,
        check: F,
    ) -> Result<BulkRedrive, ActionError>
    where
        F: Fn(SagaRun) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let found = self.find_redrivable(request, limit).await?;
        let mut answer = BulkRedrive::default();
        for id in found {
            let refuse = |error: String| RedriveRefusal { saga_id: id, error };
            if request.inputs_patch.is_some() {
                let Some(detail) = self.inner.store.saga(id).await? else {
                    continue;
                };
                if let Err(why) = check(detail.saga).await {
                    answer.refused.push(refuse(why));
                    continue;
                }
            }
            match self.redrive(id, request.each(), actor.clone()).await {
                Ok(plan) => {
                    answer.redriven.push(id);
                    if request.dry_run {
                        answer.plans.push(plan);
                    }
                }
                Err(ActionError::Store(e)) => return Err(ActionError::Store(e)),
                // Deleted meanwhile.
                Err(ActionError::NotFound(_)) => {}
                Err(e) => answer.refused.push(refuse(e.to_string())),
            }
        }
        Ok(answer)
    }

    /// The ids the bulk redrive's filter finds, oldest first.
    async fn find_redrivable(
        &self,
        request: &BulkRedriveRequest,
        limit: usize,
    ) -> Result<Vec<SagaId>, ActionError> {
        let f = &request.filter;
        let statuses = match f.status {
            Some(status @ (SagaStatus::Failed | SagaStatus::RolledBack)) => vec![status],
            Some(status) => {
                return Err(ActionError::Invalid(format!(
                    "`filter.status` {status}: only failed and rolled_back sagas can be redriven"
                )));
            }
            None => vec![SagaStatus::Failed, SagaStatus::RolledBack],
        };
        let mut found = Vec::new();
        for status in statuses {
            let mut filter = SagaFilter {
                status: Some(status),
                kind: f.kind.clone(),
                template: f.template.clone(),
                limit: 1000,
                ..SagaFilter::default()
            };
            loop {
                let page = self.inner.store.list_sagas(&filter).await?;
                let Some(last) = page.last() else { break };
                filter.before = Some((last.created_at, last.id));
                let full = page.len() as u32 == filter.limit;
                let older = f.started_after.is_some_and(|after| last.created_at < after);
                found.extend(
                    page.into_iter()
                        .filter(|s| f.started_after.is_none_or(|after| s.created_at >= after))
                        .filter(|s| f.started_before.is_none_or(|before| s.created_at < before))
                        .filter(|s| {
                            f.error_contains.as_deref().is_none_or(|needle| {
                                s.error.as_ref().is_some_and(|e| e.message.contains(needle))
                            })
                        })
                        .map(|s| (s.created_at, s.id)),
                );
                if !full || older || found.len() > limit {
                    break;
                }
            }
        }
        if found.len() > limit {
            return Err(ActionError::Invalid(format!(
                "the filter finds more than {limit} sagas; narrow it (a time range, a kind) and \
                 redrive in parts"
            )));
        }
        found.sort();
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Phase, StepResult, Timestamp};

    fn saga(status: SagaStatus, rows: &[StepStatus]) -> SagaDetail {
        let spec = |name: &str| StepSpec {
            name: name.into(),
            plugin: Digest::wait(),
            max_attempts: 3,
            timeout_ms: 1_000,
            max_memory_bytes: None,
            max_output_bytes: None,
            max_wait_ms: None,
            semantics: Default::default(),
            wait: None,
        };
        let mut saga = SagaRun::pending(
            "t",
            vec![spec("a"), spec("b"), spec("c"), spec("d")],
            json!({"n": 1}),
            None,
            None,
            Timestamp(0),
        );
        saga.status = status;
        let steps = rows
            .iter()
            .enumerate()
            .map(|(i, status)| {
                let mut row = decide::fresh_row(&saga.plan[i], i as u32, Phase::Execute);
                row.status = *status;
                row.attempts = 2;
                row.output = Some(json!({ format!("out{i}"): i }));
                row
            })
            .collect::<Vec<StepResult>>();
        SagaDetail {
            saga,
            steps,
            resources: Vec::new(),
            slots: Vec::new(),
        }
    }

    fn request(mode: RedriveMode, from: Option<StepRef>) -> RedriveRequest {
        RedriveRequest {
            from_step: from,
            mode,
            ..RedriveRequest::default()
        }
    }

    fn does(planned: &Planned) -> Vec<RedriveDoes> {
        planned.plan.steps.iter().map(|s| s.does).collect()
    }

    use RedriveDoes::{CompensateThenExecute as Undo, Execute as Run, Keep};
    use StepStatus::{Compensated, CompensationFailed, Completed, Failed};

    #[test]
    fn resume_goes_on_from_the_first_step_not_in_effect() {
        let rolled_back = saga(SagaStatus::RolledBack, &[Compensated, Compensated, Failed]);
        let planned = plan(
            &rolled_back,
            &request(RedriveMode::Resume, None),
            &HashMap::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(planned.plan.from_step, 0);
        assert_eq!(does(&planned), [Run, Run, Run, Run]);

        let failed = saga(SagaStatus::Failed, &[Completed, CompensationFailed, Failed]);
        let planned = plan(
            &failed,
            &request(RedriveMode::Resume, None),
            &HashMap::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(planned.plan.from_step, 1);
        assert_eq!(does(&planned), [Keep, Run, Run, Run]);
        // Another from_step is refused, saying where resume goes on.
        let Err(ActionError::Invalid(why)) = plan(
            &failed,
            &request(RedriveMode::Resume, Some(StepRef::Index(2))),
            &HashMap::new(),
        ) else {
            panic!("refused")
        };
        assert!(why.contains("from step 1 (b)"), "{why}");
    }

    #[test]
    fn rerun_and_rewind_need_the_steps_before_in_effect() {
        let failed = saga(
            SagaStatus::Failed,
            &[Completed, Completed, CompensationFailed, Failed],
        );
        let by_name = request(RedriveMode::Rerun, Some(StepRef::Name("b".into())));
        let planned = plan(&failed, &by_name, &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(planned.plan.from_step, 1);
        assert_eq!(does(&planned), [Keep, Run, Run, Run]);
        let rewind = request(RedriveMode::Rewind, Some(StepRef::Index(1)));
        let planned = plan(&failed, &rewind, &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(does(&planned), [Keep, Undo, Undo, Run]);
        // Past the first step not in effect: refused, naming it.
        let Err(ActionError::Conflict(why)) = plan(
            &failed,
            &request(RedriveMode::Rerun, Some(StepRef::Index(3))),
            &HashMap::new(),
        ) else {
            panic!("refused")
        };
        assert!(why.contains("step 2 (c) is compensation_failed"), "{why}");
        // Bad step references, and no from_step.
        for (step, says) in [
            (Some(StepRef::Index(9)), "has 4 steps"),
            (Some(StepRef::Name("zz".into())), "its steps: a, b, c, d"),
            (None, "needs `from_step`"),
        ] {
            let Err(ActionError::Invalid(why)) = plan(
                &failed,
                &request(RedriveMode::Rewind, step),
                &HashMap::new(),
            ) else {
                panic!("refused")
            };
            assert!(why.contains(says), "{why}");
        }
    }

    #[test]
    fn only_an_ended_unsuccessful_saga_is_redriven() {
        for status in [
            SagaStatus::Running,
            SagaStatus::Completed,
            SagaStatus::Paused,
        ] {
            let s = saga(status, &[Completed]);
            let Err(ActionError::Conflict(why)) =
                plan(&s, &request(RedriveMode::Resume, None), &HashMap::new())
            else {
                panic!("refused")
            };
            assert!(why.contains("only a failed or rolled_back saga"), "{why}");
        }
    }

    #[test]
    fn current_plugins_replace_the_digests_of_the_steps_run_again() {
        let failed = saga(SagaStatus::Failed, &[Completed, Failed]);
        let newer: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let current: HashMap<String, Digest> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| (n.to_string(), newer.clone()))
            .collect();
        let asked = RedriveRequest {
            plugins: RedrivePlugins::Current,
            ..request(RedriveMode::Resume, None)
        };
        let planned = plan(&failed, &asked, &current).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            planned.steps[0].plugin,
            Digest::wait(),
            "kept steps stay pinned"
        );
        assert!(planned.steps[1..].iter().all(|s| s.plugin == newer));
        assert!(planned.plan.steps[1].plugin_changed && !planned.plan.steps[0].plugin_changed);
        let Err(ActionError::Conflict(why)) = plan(&failed, &asked, &HashMap::new()) else {
            panic!("refused")
        };
        assert!(
            why.contains("plugin `b` (step 1) has no upload now"),
            "{why}"
        );
    }

    #[test]
    fn the_transition_keeps_the_context_of_kept_steps_and_readies_the_rest() {
        let failed = saga(
            SagaStatus::Failed,
            &[Completed, Completed, CompensationFailed, Failed],
        );
        let asked = RedriveRequest {
            inputs_patch: Some(json!({"n": 2, "extra": true})),
            note: Some("provider back".into()),
            ..request(RedriveMode::Rewind, Some(StepRef::Index(1)))
        };
        let planned = plan(&failed, &asked, &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let t = transition(&failed, &asked, &planned, &Some("ops".into()), Timestamp(5));
        assert_eq!(t.saga.status, Some(SagaStatus::Compensating));
        assert_eq!(
            t.saga.current_step_index,
            Some(2),
            "the walk starts at the highest to undo"
        );
        assert_eq!(
            t.saga.context,
            Some(json!({"out0": 0}).as_object().unwrap().clone())
        );
        let redriven = t.saga.redrive.as_ref().unwrap();
        assert_eq!(redriven.inputs, json!({"n": 2, "extra": true}));
        let statuses: Vec<(u32, StepStatus)> =
            t.steps.iter().map(|r| (r.index, r.status)).collect();
        assert_eq!(
            statuses,
            [(1, Completed), (2, StepStatus::Compensating), (3, Failed)]
        );
        let failed_row = &t.steps[2];
        assert_eq!(
            (failed_row.attempt_base, failed_row.output.as_ref()),
            (2, None)
        );
        let action = t.saga.actions.as_ref().unwrap().last().unwrap().clone();
        assert_eq!(action.action, ActionKind::Redrive);
        assert_eq!(action.step_index, Some(1));
        assert_eq!(action.payload.as_ref().unwrap()["mode"], "rewind");
    }
}
