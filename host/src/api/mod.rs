//! HTTP API v1 (a contract: DESIGN.md): routes, authentication, limits and
//! the OpenAPI document.
//!
//! One router per resource (`plugins`, `sagas`), each built with
//! utoipa-axum's `OpenApiRouter`, which registers a handler's route and its
//! OpenAPI path together, so `/v1/openapi.json` cannot drift from what is
//! served. Every `/v1` request passes the bearer-token check (when a token
//! is configured) and a request timeout; JSON bodies are capped at
//! `max_json_bytes` and components at `max_component_bytes`. Handlers only
//! read state and record requests; the runner does the rest.

mod error;
mod plugins;
mod sagas;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use plugins::PluginList;
pub use sagas::{SagaList, StartSaga};

use crate::config::ServerConfig;
use crate::plugin::PluginHost;
use crate::runner::Runner;
use crate::store::Store;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub plugins: PluginHost,
    pub runner: Runner,
    pub server: Arc<ServerConfig>,
    /// `max_attempts` of a step that does not say.
    pub default_max_attempts: u32,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasaga",
        description = "A WebAssembly saga step host: upload step plugins, start sagas, watch them run and compensate.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "plugins", description = "Step plugins: Wasm components implementing wasaga:step/step@0.1.x"),
        (name = "sagas", description = "Sagas: ordered steps run durably, compensated in reverse on failure or cancel"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/v1` routes and their OpenAPI document.
pub fn v1(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(plugins::router(state))
        .merge(sagas::router())
        .split_for_parts()
}

/// The whole application: `/v1` (authenticated, limited) and `/healthz`.
pub fn app(state: AppState) -> Router {
    let (v1_routes, mut openapi) = v1(&state);
    openapi.servers = Some(vec![utoipa::openapi::Server::new("/v1")]);
    let openapi = Arc::new(openapi);
    let v1_routes = v1_routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::not_found("no such route in API v1") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        // JSON routes; the plugin upload route has its own, larger limit.
        .layer(DefaultBodyLimit::max(state.server.max_json_bytes));
    Router::new()
        .nest("/v1", v1_routes)
        .route("/healthz", get(healthz))
        .fallback(|| async { ApiError::not_found("no such route; the API lives under /v1") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .with_state(state)
}

/// The OpenAPI document, as served at `/v1/openapi.json`.
pub fn openapi_document(state: &AppState) -> utoipa::openapi::OpenApi {
    v1(state).1
}

/// `/healthz`: 200 when the database answers.
async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.health().await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "ok", "database": state.store.backend()})),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database does not answer",
            )
            .into_response()
        }
    }
}

/// Every `/v1` request needs `Authorization: Bearer <token>` when a token
/// is configured. Both sides are hashed before the constant-time compare,
/// so neither the token's bytes nor its length leak through timing.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.server.token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(given) = given else {
        return ApiError::unauthorized("this server needs `Authorization: Bearer <token>`")
            .into_response();
    };
    let matches: bool = Sha256::digest(given.trim().as_bytes())
        .ct_eq(&Sha256::digest(expected.as_bytes()))
        .into();
    if !matches {
        return ApiError::unauthorized("the bearer token is not valid").into_response();
    }
    next.run(request).await
}

/// Answers 503 with the error body when a request takes longer than the
/// configured timeout. Uploads compile the component (seconds for an
/// interpreter-based one), so they get ten times as long.
async fn request_timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut limit = state.server.request_timeout;
    if request.method() == axum::http::Method::POST && request.uri().path().ends_with("/plugins") {
        limit = limit.saturating_mul(10);
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request took longer than {} ms", limit.as_millis()),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}
