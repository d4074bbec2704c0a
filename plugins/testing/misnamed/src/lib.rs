//! `misnamed`: a step whose `name()` breaks the naming rule (lowercase
//! letters, digits and dashes), so the host must refuse its upload.

use wasaga_step::{Output, SagaState, Step, StepResult, export_step};

struct Misnamed;

impl Step for Misnamed {
    fn name() -> String {
        "Not A Valid_Name!".into()
    }

    fn execute(_state: &SagaState) -> StepResult<Output> {
        Ok(Output::new())
    }
}

export_step!(Misnamed);
