//! `/v1/plugins/{name}/grants`: what a plugin name may reach (outbound
//! HTTP origins, secrets). Admins write grants; anyone who may read sees
//! them. A name may be granted before it is uploaded. A change takes
//! effect on every host (see `grants::AccessBook`).

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody, JsonBody};
use crate::model::Grants;
use crate::model::Timestamp;
use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(put_grants, get_grants))
}

/// A plugin name as a path segment, checked.
fn plugin_name(name: &str) -> Result<(), ApiError> {
    crate::plugin::plugin_name(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Replace what a plugin name is granted.
#[utoipa::path(
    put,
    path = "/plugins/{ref}/grants",
    tag = "plugins",
    params(("ref" = String, Path, description = "the plugin's name")),
    request_body = Grants,
    responses(
        (status = 200, description = "the grants, as stored", body = Grants),
        (status = 400, description = "a malformed origin, secret name or plugin name", body = ErrorBody),
        (status = 403, description = "only admins grant", body = ErrorBody),
    )
)]
async fn put_grants(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(grants): JsonBody<Grants>,
) -> Result<Json<Grants>, ApiError> {
    caller.require(Role::Admin)?;
    plugin_name(&name)?;
    let mut grants = grants;
    grants.http.sort();
    grants.http.dedup();
    state
        .store
        .put_grants(&name, &grants, Timestamp::now())
        .await?;
    state.runner.access().changed();
    if let Err(e) = state.store.announce_access().await {
        tracing::warn!(error = %e, "telling the other hosts about new grants");
    }
    tracing::info!(
        plugin = %name,
        http = grants.http.len(),
        secrets = grants.secrets.len(),
        actor = caller.actor().as_deref().unwrap_or("-"),
        "grants replaced"
    );
    Ok(Json(grants))
}

/// What a plugin name is granted (empty when nothing).
#[utoipa::path(
    get,
    path = "/plugins/{ref}/grants",
    tag = "plugins",
    params(("ref" = String, Path, description = "the plugin's name")),
    responses(
        (status = 200, body = Grants),
        (status = 400, description = "not a plugin name", body = ErrorBody),
    )
)]
async fn get_grants(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Grants>, ApiError> {
    plugin_name(&name)?;
    Ok(Json(state.store.grants(&name).await?.unwrap_or_default()))
}
