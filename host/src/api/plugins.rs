//! `/v1/plugins`: upload, list, show and delete step plugins.
//!
//! An upload is validated, compiled and pre-linked by the plugin runtime
//! before it is stored, so a stored plugin is one that will run; the bytes
//! then live in the database, where every host sharing it finds them.
//!
//! A name means its current upload: the latest upload (or re-upload) of a
//! digest with that name. An upload that takes a name over from another
//! digest says so (`previous`, and a warning in the log); re-uploading the
//! older digest makes it current again. Only admins upload or delete.

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody, RawBody};
use crate::model::{Digest, PluginInfo, Timestamp};
use crate::plan::resolve;
use crate::store::DeletePlugin;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router(max_component_bytes: usize) -> OpenApiRouter<AppState> {
    // A component may be megabytes: its own body limit, not the JSON one.
    let limit = axum::extract::DefaultBodyLimit::max(max_component_bytes);
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

/// An upload's answer: the plugin, and the digest its name meant before,
/// when this upload took the name over.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadedPlugin {
    #[serde(flatten)]
    pub plugin: PluginInfo,
    /// The digest that was current for this name until this upload.
    pub previous: Option<Digest>,
}

/// Upload a plugin: the component's raw bytes.
#[utoipa::path(
    post,
    path = "/plugins",
    tag = "plugins",
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "a Wasm component implementing wasaga:step/step@0.1.x"),
    responses(
        (status = 201, description = "stored", body = UploadedPlugin),
        (status = 200, description = "the same digest was already stored (and is current again)", body = UploadedPlugin),
        (status = 400, description = "not a component", body = ErrorBody),
        (status = 403, description = "only admins upload; or, on a server without tokens, the name has grants and another digest is current", body = ErrorBody),
        (status = 413, description = "too large", body = ErrorBody),
        (status = 422, description = "wrong world, unsupported imports, or an invalid name", body = ErrorBody),
    )
)]
async fn upload_plugin(
    State(state): State<AppState>,
    caller: Caller,
    RawBody(bytes): RawBody,
) -> Result<(StatusCode, Json<UploadedPlugin>), ApiError> {
    caller.require(Role::Admin)?;
    let plugin = state.plugins.prepare(&bytes).await?;
    if state.server.tokens.is_none() {
        refuse_granted_takeover(&state, &plugin.name, &plugin.digest).await?;
    }
    let info = PluginInfo {
        digest: plugin.digest.clone(),
        name: plugin.name.clone(),
        size: bytes.len() as u64,
        created_at: Timestamp::now(),
        current: true,
        contract: plugin.contract.as_str().to_string(),
    };
    let put = state.store.put_plugin(&info, &bytes).await?;
    let stored = put.info;
    if let Some(previous) = &put.previous {
        tracing::warn!(
            name = %stored.name,
            digest = %stored.digest,
            %previous,
            actor = caller.actor().as_deref().unwrap_or("-"),
            "plugin name now means another digest: sagas started from now on that name run the new one"
        );
    }
    if put.created {
        tracing::info!(digest = %stored.digest, name = %stored.name, size = stored.size, "plugin uploaded");
    }
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(UploadedPlugin {
            plugin: stored,
            previous: put.previous,
        }),
    ))
}

/// On a server without tokens, anything that reaches it is an admin, so an
/// upload may not take over a name that has grants: the new code would
/// inherit the old one's origins and secrets. (With tokens, only an admin
/// uploads, and the takeover is logged.) A first upload of a name granted
/// beforehand, and a re-upload of the current digest, are fine.
async fn refuse_granted_takeover(
    state: &AppState,
    name: &str,
    digest: &Digest,
) -> Result<(), ApiError> {
    let Some(current) = state.store.plugin_by_name(name).await? else {
        return Ok(());
    };
    if &current.digest == digest {
        return Ok(());
    }
    let granted = state
        .store
        .grants(name)
        .await?
        .is_some_and(|g| !g.http.is_empty() || !g.secrets.is_empty());
    if !granted {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "granted_name",
        format!(
            "plugin `{name}` has grants (origins or secrets), and this server has no tokens: an \
             upload may not take over a granted name, or it would inherit them. Remove its grants \
             first (PUT /v1/plugins/{name}/grants with {{}}) and grant them again after the \
             upload, or run the server with tokens"
        ),
    ))
}

/// List plugins, newest first.
#[utoipa::path(get, path = "/plugins", tag = "plugins", responses((status = 200, body = PluginList)))]
async fn list_plugins(State(state): State<AppState>) -> Result<Json<PluginList>, ApiError> {
    Ok(Json(PluginList {
        plugins: state.store.list_plugins().await?,
    }))
}

/// A plugin by digest (`sha256:...`) or by name (its current upload).
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
    resolve(state.store.as_ref(), &reference)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no plugin `{}`",
                reference.chars().take(100).collect::<String>()
            ))
        })
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
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "an unfinished saga pins it", body = ErrorBody),
    )
)]
async fn delete_plugin(
    State(state): State<AppState>,
    caller: Caller,
    Path(digest): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
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
