//! `/v1/schedules`: templates started on a timer (docs/schedules.md). A
//! put is checked whole (the calendar, the time zone, the window, and the
//! start itself as a start request would be planned now) and stores
//! nothing when any part is wrong; the runner fires what is stored.

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody, JsonBody, invalid_json};
use crate::config::{
    CATCHUP_WINDOW_RANGE, DEFAULT_CATCHUP_WINDOW, SCHEDULE_FIRES_SHOWN, SCHEDULE_NEXT_RUNS,
};
use crate::model::{
    Fire, MAX_SCHEDULE_NAME, Overlap, Schedule, ScheduleRequest, ScheduleSpec, ScheduleStatus,
    Timestamp,
};
use crate::plan::StartSaga;
use crate::store::StoredSchedule;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_schedules))
        .routes(routes!(put_schedule, get_schedule, delete_schedule))
        .routes(routes!(trigger_schedule))
        .routes(routes!(pause_schedule))
        .routes(routes!(resume_schedule))
}

/// `{schedules: [...]}`, by name; each with its latest fire only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleStatus>,
}

fn no_schedule(name: &str) -> ApiError {
    ApiError::not_found(format!("no schedule `{name}`"))
}

/// The schedule a request describes, every field checked but the start.
fn schedule_of(
    name: String,
    request: ScheduleRequest,
    created_at: Timestamp,
    now: Timestamp,
) -> Result<Schedule, ApiError> {
    let template = request
        .template
        .ok_or_else(|| ApiError::bad_request("`template` is required"))?;
    let inputs = request
        .inputs
        .unwrap_or_else(|| Value::Object(Default::default()));
    if !inputs.is_object() {
        return Err(ApiError::bad_request("`inputs` must be a JSON object"));
    }
    crate::model::Calendar::new(
        request.cron.as_deref(),
        request.every.as_deref(),
        request.timezone.as_deref(),
    )
    .map_err(ApiError::bad_request)?;
    let catchup_window = match request.catchup_window {
        Some(text) => {
            let window = humantime::parse_duration(&text).map_err(|e| {
                ApiError::bad_request(format!("`catchup_window`: `{text}` is not a duration: {e}"))
            })?;
            if !CATCHUP_WINDOW_RANGE.contains(&window) {
                return Err(ApiError::bad_request(format!(
                    "`catchup_window` must be {} to {}, not `{text}`",
                    humantime::format_duration(*CATCHUP_WINDOW_RANGE.start()),
                    humantime::format_duration(*CATCHUP_WINDOW_RANGE.end()),
                )));
            }
            text
        }
        None => humantime::format_duration(DEFAULT_CATCHUP_WINDOW).to_string(),
    };
    Ok(Schedule {
        name,
        spec: ScheduleSpec {
            template,
            inputs,
            timezone: match (&request.cron, request.timezone) {
                (Some(_), Some(tz)) => tz,
                _ => "UTC".into(),
            },
            cron: request.cron,
            every: request.every,
            overlap: request.overlap.unwrap_or(Overlap::Skip),
            catchup_window,
        },
        paused: request.paused,
        created_at,
        updated_at: now,
    })
}

/// The status of a stored schedule, with its newest `fires` fires.
async fn status(
    state: &AppState,
    stored: StoredSchedule,
    fires: usize,
) -> Result<ScheduleStatus, ApiError> {
    let schedule = stored.schedule;
    let next_runs = match (stored.next_fire_at, schedule.calendar()) {
        (Some(next), Ok(calendar)) => std::iter::once(next)
            .chain(calendar.next_runs(next, SCHEDULE_NEXT_RUNS - 1))
            .collect(),
        _ => Vec::new(),
    };
    let fires: Vec<Fire> = state.store.schedule_fires(&schedule.name, fires).await?;
    Ok(ScheduleStatus {
        schedule,
        next_runs,
        fires,
    })
}

async fn stored(state: &AppState, name: &str) -> Result<StoredSchedule, ApiError> {
    state
        .store
        .schedule(name)
        .await?
        .ok_or_else(|| no_schedule(name))
}

/// Every schedule by name, with its next runs and its latest fire.
#[utoipa::path(
    get,
    path = "/schedules",
    tag = "schedules",
    responses((status = 200, body = ScheduleList))
)]
async fn list_schedules(State(state): State<AppState>) -> Result<Json<ScheduleList>, ApiError> {
    let mut schedules = Vec::new();
    for stored in state.store.list_schedules().await? {
        schedules.push(status(&state, stored, 1).await?);
    }
    Ok(Json(ScheduleList { schedules }))
}

/// One schedule: its next 5 nominal times and its latest fires, each with
/// the saga it started or why it started none.
#[utoipa::path(
    get,
    path = "/schedules/{name}",
    tag = "schedules",
    responses((status = 200, body = ScheduleStatus), (status = 404, body = ErrorBody))
)]
async fn get_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleStatus>, ApiError> {
    let stored = stored(&state, &name).await?;
    Ok(Json(status(&state, stored, SCHEDULE_FIRES_SHOWN).await?))
}

/// Creates or replaces a schedule; its calendar starts over from now (a
/// replaced schedule keeps its fires on record).
#[utoipa::path(
    put,
    path = "/schedules/{name}",
    tag = "schedules",
    request_body = ScheduleRequest,
    responses(
        (status = 201, description = "created", body = ScheduleStatus),
        (status = 200, description = "replaced", body = ScheduleStatus),
        (status = 400, description = "a field is wrong: the message names it", body = ErrorBody),
        (status = 403, description = "only an admin puts schedules", body = ErrorBody),
        (status = 422, description = "unknown template, or inputs failing its schema", body = ErrorBody),
    )
)]
async fn put_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<ScheduleStatus>), ApiError> {
    caller.require(Role::Admin)?;
    super::check_name("schedule", &name, MAX_SCHEDULE_NAME)?;
    let request: ScheduleRequest = serde_path_to_error::deserialize(&body).map_err(invalid_json)?;
    let now = state.runner.now();
    let created_at = match state.store.schedule(&name).await? {
        Some(old) => old.schedule.created_at,
        None => now,
    };
    let schedule = schedule_of(name, request, created_at, now)?;
    // The start as a fire would plan it now: the template, its schema, its
    // plugins and keys.
    state
        .planner
        .start(
            state.store.as_ref(),
            StartSaga {
                template: Some(schedule.spec.template.clone()),
                inputs: Some(schedule.spec.inputs.clone()),
                ..StartSaga::default()
            },
            None,
        )
        .await?;
    let next = if schedule.paused {
        None
    } else {
        schedule
            .calendar()
            .map_err(ApiError::bad_request)?
            .next_after(now)
    };
    let created = state.store.put_schedule(&schedule, next).await?;
    tracing::info!(schedule = %schedule.name, created, "schedule put");
    let status = status(
        &state,
        StoredSchedule {
            schedule,
            next_fire_at: next,
        },
        SCHEDULE_FIRES_SHOWN,
    )
    .await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(status)))
}

/// Deletes a schedule and its record of fires; the sagas it started stay.
#[utoipa::path(
    delete,
    path = "/schedules/{name}",
    tag = "schedules",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn delete_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if state.store.delete_schedule(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_schedule(&name))
    }
}

/// Fires a schedule now (paused or not), under its overlap policy; its
/// calendar is not moved. Answers the fire.
#[utoipa::path(
    post,
    path = "/schedules/{name}/trigger",
    tag = "schedules",
    responses(
        (status = 200, description = "the fire: the saga it started, or why none", body = Fire),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "a fire of this schedule at this very millisecond is being acted on", body = ErrorBody),
    )
)]
async fn trigger_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Fire>, ApiError> {
    caller.require(Role::Operator)?;
    let stored = stored(&state, &name).await?;
    let now = state.runner.now();
    state
        .runner
        .fire_schedule(&state.planner, &stored.schedule, now, true, None)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "schedule `{name}` is being fired at {now} already; try again"
            ))
        })
}

/// Pauses a schedule: nothing fires until it is resumed.
#[utoipa::path(
    post,
    path = "/schedules/{name}/pause",
    tag = "schedules",
    responses((status = 200, body = ScheduleStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn pause_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ScheduleStatus>, ApiError> {
    caller.require(Role::Admin)?;
    set_paused(state, name, true).await
}

/// Resumes a schedule from now: the times it was paused through are not
/// fired.
#[utoipa::path(
    post,
    path = "/schedules/{name}/resume",
    tag = "schedules",
    responses((status = 200, body = ScheduleStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn resume_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ScheduleStatus>, ApiError> {
    caller.require(Role::Admin)?;
    set_paused(state, name, false).await
}

async fn set_paused(
    state: AppState,
    name: String,
    paused: bool,
) -> Result<Json<ScheduleStatus>, ApiError> {
    let old = stored(&state, &name).await?;
    let now = state.runner.now();
    let next = match (paused, old.schedule.paused) {
        (true, _) => None,
        // Resuming a running schedule keeps its next time.
        (false, false) => old.next_fire_at,
        (false, true) => old
            .schedule
            .calendar()
            .map_err(ApiError::bad_request)?
            .next_after(now),
    };
    if !state
        .store
        .set_schedule_paused(&name, paused, next, now)
        .await?
    {
        return Err(no_schedule(&name));
    }
    let stored = stored(&state, &name).await?;
    Ok(Json(status(&state, stored, SCHEDULE_FIRES_SHOWN).await?))
}
