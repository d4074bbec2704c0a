//! What a plugin call comes back with: its result (done, or not yet: poll
//! after a delay), or why it failed (the guest's own error, a trap, a
//! limit, a cancel) and whether that is worth another attempt; with the
//! log lines and resources it left, redacted of every secret. The sandbox
//! runs the call (`super::PluginHost`); this is how its end is read.

use super::*;

/// Why a step call did not succeed. The runner retries the retryable ones
/// while attempts remain (DESIGN: a trap counts as retryable, then fatal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepFailure {
    /// The plugin returned `retryable(..)`.
    #[error("{0}")]
    Retryable(String),
    /// The plugin returned `fatal(..)`.
    #[error("{0}")]
    Fatal(String),
    /// `execute` returned something that is not a JSON object, or a key the
    /// host reserves, or more than the output limit.
    #[error("{0}")]
    InvalidOutput(String),
    /// The plugin misused a host import (e.g. a resource spec that is not JSON).
    #[error("{0}")]
    ContractViolation(String),
    /// Panic, `unreachable`, stack overflow, or another trap.
    #[error("{0}")]
    Trap(String),
    /// Deadline, memory or fuel limit.
    #[error("{0}")]
    LimitExceeded(String),
    /// Stopped through the call's cancel token.
    #[error("interrupted by a cancel request")]
    Cancelled,
    /// The exports' types do not match the step contract. Registration
    /// turns this into [`PluginError::WrongWorld`], so a stored plugin never
    /// fails this way.
    #[error("{0}")]
    ExportTypes(String),
    /// The host could not make the call (e.g. the plugin's bytes are
    /// missing). Not the plugin's fault.
    #[error("host error: {0}")]
    Host(String),
}

/// What a call that did not fail answered: its result, or (contract 0.2.0)
/// "not done yet, call again after this long", or (0.3.0, `execute` only)
/// "call again with the payload this wait receives".
#[derive(Debug, Clone, PartialEq)]
pub enum Progress<T> {
    Done(T),
    PollAfter(Duration),
    WaitFor(WaitFor),
}

/// A wait a step opened (`wait-for`), as the guest asked for it: the
/// runner checks it before opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitFor {
    pub name: String,
    pub timeout_ms: u64,
    /// JSON Schema text.
    pub schema: Option<String>,
}

impl<T> Progress<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Progress<U> {
        match self {
            Progress::Done(t) => Progress::Done(f(t)),
            Progress::PollAfter(d) => Progress::PollAfter(d),
            Progress::WaitFor(w) => Progress::WaitFor(w),
        }
    }
}

/// What `observe` (0.3.0) saw of a call's effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// It took effect; its output, checked by the output rules.
    Applied(Map<String, Value>),
    NotApplied,
    Unknown,
}

impl StepFailure {
    /// The same failure with secrets' values redacted from its message.
    fn redact(&mut self, redactor: &Redactor) {
        match self {
            StepFailure::Retryable(m)
            | StepFailure::Fatal(m)
            | StepFailure::InvalidOutput(m)
            | StepFailure::ContractViolation(m)
            | StepFailure::Trap(m)
            | StepFailure::LimitExceeded(m)
            | StepFailure::ExportTypes(m)
            | StepFailure::Host(m) => redactor.redact_string(m),
            StepFailure::Cancelled => {}
        }
    }

    /// Whether the call was stopped from outside (its deadline) rather than
    /// failing by itself.
    pub fn is_interruption(&self) -> bool {
        matches!(self, StepFailure::LimitExceeded(m) if m.starts_with("deadline"))
            || matches!(self, StepFailure::Cancelled)
    }

    /// Whether another attempt could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StepFailure::Retryable(_)
                | StepFailure::Trap(_)
                | StepFailure::LimitExceeded(_)
                | StepFailure::Host(_)
        )
    }
}

/// The result of one call, with what it logged and recorded (kept even when
/// the call failed: the log says why).
#[derive(Debug)]
pub struct CallOutcome<T> {
    pub result: Result<T, StepFailure>,
    pub logs: Vec<LogLine>,
    pub resources: Vec<RecordedResource>,
    pub elapsed: Duration,
}

impl<T> CallOutcome<T> {
    /// A call that failed before the guest ran.
    pub fn failed(failure: StepFailure) -> CallOutcome<T> {
        CallOutcome {
            result: Err(failure),
            logs: Vec::new(),
            resources: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// The same outcome with its result turned into another.
    pub fn and_then<U>(self, f: impl FnOnce(T) -> Result<U, StepFailure>) -> CallOutcome<U> {
        CallOutcome {
            result: self.result.and_then(f),
            logs: self.logs,
            resources: self.resources,
            elapsed: self.elapsed,
        }
    }
}

/// A call's outcome with every secret's value (in every form the
/// redactor knows) replaced by `[secret:NAME]` in its recorded resources,
/// its error, and (by `output`) its result. Its log lines were redacted as
/// they were written (before any was cut: `sandbox::CallLog`).
pub(super) fn redacted<T>(
    mut outcome: CallOutcome<T>,
    access: &Access,
    output: impl FnOnce(&mut T, &Redactor),
) -> CallOutcome<T> {
    let redactor = &access.redactor;
    if redactor.is_empty() {
        return outcome;
    }
    for resource in &mut outcome.resources {
        redactor.redact_string(&mut resource.kind);
        redactor.redact_string(&mut resource.external_id);
        redactor.redact_json(&mut resource.spec);
    }
    match &mut outcome.result {
        Ok(value) => output(value, redactor),
        Err(failure) => failure.redact(redactor),
    }
    outcome
}

/// A `step-error`: a failure, or (0.2.0, 0.3.0) a request to be called again.
pub(super) fn not_done<T>(e: GuestError) -> Result<Progress<T>, StepFailure> {
    match e {
        GuestError::Retryable(m) => Err(StepFailure::Retryable(m)),
        GuestError::Fatal(m) => Err(StepFailure::Fatal(m)),
        GuestError::PollAfter(ms) => Ok(Progress::PollAfter(Duration::from_millis(ms.into()))),
        GuestError::WaitFor(w) => Ok(Progress::WaitFor(w)),
    }
}

/// Turns a failed call into a failure that names its cause.
pub(super) fn classify(
    e: wasmtime::Error,
    limits: &StepLimits,
    max_wasm_stack: usize,
    logs: &[LogLine],
) -> StepFailure {
    if let Some(interrupted) = e.downcast_ref::<Interrupted>() {
        return match interrupted {
            Interrupted::Cancelled => StepFailure::Cancelled,
            Interrupted::Deadline(_) => StepFailure::LimitExceeded(interrupted.to_string()),
        };
    }
    if let Some(memory) = e.downcast_ref::<MemoryLimitExceeded>() {
        return StepFailure::LimitExceeded(memory.to_string());
    }
    if let Some(ExportTypes(why)) = e.downcast_ref::<ExportTypes>() {
        return StepFailure::ExportTypes(why.clone());
    }
    if let Some(violation) = e.downcast_ref::<ContractViolation>() {
        return StepFailure::ContractViolation(violation.to_string());
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => StepFailure::LimitExceeded(format!(
            "fuel limit of {} exceeded",
            limits.fuel.unwrap_or_default()
        )),
        Some(Trap::StackOverflow) => StepFailure::Trap(format!(
            "trap: call stack exhausted (the Wasm stack limit is {})",
            format_bytes(max_wasm_stack as u64)
        )),
        Some(trap) => {
            // The SDK logs a panic's message just before the trap it causes.
            let panic = logs
                .iter()
                .rev()
                .find(|line| line.message.starts_with("panic: "))
                .map(|line| format!(" ({})", line.message))
                .unwrap_or_default();
            StepFailure::Trap(format!("trap: {trap}{panic}"))
        }
        None => StepFailure::Trap(format!("trap: {e:#}")),
    }
}

/// The output rules: a JSON object (empty text counts as `{}`), within the
/// size limit, with no key starting with `__` (reserved for the host).
pub fn parse_output(text: &str, max_bytes: usize) -> Result<Map<String, Value>, StepFailure> {
    if text.len() > max_bytes {
        return Err(StepFailure::InvalidOutput(format!(
            "output of {} exceeds the limit of {}",
            format_bytes(text.len() as u64),
            format_bytes(max_bytes as u64)
        )));
    }
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| StepFailure::InvalidOutput(format!("output is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => unreachable!(),
        };
        return Err(StepFailure::InvalidOutput(format!(
            "output must be a JSON object, not {kind}"
        )));
    };
    if let Some(key) = map.keys().find(|k| k.starts_with("__")) {
        return Err(StepFailure::InvalidOutput(format!(
            "output key `{key}` starts with `__`, which is reserved for the host"
        )));
    }
    Ok(map)
}
