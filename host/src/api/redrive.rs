//! Redrive (docs/recovery.md): drive a `failed` or `rolled_back` saga
//! forward again from a chosen step, one saga or every one a filter finds.
//! Handlers check the caller and the request's shape (an `inputs_patch`
//! against the saga's template's schema); the runner decides what the
//! redrive does (`runner::redrive`).

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody, JsonBody};
use super::sagas::parse_id;
use crate::config::MAX_REDRIVE_BATCH;
use crate::model::{BulkRedrive, BulkRedriveRequest, RedrivePlan, RedriveRequest};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(redrive_saga))
        .routes(routes!(redrive_sagas))
}

/// Drive a `failed` or `rolled_back` saga forward again, keeping its id:
/// `resume` from the first step whose work is not in effect, `rerun` from
/// `from_step` (executing again steps that had completed), or `rewind`
/// (compensate what is in effect back to `from_step`, then go forward).
/// `dry_run` answers the plan and changes nothing.
#[utoipa::path(
    post,
    path = "/sagas/{id}/redrive",
    tag = "sagas",
    params(("id" = String, Path, description = "the saga's id")),
    request_body = RedriveRequest,
    responses(
        (status = 200, description = "the plan of a dry run; nothing changed", body = RedrivePlan),
        (status = 202, description = "redriven: the plan it follows", body = RedrivePlan),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the saga is not failed or rolled_back, a step before `from_step` is not in effect, or a plugin it needs is gone", body = ErrorBody),
        (status = 422, description = "`from_step` names no step, `resume` was given another step, or the patched inputs fail the template's schema", body = ErrorBody),
    )
)]
async fn redrive_saga(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<RedriveRequest>,
) -> Result<(StatusCode, Json<RedrivePlan>), ApiError> {
    caller.require(Role::Operator)?;
    let id = parse_id(&id)?;
    if request.inputs_patch.is_some() {
        let saga = state
            .store
            .saga(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no saga {id}")))?;
        state
            .planner
            .check_redrive_inputs(
                state.store.as_ref(),
                &saga.saga,
                request.inputs_patch.as_ref(),
            )
            .await?;
    }
    let dry_run = request.dry_run;
    let plan = state.runner.redrive(id, request, caller.actor()).await?;
    let status = if dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(plan)))
}

/// Redrive every `failed` or `rolled_back` saga a filter finds (`kind`,
/// `template`, `status`, `error_contains`, a time range), oldest first,
/// each as `POST /v1/sagas/{id}/redrive` would: the answer lists the ids
/// redriven and those refused with why. A filter finding more than
/// 10,000 sagas is refused (narrow it).
#[utoipa::path(
    post,
    path = "/sagas/redrive",
    tag = "sagas",
    request_body = BulkRedriveRequest,
    responses(
        (status = 200, description = "what was redriven (or, on a dry run, would be) and what was refused", body = BulkRedrive),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "a bad filter, or one finding too many sagas", body = ErrorBody),
    )
)]
async fn redrive_sagas(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<BulkRedriveRequest>,
) -> Result<Json<BulkRedrive>, ApiError> {
    caller.require(Role::Operator)?;
    if let Some(patch) = &request.inputs_patch
        && !patch.is_object()
    {
        return Err(ApiError::bad_request(
            "`inputs_patch` must be a JSON object (a merge patch: `null` removes a field)",
        ));
    }
    let answer = state
        .runner
        .redrive_many(&request, caller.actor(), MAX_REDRIVE_BATCH, |saga| {
            let state = state.clone();
            let patch = request.inputs_patch.clone();
            async move {
                state
                    .planner
                    .check_redrive_inputs(state.store.as_ref(), &saga, patch.as_ref())
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
    Ok(Json(answer))
}
