//! `poll`: a step on contract 0.2.0 that waits by answering `poll-after`,
//! and reads secrets. Tests script it through the saga's inputs:
//!
//! - `counter_url`: each call is reported to the test counter
//!   (`GET /count?saga=..&step=..&phase=..&attempt=..&key=..`), which
//!   answers how many calls of this step and phase it has seen; the step
//!   needs that number to know how often it was polled (a poll gets the
//!   same attempt and key, so the call itself cannot tell);
//! - `polls`: `execute` answers `poll-after` until it has been called this
//!   many times more (default 0: it completes at once);
//! - `until_ms`: `execute` also answers `poll-after` while the wall clock
//!   (milliseconds since the Unix epoch) is short of this, without a
//!   counter (the benchmark of waits uses it);
//! - `forever`: `execute` answers `poll-after` every time;
//! - `compensate_polls`: the same for `compensate`;
//! - `poll_ms`: the delay it asks for (default 100);
//! - `secret`: a secret's name to read with `secrets.get`; the output then
//!   holds `secret` (the value, which the host redacts) and `secret_found`.
//!
//! Output: `{"calls": n}`, n being the calls of `execute` the counter saw.

use serde::Deserialize;
use std::time::Duration;
use wasaga_step::http::Request;
use wasaga_step::{Output, SagaState, Step, StepResult, export_step, fatal, poll_after, secrets};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Inputs {
    counter_url: Option<String>,
    polls: u32,
    until_ms: Option<u64>,
    forever: bool,
    compensate_polls: u32,
    poll_ms: Option<u64>,
    secret: Option<String>,
}

impl Inputs {
    fn delay(&self) -> Duration {
        Duration::from_millis(self.poll_ms.unwrap_or(100))
    }

    /// Whether `until_ms` is still ahead.
    fn too_early(&self) -> bool {
        // std's clock is not there on wasm32-unknown-unknown; WASI's is.
        use wasaga_step::__bindings::wasi::clocks::wall_clock;
        let now = wall_clock::now();
        let now_ms = now.seconds * 1_000 + u64::from(now.nanoseconds / 1_000_000);
        self.until_ms.is_some_and(|until| now_ms < until)
    }
}

/// Reports this call to the counter; returns the calls of this step and
/// phase it has seen, this one included (1 when there is no counter).
fn report(state: &SagaState, inputs: &Inputs, phase: &str) -> StepResult<u32> {
    let Some(url) = &inputs.counter_url else {
        return Ok(1);
    };
    let response = Request::get(format!(
        "{url}/count?saga={}&step={}&phase={phase}&attempt={}&key={}",
        state.saga_id, state.step_index, state.attempt, state.idempotency_key
    ))
    .send()?;
    let text = response.text();
    text.trim()
        .parse()
        .map_err(|_| fatal(format!("the counter answered {text:?}, not a number")))
}

struct Poll;

impl Step for Poll {
    fn name() -> String {
        "poll".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        let inputs: Inputs = state.inputs()?;
        let calls = report(state, &inputs, "execute")?;
        if inputs.forever || calls <= inputs.polls || inputs.too_early() {
            return Err(poll_after(inputs.delay()));
        }
        let mut output = Output::new().with("calls", calls)?;
        if let Some(name) = &inputs.secret {
            let value = secrets::get(name);
            output = output
                .with("secret_found", value.is_some())?
                .with("secret", value)?;
        }
        Ok(output)
    }

    fn compensate(state: &SagaState) -> StepResult<()> {
        let inputs: Inputs = state.inputs()?;
        let calls = report(state, &inputs, "compensate")?;
        if calls <= inputs.compensate_polls {
            return Err(poll_after(inputs.delay()));
        }
        Ok(())
    }
}

export_step!(Poll);
