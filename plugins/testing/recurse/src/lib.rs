//! `recurse`: recurses without end until a stack runs out.
//!
//! By default each frame holds only scalars, so the recursion exhausts the
//! Wasm call stack (the host's `max_wasm_stack`). With
//! `inputs.recurse_frame_bytes` set, each frame also holds an array of that
//! many bytes, which Rust keeps on its shadow stack in linear memory: that
//! stack overflows first, and the guest faults reading below its memory.

use wasaga_step::{Output, SagaState, Step, StepResult, export_step};

#[inline(never)]
fn descend(depth: u64) -> u64 {
    // Never true in practice: it only keeps rustc from calling this
    // unconditional recursion.
    if depth == u64::MAX {
        return 0;
    }
    // Rotating by a depth-dependent amount is not an accumulator pattern,
    // so LLVM cannot turn the recursion into a loop.
    descend(depth + 1).rotate_left((depth % 63) as u32) ^ depth
}

#[inline(never)]
fn descend_with_frames(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let frame = std::hint::black_box([depth; 64]);
    descend_with_frames(depth + 1).wrapping_add(frame[(depth % 64) as usize])
}

struct Recurse;

impl Step for Recurse {
    fn name() -> String {
        "recurse".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        let frames: u32 = state.input_opt("recurse_frame_bytes")?.unwrap_or(0);
        let depth = if frames > 0 {
            descend_with_frames(std::hint::black_box(0))
        } else {
            descend(std::hint::black_box(0))
        };
        Output::new().with("depth", depth)
    }
}

export_step!(Recurse);
