//! `fail`: a step that always fails for good, with `step_failed:fail`. Put it
//! last in a saga to watch the host compensate every earlier step.

use wasaga_step::{Output, SagaState, Step, StepResult, export_step, fatal};

struct Fail;

impl Step for Fail {
    fn name() -> String {
        "fail".into()
    }

    fn execute(_state: &SagaState) -> StepResult<Output> {
        Err(fatal("step_failed:fail"))
    }
}

export_step!(Fail);
