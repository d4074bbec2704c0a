//! `hog`: allocates (and touches) memory a megabyte at a time without end,
//! until the host's memory limit stops it.

use wasaga_step::{Output, SagaState, Step, StepResult, export_step};

struct Hog;

impl Step for Hog {
    fn name() -> String {
        "hog".into()
    }

    fn execute(_state: &SagaState) -> StepResult<Output> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![0xA5; 1 << 20]));
        }
    }
}

export_step!(Hog);
