//! The live-events benchmark: what `/v1/events` subscribers cost the
//! engine. The subscribers run in a child process (this binary again, with
//! `--subscribe URL N`), so the host's process CPU holds only what the
//! host spends: producing, framing and writing the events, not reading
//! them. Two figures, interleaved rounds in one run:
//!
//! - throughput with 10 subscribers against none (target ≥ 90 %);
//! - with 100 subscribers, the host's CPU per delivered event: (CPU of a
//!   round with them − CPU of the same round without) / events the
//!   subscribers counted (target ≤ 1 µs).

use super::{BENCH, LocalHost, Report, closed_loop, cpu_time, mib};
use anyhow::{Context, Result};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const STEPS: usize = 5;
const FEW: usize = 10;
const MANY: usize = 100;

/// The child's side: `N` streams of `URL`, counting frames and bytes until
/// stdin closes, then one line `FRAMES BYTES`.
pub async fn subscribe(url: &str, n: usize) -> Result<()> {
    let http = reqwest::Client::new();
    let frames = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..n {
        let mut response = http.get(url).send().await?;
        anyhow::ensure!(
            response.status() == 200,
            "subscribing: {}",
            response.status()
        );
        let (frames, bytes) = (frames.clone(), bytes.clone());
        readers.push(tokio::spawn(async move {
            // A frame ends with a blank line; the previous chunk's last
            // byte tells a `\n\n` split across two chunks.
            let mut last = 0u8;
            while let Ok(Some(chunk)) = response.chunk().await {
                let mut count = chunk.windows(2).filter(|w| w == b"\n\n").count() as u64;
                if last == b'\n' && chunk.first() == Some(&b'\n') {
                    count += 1;
                }
                last = chunk.last().copied().unwrap_or(last);
                frames.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                bytes.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    println!("ready");
    let mut rest = Vec::new();
    tokio::io::stdin().read_to_end(&mut rest).await?;
    for r in readers {
        r.abort();
    }
    println!(
        "{} {}",
        frames.load(std::sync::atomic::Ordering::Relaxed),
        bytes.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

/// Subscribers in a child process.
struct Subscribers {
    child: tokio::process::Child,
    out: BufReader<tokio::process::ChildStdout>,
}

impl Subscribers {
    async fn start(host: &LocalHost, n: usize) -> Result<Subscribers> {
        let before = host.host.runner.hub().subscribers();
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "--subscribe",
                &format!("{}/v1/events", host.base),
                &n.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().context("the child's stdout")?);
        let mut line = String::new();
        out.read_line(&mut line).await?;
        anyhow::ensure!(line.trim() == "ready", "the subscribers said {line:?}");
        anyhow::ensure!(host.host.runner.hub().subscribers() >= before + n);
        Ok(Subscribers { child, out })
    }

    /// Frames and bytes the subscribers read.
    async fn finish(mut self) -> Result<(u64, u64)> {
        drop(self.child.stdin.take());
        let mut line = String::new();
        self.out.read_line(&mut line).await?;
        self.child.wait().await?;
        let mut it = line.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(frames)), Some(Ok(bytes))) => Ok((frames, bytes)),
            _ => anyhow::bail!("the subscribers said {line:?}"),
        }
    }
}

/// One round of `sagas` sagas: steps per second and the process's CPU.
async fn round(host: &LocalHost, sagas: usize) -> Result<(f64, Duration)> {
    let pid = std::process::id().to_string();
    let cpu = || cpu_time(&pid).context("reading this process's CPU time");
    let before = cpu()?;
    let (took, _) = closed_loop(host, sagas, STEPS, 64).await?;
    // What is still gathered for the subscribers goes out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(((sagas * STEPS) as f64 / took.as_secs_f64(), cpu()? - before))
}

fn median<T: Copy + PartialOrd>(v: &mut [T]) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

pub async fn overhead(report: &mut Report, quick: bool) -> Result<()> {
    report.measured_by(format!("{BENCH} --only events"));
    let sagas = if quick { 100 } else { 1_000 };
    let host = LocalHost::start(|o| {
        o.runner.concurrency = 64;
        o.runtime.max_instances = 64;
    })
    .await?;
    // A warm-up, so no round pays for the first compile and pages.
    closed_loop(&host, sagas / 4, STEPS, 64).await?;
    let rounds = if quick { 1 } else { 5 };
    let (mut without, mut few, mut many) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_event = Vec::new();
    let (mut delivered, mut read) = (0u64, 0u64);
    for _ in 0..rounds {
        let (rate, cpu_without) = round(&host, sagas).await?;
        without.push(rate);
        let subscribers = Subscribers::start(&host, FEW).await?;
        few.push(round(&host, sagas).await?.0);
        subscribers.finish().await?;
        let subscribers = Subscribers::start(&host, MANY).await?;
        let (rate, cpu_with) = round(&host, sagas).await?;
        let (frames, bytes) = subscribers.finish().await?;
        many.push(rate);
        anyhow::ensure!(frames > 0, "the subscribers read no event");
        per_event.push(cpu_with.saturating_sub(cpu_without).as_secs_f64() * 1e6 / frames as f64);
        delivered += frames;
        read += bytes;
    }
    let (without, few, many) = (median(&mut without), median(&mut few), median(&mut many));
    let per_event = median(&mut per_event);
    let what = format!("{sagas} sagas × {STEPS} echo steps, SQLite, concurrency 64");
    report.add(
        "live events",
        format!("{what}, {FEW} clients on /v1/events"),
        format!("{few:.0} steps/s"),
        format!("{without:.0} steps/s without"),
        format!("{:.0} %", 100.0 * few / without),
        "≥ 90 %",
    );
    report.add(
        "live events",
        format!("{what}, {MANY} clients: the host's CPU per delivered event"),
        format!("{per_event:.2} µs"),
        "CPU with − without, over events delivered".to_string(),
        format!("{:.0} % of the throughput without", 100.0 * many / without),
        "≤ 1 µs",
    );
    report.notes.push(format!(
        "live events: median of {rounds} interleaved round(s) each (none, {FEW}, {MANY} subscribers); the subscribers ran in a child process (so the host's process CPU excludes reading them) and were delivered {delivered} events, {} in all (each a saga's summary, as `GET /v1/sagas` lists it).",
        mib(read)
    ));
    host.host.shutdown().await;
    Ok(())
}
