//! Waits for messages (docs/waits.md) at scale, on `wasaga serve`:
//! `sagas` sagas each parked at a wait with its own correlation key, then
//! as many messages posted 256 at a time: every saga completes; the time
//! from the last message's answer to the last completion, and the
//! server's peak RSS. Then messages posted before their sagas exist: none
//! is lost (each saga's wait takes its message as it opens).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The sagas' database, read-only (the server writes it).
async fn database(host: &ServedHost) -> Result<sqlx::SqliteConnection> {
    let db = host.dir.path().join("wasaga.db");
    Ok(
        <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
            "sqlite://{}?mode=ro",
            db.display()
        ))
        .await?,
    )
}

/// Waits until `query` (one count) reaches `n`.
async fn count_reaches(conn: &mut sqlx::SqliteConnection, query: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let (count,): (i64,) = sqlx::query_as(query).fetch_one(&mut *conn).await?;
        if count as usize >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{count} of {n} after 15 min: {query}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts one message per key, 256 at a time; when the last answer came.
async fn post_messages(host: &ServedHost, keys: impl Iterator<Item = String>) -> Result<u64> {
    use futures::StreamExt;
    let url = format!("{}/v1/messages", host.server.base);
    let posts = futures::stream::iter(keys).map(|key| {
        let request = host
            .http
            .post(&url)
            .json(&json!({"key": key, "payload": {"ok": true}}));
        async move {
            let r = request.send().await?;
            anyhow::ensure!(r.status() == 201, "posting a message: {}", r.status());
            Ok::<_, anyhow::Error>(epoch_ms())
        }
    });
    let answers: Vec<Result<u64>> = posts.buffer_unordered(256).collect().await;
    let answered = answers.into_iter().collect::<Result<Vec<u64>>>()?;
    Ok(answered.into_iter().max().unwrap_or(0))
}

/// What one round measured: last message to last completion, peak and
/// idle RSS.
struct Round {
    after_last: Duration,
    peak: u64,
    idle: u64,
}

/// The saga body of one wait whose key is `PREFIX:N`, N counting up.
fn waiting<'a>(prefix: &'static str, next: &'a AtomicUsize) -> impl Fn() -> serde_json::Value + 'a {
    move || {
        let n = next.fetch_add(1, Ordering::SeqCst);
        json!({
            "kind": "mailbox",
            "steps": [{"wait": {"name": "event", "timeout": "1h", "correlation_key": format!("{prefix}:{{{{inputs.n}}}}")}}],
            "inputs": {"n": n},
        })
    }
}

/// `sagas` waits opened, then a message for each, on a fresh server.
async fn round(bin: &Path, sagas: usize) -> Result<Round> {
    let host = ServedHost::start(bin, "").await?;
    let idle = host.rss()?;
    let mut conn = database(&host).await?;
    let next = AtomicUsize::new(0);
    host.start_sagas(sagas, waiting("late", &next)).await?;
    count_reaches(
        &mut conn,
        "SELECT count(*) FROM saga_step_results WHERE status = 'waiting'",
        sagas,
    )
    .await?;
    let last_posted = post_messages(&host, (0..sagas).map(|n| format!("late:{n}"))).await?;
    count_reaches(
        &mut conn,
        "SELECT count(*) FROM saga_runs WHERE status = 'completed'",
        sagas,
    )
    .await?;
    let (last_completed,): (i64,) =
        sqlx::query_as("SELECT max(updated_at) FROM saga_runs WHERE status = 'completed'")
            .fetch_one(&mut conn)
            .await?;
    let peak = host.peak_rss()?;
    host.stop();
    Ok(Round {
        after_last: Duration::from_millis((last_completed - last_posted as i64).max(0) as u64),
        peak,
        idle,
    })
}

/// Messages first, their sagas after: every wait takes its message as it
/// opens. Answers the sagas that did not complete with their message.
async fn early_messages(bin: &Path, early: usize) -> Result<i64> {
    let host = ServedHost::start(bin, "").await?;
    let mut conn = database(&host).await?;
    post_messages(&host, (0..early).map(|n| format!("early:{n}"))).await?;
    let (kept,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM wait_messages WHERE saga_id IS NULL")
            .fetch_one(&mut conn)
            .await?;
    anyhow::ensure!(
        kept as usize == early,
        "{kept} of {early} early messages were kept"
    );
    let next = AtomicUsize::new(0);
    host.start_sagas(early, waiting("early", &next)).await?;
    host.wait_completed(early).await?;
    let (lost,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM saga_step_results
         WHERE status <> 'completed' OR output NOT LIKE '%\"event\":{\"ok\":true}%'",
    )
    .fetch_one(&mut conn)
    .await?;
    host.stop();
    Ok(lost)
}

/// `--only mailbox`.
pub(crate) async fn mailbox(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
    report.measured_by(format!("{BENCH} --only mailbox {WITH_SERVER}"));
    let sagas: usize = if quick { 1_000 } else { 10_000 };
    let early: usize = if quick { 200 } else { 1_000 };
    let rounds = if quick { 1 } else { 3 };
    let mut measured = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        measured.push(round(bin, sagas).await?);
    }
    measured.sort_by_key(|r| r.after_last);
    let median = &measured[measured.len() / 2];
    let peak = measured.iter().map(|r| r.peak).max().unwrap_or(0);
    let lost = early_messages(bin, early).await?;
    report.notes.push(format!(
        "Waits for messages: `wasaga serve` with default flags on SQLite; {sagas} sagas of one wait each (its own \
         correlation key) posted 256 at a time; once every wait is open, {sagas} messages posted 256 \
         at a time. The time is from the last message's answer to the last saga's completion as the \
         database records it, median of {rounds} rounds on fresh servers (peak RSS: the highest). Then, on \
         another server, {early} messages posted before their sagas exist, and those sagas started: a saga \
         that does not complete with its message counts as lost."
    ));
    report.add(
        "Waits for messages",
        format!("{sagas} open waits, then {sagas} messages: last message to last completion (median of {rounds})"),
        ms(median.after_last),
        String::new(),
        String::new(),
        "≤ 2 s",
    );
    report.add(
        "Waits for messages",
        format!("{sagas} sagas waiting, then completing: peak RSS of wasaga serve"),
        mib(peak),
        mib(median.idle) + " idle",
        format!("{:.1}×", peak as f64 / median.idle as f64),
        "≤ 200 MiB",
    );
    report.add(
        "Waits for messages",
        format!("{early} messages posted before their waits opened: lost"),
        lost.to_string(),
        "0 allowed".into(),
        String::new(),
        "0",
    );
    Ok(())
}
