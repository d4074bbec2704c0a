//! `http-resource`: the shape of a real provisioning step. `execute` creates
//! a resource through a provider's HTTP API, authenticated with a token the
//! step never sees (the host puts the secret into the header), and made
//! safe to repeat by the saga's idempotency key: a crash that makes the host
//! call it again creates nothing twice. It records the resource in the
//! host's ledger. `compensate` deletes it (already gone counts as done).
//!
//! Inputs: `api` (the provider's base URL, e.g. `https://api.example.com`),
//! `name` (of the resource), and optionally `secret` (the name of the
//! granted secret holding the token; default `cloud-token`).

use serde::Deserialize;
use wasaga_step::http::Request;
use wasaga_step::{Output, SagaState, Step, StepResult, export_step, fatal, host, retryable};

struct HttpResource;

#[derive(Deserialize)]
struct Inputs {
    api: String,
    name: String,
    #[serde(default = "default_secret")]
    secret: String,
}

fn default_secret() -> String {
    "cloud-token".into()
}

#[derive(Deserialize)]
struct Created {
    id: String,
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

impl Step for HttpResource {
    fn name() -> String {
        "http-resource".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        let inputs: Inputs = state.inputs()?;
        let response = Request::post(format!("{}/v2/resources", inputs.api))
            .header(
                "authorization",
                &format!("Bearer {{{{secret:{}}}}}", inputs.secret),
            )
            .header("idempotency-key", &state.idempotency_key)
            .json(&serde_json::json!({"name": inputs.name}))?
            .send()?;
        if !response.is_success() {
            return Err(refused(
                "creating the resource",
                response.status,
                &response.text(),
            ));
        }
        let created: Created = response.json()?;
        host::record_resource(
            "cloud-resource",
            &created.id,
            &serde_json::json!({"name": inputs.name}),
        )?;
        host::info(&format!("created {} ({})", created.id, inputs.name));
        Output::new().with("resource_id", &created.id)
    }

    fn compensate(state: &SagaState) -> StepResult<()> {
        let inputs: Inputs = state.inputs()?;
        let Some(id) = state.context_value::<String>("resource_id")? else {
            host::info("nothing was created; nothing to delete");
            return Ok(());
        };
        let response = Request::delete(format!("{}/v2/resources/{id}", inputs.api))
            .header(
                "authorization",
                &format!("Bearer {{{{secret:{}}}}}", inputs.secret),
            )
            .send()?;
        match response.status {
            200..=299 => host::info(&format!("deleted {id}")),
            404 => host::info(&format!("{id} was already gone")),
            status => return Err(refused("deleting the resource", status, &response.text())),
        }
        Ok(())
    }
}

export_step!(HttpResource);
