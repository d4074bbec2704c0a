//! Retention: with `--retention`, ended sagas (completed, rolled back,
//! failed) are deleted that long after they ended, with their ledger, pins
//! and resource history, in small batches so a sweep never holds the
//! database for long. The desired-state resource ledger keeps what they
//! provisioned. Unfinished sagas are never touched: which statuses are
//! ended is `SagaStatus::ended`, and a partial index on exactly those makes
//! the scan cheap. Every host sweeps; batches are disjoint (PostgreSQL
//! skips rows another host is deleting), so several hosts only share the
//! work.

use super::Runner;
use crate::store::StoreResult;

impl Runner {
    /// Deletes every saga that ended longer than the retention ago, a batch
    /// at a time; returns how many. Nothing without a retention.
    pub async fn sweep_retention(&self) -> StoreResult<usize> {
        let inner = &self.inner;
        let Some(retention) = inner.config.retention else {
            return Ok(0);
        };
        let batch = inner.config.retention_batch.max(1);
        let before = inner.clock.now().minus(retention);
        let mut total = 0;
        loop {
            let deleted = inner.store.delete_ended(before, batch).await?;
            total += deleted;
            if deleted < batch || inner.stop_all.is_cancelled() {
                break;
            }
            // Let other writers in between batches.
            tokio::task::yield_now().await;
        }
        if total > 0 {
            tracing::info!(deleted = total, "retention: deleted ended sagas");
        }
        Ok(total)
    }

    /// Sweeps every `retention_every` until shutdown.
    pub(super) async fn retention_loop(&self) {
        let inner = &self.inner;
        loop {
            if let Err(e) = self.sweep_retention().await {
                tracing::warn!(error = %e, "retention sweep failed; trying again later");
            }
            tokio::select! {
                _ = tokio::time::sleep(inner.config.retention_every) => {}
                _ = inner.stop_all.cancelled() => return,
            }
        }
    }
}
