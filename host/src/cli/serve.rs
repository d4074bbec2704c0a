//! `wasaga serve`: every flag of a host, with its environment variable and
//! its default from `config`, and the run from startup to a graceful
//! shutdown at SIGTERM or Ctrl-C.

use super::CliError;
use crate::api::Tokens;
use crate::config::{
    Allocator, Migrations, RunnerConfig, RuntimeConfig, ServerConfig, StepLimits, StoreConfig,
};
use crate::server::{self, ServeOptions};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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

/// Sizes: 65536, 64KiB, 64 MiB, 1GiB (KB, MB and GB are powers of ten).
fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("`{text}` is not a size like 64MiB: {e}"))
}

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Where the embedded database and the compile cache live.
    #[arg(long, env = "WASAGA_DATA_DIR", default_value = "./wasaga-data")]
    data_dir: PathBuf,
    /// sqlite://PATH or postgres://USER@HOST/DB (default: SQLite in the data directory).
    #[arg(long, env = "WASAGA_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// `apply`: migrate the database's schema at start; `require`: change
    /// nothing and refuse to start unless it is current (migrations run
    /// apart, by `wasaga migrate`).
    #[arg(long, env = "WASAGA_MIGRATIONS", default_value_t = StoreConfig::default().migrations)]
    migrations: Migrations,
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
    /// What one saga may store in all (its context, every step's output
    /// and logs); a step whose output would pass it fails, saying so.
    #[arg(long, env = "WASAGA_MAX_SAGA_STORED", value_parser = parse_size, default_value = "64MiB")]
    max_saga_stored: u64,
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
    /// A step's total wait by `poll-after` when the start request does not
    /// give its `max_wait_ms` (default one hour).
    #[arg(long, env = "WASAGA_MAX_WAIT", value_parser = humantime::parse_duration)]
    max_wait: Option<Duration>,
    /// The largest `max_wait_ms` a start request may give (default 7 days).
    #[arg(long, env = "WASAGA_MAX_WAIT_CEILING", value_parser = humantime::parse_duration)]
    max_wait_ceiling: Option<Duration>,
    /// Delete ended sagas (with their ledger) this long after they ended,
    /// e.g. 90d; at least 1h. Off by default; the resource ledger stays.
    #[arg(long, env = "WASAGA_RETENTION", value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// Scan the resource ledger for drift this often, e.g. 1h (each
    /// resource's plugin `observe`s it; one host per period). Off by
    /// default; at least 10s.
    #[arg(long, env = "WASAGA_DRIFT_SCAN_EVERY", value_parser = humantime::parse_duration)]
    drift_scan_every: Option<Duration>,
    /// This host's identity in leases (default: random per process).
    #[arg(long, env = "WASAGA_NODE_ID")]
    node_id: Option<String>,
    /// The key secrets are sealed with: a file of 64 hex characters (every
    /// host sharing a database uses the same one). Without it, secrets
    /// cannot be set.
    #[arg(long, env = "WASAGA_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Outbound HTTP requests one step call may make.
    #[arg(long, env = "WASAGA_MAX_HTTP_REQUESTS", default_value_t = RuntimeConfig::default().max_http_requests)]
    max_http_requests: usize,
    /// Largest response body one step call may read.
    #[arg(long, env = "WASAGA_MAX_HTTP_RESPONSE", value_parser = parse_size, default_value = "16MiB")]
    max_http_response: u64,
    /// Time for requests and steps in flight to finish at shutdown.
    #[arg(long, env = "WASAGA_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown_grace: Duration,
    /// Time a request may take before it is answered 503 (and a JSON body
    /// may take to arrive before 408; an upload ten times as long).
    #[arg(long, env = "WASAGA_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    request_timeout: Duration,
    /// A host name this server answers for besides IP addresses and
    /// localhost (repeat, or comma-separate in the variable). Without
    /// tokens no other name is answered (DNS rebinding).
    #[arg(
        long = "allowed-host",
        env = "WASAGA_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// The URL clients reach this server at: waits' callback URLs start
    /// with it (without it they are paths).
    #[arg(long, env = "WASAGA_PUBLIC_URL", value_parser = parse_public_url)]
    public_url: Option<String>,
    /// How long a posted message no wait took yet is kept for a wait that
    /// opens later.
    #[arg(long, env = "WASAGA_MESSAGE_TTL", value_parser = humantime::parse_duration, default_value = "1h")]
    message_ttl: Duration,
    /// How long a console login lasts.
    #[arg(long, env = "WASAGA_SESSION_TTL", value_parser = humantime::parse_duration, default_value = "12h")]
    session_ttl: Duration,
    /// Failed tokens and logins one address may make in a minute before
    /// it is refused (429) for the rest of it; 0: no limit.
    #[arg(long, env = "WASAGA_AUTH_FAILURES_PER_MINUTE", default_value_t = ServerConfig::default().auth_failures_per_minute)]
    auth_failures_per_minute: u32,
    /// An origin (`scheme://host[:port]`) webhooks may deliver to even at a
    /// loopback or private address (repeat, or comma-separate in the
    /// variable). Others must resolve to public addresses only.
    #[arg(
        long = "webhook-allow",
        env = "WASAGA_WEBHOOK_ALLOW",
        value_delimiter = ','
    )]
    webhook_allow: Vec<crate::model::Origin>,
    /// Send OpenTelemetry traces (one per saga, a span per call) over
    /// OTLP/HTTP to this collector, e.g. http://127.0.0.1:4318 (spans go to
    /// its /v1/traces); steps' outbound requests then carry `traceparent`.
    #[arg(long = "otlp-endpoint", env = "WASAGA_OTLP_ENDPOINT")]
    otlp_endpoint: Option<url::Url>,
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
        let runner_defaults = RunnerConfig::default();
        let max_wait = self.max_wait.unwrap_or(runner_defaults.default_max_wait);
        let max_wait_ceiling = self
            .max_wait_ceiling
            .unwrap_or(runner_defaults.max_wait_ceiling);
        if max_wait > max_wait_ceiling {
            return Err(format!(
                "--max-wait ({}) is above --max-wait-ceiling ({})",
                humantime::format_duration(max_wait),
                humantime::format_duration(max_wait_ceiling)
            ));
        }
        if let Some(retention) = self.retention {
            RunnerConfig::check_retention(retention)?;
        }
        if let Some(every) = self.drift_scan_every {
            RunnerConfig::check_drift_scan_every(every)?;
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
            max_http_requests: self.max_http_requests,
            max_http_response_bytes: self.max_http_response,
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
            default_max_wait: max_wait,
            max_wait_ceiling,
            retention: self.retention,
            drift_scan_every: self.drift_scan_every,
            max_saga_stored_bytes: self.max_saga_stored as usize,
            ..runner_defaults
        };
        let server = ServerConfig {
            tokens,
            max_json_bytes: self.max_json_body as usize,
            request_timeout: self.request_timeout,
            shutdown_grace: self.shutdown_grace,
            allowed_hosts: self.allowed_hosts.clone(),
            session_ttl: self.session_ttl,
            auth_failures_per_minute: self.auth_failures_per_minute,
            public_url: self.public_url.clone(),
            message_ttl: self.message_ttl,
            ..ServerConfig::default()
        };
        Ok(ServeOptions {
            database_url: self.database.clone(),
            data_dir: self.data_dir.clone(),
            runtime,
            runner,
            server,
            secrets_key_file: self.secrets_key_file.clone(),
            store: StoreConfig {
                max_database_bytes: self.max_database_size,
                migrations: self.migrations,
                ..StoreConfig::default()
            },
            examples: !self.no_examples,
            webhooks: crate::config::WebhookConfig {
                allow: self.webhook_allow.clone(),
                ..crate::config::WebhookConfig::default()
            },
            telemetry: crate::config::TelemetryConfig {
                otlp_endpoint: self.otlp_endpoint.clone(),
                ..crate::config::TelemetryConfig::default()
            },
        })
    }
}

/// Why a command failed.
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

pub(super) async fn run(args: ServeArgs) -> Result<ExitCode, CliError> {
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

/// `--public-url`: an `http(s)` URL with nothing after its path, kept
/// without a trailing `/`.
fn parse_public_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("an http or https URL with a host, e.g. https://wasaga.example.com".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("no query or fragment: callback URLs are this URL and a path".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    /// The `serve` command as clap sees it.
    fn serve_command() -> clap::Command {
        use clap::CommandFactory;
        crate::cli::Cli::command()
            .find_subcommand("serve")
            .expect("a serve command")
            .clone()
    }

    /// README's configuration table says what `serve --help` says: every
    /// flag is a row and every row a flag, with its environment variable
    /// and (where clap has one) its default.
    #[test]
    fn the_readme_configuration_table_matches_serve_help() {
        let readme = include_str!("../../../README.md");
        let table: Vec<&str> = readme
            .split("| flag | env | default | what |")
            .nth(1)
            .expect("README has the configuration table")
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .collect();
        let command = serve_command();
        let unquote = |cell: &str| -> Vec<String> {
            cell.split(" / ")
                .map(|part| part.trim().trim_matches('`').to_string())
                .filter(|part| !part.is_empty())
                .collect()
        };
        let mut documented = Vec::new();
        for row in &table {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a row of four cells: {row}");
            let flags = unquote(cells[0]);
            let envs = unquote(cells[1]);
            assert!(
                envs.is_empty() || envs.len() == flags.len(),
                "one variable per flag: {row}"
            );
            for (i, flag) in flags.iter().enumerate() {
                let long = flag.trim_start_matches("--");
                let arg = command
                    .get_arguments()
                    .find(|a| a.get_long() == Some(long))
                    .unwrap_or_else(|| panic!("README lists {flag}, which serve does not take"));
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                assert_eq!(env, envs.get(i).cloned(), "the variable of {flag}");
                let defaults = arg.get_default_values();
                let written = cells[2].split(" / ").nth(i).unwrap_or(cells[2]).trim();
                let literal = written.trim_matches('`');
                let is_literal = written.starts_with('`') || literal.parse::<u64>().is_ok();
                if let (Some(default), true) = (defaults.first(), is_literal) {
                    assert_eq!(
                        default.to_string_lossy(),
                        literal,
                        "the default of {flag} (README against clap)"
                    );
                }
                documented.push(long.to_string());
            }
        }
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || arg.is_hide_set() {
                continue;
            }
            assert!(
                documented.iter().any(|d| d == long),
                "serve takes --{long}, which README's configuration table does not list"
            );
        }
    }

    /// clap's defaults are the ones `config` holds: `serve` with no flags
    /// runs with `config`'s defaults.
    #[test]
    fn serve_without_flags_runs_with_the_config_defaults() {
        use clap::FromArgMatches;
        let matches = serve_command()
            .try_get_matches_from(["serve"])
            .expect("serve needs no flag");
        let args = ServeArgs::from_arg_matches(&matches).unwrap();
        let options = args.options().unwrap();
        let defaults = ServeOptions::new("./wasaga-data");
        assert_eq!(options.data_dir, defaults.data_dir);
        let debug = |v: &dyn std::fmt::Debug| format!("{v:?}");
        for (part, got, want) in [
            ("runner", debug(&options.runner), debug(&defaults.runner)),
            ("server", debug(&options.server), debug(&defaults.server)),
            ("store", debug(&options.store), debug(&defaults.store)),
            (
                "webhooks",
                debug(&options.webhooks),
                debug(&defaults.webhooks),
            ),
            (
                "telemetry",
                debug(&options.telemetry),
                debug(&defaults.telemetry),
            ),
            ("runtime", debug(&options.runtime), debug(&defaults.runtime)),
        ] {
            assert_eq!(got, want, "the {part} defaults (clap against config)");
        }
    }
}
