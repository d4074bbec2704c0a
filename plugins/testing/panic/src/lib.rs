//! `panic`: panics in `execute` (a trap, to the host). The SDK's panic hook
//! puts the message in the step's log first.

use wasaga_step::{Output, SagaState, Step, StepResult, export_step};

struct Panic;

impl Step for Panic {
    fn name() -> String {
        "panic".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        panic!("the panic plugin panics on attempt {}", state.attempt);
    }
}

export_step!(Panic);
