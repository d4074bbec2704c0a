//! Drift findings and the periodic scan's turn on SQLite (`store::drift`).

use super::*;
use crate::store::drift::{DriftFinding, DriftStore};

#[async_trait]
impl DriftStore for SqliteStore {
    async fn record_drift(&self, findings: &[DriftFinding]) -> StoreResult<u64> {
        let findings = findings.to_vec();
        self.writer
            .write(move |conn| {
                let mut update = conn.prepare_cached(
                    "UPDATE resources SET observed_at = ?1, drift = ?2, drift_diff = ?3
                     WHERE kind = ?4 AND external_id = ?5 AND spec_version = ?6 AND state = 'present'",
                )?;
                let mut written = 0;
                for f in &findings {
                    written += update.execute(params![
                        f.observed_at.millis(),
                        f.drift.as_str(),
                        f.diff.as_ref().map(to_json),
                        f.kind,
                        f.external_id,
                        f.spec_version as i64,
                    ])? as u64;
                }
                Ok(written)
            })
            .await
    }

    async fn take_drift_scan(&self, period: i64) -> StoreResult<bool> {
        self.writer
            .write(move |conn| {
                let taken = conn
                    .prepare_cached(
                        "INSERT INTO drift_scans (id, period) VALUES (1, ?1)
                         ON CONFLICT (id) DO UPDATE SET period = excluded.period
                         WHERE drift_scans.period < excluded.period",
                    )?
                    .execute(params![period])?;
                Ok(taken == 1)
            })
            .await
    }
}
