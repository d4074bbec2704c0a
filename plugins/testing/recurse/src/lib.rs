//! `recurse`: recurses without end, each frame holding a buffer, until the
//! Wasm stack overflows.

use wasaga_step::{Output, SagaState, Step, StepResult, export_step};

struct Recurse;

#[inline(never)]
fn descend(depth: u64) -> u64 {
    // Never true in practice: it only keeps rustc from calling this
    // unconditional recursion (the stack overflows long before).
    if depth == u64::MAX {
        return 0;
    }
    let frame = std::hint::black_box([depth; 64]);
    descend(depth + 1).wrapping_add(frame[(depth % 64) as usize])
}

impl Step for Recurse {
    fn name() -> String {
        "recurse".into()
    }

    fn execute(_state: &SagaState) -> StepResult<Output> {
        let depth = descend(std::hint::black_box(0));
        Output::new().with("depth", depth)
    }
}

export_step!(Recurse);
