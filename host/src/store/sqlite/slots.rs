//! Concurrency slots on SQLite (docs/flow-control.md): the rows a saga
//! holds or waits in, written by the one writer, so a start, an admission
//! and a release never interleave. Which saga may hold a key is decided by
//! [`crate::model::admit`]; this module reads the rows it needs and writes
//! what it decided, in the transaction of the change that causes it.

use super::*;
use crate::model::{ConcurrencyKey, Slot, SlotState, admit};
use crate::store::{Admission, SLOT_COLUMNS, SlotRow, TakeOver, Taken, from_json};

fn slot_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SlotRow> {
    Ok(SlotRow {
        key: r.get(0)?,
        saga_id: r.get(1)?,
        slot_limit: r.get(2)?,
        state: r.get(3)?,
        seq: r.get(4)?,
        since: r.get(5)?,
    })
}

/// The live (holding or queued) slots of sagas other than `except` on
/// `keys`.
pub(super) fn live_on(
    conn: &Connection,
    keys: &[ConcurrencyKey],
    except: &str,
) -> StoreResult<Vec<Slot>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SLOT_COLUMNS} FROM concurrency_slots
         WHERE key = ? AND state <> 'released' AND saga_id <> ?"
    ))?;
    let mut live = Vec::new();
    for k in keys {
        for row in stmt.query_map(params![k.key, except], slot_row)? {
            live.push(Slot::try_from(row?)?);
        }
    }
    Ok(live)
}

/// The next place in the one arrival order.
fn next_seq(conn: &Connection) -> StoreResult<i64> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM concurrency_slots")?
        .query_row([], |r| r.get(0))?)
}

/// Stores a new saga's slots, all in `state`, at the back of the arrival
/// order.
pub(super) fn insert(conn: &Connection, saga: &SagaRun, state: SlotState) -> StoreResult<()> {
    let seq = next_seq(conn)?;
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO concurrency_slots ({SLOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    ))?;
    for k in &saga.concurrency {
        stmt.execute(params![
            k.key,
            saga.id.to_string(),
            i64::from(k.limit),
            state.as_str(),
            seq,
            saga.created_at.millis(),
        ])?;
    }
    Ok(())
}

/// Gives up an ending saga's slots and admits the sagas queued next on
/// its keys that now fit (each by [`admit`], over all of its keys): their
/// slots become `holding`, and each is claimed for `take_over`'s writer
/// while it has room, else made claimable for the next claim. Answers
/// whether any was made claimable, and those claimed.
pub(super) fn release(
    conn: &Connection,
    saga_id: &str,
    now: Timestamp,
    take_over: Option<&TakeOver>,
) -> StoreResult<(bool, Vec<Taken>)> {
    let released: Vec<(String, i64)> = conn
        .prepare_cached(
            "UPDATE concurrency_slots SET state = 'released', since = ?
             WHERE saga_id = ? AND state <> 'released' RETURNING key, slot_limit",
        )?
        .query_map(params![now.millis(), saga_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut heads: Vec<(i64, String)> = Vec::new();
    let mut queued = conn.prepare_cached(
        "SELECT seq, saga_id FROM concurrency_slots WHERE key = ? AND state = 'queued'
         ORDER BY seq LIMIT ?",
    )?;
    for (key, limit) in &released {
        for head in queued.query_map(params![key, limit], |r| Ok((r.get(0)?, r.get(1)?)))? {
            heads.push(head?);
        }
    }
    heads.sort();
    heads.dedup();
    let (mut woke, mut taken) = (false, Vec::new());
    for (seq, id) in heads {
        let keys: Option<String> = conn
            .prepare_cached(
                "SELECT concurrency FROM saga_runs WHERE id = ? AND status IN ('pending', 'compensating')",
            )?
            .query_row([&id], |r| r.get(0))
            .optional()?;
        let Some(keys) = keys else { continue };
        let keys: Vec<ConcurrencyKey> = from_json("saga concurrency", &keys)?;
        if admit(&keys, Some(seq), &live_on(conn, &keys, &id)?).is_err() {
            continue;
        }
        conn.prepare_cached(
            "UPDATE concurrency_slots SET state = 'holding', since = ?
             WHERE saga_id = ? AND state = 'queued'",
        )?
        .execute(params![now.millis(), id])?;
        let claimed = match take_over {
            Some(t) if taken.len() < t.max => claim_one(conn, &id, t)?,
            _ => None,
        };
        match claimed {
            Some(claimed) => taken.push(claimed),
            None => {
                woke |= conn
                    .prepare_cached(
                        "UPDATE saga_runs SET ready_at = ? WHERE id = ? AND ready_at IS NULL",
                    )?
                    .execute(params![now.millis(), id])?
                    > 0;
            }
        }
    }
    Ok((woke, taken))
}

/// Claims one admitted saga for the take-over's writer (unless another
/// claim holds it), with its first step marked when the runner says so.
fn claim_one(conn: &Connection, id: &str, t: &TakeOver) -> StoreResult<Option<Taken>> {
    let lease = &t.lease;
    let now = lease.now.millis();
    let row = conn
        .prepare_cached(&format!(
            "UPDATE saga_runs SET lease_owner = ?, lease_expires_at = ?,
                 lease_epoch = lease_epoch + 1, ready_at = ?
             WHERE id = ? AND (lease_owner IS NULL OR lease_expires_at < ?)
             RETURNING {SAGA_COLUMNS}, lease_epoch",
        ))?
        .query_row(
            params![
                &*lease.owner,
                lease.now.plus(lease.ttl).millis(),
                now,
                id,
                now
            ],
            |r| {
                Ok((
                    saga_row(r)?,
                    r.get::<_, i64>(SAGA_COLUMNS.split(',').count())?,
                ))
            },
        )
        .optional()?;
    let Some((row, epoch)) = row else {
        return Ok(None);
    };
    let saga = SagaRun::try_from(row)?;
    let ledger = ledger_on(conn, &saga)?;
    let (taken, mark) = Taken::marking(saga, ledger, epoch as u64, t);
    if let Some((status, step)) = mark {
        conn.prepare_cached(
            "UPDATE saga_runs SET status = ?, version = version + 1, updated_at = ? WHERE id = ?",
        )?
        .execute(params![status.as_str(), now, id])?;
        super::upsert_step(conn, id, &step)?;
    }
    Ok(Some(taken))
}

/// Takes an ended saga's keys again: see
/// [`crate::store::Transition::retake_slots`].
pub(super) fn retake(conn: &Connection, saga_id: &str, now: Timestamp) -> StoreResult<()> {
    let keys: String = conn
        .prepare_cached("SELECT concurrency FROM saga_runs WHERE id = ?")?
        .query_row([saga_id], |r| r.get(0))?;
    let keys: Vec<ConcurrencyKey> = from_json("saga concurrency", &keys)?;
    let state = match admit(&keys, None, &live_on(conn, &keys, saga_id)?) {
        Ok(()) => SlotState::Holding,
        Err(_) => SlotState::Queued,
    };
    let seq = next_seq(conn)?;
    conn.prepare_cached(
        "UPDATE concurrency_slots SET state = ?, seq = ?, since = ? WHERE saga_id = ?",
    )?
    .execute(params![state.as_str(), seq, now.millis(), saga_id])?;
    if state == SlotState::Queued {
        conn.prepare_cached("UPDATE saga_runs SET ready_at = NULL WHERE id = ?")?
            .execute([saga_id])?;
    }
    Ok(())
}

/// Whether a saga still waits in a queue (claimed after a wake that did
/// not admit it: it must ask for admission before its first step).
pub(super) fn queued(conn: &Connection, id: &str) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM concurrency_slots WHERE saga_id = ? AND state = 'queued')",
        )?
        .query_row([id], |r| r.get(0))?)
}

/// [`Store::admit_saga`] on the writer.
pub(super) fn admit_saga(
    conn: &Connection,
    id: &str,
    owner: &str,
    epoch: u64,
    version: u64,
    now: Timestamp,
) -> StoreResult<Admission> {
    let found: Option<(Option<String>, i64, i64, String)> = conn
        .prepare_cached(
            "SELECT lease_owner, lease_epoch, version, concurrency FROM saga_runs WHERE id = ?",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((lease_owner, lease_epoch, found_version, keys)) = found else {
        return Ok(Admission::LeaseLost);
    };
    if lease_owner.as_deref() != Some(owner) || lease_epoch as u64 != epoch {
        return Ok(Admission::LeaseLost);
    }
    if found_version as u64 != version {
        return Ok(Admission::Stale);
    }
    let keys: Vec<ConcurrencyKey> = from_json("saga concurrency", &keys)?;
    let own: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT state, seq FROM concurrency_slots WHERE saga_id = ? AND state <> 'released'",
        )?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let Some(seq) = own
        .iter()
        .find(|(state, _)| state == SlotState::Queued.as_str())
        .map(|(_, seq)| *seq)
    else {
        return Ok(Admission::Admitted);
    };
    if admit(&keys, Some(seq), &live_on(conn, &keys, id)?).is_ok() {
        conn.prepare_cached(
            "UPDATE concurrency_slots SET state = 'holding', since = ?
             WHERE saga_id = ? AND state = 'queued'",
        )?
        .execute(params![now.millis(), id])?;
        return Ok(Admission::Admitted);
    }
    conn.prepare_cached(
        "UPDATE saga_runs SET lease_owner = NULL, lease_expires_at = NULL, ready_at = NULL,
             version = version + 1, updated_at = ?
         WHERE id = ?",
    )?
    .execute(params![now.millis(), id])?;
    Ok(Admission::Queued)
}

/// A saga's slots, by key, on the read pool.
pub(super) async fn of_saga(conn: &mut SqliteConnection, id: &str) -> StoreResult<Vec<Slot>> {
    let rows: Vec<SlotRow> = sqlx::query_as(&format!(
        "SELECT {SLOT_COLUMNS} FROM concurrency_slots WHERE saga_id = ? ORDER BY key"
    ))
    .bind(id)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Slot::try_from).collect()
}

/// The live slots of a key, holders first, each in arrival order.
pub(super) async fn of_key(store: &SqliteStore, key: &str) -> StoreResult<Vec<Slot>> {
    let rows: Vec<SlotRow> = sqlx::query_as(&format!(
        "SELECT {SLOT_COLUMNS} FROM concurrency_slots
         WHERE key = ? AND state <> 'released' ORDER BY state = 'queued', seq"
    ))
    .bind(key)
    .fetch_all(&store.reads)
    .await?;
    rows.into_iter().map(Slot::try_from).collect()
}

/// Queued slots per key prefix.
pub(super) async fn queued_by_prefix(store: &SqliteStore) -> StoreResult<Vec<(String, u64)>> {
    let keys: Vec<(String,)> =
        sqlx::query_as("SELECT key FROM concurrency_slots WHERE state = 'queued'")
            .fetch_all(&store.reads)
            .await?;
    Ok(crate::store::count_prefixes(keys.into_iter().map(|(k,)| k)))
}
