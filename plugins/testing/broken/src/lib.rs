//! `broken`: a step with one of the classic saga bugs, chosen by
//! `inputs.broken`, for `wasaga plugin test` to catch:
//! - `compensate-needs-execute`: compensate fails when the context holds
//!   no output of this step (it assumes execute ran);
//! - `compensate-once`: compensate fails from its second call on (undoing
//!   is not safe to repeat);
//! - `unstable-id`: execute records a resource whose id changes with every
//!   call (a retry would provision a second one).
//!
//! Without `inputs.broken` it behaves: a stable id from the idempotency
//! key, and a compensate that is safe to repeat and to call first.

use serde_json::json;
use wasaga_step::host;
use wasaga_step::{Output, SagaState, Step, StepResult, export_step, fatal};

struct Broken;

fn mode(state: &SagaState) -> StepResult<String> {
    Ok(state.input_opt::<String>("broken")?.unwrap_or_default())
}

impl Step for Broken {
    fn name() -> String {
        "broken".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        let id = if mode(state)? == "unstable-id" {
            // std's clock is not there on wasm32-unknown-unknown; WASI's is.
            let now = wasaga_step::__bindings::wasi::clocks::wall_clock::now();
            format!("vm-{}-{}", now.seconds, now.nanoseconds)
        } else {
            format!("vm-{}", state.idempotency_key)
        };
        host::record_resource("vm", &id, &json!({"size": "small"}))?;
        Output::new().with("broken_vm", id)
    }

    fn compensate(state: &SagaState) -> StepResult<()> {
        let vm: Option<String> = state.context_value("broken_vm")?;
        match mode(state)?.as_str() {
            "compensate-needs-execute" if vm.is_none() => {
                Err(fatal("broken: no vm in the context to delete"))
            }
            "compensate-once" if state.attempt >= 2 => {
                Err(fatal("broken: the vm is already deleted (404)"))
            }
            _ => Ok(()),
        }
    }
}

export_step!(Broken);
