//! Schedules and their fires on SQLite (`store::schedules` says how hosts
//! share them): every write goes through the one writer, where each runs
//! whole or not at all (its own savepoint), so a finish records the fire
//! and moves the schedule together.

use super::*;
use crate::model::{Fire, Schedule};
use crate::store::schedules::{
    FIRE_COLUMNS, FireDone, FireRow, SCHEDULE_COLUMNS, ScheduleRow, ScheduleStore, StoredSchedule,
};

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn put_schedule(
        &self,
        schedule: &Schedule,
        next_fire_at: Option<Timestamp>,
    ) -> StoreResult<bool> {
        let schedule = schedule.clone();
        self.writer
            .write(move |conn| {
                let existed: bool = conn
                    .prepare_cached("SELECT 1 FROM schedules WHERE name = ?")?
                    .query_row([&schedule.name], |_| Ok(()))
                    .optional()?
                    .is_some();
                conn.prepare_cached(&format!(
                    "INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)
                     ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, paused = excluded.paused,
                         next_fire_at = excluded.next_fire_at, updated_at = excluded.updated_at"
                ))?
                .execute(params![
                    schedule.name,
                    to_json(&schedule.spec),
                    schedule.paused,
                    next_fire_at.map(Timestamp::millis),
                    schedule.created_at.millis(),
                    schedule.updated_at.millis(),
                ])?;
                Ok(!existed)
            })
            .await
    }

    async fn schedule(&self, name: &str) -> StoreResult<Option<StoredSchedule>> {
        let row: Option<ScheduleRow> = sqlx::query_as(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.reads)
        .await?;
        row.map(ScheduleRow::into_stored).transpose()
    }

    async fn list_schedules(&self) -> StoreResult<Vec<StoredSchedule>> {
        let rows: Vec<ScheduleRow> = sqlx::query_as(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
        ))
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(ScheduleRow::into_stored).collect()
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        self.writer
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM schedule_fires WHERE schedule = ?")?
                    .execute([&name])?;
                let deleted = conn
                    .prepare_cached("DELETE FROM schedules WHERE name = ?")?
                    .execute([&name])?
                    > 0;
                Ok(deleted)
            })
            .await
    }

    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_fire_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let name = name.to_string();
        self.writer
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE schedules SET paused = ?, next_fire_at = ?, updated_at = ?
                         WHERE name = ?",
                    )?
                    .execute(params![
                        paused,
                        next_fire_at.map(Timestamp::millis),
                        now.millis(),
                        name
                    ])?
                    > 0)
            })
            .await
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<StoredSchedule>> {
        let rows: Vec<ScheduleRow> = sqlx::query_as(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules
             WHERE next_fire_at IS NOT NULL AND next_fire_at <= ? AND paused = 0
             ORDER BY next_fire_at LIMIT ?"
        ))
        .bind(now.millis())
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(ScheduleRow::into_stored).collect()
    }

    async fn next_schedule_due(&self) -> StoreResult<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL AND paused = 0",
        )
        .fetch_one(&self.reads)
        .await?;
        Ok(next.map(Timestamp))
    }

    async fn claim_fire(
        &self,
        schedule: &str,
        nominal_at: Timestamp,
        owner: &str,
        now: Timestamp,
        stale_before: Timestamp,
        manual: bool,
    ) -> StoreResult<bool> {
        let (schedule, owner) = (schedule.to_string(), owner.to_string());
        self.writer
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "INSERT INTO schedule_fires (schedule, nominal_at, claimed_by, claimed_at, manual)
                         VALUES (?1, ?2, ?3, ?4, ?6)
                         ON CONFLICT (schedule, nominal_at) DO UPDATE
                         SET claimed_by = excluded.claimed_by, claimed_at = excluded.claimed_at
                         WHERE schedule_fires.outcome IS NULL AND schedule_fires.claimed_at < ?5",
                    )?
                    .execute(params![
                        schedule,
                        nominal_at.millis(),
                        owner,
                        now.millis(),
                        stale_before.millis(),
                        manual
                    ])?
                    == 1)
            })
            .await
    }

    async fn finish_fire(&self, done: &FireDone, keep: usize) -> StoreResult<bool> {
        let done = done.clone();
        self.writer
            .write(move |conn| {
                let finished = conn
                    .prepare_cached(
                        "UPDATE schedule_fires SET fired_at = ?, outcome = ?, saga_id = ?, reason = ?
                         WHERE schedule = ? AND nominal_at = ? AND claimed_by = ? AND outcome IS NULL",
                    )?
                    .execute(params![
                        done.fired_at.millis(),
                        done.outcome.as_str(),
                        done.saga_id.map(|id| id.to_string()),
                        done.reason,
                        done.schedule,
                        done.nominal_at.millis(),
                        done.owner,
                    ])?
                    == 1;
                if finished {
                    if !done.manual {
                        conn.prepare_cached(
                            "UPDATE schedules SET next_fire_at = ? WHERE name = ? AND next_fire_at = ?",
                        )?
                        .execute(params![
                            done.next_fire_at.map(Timestamp::millis),
                            done.schedule,
                            done.nominal_at.millis()
                        ])?;
                    }
                    prune(conn, &done.schedule, keep)?;
                }
                Ok(finished)
            })
            .await
    }

    async fn miss_fires(
        &self,
        schedule: &str,
        from: Timestamp,
        to: Option<Timestamp>,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (schedule, reason) = (schedule.to_string(), reason.to_string());
        self.writer
            .write(move |conn| {
                let moved = conn
                    .prepare_cached(
                        "UPDATE schedules SET next_fire_at = ? WHERE name = ? AND next_fire_at = ?",
                    )?
                    .execute(params![to.map(Timestamp::millis), schedule, from.millis()])?
                    == 1;
                if moved {
                    conn.prepare_cached(
                        "INSERT INTO schedule_fires
                             (schedule, nominal_at, claimed_by, claimed_at, fired_at, outcome, reason)
                         VALUES (?1, ?2, '', ?3, ?3, 'missed', ?4)
                         ON CONFLICT (schedule, nominal_at) DO UPDATE
                         SET fired_at = excluded.fired_at, outcome = 'missed', reason = excluded.reason
                         WHERE schedule_fires.outcome IS NULL",
                    )?
                    .execute(params![schedule, from.millis(), now.millis(), reason])?;
                }
                Ok(moved)
            })
            .await
    }

    async fn schedule_fires(&self, schedule: &str, limit: usize) -> StoreResult<Vec<Fire>> {
        let rows: Vec<FireRow> = sqlx::query_as(&format!(
            "SELECT {FIRE_COLUMNS} FROM schedule_fires WHERE schedule = ?
             ORDER BY nominal_at DESC LIMIT ?"
        ))
        .bind(schedule)
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(FireRow::into_fire).collect()
    }

    async fn saga_by_idempotency_key(&self, key: &str) -> StoreResult<Option<SagaId>> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM saga_runs WHERE idempotency_key = ?")
                .bind(key)
                .fetch_optional(&self.reads)
                .await?;
        id.as_deref()
            .map(crate::store::rows::parse_saga_id)
            .transpose()
    }
}

/// Deletes all but the newest `keep` finished fires of `schedule`.
fn prune(conn: &Connection, schedule: &str, keep: usize) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM schedule_fires WHERE schedule = ?1 AND outcome IS NOT NULL AND nominal_at <
             (SELECT nominal_at FROM schedule_fires WHERE schedule = ?1
              ORDER BY nominal_at DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![schedule, keep.saturating_sub(1) as i64])?;
    Ok(())
}
