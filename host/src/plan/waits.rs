//! A plan's waits (docs/waits.md): every rule a `{"wait": {...}}` element
//! must pass when a start or a template states it (a unique name that is
//! a path segment, a timeout in range, a schema within the template
//! bounds that its default passes, approvers as labels), and its
//! correlation key filled in at start like a concurrency key.

use super::{InputsSchema, PlanError, check_label, is_segment_name, keys};
use crate::config::{SchemaLimits, WAIT_TIMEOUT_RANGE};
use crate::model::{
    Digest, MAX_APPROVERS, MAX_KEY_BYTES, OnTimeout, StepSpec, StepWait, WaitRequest, WaitSpec,
};
use serde_json::Value;

/// Longest wait name.
pub const MAX_WAIT_NAME: usize = 64;

/// A wait as its plan pins it (its correlation key not filled in yet).
/// `names`: the waits already in the plan.
pub(super) fn plan(
    i: usize,
    wait: &WaitRequest,
    limits: &SchemaLimits,
    names: &mut Vec<String>,
) -> Result<StepSpec, PlanError> {
    let at = format!("steps[{i}].wait");
    let invalid = |what: String| PlanError::Invalid(format!("{at}.{what}"));
    if !is_segment_name(&wait.name, MAX_WAIT_NAME) {
        return Err(invalid(format!(
            "name `{}` must be 1 to {MAX_WAIT_NAME} letters, digits, `.`, `_` or `-`, starting \
             with a letter or digit",
            wait.name.chars().take(64).collect::<String>()
        )));
    }
    if names.contains(&wait.name) {
        return Err(invalid(format!(
            "name `{}` is used by another wait in this plan",
            wait.name
        )));
    }
    names.push(wait.name.clone());
    let timeout = humantime::parse_duration(&wait.timeout).map_err(|e| {
        invalid(format!(
            "timeout `{}` is not a duration like `72h` or `15m`: {e}",
            wait.timeout.chars().take(64).collect::<String>()
        ))
    })?;
    if !WAIT_TIMEOUT_RANGE.contains(&timeout) {
        return Err(invalid(format!(
            "timeout must be {} to {}",
            humantime::format_duration(*WAIT_TIMEOUT_RANGE.start()),
            humantime::format_duration(*WAIT_TIMEOUT_RANGE.end())
        )));
    }
    let schema = match &wait.schema {
        None => None,
        Some(schema) if !schema.is_object() && !schema.is_boolean() => {
            return Err(invalid("schema must be a JSON Schema (an object)".into()));
        }
        Some(schema) => Some(
            InputsSchema::admit(schema, limits)
                .map_err(|e| rename_schema_error(e, &format!("{at}.schema")))?,
        ),
    };
    let on_timeout_default = match &wait.on_timeout {
        None | Some(OnTimeout::Fail(true)) => None,
        Some(OnTimeout::Fail(false)) => {
            return Err(invalid(
                "on_timeout: `{\"fail\": false}` says nothing; give `{\"default\": {...}}` to go \
                 on with a payload"
                    .into(),
            ));
        }
        Some(OnTimeout::Default(payload)) => {
            if let Some(schema) = &schema {
                schema.check(payload).map_err(|e| {
                    invalid(format!(
                        "on_timeout.default does not pass the wait's schema: {e}"
                    ))
                })?;
            }
            Some(payload.clone())
        }
    };
    let approvals = wait.approvals.unwrap_or(1);
    if !(1..=MAX_APPROVERS as u32).contains(&approvals) {
        return Err(invalid(format!("approvals must be 1 to {MAX_APPROVERS}")));
    }
    if wait.approvers.len() > MAX_APPROVERS {
        return Err(invalid(format!(
            "approvers may name at most {MAX_APPROVERS} labels"
        )));
    }
    for approver in &wait.approvers {
        check_label(&format!("{at}.approvers[]"), approver)?;
    }
    if let Some(key) = &wait.correlation_key {
        let at = format!("{at}.correlation_key");
        if key.trim().is_empty() {
            return Err(PlanError::Invalid(format!("{at} must not be empty")));
        }
        keys::check_text(&at, key)?;
    }
    Ok(StepSpec {
        name: wait.name.clone(),
        plugin: Digest::wait(),
        max_attempts: 1,
        timeout_ms: timeout.as_millis() as u64,
        max_memory_bytes: None,
        max_output_bytes: None,
        max_wait_ms: None,
        semantics: Default::default(),
        wait: Some(WaitSpec {
            schema: wait.schema.clone(),
            timeout_ms: timeout.as_millis() as u64,
            on_timeout_default,
            approvals,
            approvers: wait.approvers.clone(),
            correlation_key: wait.correlation_key.clone(),
        }),
    })
}

/// A wait a step asked for with `wait-for` (contract 0.3.0), checked by
/// the rules a plan's wait passes: a name that is a path segment and no
/// plan wait's, a timeout in range, a schema (JSON text) within `limits`.
/// The reason, for the step's error, when it does not pass.
pub fn step_wait(
    name: &str,
    timeout_ms: u64,
    schema: Option<&str>,
    plan: &[StepSpec],
    limits: &SchemaLimits,
) -> Result<StepWait, String> {
    let shown: String = name.chars().take(64).collect();
    if !is_segment_name(name, MAX_WAIT_NAME) {
        return Err(format!(
            "wait-for: name `{shown}` must be 1 to {MAX_WAIT_NAME} letters, digits, `.`, `_` or \
             `-`, starting with a letter or digit"
        ));
    }
    if plan.iter().any(|s| s.wait.is_some() && s.name == name) {
        return Err(format!(
            "wait-for: name `{shown}` is the name of a wait in the saga's plan"
        ));
    }
    let timeout = std::time::Duration::from_millis(timeout_ms);
    if !WAIT_TIMEOUT_RANGE.contains(&timeout) {
        return Err(format!(
            "wait-for: timeout-ms must be {} to {} ms",
            WAIT_TIMEOUT_RANGE.start().as_millis(),
            WAIT_TIMEOUT_RANGE.end().as_millis()
        ));
    }
    let schema = match schema {
        None => None,
        Some(text) => {
            let schema: Value = serde_json::from_str(text)
                .map_err(|e| format!("wait-for: the schema is not JSON: {e}"))?;
            if !schema.is_object() && !schema.is_boolean() {
                return Err("wait-for: the schema must be a JSON Schema (an object)".into());
            }
            InputsSchema::admit(&schema, limits)
                .map_err(|e| format!("wait-for: {}", rename_schema_error(e, "schema")))?;
            Some(schema)
        }
    };
    Ok(StepWait {
        name: name.to_string(),
        timeout_ms,
        schema,
    })
}

/// Fills in the correlation keys of a plan's waits from the start.
pub(super) fn fill(
    plan: &mut [StepSpec],
    inputs: &Value,
    deployment_id: Option<&str>,
) -> Result<(), PlanError> {
    for (i, step) in plan.iter_mut().enumerate() {
        let Some(key) = step.wait.as_mut().and_then(|w| w.correlation_key.as_mut()) else {
            continue;
        };
        let at = format!("steps[{i}].wait.correlation_key");
        let filled = keys::fill_text(&at, key, inputs, deployment_id)?;
        if filled.len() > MAX_KEY_BYTES {
            return Err(PlanError::Invalid(format!(
                "{at} is {} bytes once filled in; at most {MAX_KEY_BYTES}",
                filled.len()
            )));
        }
        *key = filled;
    }
    Ok(())
}

/// A schema error worded for `inputs_schema`, worded for `field`.
fn rename_schema_error(e: PlanError, field: &str) -> PlanError {
    match e {
        PlanError::Invalid(message) => {
            PlanError::Invalid(message.replace("`inputs_schema`", &format!("`{field}`")))
        }
        other => other,
    }
}
