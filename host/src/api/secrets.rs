//! `/v1/secrets`: write-only secrets. An admin sets a value and the
//! origins it may be sent to; nobody reads it back (the list has names,
//! origins and times). Values are sealed before they are stored, and never
//! echoed in an error: a request whose `value` is not a string is refused
//! without quoting it.

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody, JsonBody};
use crate::model::Origin;
use crate::model::Timestamp;
use crate::model::{SealedSecret, SecretInfo, SecretName};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets))
        .routes(routes!(put_secret, delete_secret))
}

/// `PUT /v1/secrets/{name}` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PutSecret {
    /// The value; never returned or logged.
    pub value: String,
    /// Where the value may be sent: origins `scheme://host[:port]`.
    #[schema(value_type = Vec<String>, example = json!(["https://api.digitalocean.com"]))]
    pub origins: Vec<String>,
}

/// `{secrets: [...]}`: names, origins and times, never values.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

fn secret_name(name: &str) -> Result<SecretName, ApiError> {
    name.parse()
        .map_err(|e: crate::model::BadSecretName| ApiError::bad_request(e.to_string()))
}

/// Set a secret (a new one, or a new value and origins for one).
#[utoipa::path(
    put,
    path = "/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "the secret's name")),
    request_body = PutSecret,
    responses(
        (status = 204, description = "set"),
        (status = 400, description = "a malformed name, origin or body", body = ErrorBody),
        (status = 403, description = "only admins set secrets", body = ErrorBody),
        (status = 409, description = "secrets_disabled: the host has no secrets key", body = ErrorBody),
    )
)]
async fn put_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let name = secret_name(&name)?;
    let Some(key) = state.runner.access().key().cloned() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "secrets_disabled",
            "this host has no secrets key: start wasaga with --secrets-key-file FILE \
             (or WASAGA_SECRETS_KEY_FILE), a file of 64 hex characters made with \
             `openssl rand -hex 32 > FILE`; every host sharing the database needs the same file",
        ));
    };
    let Value::Object(mut fields) = body else {
        return Err(ApiError::bad_request(
            "the body must be an object {value, origins}",
        ));
    };
    let value = match fields.remove("value") {
        Some(Value::String(value)) => Zeroizing::new(value),
        Some(_) => return Err(ApiError::bad_request("`value` must be a string")),
        None => return Err(ApiError::bad_request("missing `value`")),
    };
    let origins: Vec<Origin> = match fields.remove("origins") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|o| {
                o.as_str()
                    .ok_or_else(|| ApiError::bad_request("`origins` must be strings"))?
                    .parse::<Origin>()
                    .map_err(|e| ApiError::bad_request(e.to_string()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "`origins` must be an array of origins",
            ));
        }
        None => return Err(ApiError::bad_request("missing `origins`")),
    };
    if let Some(field) = fields.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown field `{field}`; a secret is {{value, origins}}"
        )));
    }
    if value.is_empty() {
        return Err(ApiError::bad_request("`value` is empty"));
    }
    let (nonce, ciphertext) = key.seal(&name, &value)?;
    let now = Timestamp::now();
    state
        .store
        .put_secret(&SealedSecret {
            name: name.clone(),
            nonce,
            ciphertext,
            origins,
            created_at: now,
            updated_at: now,
        })
        .await?;
    state.runner.access().changed();
    if let Err(e) = state.store.announce_access().await {
        tracing::warn!(error = %e, "telling the other hosts about a secret");
    }
    tracing::info!(secret = %name, actor = caller.actor().as_deref().unwrap_or("-"), "secret set");
    Ok(StatusCode::NO_CONTENT)
}

/// Every secret's name and origins; never a value.
#[utoipa::path(
    get,
    path = "/secrets",
    tag = "secrets",
    responses(
        (status = 200, body = SecretList),
        (status = 403, description = "only admins list secrets", body = ErrorBody),
    )
)]
async fn list_secrets(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SecretList>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(SecretList {
        secrets: state.store.list_secrets().await?,
    }))
}

/// Delete a secret.
#[utoipa::path(
    delete,
    path = "/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "the secret's name")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "not a secret name", body = ErrorBody),
        (status = 403, description = "only admins delete secrets", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn delete_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let name = secret_name(&name)?;
    if !state.store.delete_secret(&name).await? {
        return Err(ApiError::not_found(format!("no secret `{name}`")));
    }
    state.runner.access().changed();
    if let Err(e) = state.store.announce_access().await {
        tracing::warn!(error = %e, "telling the other hosts about a secret");
    }
    tracing::info!(secret = %name, actor = caller.actor().as_deref().unwrap_or("-"), "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}
