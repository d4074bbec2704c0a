//! The plugin runtime: turns uploaded bytes into a ready plugin and calls its
//! `name`, `execute` and `compensate` in a fresh sandbox per call.
//!
//! It owns the process's one wasmtime [`Engine`] (see `engine` for why each
//! setting), the [`Linker`] with WASI 0.2, `wasi:http` and the step world's
//! host imports, the compile cache, and the registry of ready plugins, each
//! holding a pre-linked `InstancePre`, so that a call is only "instantiate,
//! call, drop". Validation happens at registration (`prepare`): a plugin that
//! would fail to link fails its upload, never a saga.
//!
//! Calls run on a dedicated pool of threads (a tokio runtime of its own), so
//! guest code never occupies the threads that serve HTTP and the database.
//! The runner drives its sagas on those threads too ([`PluginHost::runtime`]):
//! a call made from them runs in place, with no hand-off between threads,
//! which on a virtual machine costs as much as the call itself.
//! Whatever a guest does (loop, allocate, recurse, panic, return too much)
//! ends as a [`StepFailure`] whose message names the limit or the trap; the
//! host is never the one to panic.

mod budgeted;
mod cache;
mod engine;
pub mod outbound;
mod outcome;
pub use outcome::{CallOutcome, Observed, Progress, StepFailure, WaitFor, parse_output};
use outcome::{classify, not_done, redacted};
mod sandbox;
mod validate;

pub use cache::LoadedFrom;
pub use sandbox::format_bytes;
pub use validate::plugin_name;

use crate::config::{RuntimeConfig, StepLimits};
use crate::grants::Access;
use crate::model::{Digest, LogLine, RecordedResource};
use crate::secrets::Redactor;
use sandbox::{CallState, ContractViolation, MemoryLimitExceeded};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// The host side of the step contracts, from the WIT files a plugin is
/// written against: `wit/step.wit` (0.1.0), `wit/0.2.0/step.wit` and
/// `wit/0.3.0/step.wit`. A 0.3.0 plugin exports `observe` or not: the
/// bindings of its `observing-plugin` world call `observe`, those of its
/// `plugin` world (sharing the first's types) call the step.
mod bindings {
    pub mod v0_1 {
        wasmtime::component::bindgen!({
            path: "../wit/step.wit",
            world: "plugin",
            imports: {
                "wasaga:step/host.record-resource": trappable,
            },
            exports: { default: async },
        });
    }
    pub mod v0_2 {
        wasmtime::component::bindgen!({
            path: "../wit/0.2.0/step.wit",
            world: "plugin",
            imports: {
                "wasaga:step/host.record-resource": trappable,
            },
            exports: { default: async },
        });
    }
    pub mod v0_3 {
        wasmtime::component::bindgen!({
            path: "../wit/0.3.0/step.wit",
            world: "observing-plugin",
            imports: {
                "wasaga:step/host.record-resource": trappable,
            },
            exports: { default: async },
        });
    }
    pub mod v0_3_plain {
        wasmtime::component::bindgen!({
            path: "../wit/0.3.0/step.wit",
            world: "plugin",
            with: {
                "wasaga:step/types": super::v0_3::wasaga::step::types,
                "wasaga:step/host": super::v0_3::wasaga::step::host,
                "wasaga:step/secrets": super::v0_3::wasaga::step::secrets,
            },
            exports: { default: async },
        });
    }
}

/// Why an upload is not a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Not Wasm, or a core module rather than a component.
    #[error("not a component: {0}")]
    NotAComponent(String),
    #[error("the component is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// A component that does not compile.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// A component that does not implement `wasaga:step/step` 0.1 or 0.2.
    #[error("wrong world: {0}")]
    WrongWorld(String),
    /// Imports this host does not offer.
    #[error("unsupported imports: {} ({detail})", imports.join(", "))]
    UnsupportedImports {
        imports: Vec<String>,
        detail: String,
    },
    #[error(
        "invalid plugin name {name:?}: {reason}; a name is 1 to 64 lowercase letters, digits and dashes"
    )]
    InvalidName { name: String, reason: String },
    /// `name()` trapped or broke a limit at registration.
    #[error("calling the plugin's name() failed: {0}")]
    NameFailed(StepFailure),
    #[error("the stored bytes do not hash to {0}")]
    DigestMismatch(Digest),
    /// Not the plugin's fault.
    #[error("host error: {0}")]
    Host(String),
}

/// Which version of the step contract a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `wasaga:step@0.1.0`.
    V0_1,
    /// `wasaga:step@0.2.0`: `poll-after`, `secrets.get`.
    V0_2,
    /// `wasaga:step@0.3.0`: `wait-for`, `saga-state.received`, and the
    /// optional `observe` export.
    V0_3,
}

impl Contract {
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
            Contract::V0_3 => "0.3.0",
        }
    }

    /// The versions it stands for (any patch): `0.1.x`.
    pub fn family(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.x",
            Contract::V0_2 => "0.2.x",
            Contract::V0_3 => "0.3.x",
        }
    }
}

/// What a step call sees of its saga (the WIT `saga-state`).
#[derive(Debug, Clone)]
pub struct StepCall {
    pub saga_id: String,
    pub kind: String,
    pub step_index: u32,
    pub attempt: u32,
    pub idempotency_key: String,
    /// JSON object text.
    pub inputs: String,
    /// JSON object text.
    pub context: String,
    /// 0.3.0: the payload (JSON text) the wait the step opened received.
    pub received: Option<String>,
    /// Not in `saga-state`: the W3C `traceparent` the host puts on the
    /// call's outbound requests (`crate::telemetry`), when tracing is on.
    pub traceparent: Option<String>,
}

/// A [`StepCall`] as each contract version's `saga-state` (the same record).
macro_rules! saga_state_from_call {
    ($($version:ident),*) => {$(
        impl From<StepCall> for bindings::$version::wasaga::step::types::SagaState {
            fn from(c: StepCall) -> Self {
                Self {
                    saga_id: c.saga_id,
                    kind: c.kind,
                    step_index: c.step_index,
                    attempt: c.attempt,
                    idempotency_key: c.idempotency_key,
                    inputs: c.inputs,
                    context: c.context,
                }
            }
        }
    )*};
}
saga_state_from_call!(v0_1, v0_2);

impl From<StepCall> for bindings::v0_3::wasaga::step::types::SagaState {
    fn from(c: StepCall) -> Self {
        Self {
            saga_id: c.saga_id,
            kind: c.kind,
            step_index: c.step_index,
            attempt: c.attempt,
            idempotency_key: c.idempotency_key,
            inputs: c.inputs,
            context: c.context,
            received: c.received,
        }
    }
}

/// A ready plugin: validated, compiled and pre-linked.
pub struct Plugin {
    pub digest: Digest,
    pub name: String,
    pub size: usize,
    pub loaded_from: LoadedFrom,
    instance_pre: InstancePre<CallState>,
    /// The step export's functions, looked up once; each call type-checks
    /// them against its instance.
    exports: StepExports,
    /// The `observe` export (0.3.0), when it has one.
    observe: Option<bindings::v0_3::ObservingPluginIndices>,
    /// The step contract it implements.
    pub contract: Contract,
}

impl Plugin {
    /// Whether it exports `observe` (contract 0.3.0).
    pub fn observes(&self) -> bool {
        self.observe.is_some()
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("digest", &self.digest)
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The plugin runtime. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    config: RuntimeConfig,
    cache: Option<cache::CompileCache>,
    /// Ready plugins by digest. A cell per digest, so that concurrent loads
    /// of one plugin compile it once.
    plugins: Mutex<HashMap<Digest, Arc<OnceCell<Arc<Plugin>>>>>,
    /// One permit per instance alive, so calls wait for a pool slot instead
    /// of failing when the pool is full.
    instances: Arc<Semaphore>,
    /// One permit per compile in progress.
    compiles: Arc<Semaphore>,
    /// Steps' outbound connections, pooled per plugin and origin.
    outbound: Arc<outbound::Outbound>,
    /// The threads that run Wasm (`None`: calls run on the caller's runtime).
    wasm_runtime: Option<tokio::runtime::Runtime>,
    _ticker: engine::EpochTicker,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime blocks; this may run inside another runtime.
        if let Some(rt) = self.wasm_runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The component's step functions do not have the contract's types.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ExportTypes(String);

/// Why a call was interrupted at an epoch tick.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("cancelled")]
    Cancelled,
    #[error("deadline of {0} ms exceeded")]
    Deadline(u128),
}

/// The step export of each contract version.
enum StepExports {
    V0_1(bindings::v0_1::PluginIndices),
    V0_2(bindings::v0_2::PluginIndices),
    V0_3(bindings::v0_3_plain::PluginIndices),
}

enum CallKind {
    Name,
    Execute(StepCall),
    Compensate(StepCall),
    Observe(StepCall),
}

/// A `step-error` of any version.
enum GuestError {
    Retryable(String),
    Fatal(String),
    /// 0.2.0: not done yet, call again after this many milliseconds.
    PollAfter(u32),
    /// 0.3.0: wait for a payload, then call again with it.
    WaitFor(WaitFor),
}

macro_rules! guest_error_from {
    ($($version:ident: $($poll:ident)?),*) => {$(
        impl From<bindings::$version::wasaga::step::types::StepError> for GuestError {
            fn from(e: bindings::$version::wasaga::step::types::StepError) -> GuestError {
                use bindings::$version::wasaga::step::types::StepError;
                match e {
                    StepError::Retryable(m) => GuestError::Retryable(m),
                    StepError::Fatal(m) => GuestError::Fatal(m),
                    $(StepError::$poll(ms) => GuestError::PollAfter(ms),)?
                }
            }
        }
    )*};
}
guest_error_from!(v0_1:, v0_2: PollAfter);

impl From<bindings::v0_3::wasaga::step::types::StepError> for GuestError {
    fn from(e: bindings::v0_3::wasaga::step::types::StepError) -> GuestError {
        use bindings::v0_3::wasaga::step::types::StepError;
        match e {
            StepError::Retryable(m) => GuestError::Retryable(m),
            StepError::Fatal(m) => GuestError::Fatal(m),
            StepError::PollAfter(ms) => GuestError::PollAfter(ms),
            StepError::WaitFor(w) => GuestError::WaitFor(WaitFor {
                name: w.name,
                timeout_ms: w.timeout_ms,
                schema: w.schema,
            }),
        }
    }
}

/// What `observe` saw, as the guest said it (its output still text).
enum GuestObservation {
    Applied(String),
    NotApplied,
    Unknown,
}

enum CallReturn {
    Name(String),
    Execute(Result<String, GuestError>),
    Compensate(Result<(), GuestError>),
    Observe(Result<GuestObservation, GuestError>),
}

impl PluginHost {
    pub fn new(config: RuntimeConfig) -> Result<PluginHost, PluginError> {
        config.check_system_limits().map_err(PluginError::Host)?;
        let engine = engine::build(&config)
            .map_err(|e| PluginError::Host(format!("building the engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        let link = |linker: &mut Linker<CallState>| -> wasmtime::Result<()> {
            wasmtime_wasi::p2::add_to_linker_async(linker)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
            bindings::v0_1::Plugin::add_to_linker::<_, HasSelf<CallState>>(linker, |state| state)?;
            bindings::v0_2::Plugin::add_to_linker::<_, HasSelf<CallState>>(linker, |state| state)?;
            bindings::v0_3::ObservingPlugin::add_to_linker::<_, HasSelf<CallState>>(
                linker,
                |state| state,
            )?;
            Ok(())
        };
        link(&mut linker)
            .map_err(|e| PluginError::Host(format!("linking host functions: {e:#}")))?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(cache::CompileCache::open(dir, &engine).map_err(|e| {
                PluginError::Host(format!("opening the compile cache {}: {e}", dir.display()))
            })?),
            None => None,
        };
        let wasm_runtime = if config.wasm_threads == 0 {
            None
        } else {
            Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(config.wasm_threads)
                    .thread_name("wasaga-wasm")
                    .enable_all()
                    .build()
                    .map_err(|e| PluginError::Host(format!("starting the Wasm threads: {e}")))?,
            )
        };
        let ticker = engine::EpochTicker::start(&engine);
        Ok(PluginHost {
            inner: Arc::new(Inner {
                instances: Arc::new(Semaphore::new(config.max_instances.max(1) as usize)),
                compiles: Arc::new(Semaphore::new(config.max_concurrent_compiles.max(1))),
                outbound: Arc::new(outbound::Outbound::new(config.outbound)),
                engine,
                linker,
                config,
                cache,
                plugins: Mutex::new(HashMap::new()),
                wasm_runtime,
                _ticker: ticker,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Where steps' requests go out (its pools, and the budgets' gate).
    pub fn outbound(&self) -> &Arc<outbound::Outbound> {
        &self.inner.outbound
    }

    /// The threads that run Wasm, where blocking for a while is expected;
    /// `None` when calls run on the caller's runtime (`wasm_threads = 0`).
    pub fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.inner.wasm_runtime.as_ref().map(|rt| rt.handle())
    }

    /// Whether the caller runs on the Wasm threads (calls then run in place).
    fn on_runtime(&self) -> bool {
        self.runtime().is_some_and(|rt| {
            tokio::runtime::Handle::try_current().is_ok_and(|here| here.id() == rt.id())
        })
    }

    /// Validates, compiles and pre-links an upload, and calls its `name()`.
    /// The plugin is then ready to run (see [`PluginHost::get`]).
    pub async fn prepare(&self, bytes: &[u8]) -> Result<Arc<Plugin>, PluginError> {
        let limit = self.inner.config.max_component_bytes;
        if bytes.len() > limit {
            return Err(PluginError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        validate::component_bytes(bytes)?;
        self.load(&Digest::of(bytes), bytes, None).await
    }

    /// Makes a stored plugin ready: from the compile cache when it holds the
    /// digest, else compiled. `known_name` skips the `name()` call (the store
    /// already has it).
    pub async fn load(
        &self,
        digest: &Digest,
        bytes: &[u8],
        known_name: Option<&str>,
    ) -> Result<Arc<Plugin>, PluginError> {
        let cell = {
            let mut plugins = self.inner.plugins.lock().expect("plugins lock");
            plugins.entry(digest.clone()).or_default().clone()
        };
        cell.get_or_try_init(|| self.build_plugin(digest, bytes, known_name))
            .await
            .cloned()
    }

    /// A plugin that is ready in this process.
    pub fn get(&self, digest: &Digest) -> Option<Arc<Plugin>> {
        let plugins = self.inner.plugins.lock().expect("plugins lock");
        plugins.get(digest).and_then(|cell| cell.get().cloned())
    }

    /// Forgets a plugin (after it was deleted).
    pub fn forget(&self, digest: &Digest) {
        self.inner
            .plugins
            .lock()
            .expect("plugins lock")
            .remove(digest);
    }

    async fn build_plugin(
        &self,
        digest: &Digest,
        bytes: &[u8],
        known_name: Option<&str>,
    ) -> Result<Arc<Plugin>, PluginError> {
        if &Digest::of(bytes) != digest {
            return Err(PluginError::DigestMismatch(digest.clone()));
        }
        let (component, loaded_from) = self.compile(digest, bytes).await?;
        let engine = &self.inner.engine;
        validate::imports(engine, &component)?;
        let contract = validate::exports(engine, &component)?;
        let instance_pre = self.inner.linker.instantiate_pre(&component).map_err(|e| {
            PluginError::UnsupportedImports {
                imports: Vec::new(),
                detail: format!("linking failed: {e:#}"),
            }
        })?;
        let wrong_types = |e: wasmtime::Error| {
            PluginError::WrongWorld(format!(
                "`{}@{}`: {e:#}",
                validate::STEP_EXPORT,
                contract.family()
            ))
        };
        let exports = match contract {
            Contract::V0_1 => StepExports::V0_1(
                bindings::v0_1::PluginIndices::new(&instance_pre).map_err(wrong_types)?,
            ),
            Contract::V0_2 => StepExports::V0_2(
                bindings::v0_2::PluginIndices::new(&instance_pre).map_err(wrong_types)?,
            ),
            Contract::V0_3 => StepExports::V0_3(
                bindings::v0_3_plain::PluginIndices::new(&instance_pre).map_err(wrong_types)?,
            ),
        };
        let observe = match (contract, validate::observes(engine, &component, contract)?) {
            (Contract::V0_3, true) => Some(
                bindings::v0_3::ObservingPluginIndices::new(&instance_pre).map_err(|e| {
                    PluginError::WrongWorld(format!("`{}@0.3.x`: {e:#}", validate::OBSERVE_EXPORT))
                })?,
            ),
            _ => None,
        };
        let mut plugin = Plugin {
            digest: digest.clone(),
            name: known_name.unwrap_or_default().to_string(),
            size: bytes.len(),
            loaded_from,
            instance_pre,
            exports,
            observe,
            contract,
        };
        if known_name.is_none() {
            let outcome = self
                .call(
                    &plugin,
                    CallKind::Name,
                    &self.inner.config.default_limits,
                    CancellationToken::new(),
                    Arc::default(),
                )
                .await;
            let name = match outcome.result {
                Ok(CallReturn::Name(name)) => name,
                Ok(_) => unreachable!("name() returns a name"),
                Err(StepFailure::ExportTypes(why)) => {
                    return Err(PluginError::WrongWorld(format!(
                        "`{}@{}` has the wrong function types: {why}",
                        validate::STEP_EXPORT,
                        plugin.contract.family()
                    )));
                }
                Err(failure) => return Err(PluginError::NameFailed(failure)),
            };
            validate::plugin_name(&name)?;
            plugin.name = name;
        }
        tracing::debug!(digest = %digest, name = %plugin.name, ?loaded_from, "plugin ready");
        Ok(Arc::new(plugin))
    }

    /// The compiled component: from the cache, or compiled on a blocking
    /// thread (seconds, for interpreter-based components) and cached.
    /// Compiles take their turn ([`RuntimeConfig::max_concurrent_compiles`]
    /// at once): each may take hundreds of MiB while it runs, so sixteen
    /// uploads at once must not mean sixteen compiles at once.
    async fn compile(
        &self,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(Component, LoadedFrom), PluginError> {
        let inner = self.inner.clone();
        let digest = digest.clone();
        let cached = tokio::task::spawn_blocking({
            let inner = inner.clone();
            let digest = digest.clone();
            move || {
                inner
                    .cache
                    .as_ref()
                    .and_then(|c| c.load(&inner.engine, &digest))
            }
        })
        .await
        .map_err(|e| PluginError::Host(format!("loading from the cache panicked: {e}")))?;
        if let Some(component) = cached {
            return Ok((component, LoadedFrom::Cache));
        }
        let _turn = inner
            .compiles
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PluginError::Host("the plugin runtime is shutting down".into()))?;
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || {
            let component = Component::new(&inner.engine, &bytes)
                .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
            if let Some(cache) = &inner.cache {
                cache.store(&digest, &component);
            }
            Ok((component, LoadedFrom::Compiled))
        })
        .await
        .map_err(|e| PluginError::Host(format!("compiling panicked: {e}")))?
    }

    /// The limits of a call: the host's defaults, with the step's overrides
    /// clamped to the host's ceilings.
    pub fn limits_for(
        &self,
        timeout_ms: Option<u64>,
        max_memory_bytes: Option<u64>,
        max_output_bytes: Option<u64>,
    ) -> StepLimits {
        let config = &self.inner.config;
        let mut limits = config.default_limits.clone();
        if let Some(ms) = timeout_ms {
            limits.timeout = Duration::from_millis(ms).min(config.max_timeout_ceiling);
        }
        if let Some(bytes) = max_memory_bytes {
            limits.max_memory_bytes = bytes.min(config.max_memory_ceiling);
        }
        if let Some(bytes) = max_output_bytes {
            limits.max_output_bytes = bytes.min(config.max_output_ceiling as u64) as usize;
        }
        limits
    }

    /// Calls `execute`: the output is the JSON object to merge into the
    /// saga's context, checked against the output rules. What the call may
    /// reach is `access`; every granted secret's value is redacted from
    /// what it returns, logs and records.
    pub async fn execute(
        &self,
        plugin: &Arc<Plugin>,
        call: StepCall,
        limits: &StepLimits,
        cancel: CancellationToken,
        access: Arc<Access>,
    ) -> CallOutcome<Progress<Map<String, Value>>> {
        let max_output = limits.max_output_bytes;
        let kind = CallKind::Execute(call);
        let outcome = self
            .spawn_call(plugin, kind, limits, cancel, access.clone())
            .await
            .and_then(|returned| match returned {
                CallReturn::Execute(Ok(text)) => {
                    parse_output(&text, max_output).map(Progress::Done)
                }
                CallReturn::Execute(Err(e)) => not_done(e),
                _ => unreachable!("execute returns its result"),
            });
        redacted(outcome, &access, |output, redactor| {
            if let Progress::Done(map) = output {
                let mut value = Value::Object(std::mem::take(map));
                redactor.redact_json(&mut value);
                if let Value::Object(redacted) = value {
                    *map = redacted;
                }
            }
        })
    }

    /// Calls `observe` (a plugin without it is asked nothing: `Unknown`),
    /// under `access` as [`PluginHost::execute`]. An `applied` output is
    /// checked by the output rules; the resources the call recorded are
    /// what it saw.
    pub async fn observe(
        &self,
        plugin: &Arc<Plugin>,
        call: StepCall,
        limits: &StepLimits,
        cancel: CancellationToken,
        access: Arc<Access>,
    ) -> CallOutcome<Observed> {
        if !plugin.observes() {
            return CallOutcome {
                result: Ok(Observed::Unknown),
                logs: Vec::new(),
                resources: Vec::new(),
                elapsed: Duration::ZERO,
            };
        }
        let max_output = limits.max_output_bytes;
        let outcome = self
            .spawn_call(
                plugin,
                CallKind::Observe(call),
                limits,
                cancel,
                access.clone(),
            )
            .await
            .and_then(|returned| match returned {
                CallReturn::Observe(Ok(GuestObservation::Applied(text))) => {
                    parse_output(&text, max_output).map(Observed::Applied)
                }
                CallReturn::Observe(Ok(GuestObservation::NotApplied)) => Ok(Observed::NotApplied),
                CallReturn::Observe(Ok(GuestObservation::Unknown)) => Ok(Observed::Unknown),
                CallReturn::Observe(Err(e)) => match not_done::<()>(e)? {
                    Progress::Done(()) => unreachable!("an error is not done"),
                    _ => Err(StepFailure::ContractViolation(
                        "observe answered poll-after or wait-for; it may only look".into(),
                    )),
                },
                _ => unreachable!("observe returns an observation"),
            });
        redacted(outcome, &access, |observed, redactor| {
            if let Observed::Applied(map) = observed {
                let mut value = Value::Object(std::mem::take(map));
                redactor.redact_json(&mut value);
                if let Value::Object(redacted) = value {
                    *map = redacted;
                }
            }
        })
    }

    /// Calls `compensate`, under `access` as [`PluginHost::execute`].
    pub async fn compensate(
        &self,
        plugin: &Arc<Plugin>,
        call: StepCall,
        limits: &StepLimits,
        cancel: CancellationToken,
        access: Arc<Access>,
    ) -> CallOutcome<Progress<()>> {
        let kind = CallKind::Compensate(call);
        let outcome = self
            .spawn_call(plugin, kind, limits, cancel, access.clone())
            .await
            .and_then(|returned| match returned {
                CallReturn::Compensate(Ok(())) => Ok(Progress::Done(())),
                CallReturn::Compensate(Err(GuestError::WaitFor(w))) => {
                    Err(StepFailure::ContractViolation(format!(
                        "compensate answered wait-for (wait `{}`); only execute may open a wait",
                        w.name.chars().take(64).collect::<String>()
                    )))
                }
                CallReturn::Compensate(Err(e)) => not_done(e),
                _ => unreachable!("compensate returns its result"),
            });
        redacted(outcome, &access, |_, _| {})
    }

    /// Runs the call on the Wasm threads: in place when called from them
    /// (or when there are none), else handed over to them.
    async fn spawn_call(
        &self,
        plugin: &Arc<Plugin>,
        kind: CallKind,
        limits: &StepLimits,
        cancel: CancellationToken,
        access: Arc<Access>,
    ) -> CallOutcome<CallReturn> {
        let rt = match self.runtime() {
            Some(rt) if !self.on_runtime() => rt,
            _ => {
                // As a spawned call's task would, a panic (a host bug) fails
                // the call, not its caller.
                let call =
                    std::panic::AssertUnwindSafe(self.call(plugin, kind, limits, cancel, access));
                return futures::FutureExt::catch_unwind(call)
                    .await
                    .unwrap_or_else(|_| {
                        CallOutcome::failed(StepFailure::Host("the call panicked".into()))
                    });
            }
        };
        let host = self.clone();
        let plugin = plugin.clone();
        let limits = limits.clone();
        let task = rt.spawn(async move { host.call(&plugin, kind, &limits, cancel, access).await });
        match task.await {
            Ok(outcome) => outcome,
            Err(e) => {
                CallOutcome::failed(StepFailure::Host(format!("the call's task failed: {e}")))
            }
        }
    }

    /// One call in a fresh store: instantiate from the pre-linked instance,
    /// call, drop. The call is raced against its deadline and its cancel,
    /// so it ends on time wherever the guest is: running Wasm (the epoch
    /// callback interrupts it) or waiting in a host call (a sleep, a poll,
    /// an outbound request), where no Wasm runs to notice.
    async fn call(
        &self,
        plugin: &Plugin,
        kind: CallKind,
        limits: &StepLimits,
        cancel: CancellationToken,
        access: Arc<Access>,
    ) -> CallOutcome<CallReturn> {
        let started = Instant::now();
        let _permit = match self.inner.instances.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => {
                return CallOutcome::failed(StepFailure::Host(
                    "the plugin runtime is shutting down".into(),
                ));
            }
        };
        let deadline = started + limits.timeout;
        let http = sandbox::HttpLimits {
            max_requests: self.inner.config.max_http_requests,
            max_response_bytes: self.inner.config.max_http_response_bytes,
        };
        let traceparent = match &kind {
            CallKind::Execute(call) | CallKind::Compensate(call) | CallKind::Observe(call) => {
                call.traceparent.clone()
            }
            CallKind::Name => None,
        };
        let mut store = Store::new(
            &self.inner.engine,
            CallState::new(
                &plugin.name,
                limits,
                access,
                http,
                self.inner.outbound.clone(),
                deadline,
                traceparent,
            ),
        );
        store.limiter(|state| &mut state.limiter);
        if let Some(fuel) = limits.fuel
            && let Err(e) = store.set_fuel(fuel)
        {
            return CallOutcome::failed(StepFailure::Host(format!(
                "fuel limits need fuel metering on (--fuel): {e}"
            )));
        }
        let timeout_ms = limits.timeout.as_millis();
        store.set_epoch_deadline(1);
        let interrupt = cancel.clone();
        store.epoch_deadline_callback(move |_| {
            if interrupt.is_cancelled() {
                return Err(wasmtime::Error::new(Interrupted::Cancelled));
            }
            if Instant::now() >= deadline {
                return Err(wasmtime::Error::new(Interrupted::Deadline(timeout_ms)));
            }
            // Let other calls on this thread run; check again next tick.
            Ok(UpdateDeadline::Yield(1))
        });

        let work = async {
            let instance = plugin.instance_pre.instantiate_async(&mut store).await?;
            let export_types =
                |e: wasmtime::Error| wasmtime::Error::new(ExportTypes(format!("{e:#}")));
            // One path for both versions: the same calls on each version's types.
            macro_rules! call_step {
                ($indices:expr) => {{
                    let typed = $indices.load(&mut store, &instance).map_err(export_types)?;
                    let step = typed.wasaga_step_step();
                    match kind {
                        CallKind::Name => CallReturn::Name(step.call_name(&mut store).await?),
                        CallKind::Execute(call) => CallReturn::Execute(
                            step.call_execute(&mut store, &call.into())
                                .await?
                                .map_err(GuestError::from),
                        ),
                        CallKind::Compensate(call) => CallReturn::Compensate(
                            step.call_compensate(&mut store, &call.into())
                                .await?
                                .map_err(GuestError::from),
                        ),
                        CallKind::Observe(_) => unreachable!("observe is called below"),
                    }
                }};
            }
            if let CallKind::Observe(call) = kind {
                use bindings::v0_3::wasaga::step::types::Observation;
                let indices = plugin.observe.as_ref().expect("checked by the caller");
                let typed = indices.load(&mut store, &instance).map_err(export_types)?;
                let observed = typed
                    .wasaga_step_observe()
                    .call_observe(&mut store, &call.into())
                    .await?
                    .map(|o| match o {
                        Observation::Applied(text) => GuestObservation::Applied(text),
                        Observation::NotApplied => GuestObservation::NotApplied,
                        Observation::Unknown => GuestObservation::Unknown,
                    })
                    .map_err(GuestError::from);
                return Ok(CallReturn::Observe(observed));
            }
            Ok::<_, wasmtime::Error>(match &plugin.exports {
                StepExports::V0_1(indices) => call_step!(indices),
                StepExports::V0_2(indices) => call_step!(indices),
                StepExports::V0_3(indices) => call_step!(indices),
            })
        };
        // Whichever comes first; dropping the call's future abandons the
        // guest wherever it is (its store is dropped with it).
        let result = tokio::select! {
            biased;
            result = work => result,
            _ = cancel.cancelled() => Err(wasmtime::Error::new(Interrupted::Cancelled)),
            _ = tokio::time::sleep_until(deadline.into()) => {
                Err(wasmtime::Error::new(Interrupted::Deadline(timeout_ms)))
            }
        };
        let (logs, resources) = store.into_data().finish();
        let result =
            result.map_err(|e| classify(e, limits, self.inner.config.max_wasm_stack, &logs));
        CallOutcome {
            result,
            logs,
            resources,
            elapsed: started.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_rules() {
        assert_eq!(parse_output("", 100).unwrap(), Map::new());
        assert_eq!(parse_output(r#"{"a":1}"#, 100).unwrap()["a"], 1);
        let cases = [
            ("[1]", "not an array"),
            ("\"x\"", "not a string"),
            ("null", "not null"),
            ("{", "not JSON"),
            (r#"{"__secret":1}"#, "`__secret` starts with `__`"),
        ];
        for (text, why) in cases {
            let err = parse_output(text, 100).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
        let err = parse_output(&format!("{{\"a\":\"{}\"}}", "x".repeat(2048)), 1024).unwrap_err();
        assert_eq!(
            err.to_string(),
            "output of 2.0 KiB exceeds the limit of 1 KiB"
        );
    }

    /// A step built on the SDK allocates from the free end of its initial
    /// memory and never grows it (plugins/sdk/src/heap.rs): a memory limit of
    /// exactly the initial size lets echo run, one byte less does not even
    /// let it start, and a step that does grow is stopped at the same limit.
    #[tokio::test]
    async fn sdk_steps_run_within_their_initial_memory() {
        let host = PluginHost::new(RuntimeConfig {
            wasm_threads: 0,
            max_instances: 4,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let component = |name: &str| {
            let path = format!("{}/../plugins/dist/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let call = |context: &str| StepCall {
            saga_id: "0190c0de-0000-7000-8000-000000000000".into(),
            kind: "test".into(),
            step_index: 3,
            attempt: 1,
            idempotency_key: "test:3:execute".into(),
            inputs: r#"{"message":"hello"}"#.into(),
            context: context.into(),
            received: None,
            traceparent: None,
        };
        let initial_bytes = |plugin: &Plugin| {
            let pages = plugin
                .instance_pre
                .component()
                .resources_required()
                .and_then(|r| r.max_initial_memory_size)
                .expect("a memory");
            pages * 65536
        };
        let run = |plugin: Arc<Plugin>, max_memory_bytes: u64, context: String| {
            let host = host.clone();
            async move {
                let limits = StepLimits {
                    max_memory_bytes,
                    ..StepLimits::default()
                };
                host.execute(
                    &plugin,
                    call(&context),
                    &limits,
                    CancellationToken::new(),
                    Arc::default(),
                )
                .await
                .result
                .map(|progress| match progress {
                    Progress::Done(out) => out,
                    Progress::PollAfter(_) | Progress::WaitFor(_) => panic!("echo does not wait"),
                })
            }
        };

        let echo = host.prepare(&component("echo")).await.unwrap();
        let initial = initial_bytes(&echo);
        // A context of 16 KiB makes the call allocate well beyond a few
        // small strings.
        let big = serde_json::json!({ "earlier": "x".repeat(16 << 10) }).to_string();
        for context in ["{}".to_string(), big] {
            let out = run(echo.clone(), initial, context).await.unwrap();
            assert_eq!(out["echoed_at_step_3"], "hello");
        }
        let err = run(echo.clone(), initial - 1, "{}".into())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("memory limit"), "{err}");

        let hog = host.prepare(&component("hog")).await.unwrap();
        let err = run(hog.clone(), initial_bytes(&hog), "{}".into())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("memory limit"), "{err}");
    }

    /// Compiles take turns: with one allowed at a time, an upload waits
    /// while another compile holds the turn, and goes on once it is free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compiles_take_turns() {
        let host = PluginHost::new(RuntimeConfig {
            wasm_threads: 0,
            max_instances: 4,
            max_concurrent_compiles: 1,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let echo = std::fs::read(format!(
            "{}/../plugins/dist/echo.wasm",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let turn = host.inner.compiles.clone().acquire_owned().await.unwrap();
        let waiting = tokio::spawn({
            let host = host.clone();
            async move { host.prepare(&echo).await.map(|p| p.name.clone()) }
        });
        // A compile of echo takes tens of milliseconds; this one cannot
        // start while the turn is held, however long that is.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "a compile ran without its turn");
        drop(turn);
        assert_eq!(waiting.await.unwrap().unwrap(), "echo");
    }

    /// Every secret's value becomes `[secret:NAME]` in all a call leaves
    /// behind: recorded resources (kind, id and spec), the error, and the
    /// output (log lines are redacted as they are written).
    #[test]
    fn a_calls_traces_of_a_secret_are_redacted() {
        let access = Access {
            redactor: Arc::new(Redactor::new([("tok", "s3cret")])),
            ..Access::default()
        };
        let outcome = CallOutcome::<Progress<Map<String, Value>>> {
            result: Err(StepFailure::Fatal("refused: s3cret".into())),
            logs: Vec::new(),
            resources: vec![RecordedResource {
                kind: "key".into(),
                external_id: "id-s3cret".into(),
                spec: serde_json::json!({"auth": ["Bearer s3cret"]}),
            }],
            elapsed: Duration::ZERO,
        };
        let done = redacted(outcome, &access, |_, _| {});
        assert_eq!(done.resources[0].external_id, "id-[secret:tok]");
        assert_eq!(done.resources[0].spec["auth"][0], "Bearer [secret:tok]");
        assert_eq!(
            done.result.unwrap_err(),
            StepFailure::Fatal("refused: [secret:tok]".into())
        );
    }

    #[test]
    fn bytes_are_written_for_humans() {
        assert_eq!(format_bytes(64 << 20), "64 MiB");
        assert_eq!(format_bytes(512 * 1024), "512 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(100), "100 bytes");
    }
}
