//! `/v1/plugins`: upload, list, show and delete step plugins.
//!
//! An upload is validated, compiled and pre-linked by the plugin runtime
//! before it is stored, so a stored plugin is one that will run; the bytes
//! then live in the database, where every host sharing it finds them.

use super::AppState;
use super::error::{ApiError, ErrorBody, RawBody};
use crate::model::{Digest, PluginInfo, Timestamp};
use crate::store::{DeletePlugin, PutPlugin};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router(state: &AppState) -> OpenApiRouter<AppState> {
    // A component may be megabytes: its own body limit, not the JSON one.
    let limit = axum::extract::DefaultBodyLimit::max(state.plugins.config().max_component_bytes);
    OpenApiRouter::new()
        .routes(routes!(upload_plugin, list_plugins))
        .routes(routes!(get_plugin, delete_plugin))
        .layer(limit)
}

/// `{plugins: [...]}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginInfo>,
}

/// Upload a plugin: the component's raw bytes.
#[utoipa::path(
    post,
    path = "/plugins",
    tag = "plugins",
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "a Wasm component implementing wasaga:step/step@0.1.x"),
    responses(
        (status = 201, description = "stored", body = PluginInfo),
        (status = 200, description = "the same digest was already stored", body = PluginInfo),
        (status = 400, description = "not a component", body = ErrorBody),
        (status = 413, description = "too large", body = ErrorBody),
        (status = 422, description = "wrong world, unsupported imports, or an invalid name", body = ErrorBody),
    )
)]
async fn upload_plugin(
    State(state): State<AppState>,
    RawBody(bytes): RawBody,
) -> Result<(StatusCode, Json<PluginInfo>), ApiError> {
    let plugin = state.plugins.prepare(&bytes).await?;
    let info = PluginInfo {
        digest: plugin.digest.clone(),
        name: plugin.name.clone(),
        size: bytes.len() as u64,
        created_at: Timestamp::now(),
    };
    match state.store.put_plugin(&info, &bytes).await? {
        PutPlugin::Created(info) => {
            tracing::info!(digest = %info.digest, name = %info.name, size = info.size, "plugin uploaded");
            Ok((StatusCode::CREATED, Json(info)))
        }
        PutPlugin::Existing(info) => Ok((StatusCode::OK, Json(info))),
    }
}

/// List plugins, newest first.
#[utoipa::path(get, path = "/plugins", tag = "plugins", responses((status = 200, body = PluginList)))]
async fn list_plugins(State(state): State<AppState>) -> Result<Json<PluginList>, ApiError> {
    Ok(Json(PluginList {
        plugins: state.store.list_plugins().await?,
    }))
}

/// A plugin by digest (`sha256:...`) or by name (the newest upload of it).
#[utoipa::path(
    get,
    path = "/plugins/{ref}",
    tag = "plugins",
    params(("ref" = String, Path, description = "a digest or a plugin name")),
    responses((status = 200, body = PluginInfo), (status = 404, body = ErrorBody))
)]
async fn get_plugin(
    State(state): State<AppState>,
    Path(reference): Path<String>,
) -> Result<Json<PluginInfo>, ApiError> {
    resolve(&state, &reference)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no plugin `{reference}`")))
}

/// A plugin reference: a digest, or a name meaning its newest upload.
pub(super) async fn resolve(
    state: &AppState,
    reference: &str,
) -> Result<Option<PluginInfo>, ApiError> {
    if reference.starts_with("sha256:") {
        let Ok(digest) = reference.parse::<Digest>() else {
            return Ok(None);
        };
        return Ok(state.store.plugin(&digest).await?);
    }
    Ok(state.store.plugin_by_name(reference).await?)
}

/// Delete a plugin by digest; refused while an unfinished saga pins it.
/// (The path parameter shares its name with `GET /plugins/{ref}`, which the
/// router requires; a name is not accepted here, only a digest.)
#[utoipa::path(
    delete,
    path = "/plugins/{ref}",
    tag = "plugins",
    params(("ref" = String, Path, description = "the plugin's digest (sha256:...)")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "an unfinished saga pins it", body = ErrorBody),
    )
)]
async fn delete_plugin(
    State(state): State<AppState>,
    Path(digest): Path<String>,
) -> Result<StatusCode, ApiError> {
    let digest: Digest = digest
        .parse()
        .map_err(|e: crate::model::BadDigest| ApiError::not_found(e.to_string()))?;
    match state.store.delete_plugin(&digest).await? {
        DeletePlugin::Deleted => {
            state.plugins.forget(&digest);
            Ok(StatusCode::NO_CONTENT)
        }
        DeletePlugin::NotFound => Err(ApiError::not_found(format!("no plugin {digest}"))),
        DeletePlugin::Pinned(ids) => Err(ApiError::conflict(format!(
            "plugin {digest} is pinned by unfinished sagas: {}",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
