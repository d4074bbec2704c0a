//! Every tunable of the host and its default, in one place.
//!
//! The limits a plugin call runs under ([`StepLimits`]) are named after what
//! they bound, carry their defaults here and nowhere else, and can be lowered
//! or raised per step in a saga request, up to the ceilings of
//! [`RuntimeConfig`] (which size the engine's preallocated pools). The runner's
//! knobs ([`RunnerConfig`]) and the server's ([`ServerConfig`]) sit beside
//! them, so that `wasaga serve --help`, README's configuration reference and
//! the code agree.

use std::path::PathBuf;
use std::time::Duration;

/// 1 MiB.
pub const MIB: u64 = 1 << 20;

/// The limits one plugin call runs under. A breach fails the call with a
/// message naming the limit and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLimits {
    /// Wall-clock time for one call (`timeout_ms` per step). Default 30 s.
    pub timeout: Duration,
    /// Linear memory one instance may grow to. Default 64 MiB.
    pub max_memory_bytes: u64,
    /// Wasm instructions (fuel) one call may burn; `None` leaves only the
    /// deadline. Default `None`. Needs `RuntimeConfig::fuel` on.
    pub fuel: Option<u64>,
    /// Size of the JSON text `execute` may return. Default 1 MiB.
    pub max_output_bytes: usize,
    /// Log lines (host `log` plus stdout/stderr lines) kept per call; further
    /// lines are counted and dropped. Default 1,000.
    pub max_log_lines: usize,
    /// Bytes kept of one log line; longer lines are cut. Default 4 KiB.
    pub max_log_line_bytes: usize,
    /// Resources one call may record. Default 1,000.
    pub max_resources: usize,
    /// Bytes of one resource's spec JSON. Default 64 KiB.
    pub max_resource_spec_bytes: usize,
}

impl Default for StepLimits {
    fn default() -> Self {
        StepLimits {
            timeout: Duration::from_secs(30),
            max_memory_bytes: 64 * MIB,
            fuel: None,
            max_output_bytes: MIB as usize,
            max_log_lines: 1_000,
            max_log_line_bytes: 4 * 1024,
            max_resources: 1_000,
            max_resource_spec_bytes: 64 * 1024,
        }
    }
}

/// How the engine allocates instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Allocator {
    /// Preallocated slots for instances, memories, tables and stacks:
    /// instantiation is a few microseconds and memory is reused warm.
    #[default]
    Pooling,
    /// mmap per instance: no up-front reservation, slower instantiation.
    OnDemand,
}

/// The plugin runtime: engine settings and the ceilings per-step limits may
/// not pass.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Limits of a call when the step does not say otherwise.
    pub default_limits: StepLimits,
    /// The most memory any step may ask for (sizes each pooled memory slot's
    /// maximum). Default 1 GiB.
    pub max_memory_ceiling: u64,
    /// The longest deadline any step may ask for. Default 15 min.
    pub max_timeout_ceiling: Duration,
    /// Plugin calls in flight at once on this host (instances alive at once).
    /// Default 128.
    pub max_instances: u32,
    /// Threads that run Wasm, apart from the threads serving HTTP and the
    /// database. Default: the number of CPUs.
    pub wasm_threads: usize,
    /// Instance allocation strategy. Default pooling.
    pub allocator: Allocator,
    /// Turn on fuel metering, so that per-step `fuel` limits apply. Costs
    /// some speed in every call. Default off.
    pub fuel: bool,
    /// Maximum Wasm stack per call. Default 512 KiB.
    pub max_wasm_stack: usize,
    /// Where compiled plugins are cached. `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Largest component accepted. Default 64 MiB.
    pub max_component_bytes: usize,
    /// The largest `max_output_bytes` a step may ask for. Default 16 MiB.
    pub max_output_ceiling: usize,
    /// Components compiled at once (each may take hundreds of MiB while it
    /// compiles); further uploads wait their turn. Default: one per 2 GiB
    /// of memory, at least 1, at most the number of CPUs.
    pub max_concurrent_compiles: usize,
    /// Outbound HTTP requests one call may make. Default 32.
    pub max_http_requests: usize,
    /// Bytes of one response body a call may read. Default 16 MiB.
    pub max_http_response_bytes: u64,
    /// How steps' outbound connections are pooled.
    pub outbound: OutboundConfig,
}

/// Steps' outbound connections (`plugin::outbound`): pooled per plugin and
/// origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundConfig {
    /// Longest wait for a new connection (TCP and TLS), within the call's
    /// deadline. Default 10 s.
    pub connect_timeout: Duration,
    /// How long an idle connection is kept for the next request. Default
    /// 90 s (under the common 120 s of providers' load balancers, so a
    /// connection is rarely reused just as the far end closes it).
    pub idle_timeout: Duration,
    /// Idle connections kept per plugin and origin. Default 16.
    pub max_idle_per_origin: usize,
    /// How old this host's copy of the provider budgets (which origins
    /// they cover) may be; tokens and pauses are always read from the
    /// database. Default 1 s.
    pub budgets_refresh: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_origin: 16,
            budgets_refresh: Duration::from_secs(1),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            default_limits: StepLimits::default(),
            max_memory_ceiling: 1024 * MIB,
            max_timeout_ceiling: Duration::from_secs(15 * 60),
            max_instances: 128,
            wasm_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            allocator: Allocator::Pooling,
            fuel: false,
            max_wasm_stack: 512 * 1024,
            cache_dir: None,
            max_component_bytes: 64 * MIB as usize,
            max_output_ceiling: 16 * MIB as usize,
            max_concurrent_compiles: default_concurrent_compiles(),
            max_http_requests: 32,
            max_http_response_bytes: 16 * MIB,
            outbound: OutboundConfig::default(),
        }
    }
}

/// One compile per 2 GiB of physical memory (compiling an interpreter-based
/// component peaks at about 320 MiB, and the host needs room for its
/// instances too), between 1 and the number of CPUs.
fn default_concurrent_compiles() -> usize {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(4 << 30);
    ((memory / (2 << 30)) as usize).clamp(1, cpus)
}

/// Memory mappings one live instance costs with on-demand allocation
/// (linear memory and its guard, tables, the fiber stack and its guard):
/// about 7 measured, rounded up.
pub const MAPS_PER_ON_DEMAND_INSTANCE: u64 = 8;

/// The most instances this system can keep alive at once with on-demand
/// allocation: each costs `MAPS_PER_ON_DEMAND_INSTANCE` mappings, and a
/// process may hold `vm.max_map_count` (a fifth is kept for the rest of the
/// host). Past it an instantiation fails, and worse, a thread the runtime
/// starts may die at birth and take the tasks queued on it with it, so the
/// host refuses such a setting at start. `None` where the limit is unknown.
pub fn max_on_demand_instances() -> Option<u32> {
    let maps: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some((maps * 4 / 5 / MAPS_PER_ON_DEMAND_INSTANCE).min(u64::from(u32::MAX)) as u32)
}

impl RuntimeConfig {
    /// Refuses settings this system cannot honour, saying which and why.
    pub fn check_system_limits(&self) -> Result<(), String> {
        if self.allocator == Allocator::OnDemand
            && let Some(most) = max_on_demand_instances()
            && self.max_instances > most
        {
            return Err(format!(
                "--max-instances {} is more than this system can keep alive with on-demand allocation: \
                 each instance takes about {MAPS_PER_ON_DEMAND_INSTANCE} memory mappings and vm.max_map_count \
                 allows at most {most} instances; lower --max-instances or raise vm.max_map_count",
                self.max_instances
            ));
        }
        Ok(())
    }
}

/// Retry and backoff of failed step calls.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per step and phase, first call included (`max_attempts` per
    /// step). Default 3.
    pub max_attempts: u32,
    /// Delay before the first retry. Default 200 ms.
    pub initial_backoff: Duration,
    /// Growth of the delay per retry. Default 2.
    pub multiplier: f64,
    /// Largest delay. Default 30 s.
    pub max_backoff: Duration,
    /// Random spread, as a fraction of the delay (0.2 = ±20 %). Default 0.2.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

/// The saga runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Sagas driven at once by this host. Default 64.
    pub concurrency: usize,
    /// How long a claim lasts without renewal; another host (or this one,
    /// restarted with another identity) may take the saga after it. Default
    /// 15 s.
    pub lease_ttl: Duration,
    /// How often held leases are renewed. Default lease_ttl / 3.
    pub lease_renew_every: Duration,
    /// How long past its deadline a call may go without returning before
    /// the watchdog gives up its saga's lease (a thread stuck outside the
    /// call, where its own timeout cannot fire). Default 5 s.
    pub call_grace: Duration,
    /// How often the store is polled for work when no wake-up arrives.
    /// Default 1 s.
    pub poll_every: Duration,
    /// Retry of failed calls.
    pub retry: RetryPolicy,
    /// This host's identity in leases. Default: random per process.
    pub node_id: Option<String>,
    /// Log lines a step's ledger row keeps across all its calls (each call
    /// is bounded by `StepLimits::max_log_lines` too). Default 2,000.
    pub max_step_log_lines: usize,
    /// Size of a saga's context (the merged outputs, as JSON text); a step
    /// whose output would pass it fails for good. Default 16 MiB.
    pub max_context_bytes: usize,
    /// What one saga may store in all: its context, every step's output
    /// and log lines. A step whose output would pass it fails for good,
    /// saying so: a small request cannot make the ledger grow without
    /// end. Default 64 MiB.
    pub max_saga_stored_bytes: usize,
    /// The shortest `poll-after` honoured: a shorter one (0 included) waits
    /// this long, so a step cannot make the host spin. Default 10 ms.
    pub min_poll_interval: Duration,
    /// A step's total wait (`max_wait_ms`) when it does not say. Default
    /// one hour.
    pub default_max_wait: Duration,
    /// The longest `max_wait_ms` a step may ask for. Default 7 days.
    pub max_wait_ceiling: Duration,
    /// Ended sagas older than this (since they ended) are deleted with
    /// their ledger; the resource ledger keeps what they provisioned. Off
    /// (`None`) by default; at least [`MIN_RETENTION`].
    pub retention: Option<Duration>,
    /// How often the whole resource ledger is scanned for drift
    /// (`--drift-scan-every`; one host per period). Off (`None`) by
    /// default; at least [`MIN_DRIFT_SCAN_EVERY`].
    pub drift_scan_every: Option<Duration>,
    /// How often retention looks for sagas to delete. Default 1 minute.
    pub retention_every: Duration,
    /// Sagas deleted per transaction, so a sweep never holds the database
    /// long. Default 500.
    pub retention_batch: usize,
    /// Events a live-event subscriber may fall behind by before it is
    /// dropped (one buffer shared by every subscriber, so memory stays
    /// bounded whatever they do). Default 4,096.
    pub event_buffer: usize,
}

/// The shortest retention allowed: an ended saga must stay readable long
/// enough for whoever started or watches it to read its outcome, and for an
/// operator to look into a failure.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// The shortest and longest timeout a wait (docs/waits.md) may state: an
/// approval may take a month of holidays, not a year of neglect.
pub const WAIT_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(31 * 24 * 3600);

/// The shortest period of the periodic drift scan: each scan calls every
/// plugin's `observe` once per step that recorded resources.
pub const MIN_DRIFT_SCAN_EVERY: Duration = Duration::from_secs(10);

/// `observe` calls a drift scan keeps in flight at once: enough to hide a
/// provider's latency, few enough to leave the Wasm threads to sagas.
pub const DRIFT_SCAN_CALLS: usize = 8;

/// Most drifted resources a scan's answer lists (`GET
/// /v1/resources?drift=changed` lists them all).
pub const DRIFT_SCAN_REPORTED: usize = 100;

/// Most sagas one `POST /v1/sagas/redrive` redrives: a filter finding
/// more is refused, to be narrowed (docs/recovery.md).
pub const MAX_REDRIVE_BATCH: usize = 10_000;

/// How often a host looks for schedules due when none is due sooner
/// (docs/schedules.md): a schedule put or resumed on another host is
/// picked up within it.
pub const SCHEDULE_TICK: Duration = Duration::from_secs(1);

/// How long a host's claim of a fire holds without an outcome: past it,
/// another host (the first one died mid-fire) acts on the fire again.
pub const SCHEDULE_CLAIM_LEASE: Duration = Duration::from_secs(30);

/// Schedules one look acts on, soonest due first, and how many of them at
/// once.
pub const SCHEDULES_PER_TICK: usize = 256;
pub const SCHEDULE_FIRES_AT_ONCE: usize = 16;

/// Fires a schedule keeps on record (older ones are deleted as new ones
/// finish), and how many `GET /v1/schedules/{name}` shows.
pub const SCHEDULE_FIRES_KEPT: usize = 100;
pub const SCHEDULE_FIRES_SHOWN: usize = 20;

/// Nominal times `GET /v1/schedules/{name}` lists ahead (contract: 5).
pub const SCHEDULE_NEXT_RUNS: usize = 5;

/// A schedule's catch-up window when it names none, and the range one may
/// name: nominal times older than it when a host gets to them are recorded
/// as missed, not started.
pub const DEFAULT_CATCHUP_WINDOW: Duration = Duration::from_secs(3600);
pub const CATCHUP_WINDOW_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(366 * 24 * 3600);

/// How long a message no wait has taken yet is kept (`--message-ttl`).
pub const DEFAULT_MESSAGE_TTL: Duration = Duration::from_secs(3600);

impl RunnerConfig {
    /// Checks the drift scan's period, saying why one is refused.
    pub fn check_drift_scan_every(every: Duration) -> Result<(), String> {
        if every < MIN_DRIFT_SCAN_EVERY {
            return Err(format!(
                "--drift-scan-every ({}) is shorter than {}: each scan calls every observing \
                 plugin once per step that recorded resources",
                humantime::format_duration(every),
                humantime::format_duration(MIN_DRIFT_SCAN_EVERY)
            ));
        }
        Ok(())
    }

    /// Checks a retention period, saying why one is refused.
    pub fn check_retention(retention: Duration) -> Result<(), String> {
        if retention < MIN_RETENTION {
            return Err(format!(
                "--retention ({}) is shorter than {}: an ended saga must stay readable long enough \
                 for whoever started or watches it to read its outcome",
                humantime::format_duration(retention),
                humantime::format_duration(MIN_RETENTION)
            ));
        }
        Ok(())
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            concurrency: 64,
            lease_ttl: Duration::from_secs(15),
            lease_renew_every: Duration::from_secs(5),
            call_grace: Duration::from_secs(5),
            poll_every: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            node_id: None,
            max_step_log_lines: 2_000,
            max_context_bytes: 16 * MIB as usize,
            max_saga_stored_bytes: 64 * MIB as usize,
            min_poll_interval: Duration::from_millis(10),
            default_max_wait: Duration::from_secs(3600),
            max_wait_ceiling: Duration::from_secs(7 * 24 * 3600),
            retention: None,
            drift_scan_every: None,
            retention_every: Duration::from_secs(60),
            retention_batch: 500,
            event_buffer: 4096,
        }
    }
}

/// The bounds of a template's inputs schema, checked when it is put, and
/// of checking a start's inputs against it: a schema is code the host
/// runs on every start, so it may cost only so much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaLimits {
    /// Size of the schema as JSON text. Default 64 KiB.
    pub max_bytes: usize,
    /// Nesting of the schema's JSON. Default 32.
    pub max_depth: usize,
    /// Subschemas once every `$ref` is expanded in place (a chain of
    /// `anyOf`s through `$ref`s doubles at each link: this is what bounds
    /// it). Default 2,000.
    pub max_expanded: usize,
    /// Backtracking steps one `pattern` may take on one string before the
    /// string fails it. Default 10,000.
    pub regex_backtrack_limit: usize,
    /// Time to check one start's inputs, waiting for a checker included;
    /// past it the start is refused (422). Default 1 s.
    pub check_deadline: Duration,
    /// Checks run at once (each on a blocking thread, off the threads that
    /// serve requests). Default: the number of CPUs.
    pub concurrent_checks: usize,
    /// Compiled schemas kept (one per template version). Default 256.
    pub cached: usize,
}

impl Default for SchemaLimits {
    fn default() -> Self {
        SchemaLimits {
            max_bytes: 64 * 1024,
            max_depth: 32,
            max_expanded: 2_000,
            regex_backtrack_limit: 10_000,
            check_deadline: Duration::from_secs(1),
            concurrent_checks: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            cached: 256,
        }
    }
}

/// The store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The embedded (SQLite) database's largest size; past it a write fails
    /// as on a full disk: the API answers `507 storage_full`, `/healthz`
    /// reports degraded, nothing acknowledged is lost, and sagas go on as
    /// soon as a write succeeds again. `None`: as large as the disk allows.
    /// PostgreSQL has quotas of its own.
    pub max_database_bytes: Option<u64>,
    /// How long `/healthz` reports degraded after a write failed for want
    /// of space (small writes may still succeed on a nearly full disk).
    /// Default 30 s: a monitor that scrapes every 15 s sees it.
    pub degraded_for: Duration,
    /// What a host does with a schema behind its migrations at start.
    /// Default `Apply`: one host, or hosts whose starts may migrate
    /// (serialized on PostgreSQL by an advisory lock).
    pub migrations: Migrations,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_database_bytes: None,
            degraded_for: Duration::from_secs(30),
            migrations: Migrations::Apply,
        }
    }
}

/// Whether opening the store may change its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum Migrations {
    /// Apply the migrations this binary carries that the database lacks.
    Apply,
    /// Change nothing; refuse to start unless the schema is current (a
    /// deployment whose migrations run as a job of their own, before the
    /// hosts: `wasaga migrate`).
    Require,
}

/// Webhook deliveries (`crate::webhooks`).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Origins deliveries may reach at any address (loopback, private);
    /// every other endpoint must resolve to public addresses only
    /// (`--webhook-allow`). Default none.
    pub allow: Vec<crate::model::Origin>,
    /// The delay before each retry, the last repeating: 5 s, 5 min, 30 min,
    /// 2 h, 5 h, 10 h (the Standard Webhooks schedule).
    pub retry_delays: Vec<Duration>,
    /// How long a delivery is retried before it fails and its endpoint is
    /// disabled. Default 3 days.
    pub retry_window: Duration,
    /// One attempt's time limit, connection included. Default 15 s.
    pub request_timeout: Duration,
    /// How often a host looks for due deliveries besides being woken by
    /// its own commits. Default 1 s.
    pub poll_every: Duration,
    /// Deliveries one host sends at once. Default 16.
    pub concurrency: usize,
    /// How long delivered and failed deliveries are listed. Default 7 days.
    pub keep_finished: Duration,
    /// How long a secret replaced by a rotation still signs. Default 24 h.
    pub rotation_overlap: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow: Vec::new(),
            retry_delays: [5, 300, 1800, 7200, 18000, 36000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            retry_window: Duration::from_secs(3 * 24 * 3600),
            request_timeout: Duration::from_secs(15),
            poll_every: Duration::from_secs(1),
            concurrency: 16,
            keep_finished: Duration::from_secs(7 * 24 * 3600),
            rotation_overlap: Duration::from_secs(24 * 3600),
        }
    }
}

/// OpenTelemetry traces (`crate::telemetry`).
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`:
    /// spans go to `{base}/v1/traces`; a URL with a path other than `/` is
    /// used as it is). `None`: no spans are made and no `traceparent` is
    /// sent (`--otlp-endpoint`).
    pub otlp_endpoint: Option<url::Url>,
    /// How often finished spans are sent in a batch. Default 2 s.
    pub export_every: Duration,
    /// One export's time limit. Default 10 s.
    pub export_timeout: Duration,
    /// Finished spans waiting to be sent; beyond, new ones are dropped
    /// (the runner never waits for the collector). Default 8192.
    pub max_queued_spans: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            export_every: Duration::from_secs(2),
            export_timeout: Duration::from_secs(10),
            max_queued_spans: 8192,
        }
    }
}

impl WebhookConfig {
    /// A claimed delivery's lease: an attempt's limit twice over, so it
    /// runs out only for a host that stopped.
    pub fn lease(&self) -> Duration {
        self.request_timeout * 2 + Duration::from_secs(5)
    }

    /// The delay after attempt `attempts` failed.
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        let index = (attempts.max(1) as usize - 1).min(self.retry_delays.len().saturating_sub(1));
        self.retry_delays
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(5))
    }
}

/// SQLite's page size, which `StoreConfig::max_database_bytes` counts in.
pub const SQLITE_PAGE_BYTES: u64 = 4096;

/// The HTTP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The bearer tokens `/v1` requests must carry, with their roles.
    /// `None`: no authentication, allowed only on a loopback address.
    pub tokens: Option<crate::model::Tokens>,
    /// Largest JSON request body. Default 1 MiB.
    pub max_json_bytes: usize,
    /// Time a request may take before it is answered 503, and a JSON body
    /// may take to arrive before it is answered 408 (an upload's body gets
    /// ten times as long). Default 30 s.
    pub request_timeout: Duration,
    /// Grace period for steps in flight at shutdown. Default 10 s.
    pub shutdown_grace: Duration,
    /// Host names answered besides IP addresses and `localhost` (a server
    /// without tokens answers no other, against DNS rebinding; with tokens,
    /// when given, only these and addresses). Default none.
    pub allowed_hosts: Vec<String>,
    /// How long a console session lasts after its login. Default 12 h.
    pub session_ttl: Duration,
    /// The largest step output a saga read (`GET /v1/sagas/{id}`, the
    /// console's page, a stream's snapshot) includes; a larger one is left
    /// in the database, with its size and its own route. Default 64 KiB.
    pub shown_output_bytes: usize,
    /// Failed tokens and logins an address may make in a minute before it
    /// is refused (429) for the rest of that minute; 0 turns it off.
    /// Default 20.
    pub auth_failures_per_minute: u32,
    /// The URL clients reach this server at (`https://wasaga.example.com`):
    /// waits' `callback_url`s start with it. Without it they are paths.
    pub public_url: Option<String>,
    /// How long a message no wait took is kept for one that opens later.
    /// Default one hour.
    pub message_ttl: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tokens: None,
            max_json_bytes: MIB as usize,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            allowed_hosts: Vec::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            shown_output_bytes: 64 * 1024,
            auth_failures_per_minute: 20,
            public_url: None,
            message_ttl: DEFAULT_MESSAGE_TTL,
        }
    }
}
