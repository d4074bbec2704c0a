//! Provider budgets on this host (docs/flow-control.md): the gate every
//! step's request to a budgeted origin passes (`plugin::outbound::BudgetGate`),
//! over the rows every host shares (`store::BudgetStore`). Which budget
//! covers an origin is read from a copy of the budgets at most
//! [`OutboundConfig::budgets_refresh`](crate::config::OutboundConfig) old (a put or
//! delete on this host refreshes it at once); the tokens and pauses are
//! always the database's. A wait for a token sleeps here, never in the
//! database, and never past the call's deadline.

use crate::model::{Budget, Origin, Timestamp};
use crate::plugin::outbound::BudgetGate;
use crate::store::{Store, Take};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The gate of one host.
pub struct Budgets {
    store: Arc<dyn Store>,
    refresh: Duration,
    known: Mutex<Option<(Instant, Arc<Vec<Budget>>)>>,
    /// Requests waiting for a token now, by budget.
    waiting: Mutex<HashMap<String, u64>>,
}

impl Budgets {
    pub fn new(store: Arc<dyn Store>, refresh: Duration) -> Budgets {
        Budgets {
            store,
            refresh,
            known: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets the copy: the next request reads the budgets again.
    pub fn changed(&self) {
        *self.known.lock().expect("budgets lock") = None;
    }

    /// Requests of this host waiting for a token of `name` now.
    pub fn waiting(&self, name: &str) -> u64 {
        self.waiting
            .lock()
            .expect("budgets lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    async fn known(&self) -> Arc<Vec<Budget>> {
        if let Some((at, list)) = &*self.known.lock().expect("budgets lock")
            && at.elapsed() < self.refresh
        {
            return list.clone();
        }
        match self.store.list_budgets().await {
            Ok(rows) => {
                let list = Arc::new(rows.into_iter().map(|(b, _, _)| b).collect::<Vec<_>>());
                *self.known.lock().expect("budgets lock") = Some((Instant::now(), list.clone()));
                list
            }
            Err(e) => {
                // The last copy, if any: a database hiccup must not lift
                // every budget.
                tracing::warn!(error = %e, "reading the provider budgets");
                self.known
                    .lock()
                    .expect("budgets lock")
                    .as_ref()
                    .map(|(_, list)| list.clone())
                    .unwrap_or_default()
            }
        }
    }

    fn count_waiting(&self, name: &str, by: i64) {
        let mut waiting = self.waiting.lock().expect("budgets lock");
        let n = waiting.entry(name.to_string()).or_default();
        *n = n.saturating_add_signed(by);
    }
}

#[async_trait::async_trait]
impl BudgetGate for Budgets {
    async fn covering(&self, origin: &Origin) -> Option<Budget> {
        self.known()
            .await
            .iter()
            .find(|b| b.covers(origin))
            .cloned()
    }

    async fn take(&self, budget: &Budget, max_wait: Duration) -> Result<Duration, String> {
        let began = Instant::now();
        loop {
            let left = max_wait.saturating_sub(began.elapsed());
            let wait = self.take_once(budget, left).await?;
            if wait.is_zero() {
                return Ok(began.elapsed());
            }
            self.count_waiting(&budget.name, 1);
            tokio::time::sleep(wait).await;
            self.count_waiting(&budget.name, -1);
            // A pause set while this request slept (a 429 on any host)
            // holds it back too: its slot was taken before the pause, so
            // it takes another, which waits the pause out.
            match self.store.budget_paused_until(&budget.name).await {
                Ok(Some(until)) if until > Timestamp::now() => continue,
                Ok(_) => return Ok(began.elapsed()),
                Err(e) => {
                    tracing::warn!(error = %e, budget = %budget.name, "reading a budget's pause");
                    return Ok(began.elapsed());
                }
            }
        }
    }

    async fn pause(&self, budget: &Budget, until: Timestamp) {
        if let Err(e) = self.store.pause_budget(&budget.name, until, true).await {
            tracing::warn!(error = %e, budget = %budget.name, "pausing a budget");
        }
    }
}

impl Budgets {
    /// Takes one token of `budget` within `max_wait`: how long to wait for
    /// its slot.
    async fn take_once(&self, budget: &Budget, max_wait: Duration) -> Result<Duration, String> {
        let max_us = max_wait.as_micros().min(i64::MAX as u128) as i64;
        match self.store.take_budget(&budget.name, max_us).await {
            Ok(Take::Granted { wait_us }) => Ok(Duration::from_micros(wait_us.max(0) as u64)),
            Ok(Take::TooLong { wait_us }) => Err(format!(
                "budget {} has no token within the call's deadline (the next in {} ms)",
                budget.name,
                wait_us.max(0) / 1000
            )),
            // Deleted meanwhile: nothing limits the request any more.
            Ok(Take::Gone) => {
                self.changed();
                Ok(Duration::ZERO)
            }
            Err(e) => {
                tracing::warn!(error = %e, budget = %budget.name, "taking a budget's token");
                Err(format!(
                    "budget {} could not be read; the request was not sent",
                    budget.name
                ))
            }
        }
    }
}
