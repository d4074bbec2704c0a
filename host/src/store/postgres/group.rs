//! Group commit of transitions on PostgreSQL: the transitions a host's
//! sagas make at about the same time are written in one statement, so one
//! round trip and one commit serve them all.
//!
//! A saga's transition is one saga-row `UPDATE` (fenced by the lease's
//! fencing number and the saga's version) and its ledger rows, written only
//! through the update's result: a saga whose lease is lost, or that changed
//! since its runner read it, writes nothing. One statement is atomic
//! without an explicit transaction. The
//! rows are locked in id order before they are updated, as lease renewals
//! lock theirs, so two statements of one host never wait on each other in a
//! cycle. Each caller is answered once the statement has committed.
//!
//! A few statements may be in flight at once ([`IN_FLIGHT`]): while one
//! commits, the next group gathers. If a group's statement fails, each of
//! its transitions is written again on its own, so one bad transition gets
//! its own error and the others still land.

use super::super::{
    Applied, Fence, Pins, StoreError, StoreResult, Transition, ledger_row_json, to_json,
};
use super::DB_NOW;
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

    /// Whether `t` can be written in a group: a lease holder's transition
    /// with no resources (they take a version from the rows before them),
    /// no rows removed, pins restored or webhook events, and one ledger row per step, which
    /// one `INSERT .. ON CONFLICT` needs.
    pub(super) fn fits(t: &Transition) -> bool {
        let mut indexes = HashSet::new();
        matches!(t.fence, Fence::Lease { .. })
            && t.resources.is_empty()
            && t.removed_resources.is_empty()
            && t.remove_steps.is_empty()
            && !matches!(t.pins, Pins::Restore(_))
            && t.outbox.is_empty()
            && !t.release_slots
            && !t.retake_slots
            && t.take_message.is_none()
            && t.saga.redrive.is_none()
            && !t.saga.clear_error
            && t.steps.iter().all(|step| indexes.insert(step.index))
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
/// planner guesses of the JSON); it returns every saga it locked, with its
/// lease and version as found and its new version if it was written.
fn group_statement() -> String {
    format!(
        concat!(
            "WITH u AS (
     SELECT * FROM jsonb_to_recordset($1::jsonb) AS u(
         saga_id TEXT, owner TEXT, epoch BIGINT, version BIGINT, now BIGINT, status TEXT,
         current_step_index BIGINT, context TEXT, error TEXT, cancel_requested BOOLEAN,
         pause_requested BOOLEAN, actions TEXT, set_ready BOOLEAN, ready_at BIGINT, release BOOLEAN,
         unpin BOOLEAN)
 ), locked AS (
     SELECT id, lease_owner, lease_epoch, version FROM saga_runs WHERE id = ANY($3) ORDER BY id FOR UPDATE
 ), saga AS (
     UPDATE saga_runs s SET
         updated_at = u.now,
         version = s.version + 1,
         status = COALESCE(u.status, s.status),
         current_step_index = COALESCE(u.current_step_index, s.current_step_index),
         context = COALESCE(u.context, s.context),
         error = COALESCE(u.error, s.error),
         cancel_requested = COALESCE(u.cancel_requested, s.cancel_requested),
         pause_requested = COALESCE(u.pause_requested, s.pause_requested),
         actions = COALESCE(u.actions, s.actions),
         ready_at = CASE WHEN u.set_ready THEN u.ready_at ELSE s.ready_at END,
         lease_owner = CASE WHEN u.release THEN NULL ELSE s.lease_owner END,
         lease_expires_at = CASE WHEN u.release THEN NULL ELSE s.lease_expires_at END
     FROM u, locked
     WHERE s.id = u.saga_id AND locked.id = s.id AND s.lease_owner = u.owner
       AND s.lease_epoch = u.epoch AND s.version = u.version
     RETURNING s.id, s.version
 ), unpinned AS (
     DELETE FROM saga_plugin_pins p USING saga, u
     WHERE p.saga_id = saga.id AND u.saga_id = saga.id AND u.unpin
 ), ledger AS (",
            step_insert!(),
            " SELECT r.saga_id, ",
            json_ledger_values!(),
            " FROM jsonb_to_recordset($2::jsonb) AS r(saga_id TEXT, ",
            json_ledger_columns!(),
            ")
     JOIN saga ON saga.id = r.saga_id",
            step_on_conflict!(),
            "
 ), changed AS (
     SELECT pg_notify('{CHANGE_CHANNEL}', saga.id || ' ' || saga.version || ' ' || u.owner)
     FROM saga JOIN u ON u.saga_id = saga.id
 )
 SELECT locked.id, locked.lease_owner, locked.lease_epoch, saga.version AS written,
     ({DB_NOW}) AS db_now, (SELECT count(*) FROM changed) AS notified
 FROM locked LEFT JOIN saga ON saga.id = locked.id"
        ),
        DB_NOW = DB_NOW,
        CHANGE_CHANNEL = super::CHANGE_CHANNEL,
    )
}

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
        for step in &t.steps {
            let mut row = ledger_row_json(step);
            row.insert("saga_id".into(), id.clone().into());
            rows.push(Value::Object(row));
        }
        let Fence::Lease { owner, epoch } = &t.fence else {
            unreachable!("only lease holders' transitions are grouped")
        };
        let u = &t.saga;
        ids.push(id.clone());
        updates.push(serde_json::json!({
            "saga_id": id,
            "owner": &**owner,
            "epoch": epoch,
            "version": t.version,
            "now": t.now.millis(),
            "status": u.status.map(|s| s.as_str()),
            "current_step_index": u.current_step_index,
            "context": u.context.as_ref().map(to_json),
            "error": u.error.as_ref().map(to_json),
            "cancel_requested": u.cancel_requested,
            "pause_requested": u.pause_requested,
            "actions": u.actions.as_ref().map(to_json),
            "set_ready": u.ready_at.is_some(),
            "ready_at": u.ready_at.flatten().map(|t| t.millis()),
            "release": t.release_lease,
            "unpin": t.pins == Pins::Release,
        }));
    }
    type Found = (String, Option<String>, i64, Option<i64>, i64, i64);
    let found: HashMap<String, (Option<String>, i64, Option<i64>)> =
        sqlx::query_as::<_, Found>(&group_statement())
            .bind(Value::Array(updates).to_string())
            .bind(Value::Array(rows).to_string())
            .bind(&ids)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|(id, owner, epoch, written, _, _)| (id, (owner, epoch, written)))
            .collect();
    Ok(transitions
        .iter()
        .map(|t| match found.get(&t.saga_id.to_string()) {
            None => Err(StoreError::LeaseLost(t.saga_id)),
            Some((_, _, Some(version))) => Ok(Applied::Done {
                version: *version as u64,
                woke: false,
                taken: Vec::new(),
            }),
            Some((owner, epoch, None)) => match &t.fence {
                Fence::Lease {
                    owner: mine,
                    epoch: my_epoch,
                } if owner.as_deref() == Some(&**mine) && *epoch as u64 == *my_epoch => {
                    Ok(Applied::Stale)
                }
                _ => Err(StoreError::LeaseLost(t.saga_id)),
            },
        })
        .collect())
}
