//! `observed`: `http-resource` on contract 0.3.0, for the tests of what
//! 0.3.0 adds. `execute` creates a resource at the test cloud (made safe to
//! repeat by the idempotency key) and records it; `compensate` deletes it;
//! `observe` asks the cloud for the resource made under the call's
//! idempotency key and says `applied` (recording the resource as it is
//! now) or `not-applied`, which is what the host asks after a crash
//! mid-call and what drift detection compares.
//!
//! Inputs: `api` (the cloud's base URL), `name` (of the resource),
//! optionally `secret` (the granted secret holding the token; default
//! `cloud-token`), and `approval`: `{"name", "timeout_ms", "schema"?}`,
//! a wait the step opens with `wait-for` before it creates anything; the
//! payload it receives is in the output as `approved`.

use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use wasaga_step::http::Request;
use wasaga_step::{
    Observation, Output, SagaState, Step, StepResult, export_step, fatal, host, retryable, wait_for,
};

struct Observed;

#[derive(Deserialize)]
struct Inputs {
    api: String,
    name: String,
    #[serde(default = "default_secret")]
    secret: String,
    approval: Option<Approval>,
}

#[derive(Deserialize)]
struct Approval {
    name: String,
    timeout_ms: u64,
    schema: Option<Value>,
}

fn default_secret() -> String {
    "cloud-token".into()
}

impl Inputs {
    fn auth(&self) -> String {
        format!("Bearer {{{{secret:{}}}}}", self.secret)
    }
}

/// A provider's refusal: retry what may pass later, not what will not.
fn refused(what: &str, status: u16, body: &str) -> wasaga_step::StepError {
    let message = format!("{what}: the API answered {status}: {body}");
    if status == 429 || status >= 500 {
        retryable(message)
    } else {
        fatal(message)
    }
}

impl Step for Observed {
    fn name() -> String {
        "observed".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        let inputs: Inputs = state.inputs()?;
        let approved = match (&inputs.approval, state.received::<Value>()?) {
            (Some(a), None) => {
                host::info(&format!("asking for `{}`", a.name));
                return Err(wait_for(
                    a.name.clone(),
                    Duration::from_millis(a.timeout_ms),
                    a.schema.clone(),
                ));
            }
            (_, received) => received,
        };
        let response = Request::post(format!("{}/v2/resources", inputs.api))
            .header("authorization", &inputs.auth())
            .header("idempotency-key", &state.idempotency_key)
            .json(&json!({"name": inputs.name}))?
            .send()?;
        if !response.is_success() {
            return Err(refused(
                "creating the resource",
                response.status,
                &response.text(),
            ));
        }
        let created: Value = response.json()?;
        let id = created["id"]
            .as_str()
            .ok_or_else(|| fatal("the API answered no id"))?
            .to_string();
        host::record_resource("cloud-resource", &id, &json!({"name": inputs.name}))?;
        host::info(&format!("created {id} ({})", inputs.name));
        let output = Output::new().with("resource_id", &id)?;
        match approved {
            Some(payload) => output.with("approved", payload),
            None => Ok(output),
        }
    }

    fn compensate(state: &SagaState) -> StepResult<()> {
        let inputs: Inputs = state.inputs()?;
        let Some(id) = state.context_value::<String>("resource_id")? else {
            host::info("nothing was created; nothing to delete");
            return Ok(());
        };
        let response = Request::delete(format!("{}/v2/resources/{id}", inputs.api))
            .header("authorization", &inputs.auth())
            .send()?;
        match response.status {
            200..=299 => host::info(&format!("deleted {id}")),
            404 => host::info(&format!("{id} was already gone")),
            status => return Err(refused("deleting the resource", status, &response.text())),
        }
        Ok(())
    }

    fn observe(state: &SagaState) -> StepResult<Observation> {
        let inputs: Inputs = state.inputs()?;
        let response = Request::get(format!(
            "{}/v2/resources?idempotency_key={}",
            inputs.api, state.idempotency_key
        ))
        .header("authorization", &inputs.auth())
        .send()?;
        if !response.is_success() {
            return Err(refused(
                "looking for the resource",
                response.status,
                &response.text(),
            ));
        }
        let found: Vec<Value> = response.json()?;
        let Some(resource) = found.first() else {
            host::info("no resource under this key");
            return Ok(Observation::NotApplied);
        };
        let id = resource["id"]
            .as_str()
            .ok_or_else(|| fatal("the API answered no id"))?;
        host::record_resource("cloud-resource", id, &json!({"name": resource["name"]}))?;
        host::info(&format!("found {id}"));
        Ok(Observation::Applied(Output::new().with("resource_id", id)?))
    }
}

export_step!(Observed);
