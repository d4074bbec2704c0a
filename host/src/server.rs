//! Puts a host together and runs it: store, plugin runtime, runner and HTTP
//! API, from startup to a graceful shutdown.
//!
//! `run(options, listener, shutdown)` is the whole server: the binary's
//! `serve` command and the end-to-end tests call the same function (the tests
//! with a listener on `127.0.0.1:0`). Shutdown stops accepting requests and
//! claiming sagas, gives steps in flight a grace period, then releases every
//! lease so another host, or this one restarted, resumes at once.

use crate::api::{self, AppState};
use crate::config::{
    RunnerConfig, RuntimeConfig, ServerConfig, StoreConfig, TelemetryConfig, WebhookConfig,
};
use crate::grants::AccessBook;
use crate::model::{PluginInfo, Timestamp};
use crate::plan::Planner;
use crate::plugin::{PluginError, PluginHost};
use crate::runner::{Clock, Runner, SystemClock};
use crate::secrets::SecretBox;
use crate::store::{self, Store, StoreError};
use crate::telemetry::{Telemetry, TelemetryError};
use crate::webhooks::Deliverer;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The bundled example plugins, registered on an empty database so the
/// README's tour works with nothing built.
pub const EXAMPLES: &[(&str, &[u8])] = &[
    ("echo", include_bytes!("../../plugins/dist/echo.wasm")),
    ("fail", include_bytes!("../../plugins/dist/fail.wasm")),
];

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `sqlite://...` or `postgres://...`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Where the SQLite file and the compile cache live.
    pub data_dir: PathBuf,
    pub runtime: RuntimeConfig,
    pub runner: RunnerConfig,
    pub server: ServerConfig,
    pub store: StoreConfig,
    /// The key secrets are sealed with (`None`: secrets cannot be set).
    pub secrets_key_file: Option<PathBuf>,
    /// Register `echo` and `fail` when no plugin is stored.
    pub examples: bool,
    /// Webhook deliveries.
    pub webhooks: WebhookConfig,
    /// OpenTelemetry traces.
    pub telemetry: TelemetryConfig,
}

impl ServeOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            database_url: None,
            data_dir: data_dir.into(),
            runtime: RuntimeConfig::default(),
            runner: RunnerConfig::default(),
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            secrets_key_file: None,
            examples: true,
            webhooks: WebhookConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }

    /// The database this host opens: `database_url`, or SQLite in `data_dir`.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("wasaga.db").display()))
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Plugin(#[from] PluginError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Telemetry(#[from] TelemetryError),
    /// A setting that cannot work (a secrets key file that is not a key).
    #[error("{0}")]
    Config(String),
    #[error(
        "refusing to listen on {0} without a token: anyone who can reach it could run code here. \
         Set WASAGA_TOKEN (or --token-file), or listen on a loopback address"
    )]
    NoTokenOnPublicAddress(std::net::SocketAddr),
}

/// A host's parts, assembled and running (store open, runner claiming),
/// before it serves HTTP: what `run` serves, and what benchmarks drive.
pub struct Host {
    pub store: Arc<dyn Store>,
    pub plugins: PluginHost,
    pub runner: Runner,
    state: AppState,
    shutdown_grace: std::time::Duration,
    /// Stops the webhook deliverer.
    deliverer: CancellationToken,
    /// The deliverer's task: awaited at shutdown, so nothing of this host
    /// (the SQLite file's lock included) outlives it.
    deliverer_task: tokio::task::JoinHandle<()>,
    telemetry: Arc<Telemetry>,
}

impl Host {
    /// Opens the store, builds the plugin runtime, registers the examples
    /// (when asked and the database has no plugin) and starts the runner.
    pub async fn start(options: &ServeOptions) -> Result<Host, ServeError> {
        std::fs::create_dir_all(&options.data_dir)?;
        let url = options.database_url();
        let store = store::open_with(&url, &options.store).await?;
        let mut runtime = options.runtime.clone();
        if runtime.cache_dir.is_none() {
            runtime.cache_dir = Some(options.data_dir.join("cache"));
        }
        let plugins = PluginHost::new(runtime)?;
        let budgets = Arc::new(crate::budgets::Budgets::new(
            store.clone(),
            options.runtime.outbound.budgets_refresh,
        ));
        plugins.outbound().set_budgets(budgets.clone());
        if options.examples {
            register_examples(&store, &plugins).await?;
        }
        let key = match &options.secrets_key_file {
            Some(path) => Some(Arc::new(
                SecretBox::from_file(path).map_err(|e| ServeError::Config(e.to_string()))?,
            )),
            None => None,
        };
        let callbacks = key.as_ref().map(|k| {
            Arc::new(crate::callbacks::CallbackUrls::new(
                k.callbacks(),
                options.server.public_url.as_deref(),
            ))
        });
        let access = Arc::new(AccessBook::new(store.clone(), key.clone()));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let node = options
            .runner
            .node_id
            .clone()
            .unwrap_or_else(|| format!("wasaga-{}", uuid::Uuid::now_v7().simple()));
        let telemetry = Arc::new(Telemetry::new(
            &options.telemetry,
            &node,
            tokio::runtime::Handle::current(),
        )?);
        let runner = Runner::with_parts(
            store.clone(),
            plugins.clone(),
            RunnerConfig {
                node_id: Some(node),
                ..options.runner.clone()
            },
            clock,
            access,
            telemetry.clone(),
        );
        tracing::info!(database = %store::redact_url(&url), node = runner.owner(), "host starting");
        if let Some(urls) = &callbacks {
            runner.set_callback_urls(urls.clone());
        }
        runner.start();
        let deliverer = CancellationToken::new();
        let deliverer_task = tokio::spawn(
            Deliverer::new(
                store.clone(),
                key,
                options.webhooks.clone(),
                runner.owner(),
                runner.outbox_written(),
            )
            .run(deliverer.clone()),
        );
        let planner = Arc::new(Planner::new(
            plugins.config().clone(),
            options.runner.retry.max_attempts,
            options.runner.max_wait_ceiling,
            crate::config::SchemaLimits::default(),
        ));
        runner.start_schedules(planner.clone());
        let state = AppState {
            callbacks,
            webhooks: Arc::new(options.webhooks.clone()),
            budgets,
            store: store.clone(),
            plugins: plugins.clone(),
            runner: runner.clone(),
            server: Arc::new(options.server.clone()),
            planner,
            throttle: Arc::new(crate::api::guard::Throttle::new(
                options.server.auth_failures_per_minute,
            )),
        };
        Ok(Host {
            store,
            plugins,
            runner,
            state,
            shutdown_grace: options.server.shutdown_grace,
            deliverer,
            deliverer_task,
            telemetry,
        })
    }

    /// The HTTP application.
    pub fn router(&self) -> axum::Router {
        api::app(self.state.clone(), crate::console::router())
    }

    /// Loads every stored plugin (from the compile cache when it can), so
    /// the first saga after a restart does not wait for it. Returns how many
    /// are ready.
    pub async fn warm_plugins(&self) -> usize {
        warm_plugins(self.store.clone(), self.plugins.clone()).await
    }

    /// Stops claiming, lets steps in flight finish within the grace period,
    /// and releases every lease.
    pub async fn shutdown(self) {
        self.runner.shutdown(self.shutdown_grace).await;
        // A delivery in flight may finish within the grace; past it, it is
        // dropped, and its lease lets another host (or this one, restarted)
        // send it again: at least once.
        self.deliverer.cancel();
        let mut deliverer = self.deliverer_task;
        if tokio::time::timeout(self.shutdown_grace, &mut deliverer)
            .await
            .is_err()
        {
            deliverer.abort();
            _ = deliverer.await;
        }
        // The spans of the sagas this host ended, sent before it goes.
        let telemetry = self.telemetry;
        if let Err(e) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
            tracing::warn!(error = %e, "the trace exporter's shutdown panicked");
        }
    }
}

/// Runs a host on `listener` until `shutdown` resolves, then shuts down
/// gracefully.
pub async fn run(
    options: ServeOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    if options.server.tokens.is_none() && !addr.ip().is_loopback() {
        return Err(ServeError::NoTokenOnPublicAddress(addr));
    }
    let host = Host::start(&options).await?;
    tracing::info!(%addr, auth = options.server.tokens.is_some(), "wasaga listening");
    let warm = (host.store.clone(), host.plugins.clone());
    let warming = tokio::spawn(async move { warm_plugins(warm.0, warm.1).await });
    // The peer's address reaches the gate, which counts failed logins per
    // address.
    let app = host
        .router()
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("no longer accepting requests; draining sagas");
    host.shutdown().await;
    // Loading plugins ahead of use holds the store: stop it, so that the
    // store (and SQLite's lock on the data directory) is let go on return.
    warming.abort();
    _ = warming.await;
    tracing::info!("shut down");
    Ok(())
}

/// Registers the bundled examples when the database holds no plugin.
async fn register_examples(store: &Arc<dyn Store>, plugins: &PluginHost) -> Result<(), ServeError> {
    if !store.list_plugins().await?.is_empty() {
        return Ok(());
    }
    for (name, bytes) in EXAMPLES {
        let plugin = plugins.prepare(bytes).await?;
        let info = PluginInfo {
            digest: plugin.digest.clone(),
            name: plugin.name.clone(),
            size: bytes.len() as u64,
            created_at: Timestamp::now(),
            current: true,
            contract: plugin.contract.as_str().to_string(),
        };
        store.put_plugin(&info, bytes).await?;
        tracing::info!(name, digest = %info.digest, "registered a bundled example plugin");
    }
    Ok(())
}

/// Loads every stored plugin into `plugins`; returns how many are ready.
async fn warm_plugins(store: Arc<dyn Store>, plugins: PluginHost) -> usize {
    let started = std::time::Instant::now();
    let Ok(list) = store.list_plugins().await else {
        return 0;
    };
    let mut ready = 0;
    for info in &list {
        if plugins.get(&info.digest).is_some() {
            ready += 1;
            continue;
        }
        match store.plugin_bytes(&info.digest).await {
            Ok(Some(bytes)) => match plugins.load(&info.digest, &bytes, Some(&info.name)).await {
                Ok(_) => ready += 1,
                Err(e) => {
                    tracing::warn!(digest = %info.digest, error = %e, "cannot load a stored plugin")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(digest = %info.digest, error = %e, "cannot read a stored plugin")
            }
        }
    }
    tracing::info!(
        ready,
        total = list.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "plugins warm"
    );
    ready
}
