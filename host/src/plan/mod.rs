//! Turning a start request into a saga: every rule a start request must
//! pass, in one place. The API's start, a template's put and a start from a
//! template all come through here.
//!
//! A request names its steps by plugin reference (a digest, or a name
//! meaning its current upload) with optional per-step settings; the plan
//! pins each to a digest and fills in the defaults, checking every setting
//! against the host's ceilings. Errors say which step and which field. A
//! template is a start request kept under a name and a version, with an
//! optional JSON Schema its inputs must pass (checked with `jsonschema`;
//! an error names the JSON pointer and the rule that failed). A schema is
//! code the host runs on every start, so it is bounded when it is put
//! (size, nesting, `$ref`s expanded, regex backtracking: `SchemaLimits`),
//! compiled once per template version, and checked off the request
//! threads within a deadline.

mod keys;
mod waits;

pub use waits::{MAX_WAIT_NAME, step_wait};

use crate::config::{RuntimeConfig, SchemaLimits};
use crate::model::{ConcurrencyKey, Digest, PluginInfo, SagaRun, StepSpec, Template, Timestamp};
pub use crate::model::{StepOptions, StepRequest};
use crate::store::{Store, StoreError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use utoipa::ToSchema;

/// Most steps in one saga.
pub const MAX_STEPS: usize = 1_000;
/// Longest kind, deployment id, triggered-by, or idempotency key.
pub const MAX_LABEL: usize = 256;
/// Highest `max_attempts` a step may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// `POST /v1/sagas` body.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSaga {
    /// What the saga does, e.g. "provision". With a template, defaults to
    /// the template's name.
    #[serde(default)]
    pub kind: Option<String>,
    /// The steps in order: each a plugin reference (digest or name), or an
    /// object with the reference and per-step settings. Absent with a
    /// template.
    #[serde(default, deserialize_with = "crate::model::deserialize_steps")]
    pub steps: Option<Vec<StepRequest>>,
    /// Start from this template's latest version instead of `steps`.
    #[serde(default)]
    pub template: Option<String>,
    /// A JSON object every step sees; fixed for the saga's life.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[serde(default)]
    pub deployment_id: Option<String>,
    #[serde(default)]
    pub triggered_by: Option<String>,
    /// Concurrency keys the saga holds for its whole life (added to its
    /// template's): docs/flow-control.md.
    #[serde(default)]
    pub concurrency: Option<Vec<ConcurrencyKey>>,
}

/// `PUT /v1/templates/{name}` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    #[serde(default)]
    pub description: Option<String>,
    /// The steps, as in a start request.
    #[serde(default, deserialize_with = "crate::model::deserialize_steps")]
    pub steps: Option<Vec<StepRequest>>,
    /// A JSON Schema the inputs of every start from this template must
    /// pass.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub inputs_schema: Option<Value>,
    /// Concurrency keys every start from it holds; their fields are filled
    /// in at each start.
    #[serde(default)]
    pub concurrency: Option<Vec<ConcurrencyKey>>,
}

/// Longest template description.
pub const MAX_DESCRIPTION: usize = 4_096;

/// Why a request cannot become a saga.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A malformed field (400); the message names it.
    #[error("{0}")]
    Invalid(String),
    /// A required field is missing (400, like malformed JSON).
    #[error("invalid JSON: missing field {0}")]
    Missing(&'static str),
    /// No template of that name (422).
    #[error("no template `{0}`")]
    UnknownTemplate(String),
    /// The inputs fail the template's schema (422): where and which rule.
    #[error("{0}")]
    InputsRejected(String),
    /// Plugin references that resolve to nothing (422).
    #[error("unknown plugin{}: {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
    UnknownPlugins(Vec<String>),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A label field: 1 to [`MAX_LABEL`] bytes.
pub fn check_label(field: &str, value: &str) -> Result<(), PlanError> {
    if value.is_empty() || value.len() > MAX_LABEL {
        return Err(PlanError::Invalid(format!(
            "`{field}` must be 1 to {MAX_LABEL} bytes"
        )));
    }
    Ok(())
}

/// The saga's inputs: a JSON object (absent or null is `{}`).
pub fn inputs_object(inputs: Option<Value>) -> Result<Value, PlanError> {
    match inputs {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::Object(map)) => Ok(Value::Object(map)),
        Some(_) => Err(PlanError::Invalid("`inputs` must be a JSON object".into())),
    }
}

/// A plugin reference: a digest, or a name meaning its current upload.
pub async fn resolve(store: &dyn Store, reference: &str) -> Result<Option<PluginInfo>, StoreError> {
    if reference.starts_with("sha256:") {
        let Ok(digest) = reference.parse::<Digest>() else {
            return Ok(None);
        };
        return store.plugin(&digest).await;
    }
    store.plugin_by_name(reference).await
}

/// Whether `name` is 1 to `max` letters, digits, `.`, `_` or `-`,
/// starting with a letter or digit: a name that is a path segment
/// (templates, budgets).
pub fn is_segment_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A template name: 1 to 128 letters, digits, `.`, `_` or `-`, starting
/// with a letter or digit (it is a path segment).
pub fn check_template_name(name: &str) -> Result<(), PlanError> {
    if is_segment_name(name, 128) {
        Ok(())
    } else {
        Err(PlanError::Invalid(format!(
            "template name `{}` must be 1 to 128 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
            name.chars().take(64).collect::<String>()
        )))
    }
}

/// A template's inputs schema, compiled: remote `$ref`s are not fetched,
/// and every `pattern` runs with a backtracking limit.
pub struct InputsSchema(jsonschema::Validator);

impl InputsSchema {
    /// Compiles a schema as stored (bounds were checked at its put).
    pub fn compile(schema: &Value, limits: &SchemaLimits) -> Result<InputsSchema, PlanError> {
        jsonschema::options()
            .with_pattern_options(
                jsonschema::PatternOptions::fancy_regex()
                    .backtrack_limit(limits.regex_backtrack_limit)
                    .size_limit(1 << 20)
                    .dfa_size_limit(1 << 20),
            )
            .build(schema)
            .map(InputsSchema)
            .map_err(|e| {
                PlanError::Invalid(format!("`inputs_schema` is not a valid JSON Schema: {e}"))
            })
    }

    /// Checks a schema a template put brings: its size, nesting, `$ref`s
    /// (local, not recursive) and its size with every `$ref` expanded,
    /// then compiles it.
    pub fn admit(schema: &Value, limits: &SchemaLimits) -> Result<InputsSchema, PlanError> {
        let bytes = serde_json::to_string(schema).map_or(usize::MAX, |t| t.len());
        if bytes > limits.max_bytes {
            return Err(PlanError::Invalid(format!(
                "`inputs_schema` is {bytes} bytes; at most {} are allowed",
                limits.max_bytes
            )));
        }
        let mut cost = SchemaCost {
            root: schema,
            limits,
            expanded: 0,
            expanding: Vec::new(),
        };
        cost.walk(schema, "", 0)?;
        InputsSchema::compile(schema, limits)
    }

    /// The first few ways `inputs` fails the schema, each with its JSON
    /// pointer and the rule (the schema keyword) it breaks. `is_valid`
    /// first: collecting errors costs more than deciding.
    pub fn check(&self, inputs: &Value) -> Result<(), PlanError> {
        if self.0.is_valid(inputs) {
            return Ok(());
        }
        let failures: Vec<String> = self
            .0
            .iter_errors(inputs)
            .take(5)
            .map(|e| {
                let pointer = e.instance_path.to_string();
                let schema_path = e.schema_path.to_string();
                let rule = schema_path.rsplit('/').next().unwrap_or_default();
                let at = if pointer.is_empty() {
                    "at the inputs' root (``)".to_string()
                } else {
                    format!("at `{pointer}`")
                };
                let mut message = e.to_string();
                if message.len() > 300 {
                    let mut cut = 300;
                    while !message.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    message.truncate(cut);
                    message.push('…');
                }
                format!("{at}: {message} (rule `{rule}`, schema `{schema_path}`)")
            })
            .collect();
        Err(PlanError::InputsRejected(format!(
            "the inputs fail the template's schema: {}",
            failures.join("; ")
        )))
    }
}

/// The walk [`InputsSchema::admit`] makes: nesting, `$ref`s, and the
/// number of subschemas (JSON objects) once every `$ref` is expanded.
struct SchemaCost<'a> {
    root: &'a Value,
    limits: &'a SchemaLimits,
    expanded: usize,
    /// The `$ref`s being expanded (a cycle is refused).
    expanding: Vec<String>,
}

impl SchemaCost<'_> {
    fn walk(&mut self, node: &Value, at: &str, depth: usize) -> Result<(), PlanError> {
        if depth > self.limits.max_depth {
            return Err(PlanError::Invalid(format!(
                "`inputs_schema` nests deeper than {} levels (at `{at}`)",
                self.limits.max_depth
            )));
        }
        match node {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(item, &format!("{at}/{i}"), depth + 1)?;
                }
            }
            Value::Object(map) => {
                self.expanded += 1;
                if self.expanded > self.limits.max_expanded {
                    return Err(PlanError::Invalid(format!(
                        "`inputs_schema` is too costly to check: with its `$ref`s expanded it has \
                         more than {} subschemas (a chain of `anyOf`/`oneOf` through `$ref`s doubles \
                         at each link)",
                        self.limits.max_expanded
                    )));
                }
                for keyword in ["$dynamicRef", "$recursiveRef"] {
                    if map.contains_key(keyword) {
                        return Err(PlanError::Invalid(format!(
                            "`inputs_schema` uses `{keyword}` (at `{at}`), which templates do not take"
                        )));
                    }
                }
                if let Some(reference) = map.get("$ref") {
                    self.reference(reference, at)?;
                }
                for (key, value) in map {
                    // `enum`, `const` and `examples` hold instances, not
                    // subschemas: the size limit bounds them.
                    if matches!(key.as_str(), "enum" | "const" | "examples" | "default") {
                        continue;
                    }
                    self.walk(value, &format!("{at}/{key}"), depth + 1)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn reference(&mut self, reference: &Value, at: &str) -> Result<(), PlanError> {
        let Some(text) = reference.as_str() else {
            return Err(PlanError::Invalid(format!(
                "`inputs_schema`: the `$ref` at `{at}` is not a string"
            )));
        };
        let Some(pointer) = text.strip_prefix('#') else {
            return Err(PlanError::Invalid(format!(
                "`inputs_schema`: the `$ref` `{}` at `{at}` is not local (`#/...`); a template's \
                 schema refers only within itself",
                text.chars().take(100).collect::<String>()
            )));
        };
        if self.expanding.iter().any(|r| r == text) {
            return Err(PlanError::Invalid(format!(
                "`inputs_schema` is recursive (`$ref` `{}` at `{at}` refers to itself through \
                 others), which templates do not take",
                text.chars().take(100).collect::<String>()
            )));
        }
        let decoded = percent_decode(pointer);
        let Some(target) = self.root.pointer(&decoded) else {
            return Err(PlanError::Invalid(format!(
                "`inputs_schema`: the `$ref` `{}` at `{at}` points at nothing",
                text.chars().take(100).collect::<String>()
            )));
        };
        if self.expanding.len() >= self.limits.max_depth {
            return Err(PlanError::Invalid(format!(
                "`inputs_schema`: its `$ref`s lead through more than {} others (at `{at}`)",
                self.limits.max_depth
            )));
        }
        // Nesting counts within the document; a chain of `$ref`s is
        // bounded by the line above and its cost by `max_expanded`.
        self.expanding.push(text.to_string());
        let walked = self.walk(target, text, 0);
        self.expanding.pop();
        walked
    }
}

/// A JSON pointer from a URI fragment (`%25` and the like decoded).
fn percent_decode(fragment: &str) -> String {
    percent_encoding::percent_decode_str(fragment)
        .decode_utf8_lossy()
        .into_owned()
}

/// Compiled schemas by template name and version, and the blocking
/// threads that check inputs against them.
struct SchemaChecks {
    compiled: Mutex<HashMap<(String, u32), Arc<InputsSchema>>>,
    permits: Arc<tokio::sync::Semaphore>,
}

/// The host's defaults and ceilings a plan is checked against.
pub struct Planner {
    pub runtime: RuntimeConfig,
    pub default_max_attempts: u32,
    /// The longest `max_wait_ms` a step may ask for.
    pub max_wait_ceiling: Duration,
    pub schema_limits: SchemaLimits,
    checks: SchemaChecks,
}

impl fmt::Debug for Planner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Planner")
            .field("default_max_attempts", &self.default_max_attempts)
            .field("schema_limits", &self.schema_limits)
            .finish_non_exhaustive()
    }
}

impl Planner {
    pub fn new(
        runtime: RuntimeConfig,
        default_max_attempts: u32,
        max_wait_ceiling: Duration,
        schema_limits: SchemaLimits,
    ) -> Planner {
        let permits = Arc::new(tokio::sync::Semaphore::new(
            schema_limits.concurrent_checks.max(1),
        ));
        Planner {
            runtime,
            default_max_attempts,
            max_wait_ceiling,
            schema_limits,
            checks: SchemaChecks {
                compiled: Mutex::new(HashMap::new()),
                permits,
            },
        }
    }

    /// Checks a start's inputs against its template's schema: compiled
    /// once per template version, checked on a blocking thread (at most
    /// `concurrent_checks` at once), within `check_deadline`.
    async fn check_inputs(&self, template: &Template, inputs: &Value) -> Result<(), PlanError> {
        let Some(schema) = &template.inputs_schema else {
            return Ok(());
        };
        let limits = &self.schema_limits;
        let deadline = tokio::time::Instant::now() + limits.check_deadline;
        let too_slow = || {
            PlanError::InputsRejected(format!(
                "checking the inputs against the template's schema took longer than {} ms; they \
                 were refused (a simpler schema, or smaller inputs, check in time)",
                limits.check_deadline.as_millis()
            ))
        };
        let Ok(Ok(permit)) =
            tokio::time::timeout_at(deadline, self.checks.permits.clone().acquire_owned()).await
        else {
            return Err(too_slow());
        };
        let key = (template.name.clone(), template.version);
        let cached = self
            .checks
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let (schema, inputs, limits_owned) = (schema.clone(), inputs.clone(), limits.clone());
        let checking = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let compiled = match cached {
                Some(compiled) => compiled,
                None => Arc::new(InputsSchema::compile(&schema, &limits_owned)?),
            };
            compiled.check(&inputs).map(|()| compiled)
        });
        let compiled = match tokio::time::timeout_at(deadline, checking).await {
            Err(_) => return Err(too_slow()),
            Ok(Err(join)) => {
                return Err(PlanError::InputsRejected(format!(
                    "checking the inputs against the template's schema failed: {join}"
                )));
            }
            Ok(Ok(checked)) => checked?,
        };
        let mut compiled_all = self
            .checks
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if compiled_all.len() >= limits.cached {
            compiled_all.clear();
        }
        compiled_all.insert(key, compiled);
        Ok(())
    }

    /// A saga from a start request: from its `steps`, or from the latest
    /// version of its `template` (inputs checked against the template's
    /// schema, `kind` defaulting to the template's name, the template and
    /// version recorded). Every plugin is pinned to its digest now.
    pub async fn start(
        &self,
        store: &dyn Store,
        request: StartSaga,
        actor: Option<String>,
    ) -> Result<SagaRun, PlanError> {
        let mut request = request;
        request.triggered_by = request.triggered_by.take().or_else(|| actor.clone());
        let mut saga = self.plan_start(store, request).await?;
        if let Some(actor) = actor {
            // Who started it, as authenticated: `triggered_by` is what the
            // request said.
            saga.actions.push(crate::model::Action {
                action: crate::model::ActionKind::Start,
                actor: Some(actor),
                at: saga.created_at,
                note: None,
                step_index: None,
                payload: None,
            });
        }
        Ok(saga)
    }

    /// [`Planner::start`] but for the actor's action.
    async fn plan_start(
        &self,
        store: &dyn Store,
        request: StartSaga,
    ) -> Result<SagaRun, PlanError> {
        let triggered_by = request.triggered_by;
        let asked = request.concurrency.unwrap_or_default();
        keys::check(&asked)?;
        let mut saga = match (request.steps, request.template) {
            (Some(_), Some(_)) => {
                return Err(PlanError::Invalid(
                    "give either `steps` or `template`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(PlanError::Missing(
                    "`steps` (or a `template` to start from)",
                ));
            }
            (Some(steps), None) => {
                let kind = request.kind.ok_or(PlanError::Missing("`kind`"))?;
                let plan = self.steps(store, &steps).await?;
                self.saga(
                    kind,
                    plan,
                    request.inputs,
                    request.deployment_id,
                    triggered_by,
                )?
            }
            (None, Some(name)) => {
                let template = store
                    .template(&name, None)
                    .await?
                    .ok_or_else(|| PlanError::UnknownTemplate(name.clone()))?;
                let inputs = inputs_object(request.inputs)?;
                self.check_inputs(&template, &inputs).await?;
                let plan = self.steps(store, &template_steps(&template)?).await?;
                let kind = request.kind.unwrap_or_else(|| template.name.clone());
                let mut saga = self.saga(
                    kind,
                    plan,
                    Some(inputs),
                    request.deployment_id,
                    triggered_by,
                )?;
                saga.template = Some(template.name);
                saga.template_version = Some(template.version);
                saga.concurrency = template.concurrency;
                saga
            }
        };
        saga.concurrency.extend(asked);
        waits::fill(&mut saga.plan, &saga.inputs, saga.deployment_id.as_deref())?;
        saga.concurrency = keys::fill(
            &saga.concurrency,
            &saga.inputs,
            saga.deployment_id.as_deref(),
        )?;
        Ok(saga)
    }

    /// Checks a redrive's `inputs_patch` (docs/recovery.md): a JSON object,
    /// merged into the saga's inputs (RFC 7396), the result checked against
    /// the schema of the template version the saga started from.
    pub async fn check_redrive_inputs(
        &self,
        store: &dyn Store,
        saga: &SagaRun,
        patch: Option<&Value>,
    ) -> Result<(), PlanError> {
        let Some(patch) = patch else {
            return Ok(());
        };
        if !patch.is_object() {
            return Err(PlanError::Invalid(
                "`inputs_patch` must be a JSON object (a merge patch: `null` removes a field)"
                    .into(),
            ));
        }
        let inputs = crate::model::patched_inputs(&saga.inputs, Some(patch));
        let (Some(name), Some(version)) = (&saga.template, saga.template_version) else {
            return Ok(());
        };
        let template = store
            .template(name, Some(version))
            .await?
            .ok_or_else(|| PlanError::UnknownTemplate(format!("{name} (version {version})")))?;
        self.check_inputs(&template, &inputs).await
    }

    /// Checks a template as a put would store it: its steps as a start
    /// would plan them today (unknown plugins named), its schema compiled.
    /// Returns the steps as they are stored.
    pub async fn template(
        &self,
        store: &dyn Store,
        request: &TemplateRequest,
    ) -> Result<Vec<Value>, PlanError> {
        if let Some(description) = &request.description
            && description.len() > MAX_DESCRIPTION
        {
            return Err(PlanError::Invalid(format!(
                "`description` must be at most {MAX_DESCRIPTION} bytes"
            )));
        }
        let steps = request
            .steps
            .as_ref()
            .ok_or(PlanError::Missing("`steps`"))?;
        self.steps(store, steps).await?;
        keys::check(request.concurrency.as_deref().unwrap_or_default())?;
        if let Some(schema) = &request.inputs_schema {
            if !schema.is_object() && !schema.is_boolean() {
                return Err(PlanError::Invalid(
                    "`inputs_schema` must be a JSON Schema (an object)".into(),
                ));
            }
            InputsSchema::admit(schema, &self.schema_limits)?;
        }
        Ok(steps
            .iter()
            .map(|s| serde_json::to_value(s).expect("a step serializes"))
            .collect())
    }

    /// Pins `steps` to digests with their settings checked and defaulted.
    pub async fn steps(
        &self,
        store: &dyn Store,
        steps: &[StepRequest],
    ) -> Result<Vec<StepSpec>, PlanError> {
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(PlanError::Invalid(format!(
                "`steps` must hold 1 to {MAX_STEPS} steps"
            )));
        }
        let runtime = &self.runtime;
        let defaults = &runtime.default_limits;
        let mut plan = Vec::with_capacity(steps.len());
        let mut unknown = Vec::new();
        // A plan often names one plugin several times: look each up once.
        let mut resolved: HashMap<String, Option<PluginInfo>> = HashMap::new();
        let mut waits = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let options = match step {
                StepRequest::Wait(element) => {
                    plan.push(waits::plan(
                        i,
                        &element.wait,
                        &self.schema_limits,
                        &mut waits,
                    )?);
                    continue;
                }
                step => step.options().expect("a plugin step has options"),
            };
            let max_attempts = options.max_attempts.unwrap_or(self.default_max_attempts);
            if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
                return Err(PlanError::Invalid(format!(
                    "steps[{i}].max_attempts must be 1 to {MAX_ATTEMPTS}"
                )));
            }
            let ceiling_ms = runtime.max_timeout_ceiling.as_millis() as u64;
            let timeout_ms = options
                .timeout_ms
                .unwrap_or(defaults.timeout.as_millis() as u64);
            if !(1..=ceiling_ms).contains(&timeout_ms) {
                return Err(PlanError::Invalid(format!(
                    "steps[{i}].timeout_ms must be 1 to {ceiling_ms}"
                )));
            }
            if let Some(bytes) = options.max_memory_bytes
                && (bytes == 0 || bytes > runtime.max_memory_ceiling)
            {
                return Err(PlanError::Invalid(format!(
                    "steps[{i}].max_memory_bytes must be 1 to {} (this host's ceiling)",
                    runtime.max_memory_ceiling
                )));
            }
            if let Some(bytes) = options.max_output_bytes
                && (bytes == 0 || bytes > runtime.max_output_ceiling as u64)
            {
                return Err(PlanError::Invalid(format!(
                    "steps[{i}].max_output_bytes must be 1 to {} (this host's ceiling)",
                    runtime.max_output_ceiling
                )));
            }
            let wait_ceiling = self.max_wait_ceiling.as_millis() as u64;
            if let Some(ms) = options.max_wait_ms
                && ms > wait_ceiling
            {
                return Err(PlanError::Invalid(format!(
                    "steps[{i}].max_wait_ms must be at most {wait_ceiling} (this host's ceiling)"
                )));
            }
            if options.plugin.is_empty() || options.plugin.len() > MAX_LABEL {
                return Err(PlanError::Invalid(format!(
                    "steps[{i}]: a plugin reference is 1 to {MAX_LABEL} bytes"
                )));
            }
            let info = match resolved.get(&options.plugin) {
                Some(info) => info.clone(),
                None => {
                    let info = resolve(store, &options.plugin).await?;
                    resolved.insert(options.plugin.clone(), info.clone());
                    info
                }
            };
            match info {
                Some(info) => plan.push(StepSpec {
                    name: info.name,
                    plugin: info.digest,
                    max_attempts,
                    timeout_ms,
                    max_memory_bytes: options.max_memory_bytes,
                    max_output_bytes: options.max_output_bytes,
                    max_wait_ms: options.max_wait_ms,
                    semantics: options.semantics.unwrap_or_default(),
                    wait: None,
                }),
                None => unknown.push(format!("`{}` (steps[{i}])", options.plugin)),
            }
        }
        if !unknown.is_empty() {
            return Err(PlanError::UnknownPlugins(unknown));
        }
        Ok(plan)
    }

    /// A pending saga from its parts, every field checked.
    pub fn saga(
        &self,
        kind: String,
        plan: Vec<StepSpec>,
        inputs: Option<Value>,
        deployment_id: Option<String>,
        triggered_by: Option<String>,
    ) -> Result<SagaRun, PlanError> {
        check_label("kind", &kind)?;
        for (field, value) in [
            ("deployment_id", &deployment_id),
            ("triggered_by", &triggered_by),
        ] {
            if let Some(value) = value {
                check_label(field, value)?;
            }
        }
        Ok(SagaRun::pending(
            kind,
            plan,
            inputs_object(inputs)?,
            deployment_id,
            triggered_by,
            Timestamp::now(),
        ))
    }
}

/// A stored template's steps, as a start request's.
fn template_steps(template: &Template) -> Result<Vec<StepRequest>, PlanError> {
    crate::model::deserialize_steps(Value::Array(template.steps.clone()))
        .map(Option::unwrap_or_default)
        .map_err(|e: serde_json::Error| {
            PlanError::Invalid(format!(
                "template `{}` is stored broken: {e}",
                template.name
            ))
        })
}
