//! `flaky`: fails retryably until the attempt given by
//! `inputs.flaky_succeed_on_attempt` (default 3), then succeeds and outputs
//! the attempt it succeeded on. Its compensate fails retryably the same way
//! when `inputs.flaky_compensate_succeed_on_attempt` is set. Tests use it for
//! retries that succeed and retries that run out. It is built on contract
//! 0.1.0 (the SDK's `contract-0-1` feature) and stays so.

use wasaga_step::{Output, SagaState, Step, StepResult, export_step, retryable};

struct Flaky;

impl Step for Flaky {
    fn name() -> String {
        "flaky".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        let succeed_on: u32 = state.input_opt("flaky_succeed_on_attempt")?.unwrap_or(3);
        if state.attempt < succeed_on {
            return Err(retryable(format!(
                "flaky: attempt {} of a step that succeeds on attempt {succeed_on}",
                state.attempt
            )));
        }
        Output::new().with(
            format!("flaky_succeeded_on_attempt_{}", state.step_index),
            state.attempt,
        )
    }

    fn compensate(state: &SagaState) -> StepResult<()> {
        let succeed_on: u32 = state
            .input_opt("flaky_compensate_succeed_on_attempt")?
            .unwrap_or(1);
        if state.attempt < succeed_on {
            return Err(retryable(format!(
                "flaky: compensate attempt {}",
                state.attempt
            )));
        }
        Ok(())
    }
}

export_step!(Flaky);
