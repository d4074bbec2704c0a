//! What Prometheus scrapes at `/metrics`: saga, step, store and outbound
//! HTTP series (names in docs/design.md), through `prometheus-client`.
//!
//! One registry per process ([`global`]): a process runs one host, and the
//! places that count (the runner, the plugin sandbox) are far apart, so a
//! process-wide registry spares threading a handle through every call. The
//! two gauges are read at scrape time from the host that answers (its
//! runner and its store), never kept in step with every change.
//! Histogram buckets cover step calls from 100 µs to 10 minutes, and
//! commits from 100 µs to 10 s.
//!
//! A saga's `kind` is free text an operator chooses, so it never reaches
//! the exposition as given: [`kind_label`] keeps a safe charset (so no
//! label can close its quotes and add series) and at most
//! [`MAX_KIND_LABELS`] distinct kinds (later ones count under `other`), so
//! a client cannot grow the scrape without end.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Distinct saga kinds kept as labels; later kinds count under `other`.
pub const MAX_KIND_LABELS: usize = 100;

/// The label a saga kind is counted under: its characters outside
/// `[A-Za-z0-9_.:-]` become `_` (at most 64 kept), and past
/// [`MAX_KIND_LABELS`] distinct labels a new one is `other`.
pub fn kind_label(kind: &str) -> String {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    bounded_label(&SEEN, kind)
}

/// The label a concurrency key's prefix (the key up to its first `:`) is
/// counted under, bounded as [`kind_label`] is (its own set of labels).
pub fn key_prefix_label(key: &str) -> String {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    bounded_label(&SEEN, crate::model::key_prefix(key))
}

/// A budget's name as a label (names are an admin's, but bounded all the
/// same).
pub fn budget_label(name: &str) -> String {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    bounded_label(&SEEN, name)
}

fn bounded_label(seen: &OnceLock<Mutex<HashSet<String>>>, text: &str) -> String {
    let safe: String = text
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut seen = seen
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if seen.contains(&safe) {
        return safe;
    }
    if seen.len() >= MAX_KIND_LABELS {
        return "other".into();
    }
    seen.insert(safe.clone());
    safe
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    pub budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyPrefixLabel {
    pub key_prefix: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub kind: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub plugin: String,
    pub phase: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub plugin: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub plugin: String,
    /// The response's status class (`2xx`...), `refused`, or `error`.
    pub outcome: String,
}

/// Buckets of a step call, in seconds: 100 µs to 10 minutes.
const CALL_BUCKETS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 30.0, 60.0, 180.0, 600.0,
];
/// Buckets of a store commit, in seconds: 100 µs to 10 s.
const COMMIT_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

/// Histograms by a label set, with the call buckets.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
type CallHistograms = Histograms<PhaseLabels>;

/// Every series.
pub struct Metrics {
    registry: Registry,
    pub sagas_started: Family<KindLabel, Counter>,
    pub sagas_finished: Family<FinishedLabels, Counter>,
    pub sagas_in_flight: Gauge,
    pub sagas_pending: Gauge,
    /// Sagas `in_doubt`, waiting for a human (docs/recovery.md); read at
    /// scrape time.
    pub sagas_in_doubt: Gauge,
    /// Waits open on the database, and messages kept for waits to come
    /// (docs/waits.md); read at scrape time.
    pub waits_open: Gauge,
    pub messages_kept: Gauge,
    pub step_calls: Family<CallLabels, Counter>,
    pub step_call_duration: CallHistograms,
    pub step_retries: Family<PluginLabel, Counter>,
    pub store_commit_duration: Histogram,
    pub lease_takeovers: Counter,
    /// Calls the watchdog gave up on: they passed their deadline by the
    /// grace without returning (`runner` says why that can happen).
    pub calls_abandoned: Counter,
    /// Of those, the calls that have not returned yet: each holds a Wasm
    /// thread. A host with as many as it has Wasm threads claims nothing.
    pub calls_stuck: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub concurrency_queued: Family<KeyPrefixLabel, Gauge>,
    pub budget_wait: Histograms<BudgetLabel>,
    pub budget_paused: Family<BudgetLabel, Gauge>,
    /// Schedule fires this host acted on, by outcome.
    pub schedule_fires: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wasaga");
        let m = Metrics {
            sagas_started: Family::default(),
            sagas_finished: Family::default(),
            sagas_in_flight: Gauge::default(),
            sagas_pending: Gauge::default(),
            sagas_in_doubt: Gauge::default(),
            waits_open: Gauge::default(),
            messages_kept: Gauge::default(),
            step_calls: Family::default(),
            step_call_duration: Family::new_with_constructor(call_histogram),
            step_retries: Family::default(),
            store_commit_duration: Histogram::new(COMMIT_BUCKETS),
            lease_takeovers: Counter::default(),
            calls_abandoned: Counter::default(),
            calls_stuck: Gauge::default(),
            http_requests: Family::default(),
            concurrency_queued: Family::default(),
            budget_wait: Family::new_with_constructor(call_histogram),
            budget_paused: Family::default(),
            schedule_fires: Family::default(),
            registry: Registry::default(),
        };
        registry.register("sagas_started", "Sagas started", m.sagas_started.clone());
        registry.register(
            "sagas_finished",
            "Sagas that ended, by final status",
            m.sagas_finished.clone(),
        );
        registry.register(
            "sagas_in_flight",
            "Sagas this host is driving now",
            m.sagas_in_flight.clone(),
        );
        registry.register(
            "sagas_in_doubt",
            "Sagas in_doubt: an at_most_once step's call was cut short, and a human resolves it",
            m.sagas_in_doubt.clone(),
        );
        registry.register(
            "sagas_pending",
            "Sagas started and not yet taken by any host",
            m.sagas_pending.clone(),
        );
        registry.register(
            "waits_open",
            "Waits (plan elements) open now, on every host of the database",
            m.waits_open.clone(),
        );
        registry.register(
            "messages_kept",
            "Messages kept for a wait that has not opened yet",
            m.messages_kept.clone(),
        );
        registry.register(
            "step_calls",
            "Plugin calls made, by outcome (ok, poll, retryable, fatal, interrupted)",
            m.step_calls.clone(),
        );
        registry.register_with_unit(
            "step_call_duration",
            "Time of one plugin call",
            prometheus_client::registry::Unit::Seconds,
            m.step_call_duration.clone(),
        );
        registry.register(
            "step_retries",
            "Retries scheduled after a retryable failure",
            m.step_retries.clone(),
        );
        registry.register_with_unit(
            "store_commit_duration",
            "Time of one transition's commit",
            prometheus_client::registry::Unit::Seconds,
            m.store_commit_duration.clone(),
        );
        registry.register(
            "lease_takeovers",
            "Sagas taken over with a call cut short by another host's (or a previous run's) end",
            m.lease_takeovers.clone(),
        );
        registry.register(
            "calls_abandoned",
            "Calls that passed their deadline by the grace without returning: their saga's lease was given up so another host (or this one) takes it over",
            m.calls_abandoned.clone(),
        );
        registry.register(
            "calls_stuck",
            "Calls the watchdog gave up that have not returned: each holds a Wasm thread; with all of them held the host claims no saga",
            m.calls_stuck.clone(),
        );
        registry.register(
            "http_requests",
            "Outbound HTTP requests of plugins, by outcome",
            m.http_requests.clone(),
        );
        registry.register(
            "concurrency_queued",
            "Sagas queued for a concurrency key, by the key up to its first `:` (read at scrape time from the database)",
            m.concurrency_queued.clone(),
        );
        registry.register_with_unit(
            "budget_wait",
            "Time a step's request waited for a provider budget's token",
            prometheus_client::registry::Unit::Seconds,
            m.budget_wait.clone(),
        );
        registry.register(
            "budget_paused",
            "1 while a provider budget is paused (a 429 or Retry-After, or by hand), read at scrape time",
            m.budget_paused.clone(),
        );
        registry.register(
            "schedule_fires",
            "Schedule fires this host acted on, by outcome (started, buffered, skipped, missed, failed)",
            m.schedule_fires.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a schedule's fire.
    pub fn schedule_fired(&self, outcome: crate::model::FireOutcome) {
        self.schedule_fires
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().to_string(),
            })
            .inc();
    }

    /// Counts a request's wait for a budget's token.
    pub fn budget_waited(&self, budget: &str, waited: Duration) {
        self.budget_wait
            .get_or_create(&BudgetLabel {
                budget: budget_label(budget),
            })
            .observe(waited.as_secs_f64());
    }

    /// Sets the paused gauge of every budget (read from the database).
    pub fn set_budgets_paused(&self, paused: &[(String, bool)]) {
        self.budget_paused.clear();
        for (name, is_paused) in paused {
            self.budget_paused
                .get_or_create(&BudgetLabel {
                    budget: budget_label(name),
                })
                .set(i64::from(*is_paused));
        }
    }

    /// Sets the queued gauge from counts per key prefix (every host's
    /// sagas, as the database has them); a prefix with none queued leaves
    /// the exposition.
    pub fn set_concurrency_queued(&self, counts: &[(String, u64)]) {
        self.concurrency_queued.clear();
        for (prefix, n) in counts {
            self.concurrency_queued
                .get_or_create(&KeyPrefixLabel {
                    key_prefix: key_prefix_label(prefix),
                })
                .inc_by(*n as i64);
        }
    }

    /// The text exposition format (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        text
    }

    /// Counts a finished plugin call.
    pub fn call(&self, plugin: &str, phase: &str, outcome: &str, took: Duration) {
        self.step_calls
            .get_or_create(&CallLabels {
                plugin: plugin.into(),
                phase: phase.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.step_call_duration
            .get_or_create(&PhaseLabels {
                plugin: plugin.into(),
                phase: phase.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn retry(&self, plugin: &str) {
        self.step_retries
            .get_or_create(&PluginLabel {
                plugin: plugin.into(),
            })
            .inc();
    }

    pub fn http(&self, plugin: &str, outcome: &str) {
        self.http_requests
            .get_or_create(&HttpLabels {
                plugin: plugin.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn started(&self, kind: &str) {
        self.sagas_started
            .get_or_create(&KindLabel {
                kind: kind_label(kind),
            })
            .inc();
    }

    pub fn finished(&self, kind: &str, status: &str) {
        self.sagas_finished
            .get_or_create(&FinishedLabels {
                kind: kind_label(kind),
                status: status.into(),
            })
            .inc();
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_cannot_break_the_exposition() {
        let label = kind_label("x\"} 1\nwasaga_sagas_in_flight 424242\n#");
        assert!(
            label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)),
            "{label}"
        );
        assert_eq!(kind_label("provision"), "provision");
    }
}
