//! What a request must pass before any handler runs, and before any of its
//! body is read: the one gate every route (API, console, metrics) goes
//! through, so that no route can forget a check.
//!
//! In order:
//! 1. **Host** (DNS rebinding). A server without tokens answers only a
//!    `Host` that cannot be rebound: an IP address, `localhost` (and
//!    `*.localhost`), or a name given with `--allowed-host`. With tokens
//!    the token is the defence, and only `--allowed-host`, when given,
//!    narrows the names. Else `421 misdirected_request`.
//! 2. **Origin** (cross-site requests). A state change (any method but
//!    GET, HEAD, OPTIONS) that a browser sends from another origin is
//!    refused: its `Origin` must name this server (the `Host` it was sent
//!    to), and without an `Origin`, `Sec-Fetch-Site` must not say
//!    `cross-site` or `same-site`. Clients that are not browsers send
//!    neither header and pass. Else `403 cross_origin`.
//! 3. **Content type**. A state change may declare only what its route
//!    takes: JSON on the API (`application/json`, `+json`), a component on
//!    the upload route (`application/wasm`, `application/octet-stream`), a
//!    form on the console's login and logout. No declared type is taken
//!    (a body is then read as the route reads it). Else `415
//!    unsupported_media_type`: the "simple" cross-site requests a page can
//!    send without a CORS preflight are all refused here.
//! 4. **Who** (`/v1`): a bearer token or a console session, and for an
//!    upload the admin role, checked from the headers. Failed tokens and
//!    logins are counted per address ([`Throttle`]); past the limit the
//!    address gets `429` until its minute is over.
//! 5. **The body**, read whole within its route's limit (declared sizes
//!    refused before any byte is read) and within a deadline, so that a
//!    slow client holds neither memory nor a task for long: `408` past it.

use super::error::ApiError;
use super::{AppState, session};
use crate::api::auth::{Caller, Role};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The address a request came from, when the server knows it (set by
/// [`admit`] for the handlers that count failed logins).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

/// Which body a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Component,
    Form,
}

impl BodyKind {
    fn of(method: &Method, path: &str) -> BodyKind {
        let path = path.trim_end_matches('/');
        if method == Method::POST && path == "/v1/plugins" {
            BodyKind::Component
        } else if path.starts_with("/ui/") {
            BodyKind::Form
        } else {
            BodyKind::Json
        }
    }

    fn accepts(self, essence: &str) -> bool {
        match self {
            BodyKind::Json => {
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            }
            BodyKind::Component => {
                matches!(essence, "application/wasm" | "application/octet-stream")
            }
            BodyKind::Form => essence == "application/x-www-form-urlencoded",
        }
    }

    fn wanted(self) -> &'static str {
        match self {
            BodyKind::Json => "application/json",
            BodyKind::Component => "application/wasm",
            BodyKind::Form => "application/x-www-form-urlencoded",
        }
    }
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The `Host` a request was sent to (HTTP/1 header, or HTTP/2 authority).
fn host_of(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
}

/// The name part of a `Host` value, lowercase, without port or brackets
/// or a trailing dot.
fn host_name(host: &str) -> String {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// 1: whether this server answers for `host`.
fn check_host(state: &AppState, host: Option<&str>) -> Result<(), ApiError> {
    let server = &state.server;
    let allowed = &server.allowed_hosts;
    if server.tokens.is_some() && allowed.is_empty() {
        return Ok(());
    }
    // HTTP/1.0 without a Host header: not a browser.
    let Some(host) = host else { return Ok(()) };
    let name = host_name(host);
    let safe = name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.iter().any(|a| host_name(a) == name);
    if safe {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "misdirected_request",
        format!(
            "this server does not answer for the host `{}`: it answers for IP addresses, localhost \
             and the names given with --allowed-host",
            host.chars().take(100).collect::<String>()
        ),
    ))
}

/// Whether the `Origin` header value names the host the request was sent
/// to (scheme http or https; a port the origin leaves out is its scheme's).
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let (Ok(origin), Some(host)) = (url::Url::parse(origin), host) else {
        return false;
    };
    if !matches!(origin.scheme(), "http" | "https") {
        return false;
    }
    let Ok(sent_to) = url::Url::parse(&format!("{}://{host}/", origin.scheme())) else {
        return false;
    };
    origin.host_str().map(str::to_ascii_lowercase)
        == sent_to.host_str().map(str::to_ascii_lowercase)
        && origin.port_or_known_default() == sent_to.port_or_known_default()
}

fn cross_origin(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "cross_origin", message)
}

/// 2: a state change sent by a browser must come from this server's own
/// pages. `strict` (a cookie-authenticated change, or a login) also wants
/// the `Origin` to be there.
pub(super) fn check_origin(
    headers: &HeaderMap,
    host: Option<&str>,
    strict: bool,
) -> Result<(), ApiError> {
    match headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some(origin) if same_origin(origin, host) => Ok(()),
        Some(origin) => Err(cross_origin(format!(
            "a request from the web page at `{}` may not change anything here: only this server's \
             own pages (and clients that are not browsers) may",
            origin.chars().take(100).collect::<String>()
        ))),
        None => {
            let site = headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if matches!(site, "cross-site" | "same-site") || (strict && !site.is_empty()) {
                return Err(cross_origin(format!(
                    "a {site} request from a web page may not change anything here"
                )));
            }
            Ok(())
        }
    }
}

/// 3: the declared content type, if any, is one the route takes.
fn check_content_type(kind: BodyKind, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(declared) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = declared.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if kind.accepts(&essence) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "this route takes `Content-Type: {}`, not `{}`",
            kind.wanted(),
            text.chars().take(100).collect::<String>()
        ),
    ))
}

/// Failed tokens and logins per address: at most `per_minute` in a
/// minute; past it the address is refused (`429`) until its minute is
/// over, whatever it presents. Memory is bounded: at most
/// [`Throttle::MAX_ADDRESSES`] addresses are tracked at once.
#[derive(Debug)]
pub struct Throttle {
    per_minute: u32,
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    const WINDOW: Duration = Duration::from_secs(60);
    const MAX_ADDRESSES: usize = 10_000;

    /// `per_minute` 0 turns counting off.
    pub fn new(per_minute: u32) -> Throttle {
        Throttle {
            per_minute,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// How long `peer` is still refused, if it is.
    pub fn refused_for(&self, peer: Option<IpAddr>) -> Option<Duration> {
        let ip = peer?;
        if self.per_minute == 0 {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (failures, since) = seen.get(&ip)?;
        let left = Self::WINDOW.checked_sub(since.elapsed())?;
        (*failures >= self.per_minute).then_some(left)
    }

    /// Counts a failed token or login from `peer`.
    pub fn failed(&self, peer: Option<IpAddr>) {
        let Some(ip) = peer else { return };
        if self.per_minute == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= Self::MAX_ADDRESSES {
            seen.retain(|_, (_, since)| since.elapsed() < Self::WINDOW);
        }
        if seen.len() >= Self::MAX_ADDRESSES && !seen.contains_key(&ip) {
            return;
        }
        let entry = seen.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= Self::WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        if entry.0 == self.per_minute {
            tracing::warn!(address = %ip, failures = entry.0, "too many failed tokens or logins: refusing this address for a minute");
        }
    }

    /// The `429` for an address refused for `left`.
    pub fn refusal(left: Duration) -> Response {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            "too many failed tokens or logins from this address: wait a minute and try again",
        )
        .into_response();
        let secs = left.as_secs().max(1).to_string();
        if let Ok(value) = HeaderValue::from_str(&secs) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// The bearer token of a request, if it carries one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

/// Who makes a request: its bearer token, or else the console's session
/// cookie (whose state changes must carry the page's CSRF token and come
/// from this server's own page). Everyone, when tokens are off.
pub(super) async fn caller_of(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    host: Option<&str>,
) -> Result<Option<Caller>, ApiError> {
    let Some(tokens) = state.server.tokens.as_ref() else {
        return Ok(None);
    };
    if let Some(given) = bearer(headers) {
        return match tokens.check(given) {
            Some(caller) => Ok(Some(caller)),
            None => Err(ApiError::unauthorized("the bearer token is not valid")),
        };
    }
    let Some(id) = session::session_id(headers) else {
        return Err(ApiError::unauthorized(
            "this server needs `Authorization: Bearer <token>`",
        ));
    };
    let Some(caller) = session::caller(state.store.as_ref(), tokens, &id).await? else {
        return Err(ApiError::unauthorized(
            "the console session is not valid any more (it expired, or you logged out); log in \
             again at /ui/login",
        ));
    };
    if changes_state(method) {
        check_origin(headers, host, true)?;
        let presented = headers
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !session::csrf_ok(&id, presented) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "the console page's CSRF token is missing or stale (you logged out, or logged in \
                 again): reload the page and try again",
            ));
        }
    }
    Ok(Some(caller))
}

/// The gate (see the module's documentation), as a middleware over the
/// whole application.
/// Where waits' capability URLs live: the one `/v1` path a bearer token
/// is not asked for.
pub(super) const CALLBACKS: &str = "/v1/callbacks/";

pub(super) async fn admit(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    request.extensions_mut().insert(Peer(peer));
    let host = host_of(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let kind = BodyKind::of(&method, &path);
    if let Err(refused) = check_host(&state, host.as_deref()) {
        return refuse(&state, request, refused.into_response()).await;
    }
    if changes_state(&method) {
        let strict = kind == BodyKind::Form;
        if let Err(refused) = check_origin(request.headers(), host.as_deref(), strict)
            .and_then(|()| check_content_type(kind, request.headers()))
        {
            return refuse(&state, request, refused.into_response()).await;
        }
    }
    if path == "/v1" || path.starts_with("/v1/") {
        if let Some(left) = state.throttle.refused_for(peer) {
            return refuse(&state, request, Throttle::refusal(left)).await;
        }
        if path.starts_with(CALLBACKS) {
            // A wait's capability URL: the token in the path is the
            // credential (`crate::callbacks`); no bearer token is asked.
            request.extensions_mut().insert(Caller::anonymous());
            return read_body(&state, kind, request, next).await;
        }
        match caller_of(&state, request.headers(), &method, host.as_deref()).await {
            Ok(caller) => {
                let caller = caller.unwrap_or_else(Caller::anonymous);
                if kind == BodyKind::Component
                    && let Err(refused) = caller.require(Role::Admin)
                {
                    return refuse(&state, request, refused.into_response()).await;
                }
                request.extensions_mut().insert(caller);
            }
            Err(refused) => {
                if refused.status == StatusCode::UNAUTHORIZED && bearer(request.headers()).is_some()
                {
                    state.throttle.failed(peer);
                }
                return refuse(&state, request, refused.into_response()).await;
            }
        }
    }
    read_body(&state, kind, request, next).await
}

/// Answers a refused request. A small declared body (at most the JSON
/// limit) is read and dropped frame by frame, within the deadline, so the
/// connection stays in step for the client's next request (and a client
/// still writing does not meet a closed socket); anything larger, or of
/// unknown size, is left unread and the connection closed.
async fn refuse(state: &AppState, request: Request, mut response: Response) -> Response {
    use http_body_util::BodyExt;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let small = declared.is_some_and(|n| n <= state.server.max_json_bytes as u64);
    let drained = small
        && tokio::time::timeout(state.server.request_timeout, async {
            let mut body = request.into_body();
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false);
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// 5: the body, read whole within its route's limit and deadline.
async fn read_body(state: &AppState, kind: BodyKind, request: Request, next: Next) -> Response {
    let (limit, deadline) = match kind {
        BodyKind::Component => (
            state.plugins.config().max_component_bytes,
            state.server.request_timeout.saturating_mul(10),
        ),
        _ => (state.server.max_json_bytes, state.server.request_timeout),
    };
    let closing = |mut response: Response| {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let too_large = |what: String| {
        closing(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", what).into_response())
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
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
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
        Err(_) => {
            return closing(
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        deadline.as_secs()
                    ),
                )
                .into_response(),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_compared_with_the_host_it_was_sent_to() {
        assert!(same_origin("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(same_origin("http://LocalHost:80", Some("localhost")));
        assert!(!same_origin(
            "http://localhost:8080",
            Some("127.0.0.1:8080")
        ));
        assert!(!same_origin(
            "http://127.0.0.1:9999",
            Some("127.0.0.1:8080")
        ));
        assert!(!same_origin("null", Some("127.0.0.1:8080")));
        assert!(!same_origin("http://127.0.0.1:8080", None));
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("Example.COM.:80"), "example.com");
    }

    #[test]
    fn failures_past_the_limit_refuse_the_address() {
        let throttle = Throttle::new(3);
        let ip = Some("10.1.2.3".parse().unwrap());
        for _ in 0..2 {
            throttle.failed(ip);
        }
        assert!(throttle.refused_for(ip).is_none());
        throttle.failed(ip);
        assert!(throttle.refused_for(ip).is_some());
        assert!(
            throttle
                .refused_for(Some("10.1.2.4".parse().unwrap()))
                .is_none()
        );
    }
}
