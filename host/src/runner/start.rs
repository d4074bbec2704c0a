//! Starting a saga: the runner decides how it is stored (already claimed
//! and started by this host when a driving slot is free, else `pending` for
//! whichever host claims it) and drives it.
//!
//! The work runs in a task of its own, so it finishes whether or not the
//! caller (an HTTP request) still waits for the answer: a saga stored
//! claimed by this host is always driven, never left for its lease to
//! expire.

use super::Runner;
use super::decide;
use super::saga::Marked;
use crate::model::{SagaRun, SagaStatus};
use crate::store::{CreateSaga, NewSaga, StoreError};
use std::sync::atomic::Ordering;

/// Why a start did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the start was interrupted: {0}")]
    Interrupted(String),
}

impl Runner {
    /// Stores `saga` (with an idempotency key and the request's hash, when
    /// given) and has it driven: at once on this host when a slot is free,
    /// else by the next claim.
    pub async fn start_saga(
        &self,
        saga: SagaRun,
        idempotency: Option<(String, String)>,
    ) -> Result<CreateSaga, StartError> {
        let runner = self.clone();
        let task = tokio::spawn(async move { runner.store_and_drive(saga, idempotency).await });
        task.await
            .map_err(|e| StartError::Interrupted(e.to_string()))?
    }

    async fn store_and_drive(
        &self,
        mut saga: SagaRun,
        idempotency: Option<(String, String)>,
    ) -> Result<CreateSaga, StartError> {
        let inner = &self.inner;
        let permit = if inner.draining.load(Ordering::SeqCst) || saga.plan.is_empty() {
            None
        } else {
            inner.slots.clone().try_acquire_owned().ok()
        };
        let now = inner.clock.now();
        let lease = permit.as_ref().map(|_| self.lease());
        let mut ledger = Vec::new();
        if permit.is_some() {
            // Started here and now: running, its first step marked in the
            // same commit that stores it.
            saga.status = SagaStatus::Running;
            ledger.push(decide::first_mark(&saga, &inner.owner, now));
        }
        let created = inner
            .store
            .create_saga(NewSaga {
                saga,
                idempotency,
                lease,
                ledger,
                ready_at: Some(now),
            })
            .await?;
        match &created {
            CreateSaga::Created(claimed) => {
                crate::metrics::global().started(&claimed.saga.kind);
                inner.hub.publish(&claimed.saga, true, &claimed.ledger);
            }
            CreateSaga::Queued(saga) => {
                crate::metrics::global().started(&saga.kind);
                inner.hub.publish(saga, true, &[]);
            }
            _ => {}
        }
        match (&created, permit) {
            (CreateSaga::Created(claimed), Some(permit)) => {
                self.drive(claimed.clone(), permit, Some(Marked::first()));
            }
            // The store told the other hosts (where there are any).
            (CreateSaga::Created(_), None) => self.wake(),
            _ => {}
        }
        Ok(created)
    }
}
