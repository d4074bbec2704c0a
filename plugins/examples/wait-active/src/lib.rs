//! `wait-active`: waits until the resource an earlier step created is
//! ready, the way a droplet is only usable once it has booted. It asks the
//! provider's API for the resource's status; while it is not `active` it
//! answers "not done yet, call me again in a while" (`poll_after`), which
//! the host turns into a durable wait: the saga holds nothing meanwhile,
//! survives a restart, and uses no attempt. The step's `max_wait_ms` bounds
//! the whole wait.
//!
//! It is a step of its own, after the step that creates the resource
//! (`http-resource`), so that a saga stopped during the wait compensates
//! the creation, whose step has completed and knows the resource's id.
//!
//! Inputs: `api` (the provider's base URL), `poll_ms` (how long to wait
//! between checks, default 1000), and optionally `secret` (default
//! `cloud-token`). Context: `resource_id`, from the step that created it.

use serde::Deserialize;
use std::time::Duration;
use wasaga_step::http::Request;
use wasaga_step::{
    Output, SagaState, Step, StepResult, export_step, fatal, host, poll_after, retryable,
};

#[derive(Deserialize)]
struct Inputs {
    api: String,
    #[serde(default = "default_poll_ms")]
    poll_ms: u64,
    #[serde(default = "default_secret")]
    secret: String,
}

fn default_poll_ms() -> u64 {
    1000
}

fn default_secret() -> String {
    "cloud-token".into()
}

#[derive(Deserialize)]
struct Resource {
    status: String,
}

struct WaitActive;

impl Step for WaitActive {
    fn name() -> String {
        "wait-active".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        let inputs: Inputs = state.inputs()?;
        let id: String = state
            .context_value("resource_id")?
            .ok_or_else(|| fatal("no resource_id in the context: create the resource first"))?;
        let response = Request::get(format!("{}/v2/resources/{id}", inputs.api))
            .header(
                "authorization",
                &format!("Bearer {{{{secret:{}}}}}", inputs.secret),
            )
            .send()?;
        match response.status {
            200 => {}
            429 | 500.. => {
                return Err(retryable(format!(
                    "checking {id}: the API answered {}",
                    response.status
                )));
            }
            status => return Err(fatal(format!("checking {id}: the API answered {status}"))),
        }
        let resource: Resource = response.json()?;
        if resource.status != "active" {
            host::info(&format!("{id} is {}; checking again in {} ms", resource.status, inputs.poll_ms));
            return Err(poll_after(Duration::from_millis(inputs.poll_ms)));
        }
        host::info(&format!("{id} is active"));
        Output::new().with("resource_status", "active")
    }
}

export_step!(WaitActive);
