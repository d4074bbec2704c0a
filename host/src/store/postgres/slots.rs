//! Concurrency slots on PostgreSQL (docs/flow-control.md): rows every host
//! on the database shares. A change to a key's slots (a start that takes
//! or queues, an admission, a release) first takes the key's
//! transaction-scoped advisory lock, keys in sorted order and before any
//! saga row, so two hosts never let more than a key's limit of sagas hold
//! it and never wait on each other in a cycle. Which saga may hold a key
//! is decided by [`crate::model::admit`]; this module reads the rows it
//! needs and writes what it decided, in the transaction of the change that
//! causes it.

use super::*;
use crate::model::{ConcurrencyKey, Slot, SlotState, admit};
use crate::store::{Admission, SLOT_COLUMNS, SlotRow, from_json};

/// Takes the advisory locks of `keys` (sorted, each once) until the
/// transaction ends.
pub(super) async fn lock<'k>(
    tx: &mut Transaction<'static, Postgres>,
    keys: impl IntoIterator<Item = &'k str>,
) -> StoreResult<()> {
    let mut keys: Vec<&str> = keys.into_iter().collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7411))")
            .bind(key)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Takes the locks of the keys a saga holds or waits for (before its row
/// is written, so locks come in the one order).
pub(super) async fn lock_saga_keys(
    tx: &mut Transaction<'static, Postgres>,
    saga_id: &str,
) -> StoreResult<()> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT key FROM concurrency_slots WHERE saga_id = $1 AND state <> 'released'",
    )
    .bind(saga_id)
    .fetch_all(&mut **tx)
    .await?;
    lock(tx, keys.iter().map(String::as_str)).await
}

/// The live (holding or queued) slots of sagas other than `except` on
/// `keys`.
pub(super) async fn live_on(
    tx: &mut Transaction<'static, Postgres>,
    keys: &[ConcurrencyKey],
    except: &str,
) -> StoreResult<Vec<Slot>> {
    let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    let rows: Vec<SlotRow> = sqlx::query_as(&format!(
        "SELECT {SLOT_COLUMNS} FROM concurrency_slots
         WHERE key = ANY($1) AND state <> 'released' AND saga_id <> $2"
    ))
    .bind(&names)
    .bind(except)
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter().map(Slot::try_from).collect()
}

/// Stores a new saga's slots, all in `state`, at the back of the arrival
/// order.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Postgres>,
    saga: &SagaRun,
    state: SlotState,
) -> StoreResult<()> {
    let keys: Vec<&str> = saga.concurrency.iter().map(|k| k.key.as_str()).collect();
    let limits: Vec<i64> = saga
        .concurrency
        .iter()
        .map(|k| i64::from(k.limit))
        .collect();
    sqlx::query(&format!(
        "INSERT INTO concurrency_slots ({SLOT_COLUMNS})
         SELECT k.key, $3, k.lim, $4, a.seq, $5
         FROM unnest($1::text[], $2::bigint[]) AS k(key, lim),
              (SELECT nextval('concurrency_arrivals') AS seq) AS a"
    ))
    .bind(&keys)
    .bind(&limits)
    .bind(saga.id.to_string())
    .bind(state.as_str())
    .bind(saga.created_at.millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Gives up an ending saga's slots (its keys locked already) and makes the
/// sagas at the head of each key's queue claimable (as many as the key's
/// limit: each decides for itself when claimed), telling every host;
/// whether it made any claimable.
pub(super) async fn release(
    tx: &mut Transaction<'static, Postgres>,
    saga_id: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let woken: Option<i64> = sqlx::query_scalar(&format!(
        "WITH released AS (
             UPDATE concurrency_slots SET state = 'released', since = $2
             WHERE saga_id = $1 AND state <> 'released'
             RETURNING key, slot_limit
         ), heads AS (
             SELECT q.saga_id FROM released r,
                 LATERAL (SELECT saga_id FROM concurrency_slots c
                          WHERE c.key = r.key AND c.state = 'queued'
                          ORDER BY c.seq LIMIT r.slot_limit) q
         ), woken AS (
             UPDATE saga_runs SET ready_at = {DB_NOW}
             WHERE ready_at IS NULL AND status = 'pending' AND id IN (SELECT saga_id FROM heads)
             RETURNING id
         )
         SELECT count(*) FROM woken"
    ))
    .bind(saga_id)
    .bind(now.millis())
    .fetch_optional(&mut **tx)
    .await?;
    let woke = woken.unwrap_or(0) > 0;
    if woke {
        sqlx::query("SELECT pg_notify('wasaga_work', '')")
            .execute(&mut **tx)
            .await?;
    }
    Ok(woke)
}

/// [`Store::admit_saga`].
pub(super) async fn admit_saga(
    pool: &PgPool,
    id: &str,
    owner: &str,
    epoch: u64,
    version: u64,
    now: Timestamp,
) -> StoreResult<Admission> {
    let mut tx = pool.begin().await?;
    let keys: Option<String> =
        sqlx::query_scalar("SELECT concurrency FROM saga_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(keys) = keys else {
        return Ok(Admission::LeaseLost);
    };
    let keys: Vec<ConcurrencyKey> = from_json("saga concurrency", &keys)?;
    lock(&mut tx, keys.iter().map(|k| k.key.as_str())).await?;
    let (lease_owner, lease_epoch, found_version): (Option<String>, i64, i64) = sqlx::query_as(
        "SELECT lease_owner, lease_epoch, version FROM saga_runs WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if lease_owner.as_deref() != Some(owner) || lease_epoch as u64 != epoch {
        return Ok(Admission::LeaseLost);
    }
    if found_version as u64 != version {
        return Ok(Admission::Stale);
    }
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT min(seq) FROM concurrency_slots WHERE saga_id = $1 AND state = 'queued'",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let Some(seq) = seq else {
        return Ok(Admission::Admitted);
    };
    let admission = if admit(&keys, Some(seq), &live_on(&mut tx, &keys, id).await?).is_ok() {
        sqlx::query(
            "UPDATE concurrency_slots SET state = 'holding', since = $2
             WHERE saga_id = $1 AND state = 'queued'",
        )
        .bind(id)
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        Admission::Admitted
    } else {
        sqlx::query(
            "UPDATE saga_runs SET lease_owner = NULL, lease_expires_at = NULL, ready_at = NULL,
                 version = version + 1, updated_at = $2
             WHERE id = $1",
        )
        .bind(id)
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        Admission::Queued
    };
    tx.commit().await?;
    Ok(admission)
}

/// A saga's slots, by key.
pub(super) async fn of_saga(conn: &mut PgConnection, id: &str) -> StoreResult<Vec<Slot>> {
    let rows: Vec<SlotRow> = sqlx::query_as(&format!(
        "SELECT {SLOT_COLUMNS} FROM concurrency_slots WHERE saga_id = $1 ORDER BY key"
    ))
    .bind(id)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Slot::try_from).collect()
}

/// The live slots of a key, holders first, each in arrival order.
pub(super) async fn of_key(pool: &PgPool, key: &str) -> StoreResult<Vec<Slot>> {
    let rows: Vec<SlotRow> = sqlx::query_as(&format!(
        "SELECT {SLOT_COLUMNS} FROM concurrency_slots
         WHERE key = $1 AND state <> 'released' ORDER BY state = 'queued', seq"
    ))
    .bind(key)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(Slot::try_from).collect()
}

/// Queued slots per key prefix.
pub(super) async fn queued_by_prefix(pool: &PgPool) -> StoreResult<Vec<(String, u64)>> {
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM concurrency_slots WHERE state = 'queued'")
            .fetch_all(pool)
            .await?;
    Ok(crate::store::count_prefixes(keys.into_iter()))
}
