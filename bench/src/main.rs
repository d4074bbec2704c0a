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
//! - waits for messages: 10,000 sagas parked at a wait, then 10,000
//!   messages: time from the last message to the last completion, peak
//!   RSS; 1,000 messages posted before their waits open, none lost
//!   (`mailbox.rs`).
//! - redrive by filter: 1,000 rolled-back sagas, a dry run then the
//!   redrive: all complete, nothing executed that the dry run did not list
//!   (`redrive.rs`).
//! - drift scan: 10,000 resources recorded by a Rust step with `observe`,
//!   a hundredth changed and a hundredth deleted: the scan's time, what it
//!   found, peak RSS (`drift.rs`).
//! - schedules: two hosts on PostgreSQL firing 100 schedules every second
//!   for 60 s; every nominal time fired exactly once, and how late fires
//!   start (`schedules.rs`).

mod drift;
mod events;
mod flow;
mod inprocess;
mod mailbox;
mod redrive;
mod report;
mod schedules;
mod served;

use inprocess::*;
use report::*;
use served::*;

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

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    if let Some((url, n)) = &args.subscribe {
        return events::subscribe(url, *n).await;
    }
    // A run of some benchmarks into an existing file updates their rows.
    let merge = !args.only.is_empty() && args.out.as_ref().is_some_and(|o| o.exists());
    if merge && args.quick {
        bail!("a quick run's rows are not written into an existing file; drop --quick or --out");
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
    if wanted("keys") {
        flow::concurrency_keys(&mut report, args.quick).await?;
    }
    if wanted("budgets") {
        flow::shared_budget(&mut report, args.quick).await?;
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
    if wanted("mailbox") {
        match &args.wasaga_bin {
            Some(bin) => mailbox::mailbox(&mut report, args.quick, bin).await?,
            None => eprintln!("mailbox: skipped (needs --wasaga-bin)"),
        }
    }
    if wanted("redrive") {
        match &args.wasaga_bin {
            Some(bin) => redrive::redrive(&mut report, args.quick, bin).await?,
            None => eprintln!("redrive: skipped (needs --wasaga-bin)"),
        }
    }
    if wanted("drift") {
        match &args.wasaga_bin {
            Some(bin) => drift::drift(&mut report, args.quick, bin).await?,
            None => eprintln!("drift: skipped (needs --wasaga-bin)"),
        }
    }
    if wanted("schedules") {
        match &args.wasaga_bin {
            Some(bin) => schedules::schedules(&mut report, args.quick, bin).await?,
            None => eprintln!("schedules: skipped (needs --wasaga-bin)"),
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
        if merge {
            merge_markdown(&report, out)?;
        } else {
            write_markdown(&report, out, args.quick)?;
        }
        println!("wrote {}", out.display());
    }
    Ok(())
}
