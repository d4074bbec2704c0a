//! How a transition is written on PostgreSQL: the fence checked in the
//! same statement as the saga's update, the ledger rows, pins, resources
//! and the webhook outbox in one transaction, and, when the fence fails,
//! why (a stale version or a lost lease). The `Store` methods in the parent
//! module read (and the grouper, `group`, batches transitions through
//! here); this is the one place a saga's state changes on PostgreSQL.

use super::*;

/// Writes ledger rows (whole rows: insert or replace) in one statement.
pub(super) async fn upsert_steps(
    conn: &mut PgConnection,
    saga_id: &str,
    steps: &[StepResult],
) -> StoreResult<()> {
    if steps.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = steps
        .iter()
        .map(|s| serde_json::Value::Object(ledger_row_json(s)))
        .collect();
    sqlx::query(concat!(
        step_insert!(),
        " SELECT $1, ",
        json_ledger_values!(),
        " FROM jsonb_to_recordset($2::jsonb) AS r(",
        json_ledger_columns!(),
        ")",
        step_on_conflict!()
    ))
    .bind(saga_id)
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The fence of a transition as a condition on `saga_runs`, with `$8` the
/// owner and `$9` the epoch.
pub(super) fn fence_condition(fence: &Fence) -> String {
    match fence {
        Fence::Lease { .. } => "lease_owner = $8 AND lease_epoch = $9".into(),
        Fence::Unleased => format!("(lease_owner IS NULL OR lease_expires_at < {DB_NOW})"),
        Fence::Version => "TRUE".into(),
    }
}

/// A transition on its own (those the group statement does not take).
pub(super) async fn apply_transition(
    tx: &mut Transaction<'static, Postgres>,
    t: &Transition,
) -> StoreResult<Applied> {
    let id = t.saga_id.to_string();
    let u = &t.saga;
    let (owner, epoch) = match &t.fence {
        Fence::Lease { owner, epoch } => (Some(owner.to_string()), *epoch as i64),
        _ => (None, 0),
    };
    let unleased = t.fence == Fence::Unleased;
    let version: Option<i64> = sqlx::query_scalar(&format!(
        "UPDATE saga_runs SET updated_at = $1, version = version + 1,
             status = COALESCE($2, status),
             current_step_index = COALESCE($3, current_step_index),
             context = COALESCE($4, context),
             error = CASE WHEN $17 THEN NULL ELSE COALESCE($5, error) END,
             inputs = COALESCE($18, inputs),
             steps = COALESCE($19, steps),
             cancel_requested = COALESCE($6, cancel_requested),
             pause_requested = COALESCE($7, pause_requested),
             actions = COALESCE($10, actions),
             ready_at = CASE WHEN $11 THEN $12 ELSE ready_at END,
             lease_owner = CASE WHEN $13 THEN NULL ELSE lease_owner END,
             lease_expires_at = CASE WHEN $13 THEN NULL ELSE lease_expires_at END,
             lease_epoch = CASE WHEN $14 THEN lease_epoch + 1 ELSE lease_epoch END
         WHERE id = $15 AND version = $16 AND {} AND ($8::text IS NULL OR TRUE) AND ($9::bigint IS NULL OR TRUE)
         RETURNING version",
        fence_condition(&t.fence)
    ))
    .bind(t.now.millis())
    .bind(u.status.map(|s| s.as_str()))
    .bind(u.current_step_index.map(i64::from))
    .bind(u.context.as_ref().map(to_json))
    .bind(u.error.as_ref().map(to_json))
    .bind(u.cancel_requested)
    .bind(u.pause_requested)
    .bind(owner)
    .bind(epoch)
    .bind(u.actions.as_ref().map(to_json))
    .bind(u.ready_at.is_some())
    .bind(u.ready_at.flatten().map(Timestamp::millis))
    .bind(t.release_lease || unleased)
    .bind(unleased)
    .bind(&id)
    .bind(t.version as i64)
    .bind(u.redrive.is_some() || u.clear_error)
    .bind(u.redrive.as_ref().map(|r| to_json(&r.inputs)))
    .bind(u.redrive.as_ref().map(|r| to_json(&r.plan)))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(version) = version else {
        return diagnose(tx, t).await;
    };
    let origin = match &t.fence {
        Fence::Lease { owner, .. } => owner.to_string(),
        _ => String::new(),
    };
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGE_CHANNEL)
        .bind(format!("{id} {version} {origin}"))
        .execute(&mut **tx)
        .await?;
    if !t.remove_steps.is_empty() {
        let indexes: Vec<i64> = t.remove_steps.iter().map(|i| i64::from(*i)).collect();
        sqlx::query("DELETE FROM saga_step_results WHERE saga_id = $1 AND step_index = ANY($2)")
            .bind(&id)
            .bind(&indexes)
            .execute(&mut **tx)
            .await?;
    }
    upsert_steps(tx, &id, &t.steps).await?;
    if let Some((index, key)) = &t.take_message {
        super::mailbox::take(tx, &id, *index, key, t.now).await?;
    }
    for (step_index, resource) in &t.resources {
        // The desired state (new, or re-recorded: spec replaced, version
        // bumped, present again, now this step's), then the saga's own
        // history with the same version.
        sqlx::query(
            "WITH recorded AS (
                 INSERT INTO resources (kind, external_id, spec, spec_version, saga_id, step_index,
                     deployment_id, state, created_at, updated_at)
                 VALUES ($3, $4, $5, 1, $1, $2, (SELECT deployment_id FROM saga_runs WHERE id = $1),
                     'present', $6, $6)
                 ON CONFLICT (kind, external_id) DO UPDATE SET
                     spec = excluded.spec, spec_version = resources.spec_version + 1,
                     saga_id = excluded.saga_id, step_index = excluded.step_index,
                     deployment_id = excluded.deployment_id, state = 'present',
                     updated_at = excluded.updated_at, observed_at = NULL, drift = NULL,
                     drift_diff = NULL
                 RETURNING spec_version
             )
             INSERT INTO provisioned_resources (saga_id, step_index, kind, external_id, spec, spec_version, created_at)
             SELECT $1, $2, $3, $4, $5, spec_version, $6 FROM recorded",
        )
        .bind(&id)
        .bind(*step_index as i64)
        .bind(&resource.kind)
        .bind(&resource.external_id)
        .bind(to_json(&resource.spec))
        .bind(t.now.millis())
        .execute(&mut **tx)
        .await?;
    }
    if !t.removed_resources.is_empty() {
        // A compensated step's resources leave the desired state, unless
        // another step recorded them since.
        let indexes: Vec<i64> = t.removed_resources.iter().map(|i| i64::from(*i)).collect();
        sqlx::query(
            "UPDATE resources SET state = 'removed', updated_at = $1
             WHERE saga_id = $2 AND step_index = ANY($3) AND state = 'present'",
        )
        .bind(t.now.millis())
        .bind(&id)
        .bind(&indexes)
        .execute(&mut **tx)
        .await?;
    }
    match &t.pins {
        Pins::Keep => {}
        Pins::Release => {
            sqlx::query("DELETE FROM saga_plugin_pins WHERE saga_id = $1")
                .bind(&id)
                .execute(&mut **tx)
                .await?;
        }
        Pins::Restore(digests) => {
            if let Some(gone) = pin(tx, &id, digests).await? {
                return Err(StoreError::PinFailed(gone));
            }
        }
    }
    if t.retake_slots {
        super::slots::retake(tx, &id, t.now).await?;
    }
    let (woke, taken) = if t.release_slots {
        super::slots::release(tx, &id, t.now, t.take_over.as_ref()).await?
    } else {
        (false, Vec::new())
    };
    webhooks::write_outbox(tx, &t.outbox, t.now).await?;
    Ok(Applied::Done {
        version: version as u64,
        woke,
        taken,
    })
}

/// Why a transition matched no row: the lease is not the writer's (lost),
/// or the version moved on (stale).
pub(super) async fn diagnose(conn: &mut PgConnection, t: &Transition) -> StoreResult<Applied> {
    let found: Option<(Option<String>, i64, bool)> = sqlx::query_as(&format!(
        "SELECT lease_owner, lease_epoch, (lease_expires_at IS NULL OR lease_expires_at < {DB_NOW})
         FROM saga_runs WHERE id = $1"
    ))
    .bind(t.saga_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((owner, epoch, expired)) = found else {
        return Err(StoreError::LeaseLost(t.saga_id));
    };
    let fence_holds = match &t.fence {
        Fence::Lease {
            owner: mine,
            epoch: my_epoch,
        } => owner.as_deref() == Some(&**mine) && epoch as u64 == *my_epoch,
        Fence::Unleased => owner.is_none() || expired,
        Fence::Version => true,
    };
    if fence_holds {
        Ok(Applied::Stale)
    } else {
        Err(StoreError::LeaseLost(t.saga_id))
    }
}

/// Pins `digests` for a saga; names the first that is gone instead. The
/// foreign key makes a concurrent delete lose (or this insert fail).
pub(super) async fn pin(
    conn: &mut PgConnection,
    saga_id: &str,
    digests: &[Digest],
) -> StoreResult<Option<Digest>> {
    // Named first: after a failed statement the transaction can run no
    // other query to find the culprit.
    if let Some(gone) = first_gone(conn, digests).await? {
        return Ok(Some(gone));
    }
    let texts: Vec<&str> = digests.iter().map(Digest::as_str).collect();
    let inserted = sqlx::query(
        "INSERT INTO saga_plugin_pins (digest, saga_id)
         SELECT d, $2 FROM unnest($1::text[]) AS d ON CONFLICT DO NOTHING",
    )
    .bind(&texts)
    .bind(saga_id)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(None),
        Err(e) => {
            let e = StoreError::from(e);
            if !e.is_foreign_key() {
                return Err(e);
            }
            // Deleted between the check and the insert.
            Ok(Some(digests[0].clone()))
        }
    }
}

/// The first of `digests` no longer stored.
pub(super) async fn first_gone(
    conn: &mut PgConnection,
    digests: &[Digest],
) -> StoreResult<Option<Digest>> {
    let texts: Vec<&str> = digests.iter().map(Digest::as_str).collect();
    let present: Vec<String> =
        sqlx::query_scalar("SELECT digest FROM plugins WHERE digest = ANY($1)")
            .bind(&texts)
            .fetch_all(&mut *conn)
            .await?;
    Ok(digests
        .iter()
        .find(|d| !present.iter().any(|p| p == d.as_str()))
        .cloned())
}
