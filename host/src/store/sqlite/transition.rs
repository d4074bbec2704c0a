//! How a transition is written on SQLite: the fence checked in the same
//! statement as the saga's update, the ledger rows, pins, resources and
//! the webhook outbox in one transaction, and, when the fence fails, why
//! (a stale version or a lost lease). The `Store` methods in the parent
//! module read; this is the one place a saga's state changes on SQLite.

use super::*;

/// Writes a ledger row, unfenced: for a saga being created in this same
/// transaction, or whose fence this transaction has checked.
pub(super) fn upsert_step(conn: &Connection, saga_id: &str, step: &StepResult) -> StoreResult<()> {
    const UPSERT: &str = concat!(
        step_insert!(),
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        step_on_conflict!()
    );
    // The columns, in `step_insert!`'s order.
    conn.prepare_cached(UPSERT)?.execute(params![
        saga_id,
        step.index as i64,
        step.phase.as_str(),
        step.status.as_str(),
        step.output.as_ref().map(to_json),
        step.error.as_deref(),
        step.attempts as i64,
        step.compensate_attempts as i64,
        to_json(&step.logs),
        step.started_at.map(Timestamp::millis),
        step.finished_at.map(Timestamp::millis),
        step.executed_by.as_deref(),
        step.waiting_until.map(Timestamp::millis),
        step.polls as i64,
        step.wait_started_at.map(Timestamp::millis),
        step.compensate_attempt_base as i64,
        to_json(&step.calls),
        step.received.as_ref().map(to_json),
        step.correlation_key.as_deref(),
        step.attempt_base as i64,
        step.wait_for.as_ref().map(to_json),
    ])?;
    Ok(())
}

/// Pins `digests` for `saga_id`, or names the first one that is gone. The
/// foreign key is what makes this safe against a concurrent delete; the
/// check before it only names the culprit.
pub(super) fn pin(
    conn: &Connection,
    saga_id: &str,
    digests: &[Digest],
) -> StoreResult<Option<Digest>> {
    let mut exists = conn.prepare_cached("SELECT 1 FROM plugins WHERE digest = ?")?;
    let mut insert = conn
        .prepare_cached("INSERT OR IGNORE INTO saga_plugin_pins (digest, saga_id) VALUES (?, ?)")?;
    for digest in digests {
        if !exists.exists([digest.as_str()])? {
            return Ok(Some(digest.clone()));
        }
        insert.execute(params![digest.as_str(), saga_id])?;
    }
    Ok(None)
}

/// Records a resource in the desired state: new, or re-recorded (its spec
/// replaced, `spec_version` bumped, `present` again, now this step's);
/// returns its `spec_version`. Binds: saga id, step index, kind, external
/// id, spec, now.
pub(super) const RESOURCE_RECORD: &str = "INSERT INTO resources
     (kind, external_id, spec, spec_version, saga_id, step_index, deployment_id, state, created_at, updated_at)
 VALUES (?3, ?4, ?5, 1, ?1, ?2, (SELECT deployment_id FROM saga_runs WHERE id = ?1), 'present', ?6, ?6)
 ON CONFLICT (kind, external_id) DO UPDATE SET
     spec = excluded.spec, spec_version = resources.spec_version + 1, saga_id = excluded.saga_id,
     step_index = excluded.step_index, deployment_id = excluded.deployment_id, state = 'present',
     updated_at = excluded.updated_at, observed_at = NULL, drift = NULL, drift_diff = NULL
 RETURNING spec_version";

/// The saga's own history of what its steps recorded. Binds: saga id, step
/// index, kind, external id, spec, spec version, now.
pub(super) const RESOURCE_HISTORY: &str = "INSERT INTO provisioned_resources
     (saga_id, step_index, kind, external_id, spec, spec_version, created_at)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// A compensated step's resources leave the desired state, unless another
/// step recorded them since. Binds: now, saga id, step index.
pub(super) const RESOURCE_REMOVE: &str = "UPDATE resources SET state = 'removed', updated_at = ?1
 WHERE saga_id = ?2 AND step_index = ?3 AND state = 'present'";

/// Whether the fence of `t` holds, as a SQL condition over `saga_runs`
/// with `?8` the owner, `?9` the epoch and `?10` now.
pub(super) fn fence_condition(fence: &Fence) -> &'static str {
    match fence {
        Fence::Lease { .. } => "lease_owner = ?8 AND lease_epoch = ?9",
        Fence::Unleased => "(lease_owner IS NULL OR lease_expires_at < ?10)",
        Fence::Version => "1",
    }
}

/// A transition: see [`Store::apply`]. The saga row's update goes first
/// and is the fence: unless the fence and the version hold it matches no
/// row, and the transition writes nothing. With it, the rest follows in
/// the same write transaction, which no other writer can enter.
pub(super) fn apply_transition(conn: &Connection, t: &Transition) -> StoreResult<Applied> {
    let id = t.saga_id.to_string();
    let u = &t.saga;
    // `?n IS NULL` keeps a column; the flags say whether an Option<Option>
    // or a lease change is meant.
    let sql = format!(
        "UPDATE saga_runs SET updated_at = ?1, version = version + 1,
             status = COALESCE(?2, status),
             current_step_index = COALESCE(?3, current_step_index),
             context = COALESCE(?4, context),
             error = CASE WHEN ?18 THEN NULL ELSE COALESCE(?5, error) END,
             inputs = COALESCE(?19, inputs),
             steps = COALESCE(?20, steps),
             cancel_requested = COALESCE(?6, cancel_requested),
             pause_requested = COALESCE(?7, pause_requested),
             actions = COALESCE(?11, actions),
             ready_at = CASE WHEN ?12 THEN ?13 ELSE ready_at END,
             lease_owner = CASE WHEN ?14 THEN NULL ELSE lease_owner END,
             lease_expires_at = CASE WHEN ?14 THEN NULL ELSE lease_expires_at END,
             lease_epoch = CASE WHEN ?15 THEN lease_epoch + 1 ELSE lease_epoch END
         WHERE id = ?16 AND version = ?17 AND {}
         RETURNING version",
        fence_condition(&t.fence)
    );
    let (owner, epoch) = match &t.fence {
        Fence::Lease { owner, epoch } => (Some(&**owner), *epoch as i64),
        _ => (None, 0),
    };
    let unleased = t.fence == Fence::Unleased;
    let version: Option<i64> = conn
        .prepare_cached(&sql)?
        .query_row(
            params![
                t.now.millis(),
                u.status.map(|s| s.as_str()),
                u.current_step_index.map(i64::from),
                u.context.as_ref().map(to_json),
                u.error.as_ref().map(to_json),
                u.cancel_requested,
                u.pause_requested,
                owner,
                epoch,
                t.now.millis(),
                u.actions.as_ref().map(to_json),
                u.ready_at.is_some(),
                u.ready_at.flatten().map(Timestamp::millis),
                t.release_lease || unleased,
                unleased,
                id,
                t.version as i64,
                u.redrive.is_some() || u.clear_error,
                u.redrive.as_ref().map(|r| to_json(&r.inputs)),
                u.redrive.as_ref().map(|r| to_json(&r.plan)),
            ],
            |r| r.get(0),
        )
        .optional()?;
    let Some(version) = version else {
        return diagnose(conn, t);
    };
    for index in &t.remove_steps {
        conn.prepare_cached("DELETE FROM saga_step_results WHERE saga_id = ? AND step_index = ?")?
            .execute(params![id, *index as i64])?;
    }
    for step in &t.steps {
        upsert_step(conn, &id, step)?;
    }
    if let Some((index, key)) = &t.take_message {
        super::mailbox::take(conn, &id, *index, key, t.now)?;
    }
    if !t.resources.is_empty() {
        let mut record = conn.prepare_cached(RESOURCE_RECORD)?;
        let mut history = conn.prepare_cached(RESOURCE_HISTORY)?;
        for (step_index, resource) in &t.resources {
            let spec = to_json(&resource.spec);
            let version: i64 = record.query_row(
                params![
                    id,
                    *step_index as i64,
                    resource.kind,
                    resource.external_id,
                    spec,
                    t.now.millis(),
                ],
                |r| r.get(0),
            )?;
            history.execute(params![
                id,
                *step_index as i64,
                resource.kind,
                resource.external_id,
                spec,
                version,
                t.now.millis(),
            ])?;
        }
    }
    for step_index in &t.removed_resources {
        conn.prepare_cached(RESOURCE_REMOVE)?.execute(params![
            t.now.millis(),
            id,
            *step_index as i64
        ])?;
    }
    match &t.pins {
        Pins::Keep => {}
        Pins::Release => {
            conn.prepare_cached("DELETE FROM saga_plugin_pins WHERE saga_id = ?")?
                .execute([&id])?;
        }
        Pins::Restore(digests) => {
            if let Some(gone) = pin(conn, &id, digests)? {
                // Undone by the job's savepoint (or its batch's rollback).
                return Err(StoreError::PinFailed(gone));
            }
        }
    }
    if t.retake_slots {
        super::slots::retake(conn, &id, t.now)?;
    }
    let (woke, taken) = if t.release_slots {
        super::slots::release(conn, &id, t.now, t.take_over.as_ref())?
    } else {
        (false, Vec::new())
    };
    webhooks::write_outbox(conn, &t.outbox, t.now)?;
    Ok(Applied::Done {
        version: version as u64,
        woke,
        taken,
    })
}

/// Why a transition matched no row: the saga is gone, the lease is not
/// this writer's (lost), or the version moved on (stale).
pub(super) fn diagnose(conn: &Connection, t: &Transition) -> StoreResult<Applied> {
    let found: Option<(i64, Option<String>, i64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT version, lease_owner, lease_epoch, lease_expires_at FROM saga_runs WHERE id = ?",
        )?
        .query_row([t.saga_id.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((_, owner, epoch, expires)) = found else {
        return Err(StoreError::LeaseLost(t.saga_id));
    };
    let fence_holds = match &t.fence {
        Fence::Lease {
            owner: mine,
            epoch: my_epoch,
        } => owner.as_deref() == Some(&**mine) && epoch as u64 == *my_epoch,
        Fence::Unleased => owner.is_none() || expires.is_some_and(|e| e < t.now.millis()),
        Fence::Version => true,
    };
    if fence_holds {
        Ok(Applied::Stale)
    } else {
        Err(StoreError::LeaseLost(t.saga_id))
    }
}
