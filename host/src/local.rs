//! Running a plugin on this machine, without a server: one call (`wasaga
//! plugin run`) and the conformance check (`wasaga plugin test`).
//!
//! Both use the server's own runtime: the component is prepared by the
//! same `PluginHost::prepare` as an upload (so a file that is not a
//! component, or exports the wrong world, gets the upload's message), and
//! called with the same default limits, WASI and sandbox, granted nothing
//! (no network, no secrets). What passes here behaves the same in a saga.
//!
//! The check catches the classic saga bugs before a step runs for real: an
//! execute that is not idempotent (its second call with one key records
//! other resources), a compensate that is not safe to repeat, one that
//! assumes execute ran, and outputs the host would refuse.

use crate::config::RuntimeConfig;
use crate::grants::Access;
use crate::model::{LogLine, Phase, RecordedResource};
use crate::plugin::{
    CallOutcome, Observed, Plugin, PluginError, PluginHost, Progress, StepCall, StepFailure,
};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Plugin(#[from] PluginError),
}

/// A component loaded for local calls.
pub struct Local {
    host: PluginHost,
    plugin: Arc<Plugin>,
}

/// One call's result, as `plugin run` prints it.
#[derive(Debug, Serialize)]
pub struct CallReport {
    pub phase: Phase,
    pub attempt: u32,
    /// `ok`, `poll`, `wait`, `retryable` or `fatal`.
    pub outcome: &'static str,
    pub output: Option<Map<String, Value>>,
    /// For `poll`: when to call again, in milliseconds.
    pub poll_after_ms: Option<u64>,
    /// For `wait` (contract 0.3.0): the name of the wait it opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<String>,
    pub error: Option<String>,
    pub logs: Vec<LogLine>,
    pub resources: Vec<RecordedResource>,
    pub elapsed_ms: f64,
    /// It failed on a limit (deadline, memory, fuel).
    #[serde(skip)]
    pub limited: bool,
}

/// One line of the conformance check.
#[derive(Debug, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub ok: bool,
    /// Why it failed, or what was seen.
    pub detail: String,
}

impl Local {
    /// Loads a component as an upload would.
    pub async fn load(path: &Path) -> Result<Local, LocalError> {
        let bytes = std::fs::read(path).map_err(|source| LocalError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let host = PluginHost::new(RuntimeConfig {
            max_instances: 4,
            ..RuntimeConfig::default()
        })?;
        let plugin = host.prepare(&bytes).await?;
        Ok(Local { host, plugin })
    }

    pub fn name(&self) -> &str {
        &self.plugin.name
    }

    pub fn contract(&self) -> &'static str {
        self.plugin.contract.as_str()
    }

    /// One call, with the default limits and nothing granted.
    pub async fn call(
        &self,
        phase: Phase,
        inputs: &Map<String, Value>,
        context: &Map<String, Value>,
        attempt: u32,
        key: &str,
    ) -> CallReport {
        self.call_received(phase, inputs, context, attempt, key, None)
            .await
    }

    /// [`Local::call`], with `received`: the payload (JSON text) of the
    /// wait the step opened (contract 0.3.0), as the host passes it on
    /// the call after the wait is answered.
    pub async fn call_received(
        &self,
        phase: Phase,
        inputs: &Map<String, Value>,
        context: &Map<String, Value>,
        attempt: u32,
        key: &str,
        received: Option<String>,
    ) -> CallReport {
        let call = StepCall {
            saga_id: "local".into(),
            kind: "local".into(),
            step_index: 0,
            attempt,
            idempotency_key: key.into(),
            inputs: Value::Object(inputs.clone()).to_string(),
            context: Value::Object(context.clone()).to_string(),
            received,
            traceparent: None,
        };
        let limits = self.host.limits_for(None, None, None);
        let access = Arc::new(Access::default());
        let cancel = CancellationToken::new();
        let outcome: CallOutcome<Progress<Map<String, Value>>> = match phase {
            Phase::Execute => {
                self.host
                    .execute(&self.plugin, call, &limits, cancel, access)
                    .await
            }
            Phase::Compensate => {
                let o = self
                    .host
                    .compensate(&self.plugin, call, &limits, cancel, access)
                    .await;
                CallOutcome {
                    result: o.result.map(|p| p.map(|()| Map::new())),
                    logs: o.logs,
                    resources: o.resources,
                    elapsed: o.elapsed,
                }
            }
        };
        let limited = matches!(outcome.result, Err(StepFailure::LimitExceeded(_)));
        let wait_for = match &outcome.result {
            Ok(Progress::WaitFor(w)) => Some(w.name.clone()),
            _ => None,
        };
        let (label, output, poll, error) = match outcome.result {
            Ok(Progress::Done(out)) => ("ok", (phase == Phase::Execute).then_some(out), None, None),
            Ok(Progress::PollAfter(d)) => ("poll", None, Some(d.as_millis() as u64), None),
            Ok(Progress::WaitFor(_)) => ("wait", None, None, None),
            Err(f) => (
                if f.is_retryable() {
                    "retryable"
                } else {
                    "fatal"
                },
                None,
                None,
                Some(describe(&f)),
            ),
        };
        CallReport {
            phase,
            attempt,
            outcome: label,
            output,
            poll_after_ms: poll,
            wait_for,
            error,
            logs: outcome.logs,
            resources: outcome.resources,
            elapsed_ms: outcome.elapsed.as_secs_f64() * 1e3,
            limited,
        }
    }

    /// The conformance check (docs/design.md "Authoring plugins"), in order.
    pub async fn conformance(&self, inputs: &Map<String, Value>) -> Vec<Check> {
        let mut checks = Vec::new();
        let key = "local:0:execute";
        checks.push(Check {
            check: "a valid name",
            ok: true,
            detail: format!("`{}` (contract {})", self.name(), self.contract()),
        });
        let first = self.call(Phase::Execute, inputs, &Map::new(), 1, key).await;
        let output = first.output.clone().unwrap_or_default();
        checks.push(Check {
            check: "execute returns a JSON object without reserved keys",
            ok: matches!(first.outcome, "ok" | "poll" | "wait"),
            detail: match first.outcome {
                "ok" => format!("{} key(s)", output.len()),
                "poll" => "it asked to be called again (poll-after)".into(),
                "wait" => format!(
                    "it opened wait `{}` (wait-for)",
                    first.wait_for.as_deref().unwrap_or_default()
                ),
                _ => first.error.clone().unwrap_or_default(),
            },
        });
        let second = self.call(Phase::Execute, inputs, &Map::new(), 2, key).await;
        let ids = |r: &CallReport| {
            let mut ids: Vec<(String, String)> = r
                .resources
                .iter()
                .map(|r| (r.kind.clone(), r.external_id.clone()))
                .collect();
            ids.sort();
            ids
        };
        let (a, b) = (ids(&first), ids(&second));
        checks.push(Check {
            check: "execute twice with one idempotency key",
            ok: second.outcome == first.outcome && a == b,
            detail: if second.outcome != first.outcome {
                format!(
                    "the first call was {}, the second {}: {}",
                    first.outcome,
                    second.outcome,
                    second.error.clone().unwrap_or_default()
                )
            } else if a != b {
                format!(
                    "the second call recorded other resources ({}) than the first ({}): a retry would provision them again",
                    list(&b),
                    list(&a)
                )
            } else {
                format!("the same {} resource(s) both times", a.len())
            },
        });
        let context = output;
        let ckey = "local:0:compensate";
        let compensate = |check: &'static str, context: Map<String, Value>, attempt: u32| {
            let this = &*self;
            async move {
                let r = this
                    .call(Phase::Compensate, inputs, &context, attempt, ckey)
                    .await;
                Check {
                    check,
                    ok: r.outcome == "ok" || r.outcome == "poll",
                    detail: r.error.unwrap_or_else(|| "ok".into()),
                }
            }
        };
        // `observe` (contract 0.3.0), when exported: it must see what
        // execute did, and then that compensate undid it. One that says
        // `unknown` claims nothing, and the host does as without it.
        let mut observes = self.plugin.observes() && first.outcome == "ok";
        if observes {
            let (check, said) = self
                .observe_check("observe after execute says applied", inputs, "applied")
                .await;
            if said == Some("unknown") {
                observes = false;
                checks.push(Check {
                    check: "observe says what it can",
                    ok: true,
                    detail: "it says unknown: the host does as if it had no observe".into(),
                });
            } else {
                checks.push(check);
            }
        }
        checks.push(compensate("compensate after execute", context.clone(), 1).await);
        if observes {
            let (check, _) = self
                .observe_check(
                    "observe after compensate says not-applied",
                    inputs,
                    "not-applied",
                )
                .await;
            checks.push(check);
        }
        checks.push(compensate("compensate twice", context, 2).await);
        checks.push(compensate("compensate with no execute before it", Map::new(), 1).await);
        let slowest = [&first, &second]
            .iter()
            .map(|r| r.elapsed_ms)
            .fold(0.0, f64::max);
        let limits = self.host.limits_for(None, None, None);
        let limited = [&first, &second]
            .iter()
            .find(|r| r.limited)
            .map(|r| r.error.as_deref().unwrap_or_default());
        checks.push(Check {
            check: "within the default limits",
            ok: limited.is_none(),
            detail: match limited {
                Some(e) => e.to_string(),
                None => format!(
                    "slowest execute {slowest:.1} ms (deadline {} ms, memory {})",
                    limits.timeout.as_millis(),
                    crate::plugin::format_bytes(limits.max_memory_bytes)
                ),
            },
        });
        checks
    }
}

impl Local {
    /// Calls `observe` with execute's idempotency key and checks that it
    /// says `expected`; with what it said (`None`: the call failed).
    async fn observe_check(
        &self,
        check: &'static str,
        inputs: &Map<String, Value>,
        expected: &str,
    ) -> (Check, Option<&'static str>) {
        let call = StepCall {
            saga_id: "local".into(),
            kind: "local".into(),
            step_index: 0,
            attempt: 1,
            idempotency_key: "local:0:execute".into(),
            inputs: Value::Object(inputs.clone()).to_string(),
            context: "{}".into(),
            received: None,
            traceparent: None,
        };
        let limits = self.host.limits_for(None, None, None);
        let outcome = self
            .host
            .observe(
                &self.plugin,
                call,
                &limits,
                CancellationToken::new(),
                Arc::new(Access::default()),
            )
            .await;
        let said = match &outcome.result {
            Ok(Observed::Applied(_)) => "applied",
            Ok(Observed::NotApplied) => "not-applied",
            Ok(Observed::Unknown) => "unknown",
            Err(f) => {
                let failed = Check {
                    check,
                    ok: false,
                    detail: describe(f),
                };
                return (failed, None);
            }
        };
        let check = Check {
            check,
            ok: said == expected,
            detail: format!("it said {said}"),
        };
        (check, Some(said))
    }
}

fn list(ids: &[(String, String)]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    ids.iter()
        .map(|(k, id)| format!("{k} {id}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A failure, with its kind when the message alone does not say.
fn describe(f: &StepFailure) -> String {
    match f {
        StepFailure::Retryable(m) => format!("retryable: {m}"),
        StepFailure::Fatal(m) => format!("fatal: {m}"),
        other => other.to_string(),
    }
}

/// Parses a JSON object given on the command line; the parser's message
/// (with line and column) when it is not one.
pub fn json_object(flag: &str, text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("{flag} must be a JSON object, not {other}")),
        Err(e) => Err(format!("{flag} is not JSON: {e}")),
    }
}
