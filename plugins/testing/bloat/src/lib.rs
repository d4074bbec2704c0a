//! `bloat`: returns a huge output, `{"blob": "xxx..."}` of
//! `inputs.bloat_bytes` bytes (default 64 MiB), to test the host's output
//! limit. With `inputs.bloat_raw` it returns that text verbatim instead, to
//! test the host's output rules (not JSON, not an object, reserved keys).

use wasaga_step::{Output, SagaState, Step, StepResult, export_step};

struct Bloat;

impl Step for Bloat {
    fn name() -> String {
        "bloat".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        if let Some(raw) = state.input_opt::<String>("bloat_raw")? {
            return Ok(Output::raw(raw));
        }
        let size: usize = state.input_opt("bloat_bytes")?.unwrap_or(64 << 20);
        let mut json = String::with_capacity(size + 16);
        json.push_str("{\"blob\":\"");
        json.extend(std::iter::repeat_n('x', size));
        json.push_str("\"}");
        Ok(Output::raw(json))
    }
}

export_step!(Bloat);
