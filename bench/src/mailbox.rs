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

/// `--only mailbox`.
pub(crate) async fn mailbox(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
    report.measured_by(format!("{BENCH} --only mailbox {WITH_SERVER}"));
    let sagas: usize = if quick { 1_000 } else { 10_000 };
    let early: usize = if quick { 200 } else { 1_000 };
    let host = ServedHost::start(bin, "").await?;
    let idle = host.rss()?;
    let mut conn = database(&host).await?;
    let next = AtomicUsize::new(0);
    let waiting = |prefix: &'static str| {
        let next = &next;
        move || {
            let n = next.fetch_add(1, Ordering::SeqCst);
            json!({
                "kind": "mailbox",
                "steps": [{"wait": {"name": "event", "timeout": "1h", "correlation_key": format!("{prefix}:{{{{inputs.n}}}}")}}],
                "inputs": {"n": n},
            })
        }
    };
    host.start_sagas(sagas, waiting("late")).await?;
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
    let after_last = Duration::from_millis((last_completed - last_posted as i64).max(0) as u64);
    let peak = host.peak_rss()?;

    // Messages first, their sagas after: every wait takes its message as
    // it opens.
    next.store(0, Ordering::SeqCst);
    post_messages(&host, (0..early).map(|n| format!("early:{n}"))).await?;
    let (kept,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM wait_messages WHERE saga_id IS NULL")
            .fetch_one(&mut conn)
            .await?;
    host.start_sagas(early, waiting("early")).await?;
    host.wait_completed(sagas + early).await?;
    let (lost,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM saga_runs WHERE kind = 'mailbox' AND status <> 'completed'",
    )
    .fetch_one(&mut conn)
    .await?;
    host.stop();
    anyhow::ensure!(
        kept as usize == early,
        "{kept} of {early} early messages were kept"
    );
    report.notes.push(format!(
        "Mailbox: `wasaga serve` with default flags on SQLite; {sagas} sagas of one wait each (its own \
         correlation key) posted 256 at a time; once every wait is open, {sagas} messages posted 256 \
         at a time. The time is from the last message's answer to the last saga's completion as the \
         database records it. Then {early} messages posted before their sagas exist, and those sagas started."
    ));
    report.add(
        "Waits for messages",
        format!("{sagas} open waits, then {sagas} messages: last message to last completion"),
        ms(after_last),
        String::new(),
        String::new(),
        "≤ 2 s",
    );
    report.add(
        "Waits for messages",
        format!("{sagas} sagas waiting, then completing: peak RSS of wasaga serve"),
        mib(peak),
        mib(idle) + " idle",
        format!("{:.1}×", peak as f64 / idle as f64),
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
