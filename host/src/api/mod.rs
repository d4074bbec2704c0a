//! HTTP API v1 (a contract: docs/design.md): routes, authentication and roles,
//! limits, and the OpenAPI document.
//!
//! One router per resource (`plugins`, `sagas`, `resources`, ...), each built with
//! utoipa-axum's `OpenApiRouter`, which registers a handler's route and its
//! OpenAPI path together, so `/v1/openapi.json` cannot drift from what is
//! served (and a test checks every answer against it). Every request
//! passes the gate in `guard` (host, origin, content type, the caller and
//! the upload's role, then the body within its limit and deadline), and
//! every `/v1` request a timeout. Handlers only read state, check the
//! caller's role, and submit to the runner, which decides every transition.

mod auth;
mod budgets;
mod concurrency;
pub(crate) mod cursor;
mod error;
mod events;
mod grants;
pub(crate) mod guard;
mod plugins;
mod redrive;
mod resources;
mod sagas;
mod schedules;
mod secrets;
pub(crate) mod session;
mod templates;
mod waits;
mod webhooks;

pub use auth::{Caller, Role, Tokens, TokensError};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use plugins::{PluginList, UploadedPlugin};
pub use resources::ResourceList;
pub use sagas::SagaList;
pub use schedules::ScheduleList;
pub use secrets::{PutSecret, SecretList};
pub use templates::TemplateList;

use crate::config::ServerConfig;
use crate::plan::Planner;
use crate::plugin::PluginHost;
use crate::runner::Runner;
use crate::store::{Health, Store};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tower_http::set_header::SetResponseHeaderLayer;
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
    /// Failed tokens and logins per address.
    pub throttle: Arc<guard::Throttle>,
    /// Where webhooks may deliver, and their rotation overlap.
    pub webhooks: Arc<crate::config::WebhookConfig>,
    /// This host's gate of the provider budgets (its copy of them, and
    /// the requests waiting).
    pub budgets: Arc<crate::budgets::Budgets>,
    /// What makes and checks waits' capability URLs: `None` without a
    /// secrets key.
    pub callbacks: Option<Arc<crate::callbacks::CallbackUrls>>,
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
        (name = "budgets", description = "Provider budgets: a rate every host keeps to a provider's origins, paused by its 429 and Retry-After"),
        (name = "concurrency", description = "Concurrency keys: who holds a key for its whole life, and who waits for it in order"),
        (name = "events", description = "Live events (server-sent events): a saga's steps and status as they change"),
        (name = "plugins", description = "Step plugins: Wasm components implementing wasaga:step/step"),
        (name = "resources", description = "The desired-state ledger: what sagas provisioned, and whether it is still meant to exist"),
        (name = "sagas", description = "Sagas: ordered steps run durably, compensated in reverse on failure or cancel"),
        (name = "schedules", description = "Schedules: a template started on a cron pattern in a time zone or every interval, fired once per nominal time by whichever host claims it, with an overlap policy"),
        (name = "templates", description = "Saga templates: start requests kept under a name, versioned, with an optional JSON Schema for inputs"),
        (name = "secrets", description = "Write-only secrets a step can use (or read, when granted) without them being stored or shown in plain text"),
        (name = "waits", description = "Waits for people and systems: approve or reject a saga's wait, call a wait's capability URL, post a message for a correlation key"),
        (name = "webhooks", description = "Signed deliveries (Standard Webhooks) of saga events to subscribed endpoints, from an outbox written with the change"),
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
/// missing or unknown token (401), a Host not answered (421), too many
/// failed tokens (429), a timeout or shutdown (503), a failure of ours
/// (500); and on routes that write: a refusal (403), a body too slow (408)
/// or too large (413) or of the wrong type (415), a full disk (507). Documented on every operation, so the document lists every
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
                    (
                        "403",
                        "refused: the role is missing, or a web page of another origin sent it",
                    ),
                    ("408", "the request body did not arrive in time"),
                    ("413", "the body is larger than this route takes"),
                    (
                        "415",
                        "the declared content type is not what this route takes",
                    ),
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
                    (
                        "421",
                        "this server does not answer for the Host the request names",
                    ),
                    (
                        "429",
                        "too many failed tokens or logins from this address; wait a minute",
                    ),
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

/// A name that is a path segment (a budget's, a schedule's): a `400`
/// saying the rule otherwise.
fn check_name(kind: &str, name: &str, max: usize) -> Result<(), ApiError> {
    if crate::plan::is_segment_name(name, max) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "a {kind} name is 1 to {max} letters, digits, `.`, `_` or `-`, starting with a letter or digit"
        )))
    }
}

/// The `/v1` routes (an upload may be `max_component_bytes`) and their
/// OpenAPI document.
fn v1(max_component_bytes: usize) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(plugins::router(max_component_bytes))
        .merge(budgets::router())
        .merge(concurrency::router())
        .merge(events::router())
        .merge(grants::router())
        .merge(resources::router())
        .merge(redrive::router())
        .merge(sagas::router())
        .merge(schedules::router())
        .merge(secrets::router())
        .merge(templates::router())
        .merge(waits::router())
        .merge(webhooks::router())
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

/// What every answer allows a browser: the console's own script, styles
/// and data from this server only, no inline script or style, no framing
/// by any page (clickjacking), forms posted only here; no referrer sent
/// to another origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The whole application: `/v1` (authenticated, limited), `/healthz`,
/// `/readyz`, `/metrics`, and `pages` (the console under `/ui/`, which the server
/// puts in): the gate and the browser headers cover them all.
pub fn app(state: AppState, pages: Router<AppState>) -> Router {
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
        // JSON routes; the plugin upload route has its own, larger limit.
        .layer(DefaultBodyLimit::max(state.server.max_json_bytes));
    Router::new()
        .nest("/v1", v1_routes)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(pages)
        .fallback(|| async { ApiError::not_found("no such route; the API lives under /v1") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), guard::admit))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            // Not `no-referrer`: with it, Chromium sends `Origin: null` on
            // the console's own form posts, which the gate must refuse.
            HeaderValue::from_static("same-origin"),
        ))
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

/// `/readyz`: 200 when this host should get traffic: the database answers
/// and takes writes, and its schema is current for this binary (every
/// migration it carries applied; a newer release's extra ones do not
/// count against it). 503 otherwise, saying which. Anyone may ask, like
/// `/healthz`: the answer names no saga or secret.
async fn readyz(State(state): State<AppState>) -> Response {
    let backend = state.store.backend();
    let unready = |status: &str, message: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": status, "database": backend, "message": message})),
        )
            .into_response()
    };
    match state.store.health().await {
        Ok(Health::Ok) => {}
        Ok(Health::Degraded(why)) => return unready("degraded", why),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: the database does not answer");
            return unready("unavailable", "the database does not answer".into());
        }
    }
    match state.store.schema().await {
        Ok(schema) if schema.is_current() => (
            StatusCode::OK,
            Json(serde_json::json!({
                "status": "ready",
                "database": backend,
                "schema": schema.describe(),
            })),
        )
            .into_response(),
        Ok(schema) => unready("schema_not_current", schema.describe()),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: reading the schema's migrations");
            unready(
                "unavailable",
                "the database's migrations cannot be read".into(),
            )
        }
    }
}

/// `/metrics`: the Prometheus text format (viewer role when tokens are
/// on). The gauges are read now, from this host.
async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if let Err(refused) = guard::caller_of(&state, request.headers(), request.method(), host).await
    {
        return refused.into_response();
    }
    let m = crate::metrics::global();
    m.sagas_in_flight.set(state.runner.active_count() as i64);
    match state.store.list_budgets().await {
        Ok(rows) => m.set_budgets_paused(
            &rows
                .iter()
                .map(|(b, _, now)| {
                    (
                        b.name.clone(),
                        b.paused_until.is_some_and(|t| t.millis() * 1000 > *now),
                    )
                })
                .collect::<Vec<_>>(),
        ),
        Err(e) => tracing::debug!(error = %e, "reading budgets for /metrics"),
    }
    match state.store.queued_by_prefix().await {
        Ok(counts) => m.set_concurrency_queued(&counts),
        Err(e) => tracing::debug!(error = %e, "counting queued sagas for /metrics"),
    }
    match state
        .store
        .mailbox_counts(crate::model::Timestamp::now())
        .await
    {
        Ok((open, kept)) => {
            m.waits_open.set(open as i64);
            m.messages_kept.set(kept as i64);
        }
        Err(e) => tracing::debug!(error = %e, "counting open waits for /metrics"),
    }
    for (status, gauge) in [
        (crate::model::SagaStatus::Pending, &m.sagas_pending),
        (crate::model::SagaStatus::InDoubt, &m.sagas_in_doubt),
    ] {
        match state.store.count_status(status).await {
            Ok(n) => {
                gauge.set(n as i64);
            }
            Err(e) => tracing::debug!(error = %e, "counting {status} sagas for /metrics"),
        }
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
