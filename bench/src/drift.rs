//! Drift scan at scale (docs/recovery.md), on `wasaga serve`: `sagas`
//! sagas of one `observed` step (contract 0.3.0, a Rust step with
//! `observe`) each create one resource at the test cloud (a real HTTP
//! server in this process), then a hundredth of the resources are changed
//! and a hundredth deleted behind the sagas' backs, and one `POST
//! /v1/resources/scan` looks at them all: its time, what it found (which
//! must be exactly what was done), and the server's peak RSS.

use super::*;

/// `--only drift`.
pub(crate) async fn drift(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
    report.measured_by(format!("{BENCH} --only drift {WITH_SERVER}"));
    let sagas: usize = if quick { 500 } else { 10_000 };
    let token = "bench-t0ken";
    let cloud = wasaga_tests::Cloud::start(token).await;
    let keys = tempfile::tempdir()?;
    let key = wasaga_tests::secrets_key_file(keys.path());
    let host = ServedHost::start(
        bin,
        &format!("--secrets-key-file {} --concurrency 256", key.display()),
    )
    .await?;
    let base = host.server.base.clone();
    host.install("observed", &[]).await?;
    let r = host
        .http
        .put(format!("{base}/v1/secrets/cloud-token"))
        .json(&json!({"value": token, "origins": [cloud.origin()]}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "the secret: {}", r.status());
    let r = host
        .http
        .put(format!("{base}/v1/plugins/observed/grants"))
        .json(&json!({"http": [cloud.origin()], "secrets": {"cloud-token": "use"}}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "the grants: {}", r.status());
    let api = cloud.origin();
    let n = std::sync::atomic::AtomicUsize::new(0);
    host.start_sagas(sagas, || {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        json!({"kind": "provision", "steps": ["observed"], "inputs": {"api": api, "name": format!("db-{i}")}})
    })
    .await?;
    host.wait_completed(sagas).await?;
    let ids: Vec<String> = cloud.resources().keys().cloned().collect();
    anyhow::ensure!(
        ids.len() == sagas,
        "{} resources for {sagas} sagas",
        ids.len()
    );
    let drifting = sagas / 100;
    for id in ids.iter().take(drifting) {
        cloud.change(id, "name", json!("renamed"));
    }
    for id in ids.iter().skip(drifting).take(drifting) {
        cloud.remove(id);
    }

    let started = Instant::now();
    let found: serde_json::Value = host
        .http
        .post(format!("{base}/v1/resources/scan"))
        .json(&json!({}))
        .send()
        .await?
        .json()
        .await?;
    let took = started.elapsed();
    let count = |what: &str| found[what].as_u64().unwrap_or(u64::MAX) as usize;
    anyhow::ensure!(
        count("scanned") == sagas
            && count("changed") == drifting
            && count("missing") == drifting
            && count("none") == sagas - 2 * drifting
            && count("unknown") == 0,
        "the scan found {found}"
    );
    let peak = host.peak_rss()?;
    host.stop();

    report.notes.push(format!(
        "Drift scan: `wasaga serve --concurrency 256` on SQLite; {sagas} sagas of one `observed` step (Rust, \
         contract 0.3.0) each created one resource at a test cloud in the bench's process; then {drifting} \
         resources were renamed and {drifting} deleted at the cloud, and one `POST /v1/resources/scan` \
         asked every step's `observe` (one outbound GET each) and compared. One run; the scan found exactly \
         the {drifting} changed (with their RFC 6902 diffs) and {drifting} missing."
    ));
    report.add(
        "Drift",
        format!("scan of {sagas} resources (one `observe` each): time to the answer"),
        ms(took),
        format!("{:.0} resources/s", sagas as f64 / took.as_secs_f64()),
        String::new(),
        "",
    );
    report.add(
        "Drift",
        format!("scan of {sagas} resources: peak RSS of wasaga serve (sagas, scan)"),
        mib(peak),
        String::new(),
        String::new(),
        "",
    );
    Ok(())
}
