//! A test cloud: a real HTTP server on 127.0.0.1:0 that behaves like a
//! provider's API, for steps that create and delete resources. It is a
//! stand-in for the outside world, not a mock of wasaga.
//!
//! - `POST /v2/resources` `{name}`: creates a resource (`201 {id, name}`);
//!   the same `Idempotency-Key` again returns the same resource (`200`).
//! - `GET /v2/resources?idempotency_key=K`: the resources created under
//!   that key (none or one), as a list: what an `observe` asks.
//! - `GET /v2/resources/{id}`: the resource with its `status`, `booting`
//!   until it has been asked for `boot_checks` times (see
//!   [`Cloud::boot_after`]; 0 by default, so `active` at once), then
//!   `active`: what a step that waits for a resource to be ready polls.
//! - `DELETE /v2/resources/{id}` (`204`, `404`).
//! - `GET /v2/echo-headers`: the request's headers, as JSON.
//! - `GET /v2/bytes?n=N`: a body of N bytes.
//! - `GET /v2/slow?ms=N`: answers after N ms.
//! - `GET /v2/hang`: accepts and never answers.
//!
//! Every `/v2/resources` route needs `Authorization: Bearer <token>`
//! (`401` otherwise). The cloud counts its calls and the TCP connections it
//! accepted, and a hook can hold a create (to kill a host mid-call).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type CreateHook = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The cloud's state, shared with the test.
#[derive(Default)]
struct Inner {
    token: String,
    resources: BTreeMap<String, Value>,
    by_key: HashMap<String, String>,
    next: u64,
    creates: usize,
    deletes: usize,
    unauthorized: usize,
    hook: Option<CreateHook>,
    /// The first create is held this long, then refused (`503`) having
    /// created nothing.
    hold_first: Option<Duration>,
    /// How many `GET`s a new resource answers `booting` to.
    boot_checks: u32,
    /// `GET`s of each resource so far.
    checks: HashMap<String, u32>,
}

/// A running test cloud.
#[derive(Clone)]
pub struct Cloud {
    pub addr: std::net::SocketAddr,
    inner: Arc<Mutex<Inner>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Cloud {
    /// Starts a cloud on `127.0.0.1:0` that accepts `token`.
    pub async fn start(token: &str) -> Cloud {
        Cloud::start_on("127.0.0.1:0", token)
            .await
            .expect("binding 127.0.0.1:0")
    }

    /// Starts a cloud listening on `addr` that accepts `token`.
    pub async fn start_on(addr: &str, token: &str) -> std::io::Result<Cloud> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let cloud = Cloud {
            addr: listener.local_addr()?,
            inner: Arc::new(Mutex::new(Inner {
                token: token.to_string(),
                ..Inner::default()
            })),
            connections: Arc::default(),
        };
        let app = Router::new()
            .route("/v2/resources", post(create).get(by_key))
            .route("/v2/resources/{id}", get(show).delete(delete))
            .route("/v2/echo-headers", get(echo_headers))
            .route("/v2/bytes", get(bytes))
            .route("/v2/text", get(text))
            .route("/v2/slow", get(slow))
            .route("/v2/hang", get(hang))
            .with_state(cloud.clone());
        let connections = cloud.connections.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(cloud)
    }

    /// Its origin, `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The resources it holds now.
    pub fn resources(&self) -> BTreeMap<String, Value> {
        self.inner.lock().unwrap().resources.clone()
    }

    /// Changes a field of a resource, as someone outside the saga would
    /// (drift); `false` when there is no such resource.
    pub fn change(&self, id: &str, field: &str, value: Value) -> bool {
        let mut inner = self.inner.lock().unwrap();
        match inner.resources.get_mut(id) {
            Some(resource) => {
                resource[field] = value;
                true
            }
            None => false,
        }
    }

    /// Deletes a resource behind the saga's back.
    pub fn remove(&self, id: &str) -> bool {
        self.inner.lock().unwrap().resources.remove(id).is_some()
    }

    /// (creates, deletes, requests refused for their token).
    pub fn counts(&self) -> (usize, usize, usize) {
        let i = self.inner.lock().unwrap();
        (i.creates, i.deletes, i.unauthorized)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// New resources answer `booting` to their first `checks` `GET`s, then
    /// `active`.
    pub fn boot_after(&self, checks: u32) {
        self.inner.lock().unwrap().boot_checks = checks;
    }

    /// Holds the next create for `hold`, then refuses it (`503`) having
    /// created nothing: a host killed meanwhile left no effect.
    pub fn hold_first_create(&self, hold: Duration) {
        self.inner.lock().unwrap().hold_first = Some(hold);
    }

    /// Runs `hook` on every create after the resource exists and before
    /// the answer is sent.
    pub fn on_create<F, Fut>(&self, hook: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.lock().unwrap().hook = Some(Arc::new(move || Box::pin(hook())));
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let mut inner = self.inner.lock().unwrap();
        let expected = format!("Bearer {}", inner.token);
        let ok = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected);
        if !ok {
            inner.unauthorized += 1;
        }
        ok
    }
}

fn unauthorized() -> axum::response::Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"message": "a valid bearer token is needed"})),
    )
        .into_response()
}

async fn create(
    State(cloud): State<Cloud>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    if !cloud.authorized(&headers) {
        return unauthorized();
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let hold = {
        let mut inner = cloud.inner.lock().unwrap();
        let hold = inner.hold_first.take();
        if hold.is_some() {
            inner.creates += 1;
        }
        hold
    };
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"message": "held, then refused"})),
        )
            .into_response();
    }
    let (status, resource, hook) = {
        let mut inner = cloud.inner.lock().unwrap();
        inner.creates += 1;
        let existing = key
            .as_ref()
            .and_then(|k| inner.by_key.get(k).cloned())
            .and_then(|id| inner.resources.get(&id).cloned());
        match existing {
            Some(resource) => (StatusCode::OK, resource, None),
            None => {
                inner.next += 1;
                let id = format!("res-{}", inner.next);
                let resource = json!({"id": id, "name": body["name"]});
                inner.resources.insert(id.clone(), resource.clone());
                if let Some(k) = key {
                    inner.by_key.insert(k, id);
                }
                (StatusCode::CREATED, resource, inner.hook.clone())
            }
        }
    };
    if let Some(hook) = hook {
        hook().await;
    }
    (status, Json(resource)).into_response()
}

async fn by_key(
    State(cloud): State<Cloud>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    if !cloud.authorized(&headers) {
        return unauthorized();
    }
    let inner = cloud.inner.lock().unwrap();
    let found: Vec<Value> = q
        .get("idempotency_key")
        .and_then(|k| inner.by_key.get(k))
        .and_then(|id| inner.resources.get(id))
        .cloned()
        .into_iter()
        .collect();
    Json(found).into_response()
}

async fn show(
    State(cloud): State<Cloud>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> axum::response::Response {
    if !cloud.authorized(&headers) {
        return unauthorized();
    }
    let mut inner = cloud.inner.lock().unwrap();
    let Some(mut resource) = inner.resources.get(&id).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let boot_checks = inner.boot_checks;
    let checks = inner.checks.entry(id).or_default();
    *checks += 1;
    resource["status"] = json!(if *checks > boot_checks {
        "active"
    } else {
        "booting"
    });
    Json(resource).into_response()
}

async fn delete(
    State(cloud): State<Cloud>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> axum::response::Response {
    if !cloud.authorized(&headers) {
        return unauthorized();
    }
    let mut inner = cloud.inner.lock().unwrap();
    inner.deletes += 1;
    match inner.resources.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn echo_headers(headers: HeaderMap) -> Json<Value> {
    let map: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Json(json!(map))
}

async fn bytes(Query(q): Query<HashMap<String, usize>>) -> Vec<u8> {
    vec![b'x'; q.get("n").copied().unwrap_or(0)]
}

/// Answers the query's `body`, as text.
async fn text(Query(q): Query<HashMap<String, String>>) -> String {
    q.get("body").cloned().unwrap_or_default()
}

async fn slow(Query(q): Query<HashMap<String, u64>>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.get("ms").copied().unwrap_or(0))).await;
    "slow"
}

async fn hang() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}
