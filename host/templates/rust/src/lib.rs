//! `{{name}}`: a wasaga saga step.
//!
//! `execute` does the work and returns a JSON object that the host merges
//! into the saga's context; `compensate` undoes it when a later step fails
//! for good or the saga is cancelled. The host may call either more than
//! once (a retry, or a crash-resume), so both must be safe to repeat:
//! `wasaga plugin test {{name}}.wasm` checks that they are.

use serde_json::Value;
use wasaga_step::{Observation, Output, SagaState, Step, StepResult, export_step, host};

struct {{type_name}};

impl Step for {{type_name}} {
    fn name() -> String {
        "{{name}}".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        // The inputs are the saga's, the same for every step:
        // `state.input::<T>("key")?`, or `state.inputs::<YourStruct>()?`.
        let message: Value = state.input_opt("message")?.unwrap_or(Value::Null);
        // Call your provider's API here, passing `state.idempotency_key`,
        // which stays the same across retries and crash-resumes, so that a
        // repeated call creates nothing twice. This skeleton names its
        // resource after that key, which is just as repeatable.
        let id = format!("{{name}}-{}", state.idempotency_key);
        host::info(&format!("{{name}}: created {id}"));
        host::record_resource("{{name}}", &id, &serde_json::json!({ "message": message }))?;
        // Return only what later steps (and this one's compensate) need.
        Output::new().with("{{ident}}_id", &id)
    }

    fn compensate(state: &SagaState) -> StepResult<()> {
        // Undo what execute did, found through the context. Compensate may
        // run without a finished execute before it (the saga was cancelled
        // while it ran) and may run twice: "already gone" is success.
        match state.context_value::<String>("{{ident}}_id")? {
            Some(id) => host::info(&format!("{{name}}: deleted {id}")),
            None => host::info("{{name}}: nothing to undo"),
        }
        Ok(())
    }

    fn observe(state: &SagaState) -> StepResult<Observation> {
        // Look, changing nothing, at whether `execute` with this
        // `state.idempotency_key` took effect, and say so: the host asks
        // before running again a call its host died in, and before undoing
        // one, and drift scans ask what the resources look like now
        // (record them with `host::record_resource`). Ask your provider for
        // what it made under the key, then answer
        // `Observation::Applied(output)` (the output execute would return)
        // or `Observation::NotApplied`. This skeleton makes nothing it
        // could look at, so it cannot tell.
        let _ = state;
        Ok(Observation::Unknown)
    }
}

export_step!({{type_name}});
