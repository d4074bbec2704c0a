//! Provider budgets on PostgreSQL (`store::budgets` says what they are):
//! one row each, shared by every host, on the database's clock. A take is
//! one conditional `UPDATE`, so hosts taking at once are serialized by the
//! row and never take more than the rate allows; puts are serialized by an
//! advisory lock, so two overlapping budgets cannot both be stored.

use super::*;
use crate::model::Budget;
use crate::store::budgets::{BUDGET_COLUMNS, BudgetRow, BudgetStore, PutBudget, Take, overlap};

/// The database's clock, in µs.
const NOW_US: &str = "(extract(epoch from clock_timestamp()) * 1000000)::bigint";
/// The latest of the arrival time, now and the pause; and the interval
/// between two requests, in µs.
const START: &str = "GREATEST(b.tat_us, n.us, COALESCE(b.paused_until, 0) * 1000)";
const INTERVAL: &str = "GREATEST((b.per_ms * 1000) / b.rate, 1)";
/// When the token now being taken may go out: its place in the rate (a
/// burst may go ahead of the arrival time), never before a pause ends.
const SLOT: &str =
    "GREATEST({START} - (b.burst - 1) * {INTERVAL}, COALESCE(b.paused_until, 0) * 1000)";
/// A lock key of its own for budget puts.
const PUT_LOCK: i64 = 0x7761_7361_6761_6275;

fn slot() -> String {
    SLOT.replace("{START}", START)
        .replace("{INTERVAL}", INTERVAL)
}

#[async_trait]
impl BudgetStore for PgStore {
    async fn put_budget(&self, budget: &Budget) -> StoreResult<PutBudget> {
        let put = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PUT_LOCK)
                .execute(&mut *tx)
                .await?;
            let rows: Vec<BudgetRow> =
                sqlx::query_as(&format!("SELECT {BUDGET_COLUMNS} FROM budgets"))
                    .fetch_all(&mut *tx)
                    .await?;
            let all: Vec<Budget> = rows
                .into_iter()
                .map(|r| Ok(r.into_budget()?.0))
                .collect::<StoreResult<_>>()?;
            if let Some(overlaps) = overlap(budget, &all) {
                return Ok(overlaps);
            }
            let existed = all.iter().any(|b| b.name == budget.name);
            sqlx::query(&format!(
                "INSERT INTO budgets ({BUDGET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, 0, NULL, $7, $8)
                 ON CONFLICT (name) DO UPDATE SET origins = excluded.origins, rate = excluded.rate,
                     per = excluded.per, per_ms = excluded.per_ms, burst = excluded.burst,
                     updated_at = excluded.updated_at"
            ))
            .bind(&budget.name)
            .bind(to_json(&budget.origins))
            .bind(i64::from(budget.rate))
            .bind(&budget.per)
            .bind(budget.per_ms as i64)
            .bind(i64::from(budget.burst))
            .bind(budget.created_at.millis())
            .bind(budget.updated_at.millis())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(if existed {
                PutBudget::Updated(budget.clone())
            } else {
                PutBudget::Created(budget.clone())
            })
        };
        let put = put.await;
        self.note(put)
    }

    async fn list_budgets(&self) -> StoreResult<Vec<(Budget, i64, i64)>> {
        let rows: Vec<(BudgetRow, i64)> = sqlx::query(&format!(
            "SELECT {BUDGET_COLUMNS}, {NOW_US} AS now_us FROM budgets ORDER BY name"
        ))
        .try_map(|row: sqlx::postgres::PgRow| {
            use sqlx::{FromRow, Row};
            Ok((BudgetRow::from_row(&row)?, row.try_get("now_us")?))
        })
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(r, now)| {
                let (budget, tat) = r.into_budget()?;
                Ok((budget, tat, now))
            })
            .collect()
    }

    async fn delete_budget(&self, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM budgets WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn take_budget(&self, name: &str, max_wait_us: i64) -> StoreResult<Take> {
        let granted: Option<i64> = sqlx::query_scalar(&format!(
            "WITH n AS (SELECT {NOW_US} AS us)
             UPDATE budgets b SET tat_us = {START} + {INTERVAL}
             FROM n
             WHERE b.name = $1 AND {slot} - n.us <= $2
             RETURNING GREATEST(b.tat_us - b.burst * {INTERVAL}, COALESCE(b.paused_until, 0) * 1000) - n.us",
            slot = slot(),
        ))
        .bind(name)
        .bind(max_wait_us)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(wait) = granted {
            return Ok(Take::Granted {
                wait_us: wait.max(0),
            });
        }
        let needed: Option<i64> = sqlx::query_scalar(&format!(
            "WITH n AS (SELECT {NOW_US} AS us)
             SELECT {slot} - n.us FROM budgets b, n WHERE b.name = $1",
            slot = slot(),
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(needed.map_or(Take::Gone, |wait_us| Take::TooLong { wait_us }))
    }

    async fn budget_paused_until(&self, name: &str) -> StoreResult<Option<Timestamp>> {
        let until: Option<Option<i64>> =
            sqlx::query_scalar("SELECT paused_until FROM budgets WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(until.flatten().map(Timestamp))
    }

    async fn pause_budget(
        &self,
        name: &str,
        until: Timestamp,
        extend_only: bool,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE budgets SET updated_at = $4,
                 paused_until = CASE WHEN $3 AND paused_until > $2 THEN paused_until ELSE $2 END
             WHERE name = $1",
        )
        .bind(name)
        .bind(until.millis())
        .bind(extend_only)
        .bind(Timestamp::now().millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
