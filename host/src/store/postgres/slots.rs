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
use crate::store::{Admission, SLOT_COLUMNS, SlotRow, TakeOver, Taken, from_json};

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

/// Takes the locks of a saga's keys (before its row is written, so locks
/// come in the one order).
pub(super) async fn lock_saga_keys(
    tx: &mut Transaction<'static, Postgres>,
    saga_id: &str,
) -> StoreResult<()> {
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM concurrency_slots WHERE saga_id = $1")
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

/// Gives up an ending saga's slots (its keys locked already) and admits
/// the sagas queued next on its keys that now fit. A head is admitted here
/// only when every key it asks for is one of the locked ones (else it is
/// made claimable, and asks for admission, under its own locks, when
/// claimed): its slots become `holding`, and it is claimed for
/// `take_over`'s writer while that has room, else made claimable for any
/// host, which are told. Answers whether any was made claimable, and
/// those claimed.
pub(super) async fn release(
    tx: &mut Transaction<'static, Postgres>,
    saga_id: &str,
    now: Timestamp,
    take_over: Option<&TakeOver>,
) -> StoreResult<(bool, Vec<Taken>)> {
    let heads: Vec<(i64, String, String)> = sqlx::query_as(
        "WITH released AS (
             UPDATE concurrency_slots SET state = 'released', since = $2
             WHERE saga_id = $1 AND state <> 'released'
             RETURNING key, slot_limit
         )
         SELECT DISTINCT q.seq, q.saga_id, s.concurrency FROM released r,
             LATERAL (SELECT seq, saga_id FROM concurrency_slots c
                      WHERE c.key = r.key AND c.state = 'queued'
                      ORDER BY c.seq LIMIT r.slot_limit) q
             JOIN saga_runs s ON s.id = q.saga_id AND s.status IN ('pending', 'compensating')
         ORDER BY q.seq",
    )
    .bind(saga_id)
    .bind(now.millis())
    .fetch_all(&mut **tx)
    .await?;
    let locked: Vec<String> =
        sqlx::query_scalar("SELECT key FROM concurrency_slots WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_all(&mut **tx)
            .await?;
    let (mut wake, mut taken) = (Vec::new(), Vec::new());
    for (seq, id, keys) in heads {
        let keys: Vec<ConcurrencyKey> = from_json("saga concurrency", &keys)?;
        if !keys.iter().all(|k| locked.contains(&k.key)) {
            wake.push(id);
            continue;
        }
        if admit(&keys, Some(seq), &live_on(tx, &keys, &id).await?).is_err() {
            continue;
        }
        sqlx::query(
            "UPDATE concurrency_slots SET state = 'holding', since = $2
             WHERE saga_id = $1 AND state = 'queued'",
        )
        .bind(&id)
        .bind(now.millis())
        .execute(&mut **tx)
        .await?;
        let claimed = match take_over {
            Some(t) if taken.len() < t.max => claim_one(tx, &id, t).await?,
            _ => None,
        };
        match claimed {
            Some(claimed) => taken.push(claimed),
            None => wake.push(id),
        }
    }
    let woken = sqlx::query(&format!(
        "UPDATE saga_runs SET ready_at = {DB_NOW} WHERE id = ANY($1) AND ready_at IS NULL"
    ))
    .bind(&wake)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    let woke = woken > 0;
    if woke {
        sqlx::query("SELECT pg_notify('wasaga_work', '')")
            .execute(&mut **tx)
            .await?;
    }
    Ok((woke, taken))
}

/// Claims one admitted saga for the take-over's writer (unless another
/// claim holds it), with its first step marked when the runner says so.
async fn claim_one(
    tx: &mut Transaction<'static, Postgres>,
    id: &str,
    t: &TakeOver,
) -> StoreResult<Option<Taken>> {
    let lease = &t.lease;
    let row: Option<(SagaRow, i64)> = sqlx::query(&format!(
        "UPDATE saga_runs SET lease_owner = $2, lease_expires_at = {DB_NOW} + $3,
             lease_epoch = lease_epoch + 1, ready_at = {DB_NOW}
         WHERE id = $1 AND (lease_owner IS NULL OR lease_expires_at < {DB_NOW})
         RETURNING {SAGA_COLUMNS}, lease_epoch"
    ))
    .bind(id)
    .bind(&*lease.owner)
    .bind(lease.ttl.as_millis() as i64)
    .try_map(|row: sqlx::postgres::PgRow| {
        use sqlx::{FromRow, Row};
        Ok((SagaRow::from_row(&row)?, row.try_get("lease_epoch")?))
    })
    .fetch_optional(&mut **tx)
    .await?;
    let Some((row, epoch)) = row else {
        return Ok(None);
    };
    let saga = SagaRun::try_from(row)?;
    let ledger = ledger(tx, &saga, STEP_COLUMNS).await?;
    let (taken, mark) = Taken::marking(saga, ledger, epoch as u64, t);
    if let Some((status, step)) = mark {
        let version: i64 = sqlx::query_scalar(
            "UPDATE saga_runs SET status = $2, version = version + 1, updated_at = $3
             WHERE id = $1 RETURNING version",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(lease.now.millis())
        .fetch_one(&mut **tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGE_CHANNEL)
            .bind(format!("{id} {version} {}", lease.owner))
            .execute(&mut **tx)
            .await?;
        super::transition::upsert_steps(tx, id, std::slice::from_ref(&step)).await?;
    }
    Ok(Some(taken))
}

/// Takes an ended saga's keys again (its keys locked already): see
/// [`crate::store::Transition::retake_slots`].
pub(super) async fn retake(
    tx: &mut Transaction<'static, Postgres>,
    saga_id: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let keys: String = sqlx::query_scalar("SELECT concurrency FROM saga_runs WHERE id = $1")
        .bind(saga_id)
        .fetch_one(&mut **tx)
        .await?;
    let keys: Vec<ConcurrencyKey> = from_json("saga concurrency", &keys)?;
    let state = match admit(&keys, None, &live_on(tx, &keys, saga_id).await?) {
        Ok(()) => SlotState::Holding,
        Err(_) => SlotState::Queued,
    };
    sqlx::query(
        "UPDATE concurrency_slots SET state = $2, seq = nextval('concurrency_arrivals'), since = $3
         WHERE saga_id = $1",
    )
    .bind(saga_id)
    .bind(state.as_str())
    .bind(now.millis())
    .execute(&mut **tx)
    .await?;
    if state == SlotState::Queued {
        sqlx::query("UPDATE saga_runs SET ready_at = NULL WHERE id = $1")
            .bind(saga_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Whether a saga still waits in a queue (claimed after a wake that did
/// not admit it: it must ask for admission before its first step).
pub(super) async fn queued(conn: &mut PgConnection, id: &str) -> StoreResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM concurrency_slots WHERE saga_id = $1 AND state = 'queued')",
    )
    .bind(id)
    .fetch_one(conn)
    .await?)
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
