//! `/v1/webhooks`: endpoints an admin subscribes to saga events. Creating
//! one answers its signing secret once (`whsec_...`); the secret is sealed
//! under the host's secrets key and never shown again. A rotation answers
//! a new secret while the old one keeps signing for the configured overlap
//! (24 h by default). Deliveries can be listed and sent again. Every route
//! is the admin's: an endpoint receives every matching saga's summary.

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ErrorBody, JsonBody};
use crate::model::{
    Delivery, NewWebhook, SealedKey, Timestamp, Webhook, WebhookEvent, WebhookFilter,
};
use crate::webhooks::egress::check_url;
use crate::webhooks::key_context;
use crate::webhooks::signing::SigningKey;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Endpoints an admin may create.
const MAX_WEBHOOKS: usize = 100;
/// Deliveries one list answers at most.
const MAX_DELIVERIES_LISTED: usize = 500;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(rotate_webhook))
        .routes(routes!(enable_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
}

/// `POST /v1/webhooks` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where deliveries are posted: `http` or `https`.
    pub url: String,
    /// At least one event type.
    pub events: Vec<WebhookEvent>,
    #[serde(default)]
    pub filter: WebhookFilter,
}

/// An endpoint with its secret: answered once, at creation and rotation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_<base64>`: verify deliveries with it; it is not shown again.
    pub secret: String,
}

/// `{webhooks: [...]}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

/// `{deliveries: [...]}`, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// At most this many (default 100, at most 500).
    pub limit: Option<usize>,
}

/// Seals a new secret for endpoint `id`; the sealed form and the shown one.
fn new_secret(state: &AppState, id: &str) -> Result<(SealedKey, String), ApiError> {
    let Some(key) = state.runner.access().key().cloned() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "secrets_disabled",
            "this host has no secrets key, which webhook secrets are sealed with: start wasaga \
             with --secrets-key-file FILE (or WASAGA_SECRETS_KEY_FILE), a file of 64 hex \
             characters made with `openssl rand -hex 32 > FILE`",
        ));
    };
    let secret = SigningKey::generate();
    let (nonce, ciphertext) = key.seal_for(&key_context(id), secret.bytes())?;
    Ok((SealedKey { nonce, ciphertext }, secret.shown().to_string()))
}

async fn found(state: &AppState, id: &str) -> Result<Webhook, ApiError> {
    state
        .store
        .webhook(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no webhook `{id}`")))
}

/// Subscribe an endpoint to events; answers its signing secret, once.
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, body = WebhookWithSecret),
        (status = 400, description = "a malformed URL, an unknown event or field, or an address not allowed", body = ErrorBody),
        (status = 403, description = "only admins manage webhooks", body = ErrorBody),
        (status = 409, description = "secrets_disabled: the host has no secrets key; or too many endpoints", body = ErrorBody),
    )
)]
async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookWithSecret>), ApiError> {
    caller.require(Role::Admin)?;
    let url = check_url(&state.webhooks.allow, &body.url)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if body.events.is_empty() {
        return Err(ApiError::bad_request(format!(
            "`events` is empty; name at least one of: {}",
            WebhookEvent::ALL
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut events = body.events;
    events.sort();
    events.dedup();
    for (field, value) in [
        ("filter.kind", &body.filter.kind),
        ("filter.template", &body.filter.template),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.len() > 128)
        {
            return Err(ApiError::bad_request(format!(
                "`{field}` must be 1 to 128 characters"
            )));
        }
    }
    if state.store.list_webhooks().await?.len() >= MAX_WEBHOOKS {
        return Err(ApiError::conflict(format!(
            "there are {MAX_WEBHOOKS} webhooks already; delete one first"
        )));
    }
    let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
    let (key, secret) = new_secret(&state, &id)?;
    let webhook = Webhook {
        id,
        url: url.to_string(),
        events,
        filter: body.filter,
        created_at: Timestamp::now(),
        created_by: caller.actor(),
        previous_secret_expires_at: None,
        disabled_at: None,
        disabled_reason: None,
    };
    state
        .store
        .put_webhook(&NewWebhook {
            webhook: webhook.clone(),
            key,
        })
        .await?;
    tracing::info!(webhook = %webhook.id, url = %webhook.url, actor = caller.actor().as_deref().unwrap_or("-"), "webhook created");
    Ok((
        StatusCode::CREATED,
        Json(WebhookWithSecret { webhook, secret }),
    ))
}

/// Every endpoint (never a secret).
#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    responses(
        (status = 200, body = WebhookList),
        (status = 403, description = "only admins manage webhooks", body = ErrorBody),
    )
)]
async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookList>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(WebhookList {
        webhooks: state.store.list_webhooks().await?,
    }))
}

/// One endpoint.
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "the webhook's id")),
    responses(
        (status = 200, body = Webhook),
        (status = 403, description = "only admins manage webhooks", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(found(&state, &id).await?))
}

/// Delete an endpoint and its deliveries (pending ones are not sent).
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "the webhook's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "only admins manage webhooks", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if !state.store.delete_webhook(&id).await? {
        return Err(ApiError::not_found(format!("no webhook `{id}`")));
    }
    tracing::info!(webhook = %id, actor = caller.actor().as_deref().unwrap_or("-"), "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret, answered once; the old one keeps signing (both
/// signatures are sent) until `previous_secret_expires_at`.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/rotate",
    tag = "webhooks",
    params(("id" = String, Path, description = "the webhook's id")),
    responses(
        (status = 200, body = WebhookWithSecret),
        (status = 403, description = "only admins manage webhooks", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "secrets_disabled: the host has no secrets key", body = ErrorBody),
    )
)]
async fn rotate_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookWithSecret>, ApiError> {
    caller.require(Role::Admin)?;
    found(&state, &id).await?;
    let (key, secret) = new_secret(&state, &id)?;
    let until = Timestamp::now().plus(state.webhooks.rotation_overlap);
    if !state.store.rotate_webhook(&id, &key, until).await? {
        return Err(ApiError::not_found(format!("no webhook `{id}`")));
    }
    tracing::info!(webhook = %id, actor = caller.actor().as_deref().unwrap_or("-"), "webhook secret rotated");
    Ok(Json(WebhookWithSecret {
        webhook: found(&state, &id).await?,
        secret,
    }))
}

/// Deliver again to an endpoint disabled after sustained failure: its
/// pending deliveries go at once.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/enable",
    tag = "webhooks",
    params(("id" = String, Path, description = "the webhook's id")),
    responses(
        (status = 200, body = Webhook),
        (status = 403, description = "only admins manage webhooks", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn enable_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    caller.require(Role::Admin)?;
    if !state.store.enable_webhook(&id).await? {
        return Err(ApiError::not_found(format!("no webhook `{id}`")));
    }
    state.runner.outbox_written().notify_one();
    Ok(Json(found(&state, &id).await?))
}

/// An endpoint's deliveries, newest first.
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "the webhook's id"), DeliveryQuery),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, body = ErrorBody),
        (status = 403, description = "only admins manage webhooks", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<DeliveryQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    caller.require(Role::Admin)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_DELIVERIES_LISTED {
        return Err(ApiError::bad_request(format!(
            "`limit` must be 1 to {MAX_DELIVERIES_LISTED}"
        )));
    }
    found(&state, &id).await?;
    Ok(Json(DeliveryList {
        deliveries: state.store.deliveries(&id, limit).await?,
    }))
}

/// Send a delivery's message again (same `webhook-id`, fresh timestamp
/// and signature), as a new delivery due now.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/deliveries/{delivery}/redeliver",
    tag = "webhooks",
    params(
        ("id" = String, Path, description = "the webhook's id"),
        ("delivery" = i64, Path, description = "the delivery's id"),
    ),
    responses(
        (status = 202, description = "the new delivery", body = Delivery),
        (status = 400, description = "the delivery id is not a number", body = ErrorBody),
        (status = 403, description = "only admins manage webhooks", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    caller.require(Role::Admin)?;
    let delivery: i64 = delivery.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "`{}` is not a delivery id (a number)",
            delivery.chars().take(32).collect::<String>()
        ))
    })?;
    let Some(new) = state
        .store
        .redeliver(&id, delivery, Timestamp::now())
        .await?
    else {
        return Err(ApiError::not_found(format!(
            "webhook `{id}` has no delivery {delivery}"
        )));
    };
    state.runner.outbox_written().notify_one();
    tracing::info!(webhook = %id, delivery, actor = caller.actor().as_deref().unwrap_or("-"), "webhook redelivery asked");
    Ok((StatusCode::ACCEPTED, Json(new)))
}
