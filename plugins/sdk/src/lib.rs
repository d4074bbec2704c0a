//! Write [wasaga](https://github.com/wasaga/wasaga) saga steps in Rust.
//!
//! A step is a type that implements [`Step`]; [`export_step!`] turns it into
//! the `wasaga:step/step@0.2.0` export that the host calls (with the
//! `contract-0-1` feature, `@0.1.0`, for hosts that predate 0.2.0; then
//! [`poll_after`] and [`secrets`] do not exist). The host hands
//! every call a [`SagaState`]: the saga's inputs (fixed for its whole life),
//! its context (what earlier steps returned), the step's index, the attempt
//! number and an idempotency key that stays the same across retries and
//! crash-resumes of this step and phase. Pass that key to any external API you
//! call, so that a repeated call has no second effect.
//!
//! `execute` returns an [`Output`]: a JSON object whose keys the host merges
//! into the saga's context. Errors are [`StepError`]s: [`retryable`] ones are
//! retried with backoff up to the step's attempt limit, [`fatal`] ones start
//! compensation at once; [`poll_after`] says "not done yet, call me again
//! later" without using an attempt. `compensate` undoes what `execute` did;
//! its default says there is nothing to undo.
//!
//! # Example
//!
//! ```no_run
//! use serde::Deserialize;
//! use wasaga_step::{export_step, fatal, host, Output, SagaState, Step, StepResult};
//!
//! #[derive(Deserialize)]
//! struct Inputs {
//!     region: String,
//!     size: String,
//! }
//!
//! struct CreateDroplet;
//!
//! impl Step for CreateDroplet {
//!     fn name() -> String {
//!         "create-droplet".into()
//!     }
//!
//!     fn execute(state: &SagaState) -> StepResult<Output> {
//!         let inputs: Inputs = state.inputs()?;
//!         if inputs.size.is_empty() {
//!             return Err(fatal("inputs.size must not be empty"));
//!         }
//!         // Call the cloud API here, passing state.idempotency_key.
//!         let droplet_id = format!("droplet-{}", state.saga_id);
//!         host::info(&format!("created {droplet_id} in {}", inputs.region));
//!         host::record_resource("droplet", &droplet_id, &serde_json::json!({"size": inputs.size}))?;
//!         Output::new().with("droplet_id", &droplet_id)
//!     }
//!
//!     fn compensate(state: &SagaState) -> StepResult<()> {
//!         let droplet_id: String = state.context_value("droplet_id")?
//!             .ok_or_else(|| fatal("no droplet_id in the context"))?;
//!         host::info(&format!("deleting {droplet_id}"));
//!         Ok(())
//!     }
//! }
//!
//! export_step!(CreateDroplet);
//! ```
//!
//! Build it as a component with `cargo xtask plugins` in the wasaga
//! repository, or with `cargo build --target wasm32-unknown-unknown --release`
//! followed by `wasm-tools component new`. Link with
//! `-C link-arg=--initial-heap=131072` (as `cargo xtask plugins` does): the
//! SDK's allocator then serves a call's allocations from the initial memory,
//! and the host skips two `mprotect` calls per step (see the `allocator`
//! feature).

// The generated bindings name this crate by its path, from inside and outside.
extern crate self as wasaga_step;

#[cfg(all(feature = "allocator", target_arch = "wasm32"))]
mod heap;
pub mod http;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The bindings of the SDK's world (`wit/world.wit`): on the newest
/// contract, or on 0.1.0 with the `contract-0-1` feature.
#[doc(hidden)]
pub mod __bindings {
    macro_rules! bindings_of {
        ($step:tt, $world:tt) => {
            wit_bindgen::generate!({
                path: [
                    $step,
                    "../wit/io.wit",
                    "../wit/clocks.wit",
                    "../wit/random.wit",
                    "../wit/filesystem.wit",
                    "../wit/sockets.wit",
                    "../wit/cli.wit",
                    "../wit/http.wit",
                    $world,
                ],
                world: "wasaga:sdk/plugin",
                generate_all,
                pub_export_macro: true,
                export_macro_name: "__export_plugin",
                default_bindings_module: "wasaga_step::__bindings",
                runtime_path: "wasaga_step::__bindings::wit_bindgen_rt",
            });
        };
    }
    #[cfg(not(any(feature = "contract-0-1", feature = "contract-0-3")))]
    bindings_of!("../../wit/0.2.0/step.wit", "wit");
    #[cfg(feature = "contract-0-1")]
    bindings_of!("../../wit/step.wit", "wit/v0_1");
    #[cfg(all(feature = "contract-0-3", not(feature = "contract-0-1")))]
    bindings_of!("../../wit/0.3.0/step.wit", "wit/v0_3");

    #[doc(hidden)]
    pub use wit_bindgen::rt as wit_bindgen_rt;
}

use __bindings::exports::wasaga::step::step as wit_step;
use __bindings::wasaga::step::host as wit_host;
use __bindings::wasaga::step::types as wit_types;

/// What a step returns: `Ok` with its value, or a [`StepError`].
pub type StepResult<T> = Result<T, StepError>;

/// Why a step call did not finish, and what the host should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// Transient (a timeout, a 503): the host retries with backoff, up to the
    /// step's attempt limit.
    Retryable(String),
    /// Permanent (bad input, a refused request): no retry; the saga starts
    /// compensating.
    Fatal(String),
    /// Nothing is wrong, the work is not finished yet (a droplet still
    /// booting): the host calls this function again after this long. See
    /// [`poll_after`].
    #[cfg(not(feature = "contract-0-1"))]
    PollAfter(std::time::Duration),
    /// Wait for a payload from a person or a system (contract 0.3.0):
    /// see [`wait_for`].
    #[cfg(feature = "contract-0-3")]
    WaitFor {
        name: String,
        timeout: std::time::Duration,
        schema: Option<Value>,
    },
}

/// Opens a wait for a person or a system (contract 0.3.0, feature
/// `contract-0-3`): the saga waits, holding nothing, until the wait named
/// `name` is answered (`wasaga saga approve ID NAME --payload JSON`, `POST
/// /v1/sagas/{id}/waits/{name}/complete`, or the wait's `callback_url`),
/// then `execute` is called again, with the same attempt and key, and the
/// payload in [`SagaState::received`]. A payload must pass `schema` when
/// one is given. Past `timeout` (1 s to 31 days) the step fails for good;
/// a rejection fails it too.
///
/// ```no_run
/// # use wasaga_step::{wait_for, Output, SagaState, StepResult};
/// fn execute(state: &SagaState) -> StepResult<Output> {
///     let Some(approval) = state.received::<serde_json::Value>()? else {
///         return Err(wait_for("approval", std::time::Duration::from_secs(3600), None));
///     };
///     Output::new().with("approved_by", &approval["by"])
/// }
/// ```
#[cfg(feature = "contract-0-3")]
pub fn wait_for(
    name: impl Into<String>,
    timeout: std::time::Duration,
    schema: Option<Value>,
) -> StepError {
    StepError::WaitFor {
        name: name.into(),
        timeout,
        schema,
    }
}

/// What [`Step::observe`] saw (contract 0.3.0).
#[cfg(feature = "contract-0-3")]
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The effect of `execute` with this idempotency key is there; this is
    /// what `execute` would have returned.
    Applied(Output),
    /// It is not there.
    NotApplied,
    /// It cannot tell.
    Unknown,
}

/// A transient failure: the host will call the step again after a backoff.
pub fn retryable(message: impl Into<String>) -> StepError {
    StepError::Retryable(message.into())
}

/// A permanent failure: the saga stops and compensates what was done.
pub fn fatal(message: impl Into<String>) -> StepError {
    StepError::Fatal(message.into())
}

/// Not done yet: the host calls this function again after `delay` (at
/// least its minimum poll interval, 10 ms by default), with the same
/// attempt number and idempotency key. The wait is durable: it survives a
/// restart of the host and holds nothing meanwhile, and it uses no attempt.
/// The step's `max_wait_ms` (default one hour) bounds the total wait.
///
/// ```no_run
/// # use wasaga_step::{poll_after, SagaState, StepResult, Output};
/// # fn droplet_is_active(_: &SagaState) -> bool { true }
/// fn execute(state: &SagaState) -> StepResult<Output> {
///     if !droplet_is_active(state) {
///         return Err(poll_after(std::time::Duration::from_secs(5)));
///     }
///     Output::new().with("ready", true)
/// }
/// ```
#[cfg(not(feature = "contract-0-1"))]
pub fn poll_after(delay: std::time::Duration) -> StepError {
    StepError::PollAfter(delay)
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Retryable(m) => write!(f, "retryable: {m}"),
            StepError::Fatal(m) => write!(f, "fatal: {m}"),
            #[cfg(not(feature = "contract-0-1"))]
            StepError::PollAfter(d) => write!(f, "poll after {} ms", d.as_millis()),
            #[cfg(feature = "contract-0-3")]
            StepError::WaitFor { name, .. } => write!(f, "wait for `{name}`"),
        }
    }
}

impl std::error::Error for StepError {}

/// Malformed JSON, or JSON of the wrong shape, is a bug in the saga request
/// or in an earlier step: retrying cannot help, so it is fatal.
impl From<serde_json::Error> for StepError {
    fn from(e: serde_json::Error) -> Self {
        StepError::Fatal(e.to_string())
    }
}

impl From<StepError> for wit_types::StepError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Retryable(m) => wit_types::StepError::Retryable(m),
            StepError::Fatal(m) => wit_types::StepError::Fatal(m),
            #[cfg(not(feature = "contract-0-1"))]
            StepError::PollAfter(d) => {
                wit_types::StepError::PollAfter(u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
            }
            #[cfg(feature = "contract-0-3")]
            StepError::WaitFor {
                name,
                timeout,
                schema,
            } => wit_types::StepError::WaitFor(wit_types::WaitRequest {
                name,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                schema: schema.map(|s| s.to_string()),
            }),
        }
    }
}

/// Everything a step sees of its saga, with typed access to the JSON parts.
#[derive(Debug, Clone)]
pub struct SagaState {
    /// The saga's id.
    pub saga_id: String,
    /// The saga's kind, as given when it was started (e.g. "provision").
    pub kind: String,
    /// This step's position in the saga, from 0.
    pub step_index: u32,
    /// 1 on the first call of this phase, 2 on the first retry, ...
    pub attempt: u32,
    /// Stable across retries and crash-resumes of this step and phase.
    pub idempotency_key: String,
    inputs: Value,
    context: Value,
    #[cfg(feature = "contract-0-3")]
    received: Option<Value>,
}

impl SagaState {
    fn from_wit(state: wit_types::SagaState) -> StepResult<Self> {
        let parse = |what: &str, text: &str| -> StepResult<Value> {
            if text.is_empty() {
                return Ok(Value::Object(Map::new()));
            }
            serde_json::from_str(text)
                .map_err(|e| fatal(format!("the host sent invalid {what} JSON: {e}")))
        };
        Ok(SagaState {
            #[cfg(feature = "contract-0-3")]
            received: state
                .received
                .as_deref()
                .map(|text| parse("received", text))
                .transpose()?,
            inputs: parse("inputs", &state.inputs)?,
            context: parse("context", &state.context)?,
            saga_id: state.saga_id,
            kind: state.kind,
            step_index: state.step_index,
            attempt: state.attempt,
            idempotency_key: state.idempotency_key,
        })
    }

    /// The saga's inputs, deserialized into `T`. A mismatch is fatal.
    pub fn inputs<T: DeserializeOwned>(&self) -> StepResult<T> {
        T::deserialize(&self.inputs).map_err(|e| fatal(format!("inputs: {e}")))
    }

    /// One input by key. Missing or mistyped is fatal.
    pub fn input<T: DeserializeOwned>(&self, key: &str) -> StepResult<T> {
        let value = self
            .inputs
            .get(key)
            .ok_or_else(|| fatal(format!("missing input `{key}`")))?;
        T::deserialize(value).map_err(|e| fatal(format!("input `{key}`: {e}")))
    }

    /// One input by key, or `None` when it is absent. Mistyped is fatal.
    pub fn input_opt<T: DeserializeOwned>(&self, key: &str) -> StepResult<Option<T>> {
        match self.inputs.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|e| fatal(format!("input `{key}`: {e}"))),
        }
    }

    /// The saga's context (what earlier steps output), deserialized into `T`.
    pub fn context<T: DeserializeOwned>(&self) -> StepResult<T> {
        T::deserialize(&self.context).map_err(|e| fatal(format!("context: {e}")))
    }

    /// One context value by key, or `None` when no earlier step set it.
    pub fn context_value<T: DeserializeOwned>(&self, key: &str) -> StepResult<Option<T>> {
        match self.context.get(key) {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|e| fatal(format!("context `{key}`: {e}"))),
        }
    }

    /// The raw inputs object.
    pub fn inputs_json(&self) -> &Value {
        &self.inputs
    }

    /// The raw context object.
    pub fn context_json(&self) -> &Value {
        &self.context
    }

    /// The payload the wait this step opened ([`wait_for`]) received,
    /// deserialized into `T`; `None` before the wait was answered.
    #[cfg(feature = "contract-0-3")]
    pub fn received<T: DeserializeOwned>(&self) -> StepResult<Option<T>> {
        self.received
            .as_ref()
            .map(|v| T::deserialize(v).map_err(|e| fatal(format!("received: {e}"))))
            .transpose()
    }
}

/// The JSON object `execute` returns; its keys are merged into the context.
///
/// Keys starting with `__` are reserved for the host and fail the step.
#[derive(Debug, Clone, PartialEq)]
pub struct Output(OutputBody);

#[derive(Debug, Clone, PartialEq)]
enum OutputBody {
    Object(Map<String, Value>),
    Raw(String),
}

impl Default for Output {
    fn default() -> Self {
        Output::new()
    }
}

impl Output {
    /// An empty output: the step adds nothing to the context.
    pub fn new() -> Self {
        Output(OutputBody::Object(Map::new()))
    }

    /// Adds `key` = `value`, serialized to JSON.
    pub fn with(self, key: impl Into<String>, value: impl Serialize) -> StepResult<Self> {
        let mut map = match self.0 {
            OutputBody::Object(map) => map,
            OutputBody::Raw(text) => match serde_json::from_str(&text)? {
                Value::Object(map) => map,
                other => {
                    return Err(fatal(format!(
                        "a step's output must be a JSON object, not {other}"
                    )));
                }
            },
        };
        map.insert(key.into(), serde_json::to_value(value)?);
        Ok(Output(OutputBody::Object(map)))
    }

    /// The output of a serializable struct (it must serialize to an object).
    pub fn from_serialize(value: &impl Serialize) -> StepResult<Self> {
        match serde_json::to_value(value)? {
            Value::Object(map) => Ok(Output(OutputBody::Object(map))),
            other => Err(fatal(format!(
                "a step's output must be a JSON object, not {other}"
            ))),
        }
    }

    /// JSON text sent to the host as it is, without parsing it here: for
    /// steps that already hold their output as text (a large document, an API
    /// response). The host checks it: it must be a JSON object.
    pub fn raw(json: String) -> Self {
        Output(OutputBody::Raw(json))
    }

    /// The JSON text sent to the host.
    pub fn into_json(self) -> String {
        match self.0 {
            OutputBody::Object(map) => Value::Object(map).to_string(),
            OutputBody::Raw(text) => text,
        }
    }
}

/// One saga step. Implement it and export it with [`export_step!`].
pub trait Step {
    /// A stable, human-readable name: lowercase letters, digits and dashes,
    /// at most 64 characters (e.g. "create-droplet"). The host reads it once,
    /// when the plugin is uploaded.
    fn name() -> String;

    /// Does the work. Make it safe to repeat with the same
    /// [`SagaState::idempotency_key`]: a crash can make the host call it again.
    fn execute(state: &SagaState) -> StepResult<Output>;

    /// Undoes what `execute` did. Called in reverse step order when a later
    /// step fails for good or the saga is cancelled. `state.context` holds
    /// this step's own outputs.
    fn compensate(state: &SagaState) -> StepResult<()> {
        let _ = state;
        Ok(())
    }

    /// Looks, changing nothing, at whether `execute` with this state's
    /// idempotency key took effect (contract 0.3.0). The host asks before
    /// it runs again an `execute` whose host died mid-call, and before it
    /// undoes one; drift detection asks what the resources look like now
    /// (record them with [`host::record_resource`]). The default says
    /// [`Observation::Unknown`]: the host then does as it would without.
    #[cfg(feature = "contract-0-3")]
    fn observe(state: &SagaState) -> StepResult<Observation> {
        let _ = state;
        Ok(Observation::Unknown)
    }
}

/// Writes to this step's log in the saga's ledger, and records resources.
pub mod host {
    use super::{StepResult, fatal, wit_host};
    use serde::Serialize;

    pub use wit_host::LogLevel;

    /// Appends a line at `level` to this call's log.
    pub fn log(level: LogLevel, message: &str) {
        wit_host::log(level, message);
    }

    /// Appends an informational line to this call's log.
    pub fn info(message: &str) {
        log(LogLevel::Info, message);
    }

    /// Appends a warning to this call's log.
    pub fn warn(message: &str) {
        log(LogLevel::Warn, message);
    }

    /// Appends an error line to this call's log.
    pub fn error(message: &str) {
        log(LogLevel::Error, message);
    }

    /// Records a resource this step provisioned (`kind`, its id in the
    /// external system, and its desired-state spec) in the host's ledger. The
    /// host stores it with the step's result, in the same transaction.
    pub fn record_resource(kind: &str, external_id: &str, spec: &impl Serialize) -> StepResult<()> {
        let spec = serde_json::to_string(spec).map_err(|e| fatal(format!("resource spec: {e}")))?;
        wit_host::record_resource(kind, external_id, &spec);
        Ok(())
    }
}

/// Secrets this plugin was granted with `read` (contract 0.2.0).
///
/// Most steps never need this: a secret granted with `use` goes into an
/// outbound request's header as `{{secret:NAME}}` and the step never sees
/// it. Read a secret only to do what a header cannot, such as signing a
/// request. The host logs every read (the name, never the value) and
/// redacts the value from the step's logs, output, error and resources.
#[cfg(not(feature = "contract-0-1"))]
pub mod secrets {
    /// The value of the secret `name` when this plugin may read it; `None`
    /// when it is not granted with `read`, or not set.
    pub fn get(name: &str) -> Option<String> {
        super::__bindings::wasaga::step::secrets::get(name)
    }
}

#[doc(hidden)]
pub struct __Export<S>(std::marker::PhantomData<S>);

/// A panic aborts the instance (the host sees a trap), and a component has
/// no stderr of its own here: send the panic's message to the step's log
/// first, so the ledger says why the step trapped.
fn log_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            wit_host::log(wit_host::LogLevel::Error, &format!("panic: {info}"));
        }));
    });
}

impl<S: Step> wit_step::Guest for __Export<S> {
    fn name() -> String {
        log_panics();
        S::name()
    }

    fn execute(state: wit_types::SagaState) -> Result<String, wit_types::StepError> {
        log_panics();
        let state = SagaState::from_wit(state)?;
        Ok(S::execute(&state)?.into_json())
    }

    fn compensate(state: wit_types::SagaState) -> Result<(), wit_types::StepError> {
        log_panics();
        let state = SagaState::from_wit(state)?;
        Ok(S::compensate(&state)?)
    }
}

#[cfg(feature = "contract-0-3")]
impl<S: Step> __bindings::exports::wasaga::step::observe::Guest for __Export<S> {
    fn observe(
        state: wit_types::SagaState,
    ) -> Result<wit_types::Observation, wit_types::StepError> {
        log_panics();
        let state = SagaState::from_wit(state)?;
        Ok(match S::observe(&state)? {
            Observation::Applied(output) => wit_types::Observation::Applied(output.into_json()),
            Observation::NotApplied => wit_types::Observation::NotApplied,
            Observation::Unknown => wit_types::Observation::Unknown,
        })
    }
}

/// Exports a [`Step`] implementation as this component's `wasaga:step/step`.
///
/// Use it once per plugin crate, at the crate root: `export_step!(MyStep);`
#[macro_export]
macro_rules! export_step {
    ($step:ty) => {
        type __WasagaStepExport = $crate::__Export<$step>;
        $crate::__bindings::__export_plugin!(__WasagaStepExport with_types_in $crate::__bindings);
    };
}
