//! Provider budgets on SQLite (`store::budgets` says what they are): one
//! row each, changed by the one writer; the clock is this host's (the
//! file belongs to one process).

use super::*;
use crate::model::Budget;
use crate::store::budgets::{BUDGET_COLUMNS, BudgetRow, BudgetStore, PutBudget, Take, overlap};

fn budget_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BudgetRow> {
    Ok(BudgetRow {
        name: r.get(0)?,
        origins: r.get(1)?,
        rate: r.get(2)?,
        per: r.get(3)?,
        per_ms: r.get(4)?,
        burst: r.get(5)?,
        tat_us: r.get(6)?,
        paused_until: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

fn now_us() -> i64 {
    Timestamp::now().millis() * 1000
}

/// The latest of the arrival time, now (`?1`) and the pause; and the
/// interval between two requests, in µs.
const START: &str = "MAX(tat_us, ?1, COALESCE(paused_until, 0) * 1000)";
const INTERVAL: &str = "MAX((per_ms * 1000) / rate, 1)";
/// When the token now being taken may go out: its place in the rate (a
/// burst may go ahead of the arrival time), never before a pause ends.
fn slot() -> String {
    format!("MAX({START} - (burst - 1) * {INTERVAL}, COALESCE(paused_until, 0) * 1000)")
}

#[async_trait]
impl BudgetStore for SqliteStore {
    async fn put_budget(&self, budget: &Budget) -> StoreResult<PutBudget> {
        let budget = budget.clone();
        self.writer
            .write(move |conn| {
                let all: Vec<Budget> = conn
                    .prepare_cached(&format!("SELECT {BUDGET_COLUMNS} FROM budgets"))?
                    .query_map([], budget_row)?
                    .map(|r| Ok(r?.into_budget()?.0))
                    .collect::<StoreResult<_>>()?;
                if let Some(overlaps) = overlap(&budget, &all) {
                    return Ok(overlaps);
                }
                let existed = all.iter().any(|b| b.name == budget.name);
                conn.prepare_cached(&format!(
                    "INSERT INTO budgets ({BUDGET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0, NULL, ?, ?)
                     ON CONFLICT (name) DO UPDATE SET origins = excluded.origins, rate = excluded.rate,
                         per = excluded.per, per_ms = excluded.per_ms, burst = excluded.burst,
                         updated_at = excluded.updated_at"
                ))?
                .execute(params![
                    budget.name,
                    to_json(&budget.origins),
                    i64::from(budget.rate),
                    budget.per,
                    budget.per_ms as i64,
                    i64::from(budget.burst),
                    budget.created_at.millis(),
                    budget.updated_at.millis(),
                ])?;
                Ok(if existed {
                    PutBudget::Updated(budget)
                } else {
                    PutBudget::Created(budget)
                })
            })
            .await
    }

    async fn list_budgets(&self) -> StoreResult<Vec<(Budget, i64, i64)>> {
        let rows: Vec<BudgetRow> = sqlx::query_as(&format!(
            "SELECT {BUDGET_COLUMNS} FROM budgets ORDER BY name"
        ))
        .fetch_all(&self.reads)
        .await?;
        let now = now_us();
        rows.into_iter()
            .map(|r| {
                let (budget, tat) = r.into_budget()?;
                Ok((budget, tat, now))
            })
            .collect()
    }

    async fn delete_budget(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        self.writer
            .write(move |conn| {
                Ok(conn
                    .prepare_cached("DELETE FROM budgets WHERE name = ?")?
                    .execute([name])?
                    > 0)
            })
            .await
    }

    async fn take_budget(&self, name: &str, max_wait_us: i64) -> StoreResult<Take> {
        let name = name.to_string();
        self.writer
            .write(move |conn| {
                let now = now_us();
                let granted: Option<i64> = conn
                    .prepare_cached(&format!(
                        "UPDATE budgets SET tat_us = {START} + {INTERVAL}
                         WHERE name = ?2 AND {slot} - ?1 <= ?3
                         RETURNING MAX(tat_us - burst * {INTERVAL}, COALESCE(paused_until, 0) * 1000) - ?1",
                        slot = slot(),
                    ))?
                    .query_row(params![now, name, max_wait_us], |r| r.get(0))
                    .optional()?;
                if let Some(wait) = granted {
                    return Ok(Take::Granted {
                        wait_us: wait.max(0),
                    });
                }
                let needed: Option<i64> = conn
                    .prepare_cached(&format!(
                        "SELECT {slot} - ?1 FROM budgets WHERE name = ?2",
                        slot = slot(),
                    ))?
                    .query_row(params![now, name], |r| r.get(0))
                    .optional()?;
                Ok(needed.map_or(Take::Gone, |wait_us| Take::TooLong { wait_us }))
            })
            .await
    }

    async fn budget_paused_until(&self, name: &str) -> StoreResult<Option<Timestamp>> {
        let until: Option<Option<i64>> =
            sqlx::query_scalar("SELECT paused_until FROM budgets WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.reads)
                .await?;
        Ok(until.flatten().map(Timestamp))
    }

    async fn pause_budget(
        &self,
        name: &str,
        until: Timestamp,
        extend_only: bool,
    ) -> StoreResult<bool> {
        let name = name.to_string();
        self.writer
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE budgets SET updated_at = ?4,
                             paused_until = CASE WHEN ?3 AND paused_until > ?2 THEN paused_until ELSE ?2 END
                         WHERE name = ?1",
                    )?
                    .execute(params![name, until.millis(), extend_only, Timestamp::now().millis()])?
                    > 0)
            })
            .await
    }
}
