//! Fixtures for wasaga's tests: nothing here is a mock.
//!
//! - [`TestDb`]: a real SQLite file in a temporary directory, or a fresh
//!   database on the machine's PostgreSQL, dropped afterwards, so tests run
//!   in parallel without seeing each other.
//! - [`Counter`]: an HTTP endpoint outside the host that the `counter` test
//!   plugin reports every call to. It sees every execution, including ones a
//!   crash cut short, which is how tests prove that no completed step ran
//!   again. Hooks let a test act at a chosen call (hold it, cancel the saga).
//! - [`TestServer`]: the real server (`wasaga::server::run`) on
//!   `127.0.0.1:0`, in this process; [`ServerProcess`]: the real `wasaga`
//!   binary as a child process, for SIGKILL (used by the `wasaga` package's
//!   own tests, which cargo hands the freshly built binary).
//! - [`component`]: the committed components in `plugins/dist`.

mod cloud;
mod http;
mod provider;

pub use cloud::Cloud;
pub use http::{Contract, Http};
pub use provider::Provider;

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasaga::model::{Digest, SagaDetail, SagaId, SagaRun, SagaStatus, StepSpec, Timestamp};
use wasaga::store::{NewSaga, Store};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A committed component from `plugins/dist`.
pub fn component(name: &str) -> Vec<u8> {
    let path = repo().join("plugins/dist").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A component `cargo xtask polyglot` builds (the Python and JavaScript
/// examples; README's test command builds them first).
pub fn polyglot(file: &str) -> Vec<u8> {
    let path = polyglot_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}\nbuild the polyglot examples first: cargo xtask polyglot",
            path.display()
        )
    })
}

/// Where `cargo xtask polyglot` writes (`$CARGO_TARGET_DIR/polyglot`, or
/// `target/polyglot`): the Python and JavaScript examples, the Python venv
/// and the C route's tools.
pub fn polyglot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("polyglot")
}

/// A template inputs schema that is a chain of `anyOf`s through `$ref`s,
/// `depth` links long: each link doubles the work of checking an instance
/// that fails it (issue 34's costly schema).
pub fn any_of_chain(depth: usize) -> serde_json::Value {
    let mut defs = serde_json::Map::new();
    for i in 0..depth {
        let next = format!("#/$defs/d{}", i + 1);
        defs.insert(
            format!("d{i}"),
            serde_json::json!({"anyOf": [{"$ref": next}, {"$ref": next}]}),
        );
    }
    defs.insert(format!("d{depth}"), serde_json::json!({"type": "string"}));
    serde_json::json!({"$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}})
}

/// Tokens for a test server: an admin token (labelled `admin`) and the
/// lines of a tokens file (`ROLE LABEL SECRET`).
pub fn tokens(admin: &str, file: &str) -> wasaga::api::Tokens {
    let mut tokens = wasaga::api::Tokens::admin(admin).expect("an admin token");
    tokens.add_file(file).expect("a tokens file");
    tokens
}

/// The CSRF token a console page carries (its `<meta name="csrf">`).
pub fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" content=\"")
        .nth(1)
        .expect("a page with a CSRF token")
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The secrets key file in `dir`: the one there (a host restarted on the
/// same directory keeps its key), or a new one of 64 random hex characters.
pub fn secrets_key_file(dir: &Path) -> PathBuf {
    let path = dir.join("secrets.key");
    if !path.exists() {
        let key: [u8; 32] = rand::random();
        std::fs::write(&path, hex::encode(key)).expect("writing a secrets key");
    }
    path
}

/// The same component with a custom section appended (`padding` bytes of
/// it): the same plugin under another digest, and as large as a test needs.
pub fn variant(bytes: &[u8], n: u32, padding: usize) -> Vec<u8> {
    let mut data = n.to_le_bytes().to_vec();
    data.resize(4 + padding, 0x5a);
    let section = wasm_encoder::CustomSection {
        name: "wasaga-test-variant".into(),
        data: data.into(),
    };
    let mut out = bytes.to_vec();
    out.push(wasm_encoder::Section::id(&section));
    wasm_encoder::Encode::encode(&section, &mut out);
    out
}

/// The machine's PostgreSQL (trust auth). `WASAGA_TEST_PG` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("WASAGA_TEST_PG")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into())
}

/// Runs each test body on SQLite and on PostgreSQL: `on_both! { name(backend) { ... } }`
/// makes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident($backend:ident) $body:block)+) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($backend: $crate::Backend) $body
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() { run($crate::Backend::Sqlite).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() { run($crate::Backend::Postgres).await }
            }
        )+
    };
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of a test's own.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary directory");
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.path().join("wasaga.db").display()),
                backend,
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let name = format!("wasaga_test_{}", uuid::Uuid::new_v4().simple());
                let admin = postgres_admin_url();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL at {admin} is needed for this test: {e}")
                    });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("creating a test database");
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                TestDb {
                    url: format!("{base}/{name}?max_connections=6"),
                    backend,
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        wasaga::store::open(&self.url)
            .await
            .expect("opening the test store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_admin_url()).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// One call the `counter` plugin reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub saga: String,
    pub step: u32,
    pub phase: String,
    pub attempt: u32,
    pub key: String,
    /// Order of arrival across all calls.
    pub seq: u64,
    /// When it arrived.
    pub at: std::time::SystemTime,
    /// The request's W3C `traceparent` header (the host adds it when it
    /// exports traces).
    pub traceparent: Option<String>,
}

type Hook = Arc<dyn Fn(Call) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The external endpoint the `counter` plugin reports to.
#[derive(Clone)]
pub struct Counter {
    pub addr: std::net::SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    hook: Arc<Mutex<Option<Hook>>>,
    delay: Arc<Mutex<Duration>>,
}

impl Counter {
    pub async fn start() -> Counter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let counter = Counter {
            addr: listener.local_addr().unwrap(),
            calls: Arc::new(Mutex::new(Vec::new())),
            hook: Arc::new(Mutex::new(None)),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
        };
        let state = counter.clone();
        let app = axum::Router::new().route(
            "/count",
            axum::routing::get(
                move |axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
                      headers: axum::http::HeaderMap| {
                    let state = state.clone();
                    async move {
                        let call = {
                            let mut calls = state.calls.lock().unwrap();
                            let call = Call {
                                saga: q.get("saga").cloned().unwrap_or_default(),
                                step: q
                                    .get("step")
                                    .and_then(|s| s.parse().ok())
                                    .unwrap_or(u32::MAX),
                                phase: q.get("phase").cloned().unwrap_or_default(),
                                attempt: q.get("attempt").and_then(|s| s.parse().ok()).unwrap_or(0),
                                key: q.get("key").cloned().unwrap_or_default(),
                                seq: calls.len() as u64,
                                at: std::time::SystemTime::now(),
                                traceparent: headers
                                    .get("traceparent")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string),
                            };
                            calls.push(call.clone());
                            let seen = calls
                                .iter()
                                .filter(|c| {
                                    c.saga == call.saga
                                        && c.step == call.step
                                        && c.phase == call.phase
                                })
                                .count();
                            (call, seen)
                        };
                        let (call, seen) = call;
                        let hook = state.hook.lock().unwrap().clone();
                        if let Some(hook) = hook {
                            hook(call).await;
                        }
                        let delay = *state.delay.lock().unwrap();
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        // How many calls of this step and phase it has seen
                        // (the `poll` plugin counts its polls by it).
                        seen.to_string()
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        counter
    }

    /// The `counter_url` input for this endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The grants that let the `counter` plugin reach this endpoint.
    pub fn grants(&self) -> wasaga::grants::Grants {
        wasaga::grants::Grants {
            http: vec![self.url().parse().expect("an origin")],
            ..Default::default()
        }
    }

    /// Grants `counter` this endpoint, straight in the store (as the API
    /// would).
    pub async fn grant(&self, store: &dyn Store) {
        self.grant_to("counter", store).await;
    }

    /// Grants the plugin named `plugin` this endpoint, straight in the store.
    pub async fn grant_to(&self, plugin: &str, store: &dyn Store) {
        store
            .put_grants(plugin, &self.grants(), Timestamp::now())
            .await
            .unwrap_or_else(|e| panic!("granting {plugin}: {e}"));
    }

    /// Grants `counter` this endpoint through a server's API.
    pub async fn grant_on(&self, http: &Http, base: &str) {
        self.grant_on_to("counter", http, base).await;
    }

    /// Grants the plugin named `plugin` this endpoint through a server's API.
    pub async fn grant_on_to(&self, plugin: &str, http: &Http, base: &str) {
        let r = http
            .put(format!("{base}/v1/plugins/{plugin}/grants"))
            .json(&self.grants())
            .send()
            .await
            .expect("PUT grants");
        assert!(r.status().is_success(), "granting {plugin}: {}", r.status());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn calls_of(&self, saga: &SagaId) -> Vec<Call> {
        let id = saga.to_string();
        self.calls().into_iter().filter(|c| c.saga == id).collect()
    }

    /// Every response waits this long (a slow external API).
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Runs `hook` on every call before answering it.
    pub fn on_call<F, Fut>(&self, hook: F)
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        *self.hook.lock().unwrap() = Some(Arc::new(move |call| Box::pin(hook(call))));
    }
}

/// The step contract a committed component implements, from the world
/// `plugins/dist/manifest.json` records for it (`0.1.0`, `0.2.0`).
pub fn contract_of(name: &str) -> String {
    let path = repo().join("plugins/dist/manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("reading the manifest"))
            .expect("the manifest is JSON");
    let world = &manifest["components"][format!("{name}.wasm")]["world"];
    world
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str()?.strip_prefix("export wasaga:step/step@"))
        .next()
        .unwrap_or_else(|| panic!("{name}.wasm exports no step in the manifest"))
        .to_string()
}

/// Uploads a committed component straight into a store (as the API would
/// after validating it) and returns its step spec.
pub async fn install(store: &dyn Store, name: &str) -> StepSpec {
    let bytes = component(name);
    let info = wasaga::model::PluginInfo {
        digest: Digest::of(&bytes),
        name: name.to_string(),
        size: bytes.len() as u64,
        created_at: Timestamp::now(),
        current: true,
        contract: contract_of(name),
    };
    store
        .put_plugin(&info, &bytes)
        .await
        .expect("storing a plugin");
    StepSpec {
        name: name.to_string(),
        plugin: info.digest,
        max_attempts: 3,
        timeout_ms: 30_000,
        max_memory_bytes: None,
        max_output_bytes: None,
        max_wait_ms: None,
        semantics: Default::default(),
        wait: None,
    }
}

/// Stores a new pending saga, ready to be claimed (at any time: also by a
/// runner whose virtual clock lags real time).
pub async fn create_saga(
    store: &dyn Store,
    plan: Vec<StepSpec>,
    inputs: serde_json::Value,
) -> SagaId {
    let saga = SagaRun::pending("test", plan, inputs, None, None, Timestamp::now());
    let id = saga.id;
    let created = store
        .create_saga(NewSaga {
            ready_at: Some(Timestamp(0)),
            saga,
            idempotency: None,
            lease: None,
            ledger: Vec::new(),
        })
        .await
        .expect("creating a saga");
    assert!(
        matches!(created, wasaga::store::CreateSaga::Created(_)),
        "{created:?}"
    );
    id
}

/// Polls until the saga ends.
pub async fn wait_final(store: &dyn Store, id: SagaId, within: Duration) -> SagaDetail {
    let deadline = Instant::now() + within;
    loop {
        let detail = store
            .saga(id)
            .await
            .expect("reading a saga")
            .expect("the saga exists");
        if detail.saga.status.is_final() {
            return detail;
        }
        if Instant::now() > deadline {
            panic!("saga {id} did not end within {within:?}: {detail:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `check` holds for the saga.
pub async fn wait_for(
    store: &dyn Store,
    id: SagaId,
    within: Duration,
    check: impl Fn(&SagaDetail) -> bool,
) -> SagaDetail {
    let deadline = Instant::now() + within;
    loop {
        let detail = store
            .saga(id)
            .await
            .expect("reading a saga")
            .expect("the saga exists");
        if check(&detail) {
            return detail;
        }
        if Instant::now() > deadline {
            panic!("saga {id} did not reach the expected state within {within:?}: {detail:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `GET {base}/v1/sagas/{id}` until `check` holds for the answer, and
/// returns it; panics with the last answer after `within`.
pub async fn poll_saga(
    http: &Http,
    base: &str,
    id: &str,
    within: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let saga: serde_json::Value = http
            .get(format!("{base}/v1/sagas/{id}"))
            .send()
            .await
            .expect("GET /v1/sagas/{id}")
            .json()
            .await
            .expect("a saga as JSON");
        if check(&saga) {
            return saga;
        }
        assert!(
            Instant::now() < deadline,
            "saga {id} did not reach the expected state within {within:?}: {saga}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the server at `base` answers `/healthz` with 200.
pub async fn healthy(http: &Http, base: &str) -> bool {
    http.get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// With `WASAGA_TEST_LOG` set (an env-filter, e.g. `info` or
/// `wasaga=debug`), the servers a test runs in this process log to stderr.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("WASAGA_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// The real server, in this process, on `127.0.0.1:0`.
pub struct TestServer {
    pub base: String,
    pub http: Http,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), wasaga::server::ServeError>>>,
}

impl TestServer {
    pub async fn start(options: wasaga::server::ServeOptions) -> TestServer {
        init_logging();
        // A server just stopped in this process may still be letting go of
        // its SQLite directory's lock (its last tasks ending): a restart on
        // the same directory waits for it, as a new process would find it
        // free once the old one exited.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(wasaga::server::run(options.clone(), listener, async {
                let _ = rx.await;
            }));
            let mut server = TestServer {
                base,
                http: Http::new(),
                shutdown: Some(tx),
                task: Some(task),
            };
            match server.wait_healthy().await {
                Ok(()) => return server,
                Err(why)
                    if why.contains("in use by another wasaga process")
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(why) => panic!("the test server stopped while starting: {why}"),
            }
        }
    }

    /// Waits until the server answers `/healthz`; why it stopped, if it
    /// stopped first.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                let outcome = self.task.take().unwrap().await;
                return Err(format!("{outcome:?}"));
            }
            if healthy(&self.http, &self.base).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the test server did not become healthy");
    }

    /// A server on `db` with settings that suit tests (a few instances, a
    /// quick poll), adjusted by `adjust`.
    pub async fn on(
        db: &TestDb,
        adjust: impl FnOnce(&mut wasaga::server::ServeOptions),
    ) -> TestServer {
        let mut options = wasaga::server::ServeOptions::new(db.dir.path());
        options.database_url = Some(db.url.clone());
        options.runtime.max_instances = 16;
        options.runner.poll_every = Duration::from_millis(50);
        adjust(&mut options);
        TestServer::start(options).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads the committed test component `name`; its upload answer.
    pub async fn upload(&self, name: &str) -> serde_json::Value {
        self.upload_bytes(component(name)).await
    }

    /// Uploads a component; its upload answer (a failure panics with it).
    pub async fn upload_bytes(&self, bytes: Vec<u8>) -> serde_json::Value {
        let r = self
            .http
            .post(self.url("/v1/plugins"))
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert!(status.is_success(), "upload: {status} {body}");
        body
    }

    /// Sets the secret `cloud-token` to the test cloud's `token` (usable
    /// at its origin), and grants `plugin` the cloud's origin and that
    /// secret with `use`.
    pub async fn grant_cloud(&self, cloud: &Cloud, token: &str, plugin: &str) {
        let r = self
            .http
            .put(self.url("/v1/secrets/cloud-token"))
            .json(&serde_json::json!({"value": token, "origins": [cloud.origin()]}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            reqwest::StatusCode::NO_CONTENT,
            "setting the secret"
        );
        let r = self
            .http
            .put(self.url(&format!("/v1/plugins/{plugin}/grants")))
            .json(&serde_json::json!({"http": [cloud.origin()], "secrets": {"cloud-token": "use"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "granting {plugin}");
    }

    /// The answer to `GET path`, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// The saga `id` (as `GET /v1/sagas/{id}` answers it) once its status
    /// is `want`; panics after a minute.
    pub async fn wait_status(&self, id: &str, want: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let saga = self.get_json(&format!("/v1/sagas/{id}")).await;
            if saga["status"] == want {
                return saga;
            }
            assert!(
                Instant::now() < deadline,
                "saga {id} never became {want}: {saga}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// `POST path` with `body` as JSON: the status, and the answer as JSON
    /// (null when it is not JSON).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status();
        (status, r.json().await.unwrap_or_default())
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), wasaga::server::ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap().await.expect("the server task")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A `wasaga serve` child process.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub base: String,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `BINARY serve --listen 127.0.0.1:0 ARGS` and waits until it
    /// answers `/healthz`. Tests in the `wasaga` package pass
    /// `env!("CARGO_BIN_EXE_wasaga")`, which cargo keeps built and fresh.
    pub async fn start(binary: &str, args: &[String], log: PathBuf) -> Result<ServerProcess> {
        let log_file = std::fs::File::create(&log)?;
        let mut child = std::process::Command::new(binary)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(std::process::Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("starting wasaga serve")?;
        // The first stdout line names the address: "wasaga listening on http://...".
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            reader.read_line(&mut line).map(|_| line)
        });
        let line = match tokio::time::timeout(Duration::from_secs(60), line).await {
            Ok(Ok(Ok(line))) => line,
            _ => {
                let _ = child.kill();
                bail!(
                    "wasaga serve did not report its address; log:\n{}",
                    std::fs::read_to_string(&log)?
                );
            }
        };
        let base = line
            .trim()
            .strip_prefix("wasaga listening on ")
            .with_context(|| format!("unexpected first line: {line:?}"))?
            .to_string();
        let http = Http::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if healthy(&http, &base).await {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("wasaga serve did not become healthy");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(ServerProcess { child, base, log })
    }

    /// SIGKILL: no shutdown, no lease release, nothing flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc_kill(pid, 15);
        }
        self.child.wait().expect("waiting for wasaga serve")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// Asserts the saga ended in `status`.
pub fn assert_status(detail: &SagaDetail, status: SagaStatus) {
    assert_eq!(detail.saga.status, status, "{detail:#?}");
}
