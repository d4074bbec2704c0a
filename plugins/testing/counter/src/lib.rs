//! `counter`: reports every `execute` and `compensate` call to the HTTP
//! endpoint in `inputs.counter_url` (e.g. `http://127.0.0.1:4000`), as
//! `GET /count?saga=..&step=..&phase=..&attempt=..&key=..`. The endpoint is
//! outside the host, so it sees every call, including ones whose results a
//! crash lost: tests use it to prove that no step recorded completed ran
//! again. It needs the host to allow outgoing HTTP to that endpoint; a refusal
//! is a fatal error that quotes the host's reason.
//!
//! It is written against the raw bindings, without the SDK, because its world
//! adds `wasi:http/outgoing-handler` to the step world.

wit_bindgen::generate!({
    path: ["../../../wit/step.wit", "wit"],
    world: "wasaga:counter/counter",
    generate_all,
});

use exports::wasaga::step::step::Guest;
use wasaga::step::types::{SagaState, StepError};
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingRequest, Scheme};

struct Counter;

fn report(state: &SagaState, phase: &str) -> Result<(), StepError> {
    let inputs: serde_json::Value =
        serde_json::from_str(&state.inputs).map_err(|e| StepError::Fatal(format!("inputs: {e}")))?;
    let Some(url) = inputs.get("counter_url").and_then(|u| u.as_str()) else {
        return Ok(());
    };
    let (scheme, authority) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest.trim_end_matches('/')),
        Some(("https", rest)) => (Scheme::Https, rest.trim_end_matches('/')),
        _ => return Err(StepError::Fatal(format!("counter_url `{url}` is not an http(s) URL"))),
    };
    let path = format!(
        "/count?saga={}&step={}&phase={phase}&attempt={}&key={}",
        state.saga_id, state.step_index, state.attempt, state.idempotency_key
    );
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|()| StepError::Fatal("bad method".into()))?;
    request.set_scheme(Some(&scheme)).map_err(|()| StepError::Fatal("bad scheme".into()))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| StepError::Fatal(format!("bad authority `{authority}`")))?;
    request.set_path_with_query(Some(&path)).map_err(|()| StepError::Fatal("bad path".into()))?;
    let refused = |e: ErrorCode| match e {
        ErrorCode::HttpRequestDenied => {
            StepError::Fatal(format!("the host refused outgoing HTTP to {authority}: {e:?}"))
        }
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
        report(&state, "execute")?;
        Ok(serde_json::json!({ format!("counted_{}", state.step_index): state.attempt }).to_string())
    }

    fn compensate(state: SagaState) -> Result<(), StepError> {
        report(&state, "compensate")
    }
}

export!(Counter);
