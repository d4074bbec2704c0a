//! `fetch`: sends the requests its inputs list, in order, and reports what
//! each got; tests script it to try every rule of outbound HTTP (grants,
//! secrets in headers, limits, deadlines) and to misuse what it receives.
//!
//! Inputs:
//! - `requests`: `[{method?, url, headers?: {name: value}, body?}]`;
//! - `log_bodies`: log each response body;
//! - `fail_with_body`: fail (fatal) with the last response's body;
//! - `sleep_ms`: before anything, wait this long in a host call
//!   (`wasi:clocks` and `wasi:io/poll`), as a step blocked outside Wasm;
//! - `spin_ms`: before anything, loop in Wasm this long.
//!
//! Output: `{"responses": [{status, body} or {error}]}`.

use serde::Deserialize;
use std::collections::BTreeMap;
use wasaga_step::http::Request;
use wasaga_step::{Output, SagaState, Step, StepResult, export_step, fatal, host};

#[derive(Deserialize)]
struct Send {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
}

fn get() -> String {
    "GET".into()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Inputs {
    requests: Vec<Send>,
    log_bodies: bool,
    fail_with_body: bool,
    sleep_ms: u64,
    spin_ms: u64,
}

struct Fetch;

impl Step for Fetch {
    fn name() -> String {
        "fetch".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        let inputs: Inputs = state.inputs()?;
        if inputs.sleep_ms > 0 {
            use wasaga_step::__bindings::wasi::clocks::monotonic_clock;
            monotonic_clock::subscribe_duration(inputs.sleep_ms * 1_000_000).block();
        }
        if inputs.spin_ms > 0 {
            use wasaga_step::__bindings::wasi::clocks::monotonic_clock;
            let until = monotonic_clock::now() + inputs.spin_ms * 1_000_000;
            while monotonic_clock::now() < until {
                std::hint::spin_loop();
            }
        }
        let mut responses = Vec::new();
        let mut last_body = String::new();
        for send in inputs.requests {
            let method = send.method.parse().map_err(|_| fatal("bad method"))?;
            let mut request = Request::new(method, send.url);
            for (name, value) in &send.headers {
                request = request.header(name, value);
            }
            if let Some(body) = send.body {
                request = request.body(body);
            }
            match request.send() {
                Ok(response) => {
                    let body = response.text();
                    if inputs.log_bodies {
                        host::info(&body);
                    }
                    last_body = body.clone();
                    responses.push(serde_json::json!({"status": response.status, "body": body}));
                }
                Err(e) => responses.push(serde_json::json!({"error": e.to_string()})),
            }
        }
        if inputs.fail_with_body {
            return Err(fatal(last_body));
        }
        Output::new().with("responses", responses)
    }
}

export_step!(Fetch);
