//! Drift detection (docs/recovery.md): the desired-state ledger says what
//! sagas provisioned; a scan asks, for every `present` resource, the
//! plugin of the step that recorded it what is there now (its `observe`
//! export, contract 0.3.0), and marks each resource `none`, `changed`
//! (with an RFC 6902 diff from the recorded spec to the observed one),
//! `missing` or `unknown`.
//!
//! One `observe` call answers for all the resources one step recorded: it
//! is called with that step's `saga-state` (inputs, the saga's context, the
//! execute's idempotency key), and what it records with `record-resource`
//! is what it sees. A resource it does not record, or every resource when
//! it says `not-applied`, is missing. Calls run a few at a time under the
//! plugin's grants and limits, like any call. A resource recorded again
//! while the scan ran keeps its new record and gets no finding (the store
//! writes a finding only at the spec version it compared).
//!
//! The periodic scan (`--drift-scan-every`) needs no leader: each period
//! is taken by exactly one host through one conditional write
//! ([`crate::store::DriftStore::take_drift_scan`]).

use super::decide::View;
use super::{ActionError, Runner};
use crate::config::{DRIFT_SCAN_CALLS, DRIFT_SCAN_REPORTED};
use crate::model::{Drift, Phase, RecordedResource, Resource, ResourceState, SagaId};
use crate::plugin::{Observed, StepCall, StepFailure};
use crate::store::{DriftFinding, ResourceFilter};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// `POST /v1/resources/scan`: which present resources to scan (all
/// without a filter).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub saga_id: Option<SagaId>,
}

/// What a scan found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ScanReport {
    /// Present resources scanned.
    pub scanned: u64,
    /// `observe` calls made (one per step that recorded resources).
    pub observe_calls: u64,
    pub none: u64,
    pub changed: u64,
    pub missing: u64,
    pub unknown: u64,
    pub took_ms: u64,
    /// The resources found `changed` or `missing` (at most
    /// [`DRIFT_SCAN_REPORTED`]; `GET /v1/resources?drift=changed` lists
    /// all).
    pub drifted: Vec<Resource>,
}

/// What an `observe` call told of a step's execution.
enum Seen {
    /// It is there; these are the resources it recorded as they are now.
    Applied(Vec<RecordedResource>),
    NotApplied,
}

/// Present resources read per page, and findings written per batch.
const PAGE: u32 = 1_000;

/// What `observed` (the resources an `observe` call recorded, or `None`
/// when it said `not-applied`) says of `recorded`: its drift and, when it
/// changed, the patch from the recorded spec to the observed one.
pub fn compare(
    recorded: &Resource,
    observed: Option<&[RecordedResource]>,
) -> (Drift, Option<Value>) {
    let Some(seen) = observed.and_then(|seen| {
        seen.iter()
            .find(|r| r.kind == recorded.kind && r.external_id == recorded.external_id)
    }) else {
        return (Drift::Missing, None);
    };
    let patch = json_patch::diff(&recorded.spec, &seen.spec);
    if patch.0.is_empty() {
        (Drift::None, None)
    } else {
        let diff = serde_json::to_value(&patch).expect("a patch serializes");
        (Drift::Changed, Some(diff))
    }
}

impl Runner {
    /// Scans the present resources `request` selects; see the module.
    pub async fn scan_drift(&self, request: &ScanRequest) -> Result<ScanReport, ActionError> {
        let started = Instant::now();
        let store = &self.inner.store;
        let mut by_step: BTreeMap<(SagaId, u32), Vec<Resource>> = BTreeMap::new();
        let mut after = None;
        loop {
            let page = store
                .list_resources(&ResourceFilter {
                    kind: request.kind.clone(),
                    saga_id: request.saga_id,
                    state: Some(ResourceState::Present),
                    limit: PAGE,
                    after: after.take(),
                    ..ResourceFilter::default()
                })
                .await?;
            let full = page.len() == PAGE as usize;
            after = page.last().map(|r| (r.kind.clone(), r.external_id.clone()));
            for r in page {
                by_step
                    .entry((r.saga_id, r.step_index))
                    .or_default()
                    .push(r);
            }
            if !full {
                break;
            }
        }
        let mut report = ScanReport::default();
        let mut findings = Vec::new();
        let mut results = futures::stream::iter(by_step)
            .map(|((saga_id, index), resources)| async move {
                let seen = self.observe_step(saga_id, index).await;
                (resources, seen)
            })
            .buffer_unordered(DRIFT_SCAN_CALLS);
        while let Some((resources, seen)) = results.next().await {
            report.observe_calls += u64::from(seen.is_some());
            let now = self.now();
            for resource in resources {
                let (drift, diff) = match &seen {
                    Some(Seen::Applied(seen)) => compare(&resource, Some(seen)),
                    Some(Seen::NotApplied) => compare(&resource, None),
                    None => (Drift::Unknown, None),
                };
                report.scanned += 1;
                match drift {
                    Drift::None => report.none += 1,
                    Drift::Changed => report.changed += 1,
                    Drift::Missing => report.missing += 1,
                    Drift::Unknown => report.unknown += 1,
                }
                let finding = DriftFinding {
                    kind: resource.kind.clone(),
                    external_id: resource.external_id.clone(),
                    spec_version: resource.spec_version,
                    observed_at: now,
                    drift,
                    diff: diff.clone(),
                };
                if matches!(drift, Drift::Changed | Drift::Missing)
                    && report.drifted.len() < DRIFT_SCAN_REPORTED
                {
                    report.drifted.push(Resource {
                        observed_at: Some(now),
                        drift: Some(drift),
                        diff,
                        ..resource
                    });
                }
                findings.push(finding);
                if findings.len() >= PAGE as usize {
                    store.record_drift(&std::mem::take(&mut findings)).await?;
                }
            }
        }
        store.record_drift(&findings).await?;
        report.took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            scanned = report.scanned,
            changed = report.changed,
            missing = report.missing,
            unknown = report.unknown,
            took_ms = report.took_ms,
            "drift scan done"
        );
        Ok(report)
    }

    /// What the plugin of step `index` of saga `saga_id` observes of the
    /// execution that recorded its resources: `Applied` with the
    /// resources it recorded now, `NotApplied`, or `None` when it cannot
    /// tell (no `observe`, `unknown`, a failed call, the saga gone).
    async fn observe_step(&self, saga_id: SagaId, index: u32) -> Option<Seen> {
        let detail = self.inner.store.saga(saga_id).await.ok()??;
        let saga = detail.saga;
        let spec = saga.plan.get(index as usize)?.clone();
        let ledger = detail.steps.into_iter().map(|r| (r.index, r)).collect();
        let view = View {
            saga: &saga,
            ledger: &ledger,
            slots_held: true,
        };
        let (plugin, limits, access) = self.call_setup(&spec).await.ok()?;
        if !plugin.observes() {
            return None;
        }
        let call = StepCall {
            saga_id: saga.id.to_string(),
            kind: saga.kind.clone(),
            step_index: index,
            attempt: view.attempts(index, Phase::Execute).max(1),
            idempotency_key: view.idempotency_key(index, Phase::Execute),
            inputs: saga.inputs.to_string(),
            context: Value::Object(saga.context.clone()).to_string(),
            received: None,
            traceparent: None,
        };
        let outcome = self
            .inner
            .plugins
            .observe(&plugin, call, &limits, CancellationToken::new(), access)
            .await;
        crate::metrics::global().call(
            &spec.name,
            "observe",
            super::decide::observe_label(&outcome.result),
            outcome.elapsed,
        );
        match outcome.result {
            Ok(Observed::Applied(_)) => Some(Seen::Applied(outcome.resources)),
            Ok(Observed::NotApplied) => Some(Seen::NotApplied),
            Ok(Observed::Unknown) => None,
            Err(failure) => {
                log_failure(saga_id, index, &failure);
                None
            }
        }
    }

    /// Runs the scan every `every`, on whichever host takes each period
    /// first (`take_drift_scan`); until the runner stops.
    pub(super) async fn drift_scan_loop(self, every: Duration) {
        let every_ms = every.as_millis().max(1) as i64;
        loop {
            let now = self.now().millis();
            let next = (now / every_ms + 1) * every_ms;
            let sleep = Duration::from_millis((next - now) as u64);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.inner.stop_all.cancelled() => return,
            }
            let period = self.now().millis() / every_ms;
            match self.inner.store.take_drift_scan(period).await {
                Ok(true) => {
                    if let Err(e) = self.scan_drift(&ScanRequest::default()).await {
                        tracing::warn!(error = %e, "periodic drift scan");
                    }
                }
                Ok(false) => tracing::debug!(period, "another host runs this drift scan"),
                Err(e) => tracing::warn!(error = %e, "taking the periodic drift scan"),
            }
        }
    }
}

fn log_failure(saga_id: SagaId, index: u32, failure: &StepFailure) {
    tracing::info!(saga = %saga_id, step = index, error = %failure, "observe failed in a drift scan; unknown");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;
    use serde_json::json;

    fn recorded(spec: Value) -> Resource {
        Resource {
            kind: "droplet".into(),
            external_id: "d-1".into(),
            spec,
            spec_version: 1,
            saga_id: SagaId::new(),
            step_index: 0,
            deployment_id: None,
            state: ResourceState::Present,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            observed_at: None,
            drift: None,
            diff: None,
        }
    }

    fn seen(id: &str, spec: Value) -> RecordedResource {
        RecordedResource {
            kind: "droplet".into(),
            external_id: id.into(),
            spec,
        }
    }

    #[test]
    fn a_resource_is_as_recorded_changed_with_a_patch_or_missing() {
        let r = recorded(json!({"size": "s-1", "tags": ["a"]}));
        let same = [seen("d-1", json!({"size": "s-1", "tags": ["a"]}))];
        assert_eq!(compare(&r, Some(&same)), (Drift::None, None));
        let resized = [seen("d-1", json!({"size": "s-2", "tags": ["a"]}))];
        assert_eq!(
            compare(&r, Some(&resized)),
            (
                Drift::Changed,
                Some(json!([{"op": "replace", "path": "/size", "value": "s-2"}]))
            )
        );
        let other = [seen("d-2", json!({"size": "s-1", "tags": ["a"]}))];
        assert_eq!(compare(&r, Some(&other)), (Drift::Missing, None));
        assert_eq!(compare(&r, None), (Drift::Missing, None));
    }
}
