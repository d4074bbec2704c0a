//! Answering waits (docs/waits.md): approve or reject a saga's wait,
//! call a wait's capability URL, post a message for a correlation key.
//! Handlers check the caller and the request's shape; the runner decides
//! whether the wait takes the answer (`runner::waits`).

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody, JsonBody};
use super::sagas::parse_id;
use crate::callbacks::CallbackTarget;
use crate::model::{
    MAX_KEY_BYTES, MessageRequest, SagaDetail, SagaId, SagaRun, Timestamp, WaitAnswer,
};
use crate::plan::check_label;
use crate::runner::waits::{Answer, Answerer, MessageOutcome};
use crate::store::NewMessage;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(complete_wait))
        .routes(routes!(reject_wait))
        .routes(routes!(call_back))
        .routes(routes!(post_message))
}

/// The body of an answer: `{}` or none is no payload and no note.
fn answer_body(body: &[u8]) -> Result<WaitAnswer, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(WaitAnswer::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not `{{\"payload\": ..., \"note\": ...}}`: {e}"),
        )
    })
}

/// Complete (approve) a saga's open wait with a payload. With `approvals:
/// N`, N distinct actors complete it; each approval is kept in `actions`.
/// The same payload again is a success; another one, after completion, a
/// 409.
#[utoipa::path(
    post,
    path = "/sagas/{id}/waits/{name}/complete",
    tag = "waits",
    params(
        ("id" = String, Path, description = "the saga's id"),
        ("name" = String, Path, description = "the wait's name"),
    ),
    request_body(content = WaitAnswer, description = "optional; no payload is `{}`"),
    responses(
        (status = 200, description = "recorded (or the same completion was recorded before)", body = SagaRun),
        (status = 400, body = ErrorBody),
        (status = 403, description = "neither an operator nor one of the wait's approvers", body = ErrorBody),
        (status = 404, description = "no such saga, or no such wait in it", body = ErrorBody),
        (status = 409, description = "the saga is not at the wait yet, another payload completed it, or this actor approved already", body = ErrorBody),
        (status = 410, description = "the wait is over: the saga was cancelled or went past it", body = ErrorBody),
        (status = 422, description = "the payload fails the wait's schema; the wait stays open", body = ErrorBody),
    )
)]
async fn complete_wait(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<SagaRun>, ApiError> {
    let request = answer_body(&body)?;
    let payload = request
        .payload
        .unwrap_or_else(|| Value::Object(Default::default()));
    answer(
        &state,
        &caller,
        &id,
        &name,
        Answer::Complete(payload),
        request.note,
    )
    .await
}

/// Gives the runner a caller's answer to a wait.
async fn answer(
    state: &AppState,
    caller: &Caller,
    id: &str,
    name: &str,
    answer: Answer,
    note: Option<String>,
) -> Result<Json<SagaRun>, ApiError> {
    let id = parse_id(id)?;
    let who = Answerer {
        actor: caller.actor(),
        operator: caller.role >= Role::Operator,
    };
    let saga = state
        .runner
        .answer_wait(id, name, who, answer, note)
        .await?;
    Ok(Json(saga))
}

/// Reject a saga's open wait: it fails, and the saga compensates.
#[utoipa::path(
    post,
    path = "/sagas/{id}/waits/{name}/reject",
    tag = "waits",
    params(
        ("id" = String, Path, description = "the saga's id"),
        ("name" = String, Path, description = "the wait's name"),
    ),
    request_body(content = WaitAnswer, description = "optional: `{\"note\": ...}`"),
    responses(
        (status = 200, description = "rejected", body = SagaRun),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 410, body = ErrorBody),
    )
)]
async fn reject_wait(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<SagaRun>, ApiError> {
    let request = answer_body(&body)?;
    if request.payload.is_some() {
        return Err(ApiError::bad_request(
            "a rejection takes no payload, only a `note`",
        ));
    }
    answer(&state, &caller, &id, &name, Answer::Reject, request.note).await
}

/// What a callback answers: the wait it completed, not the saga (whoever
/// holds the URL may not read the saga).
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackAnswer {
    pub saga_id: SagaId,
    pub wait: String,
    pub status: &'static str,
}

/// Complete a wait through its capability URL (`callback_url`, shown on
/// the saga while the wait is open): no bearer token; the body is the
/// payload. Good for one opening of one wait.
#[utoipa::path(
    post,
    path = "/callbacks/{token}",
    tag = "waits",
    security(()),
    params(("token" = String, Path, description = "the token of the wait's callback_url")),
    request_body(content = Object, description = "the payload (JSON)"),
    responses(
        (status = 200, description = "completed (or completed before with this payload)", body = CallbackAnswer),
        (status = 400, body = ErrorBody),
        (status = 404, description = "not a token of this server (malformed, forged, or from another key)", body = ErrorBody),
        (status = 409, description = "completed before with another payload", body = ErrorBody),
        (status = 410, description = "the wait is over", body = ErrorBody),
        (status = 422, description = "the payload fails the wait's schema; the wait stays open", body = ErrorBody),
    )
)]
async fn call_back(
    State(state): State<AppState>,
    Path(token): Path<String>,
    JsonBody(payload): JsonBody<Value>,
) -> Result<Json<CallbackAnswer>, ApiError> {
    let unknown = || ApiError::not_found("no wait has this callback URL");
    let signer = &state.callbacks.as_ref().ok_or_else(unknown)?.signer;
    let CallbackTarget {
        saga_id,
        step_index,
        opened,
    } = signer.check(&token).ok_or_else(unknown)?;
    let name = state
        .runner
        .callback_wait(saga_id, step_index, opened)
        .await?;
    let who = Answerer {
        actor: Some("callback".into()),
        operator: true,
    };
    state
        .runner
        .answer_wait(saga_id, &name, who, Answer::Complete(payload), None)
        .await?;
    Ok(Json(CallbackAnswer {
        saga_id,
        wait: name,
        status: "completed",
    }))
}

/// Fills in the capability URL of each open wait of a saga read, on a
/// host that can sign them.
pub(super) fn with_callback_urls(state: &AppState, detail: &mut SagaDetail) {
    if let Some(urls) = &state.callbacks {
        urls.fill(&detail.saga, &mut detail.steps);
    }
}

/// What posting a message did.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePosted {
    /// The message's id: its `Idempotency-Key`, or a new one.
    pub id: String,
    /// `delivered` (to an open wait), `kept` (for a wait that opens
    /// later), or, for a repeat, what happened the first time.
    pub status: &'static str,
    /// The wait it went to.
    pub saga_id: Option<SagaId>,
    pub step_index: Option<u32>,
    /// A repeat of a message posted before under the same key.
    pub repeat: bool,
    /// Until when a kept message waits for its wait.
    pub expires_at: Timestamp,
}

/// Post a message for the wait with its correlation key: delivered to the
/// oldest open one, or kept (for `--message-ttl`) for one that opens
/// later. With `Idempotency-Key`, posting it again is delivered once.
#[utoipa::path(
    post,
    path = "/messages",
    tag = "waits",
    request_body = MessageRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "the message's id: a repeat is delivered once")),
    responses(
        (status = 201, description = "delivered or kept", body = MessagePosted),
        (status = 200, description = "posted before under this Idempotency-Key", body = MessagePosted),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "the Idempotency-Key was used for another message", body = ErrorBody),
    )
)]
async fn post_message(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<MessageRequest>,
) -> Result<(StatusCode, Json<MessagePosted>), ApiError> {
    caller.require(Role::Operator)?;
    if request.key.trim().is_empty() || request.key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "`key` must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    let id = match headers.get("idempotency-key") {
        Some(v) => {
            let key = v.to_str().map_err(|_| {
                ApiError::bad_request("the Idempotency-Key header must be visible ASCII")
            })?;
            check_label("Idempotency-Key", key)?;
            key.to_string()
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    let request_hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&(&request.key, &request.payload)).expect("JSON serializes"),
    ));
    let now = Timestamp::now();
    let expires_at = Timestamp(now.millis() + state.server.message_ttl.as_millis() as i64);
    let message = NewMessage {
        id: id.clone(),
        key: request.key,
        payload: request.payload,
        request_hash,
        now,
        expires_at,
    };
    let (status, code, to, repeat) = match state.runner.post_message(message).await? {
        MessageOutcome::Delivered {
            saga_id,
            step_index,
        } => (
            StatusCode::CREATED,
            "delivered",
            Some((saga_id, step_index)),
            false,
        ),
        MessageOutcome::Kept => (StatusCode::CREATED, "kept", None, false),
        MessageOutcome::Repeat { delivered_to } => (
            StatusCode::OK,
            if delivered_to.is_some() {
                "delivered"
            } else {
                "kept"
            },
            delivered_to,
            true,
        ),
    };
    Ok((
        status,
        Json(MessagePosted {
            id,
            status: code,
            saga_id: to.map(|(s, _)| s),
            step_index: to.map(|(_, i)| i),
            repeat,
            expires_at,
        }),
    ))
}
