//! The API's one error type, and the body extractors that turn every kind
//! of bad input into it.
//!
//! Every error is `{"error": {"code": "...", "message": "..."}}` with a
//! fitting status (a contract). Internal failures are logged in full and
//! answered with a generic message: the database's or wasmtime's words never
//! reach a client. Broken or mistyped JSON, oversized bodies and missing
//! bodies get the same body shape as everything else, never axum's plain
//! text rejections.

use crate::plugin::PluginError;
use crate::store::StoreError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// An error answer: status, machine-readable code, human message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Answer with `Retry-After: 1` (a transient failure).
    pub retry_after: bool,
    /// Fields the code adds beside `code` and `message` (e.g. a
    /// `concurrency_conflict`'s `key` and `holders`).
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The error body (contract).
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_json`, `not_found`, `conflict`, ...
    pub code: String,
    /// For humans; may change.
    pub message: String,
    /// What some codes add: `concurrency_conflict` names the `key` and
    /// its `holders` (saga ids).
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: false,
            details: serde_json::Map::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A failure that is ours, not the client's: logged in full here,
    /// answered with a generic message.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %error, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed on the server; see the server's log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down",
            ),
            StoreError::StorageFull(why) => {
                tracing::error!(error = %why, "a write failed: the disk is full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the server's disk is full: nothing was stored; free space on the database's disk and retry",
                )
            }
            StoreError::WriteFailed(why) => {
                tracing::warn!(error = %why, "a write did not happen");
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the write did not happen (nothing was stored); retry",
                );
                error.retry_after = true;
                error
            }
            other => ApiError::internal("the database operation", other),
        }
    }
}

impl From<crate::plan::PlanError> for ApiError {
    fn from(e: crate::plan::PlanError) -> ApiError {
        use crate::plan::PlanError;
        let message = e.to_string();
        match e {
            PlanError::Invalid(_) => ApiError::bad_request(message),
            PlanError::Missing(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message)
            }
            PlanError::UnknownPlugins(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_plugin", message)
            }
            PlanError::UnknownTemplate(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_template",
                message,
            ),
            PlanError::InputsRejected(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_inputs", message)
            }
            PlanError::Store(e) => e.into(),
        }
    }
}

impl From<crate::runner::ActionError> for ApiError {
    fn from(e: crate::runner::ActionError) -> ApiError {
        use crate::runner::ActionError;
        let message = e.to_string();
        match e {
            ActionError::NotFound(_) => ApiError::not_found(message),
            ActionError::Conflict(_) => ApiError::conflict(message),
            ActionError::NoWait(_) => ApiError::new(StatusCode::NOT_FOUND, "no_such_wait", message),
            ActionError::Forbidden(_) => ApiError::forbidden(message),
            ActionError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload", message)
            }
            ActionError::Gone(_) => ApiError::new(StatusCode::GONE, "gone", message),
            ActionError::Store(e) => e.into(),
        }
    }
}

impl From<crate::runner::StartError> for ApiError {
    fn from(e: crate::runner::StartError) -> ApiError {
        use crate::runner::StartError;
        match e {
            StartError::Store(e) => e.into(),
            other => ApiError::internal("starting the saga", other),
        }
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> ApiError {
        let message = e.to_string();
        match e {
            PluginError::NotAComponent(_) | PluginError::Invalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "not_a_component", message)
            }
            PluginError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
            PluginError::WrongWorld(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "wrong_world", message)
            }
            PluginError::UnsupportedImports { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsupported_imports",
                message,
            ),
            PluginError::InvalidName { .. } | PluginError::NameFailed(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin", message)
            }
            PluginError::DigestMismatch(_) | PluginError::Host(_) => {
                ApiError::internal("preparing the plugin", message)
            }
        }
    }
}

fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "too_large",
            format!("the request body is too large: {}", e.body_text()),
        )
    } else {
        ApiError::new(
            status,
            "invalid_request",
            format!("cannot read the request body: {}", e.body_text()),
        )
    }
}

/// A 400 for JSON that does not parse or does not fit, saying where.
pub(super) fn invalid_json<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let at = if path == "." {
        String::new()
    } else {
        format!(" at `{path}`")
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        format!("invalid JSON{at}: {}", e.into_inner()),
    )
}

/// A JSON body, whatever its Content-Type says, read within the route's
/// body limit; malformed or mistyped JSON is a 400 that says where.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        if bytes.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the request body is empty; send a JSON object",
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(invalid_json)?;
        de.end().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("invalid JSON: {e}"),
            )
        })?;
        Ok(JsonBody(value))
    }
}

/// A raw body (a component upload) within the route's body limit.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(body_error)
    }
}
