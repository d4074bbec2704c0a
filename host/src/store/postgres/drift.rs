//! Drift findings and the periodic scan's turn on PostgreSQL
//! (`store::drift`): the turn is one conditional upsert of one row, so of
//! hosts racing for a period exactly one sees its row written.

use super::*;
use crate::store::drift::{DriftFinding, DriftStore};

#[async_trait]
impl DriftStore for PgStore {
    async fn record_drift(&self, findings: &[DriftFinding]) -> StoreResult<u64> {
        if findings.is_empty() {
            return Ok(0);
        }
        let rows: Vec<serde_json::Value> = findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "kind": f.kind,
                    "external_id": f.external_id,
                    "spec_version": f.spec_version,
                    "observed_at": f.observed_at.millis(),
                    "drift": f.drift.as_str(),
                    "drift_diff": f.diff.as_ref().map(to_json),
                })
            })
            .collect();
        let done = sqlx::query(
            "UPDATE resources r SET observed_at = f.observed_at, drift = f.drift, drift_diff = f.drift_diff
             FROM jsonb_to_recordset($1::jsonb) AS f(kind TEXT, external_id TEXT, spec_version BIGINT,
                 observed_at BIGINT, drift TEXT, drift_diff TEXT)
             WHERE r.kind = f.kind AND r.external_id = f.external_id
               AND r.spec_version = f.spec_version AND r.state = 'present'",
        )
        .bind(serde_json::Value::Array(rows))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn take_drift_scan(&self, period: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO drift_scans (id, period) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET period = excluded.period
             WHERE drift_scans.period < excluded.period",
        )
        .bind(period)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
