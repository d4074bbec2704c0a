//! Schedules and their fires on PostgreSQL (`store::schedules` says how
//! hosts share them): a claim is one conditional upsert, so of hosts racing
//! for a fire exactly one sees its row written; a finish and a miss are one
//! transaction each, moving the schedule only from the nominal time fired.

use super::*;
use crate::model::{Fire, Schedule};
use crate::store::schedules::{
    FIRE_COLUMNS, FireDone, FireRow, SCHEDULE_COLUMNS, ScheduleRow, ScheduleStore, StoredSchedule,
};

#[async_trait]
impl ScheduleStore for PgStore {
    async fn put_schedule(
        &self,
        schedule: &Schedule,
        next_fire_at: Option<Timestamp>,
    ) -> StoreResult<bool> {
        let created: bool = sqlx::query_scalar(&format!(
            "INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, paused = excluded.paused,
                 next_fire_at = excluded.next_fire_at, updated_at = excluded.updated_at
             RETURNING (xmax = 0)"
        ))
        .bind(&schedule.name)
        .bind(to_json(&schedule.spec))
        .bind(schedule.paused)
        .bind(next_fire_at.map(Timestamp::millis))
        .bind(schedule.created_at.millis())
        .bind(schedule.updated_at.millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(created)
    }

    async fn schedule(&self, name: &str) -> StoreResult<Option<StoredSchedule>> {
        let row: Option<ScheduleRow> = sqlx::query_as(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ScheduleRow::into_stored).transpose()
    }

    async fn list_schedules(&self) -> StoreResult<Vec<StoredSchedule>> {
        let rows: Vec<ScheduleRow> = sqlx::query_as(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ScheduleRow::into_stored).collect()
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM schedule_fires WHERE schedule = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM schedules WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_fire_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        Ok(sqlx::query(
            "UPDATE schedules SET paused = $1, next_fire_at = $2, updated_at = $3 WHERE name = $4",
        )
        .bind(paused)
        .bind(next_fire_at.map(Timestamp::millis))
        .bind(now.millis())
        .bind(name)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<StoredSchedule>> {
        let rows: Vec<ScheduleRow> = sqlx::query_as(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules
             WHERE next_fire_at IS NOT NULL AND next_fire_at <= $1 AND NOT paused
             ORDER BY next_fire_at LIMIT $2"
        ))
        .bind(now.millis())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ScheduleRow::into_stored).collect()
    }

    async fn next_schedule_due(&self) -> StoreResult<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL AND NOT paused",
        )
        .fetch_one(&self.pool)
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
        let claimed = sqlx::query(
            "INSERT INTO schedule_fires (schedule, nominal_at, claimed_by, claimed_at, manual)
             VALUES ($1, $2, $3, $4, $6)
             ON CONFLICT (schedule, nominal_at) DO UPDATE
             SET claimed_by = excluded.claimed_by, claimed_at = excluded.claimed_at
             WHERE schedule_fires.outcome IS NULL AND schedule_fires.claimed_at < $5",
        )
        .bind(schedule)
        .bind(nominal_at.millis())
        .bind(owner)
        .bind(now.millis())
        .bind(stale_before.millis())
        .bind(manual)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    async fn finish_fire(&self, done: &FireDone, keep: usize) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let finished = sqlx::query(
            "UPDATE schedule_fires SET fired_at = $1, outcome = $2, saga_id = $3, reason = $4
             WHERE schedule = $5 AND nominal_at = $6 AND claimed_by = $7 AND outcome IS NULL",
        )
        .bind(done.fired_at.millis())
        .bind(done.outcome.as_str())
        .bind(done.saga_id.map(|id| id.to_string()))
        .bind(&done.reason)
        .bind(&done.schedule)
        .bind(done.nominal_at.millis())
        .bind(&done.owner)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if finished {
            if !done.manual {
                sqlx::query(
                    "UPDATE schedules SET next_fire_at = $1 WHERE name = $2 AND next_fire_at = $3",
                )
                .bind(done.next_fire_at.map(Timestamp::millis))
                .bind(&done.schedule)
                .bind(done.nominal_at.millis())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "DELETE FROM schedule_fires WHERE schedule = $1 AND outcome IS NOT NULL AND nominal_at <
                     (SELECT nominal_at FROM schedule_fires WHERE schedule = $1
                      ORDER BY nominal_at DESC LIMIT 1 OFFSET $2)",
            )
            .bind(&done.schedule)
            .bind(keep.saturating_sub(1) as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(finished)
    }

    async fn miss_fires(
        &self,
        schedule: &str,
        from: Timestamp,
        to: Option<Timestamp>,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE schedules SET next_fire_at = $1 WHERE name = $2 AND next_fire_at = $3",
        )
        .bind(to.map(Timestamp::millis))
        .bind(schedule)
        .bind(from.millis())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if moved {
            sqlx::query(
                "INSERT INTO schedule_fires
                     (schedule, nominal_at, claimed_by, claimed_at, fired_at, outcome, reason)
                 VALUES ($1, $2, '', $3, $3, 'missed', $4)
                 ON CONFLICT (schedule, nominal_at) DO UPDATE
                 SET fired_at = excluded.fired_at, outcome = 'missed', reason = excluded.reason
                 WHERE schedule_fires.outcome IS NULL",
            )
            .bind(schedule)
            .bind(from.millis())
            .bind(now.millis())
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    async fn schedule_fires(&self, schedule: &str, limit: usize) -> StoreResult<Vec<Fire>> {
        let rows: Vec<FireRow> = sqlx::query_as(&format!(
            "SELECT {FIRE_COLUMNS} FROM schedule_fires WHERE schedule = $1
             ORDER BY nominal_at DESC LIMIT $2"
        ))
        .bind(schedule)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(FireRow::into_fire).collect()
    }

    async fn saga_by_idempotency_key(&self, key: &str) -> StoreResult<Option<SagaId>> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM saga_runs WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        id.as_deref()
            .map(crate::store::rows::parse_saga_id)
            .transpose()
    }
}
