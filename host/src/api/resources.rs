//! `/v1/resources`: the desired-state ledger, what sagas provisioned and
//! whether it is still meant to exist, across every saga (one row per kind
//! and external id), filtered and paged by a cursor; and its drift scan
//! (`POST /v1/resources/scan`, docs/recovery.md), which the runner does.

use super::AppState;
use super::auth::{Caller, Role};
use super::cursor;
use super::error::{ApiError, ErrorBody, JsonBody};
use crate::model::{Drift, Resource, ResourceState, SagaId};
use crate::runner::drift::{ScanReport, ScanRequest};
use crate::store::ResourceFilter;
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_resources))
        .routes(routes!(scan_resources))
}

/// `{resources: [...], next_cursor}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResourceList {
    /// By kind, then external id.
    pub resources: Vec<Resource>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// `GET /v1/resources` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResourceQuery {
    kind: Option<String>,
    deployment_id: Option<String>,
    /// Only what this saga recorded last.
    saga_id: Option<String>,
    /// `present` or `removed`.
    state: Option<String>,
    /// What the last drift scan found: `none`, `changed`, `missing` or
    /// `unknown`.
    drift: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
    /// Where the page starts: the `next_cursor` of the page before, with
    /// the same filters.
    cursor: Option<String>,
}

/// The desired-state ledger: what sagas recorded, one row per kind and
/// external id, `present` or `removed`.
#[utoipa::path(
    get,
    path = "/resources",
    tag = "resources",
    params(ResourceQuery),
    responses((status = 200, body = ResourceList), (status = 400, body = ErrorBody))
)]
async fn list_resources(
    State(state): State<AppState>,
    query: Result<Query<ResourceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ResourceList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let resource_state = query
        .state
        .as_deref()
        .map(ResourceState::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let saga_id = query
        .saga_id
        .as_deref()
        .map(|id| {
            id.parse::<SagaId>().map_err(|_| {
                ApiError::bad_request(format!(
                    "`saga_id` `{}` is not a saga id (a UUID)",
                    id.chars().take(64).collect::<String>()
                ))
            })
        })
        .transpose()?;
    let drift = query
        .drift
        .as_deref()
        .map(Drift::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be 1 to 1000"));
    }
    let filters = (
        &query.kind,
        &query.deployment_id,
        &query.saga_id,
        &query.state,
        &query.drift,
    );
    let after = query
        .cursor
        .as_deref()
        .map(|c| cursor::decode(c, &filters, "kind, deployment_id, saga_id, state and drift"))
        .transpose()?;
    let filter = ResourceFilter {
        kind: query.kind.clone(),
        deployment_id: query.deployment_id.clone(),
        saga_id,
        state: resource_state,
        drift,
        limit,
        after,
    };
    let resources = state.store.list_resources(&filter).await?;
    let next_cursor = (resources.len() == limit as usize)
        .then(|| resources.last())
        .flatten()
        .map(|last| cursor::encode((&last.kind, &last.external_id), &filters));
    Ok(Json(ResourceList {
        resources,
        next_cursor,
    }))
}

/// Scan the present resources (all, or of a `kind`, or recorded by a
/// `saga_id`) for drift: each step that recorded some is asked, through
/// its plugin's `observe`, what is there now; each resource gets
/// `observed_at`, `drift` and (when `changed`) a `diff` (RFC 6902). It
/// answers when the scan is done.
#[utoipa::path(
    post,
    path = "/resources/scan",
    tag = "resources",
    request_body = ScanRequest,
    responses(
        (status = 200, body = ScanReport),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
async fn scan_resources(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<ScanRequest>,
) -> Result<Json<ScanReport>, ApiError> {
    caller.require(Role::Operator)?;
    Ok(Json(state.runner.scan_drift(&request).await?))
}
