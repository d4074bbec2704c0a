//! The sections that start the `wasaga serve` binary (`--wasaga-bin`) and
//! read its memory and CPU from /proc: memory, several hosts on
//! PostgreSQL, I/O-bound scale, durable waits, and attack costs.

use super::*;

/// `wasaga serve` as a child process; its RSS idle and with 1,000 sagas in
/// flight.
pub(crate) async fn memory(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
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
pub(crate) async fn postgres_commit_floor(url: &str, n: usize) -> Result<Duration> {
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
pub(crate) async fn wait_for_log_line(path: &Path, needle: &str, within: Duration) -> Result<()> {
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
pub(crate) async fn several_hosts(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
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

/// Peak resident set size of a process (`VmHWM`), from /proc.
pub(crate) fn peak_rss_bytes(pid: &str) -> Option<u64> {
    proc_status_bytes(pid, "VmHWM:")
}

/// The flags README recommends for steps that mostly wait on other
/// services: drive every saga at once, and allocate instances on demand
/// (a pool would reserve a slot sized for the memory ceiling per instance).
pub(crate) const IO_FLAGS: &str = "--concurrency 2000 --max-instances 2000 --allocator on-demand";

/// A `wasaga serve` process on SQLite in a temporary directory, driven
/// over HTTP, for the sections that measure the server as users run it.
pub(crate) struct ServedHost {
    pub(crate) server: wasaga_tests::ServerProcess,
    pub(crate) pid: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) http: reqwest::Client,
}

impl ServedHost {
    pub(crate) async fn start(bin: &Path, flags: &str) -> Result<ServedHost> {
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
    pub(crate) async fn install(&self, plugin: &str, origins: &[String]) -> Result<()> {
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
    pub(crate) async fn start_sagas(
        &self,
        n: usize,
        body: impl Fn() -> serde_json::Value,
    ) -> Result<()> {
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
    pub(crate) async fn wait_completed(&self, n: usize) -> Result<(Duration, i64)> {
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

    pub(crate) fn rss(&self) -> Result<u64> {
        rss_bytes(&self.pid).context("reading the server's RSS")
    }

    pub(crate) fn peak_rss(&self) -> Result<u64> {
        peak_rss_bytes(&self.pid).context("reading the server's peak RSS")
    }

    /// CPU time (user and system) the server has used so far.
    pub(crate) fn cpu(&self) -> Result<Duration> {
        cpu_time(&self.pid).context("reading the server's CPU time")
    }

    pub(crate) fn stop(mut self) {
        self.server.terminate();
    }
}

/// CPU time (user + system) of a process, from /proc/PID/stat.
pub(crate) fn cpu_time(pid: &str) -> Option<Duration> {
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

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

/// I/O-bound scale: `wasaga serve` (with `IO_FLAGS`, or
/// `WASAGA_BENCH_IO_FLAGS` when set) given
/// 2,000 sagas at once, each one step waiting 1 s on a local server's
/// answer; wall time from the first start to the last completion (from the
/// sagas' own timestamps), and the server's peak RSS.
pub(crate) async fn io_bound(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
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
pub(crate) fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one way of waiting cost: wall time, polls, peak RSS, CPU.
pub(crate) struct WaitCost {
    pub(crate) wall: Duration,
    pub(crate) polls: i64,
    pub(crate) peak: u64,
    pub(crate) cpu: Duration,
}

/// Runs `sagas` one-step sagas on a fresh `wasaga serve` with `flags`.
pub(crate) async fn wait_cost(
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
pub(crate) fn sleep_flags(sagas: usize) -> String {
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
pub(crate) async fn durable_waits(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
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

/// Issue 34's costs an attacker could impose: the server's RSS while 300
/// unauthenticated clients each declare a 60 MB upload, send 64 KiB and
/// hold the connection; and one start against the costliest schemas a
/// template put accepts (an `anyOf` chain through `$ref`s at the expansion
/// bound; a pattern that backtracks, on 2,000 strings).
pub(crate) async fn attack_costs(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
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
