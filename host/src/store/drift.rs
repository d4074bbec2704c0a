//! What drift scans write (docs/recovery.md): each scanned resource's
//! finding, and the one row through which hosts sharing a database agree
//! that exactly one of them runs the periodic scan of each period, with no
//! leader. A [`Store`](super::Store) is a [`DriftStore`].

use super::StoreResult;
use crate::model::{Drift, Timestamp};
use async_trait::async_trait;
use serde_json::Value;

/// What a scan found of one resource, at the spec version it compared.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftFinding {
    pub kind: String,
    pub external_id: String,
    /// The recorded spec's version the finding is about: a resource
    /// recorded again since keeps its new record and no finding.
    pub spec_version: u32,
    pub observed_at: Timestamp,
    pub drift: Drift,
    /// RFC 6902 JSON Patch, for `changed`.
    pub diff: Option<Value>,
}

#[async_trait]
pub trait DriftStore: Send + Sync {
    /// Writes the findings of resources still `present` at their spec
    /// version; answers how many were written.
    async fn record_drift(&self, findings: &[DriftFinding]) -> StoreResult<u64>;

    /// Takes the periodic scan of `period` (the scan's start divided by
    /// its interval): `true` for exactly one caller per period across
    /// every host on this database, `false` for the rest, and for a
    /// period at or before one already taken.
    async fn take_drift_scan(&self, period: i64) -> StoreResult<bool>;
}
