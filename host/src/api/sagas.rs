//! `/v1/sagas`: start, list, show and cancel sagas.
//!
//! The API only reads state and records requests: starting stores a
//! `pending` saga with its plugin references pinned to digests, cancelling
//! sets a flag; the runner (woken by both) makes every transition.

use super::AppState;
use super::error::{ApiError, ErrorBody, JsonBody, invalid_json};
use super::plugins::resolve;
use crate::model::{PluginInfo, SagaDetail, SagaId, SagaRun, SagaStatus, StepSpec, Timestamp};
use crate::store::{CancelSaga, CreateSaga, SagaFilter};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_saga, list_sagas))
        .routes(routes!(get_saga))
        .routes(routes!(cancel_saga))
}

/// Most steps in one saga.
const MAX_STEPS: usize = 1_000;
/// Longest kind, deployment id, triggered-by, or idempotency key.
const MAX_LABEL: usize = 256;
/// Highest `max_attempts` a step may ask for.
const MAX_ATTEMPTS: u32 = 100;

/// `POST /v1/sagas` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSaga {
    /// What the saga does, e.g. "provision".
    pub kind: String,
    /// The steps in order: each a plugin reference (digest or name), or an
    /// object with the reference and per-step settings.
    #[serde(deserialize_with = "steps")]
    pub steps: Vec<StepRequest>,
    /// A JSON object every step sees; fixed for the saga's life.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[serde(default)]
    pub deployment_id: Option<String>,
    #[serde(default)]
    pub triggered_by: Option<String>,
}

/// One step of a start request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StepRequest {
    /// A plugin digest (`sha256:...`) or name.
    Ref(String),
    Detailed(StepOptions),
}

/// Each step is a string or an object; say which is wrong and why, rather
/// than serde's "did not match any variant".
fn steps<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<StepRequest>, D::Error> {
    use serde::de::Error;
    Vec::<Value>::deserialize(d)?
        .into_iter()
        .enumerate()
        .map(|(i, step)| match step {
            Value::String(reference) => Ok(StepRequest::Ref(reference)),
            Value::Object(_) => StepOptions::deserialize(step)
                .map(StepRequest::Detailed)
                .map_err(|e| D::Error::custom(format!("steps[{i}]: {e}"))),
            other => Err(D::Error::custom(format!(
                "steps[{i}]: a step is a plugin reference (a string) or an object \
                 {{plugin, max_attempts?, timeout_ms?, max_memory_bytes?, max_output_bytes?}}, not {other}"
            ))),
        })
        .collect()
}

/// A step with its own settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepOptions {
    /// A plugin digest or name.
    pub plugin: String,
    /// Attempts per phase, the first call included (default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Deadline of one call in milliseconds (default 30000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Memory limit of one call, up to the host's ceiling (default 64 MiB).
    #[serde(default)]
    pub max_memory_bytes: Option<u64>,
    /// Size limit of the step's output (default 1 MiB).
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
}

/// `{sagas: [...]}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaList {
    pub sagas: Vec<SagaRun>,
}

/// `GET /v1/sagas` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only sagas in this status.
    status: Option<String>,
    kind: Option<String>,
    deployment_id: Option<String>,
    /// At most this many (default 50, at most 1000).
    limit: Option<u32>,
}

fn check_label(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_LABEL {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be 1 to {MAX_LABEL} bytes"
        )));
    }
    Ok(())
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

/// Start a saga. With an `Idempotency-Key` header, repeating the same
/// request returns the same saga (200); another body with the key is a 409.
#[utoipa::path(
    post,
    path = "/sagas",
    tag = "sagas",
    request_body = StartSaga,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries of this request safe")),
    responses(
        (status = 201, description = "started", body = SagaRun),
        (status = 200, description = "the same request with this idempotency key started it before", body = SagaRun),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 409, description = "the idempotency key was used with another request", body = ErrorBody),
        (status = 422, description = "unknown plugin", body = ErrorBody),
    )
)]
async fn start_saga(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<SagaRun>), ApiError> {
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

    check_label("kind", &request.kind)?;
    for (field, value) in [
        ("deployment_id", &request.deployment_id),
        ("triggered_by", &request.triggered_by),
    ] {
        if let Some(value) = value {
            check_label(field, value)?;
        }
    }
    if request.steps.is_empty() || request.steps.len() > MAX_STEPS {
        return Err(ApiError::bad_request(format!(
            "`steps` must hold 1 to {MAX_STEPS} steps"
        )));
    }
    let inputs = match request.inputs {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(map)) => Value::Object(map),
        Some(_) => return Err(ApiError::bad_request("`inputs` must be a JSON object")),
    };

    let runtime = state.plugins.config();
    let defaults = &runtime.default_limits;
    let mut plan = Vec::with_capacity(request.steps.len());
    let mut unknown = Vec::new();
    // A plan often names one plugin several times: look each up once.
    let mut resolved: HashMap<String, Option<PluginInfo>> = HashMap::new();
    for (i, step) in request.steps.into_iter().enumerate() {
        let options = match step {
            StepRequest::Ref(plugin) => StepOptions {
                plugin,
                max_attempts: None,
                timeout_ms: None,
                max_memory_bytes: None,
                max_output_bytes: None,
            },
            StepRequest::Detailed(options) => options,
        };
        let max_attempts = options.max_attempts.unwrap_or(state.default_max_attempts);
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(ApiError::bad_request(format!(
                "steps[{i}].max_attempts must be 1 to {MAX_ATTEMPTS}"
            )));
        }
        let ceiling_ms = runtime.max_timeout_ceiling.as_millis() as u64;
        let timeout_ms = options
            .timeout_ms
            .unwrap_or(defaults.timeout.as_millis() as u64);
        if !(1..=ceiling_ms).contains(&timeout_ms) {
            return Err(ApiError::bad_request(format!(
                "steps[{i}].timeout_ms must be 1 to {ceiling_ms}"
            )));
        }
        if let Some(bytes) = options.max_memory_bytes
            && (bytes == 0 || bytes > runtime.max_memory_ceiling)
        {
            return Err(ApiError::bad_request(format!(
                "steps[{i}].max_memory_bytes must be 1 to {} (this host's ceiling)",
                runtime.max_memory_ceiling
            )));
        }
        if options.max_output_bytes == Some(0) {
            return Err(ApiError::bad_request(format!(
                "steps[{i}].max_output_bytes must be at least 1"
            )));
        }
        let info = match resolved.get(&options.plugin) {
            Some(info) => info.clone(),
            None => {
                let info = resolve(&state, &options.plugin).await?;
                resolved.insert(options.plugin.clone(), info.clone());
                info
            }
        };
        match info {
            Some(info) => plan.push(StepSpec {
                name: info.name,
                plugin: info.digest,
                max_attempts,
                timeout_ms,
                max_memory_bytes: options.max_memory_bytes,
                max_output_bytes: options.max_output_bytes,
            }),
            None => unknown.push(format!("`{}` (steps[{i}])", options.plugin)),
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_plugin",
            format!(
                "unknown plugin{}: {}",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", ")
            ),
        ));
    }

    let saga = SagaRun::pending(
        request.kind,
        plan,
        inputs,
        request.deployment_id,
        request.triggered_by,
        Timestamp::now(),
    );
    // With a free slot here, the saga is stored already claimed and
    // started by this host, and driven at once; else the runners claim it.
    let reservation = state.runner.reserve();
    let claim = reservation.as_ref().map(|_| state.runner.claim());
    match state
        .store
        .create_saga(
            &saga,
            idempotency
                .as_ref()
                .map(|(key, hash)| (key.as_str(), hash.as_str())),
            claim.as_ref(),
        )
        .await?
    {
        CreateSaga::Created(created) => {
            let saga = created.saga.clone();
            tracing::info!(saga = %saga.id, kind = %saga.kind, steps = saga.plan.len(), "saga started");
            match reservation {
                Some(reservation) => state.runner.adopt(reservation, created),
                None => state.runner.wake(),
            }
            Ok((StatusCode::CREATED, Json(saga)))
        }
        CreateSaga::Existing(saga) => Ok((StatusCode::OK, Json(saga))),
        CreateSaga::KeyConflict(id) => Err(ApiError::conflict(format!(
            "the Idempotency-Key was used for saga {id} with a different request"
        ))),
    }
}

/// List sagas, newest first.
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
        .map(str::parse::<SagaStatus>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be 1 to 1000"));
    }
    let filter = SagaFilter {
        status,
        kind: query.kind,
        deployment_id: query.deployment_id,
        limit,
    };
    Ok(Json(SagaList {
        sagas: state.store.list_sagas(&filter).await?,
    }))
}

fn parse_id(id: &str) -> Result<SagaId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no saga `{id}` (saga ids are UUIDs)")))
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
    state
        .store
        .saga(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no saga {id}")))
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
        (status = 404, body = ErrorBody),
        (status = 409, description = "the saga has already ended", body = ErrorBody),
    )
)]
async fn cancel_saga(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<SagaRun>), ApiError> {
    let id = parse_id(&id)?;
    match state.store.request_cancel(id, Timestamp::now()).await? {
        CancelSaga::Requested(saga) => {
            tracing::info!(saga = %id, "cancel requested");
            state.runner.notify_cancel(id);
            Ok((StatusCode::ACCEPTED, Json(saga)))
        }
        CancelSaga::AlreadyEnded(saga) => Err(ApiError::conflict(format!(
            "saga {id} has already ended ({})",
            saga.status
        ))),
        CancelSaga::NotFound => Err(ApiError::not_found(format!("no saga {id}"))),
    }
}
