//! Group commit of transitions on PostgreSQL: the transitions a host's
//! sagas make at about the same time are written in one statement, so one
//! round trip and one commit serve them all.
//!
//! A saga's transition is one saga-row `UPDATE` (fenced by the lease) and
//! its ledger rows, written only through the update's result: a saga whose
//! lease is lost writes nothing, and a step does not start to execute after
//! a cancel. One statement is atomic without an explicit transaction. The
//! rows are locked in id order before they are updated, as lease renewals
//! lock theirs, so two statements of one host never wait on each other in a
//! cycle. Each caller is answered once the statement has committed.
//!
//! A few statements may be in flight at once ([`IN_FLIGHT`]): while one
//! commits, the next group gathers. If a group's statement fails, each of
//! its transitions is written again on its own, so one bad transition gets
//! its own error and the others still land.

use super::super::{Applied, StoreError, StoreResult, Transition, ledger_row_json, to_json};
use crate::model::SagaStatus;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most transitions in one statement.
const MAX_GROUP: usize = 256;

/// Statements of one host in flight at once.
const IN_FLIGHT: usize = 4;

/// A transition waiting for its group.
struct Pending {
    transition: Transition,
    reply: oneshot::Sender<StoreResult<Applied>>,
}

/// The handle the store writes transitions through; the grouping task ends
/// when every handle is dropped.
#[derive(Clone)]
pub(super) struct Grouper {
    queue: mpsc::Sender<Pending>,
}

impl Grouper {
    /// Starts the grouping task on `pool` (within a Tokio runtime).
    pub(super) fn start(pool: PgPool) -> Grouper {
        let (queue, rx) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(group_loop(pool, rx));
        Grouper { queue }
    }

    /// Whether `t` can be written in a group: no resources (they take a
    /// version from the rows before them), and one ledger row per step,
    /// which one `INSERT .. ON CONFLICT` needs.
    pub(super) fn fits(t: &Transition) -> bool {
        let mut indexes = HashSet::new();
        t.resources.is_empty() && t.ledger_rows().all(|(step, _)| indexes.insert(step.index))
    }

    /// Writes `transition` (which [`Grouper::fits`]) with whatever others
    /// are waiting, and answers once that commit is known.
    pub(super) async fn apply(&self, transition: Transition) -> StoreResult<Applied> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Pending { transition, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn group_loop(pool: PgPool, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            write_group(&pool, group).await;
            drop(slot);
        });
    }
}

/// Writes `group`, at most one transition per saga per statement (a
/// runner has one transition of a saga in flight; a second one, should it
/// come, goes in the next statement).
async fn write_group(pool: &PgPool, mut group: Vec<Pending>) {
    while !group.is_empty() {
        let mut sagas = HashSet::new();
        let (now, later): (Vec<_>, Vec<_>) = group
            .into_iter()
            .partition(|p| sagas.insert(p.transition.saga_id));
        group = later;
        let transitions: Vec<&Transition> = now.iter().map(|p| &p.transition).collect();
        match apply_together(pool, &transitions).await {
            Ok(results) => {
                for (p, result) in now.into_iter().zip(results) {
                    let _ = p.reply.send(result);
                }
            }
            Err(e) if now.len() > 1 => {
                tracing::warn!(error = %e, transitions = now.len(), "a grouped write failed; writing one by one");
                for p in now {
                    let result = match apply_together(pool, &[&p.transition]).await {
                        Ok(mut results) => results.remove(0),
                        Err(e) => Err(e),
                    };
                    let _ = p.reply.send(result);
                }
            }
            Err(e) => {
                if let Some(p) = now.into_iter().next() {
                    let _ = p.reply.send(Err(e));
                }
            }
        }
    }
}

/// The statement: see the module docs. `$1` holds the sagas' updates, `$2`
/// their ledger rows, `$3` their ids (an index lookup, whatever the
/// planner guesses of the JSON); it returns each saga whose lease held,
/// with its cancel flag.
const GROUP_STATEMENT: &str = concat!(
    "WITH u AS (
     SELECT * FROM jsonb_to_recordset($1::jsonb) AS u(
         saga_id TEXT, owner TEXT, now BIGINT, status TEXT, current_step_index BIGINT,
         context TEXT, error TEXT, ends BOOLEAN)
 ), locked AS (
     SELECT id FROM saga_runs WHERE id = ANY($3) ORDER BY id FOR UPDATE
 ), saga AS (
     UPDATE saga_runs s SET
         updated_at = u.now,
         status = COALESCE(u.status, s.status),
         current_step_index = COALESCE(u.current_step_index, s.current_step_index),
         context = COALESCE(u.context, s.context),
         error = COALESCE(u.error, s.error),
         lease_owner = CASE WHEN u.ends THEN NULL ELSE s.lease_owner END,
         lease_expires_at = CASE WHEN u.ends THEN NULL ELSE s.lease_expires_at END
     FROM u, locked
     WHERE s.id = u.saga_id AND locked.id = s.id AND s.lease_owner = u.owner
     RETURNING s.id, s.cancel_requested
 ), ledger AS (",
    step_insert!(),
    " SELECT r.saga_id, ",
    json_ledger_values!(),
    " FROM jsonb_to_recordset($2::jsonb) AS r(saga_id TEXT, ",
    json_ledger_columns!(),
    ", ignore_cancel BOOLEAN)
     JOIN saga ON saga.id = r.saga_id
     WHERE r.ignore_cancel OR NOT saga.cancel_requested",
    step_on_conflict!(),
    "
 )
 SELECT id, cancel_requested FROM saga"
);

/// Writes `transitions` (of distinct sagas, each [`Grouper::fits`]) in one
/// statement; each gets its own result, as a transaction of its own would.
async fn apply_together(
    pool: &PgPool,
    transitions: &[&Transition],
) -> StoreResult<Vec<StoreResult<Applied>>> {
    let mut updates = Vec::with_capacity(transitions.len());
    let mut ids = Vec::with_capacity(transitions.len());
    let mut rows = Vec::new();
    for t in transitions {
        let id = t.saga_id.to_string();
        for (step, ignore_cancel) in t.ledger_rows() {
            let mut row = ledger_row_json(step, ignore_cancel);
            row.insert("saga_id".into(), id.clone().into());
            rows.push(Value::Object(row));
        }
        ids.push(id.clone());
        updates.push(serde_json::json!({
            "saga_id": id,
            "owner": &*t.owner,
            "now": t.now.millis(),
            "status": t.saga.status.map(SagaStatus::as_str),
            "current_step_index": t.saga.current_step_index,
            "context": t.saga.context.as_ref().map(to_json),
            "error": t.saga.error.as_ref().map(to_json),
            "ends": t.saga.status.is_some_and(SagaStatus::is_final),
        }));
    }
    let held: HashMap<String, bool> = sqlx::query_as(GROUP_STATEMENT)
        .bind(Value::Array(updates).to_string())
        .bind(Value::Array(rows).to_string())
        .bind(&ids)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    Ok(transitions
        .iter()
        .map(|t| match held.get(&t.saga_id.to_string()) {
            None => Err(StoreError::LeaseLost(t.saga_id)),
            Some(&cancel_requested) => Ok(Applied::found(t, cancel_requested)),
        })
        .collect())
}
