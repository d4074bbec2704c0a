//! `/v1/templates`: saga templates, start requests kept under a name. Each
//! put that changes a template is its next version; a saga started from it
//! records the name and version and pins the plugins' digests, so a later
//! put never changes a saga already started. `plan` checks a template the
//! same way it checks a start (unknown plugins are named at put).

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody, JsonBody, invalid_json};
use crate::model::{Template, Timestamp};
use crate::plan::{TemplateRequest, check_template_name};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates))
        .routes(routes!(put_template, get_template, delete_template))
}

/// `{templates: [...]}`: the latest version of each.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}

/// `GET /v1/templates/{name}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// That version instead of the latest.
    version: Option<u32>,
}

fn template_name(name: &str) -> Result<(), ApiError> {
    check_template_name(name).map_err(ApiError::from)
}

/// Put a template: its first version (201), or its next when it changed
/// (200; the same content again keeps the version).
#[utoipa::path(
    put,
    path = "/templates/{name}",
    tag = "templates",
    params(("name" = String, Path, description = "the template's name")),
    request_body = TemplateRequest,
    responses(
        (status = 201, description = "created: version 1, or the first after a delete", body = Template),
        (status = 200, description = "a new version, or the same content as the latest", body = Template),
        (status = 400, description = "malformed steps, settings or schema", body = ErrorBody),
        (status = 403, description = "only admins put templates", body = ErrorBody),
        (status = 422, description = "unknown plugins, named", body = ErrorBody),
    )
)]
async fn put_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Template>), ApiError> {
    caller.require(Role::Admin)?;
    template_name(&name)?;
    let request: TemplateRequest = serde_path_to_error::deserialize(&body).map_err(invalid_json)?;
    let steps = state
        .planner
        .template(state.store.as_ref(), &request)
        .await?;
    let template = Template {
        name,
        version: 0,
        description: request.description,
        steps,
        inputs_schema: request.inputs_schema,
        concurrency: request.concurrency.unwrap_or_default(),
        created_at: Timestamp::now(),
        created_by: caller.actor(),
    };
    let put = state.store.put_template(&template).await?;
    let t = &put.template;
    if put.changed {
        tracing::info!(template = %t.name, version = t.version, "template put");
    }
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(put.template)))
}

/// The latest version of each template.
#[utoipa::path(
    get,
    path = "/templates",
    tag = "templates",
    responses((status = 200, body = TemplateList))
)]
async fn list_templates(State(state): State<AppState>) -> Result<Json<TemplateList>, ApiError> {
    Ok(Json(TemplateList {
        templates: state.store.list_templates().await?,
    }))
}

/// A template: its latest version, or `?version=N`.
#[utoipa::path(
    get,
    path = "/templates/{name}",
    tag = "templates",
    params(("name" = String, Path, description = "the template's name"), VersionQuery),
    responses((status = 200, body = Template), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn get_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<VersionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Template>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    template_name(&name)?;
    state
        .store
        .template(&name, query.version)
        .await?
        .map(Json)
        .ok_or_else(|| match query.version {
            Some(v) => ApiError::not_found(format!("no version {v} of template `{name}`")),
            None => ApiError::not_found(format!("no template `{name}`")),
        })
}

/// Delete a template (every version). Sagas started from it keep running
/// and keep its name and version.
#[utoipa::path(
    delete,
    path = "/templates/{name}",
    tag = "templates",
    params(("name" = String, Path, description = "the template's name")),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "only admins delete templates", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn delete_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    template_name(&name)?;
    if state.store.delete_template(&name, Timestamp::now()).await? {
        tracing::info!(template = %name, "template deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no template `{name}`")))
    }
}
