//! `/v1/budgets`: provider budgets (docs/flow-control.md), a rate at which
//! every host may send steps' requests to a provider's origins, paused
//! for every host by the provider's `429`/`Retry-After` or by hand. Writes
//! are the admin's; what is wrong with a budget is a `400` naming the
//! field, or a `422` naming the budget whose origins it overlaps.

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody, JsonBody, invalid_json};
use crate::model::{
    Budget, BudgetRequest, BudgetStatus, MAX_BUDGET_NAME, MAX_BUDGET_ORIGINS, Timestamp,
};
use crate::store::PutBudget;
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
        .routes(routes!(list_budgets))
        .routes(routes!(put_budget, get_budget, delete_budget))
        .routes(routes!(pause_budget))
}

/// `{budgets: [...]}`, by name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BudgetList {
    pub budgets: Vec<BudgetStatus>,
}

/// `POST /v1/budgets/{name}/pause` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBudget {
    /// No request before this time (RFC 3339); a time past lifts a pause.
    pub until: Timestamp,
}

/// The budget a request describes, every field checked.
fn budget_of(name: String, request: BudgetRequest, now: Timestamp) -> Result<Budget, ApiError> {
    if request.origins.is_empty() || request.origins.len() > MAX_BUDGET_ORIGINS {
        return Err(ApiError::bad_request(format!(
            "`origins` must hold 1 to {MAX_BUDGET_ORIGINS} origins"
        )));
    }
    if request.rate == 0 {
        return Err(ApiError::bad_request("`rate` must be at least 1"));
    }
    let per = request.per.unwrap_or_else(|| "1s".into());
    let per_ms = humantime::parse_duration(&per)
        .map_err(|e| ApiError::bad_request(format!("`per`: `{per}` is not a duration: {e}")))?
        .as_millis();
    if !(1..=86_400_000).contains(&per_ms) {
        return Err(ApiError::bad_request("`per` must be 1ms to 24h"));
    }
    let burst = request.burst.unwrap_or(1);
    if burst == 0 {
        return Err(ApiError::bad_request("`burst` must be at least 1"));
    }
    Ok(Budget {
        name,
        origins: request.origins,
        rate: request.rate,
        per,
        per_ms: per_ms as u64,
        burst,
        paused_until: None,
        created_at: now,
        updated_at: now,
    })
}

async fn statuses(state: &AppState) -> Result<Vec<BudgetStatus>, ApiError> {
    let rows = state.store.list_budgets().await?;
    Ok(rows
        .into_iter()
        .map(|(budget, tat, now)| BudgetStatus {
            tokens: budget.tokens(tat, now),
            waiting: state.budgets.waiting(&budget.name),
            budget,
        })
        .collect())
}

/// Every budget by name, with its tokens now and the requests of this host
/// waiting for one.
#[utoipa::path(get, path = "/budgets", tag = "budgets", responses((status = 200, body = BudgetList)))]
async fn list_budgets(State(state): State<AppState>) -> Result<Json<BudgetList>, ApiError> {
    Ok(Json(BudgetList {
        budgets: statuses(&state).await?,
    }))
}

/// One budget, with its tokens now and the requests of this host waiting.
#[utoipa::path(
    get,
    path = "/budgets/{name}",
    tag = "budgets",
    responses((status = 200, body = BudgetStatus), (status = 404, body = ErrorBody))
)]
async fn get_budget(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<BudgetStatus>, ApiError> {
    statuses(&state)
        .await?
        .into_iter()
        .find(|b| b.budget.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no budget `{name}`")))
}

/// Creates or replaces a budget (its tokens and any pause are kept). Every
/// step's request to one of its origins takes a token first, from any host.
#[utoipa::path(
    put,
    path = "/budgets/{name}",
    tag = "budgets",
    request_body = BudgetRequest,
    responses(
        (status = 201, description = "created", body = Budget),
        (status = 200, description = "replaced", body = Budget),
        (status = 400, description = "a field is wrong: the message names it", body = ErrorBody),
        (status = 422, description = "its origins overlap another budget's", body = ErrorBody),
    )
)]
async fn put_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Budget>), ApiError> {
    caller.require(Role::Admin)?;
    super::check_name("budget", &name, MAX_BUDGET_NAME)?;
    let request: BudgetRequest = serde_path_to_error::deserialize(&body).map_err(invalid_json)?;
    let budget = budget_of(name, request, Timestamp::now())?;
    let put = state.store.put_budget(&budget).await?;
    state.budgets.changed();
    match put {
        PutBudget::Created(b) => Ok((StatusCode::CREATED, Json(b))),
        PutBudget::Updated(b) => Ok((StatusCode::OK, Json(b))),
        PutBudget::Overlaps {
            other,
            ours,
            theirs,
        } => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "budget_overlap",
            format!(
                "`origins`: {ours} overlaps {theirs} of budget `{other}`; an origin may be in one budget only"
            ),
        )),
    }
}

/// Deletes a budget: requests to its origins go out unmetered.
#[utoipa::path(
    delete,
    path = "/budgets/{name}",
    tag = "budgets",
    responses((status = 204), (status = 404, body = ErrorBody))
)]
async fn delete_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let deleted = state.store.delete_budget(&name).await?;
    state.budgets.changed();
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no budget `{name}`")))
    }
}

/// Pauses a budget for every host until a time (or lifts a pause with a
/// time past).
#[utoipa::path(
    post,
    path = "/budgets/{name}/pause",
    tag = "budgets",
    request_body = PauseBudget,
    responses(
        (status = 200, body = BudgetStatus),
        (status = 400, description = "no `until`, or not an RFC 3339 time", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn pause_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<BudgetStatus>, ApiError> {
    caller.require(Role::Admin)?;
    let request: PauseBudget = serde_path_to_error::deserialize(&body).map_err(invalid_json)?;
    if !state
        .store
        .pause_budget(&name, request.until, false)
        .await?
    {
        return Err(ApiError::not_found(format!("no budget `{name}`")));
    }
    get_budget(State(state), Path(name)).await
}
