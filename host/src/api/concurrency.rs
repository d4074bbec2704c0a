//! `/v1/concurrency/{key}`: who holds a concurrency key and who waits for
//! it, in the order they will be admitted, with ages (docs/flow-control.md).
//! The key is one path segment: a key holding `/` is sent as `%2F`.

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::model::{KeyStatus, MAX_KEY_BYTES, SlotAge, SlotState, Timestamp};
use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(concurrency_key))
}

/// A concurrency key's holders and queue. A key nobody holds or waits for
/// answers empty lists (keys are not declared ahead of use).
#[utoipa::path(
    get,
    path = "/concurrency/{key}",
    tag = "concurrency",
    params(("key" = String, Path, description = "the key, as filled in at start (e.g. `droplet:42`)")),
    responses((status = 200, body = KeyStatus), (status = 400, body = ErrorBody))
)]
async fn concurrency_key(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<KeyStatus>, ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "a concurrency key is 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    let slots = state.store.concurrency_key(&key).await?;
    let now = Timestamp::now();
    let (mut holders, mut queue) = (Vec::new(), Vec::new());
    for slot in slots {
        let age = SlotAge {
            saga_id: slot.saga_id,
            limit: slot.limit,
            since: slot.since,
            age_ms: now.millis().saturating_sub(slot.since.millis()).max(0) as u64,
        };
        match slot.state {
            SlotState::Holding => holders.push(age),
            SlotState::Queued => queue.push(age),
            SlotState::Released => {}
        }
    }
    Ok(Json(KeyStatus {
        key,
        holders,
        queue,
    }))
}
