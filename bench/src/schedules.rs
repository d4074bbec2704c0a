//! Schedules without a leader (docs/schedules.md), on two `wasaga serve`
//! processes sharing one PostgreSQL database: `schedules` schedules of a
//! one-step echo template, `every: 1s`, overlap `allow` (so every nominal
//! time must start a saga), for `seconds`; then all are paused and the
//! database is read: every nominal time between each schedule's first and
//! last fire must have exactly one record and one saga, none missed, none
//! twice. Also reported: how late fires start after their nominal time
//! (median and p99), and how the fires split between the hosts.

use super::*;

/// A fire as the check reads it: schedule, nominal time, when fired,
/// outcome, saga, the host that claimed it.
type FireRow = (
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    String,
);

/// `--only schedules`.
pub(crate) async fn schedules(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
    report.measured_by(format!("{BENCH} --only schedules {WITH_SERVER}"));
    let (schedules, seconds) = if quick { (10, 10) } else { (100, 60) };
    let db = wasaga_tests::TestDb::new(wasaga_tests::Backend::Postgres).await;
    let url = db.url.replace("max_connections=6", "max_connections=16");
    let bin = bin.to_str().context("a UTF-8 path")?;
    let mut servers = Vec::new();
    for i in 0..2 {
        let dir = db.dir.path().join(format!("host-{i}"));
        std::fs::create_dir_all(&dir)?;
        let args: Vec<String> = [
            "--database",
            &url,
            "--data-dir",
            &dir.display().to_string(),
            "--node-id",
            &format!("host-{i}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        servers.push(wasaga_tests::ServerProcess::start(bin, &args, dir.join("serve.log")).await?);
    }
    for server in &servers {
        wait_for_log_line(&server.log, "plugins warm", Duration::from_secs(120)).await?;
    }
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/v1/templates/ping", servers[0].base))
        .json(&json!({"steps": ["echo"]}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "the template: {}", r.status());
    for i in 0..schedules {
        let r = http
            .put(format!("{}/v1/schedules/s{i:03}", servers[i % 2].base))
            .json(
                &json!({"template": "ping", "inputs": {"n": i}, "every": "1s", "overlap": "allow"}),
            )
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "schedule {i}: {}", r.status());
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for i in 0..schedules {
        let r = http
            .post(format!(
                "{}/v1/schedules/s{i:03}/pause",
                servers[i % 2].base
            ))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "pausing {i}: {}", r.status());
    }
    let mut conn =
        <sqlx::PgConnection as sqlx::Connection>::connect(url.split('?').next().unwrap()).await?;
    // Fires acted on while the pauses landed finish.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unfinished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM schedule_fires WHERE outcome IS NULL")
                .fetch_one(&mut conn)
                .await?;
        if unfinished == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{unfinished} fires never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fires: Vec<FireRow> = sqlx::query_as(
        "SELECT schedule, nominal_at, fired_at, outcome, saga_id, claimed_by
             FROM schedule_fires ORDER BY schedule, nominal_at",
    )
    .fetch_all(&mut conn)
    .await?;
    let sagas: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM saga_runs WHERE idempotency_key LIKE 'schedule:%'",
    )
    .fetch_one(&mut conn)
    .await?;
    for server in &mut servers {
        server.terminate();
    }

    let mut expected = 0_i64;
    let mut gaps = 0_i64;
    let mut by_schedule: HashMap<&str, Vec<i64>> = HashMap::new();
    for f in &fires {
        by_schedule.entry(f.0.as_str()).or_default().push(f.1);
    }
    anyhow::ensure!(
        by_schedule.len() == schedules,
        "{} of {schedules} schedules fired",
        by_schedule.len()
    );
    for nominal in by_schedule.values() {
        expected += (nominal[nominal.len() - 1] - nominal[0]) / 1000 + 1;
        gaps += nominal.windows(2).filter(|w| w[1] - w[0] != 1000).count() as i64;
    }
    let started = fires
        .iter()
        .filter(|f| f.3.as_deref() == Some("started") && f.4.is_some())
        .count() as i64;
    let other = fires.len() as i64 - started;
    anyhow::ensure!(
        gaps == 0 && other == 0 && started == expected && sagas == started,
        "{expected} nominal times: {started} started, {other} otherwise, {gaps} gaps, {sagas} sagas"
    );
    let mut lag: Vec<Duration> = fires
        .iter()
        .filter_map(|f| {
            f.2.map(|at| Duration::from_millis((at - f.1).max(0) as u64))
        })
        .collect();
    lag.sort();
    let on_first = fires.iter().filter(|f| f.5 == "host-0").count();

    let note = format!(
        "Schedules: two `wasaga serve` on one PostgreSQL database, {schedules} schedules of a one-step echo \
         template `every: 1s` with overlap `allow`, for {seconds} s, then paused. Every nominal time between \
         each schedule's first and last fire had exactly one fire record and one saga (the check reads the \
         database). host-0 acted on {on_first} of the {started} fires, host-1 on {}.",
        started as usize - on_first
    );
    println!("{note}");
    report.notes.push(note);
    report.add(
        "Schedules",
        format!("2 hosts × {schedules} schedules every 1 s for {seconds} s: nominal times fired exactly once"),
        format!("{started} of {expected}"),
        format!("{expected} nominal times"),
        "0 missed, 0 twice".into(),
        "every nominal time once",
    );
    report.add(
        "Schedules",
        "lateness of a fire (nominal time to its saga stored), median / p99",
        format!("{} / {}", ms(pct(&lag, 0.5)), ms(pct(&lag, 0.99))),
        String::new(),
        String::new(),
        "",
    );
    Ok(())
}
