//! `/v1/sagas`: start, list, show, and act on sagas (cancel, pause,
//! resume, retry, resolve).
//!
//! Handlers check the caller's role and the request's shape, then submit to
//! the runner: `plan` turns a start request into a pinned saga, the runner
//! stores and drives it, and the runner decides whether an action is
//! allowed in the saga's state.

use super::AppState;
use super::auth::{Caller, Role};
use super::cursor;
use super::error::{ApiError, ErrorBody, JsonBody, invalid_json};
use crate::model::{Resolution, SagaDetail, SagaId, SagaRun, SagaStatus, SagaSummary, Timestamp};
use crate::plan::{StartSaga, check_label};
use crate::store::{CreateSaga, SagaFilter};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_saga, list_sagas))
        .routes(routes!(get_saga))
        .routes(routes!(get_step_output))
        .routes(routes!(cancel_saga))
        .routes(routes!(pause_saga))
        .routes(routes!(resume_saga))
        .routes(routes!(retry_saga))
        .routes(routes!(resolve_step))
}

/// `{sagas: [...], next_cursor}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaList {
    /// Summaries, newest first: no inputs, context or plan (the whole saga
    /// comes from `GET /v1/sagas/{id}`).
    pub sagas: Vec<SagaSummary>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// `GET /v1/sagas` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only sagas in this status.
    status: Option<String>,
    kind: Option<String>,
    deployment_id: Option<String>,
    /// Only sagas started from this template.
    template: Option<String>,
    /// At most this many (default 50, at most 1000).
    limit: Option<u32>,
    /// Where the page starts: the `next_cursor` of the page before, with
    /// the same filters.
    cursor: Option<String>,
}

/// JSON with object keys sorted, so that two bodies that mean the same
/// hash the same.
fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Start a saga, from its steps or from a template. With an
/// `Idempotency-Key` header, repeating the same request returns the same
/// saga (200); another body with the key is a 409. A `traceparent` header
/// puts the saga's spans into the caller's trace.
#[utoipa::path(
    post,
    path = "/sagas",
    tag = "sagas",
    request_body = StartSaga,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries of this request safe"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context: with --otlp-endpoint, the saga's spans join this trace (an invalid value is ignored)"),
    ),
    responses(
        (status = 201, description = "started", body = SagaRun),
        (status = 200, description = "the same request with this idempotency key started it before", body = SagaRun),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 403, description = "the token's role may not start sagas", body = ErrorBody),
        (status = 409, description = "the idempotency key was used with another request (`conflict`), or a concurrency key with `on_conflict: reject` has no free slot (`concurrency_conflict`, with `key` and `holders`)", body = ErrorBody),
        (status = 422, description = "unknown plugin or template, or inputs failing the template's schema", body = ErrorBody),
    )
)]
async fn start_saga(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<SagaRun>), ApiError> {
    caller.require(Role::Operator)?;
    let request: StartSaga = serde_path_to_error::deserialize(&body).map_err(invalid_json)?;
    // With its key, the request's hash: a repeat must be the same request.
    let idempotency = match headers.get("idempotency-key") {
        Some(v) => {
            let key = v.to_str().map_err(|_| {
                ApiError::bad_request("the Idempotency-Key header must be visible ASCII")
            })?;
            check_label("Idempotency-Key", key)?;
            let hash = hex::encode(Sha256::digest(canonical(&body).as_bytes()));
            Some((key.to_string(), hash))
        }
        None => None,
    };
    let mut saga = state
        .planner
        .start(state.store.as_ref(), request, caller.actor())
        .await?;
    saga.trace_parent = crate::telemetry::traceparent_of(&headers);
    match state.runner.start_saga(saga, idempotency).await? {
        CreateSaga::Created(created) => {
            let saga = created.saga;
            tracing::info!(saga = %saga.id, kind = %saga.kind, steps = saga.plan.len(), "saga started");
            Ok((StatusCode::CREATED, Json(saga)))
        }
        CreateSaga::Queued(saga) => {
            tracing::info!(saga = %saga.id, kind = %saga.kind, "saga queued for a concurrency key");
            Ok((StatusCode::CREATED, Json(saga)))
        }
        CreateSaga::ConcurrencyConflict(blocked) => {
            let mut error = ApiError::new(
                StatusCode::CONFLICT,
                "concurrency_conflict",
                format!(
                    "the concurrency key `{}` has no free slot (held by {}); nothing was stored",
                    blocked.key,
                    blocked
                        .holders
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            error.details.insert("key".into(), blocked.key.into());
            error.details.insert(
                "holders".into(),
                serde_json::to_value(&blocked.holders).expect("ids serialize"),
            );
            Err(error)
        }
        CreateSaga::Existing(saga) => Ok((StatusCode::OK, Json(saga))),
        CreateSaga::KeyConflict(id) => Err(ApiError::conflict(format!(
            "the Idempotency-Key was used for saga {id} with a different request"
        ))),
        CreateSaga::PluginGone(digest) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_plugin",
            format!("unknown plugin: {digest} was deleted while the saga started"),
        )),
    }
}

/// The filters a saga cursor is for.
fn saga_filters(query: &ListQuery) -> impl std::fmt::Debug + '_ {
    (
        &query.status,
        &query.kind,
        &query.deployment_id,
        &query.template,
    )
}

/// List sagas, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/sagas",
    tag = "sagas",
    params(ListQuery),
    responses((status = 200, body = SagaList), (status = 400, body = ErrorBody))
)]
async fn list_sagas(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SagaList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let status = query
        .status
        .as_deref()
        .map(SagaStatus::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be 1 to 1000"));
    }
    let before = query
        .cursor
        .as_deref()
        .map(|c| {
            cursor::decode::<(i64, SagaId)>(
                c,
                &saga_filters(&query),
                "status, kind, deployment_id and template",
            )
        })
        .transpose()?
        .map(|(t, id)| (Timestamp(t), id));
    let filter = SagaFilter {
        status,
        kind: query.kind.clone(),
        deployment_id: query.deployment_id.clone(),
        template: query.template.clone(),
        limit,
        before,
    };
    let sagas = state.store.list_sagas(&filter).await?;
    let next_cursor = (sagas.len() == limit as usize)
        .then(|| sagas.last())
        .flatten()
        .map(|last| cursor::encode((last.created_at.millis(), last.id), &saga_filters(&query)));
    Ok(Json(SagaList { sagas, next_cursor }))
}

pub(super) fn parse_id(id: &str) -> Result<SagaId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::not_found(format!(
            "no saga `{}` (saga ids are UUIDs)",
            id.chars().take(64).collect::<String>()
        ))
    })
}

/// A saga with its ledger and resources.
#[utoipa::path(
    get,
    path = "/sagas/{id}",
    tag = "sagas",
    params(("id" = String, Path, description = "the saga's id")),
    responses((status = 200, body = SagaDetail), (status = 404, body = ErrorBody))
)]
async fn get_saga(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SagaDetail>, ApiError> {
    let id = parse_id(&id)?;
    let mut detail = state
        .store
        .saga_shown(id, state.server.shown_output_bytes)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no saga {id}")))?;
    super::waits::with_callback_urls(&state, &mut detail);
    Ok(Json(detail))
}

/// One step's whole output (a saga read leaves out an output larger than
/// the server shows, marking it `output_omitted`).
#[utoipa::path(
    get,
    path = "/sagas/{id}/steps/{index}/output",
    tag = "sagas",
    params(
        ("id" = String, Path, description = "the saga's id"),
        ("index" = u32, Path, description = "the step's index"),
    ),
    responses(
        (status = 200, description = "the step's output, as stored", content_type = "application/json", body = Object),
        (status = 404, description = "no such saga, step, or output yet", body = ErrorBody),
    )
)]
async fn get_step_output(
    State(state): State<AppState>,
    Path((id, index)): Path<(String, u32)>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let id = parse_id(&id)?;
    let output =
        state.store.step_output(id, index).await?.ok_or_else(|| {
            ApiError::not_found(format!("saga {id} has no output of step {index}"))
        })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        output,
    )
        .into_response())
}

/// Ask a saga to stop: its step in flight is interrupted and completed
/// steps are compensated.
#[utoipa::path(
    post,
    path = "/sagas/{id}/cancel",
    tag = "sagas",
    params(("id" = String, Path, description = "the saga's id")),
    responses(
        (status = 202, description = "cancel recorded", body = SagaRun),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the saga has already ended", body = ErrorBody),
    )
)]
async fn cancel_saga(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<SagaRun>), ApiError> {
    caller.require(Role::Operator)?;
    let saga = state.runner.cancel(parse_id(&id)?, caller.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(saga)))
}

/// Pause a saga: no new step starts; a step in flight finishes; then its
/// status is `paused`.
#[utoipa::path(
    post,
    path = "/sagas/{id}/pause",
    tag = "sagas",
    params(("id" = String, Path, description = "the saga's id")),
    responses(
        (status = 202, description = "pause recorded", body = SagaRun),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the saga has ended or is compensating", body = ErrorBody),
    )
)]
async fn pause_saga(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<SagaRun>), ApiError> {
    caller.require(Role::Operator)?;
    let saga = state.runner.pause(parse_id(&id)?, caller.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(saga)))
}

/// Resume a paused saga where it stopped.
#[utoipa::path(
    post,
    path = "/sagas/{id}/resume",
    tag = "sagas",
    params(("id" = String, Path, description = "the saga's id")),
    responses(
        (status = 202, description = "resumed", body = SagaRun),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the saga is not paused", body = ErrorBody),
    )
)]
async fn resume_saga(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<SagaRun>), ApiError> {
    caller.require(Role::Operator)?;
    let saga = state.runner.resume(parse_id(&id)?, caller.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(saga)))
}

/// Compensate a `failed` saga's `compensation_failed` steps again, with
/// fresh attempts: it ends `rolled_back`, or `failed` again.
#[utoipa::path(
    post,
    path = "/sagas/{id}/retry",
    tag = "sagas",
    params(("id" = String, Path, description = "the saga's id")),
    responses(
        (status = 202, description = "compensating again", body = SagaRun),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the saga is not failed, or a plugin it needs was deleted", body = ErrorBody),
    )
)]
async fn retry_saga(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<SagaRun>), ApiError> {
    caller.require(Role::Operator)?;
    let saga = state.runner.retry(parse_id(&id)?, caller.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(saga)))
}

/// What a human says about resolving a step.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// What was done by hand, e.g. "deleted by hand"; kept on the action.
    #[serde(default)]
    pub note: Option<String>,
    /// For the step of an `in_doubt` saga: whether its cut-short call
    /// happened (docs/recovery.md).
    #[serde(default)]
    pub resolution: Option<Resolution>,
    /// With `applied`: what the step output (a JSON object; `{}` if absent).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
}

/// Resolve a `compensation_failed` step of a `failed` saga by hand: it is
/// marked `compensated`; when none is left the saga ends `rolled_back`.
/// Or resolve the step of an `in_doubt` saga (docs/recovery.md):
/// `{"resolution": "applied", "output": {...}}` completes it and the saga
/// goes on after it; `{"resolution": "not_applied"}` calls it again.
#[utoipa::path(
    post,
    path = "/sagas/{id}/steps/{index}/resolve",
    tag = "sagas",
    params(
        ("id" = String, Path, description = "the saga's id"),
        ("index" = u32, Path, description = "the step's index in the plan"),
    ),
    request_body(content = ResolveRequest, description = "optional; `{}` or no body is no note"),
    responses(
        (status = 202, description = "resolved", body = SagaRun),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the saga is not failed, or the step is not compensation_failed", body = ErrorBody),
    )
)]
async fn resolve_step(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, index)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<SagaRun>), ApiError> {
    caller.require(Role::Operator)?;
    let id = parse_id(&id)?;
    let index: u32 = index.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "`{}` is not a step index (a number from 0)",
            index.chars().take(32).collect::<String>()
        ))
    })?;
    let request: ResolveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResolveRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not a resolve request: {e}")))?
    };
    if request.resolution.is_none() && request.output.is_some() {
        return Err(ApiError::bad_request(
            "`output` goes with `\"resolution\": \"applied\"`",
        ));
    }
    let saga = state
        .runner
        .resolve(
            id,
            index,
            request.resolution.map(|r| (r, request.output)),
            request.note,
            caller.actor(),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(saga)))
}
