//! Provider budgets' persistence (docs/flow-control.md): one row per
//! budget, shared by every host on the database. Taking a token is one
//! conditional `UPDATE` of the row's GCRA arrival time (`tat_us`), so there
//! is no refill job and no lock held across a request; a pause moves
//! `paused_until`, which every later take waits out. A
//! [`Store`](super::Store) is a [`BudgetStore`]; each backend implements it
//! in its own `budgets` module.

use super::StoreResult;
use crate::model::{Budget, Origin, Timestamp};
use async_trait::async_trait;

/// What putting a budget did.
#[derive(Debug, Clone, PartialEq)]
pub enum PutBudget {
    Created(Budget),
    Updated(Budget),
    /// Its origins overlap another budget's: nothing stored.
    Overlaps {
        other: String,
        ours: Origin,
        theirs: Origin,
    },
}

/// What taking a token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Taken: go out after waiting this many microseconds (0: at once).
    Granted { wait_us: i64 },
    /// The next token comes later than the caller may wait: nothing taken.
    TooLong { wait_us: i64 },
    /// No such budget any more.
    Gone,
}

/// Budgets and their tokens.
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Creates or replaces the budget of that name (its tokens and pause
    /// kept), unless its origins overlap another budget's.
    async fn put_budget(&self, budget: &Budget) -> StoreResult<PutBudget>;
    /// Every budget by name, with its arrival time (µs) and the database's
    /// clock now (µs).
    async fn list_budgets(&self) -> StoreResult<Vec<(Budget, i64, i64)>>;
    async fn delete_budget(&self, name: &str) -> StoreResult<bool>;
    /// Takes a token of `name` if one comes within `max_wait_us`.
    async fn take_budget(&self, name: &str, max_wait_us: i64) -> StoreResult<Take>;
    /// Until when `name` is paused (`None`: not paused, or no such
    /// budget).
    async fn budget_paused_until(&self, name: &str) -> StoreResult<Option<Timestamp>>;
    /// No token of `name` before `until`; `extend_only` (a provider's
    /// `Retry-After`) never shortens a pause already set. False when there
    /// is no such budget.
    async fn pause_budget(
        &self,
        name: &str,
        until: Timestamp,
        extend_only: bool,
    ) -> StoreResult<bool>;
}

/// The budget columns, in [`BudgetRow`]'s order.
pub(crate) const BUDGET_COLUMNS: &str =
    "name, origins, rate, per, per_ms, burst, tat_us, paused_until, created_at, updated_at";

/// A budget row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct BudgetRow {
    pub name: String,
    pub origins: String,
    pub rate: i64,
    pub per: String,
    pub per_ms: i64,
    pub burst: i64,
    pub tat_us: i64,
    pub paused_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl BudgetRow {
    pub(crate) fn into_budget(self) -> StoreResult<(Budget, i64)> {
        Ok((
            Budget {
                origins: super::from_json("budget origins", &self.origins)?,
                name: self.name,
                rate: self.rate as u32,
                per: self.per,
                per_ms: self.per_ms as u64,
                burst: self.burst as u32,
                paused_until: self.paused_until.map(Timestamp),
                created_at: Timestamp(self.created_at),
                updated_at: Timestamp(self.updated_at),
            },
            self.tat_us,
        ))
    }
}

/// The first budget among `others` (not `name`) whose origins overlap
/// `budget`'s.
pub(crate) fn overlap(budget: &Budget, others: &[Budget]) -> Option<PutBudget> {
    others
        .iter()
        .filter(|o| o.name != budget.name)
        .find_map(|o| {
            budget
                .overlaps(o)
                .map(|(ours, theirs)| PutBudget::Overlaps {
                    other: o.name.clone(),
                    ours,
                    theirs,
                })
        })
}
