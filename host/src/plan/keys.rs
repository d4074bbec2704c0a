//! A start request's concurrency keys: how many, their limits, and their
//! fields (`{{inputs.PATH}}`, `{{deployment_id}}`) filled in from the
//! start. A template's keys are checked when it is put (fields known,
//! braces closed) and filled at each start from it; a missing value is a
//! `400` naming the field, so a saga never holds a key that says `{{...}}`.

use super::PlanError;
use crate::model::{ConcurrencyKey, MAX_KEY_BYTES, MAX_KEYS};
use serde_json::Value;

/// One `{{...}}` field of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field<'a> {
    DeploymentId,
    /// A path into the inputs, split at dots.
    Inputs(Vec<&'a str>),
}

/// A key split into literal text and fields.
#[derive(Debug, PartialEq, Eq)]
enum Part<'a> {
    Text(&'a str),
    Field(&'a str, Field<'a>),
}

fn parts<'k>(at: &str, key: &'k str) -> Result<Vec<Part<'k>>, PlanError> {
    let mut out = Vec::new();
    let mut rest = key;
    while let Some(open) = rest.find("{{") {
        out.push(Part::Text(&rest[..open]));
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| PlanError::Invalid(format!("{at}: `{{{{` is not closed by `}}}}`")))?;
        let raw = &after[..close];
        let name = raw.trim();
        let field = match name.strip_prefix("inputs.") {
            _ if name == "deployment_id" => Field::DeploymentId,
            Some(path) if path.split('.').all(|p| !p.is_empty()) => {
                Field::Inputs(path.split('.').collect())
            }
            _ => {
                return Err(PlanError::Invalid(format!(
                    "{at}: unknown field `{{{{{raw}}}}}` (a key may use `{{{{inputs.PATH}}}}` and `{{{{deployment_id}}}}`)"
                )));
            }
        };
        out.push(Part::Field(name, field));
        rest = &after[close + 2..];
    }
    if rest.contains("}}") {
        return Err(PlanError::Invalid(format!(
            "{at}: `}}}}` without an opening `{{{{`"
        )));
    }
    out.push(Part::Text(rest));
    Ok(out)
}

/// Checks a list of keys as a template or start states them: at most
/// [`MAX_KEYS`], each limit at least 1, every field known.
pub fn check(keys: &[ConcurrencyKey]) -> Result<(), PlanError> {
    if keys.len() > MAX_KEYS {
        return Err(PlanError::Invalid(format!(
            "`concurrency` may hold at most {MAX_KEYS} keys"
        )));
    }
    for (i, k) in keys.iter().enumerate() {
        let at = format!("concurrency[{i}].key");
        if k.key.trim().is_empty() {
            return Err(PlanError::Invalid(format!("{at} must not be empty")));
        }
        parts(&at, &k.key)?;
        if k.limit == 0 {
            return Err(PlanError::Invalid(format!(
                "concurrency[{i}].limit must be at least 1"
            )));
        }
    }
    Ok(())
}

/// The keys a saga holds: `keys` with their fields filled in from the
/// start's inputs and deployment id; no two alike.
pub fn fill(
    keys: &[ConcurrencyKey],
    inputs: &Value,
    deployment_id: Option<&str>,
) -> Result<Vec<ConcurrencyKey>, PlanError> {
    check(keys)?;
    let mut filled: Vec<ConcurrencyKey> = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let at = format!("concurrency[{i}].key");
        let key = fill_text(&at, &k.key, inputs, deployment_id)?;
        if key.len() > MAX_KEY_BYTES {
            return Err(PlanError::Invalid(format!(
                "{at} is {} bytes once filled in; at most {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        if filled.iter().any(|f| f.key == key) {
            return Err(PlanError::Invalid(format!(
                "{at}: the key `{key}` is named twice"
            )));
        }
        filled.push(ConcurrencyKey {
            key,
            limit: k.limit,
            on_conflict: k.on_conflict,
        });
    }
    Ok(filled)
}

/// Checks a text with fields (a wait's correlation key) as a template
/// states it: braces closed, every field known.
pub fn check_text(at: &str, text: &str) -> Result<(), PlanError> {
    parts(at, text).map(drop)
}

/// `text` with its fields filled in from the start's inputs and
/// deployment id; `at` names the field in errors.
pub fn fill_text(
    at: &str,
    text: &str,
    inputs: &Value,
    deployment_id: Option<&str>,
) -> Result<String, PlanError> {
    let mut filled = String::new();
    for part in parts(at, text)? {
        match part {
            Part::Text(text) => filled.push_str(text),
            Part::Field(name, field) => {
                filled.push_str(&value(at, name, &field, inputs, deployment_id)?)
            }
        }
    }
    Ok(filled)
}

fn value(
    at: &str,
    name: &str,
    field: &Field<'_>,
    inputs: &Value,
    deployment_id: Option<&str>,
) -> Result<String, PlanError> {
    let missing =
        |why: &str| PlanError::Invalid(format!("{at}: `{{{{{name}}}}}` has no value: {why}"));
    match field {
        Field::DeploymentId => deployment_id
            .map(str::to_string)
            .ok_or_else(|| missing("the start gives no `deployment_id`")),
        Field::Inputs(path) => {
            let mut at_value = inputs;
            for segment in path {
                at_value = at_value
                    .get(segment)
                    .ok_or_else(|| missing(&format!("the inputs have no `{}`", path.join("."))))?;
            }
            match at_value {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(missing(&format!(
                    "`inputs.{}` must be a non-empty string, a number or a boolean",
                    path.join(".")
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OnConflict;
    use serde_json::json;

    fn key(text: &str) -> ConcurrencyKey {
        ConcurrencyKey {
            key: text.into(),
            limit: 1,
            on_conflict: OnConflict::Queue,
        }
    }

    fn error(result: Result<Vec<ConcurrencyKey>, PlanError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn fields_are_filled_from_the_inputs_and_deployment() {
        let inputs = json!({"droplet": {"id": 42}, "region": "ams3"});
        let filled = fill(
            &[
                key("droplet:{{inputs.droplet.id}}"),
                key("{{ deployment_id }}/{{inputs.region}}"),
            ],
            &inputs,
            Some("d-1"),
        )
        .unwrap();
        assert_eq!(filled[0].key, "droplet:42");
        assert_eq!(filled[1].key, "d-1/ams3");
    }

    #[test]
    fn a_missing_or_unknown_field_is_named() {
        let inputs = json!({"region": ""});
        let e = error(fill(&[key("droplet:{{inputs.droplet_id}}")], &inputs, None));
        assert!(
            e.contains("concurrency[0].key") && e.contains("droplet_id"),
            "{e}"
        );
        let e = error(fill(&[key("{{inputs.region}}")], &inputs, None));
        assert!(e.contains("non-empty string"), "{e}");
        let e = error(fill(&[key("{{deployment_id}}")], &inputs, None));
        assert!(e.contains("deployment_id"), "{e}");
        let e = error(fill(&[key("x:{{saga_id}}")], &inputs, None));
        assert!(e.contains("unknown field `{{saga_id}}`"), "{e}");
        let e = error(fill(&[key("x:{{inputs.a")], &inputs, None));
        assert!(e.contains("not closed"), "{e}");
    }

    #[test]
    fn limits_counts_and_repeats_are_checked() {
        let mut zero = key("a");
        zero.limit = 0;
        assert!(error(fill(&[zero], &json!({}), None)).contains("concurrency[0].limit"));
        let five: Vec<_> = (0..5).map(|i| key(&format!("k{i}"))).collect();
        assert!(error(fill(&five, &json!({}), None)).contains("at most 4"));
        let twice = [key("a:{{inputs.x}}"), key("a:1")];
        assert!(error(fill(&twice, &json!({"x": 1}), None)).contains("named twice"));
        assert!(error(fill(&[key("  ")], &json!({}), None)).contains("must not be empty"));
    }
}
