//! `counter`: reports every `execute` and `compensate` call to the HTTP
//! endpoint in `inputs.counter_url` (e.g. `http://127.0.0.1:4000`), as
//! `GET /count?saga=..&step=..&phase=..&attempt=..&key=..`. The endpoint is
//! outside the host, so it sees every call, including ones whose results a
//! crash lost: tests use it to prove that no step recorded completed ran
//! again. It needs the host to allow outgoing HTTP to that endpoint; a refusal
//! is a fatal error that quotes the host's reason.
//!
//! Its behaviour is scriptable through the saga's inputs, so that one plugin
//! can play every step of a test saga:
//! - `counter_fail_at`: step indices whose `execute` fails for good;
//! - `counter_retry_until`: `{"<index>": n}`, that step's `execute` fails
//!   retryably until attempt n;
//! - `counter_compensate_fail_at`: step indices whose `compensate` always
//!   fails (retryably);
//! - `counter_compensate_retry_until`: `{"<index>": n}`, that step's
//!   `compensate` fails retryably until attempt n (counted over every
//!   compensate call, retries of a failed saga included).
//!
//! The call is reported before it decides, so the endpoint sees failing
//! calls too. It is written against the raw bindings, without the SDK,
//! because its world adds `wasi:http/outgoing-handler` to the step world.

wit_bindgen::generate!({
    path: [
        "../../../wit/step.wit",
        "../../wit/io.wit",
        "../../wit/clocks.wit",
        "../../wit/random.wit",
        "../../wit/filesystem.wit",
        "../../wit/sockets.wit",
        "../../wit/cli.wit",
        "../../wit/http.wit",
        "wit",
    ],
    world: "wasaga:counter/counter",
    generate_all,
});

use exports::wasaga::step::step::Guest;
use wasaga::step::types::{SagaState, StepError};
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingRequest, Scheme};

struct Counter;

fn inputs(state: &SagaState) -> Result<serde_json::Value, StepError> {
    serde_json::from_str(&state.inputs).map_err(|e| StepError::Fatal(format!("inputs: {e}")))
}

/// Whether `inputs[key]` is an array holding this step's index.
fn listed(inputs: &serde_json::Value, key: &str, index: u32) -> bool {
    inputs
        .get(key)
        .and_then(|v| v.as_array())
        .is_some_and(|list| list.iter().any(|v| v.as_u64() == Some(u64::from(index))))
}

fn report(state: &SagaState, inputs: &serde_json::Value, phase: &str) -> Result<(), StepError> {
    let Some(url) = inputs.get("counter_url").and_then(|u| u.as_str()) else {
        return Ok(());
    };
    let (scheme, authority) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest.trim_end_matches('/')),
        Some(("https", rest)) => (Scheme::Https, rest.trim_end_matches('/')),
        _ => {
            return Err(StepError::Fatal(format!(
                "counter_url `{url}` is not an http(s) URL"
            )));
        }
    };
    let path = format!(
        "/count?saga={}&step={}&phase={phase}&attempt={}&key={}",
        state.saga_id, state.step_index, state.attempt, state.idempotency_key
    );
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_method(&Method::Get)
        .map_err(|()| StepError::Fatal("bad method".into()))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| StepError::Fatal("bad scheme".into()))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| StepError::Fatal(format!("bad authority `{authority}`")))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| StepError::Fatal("bad path".into()))?;
    let refused = |e: ErrorCode| match e {
        ErrorCode::HttpRequestDenied => StepError::Fatal(format!(
            "the host refused outgoing HTTP to {authority}: {e:?}"
        )),
        other => StepError::Retryable(format!("counter request to {authority} failed: {other:?}")),
    };
    let pending = outgoing_handler::handle(request, None).map_err(refused)?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| StepError::Retryable("counter response not ready".into()))?
        .map_err(|()| StepError::Retryable("counter response taken twice".into()))?
        .map_err(refused)?;
    match response.status() {
        200 => Ok(()),
        status => Err(StepError::Retryable(format!("counter answered {status}"))),
    }
}

impl Guest for Counter {
    fn name() -> String {
        "counter".into()
    }

    fn execute(state: SagaState) -> Result<String, StepError> {
        let inputs = inputs(&state)?;
        report(&state, &inputs, "execute")?;
        let index = state.step_index;
        if listed(&inputs, "counter_fail_at", index) {
            return Err(StepError::Fatal(format!(
                "counter: step {index} fails on purpose"
            )));
        }
        let retry_until = inputs
            .get("counter_retry_until")
            .and_then(|m| m.get(index.to_string()))
            .and_then(|n| n.as_u64())
            .unwrap_or(0);
        if u64::from(state.attempt) < retry_until {
            return Err(StepError::Retryable(format!(
                "counter: step {index} attempt {} fails until attempt {retry_until}",
                state.attempt
            )));
        }
        Ok(serde_json::json!({ format!("counted_{index}"): state.attempt }).to_string())
    }

    fn compensate(state: SagaState) -> Result<(), StepError> {
        let inputs = inputs(&state)?;
        report(&state, &inputs, "compensate")?;
        if listed(&inputs, "counter_compensate_fail_at", state.step_index) {
            return Err(StepError::Retryable(format!(
                "counter: cannot undo step {} (attempt {})",
                state.step_index, state.attempt
            )));
        }
        let retry_until = inputs
            .get("counter_compensate_retry_until")
            .and_then(|m| m.get(state.step_index.to_string()))
            .and_then(|n| n.as_u64())
            .unwrap_or(0);
        if u64::from(state.attempt) < retry_until {
            return Err(StepError::Retryable(format!(
                "counter: undoing step {} fails until attempt {retry_until} (attempt {})",
                state.step_index, state.attempt
            )));
        }
        Ok(())
    }
}

export!(Counter);
