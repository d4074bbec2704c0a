//! wasaga's end-to-end benchmarks. Each metric is reported as a median (and
//! p99 where it matters) beside a baseline measured in the same run, because
//! this machine is shared and absolute times drift between runs: the ratio
//! is what to compare.
//!
//! `cargo xtask bench` builds what is needed and runs this, writing
//! BENCHMARKS.md; `--quick` runs every benchmark briefly, to show they still
//! work (CI), and writes nowhere unless `--out` says so.
//!
//! - step overhead: instantiate from the `InstancePre`, `execute(echo)`,
//!   drop; pooling and on-demand allocation, and pooling with the thread
//!   idle before each call (as after a commit); baseline: the same echo
//!   step written natively, behind the same output handling.
//! - durable throughput on SQLite (`synchronous=FULL`): 1,000 sagas of 5
//!   echo steps at concurrency 1, 8 and 64, through the HTTP API, closed
//!   loop; baseline: the same number of single-row commits through sqlx,
//!   measured right before each level (at concurrency 1, in rounds between
//!   the sagas' rounds).
//! - live events: throughput with 10 `/v1/events` subscribers against
//!   none, and the host's CPU per event delivered to 100 (`events.rs`).
//! - end-to-end latency of a 3-step echo saga at low load, from the 201 to
//!   completion; baseline: the commits it needs, done bare.
//! - plugin load: cold compile vs cached load, for echo and the Python
//!   example; restart of a host with 20 plugins until all are ready.
//! - memory: RSS of `wasaga serve` idle and with 1,000 sagas in flight.
//! - several hosts on PostgreSQL: steps/s with 1, 2 and 3 `wasaga serve`.
//! - outbound HTTP: one GET from a step through the host's `wasi:http`
//!   (grant check, audit, limits, the host's connection pool); baseline:
//!   the same GET through reqwest, on a new connection and on a pooled
//!   one; and ten sequential GETs in one step, per request, against ten on
//!   reqwest's pooled connection.
//! - I/O-bound scale: 2,000 sagas at once whose one step waits 1 s on a
//!   local server; wall time and the server's peak RSS; baseline: one wait.
//! - durable waits: 10,000 sagas whose one step polls 5 times 1 s apart
//!   (`poll-after`); wall time, peak RSS and CPU seconds of the server;
//!   baseline: the same wait as a sleep inside the call.

mod events;

use anyhow::{Context, Result, bail};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wasaga::config::{Allocator, RuntimeConfig, StepLimits};
use wasaga::model::Digest;
use wasaga::plugin::{PluginHost, StepCall, parse_output};
use wasaga::server::{Host, ServeOptions};

/// The allocator the `wasaga` binary uses, so that the in-process host
/// measured here runs as the server does.
#[global_allocator]
static ALLOCATOR: wasaga::Allocator = wasaga::Allocator;

struct Args {
    quick: bool,
    out: Option<PathBuf>,
    wasaga_bin: Option<PathBuf>,
    only: Vec<String>,
    /// The child of the events benchmark: subscribe, count, report.
    subscribe: Option<(String, usize)>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        quick: false,
        out: None,
        wasaga_bin: None,
        only: Vec::new(),
        subscribe: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--subscribe" => {
                let url = it.next().context("--subscribe URL N")?;
                let n = it.next().context("--subscribe URL N")?.parse()?;
                args.subscribe = Some((url, n));
            }
            "--quick" => args.quick = true,
            "--out" => args.out = Some(it.next().context("--out PATH")?.into()),
            "--wasaga-bin" => {
                args.wasaga_bin = Some(it.next().context("--wasaga-bin PATH")?.into())
            }
            "--only" => args.only.push(it.next().context("--only NAME")?),
            other => bail!(
                "unknown argument {other}\nusage: wasaga-bench [--quick] [--out BENCHMARKS.md] [--wasaga-bin PATH] [--only NAME]..."
            ),
        }
    }
    Ok(args)
}

/// One line of the results table.
struct Row {
    section: &'static str,
    metric: String,
    value: String,
    baseline: String,
    ratio: String,
    target: String,
    /// What measures this row alone (after a release build).
    command: String,
}

struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    /// The command of the rows added next: see [`Report::measured_by`].
    command: String,
}

/// The bench binary, as README's build leaves it.
const BENCH: &str = "target/release/wasaga-bench";
/// What the sections that start `wasaga serve` processes are given.
const WITH_SERVER: &str = "--wasaga-bin target/release/wasaga";

impl Report {
    /// The rows added from now on are measured by `command`.
    fn measured_by(&mut self, command: String) {
        self.command = command;
    }

    fn add(
        &mut self,
        section: &'static str,
        metric: impl Into<String>,
        value: String,
        baseline: String,
        ratio: String,
        target: &str,
    ) {
        let row = Row {
            section,
            metric: metric.into(),
            value,
            baseline,
            ratio,
            target: target.to_string(),
            command: self.command.clone(),
        };
        println!(
            "{:<22} {:<58} {:>16}  baseline {:>16}  ratio {:>8}  {}",
            row.section, row.metric, row.value, row.baseline, row.ratio, row.target
        );
        self.rows.push(row);
    }
}

/// Percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn polyglot(file: &str) -> Result<Vec<u8>> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let path = target.join("polyglot").join(file);
    std::fs::read(&path)
        .with_context(|| format!("{}: run `cargo xtask polyglot` first", path.display()))
}

/// Resident set size of a process, from /proc.
fn rss_bytes(pid: &str) -> Option<u64> {
    proc_status_bytes(pid, "VmRSS:")
}

/// A size field (in kB) of /proc/PID/status, in bytes.
fn proc_status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn call(i: u32) -> StepCall {
    StepCall {
        saga_id: "0190c0de-0000-7000-8000-000000000000".into(),
        kind: "bench".into(),
        step_index: i % 5,
        attempt: 1,
        idempotency_key: format!("bench:{}:execute", i % 5),
        inputs: json!({"message": "hello"}).to_string(),
        context: "{}".into(),
        traceparent: None,
    }
}

/// The echo step written natively, with the host's output handling: what
/// a step costs without Wasm.
fn native_echo(call: StepCall, limits: &StepLimits) -> serde_json::Map<String, serde_json::Value> {
    let inputs: serde_json::Value = serde_json::from_str(&call.inputs).expect("inputs");
    let message = inputs
        .get("message")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let text = json!({ format!("echoed_at_step_{}", call.step_index): message }).to_string();
    parse_output(&text, limits.max_output_bytes).expect("an object")
}

async fn step_overhead(report: &mut Report, quick: bool) -> Result<()> {
    report.measured_by(format!("{BENCH} --only step"));
    let n = if quick { 2_000 } else { 20_000 };
    let echo = wasaga_tests::component("echo");
    let limits = StepLimits::default();
    let mut native = Vec::with_capacity(n);
    for i in 0..n + 1000 {
        let c = call(i as u32);
        let started = Instant::now();
        std::hint::black_box(native_echo(c, &limits));
        if i >= 1000 {
            native.push(started.elapsed());
        }
    }
    native.sort();
    let native_p50 = pct(&native, 0.5);
    // The last variant sleeps before each call, as a saga's driver does
    // while its commit's fsync runs: on a virtual machine an idle CPU comes
    // back with cold caches, which is what a step costs at concurrency 1.
    let after_fsync = Some(Duration::from_micros(200));
    for (label, allocator, threads, idle) in [
        ("pooling", Allocator::Pooling, 0, None),
        ("on-demand", Allocator::OnDemand, 0, None),
        ("pooling, via the Wasm threads", Allocator::Pooling, 2, None),
        (
            "pooling, each call after 200 µs idle",
            Allocator::Pooling,
            0,
            after_fsync,
        ),
    ] {
        let host = PluginHost::new(RuntimeConfig {
            allocator,
            wasm_threads: threads,
            max_instances: 16,
            ..RuntimeConfig::default()
        })?;
        let plugin = host.prepare(&echo).await?;
        let n = if idle.is_some() { n / 4 } else { n };
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 1000 {
            if let Some(idle) = idle {
                std::thread::sleep(idle);
            }
            let c = call(i as u32);
            let started = Instant::now();
            let out = host
                .execute(
                    &plugin,
                    c,
                    &limits,
                    CancellationToken::new(),
                    std::sync::Arc::default(),
                )
                .await;
            let elapsed = started.elapsed();
            out.result
                .map_err(|e| anyhow::anyhow!("echo failed: {e}"))?;
            if i >= 1000 {
                samples.push(elapsed);
            }
        }
        samples.sort();
        let p50 = pct(&samples, 0.5);
        let target = if label == "pooling" {
            "p50 ≤ 20 µs"
        } else {
            ""
        };
        report.add(
            "step overhead",
            format!("instantiate + execute(echo) + drop, {label}: p50"),
            us(p50),
            format!("{} native", us(native_p50)),
            format!("{:.1}×", p50.as_secs_f64() / native_p50.as_secs_f64()),
            target,
        );
        report.add(
            "step overhead",
            format!("instantiate + execute(echo) + drop, {label}: p99"),
            us(pct(&samples, 0.99)),
            format!("{} native", us(pct(&native, 0.99))),
            format!(
                "{:.1}×",
                pct(&samples, 0.99).as_secs_f64() / pct(&native, 0.99).as_secs_f64()
            ),
            "",
        );
    }
    Ok(())
}

/// Single-row commits through sqlx on SQLite with WAL and
/// `synchronous=FULL`, one after another: what the disk allows. One file
/// for its life, so that a floor taken in several parts sees the same WAL
/// as one taken at once (a fresh WAL grows with each commit, which costs
/// more than overwriting the one a checkpoint left).
struct SqliteFloor {
    conn: sqlx::SqliteConnection,
    rows: usize,
    _dir: tempfile::TempDir,
}

impl SqliteFloor {
    async fn open() -> Result<SqliteFloor> {
        use sqlx::Connection;
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        let dir = tempfile::tempdir()?;
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("floor.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&mut conn)
            .await?;
        Ok(SqliteFloor {
            conn,
            rows: 0,
            _dir: dir,
        })
    }

    /// The time `n` more single-row commits take.
    async fn commits(&mut self, n: usize) -> Result<Duration> {
        let started = Instant::now();
        for _ in 0..n {
            self.rows += 1;
            sqlx::query("INSERT INTO t (v) VALUES (?)")
                .bind(format!("row {}", self.rows))
                .execute(&mut self.conn)
                .await?;
        }
        Ok(started.elapsed())
    }
}

/// A host serving HTTP in this process, on `127.0.0.1:0`.
struct LocalHost {
    host: Host,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl LocalHost {
    async fn start(adjust: impl FnOnce(&mut ServeOptions)) -> Result<LocalHost> {
        let dir = tempfile::tempdir()?;
        let mut options = ServeOptions::new(dir.path());
        adjust(&mut options);
        let host = Host::start(&options).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let router = host.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(LocalHost {
            host,
            base,
            http: reqwest::Client::new(),
            _dir: dir,
        })
    }

    async fn start_saga(&self, steps: usize) -> Result<String> {
        let body =
            json!({"kind": "bench", "steps": vec!["echo"; steps], "inputs": {"message": "hello"}});
        let r = self
            .http
            .post(format!("{}/v1/sagas", self.base))
            .json(&body)
            .send()
            .await?;
        if r.status() != 201 {
            bail!("starting a saga: {}", r.status());
        }
        let saga: serde_json::Value = r.json().await?;
        Ok(saga["id"].as_str().context("an id")?.to_string())
    }
}

/// `total` sagas of `steps` echo steps run by `concurrency` clients, each
/// starting a saga over HTTP and waiting for it to end before starting the
/// next (a closed loop); returns the elapsed time and each saga's latency
/// (201 to end).
async fn closed_loop(
    host: &LocalHost,
    total: usize,
    steps: usize,
    concurrency: usize,
) -> Result<(Duration, Vec<Duration>)> {
    use std::sync::{Arc, Mutex};
    use tokio::sync::oneshot;
    type Status = wasaga::model::SagaStatus;
    #[derive(Default)]
    struct Ends {
        waiting: HashMap<String, oneshot::Sender<Status>>,
        /// Sagas that ended before their client registered.
        early: HashMap<String, Status>,
    }
    let ends = Arc::new(Mutex::new(Ends::default()));
    let mut events = host.host.runner.subscribe();
    let dispatcher = {
        let ends = ends.clone();
        tokio::spawn(async move {
            while let Ok(ended) = events.recv().await {
                let id = ended.id.to_string();
                let mut ends = ends.lock().unwrap();
                match ends.waiting.remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(ended.status);
                    }
                    None => {
                        ends.early.insert(id, ended.status);
                    }
                }
            }
        })
    };
    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(total));
    let begun = Instant::now();
    let clients = (0..concurrency.min(total)).map(|_| {
        let (ends, remaining) = (ends.clone(), remaining.clone());
        async move {
            let mut latencies = Vec::new();
            while remaining
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                let id = host.start_saga(steps).await?;
                let accepted = Instant::now();
                let (tx, rx) = oneshot::channel();
                let early = {
                    let mut ends = ends.lock().unwrap();
                    let early = ends.early.remove(&id);
                    if early.is_none() {
                        ends.waiting.insert(id.clone(), tx);
                    }
                    early
                };
                let status = match early {
                    Some(status) => status,
                    None => tokio::time::timeout(Duration::from_secs(120), rx)
                        .await
                        .context("a saga did not end for 2 minutes")??,
                };
                latencies.push(accepted.elapsed());
                anyhow::ensure!(status == Status::Completed, "saga {id} ended {status}");
            }
            Ok::<_, anyhow::Error>(latencies)
        }
    });
    let results = futures::future::join_all(clients).await;
    let elapsed = begun.elapsed();
    dispatcher.abort();
    let mut latencies = Vec::with_capacity(total);
    for r in results {
        latencies.extend(r?);
    }
    Ok((elapsed, latencies))
}

/// The levels a section measures: the comma-separated numbers in the
/// environment variable `var`, else `default`.
fn levels(var: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(var) {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{var}: numbers"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

async fn durable_throughput(report: &mut Report, quick: bool) -> Result<()> {
    let sagas = if quick { 100 } else { 1_000 };
    const STEPS: usize = 5;
    for concurrency in levels("WASAGA_BENCH_CONCURRENCY", &[1, 8, 64]) {
        report.measured_by(format!(
            "WASAGA_BENCH_CONCURRENCY={concurrency} {BENCH} --only throughput"
        ));
        // The floor in rounds between the sagas' rounds: the shared disk's
        // speed drifts by 15 % or more within minutes (and from one minute
        // to the next), so a floor taken once, before the sagas, would judge
        // them against another disk. One round where there is concurrency:
        // each round of a closed loop ends in a tail with fewer sagas in
        // flight, nothing at concurrency 1 and a good part of a short round
        // at 64 (whose target is a rate, not a ratio).
        let rounds = if concurrency == 1 { 5 } else { 1 };
        let mut floor_db = SqliteFloor::open().await?;
        let host = LocalHost::start(|o| {
            o.runner.concurrency = concurrency;
            o.runtime.max_instances = concurrency.max(16) as u32;
        })
        .await?;
        let (mut floor, mut elapsed, mut latencies) = (Duration::ZERO, Duration::ZERO, Vec::new());
        for round in 0..rounds {
            let share = sagas * (round + 1) / rounds - sagas * round / rounds;
            floor += floor_db.commits(share * STEPS).await?;
            let (took, round_latencies) = closed_loop(&host, share, STEPS, concurrency).await?;
            elapsed += took;
            latencies.extend(round_latencies);
        }
        let floor_rate = (sagas * STEPS) as f64 / floor.as_secs_f64();
        report.notes.push(format!(
            "SQLite floor at concurrency {concurrency}: {} single-row commits through sqlx (WAL, synchronous=FULL), in {rounds} round(s) before the sagas' rounds, took {:.2} s: {:.0} commits/s, {:.0} µs per commit.",
            sagas * STEPS,
            floor.as_secs_f64(),
            floor_rate,
            1e6 / floor_rate
        ));
        latencies.sort();
        let rate = (sagas * STEPS) as f64 / elapsed.as_secs_f64();
        let target = match concurrency {
            1 => "≥ 60 % of the floor",
            64 => "≥ 10,000 steps/s",
            _ => "",
        };
        report.add(
            "durable throughput",
            format!("{sagas} sagas × {STEPS} echo steps, SQLite, concurrency {concurrency}"),
            format!("{rate:.0} steps/s"),
            format!("{floor_rate:.0} commits/s"),
            format!("{:.0} %", 100.0 * rate / floor_rate),
            target,
        );
        report.add(
            "durable throughput",
            format!("saga latency at concurrency {concurrency}: p50 / p99"),
            format!(
                "{} / {}",
                ms(pct(&latencies, 0.5)),
                ms(pct(&latencies, 0.99))
            ),
            String::new(),
            String::new(),
            "",
        );
        host.host.shutdown().await;
    }
    Ok(())
}

async fn low_load_latency(report: &mut Report, quick: bool) -> Result<()> {
    report.measured_by(format!("{BENCH} --only latency"));
    let n = if quick { 40 } else { 300 };
    let host = LocalHost::start(|_| {}).await?;
    let (_, mut latencies) = closed_loop(&host, n, 3, 1).await?;
    latencies.sort();
    host.host.shutdown().await;
    // The same work's durable writes, bare: a 3-step saga commits 4 times
    // (accept and start, then one per step).
    let floor = SqliteFloor::open().await?.commits(400).await? / 100;
    let p50 = pct(&latencies, 0.5);
    report.add(
        "latency",
        "3-step echo saga at low load, 201 to completed: p50",
        ms(p50),
        format!("{} (4 bare commits)", ms(floor)),
        format!("{:.1}×", p50.as_secs_f64() / floor.as_secs_f64()),
        "p50 ≤ 2 ms",
    );
    report.add(
        "latency",
        "3-step echo saga at low load, 201 to completed: p99",
        ms(pct(&latencies, 0.99)),
        String::new(),
        String::new(),
        "",
    );
    Ok(())
}

async fn median_load(
    bytes: &[u8],
    name: &str,
    cache: Option<&Path>,
    runs: usize,
) -> Result<Duration> {
    let digest = Digest::of(bytes);
    let mut times = Vec::new();
    for _ in 0..runs {
        let host = PluginHost::new(RuntimeConfig {
            cache_dir: cache.map(Path::to_path_buf),
            max_instances: 4,
            ..RuntimeConfig::default()
        })?;
        let started = Instant::now();
        let plugin = host.load(&digest, bytes, Some(name)).await?;
        times.push(started.elapsed());
        let from_cache = plugin.loaded_from == wasaga::plugin::LoadedFrom::Cache;
        if from_cache != cache.is_some() {
            bail!(
                "{name}: expected cache={} but loaded_from={:?}",
                cache.is_some(),
                plugin.loaded_from
            );
        }
    }
    times.sort();
    Ok(pct(&times, 0.5))
}

async fn plugin_load(report: &mut Report, quick: bool) -> Result<()> {
    report.measured_by(format!("{BENCH} --only load"));
    let python = polyglot("python-echo.wasm")?;
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "echo (Rust, 70 KB)",
            wasaga_tests::component("echo"),
            if quick { 5 } else { 21 },
        ),
        ("py-echo (Python, 18 MB)", python, if quick { 1 } else { 3 }),
    ];
    for (label, bytes, runs) in cases {
        let cache = tempfile::tempdir()?;
        let name = if label.starts_with("echo") {
            "echo"
        } else {
            "py-echo"
        };
        let cold = median_load(&bytes, name, None, runs).await?;
        // Fill the cache once, then load from it.
        {
            let host = PluginHost::new(RuntimeConfig {
                cache_dir: Some(cache.path().to_path_buf()),
                max_instances: 4,
                ..RuntimeConfig::default()
            })?;
            host.load(&Digest::of(&bytes), &bytes, Some(name)).await?;
        }
        let cached = median_load(&bytes, name, Some(cache.path()), runs.max(5)).await?;
        report.add(
            "plugin load",
            format!("{label}: cached load"),
            ms(cached),
            format!("{} cold compile", ms(cold)),
            format!("{:.0}× faster", cold.as_secs_f64() / cached.as_secs_f64()),
            "≥ 20× faster",
        );
    }

    // A host with 20 plugins restarts until every plugin is ready.
    let dir = tempfile::tempdir()?;
    let options = {
        let mut o = ServeOptions::new(dir.path());
        o.examples = false;
        o
    };
    {
        let host = Host::start(&options).await?;
        let mut components: Vec<Vec<u8>> = [
            "echo", "fail", "flaky", "spin", "hog", "recurse", "bloat", "panic", "ledger",
            "stubborn", "counter",
        ]
        .iter()
        .map(|n| wasaga_tests::component(n))
        .collect();
        components.push(polyglot("python-echo.wasm")?);
        components.push(polyglot("js-echo.wasm")?);
        let echo = wasaga_tests::component("echo");
        components.extend((0..7).map(|i| wasaga_tests::variant(&echo, i, 0)));
        for bytes in &components {
            let plugin = host.plugins.prepare(bytes).await?;
            let info = wasaga::model::PluginInfo {
                digest: plugin.digest.clone(),
                name: plugin.name.clone(),
                size: bytes.len() as u64,
                created_at: wasaga::model::Timestamp::now(),
                current: true,
                contract: plugin.contract.as_str().to_string(),
            };
            host.store.put_plugin(&info, bytes).await?;
        }
        host.shutdown().await;
    }
    let runs = if quick { 1 } else { 3 };
    let restart = |clear_cache: bool| {
        let options = options.clone();
        let dir = dir.path().to_path_buf();
        async move {
            let mut times = Vec::new();
            for _ in 0..runs {
                if clear_cache {
                    let _ = std::fs::remove_dir_all(dir.join("cache"));
                }
                let started = Instant::now();
                let host = Host::start(&options).await?;
                let ready = host.warm_plugins().await;
                times.push(started.elapsed());
                if ready != 20 {
                    bail!("{ready} of 20 plugins ready");
                }
                host.shutdown().await;
            }
            times.sort();
            Ok::<_, anyhow::Error>(pct(&times, 0.5))
        }
    };
    let cold = restart(true).await?;
    let warm = restart(false).await?;
    report.add(
        "plugin load",
        "restart with 20 plugins (11 Rust, Python, JS, 7 variants) until all ready",
        ms(warm),
        format!("{} with no cache", ms(cold)),
        format!("{:.0}× faster", cold.as_secs_f64() / warm.as_secs_f64()),
        "",
    );
    Ok(())
}

/// `wasaga serve` as a child process; its RSS idle and with 1,000 sagas in
/// flight.
async fn memory(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
    report.measured_by(format!("{BENCH} --only memory {WITH_SERVER}"));
    let dir = tempfile::tempdir()?;
    let mut server = wasaga_tests::ServerProcess::start(
        bin.to_str().context("a UTF-8 path")?,
        &["--data-dir".into(), dir.path().display().to_string()],
        dir.path().join("serve.log"),
    )
    .await?;
    let pid = server.child.id().to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_bytes(&pid).context("reading the server's RSS")?;
    let baseline = rss_bytes("self").unwrap_or(0);
    let sagas = if quick { 200 } else { 1_000 };
    let http = reqwest::Client::new();
    let body = json!({"kind": "bench", "steps": vec!["echo"; 5], "inputs": {"message": "hello"}});
    let sample = |peak: &mut u64| {
        if let Some(rss) = rss_bytes(&pid) {
            *peak = (*peak).max(rss);
        }
    };
    let mut peak = idle;
    for _ in 0..sagas {
        let r = http
            .post(format!("{}/v1/sagas", server.base))
            .json(&body)
            .send()
            .await?;
        if r.status() != 201 {
            bail!("starting a saga: {}", r.status());
        }
        sample(&mut peak);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        sample(&mut peak);
        let done: serde_json::Value = http
            .get(format!(
                "{}/v1/sagas?status=completed&limit=1000",
                server.base
            ))
            .send()
            .await?
            .json()
            .await?;
        if done["sagas"].as_array().map_or(0, Vec::len) >= sagas {
            break;
        }
        if Instant::now() > deadline {
            bail!("the sagas did not finish");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.terminate();
    report.add(
        "memory",
        "RSS of wasaga serve, idle",
        mib(idle),
        format!("{} (this bench process)", mib(baseline)),
        format!("{:.1}×", idle as f64 / baseline.max(1) as f64),
        "≤ 150 MiB",
    );
    report.add(
        "memory",
        format!("RSS of wasaga serve, peak with {sagas} sagas in flight"),
        mib(peak),
        mib(idle) + " idle",
        format!("{:.1}×", peak as f64 / idle as f64),
        "≤ 150 MiB",
    );
    Ok(())
}

/// Single-row commits to PostgreSQL through sqlx, one after another.
async fn postgres_commit_floor(url: &str, n: usize) -> Result<Duration> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url.split('?').next().unwrap_or(url)).await?;
    sqlx::query("CREATE TABLE floor (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
        .execute(&mut conn)
        .await?;
    let started = Instant::now();
    for i in 0..n {
        sqlx::query("INSERT INTO floor (v) VALUES ($1)")
            .bind(format!("row {i}"))
            .execute(&mut conn)
            .await?;
    }
    Ok(started.elapsed())
}

/// Waits until the server log at `path` holds a line containing `needle`.
async fn wait_for_log_line(path: &Path, needle: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if std::fs::read_to_string(path)?.contains(needle) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} has no {needle:?} after {within:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 1, 2 and 3 `wasaga serve` on one PostgreSQL: a burst of sagas spread
/// over the hosts' APIs, until all are completed.
async fn several_hosts(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
    let sagas = if quick { 100 } else { 3_000 };
    const STEPS: usize = 5;
    let floor_db = wasaga_tests::TestDb::new(wasaga_tests::Backend::Postgres).await;
    let floor = postgres_commit_floor(&floor_db.url, sagas * STEPS).await?;
    let floor_rate = (sagas * STEPS) as f64 / floor.as_secs_f64();
    report.notes.push(format!(
        "PostgreSQL floor: {} single-row commits through sqlx took {:.2} s: {:.0} commits/s.",
        sagas * STEPS,
        floor.as_secs_f64(),
        floor_rate
    ));
    report.notes.push(
        "Several hosts: the clock starts once every host has compiled its bundled plugins; \
         the sagas are posted round-robin to the hosts' APIs, 32 at a time, each host at concurrency 64."
            .into(),
    );
    let bin = bin.to_str().context("a UTF-8 path")?;
    for hosts in levels("WASAGA_BENCH_HOSTS", &[1, 2, 3]) {
        report.measured_by(format!(
            "WASAGA_BENCH_HOSTS={hosts} {BENCH} --only hosts {WITH_SERVER}"
        ));
        let db = wasaga_tests::TestDb::new(wasaga_tests::Backend::Postgres).await;
        let url = db.url.replace("max_connections=6", "max_connections=16");
        let mut servers = Vec::new();
        for i in 0..hosts {
            let dir = db.dir.path().join(format!("host-{i}"));
            std::fs::create_dir_all(&dir)?;
            let args: Vec<String> = [
                "--database",
                &url,
                "--data-dir",
                &dir.display().to_string(),
                "--node-id",
                &format!("host-{i}"),
                "--concurrency",
                "64",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            servers
                .push(wasaga_tests::ServerProcess::start(bin, &args, dir.join("serve.log")).await?);
        }
        // Measure the hosts at work, not compiling their bundled plugins.
        for server in &servers {
            wait_for_log_line(&server.log, "plugins warm", Duration::from_secs(120)).await?;
        }
        let http = reqwest::Client::new();
        let body =
            json!({"kind": "bench", "steps": vec!["echo"; STEPS], "inputs": {"message": "hello"}});
        let started = Instant::now();
        let posts = futures::stream::iter(0..sagas).map(|i| {
            let url = format!("{}/v1/sagas", servers[i % hosts].base);
            let (http, body) = (http.clone(), body.clone());
            async move {
                let r = http.post(url).json(&body).send().await?;
                anyhow::ensure!(r.status() == 201, "starting a saga: {}", r.status());
                Ok::<_, anyhow::Error>(())
            }
        });
        use futures::StreamExt;
        let results: Vec<Result<()>> = posts.buffer_unordered(32).collect().await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        let mut conn =
            <sqlx::PgConnection as sqlx::Connection>::connect(url.split('?').next().unwrap())
                .await?;
        loop {
            let done: i64 =
                sqlx::query_scalar("SELECT count(*) FROM saga_runs WHERE status = 'completed'")
                    .fetch_one(&mut conn)
                    .await?;
            if done as usize >= sagas {
                break;
            }
            let failed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM saga_runs WHERE status IN ('rolled_back', 'failed')",
            )
            .fetch_one(&mut conn)
            .await?;
            anyhow::ensure!(failed == 0, "{failed} sagas did not complete");
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the sagas did not finish"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        for server in &mut servers {
            server.terminate();
        }
        let rate = (sagas * STEPS) as f64 / elapsed.as_secs_f64();
        report.add(
            "several hosts",
            format!(
                "{sagas} sagas × {STEPS} echo steps, PostgreSQL, {hosts} host{}",
                if hosts == 1 { "" } else { "s" }
            ),
            format!("{rate:.0} steps/s"),
            format!("{floor_rate:.0} commits/s"),
            format!("{:.0} %", 100.0 * rate / floor_rate),
            if hosts == 2 { "≥ 5,000 steps/s" } else { "" },
        );
    }
    Ok(())
}

/// One outbound GET from a step, through the host's `wasi:http` (grant
/// check, audit line, body limit), against the same GET made natively with
/// reqwest: on a fresh connection each time (as the host makes one per
/// request) and on a pooled one.
async fn outbound_http(report: &mut Report, quick: bool) -> Result<()> {
    report.measured_by(format!("{BENCH} --only http"));
    let n = if quick { 300 } else { 3_000 };
    let cloud = wasaga_tests::Cloud::start("bench-token").await;
    let url = format!("{}/v2/bytes?n=64", cloud.origin());
    let host = PluginHost::new(RuntimeConfig::default())?;
    let fetch = host.prepare(&wasaga_tests::component("fetch")).await?;
    let access = std::sync::Arc::new(wasaga::grants::Access {
        http: vec![cloud.origin().parse()?],
        ..Default::default()
    });
    let limits = StepLimits::default();
    let step = |requests: serde_json::Value| {
        let (host, fetch, access, limits) = (&host, &fetch, access.clone(), &limits);
        async move {
            let c = StepCall {
                inputs: json!({ "requests": requests }).to_string(),
                ..call(0)
            };
            let started = Instant::now();
            let out = host
                .execute(fetch, c, limits, CancellationToken::new(), access)
                .await;
            let elapsed = started.elapsed();
            let out = out
                .result
                .map_err(|e| anyhow::anyhow!("fetch failed: {e}"))?;
            let wasaga::plugin::Progress::Done(output) = out else {
                bail!("fetch did not finish");
            };
            let answered = output["responses"].as_array().context("responses")?;
            anyhow::ensure!(
                answered.iter().all(|r| r["status"] == 200),
                "the GET failed: {output:?}"
            );
            Ok::<_, anyhow::Error>(elapsed)
        }
    };
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let pooled = reqwest::Client::new();
    let native = |client: &reqwest::Client| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let started = Instant::now();
            let body = client
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let elapsed = started.elapsed();
            anyhow::ensure!(body.len() == 64, "a 64-byte body");
            Ok::<_, anyhow::Error>(elapsed)
        }
    };
    // Interleaved, so that each kind sees the same machine.
    let (mut with_get, mut without, mut on_fresh, mut on_pooled) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut with_ten, mut ten_pooled) = (Vec::new(), Vec::new());
    let get = json!([{ "url": url }]);
    let ten = json!(vec![json!({ "url": url }); 10]);
    for i in 0..n + 100 {
        let a = step(get.clone()).await?;
        let b = step(json!([])).await?;
        let c = native(&fresh).await?;
        let d = native(&pooled).await?;
        let e = step(ten.clone()).await?;
        let mut f = Duration::ZERO;
        for _ in 0..10 {
            f += native(&pooled).await?;
        }
        if i >= 100 {
            with_get.push(a);
            without.push(b);
            on_fresh.push(c);
            on_pooled.push(d);
            with_ten.push(e);
            ten_pooled.push(f);
        }
    }
    for samples in [
        &mut with_get,
        &mut without,
        &mut on_fresh,
        &mut on_pooled,
        &mut with_ten,
        &mut ten_pooled,
    ] {
        samples.sort();
    }
    // Ten sequential GETs in one step, per request: the step's time less
    // the same step making none, over ten; against ten GETs on reqwest's
    // pooled connection, over ten.
    let per_request = (pct(&with_ten, 0.5).saturating_sub(pct(&without, 0.5))) / 10;
    let pooled_per_request = pct(&ten_pooled, 0.5) / 10;
    report.add(
        "outbound HTTP",
        "a step making 10 sequential GETs to one origin: per request, p50",
        us(per_request),
        format!("{} reqwest, pooled", us(pooled_per_request)),
        format!(
            "{:+.0} µs",
            (per_request.as_secs_f64() - pooled_per_request.as_secs_f64()) * 1e6
        ),
        "≤ +100 µs",
    );
    let (step_p50, bare_p50) = (pct(&with_get, 0.5), pct(&without, 0.5));
    let (fresh_p50, pooled_p50) = (pct(&on_fresh, 0.5), pct(&on_pooled, 0.5));
    let added = |base: Duration| {
        format!(
            "{:+.0} µs",
            (step_p50.as_secs_f64() - base.as_secs_f64()) * 1e6
        )
    };
    report.add(
        "outbound HTTP",
        "a step making one GET (64-byte body) to a local server: p50",
        us(step_p50),
        format!("{} reqwest, new connection", us(fresh_p50)),
        added(fresh_p50),
        "≤ +300 µs",
    );
    report.add(
        "outbound HTTP",
        "the same step making one GET: p50, against a pooled connection",
        us(step_p50),
        format!("{} reqwest, pooled", us(pooled_p50)),
        added(pooled_p50),
        "",
    );
    report.add(
        "outbound HTTP",
        "the same step making no request: p50",
        us(bare_p50),
        format!("{} with the GET", us(step_p50)),
        format!(
            "GET adds {:.0} µs",
            (step_p50.as_secs_f64() - bare_p50.as_secs_f64()) * 1e6
        ),
        "",
    );
    report.add(
        "outbound HTTP",
        "a step making one GET: p99",
        us(pct(&with_get, 0.99)),
        format!("{} reqwest, new connection", us(pct(&on_fresh, 0.99))),
        format!(
            "{:+.0} µs",
            (pct(&with_get, 0.99).as_secs_f64() - pct(&on_fresh, 0.99).as_secs_f64()) * 1e6
        ),
        "",
    );
    Ok(())
}

/// Peak resident set size of a process (`VmHWM`), from /proc.
fn peak_rss_bytes(pid: &str) -> Option<u64> {
    proc_status_bytes(pid, "VmHWM:")
}

/// The flags README recommends for steps that mostly wait on other
/// services: drive every saga at once, and allocate instances on demand
/// (a pool would reserve a slot sized for the memory ceiling per instance).
const IO_FLAGS: &str = "--concurrency 2000 --max-instances 2000 --allocator on-demand";

/// A `wasaga serve` process on SQLite in a temporary directory, driven
/// over HTTP, for the sections that measure the server as users run it.
struct ServedHost {
    server: wasaga_tests::ServerProcess,
    pid: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl ServedHost {
    async fn start(bin: &Path, flags: &str) -> Result<ServedHost> {
        let dir = tempfile::tempdir()?;
        let mut args = vec!["--data-dir".to_string(), dir.path().display().to_string()];
        args.extend(flags.split_whitespace().map(str::to_string));
        let server = wasaga_tests::ServerProcess::start(
            bin.to_str().context("a UTF-8 path")?,
            &args,
            dir.path().join("serve.log"),
        )
        .await?;
        let pid = server.child.id().to_string();
        Ok(ServedHost {
            server,
            pid,
            dir,
            http: reqwest::Client::new(),
        })
    }

    /// Uploads a bundled plugin and grants it `origins`.
    async fn install(&self, plugin: &str, origins: &[String]) -> Result<()> {
        let base = &self.server.base;
        let r = self
            .http
            .post(format!("{base}/v1/plugins"))
            .body(wasaga_tests::component(plugin))
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "uploading {plugin}: {}",
            r.status()
        );
        if !origins.is_empty() {
            let r = self
                .http
                .put(format!("{base}/v1/plugins/{plugin}/grants"))
                .json(&json!({ "http": origins }))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "granting {plugin}: {}", r.status());
        }
        Ok(())
    }

    /// Starts `n` sagas, 256 requests at a time, the body of each made
    /// just before it is posted.
    async fn start_sagas(&self, n: usize, body: impl Fn() -> serde_json::Value) -> Result<()> {
        use futures::StreamExt;
        let url = format!("{}/v1/sagas", self.server.base);
        let posts = futures::stream::iter(0..n).map(|_| {
            let request = self.http.post(&url).json(&body());
            async move {
                let r = request.send().await?;
                anyhow::ensure!(r.status() == 201, "starting a saga: {}", r.status());
                Ok::<_, anyhow::Error>(())
            }
        });
        let results: Vec<Result<()>> = posts.buffer_unordered(256).collect().await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    /// Waits until every saga has ended, checks that all `n` completed,
    /// and returns the time from the first one's creation to the last one's
    /// completion, as the database records them, and the total polls.
    async fn wait_completed(&self, n: usize) -> Result<(Duration, i64)> {
        let db = self.dir.path().join("wasaga.db");
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
            "sqlite://{}?mode=ro",
            db.display()
        ))
        .await?;
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            let (done, unfinished, first, last): (i64, i64, Option<i64>, Option<i64>) =
                sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE status = 'completed'), \
                            count(*) FILTER (WHERE status NOT IN ('completed', 'rolled_back', 'failed')), \
                            min(created_at), max(updated_at) FROM saga_runs",
                )
                .fetch_one(&mut conn)
                .await?;
            if unfinished == 0 {
                anyhow::ensure!(
                    done as usize == n,
                    "{} of {n} sagas did not complete",
                    n as i64 - done
                );
                let (polls,): (i64,) =
                    sqlx::query_as("SELECT coalesce(sum(polls), 0) FROM saga_step_results")
                        .fetch_one(&mut conn)
                        .await?;
                let wall =
                    Duration::from_millis((last.unwrap_or(0) - first.unwrap_or(0)).max(0) as u64);
                return Ok((wall, polls));
            }
            anyhow::ensure!(Instant::now() < deadline, "the sagas did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn rss(&self) -> Result<u64> {
        rss_bytes(&self.pid).context("reading the server's RSS")
    }

    fn peak_rss(&self) -> Result<u64> {
        peak_rss_bytes(&self.pid).context("reading the server's peak RSS")
    }

    /// CPU time (user and system) the server has used so far.
    fn cpu(&self) -> Result<Duration> {
        cpu_time(&self.pid).context("reading the server's CPU time")
    }

    fn stop(mut self) {
        self.server.terminate();
    }
}

/// CPU time (user + system) of a process, from /proc/PID/stat.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state,
    // field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second: u64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

/// I/O-bound scale: `wasaga serve` (with `IO_FLAGS`, or
/// `WASAGA_BENCH_IO_FLAGS` when set) given
/// 2,000 sagas at once, each one step waiting 1 s on a local server's
/// answer; wall time from the first start to the last completion (from the
/// sagas' own timestamps), and the server's peak RSS.
async fn io_bound(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
    let flags = std::env::var("WASAGA_BENCH_IO_FLAGS").unwrap_or_else(|_| IO_FLAGS.into());
    report.measured_by(format!("{BENCH} --only io {WITH_SERVER}"));
    let sagas: usize = if quick { 500 } else { 2_000 };
    const WAIT_MS: u64 = 1_000;
    let cloud = wasaga_tests::Cloud::start("bench-token").await;
    let host = ServedHost::start(bin, &flags).await?;
    host.install("fetch", &[cloud.origin()]).await?;
    let idle = host.rss()?;
    let body = json!({
        "kind": "io",
        "steps": [{ "plugin": "fetch", "timeout_ms": 60_000 }],
        "inputs": { "requests": [{ "url": format!("{}/v2/slow?ms={WAIT_MS}", cloud.origin()) }] },
    });
    host.start_sagas(sagas, || body.clone()).await?;
    let (wall, _) = host.wait_completed(sagas).await?;
    let peak = host.peak_rss()?;
    host.stop();
    let shown = if flags.is_empty() {
        "default flags".to_string()
    } else {
        flags.clone()
    };
    report.notes.push(format!(
        "I/O-bound scale: `wasaga serve` with {shown}; the {sagas} sagas are posted 256 at a time; \
         wall time is from the first saga's creation to the last one's completion, as the database records them."
    ));
    report.add(
        "I/O-bound scale",
        format!("{sagas} sagas, one step each waiting {WAIT_MS} ms on a local server: wall time"),
        ms(wall),
        format!("{WAIT_MS} ms (one wait)"),
        format!("{:.2}×", wall.as_secs_f64() * 1e3 / WAIT_MS as f64),
        "≤ 3 s",
    );
    report.add(
        "I/O-bound scale",
        format!("{sagas} sagas waiting at once: peak RSS of wasaga serve"),
        mib(peak),
        mib(idle) + " idle",
        format!("{:.1}×", peak as f64 / idle as f64),
        "≤ 1 GiB",
    );
    Ok(())
}

/// Milliseconds since the Unix epoch.
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one way of waiting cost: wall time, polls, peak RSS, CPU.
struct WaitCost {
    wall: Duration,
    polls: i64,
    peak: u64,
    cpu: Duration,
}

/// Runs `sagas` one-step sagas on a fresh `wasaga serve` with `flags`.
async fn wait_cost(
    bin: &Path,
    flags: &str,
    sagas: usize,
    plugin: &str,
    origins: &[String],
    body: impl Fn() -> serde_json::Value,
) -> Result<WaitCost> {
    let host = ServedHost::start(bin, flags).await?;
    host.install(plugin, origins).await?;
    let cpu_before = host.cpu()?;
    host.start_sagas(sagas, body).await?;
    let (wall, polls) = host.wait_completed(sagas).await?;
    let cost = WaitCost {
        wall,
        polls,
        peak: host.peak_rss()?,
        cpu: host.cpu()? - cpu_before,
    };
    host.stop();
    Ok(cost)
}

/// The flags for the in-call sleep: every saga driven at once, and as many
/// instances alive as this system allows (all of them, where it can).
fn sleep_flags(sagas: usize) -> String {
    let most = wasaga::config::max_on_demand_instances().map_or(sagas, |m| m as usize);
    format!(
        "--concurrency {sagas} --max-instances {} --allocator on-demand",
        sagas.min(most)
    )
}

/// Waiting is cheap: `sagas` sagas whose one step (the `poll` test plugin,
/// contract 0.2.0) answers `poll-after` 1 s apart until 4.5 s after its
/// saga was posted, so 5 polls when the host keeps up, on `wasaga serve`
/// with default flags; beside the same wait done as a 5 s sleep inside the
/// call (`fetch` with `sleep_ms`), with concurrency and instances for all.
async fn durable_waits(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
    report.measured_by(format!("{BENCH} --only waits {WITH_SERVER}"));
    let sagas: usize = if quick { 500 } else { 10_000 };
    const POLLS: u64 = 5;
    const EVERY_MS: u64 = 1_000;
    let polling = wait_cost(bin, "", sagas, "poll", &[], || {
        json!({
            "kind": "waits",
            "steps": [{ "plugin": "poll" }],
            "inputs": { "until_ms": epoch_ms() + (POLLS - 1) * EVERY_MS + EVERY_MS / 2, "poll_ms": EVERY_MS },
        })
    })
    .await?;
    let sleeping = wait_cost(bin, &sleep_flags(sagas), sagas, "fetch", &[], || {
        json!({
            "kind": "waits",
            "steps": [{ "plugin": "fetch", "timeout_ms": 120_000 }],
            "inputs": { "sleep_ms": POLLS * EVERY_MS },
        })
    })
    .await?;
    report.notes.push(format!(
        "Durable waits: {sagas} sagas posted 256 at a time to `wasaga serve` with default flags (concurrency 64); \
         each step polls 1 s apart until 4.5 s after its saga was posted ({:.2} polls per saga measured: \
         fewer than 5 where the first call came late). Baseline: the same sagas on a server started with `{}` \
         (the instances this system's vm.max_map_count allows alive at once), \
         the step sleeping 5 s in `wasi:clocks` inside its call. Wall time is from the first saga's creation \
         to the last one's completion; CPU is the server's user + system time from the first post to the end.",
        polling.polls as f64 / sagas as f64,
        sleep_flags(sagas)
    ));
    let what = format!("{sagas} sagas, one step waiting 5 s");
    report.add(
        "Durable waits",
        format!("{what} by polling 1 s apart: wall time"),
        ms(polling.wall),
        format!("{} (sleep in call)", ms(sleeping.wall)),
        format!(
            "{:.2}×",
            polling.wall.as_secs_f64() / sleeping.wall.as_secs_f64()
        ),
        "≈ 5 s",
    );
    report.add(
        "Durable waits",
        format!("{what} by polling: peak RSS of wasaga serve"),
        mib(polling.peak),
        format!("{} (sleep in call)", mib(sleeping.peak)),
        format!("{:.2}×", polling.peak as f64 / sleeping.peak as f64),
        "≤ 300 MiB",
    );
    report.add(
        "Durable waits",
        format!("{what} by polling: CPU seconds of wasaga serve"),
        format!("{:.1} s", polling.cpu.as_secs_f64()),
        format!("{:.1} s (sleep in call)", sleeping.cpu.as_secs_f64()),
        format!(
            "{:.2}×",
            polling.cpu.as_secs_f64() / sleeping.cpu.as_secs_f64()
        ),
        "",
    );
    Ok(())
}

fn write_markdown(report: &Report, path: &Path, quick: bool) -> Result<()> {
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(
        "Measured by `cargo xtask bench` (the bench binary `wasaga-bench`, release build) on a shared 2-core machine. \
         Each value is a median (p50) unless it says otherwise, beside a baseline measured in the same run; \
         compare the ratios, not the absolute times, across runs.\n\n",
    );
    if quick {
        md.push_str("**Quick mode**: fewer samples; for checking that the benchmarks run, not for quoting.\n\n");
    }
    md.push_str(
        "Each row's command measures it alone, after `cargo build --release -p wasaga -p wasaga-bench` \
         (with `CARGO_TARGET_DIR` set, `target/` is that directory).\n\n",
    );
    md.push_str("| section | metric | value | baseline (same run) | ratio | target | command |\n|---|---|---|---|---|---|---|\n");
    for r in &report.rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | `{}` |\n",
            r.section, r.metric, r.value, r.baseline, r.ratio, r.target, r.command
        ));
    }
    md.push_str("\n## Notes\n\n");
    for note in &report.notes {
        md.push_str(&format!("- {note}\n"));
    }
    std::fs::write(path, md)?;
    Ok(())
}

/// Issue 34's costs an attacker could impose: the server's RSS while 300
/// unauthenticated clients each declare a 60 MB upload, send 64 KiB and
/// hold the connection; and one start against the costliest schemas a
/// template put accepts (an `anyOf` chain through `$ref`s at the expansion
/// bound; a pattern that backtracks, on 2,000 strings).
async fn attack_costs(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    report.measured_by(format!("{BENCH} --only attacks {WITH_SERVER}"));
    let host = ServedHost::start(bin, "--token bench-admin --auth-failures-per-minute 0").await?;
    let base = host.server.base.clone();
    let addr = base.trim_start_matches("http://").to_string();
    let idle = host.rss()?;
    let n = if quick { 50 } else { 300 };
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        let head = format!(
            "POST /v1/plugins HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/wasm\r\nContent-Length: 60000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        // The server may answer and close before it takes all of this.
        let _ = stream.write_all(&vec![0u8; 64 * 1024]).await;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = host.rss()?;
    let mut refused = 0;
    for mut stream in held {
        let mut buf = [0u8; 32];
        if let Ok(Ok(read)) =
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            && buf[..read].starts_with(b"HTTP/1.1 401")
        {
            refused += 1;
        }
    }
    report.add(
        "Attacks",
        format!("{n} unauthenticated 60 MB uploads held open: server RSS above idle"),
        mib(with.saturating_sub(idle)),
        format!("idle {}", mib(idle)),
        format!("{refused}/{n} got 401"),
        "<= 100 MiB",
    );

    // The costliest schemas a put accepts.
    let http = reqwest::Client::new();
    let chain = wasaga_tests::any_of_chain(7);
    let strings = 1_990;
    let patterns = json!({
        "additionalProperties": {"type": "string", "pattern": "^(a+)+$"},
    });
    let evil: serde_json::Map<String, serde_json::Value> = (0..strings)
        .map(|i| (format!("k{i}"), json!(format!("{}!", "a".repeat(400)))))
        .collect();
    for (name, schema, inputs) in [
        ("chain", chain, json!({"x": 1})),
        ("patterns", patterns, serde_json::Value::Object(evil)),
    ] {
        let r = http
            .put(format!("{base}/v1/templates/{name}"))
            .bearer_auth("bench-admin")
            .json(&json!({"steps": ["echo"], "inputs_schema": schema}))
            .send()
            .await?;
        let status = r.status();
        anyhow::ensure!(
            status.is_success(),
            "putting {name}: {status} {}",
            r.text().await?
        );
        let before = host.rss()?;
        let mut took = Vec::new();
        for _ in 0..5 {
            let began = Instant::now();
            let r = http
                .post(format!("{base}/v1/sagas"))
                .bearer_auth("bench-admin")
                .json(&json!({"template": name, "inputs": inputs}))
                .send()
                .await?;
            took.push(began.elapsed());
            anyhow::ensure!(r.status() == 422, "a start against {name}: {}", r.status());
        }
        took.sort();
        let peak = host.peak_rss()?;
        report.add(
            "Attacks",
            format!("one start against the worst accepted schema ({name}): median time"),
            ms(took[took.len() / 2]),
            format!("RSS {} before", mib(before)),
            format!("peak {}", mib(peak)),
            "<= 1 s, <= 64 MiB",
        );
    }
    host.stop();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    if let Some((url, n)) = &args.subscribe {
        return events::subscribe(url, *n).await;
    }
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut report = Report {
        rows: Vec::new(),
        notes: Vec::new(),
        command: String::new(),
    };
    let machine = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    report.notes.push(format!(
        "{machine} CPUs; {}",
        if args.quick {
            "quick mode"
        } else {
            "full mode"
        }
    ));
    if wanted("step") {
        step_overhead(&mut report, args.quick).await?;
    }
    if wanted("throughput") {
        durable_throughput(&mut report, args.quick).await?;
    }
    if wanted("events") {
        events::overhead(&mut report, args.quick).await?;
    }
    if wanted("latency") {
        low_load_latency(&mut report, args.quick).await?;
    }
    if wanted("load") {
        plugin_load(&mut report, args.quick).await?;
    }
    if wanted("memory") {
        match &args.wasaga_bin {
            Some(bin) => memory(&mut report, args.quick, bin).await?,
            None => eprintln!("memory: skipped (needs --wasaga-bin)"),
        }
    }
    if wanted("http") {
        outbound_http(&mut report, args.quick).await?;
    }
    if wanted("io") {
        match &args.wasaga_bin {
            Some(bin) => io_bound(&mut report, args.quick, bin).await?,
            None => eprintln!("I/O-bound scale: skipped (needs --wasaga-bin)"),
        }
    }
    if wanted("waits") {
        match &args.wasaga_bin {
            Some(bin) => durable_waits(&mut report, args.quick, bin).await?,
            None => eprintln!("durable waits: skipped (needs --wasaga-bin)"),
        }
    }
    if wanted("attacks") {
        match &args.wasaga_bin {
            Some(bin) => attack_costs(&mut report, args.quick, bin).await?,
            None => eprintln!("attack costs: skipped (needs --wasaga-bin)"),
        }
    }
    if wanted("hosts") {
        match &args.wasaga_bin {
            Some(bin) => several_hosts(&mut report, args.quick, bin).await?,
            None => eprintln!("several hosts: skipped (needs --wasaga-bin)"),
        }
    }
    if let Some(out) = &args.out {
        write_markdown(&report, out, args.quick)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
