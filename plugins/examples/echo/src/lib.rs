//! `echo`: the smallest useful step. It copies `inputs.message` into the
//! context as `echoed_at_step_<index>`, so a saga's context shows which steps
//! ran, and it has nothing to undo.

use serde_json::Value;
use wasaga_step::{Output, SagaState, Step, StepResult, export_step};

struct Echo;

impl Step for Echo {
    fn name() -> String {
        "echo".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        let message: Value = state.input_opt("message")?.unwrap_or(Value::Null);
        Output::new().with(format!("echoed_at_step_{}", state.step_index), message)
    }
}

export_step!(Echo);
