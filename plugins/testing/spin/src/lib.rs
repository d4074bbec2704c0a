//! `spin`: loops forever in `execute`, so only the host's deadline (or a
//! cancel) can stop it. Its compensate returns at once.

use wasaga_step::{Output, SagaState, Step, StepResult, export_step};

struct Spin;

impl Step for Spin {
    fn name() -> String {
        "spin".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        let mut n = state.attempt as u64;
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export_step!(Spin);
