//! The `wasaga` command line: `serve`, and client subcommands that talk to a
//! server over HTTP API v1 (`plugin push|list|show|delete`, `saga
//! start|list|show|cancel|watch`).
//!
//! Every flag of `serve` has an environment variable, and its default comes
//! from `config`, so `--help`, README and the code agree. Client errors print
//! the server's message and exit 1; `saga watch` and `saga start --wait`
//! exit 0 when the saga completes, 3 when it is rolled back and 4 when it
//! failed (needs a human), so scripts can branch on the outcome.

mod client;

pub use client::{Client, ClientError};

use crate::api::Tokens;
use crate::config::{Allocator, RunnerConfig, RuntimeConfig, ServerConfig, StepLimits};
use crate::model::{SagaDetail, SagaRun, SagaStatus, StepStatus};
use crate::server::{self, ServeError, ServeOptions};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit codes of `saga watch` and `saga start --wait`.
pub const EXIT_ROLLED_BACK: u8 = 3;
pub const EXIT_FAILED: u8 = 4;

#[derive(Debug, Parser)]
#[command(
    name = "wasaga",
    version,
    about = "A WebAssembly saga step host",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a host: HTTP API, runner and plugin runtime.
    Serve(Box<ServeArgs>),
    /// Upload, list, show and delete step plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Start, list, show, cancel and watch sagas.
    #[command(subcommand)]
    Saga(SagaCommand),
}

/// Where the server is, for the client subcommands.
#[derive(Debug, Args, Clone)]
struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "WASAGA_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Bearer token, when the server needs one.
    #[arg(long, env = "WASAGA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Upload a component (.wasm).
    Push {
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List plugins, newest first.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a plugin by digest or name.
    Show {
        reference: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a plugin (refused while an unfinished saga pins it).
    Delete {
        digest: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
enum SagaCommand {
    /// Start a saga.
    Start {
        /// What the saga does, e.g. provision.
        #[arg(long)]
        kind: String,
        /// A step: a plugin name or digest. Repeat, in order.
        #[arg(long = "step", required = true)]
        steps: Vec<String>,
        /// The saga's inputs, a JSON object.
        #[arg(long, default_value = "{}")]
        inputs: String,
        /// Attempts per step (default: the server's).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Deadline of each step call, e.g. 30s.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        #[arg(long)]
        deployment_id: Option<String>,
        #[arg(long)]
        triggered_by: Option<String>,
        /// Makes retrying this command safe: the same key and request give the same saga.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Watch it until it ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List sagas, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        deployment_id: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a saga with its ledger and resources.
    Show {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a saga: interrupt its step in flight and compensate.
    Cancel {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pause a saga between steps.
    Pause {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resume a paused saga.
    Resume {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Follow a saga's progress until it ends.
    Watch {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AllocatorArg {
    Pooling,
    OnDemand,
}

/// Sizes: 65536, 64KiB, 64MiB, 1GiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 64MiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB or GiB)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `PLUGIN=HOST[:PORT]`
fn parse_allow(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((plugin, host)) if !plugin.is_empty() && !host.is_empty() => {
            Ok((plugin.to_string(), host.to_string()))
        }
        _ => Err(format!("`{text}`: expected PLUGIN=HOST[:PORT]")),
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where the embedded database and the compile cache live.
    #[arg(long, env = "WASAGA_DATA_DIR", default_value = "./wasaga-data")]
    data_dir: PathBuf,
    /// sqlite://PATH or postgres://USER@HOST/DB (default: SQLite in the data directory).
    #[arg(long, env = "WASAGA_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// Address to listen on. Without a token, only a loopback address is allowed.
    #[arg(long, env = "WASAGA_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The admin bearer token (labelled `admin`).
    #[arg(
        long,
        env = "WASAGA_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// Read the admin token from this file (its first line).
    #[arg(long, env = "WASAGA_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// More tokens, one per line `ROLE LABEL SECRET` (role viewer, operator
    /// or admin; SECRET the token or sha256:<hex> of it; # comments).
    #[arg(long, env = "WASAGA_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Do not register the bundled echo and fail plugins on an empty database.
    #[arg(long)]
    no_examples: bool,
    /// Log format.
    #[arg(long, env = "WASAGA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Sagas driven at once by this host.
    #[arg(long, env = "WASAGA_CONCURRENCY", default_value_t = RunnerConfig::default().concurrency)]
    concurrency: usize,
    /// Plugin calls in flight at once (pool slots).
    #[arg(long, env = "WASAGA_MAX_INSTANCES", default_value_t = RuntimeConfig::default().max_instances)]
    max_instances: u32,
    /// Threads that run Wasm (0: share the server's threads).
    #[arg(long, env = "WASAGA_WASM_THREADS")]
    wasm_threads: Option<usize>,
    /// Instance allocation strategy.
    #[arg(long, env = "WASAGA_ALLOCATOR", value_enum, default_value = "pooling")]
    allocator: AllocatorArg,
    /// Default deadline of a step call (steps may set timeout_ms).
    #[arg(long, env = "WASAGA_STEP_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    step_timeout: Duration,
    /// Default memory limit of a step call.
    #[arg(long, env = "WASAGA_MAX_MEMORY", value_parser = parse_size, default_value = "64MiB")]
    max_memory: u64,
    /// The most memory a step may ask for.
    #[arg(long, env = "WASAGA_MAX_MEMORY_CEILING", value_parser = parse_size, default_value = "1GiB")]
    max_memory_ceiling: u64,
    /// Default size limit of a step's output.
    #[arg(long, env = "WASAGA_MAX_OUTPUT", value_parser = parse_size, default_value = "1MiB")]
    max_output: u64,
    /// Largest component accepted by uploads.
    #[arg(long, env = "WASAGA_MAX_COMPONENT_SIZE", value_parser = parse_size, default_value = "64MiB")]
    max_component_size: u64,
    /// The embedded database's largest size (SQLite); past it writes fail
    /// as on a full disk (507 storage_full). Default: the disk's size.
    #[arg(long, env = "WASAGA_MAX_DATABASE_SIZE", value_parser = parse_size)]
    max_database_size: Option<u64>,
    /// Largest JSON request body.
    #[arg(long, env = "WASAGA_MAX_JSON_BODY", value_parser = parse_size, default_value = "1MiB")]
    max_json_body: u64,
    /// Default attempts per step and phase.
    #[arg(long, env = "WASAGA_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// Meter fuel, and give each call this many units (off by default).
    #[arg(long, env = "WASAGA_FUEL")]
    fuel: Option<u64>,
    /// Delay before the first retry (doubles each retry, ±20 %).
    #[arg(long, env = "WASAGA_RETRY_BACKOFF", value_parser = humantime::parse_duration, default_value = "200ms")]
    retry_backoff: Duration,
    /// Longest delay between retries.
    #[arg(long, env = "WASAGA_RETRY_BACKOFF_MAX", value_parser = humantime::parse_duration, default_value = "30s")]
    retry_backoff_max: Duration,
    /// How long a saga's claim lasts without renewal.
    #[arg(long, env = "WASAGA_LEASE_TTL", value_parser = humantime::parse_duration, default_value = "15s")]
    lease_ttl: Duration,
    /// How often the database is polled for work when nothing wakes the host.
    #[arg(long, env = "WASAGA_POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    poll_interval: Duration,
    /// This host's identity in leases (default: random per process).
    #[arg(long, env = "WASAGA_NODE_ID")]
    node_id: Option<String>,
    /// Let a plugin make HTTP requests to a host: PLUGIN=HOST[:PORT]. Repeat.
    #[arg(long = "allow-http", env = "WASAGA_ALLOW_HTTP", value_delimiter = ',', value_parser = parse_allow)]
    allow_http: Vec<(String, String)>,
    /// Time for requests and steps in flight to finish at shutdown.
    #[arg(long, env = "WASAGA_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown_grace: Duration,
    /// Time a request may take before it is answered 503.
    #[arg(long, env = "WASAGA_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    request_timeout: Duration,
}

impl ServeArgs {
    fn options(&self) -> Result<ServeOptions, String> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.trim().to_string()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                Some(text.lines().next().unwrap_or_default().trim().to_string())
            }
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            return Err("the token is empty".into());
        }
        let mut tokens = match &token {
            Some(token) => Some(Tokens::admin(token).map_err(|e| e.to_string())?),
            None => None,
        };
        if let Some(path) = &self.tokens_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let all = tokens.get_or_insert_with(Tokens::default);
            all.add_file(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if all.is_empty() {
                return Err(format!("{} holds no token", path.display()));
            }
        }
        if self.max_memory > self.max_memory_ceiling {
            return Err(format!(
                "--max-memory ({}) is above --max-memory-ceiling ({})",
                self.max_memory, self.max_memory_ceiling
            ));
        }
        let mut http_allow: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (plugin, host) in &self.allow_http {
            http_allow
                .entry(plugin.clone())
                .or_default()
                .push(host.clone());
        }
        let defaults = RuntimeConfig::default();
        let runtime = RuntimeConfig {
            default_limits: StepLimits {
                timeout: self.step_timeout,
                max_memory_bytes: self.max_memory,
                fuel: self.fuel,
                max_output_bytes: self.max_output as usize,
                ..StepLimits::default()
            },
            max_memory_ceiling: self.max_memory_ceiling,
            max_instances: self.max_instances,
            wasm_threads: self.wasm_threads.unwrap_or(defaults.wasm_threads),
            allocator: match self.allocator {
                AllocatorArg::Pooling => Allocator::Pooling,
                AllocatorArg::OnDemand => Allocator::OnDemand,
            },
            fuel: self.fuel.is_some(),
            max_component_bytes: self.max_component_size as usize,
            http_allow,
            ..defaults
        };
        let runner = RunnerConfig {
            concurrency: self.concurrency,
            lease_ttl: self.lease_ttl,
            lease_renew_every: self.lease_ttl / 3,
            poll_every: self.poll_interval,
            retry: crate::config::RetryPolicy {
                max_attempts: self.max_attempts,
                initial_backoff: self.retry_backoff,
                max_backoff: self.retry_backoff_max,
                ..Default::default()
            },
            node_id: self.node_id.clone(),
            ..RunnerConfig::default()
        };
        let server = ServerConfig {
            tokens,
            max_json_bytes: self.max_json_body as usize,
            request_timeout: self.request_timeout,
            shutdown_grace: self.shutdown_grace,
        };
        Ok(ServeOptions {
            database_url: self.database.clone(),
            data_dir: self.data_dir.clone(),
            runtime,
            runner,
            server,
            store: crate::config::StoreConfig {
                max_database_bytes: self.max_database_size,
                ..crate::config::StoreConfig::default()
            },
            examples: !self.no_examples,
        })
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Serve(#[from] ServeError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Plugin(command) => plugin(command).await,
        Command::Saga(command) => saga(command).await,
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,wasmtime=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    init_logging(args.log_format);
    let options = args.options().map_err(CliError::Usage)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    // On stdout, for scripts (and tests) that ask for port 0.
    println!("wasaga listening on http://{}", listener.local_addr()?);
    server::run(options, listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves at SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

fn client(args: &ServerArgs) -> Client {
    Client::new(&args.server, args.token.clone())
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

async fn plugin(command: PluginCommand) -> Result<ExitCode, CliError> {
    match command {
        PluginCommand::Push { file, server } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::Usage(format!("reading {}: {e}", file.display())))?;
            let (info, created) = client(&server).push_plugin(bytes).await?;
            if server.json {
                print_json(&info);
            } else {
                let verb = if created { "uploaded" } else { "already there" };
                println!(
                    "{verb}: {} {} ({} bytes)",
                    info.plugin.name, info.plugin.digest, info.plugin.size
                );
            }
        }
        PluginCommand::List { server } => {
            let plugins = client(&server).plugins().await?;
            if server.json {
                print_json(&serde_json::json!({ "plugins": plugins }));
            } else {
                println!("{:<24} {:<20} {:>10}  CREATED", "NAME", "DIGEST", "SIZE");
                for p in plugins {
                    println!(
                        "{:<24} sha256:{:<13} {:>10}  {}",
                        p.name,
                        p.digest.short(),
                        p.size,
                        p.created_at
                    );
                }
            }
        }
        PluginCommand::Show { reference, server } => {
            let info = client(&server).plugin(&reference).await?;
            if server.json {
                print_json(&info);
            } else {
                println!(
                    "name:    {}\ndigest:  {}\nsize:    {} bytes\ncreated: {}",
                    info.name, info.digest, info.size, info.created_at
                );
            }
        }
        PluginCommand::Delete { digest, server } => {
            client(&server).delete_plugin(&digest).await?;
            if !server.json {
                println!("deleted {digest}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn saga(command: SagaCommand) -> Result<ExitCode, CliError> {
    match command {
        SagaCommand::Start {
            kind,
            steps,
            inputs,
            max_attempts,
            timeout,
            deployment_id,
            triggered_by,
            idempotency_key,
            wait,
            server,
        } => {
            let inputs: serde_json::Value = serde_json::from_str(&inputs)
                .map_err(|e| CliError::Usage(format!("--inputs is not JSON: {e}")))?;
            let steps: Vec<serde_json::Value> = steps
                .into_iter()
                .map(|plugin| {
                    if max_attempts.is_none() && timeout.is_none() {
                        serde_json::Value::String(plugin)
                    } else {
                        let mut step = serde_json::json!({ "plugin": plugin });
                        if let Some(n) = max_attempts {
                            step["max_attempts"] = n.into();
                        }
                        if let Some(t) = timeout {
                            step["timeout_ms"] = (t.as_millis() as u64).into();
                        }
                        step
                    }
                })
                .collect();
            let mut body = serde_json::json!({ "kind": kind, "steps": steps, "inputs": inputs });
            if let Some(d) = deployment_id {
                body["deployment_id"] = d.into();
            }
            if let Some(t) = triggered_by {
                body["triggered_by"] = t.into();
            }
            let client = client(&server);
            let (saga, created) = client.start_saga(&body, idempotency_key.as_deref()).await?;
            if server.json && !wait {
                print_json(&saga);
            } else if !server.json {
                let verb = if created {
                    "started"
                } else {
                    "already started"
                };
                println!(
                    "{verb} saga {} ({}, {} steps)",
                    saga.id,
                    saga.kind,
                    saga.plan.len()
                );
            }
            if wait {
                return watch(&client, &saga.id.to_string(), server.json).await;
            }
        }
        SagaCommand::List {
            status,
            kind,
            deployment_id,
            limit,
            server,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (key, value) in [
                ("status", status),
                ("kind", kind),
                ("deployment_id", deployment_id),
            ] {
                if let Some(value) = value {
                    query.push((key, value));
                }
            }
            let sagas = client(&server).sagas(&query).await?;
            if server.json {
                print_json(&sagas);
            } else {
                println!(
                    "{:<36}  {:<16} {:<13} {:>5}  CREATED",
                    "ID", "KIND", "STATUS", "STEP"
                );
                for s in sagas.sagas {
                    println!(
                        "{:<36}  {:<16} {:<13} {:>5}  {}",
                        s.id,
                        s.kind,
                        s.status,
                        format!(
                            "{}/{}",
                            s.current_step_index.min(s.steps_total),
                            s.steps_total
                        ),
                        s.created_at
                    );
                }
            }
        }
        SagaCommand::Show { id, server } => {
            let detail = client(&server).saga(&id).await?;
            if server.json {
                print_json(&detail);
            } else {
                print_saga(&detail);
            }
        }
        SagaCommand::Cancel { id, server } => {
            let saga = client(&server).saga_action(&id, "cancel").await?;
            if server.json {
                print_json(&saga);
            } else {
                println!(
                    "cancel requested for saga {} (status {})",
                    saga.id, saga.status
                );
            }
        }
        SagaCommand::Pause { id, server } => {
            let saga = client(&server).saga_action(&id, "pause").await?;
            if server.json {
                print_json(&saga);
            } else {
                println!(
                    "pause requested for saga {} (status {})",
                    saga.id, saga.status
                );
            }
        }
        SagaCommand::Resume { id, server } => {
            let saga = client(&server).saga_action(&id, "resume").await?;
            if server.json {
                print_json(&saga);
            } else {
                println!("resumed saga {} (status {})", saga.id, saga.status);
            }
        }
        SagaCommand::Watch { id, server } => {
            return watch(&client(&server), &id, server.json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_saga(d: &SagaDetail) {
    let s = &d.saga;
    println!("saga {}  kind {}  status {}", s.id, s.kind, s.status);
    if let Some(e) = &s.error {
        println!("error: {}", e.message);
    }
    for (i, spec) in s.plan.iter().enumerate() {
        let row = d.steps.iter().find(|r| r.index as usize == i);
        let status = row.map_or("not started".to_string(), |r| r.status.to_string());
        let attempts = row.map_or(String::new(), |r| {
            if r.compensate_attempts > 0 {
                format!(
                    " (attempts {}, compensations {})",
                    r.attempts, r.compensate_attempts
                )
            } else {
                format!(" (attempts {})", r.attempts)
            }
        });
        println!("  {i:>3}  {:<20} {status}{attempts}", spec.name);
        if let Some(error) = row.and_then(|r| r.error.as_deref()) {
            println!("       error: {error}");
        }
    }
    if !d.resources.is_empty() {
        println!("resources:");
        for r in &d.resources {
            println!(
                "  step {}  {} {}  {}",
                r.step_index, r.kind, r.external_id, r.spec
            );
        }
    }
    println!("context: {}", serde_json::Value::Object(s.context.clone()));
}

fn exit_for(status: SagaStatus) -> ExitCode {
    match status {
        SagaStatus::RolledBack => ExitCode::from(EXIT_ROLLED_BACK),
        SagaStatus::Failed => ExitCode::from(EXIT_FAILED),
        _ => ExitCode::SUCCESS,
    }
}

/// Polls the saga and prints each change until it ends.
async fn watch(client: &Client, id: &str, json: bool) -> Result<ExitCode, CliError> {
    let mut seen: BTreeMap<u32, (StepStatus, u32, u32)> = BTreeMap::new();
    let mut last_status: Option<SagaStatus> = None;
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        interval.tick().await;
        let detail = client.saga(id).await?;
        let saga: &SagaRun = &detail.saga;
        if !json {
            if last_status != Some(saga.status) {
                println!("saga {} {}", saga.id, saga.status);
                last_status = Some(saga.status);
            }
            for row in &detail.steps {
                let now = (row.status, row.attempts, row.compensate_attempts);
                if seen.get(&row.index) == Some(&now) {
                    continue;
                }
                seen.insert(row.index, now);
                let attempt = match row.status {
                    StepStatus::Compensating
                    | StepStatus::Compensated
                    | StepStatus::CompensationFailed => row.compensate_attempts,
                    _ => row.attempts,
                };
                let error = row
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                println!(
                    "  step {} {} {} (attempt {attempt}){error}",
                    row.index, row.name, row.status
                );
            }
        }
        if saga.status.is_final() {
            if json {
                print_json(&detail);
            } else if let Some(error) = &saga.error {
                println!("{}: {}", saga.status, error.message);
            } else {
                println!(
                    "{}: context {}",
                    saga.status,
                    serde_json::Value::Object(saga.context.clone())
                );
            }
            return Ok(exit_for(saga.status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MIB;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 * MIB));
        assert_eq!(parse_size("1GiB"), Ok(1024 * MIB));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
