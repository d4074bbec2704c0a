//! `stubborn`: executes fine, but its compensate always fails (retryably, so
//! the host retries it before giving up and marking it
//! `compensation_failed`).

use wasaga_step::{Output, SagaState, Step, StepResult, export_step, retryable};

struct Stubborn;

impl Step for Stubborn {
    fn name() -> String {
        "stubborn".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        Output::new().with(format!("stubborn_{}", state.step_index), true)
    }

    fn compensate(state: &SagaState) -> StepResult<()> {
        Err(retryable(format!(
            "stubborn: cannot undo step {} (attempt {})",
            state.step_index, state.attempt
        )))
    }
}

export_step!(Stubborn);
