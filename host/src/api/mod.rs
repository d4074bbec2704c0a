//! HTTP API v1 (a contract: DESIGN.md): routes, authentication and roles,
//! limits, and the OpenAPI document.
//!
//! One router per resource (`plugins`, `sagas`, `resources`, ...), each built with
//! utoipa-axum's `OpenApiRouter`, which registers a handler's route and its
//! OpenAPI path together, so `/v1/openapi.json` cannot drift from what is
//! served (and a test checks every answer against it). Every `/v1` request
//! passes the bearer-token check (when tokens are configured; see `auth`),
//! a request timeout, and a check of its declared size before any of the
//! body is read. Handlers only read state, check the caller's role, and
//! submit to the runner, which decides every transition.

mod auth;
pub(crate) mod cursor;
mod error;
mod events;
mod grants;
mod plugins;
mod resources;
mod sagas;
mod secrets;
mod templates;

pub use auth::{Caller, Role, Tokens, TokensError};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use plugins::{PluginList, UploadedPlugin};
pub use resources::ResourceList;
pub use sagas::SagaList;
pub use secrets::{PutSecret, SecretList};
pub use templates::TemplateList;

use crate::config::ServerConfig;
use crate::plan::Planner;
use crate::plugin::PluginHost;
use crate::runner::Runner;
use crate::store::{Health, Store};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub plugins: PluginHost,
    pub runner: Runner,
    pub server: Arc<ServerConfig>,
    /// The rules a start request is checked against.
    pub planner: Arc<Planner>,
    /// The key of the console's CSRF tokens.
    pub csrf: crate::console::CsrfKey,
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
        (name = "events", description = "Live events (server-sent events): a saga's steps and status as they change"),
        (name = "plugins", description = "Step plugins: Wasm components implementing wasaga:step/step"),
        (name = "resources", description = "The desired-state ledger: what sagas provisioned, and whether it is still meant to exist"),
        (name = "sagas", description = "Sagas: ordered steps run durably, compensated in reverse on failure or cancel"),
        (name = "templates", description = "Saga templates: start requests kept under a name, versioned, with an optional JSON Schema for inputs"),
        (name = "secrets", description = "Write-only secrets a step can use (or read, when granted) without them being stored or shown in plain text"),
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

/// The answers any route may give beside its own, in the error body: a
/// missing or unknown token (401), a timeout or shutdown (503), a failure
/// of ours (500); and on routes that write: a body too large (413), a full
/// disk (507). Documented on every operation, so the document lists every
/// status the wire can carry (a test holds every answer to it).
struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let writes = [&mut item.post, &mut item.put, &mut item.delete];
            for operation in writes.into_iter().flatten() {
                for (status, what) in [
                    ("413", "the body is larger than this route takes"),
                    ("507", "the server's disk is full; nothing was stored"),
                ] {
                    operation
                        .responses
                        .responses
                        .entry(status.into())
                        .or_insert_with(|| error(what).into());
                }
            }
            let all = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in all.into_iter().flatten() {
                for (status, what) in [
                    ("401", "a token is needed, or the one given is not known"),
                    ("500", "the server failed; its log says why"),
                    (
                        "503",
                        "the request timed out, or the server is shutting down; retry",
                    ),
                ] {
                    operation
                        .responses
                        .responses
                        .entry(status.into())
                        .or_insert_with(|| error(what).into());
                }
            }
        }
    }
}

/// The `/v1` routes (an upload may be `max_component_bytes`) and their
/// OpenAPI document.
fn v1(max_component_bytes: usize) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(plugins::router(max_component_bytes))
        .merge(events::router())
        .merge(grants::router())
        .merge(resources::router())
        .merge(sagas::router())
        .merge(secrets::router())
        .merge(templates::router())
        .split_for_parts();
    // After the routers merged their paths: the modifiers of `ApiDoc` run
    // before there are any.
    utoipa::Modify::modify(&CommonErrors, &mut openapi);
    openapi.servers = Some(vec![utoipa::openapi::Server::new("/v1")]);
    (routes, openapi)
}

/// The OpenAPI document, as served at `/v1/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    v1(0).1
}

/// The whole application: `/v1` (authenticated, limited), `/healthz`,
/// `/metrics` and the console under `/ui/`.
pub fn app(state: AppState) -> Router {
    let (v1_routes, openapi) = v1(state.plugins.config().max_component_bytes);
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
        .route("/metrics", get(metrics))
        .merge(crate::console::router())
        .fallback(|| async { ApiError::not_found("no such route; the API lives under /v1") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), body_limits))
        .with_state(state)
}

/// `/healthz`: 200 when the database answers and takes writes; 503 when it
/// does not answer, or answers but refuses writes (a full disk).
async fn healthz(State(state): State<AppState>) -> Response {
    let backend = state.store.backend();
    match state.store.health().await {
        Ok(Health::Ok) => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "ok", "database": backend})),
        )
            .into_response(),
        Ok(Health::Degraded(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "degraded", "database": backend, "message": why})),
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

/// `/metrics`: the Prometheus text format (viewer role when tokens are
/// on). The gauges are read now, from this host.
async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    if let Err(refused) = caller_of(&state, &request) {
        return refused.into_response();
    }
    let m = crate::metrics::global();
    m.sagas_in_flight.set(state.runner.active_count() as i64);
    match state.store.pending_count().await {
        Ok(n) => {
            m.sagas_pending.set(n as i64);
        }
        Err(e) => tracing::debug!(error = %e, "counting pending sagas for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

/// Who makes a request: its bearer token, or else the console's session
/// cookie (whose state-changing requests must carry the page's CSRF
/// token). Everyone, when tokens are off.
fn caller_of(state: &AppState, request: &Request) -> Result<Option<Caller>, ApiError> {
    let Some(tokens) = state.server.tokens.as_ref() else {
        return Ok(None);
    };
    if let Some(given) = bearer(request) {
        return match tokens.check(given) {
            Some(caller) => Ok(Some(caller)),
            None => Err(ApiError::unauthorized("the bearer token is not valid")),
        };
    }
    let Some(session) = crate::console::session_token(request.headers()) else {
        return Err(ApiError::unauthorized(
            "this server needs `Authorization: Bearer <token>`",
        ));
    };
    let Some(caller) = tokens.check(&session) else {
        return Err(ApiError::unauthorized(
            "the console session is not valid any more; log in again at /ui/login",
        ));
    };
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if !safe {
        let presented = request
            .headers()
            .get(crate::console::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !state.csrf.check(Some(&session), presented) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "the console page's CSRF token is missing or stale (the server restarted, or you \
                 logged in again): reload the page and try again",
            ));
        }
    }
    Ok(Some(caller))
}

/// The bearer token of a request, if it carries one.
fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

/// Every `/v1` request needs a known bearer token (or a console session)
/// when tokens are configured; the caller it names rides along for the
/// handlers (which check its role).
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match caller_of(&state, &request) {
        Ok(Some(caller)) => {
            request.extensions_mut().insert(caller);
        }
        Ok(None) => {}
        Err(refused) => return refused.into_response(),
    }
    next.run(request).await
}

/// Whether a request is a plugin upload (which compiles, and takes bytes).
fn is_upload(request: &Request) -> bool {
    request.method() == Method::POST && request.uri().path().trim_end_matches('/') == "/v1/plugins"
}

/// Answers 503 with the error body when a request takes longer than the
/// configured timeout. Uploads compile the component (seconds for an
/// interpreter-based one), so they get ten times as long.
async fn request_timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut limit = state.server.request_timeout;
    if request.uri().path().ends_with("/plugins") && request.method() == Method::POST {
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

/// Reads every request's body before routing, within the route's limit:
/// a body larger than that is refused from its declared `Content-Length`,
/// before any of it is read (and before `100 Continue` is sent), or as
/// soon as it passes the limit when no length is declared. A route that
/// does not use its body (a GET, a cancel, a 404) then still leaves the
/// connection in step for the next request, instead of hyper closing it
/// under a client that is about to reuse it.
async fn body_limits(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = if is_upload(&request) {
        state.plugins.config().max_component_bytes
    } else {
        state.server.max_json_bytes
    };
    let too_large = |what: String| {
        let mut response =
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", what).into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = declared
        && length > limit as u64
    {
        return too_large(format!(
            "the request body is {length} bytes; this route takes at most {limit} bytes"
        ));
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let length_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if length_limit {
                return too_large(format!(
                    "the request body is larger than this route takes ({limit} bytes)"
                ));
            }
            return ApiError::bad_request(format!("cannot read the request body: {e}"))
                .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
