//! Flow control's figures (docs/flow-control.md): what a concurrency key
//! costs a saga with no contention, and how close sagas serialized on
//! shared keys come to the ideal (one after another per key, keys side by
//! side), with the ledger's call times checked for overlap.

use super::*;
use std::collections::BTreeMap;

/// `--only keys`.
pub(crate) async fn concurrency_keys(report: &mut Report, quick: bool) -> Result<()> {
    key_cost(report, quick).await?;
    serialized(report, quick).await
}

/// The echo workload at concurrency 64 with a key of its own per saga,
/// against the same without keys; rounds alternate so the disk's drift
/// falls on both.
async fn key_cost(report: &mut Report, quick: bool) -> Result<()> {
    report.measured_by(format!("{BENCH} --only keys"));
    const CONCURRENCY: usize = 64;
    const STEPS: usize = 5;
    let sagas = if quick { 200 } else { 1_000 };
    let rounds = if quick { 1 } else { 3 };
    let mut host = LocalHost::start(|o| {
        o.runner.concurrency = CONCURRENCY;
        o.runtime.max_instances = CONCURRENCY as u32;
    })
    .await?;
    let (mut plain, mut keyed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for with_key in [false, true] {
            host.keyed = with_key;
            let (took, _) = closed_loop(&host, sagas, STEPS, CONCURRENCY).await?;
            let rate = (sagas * STEPS) as f64 / took.as_secs_f64();
            if with_key { &mut keyed } else { &mut plain }.push(rate);
        }
    }
    host.host.shutdown().await;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (plain, keyed) = (median(&mut plain), median(&mut keyed));
    report.add(
        "concurrency keys",
        format!("{sagas} sagas × {STEPS} echo steps, SQLite, concurrency {CONCURRENCY}, a key per saga (median of {rounds})"),
        format!("{keyed:.0} steps/s"),
        format!("{plain:.0} steps/s without keys"),
        format!("{:.0} %", 100.0 * keyed / plain),
        "≥ 90 %",
    );
    Ok(())
}

/// Sagas of one 20 ms HTTP step on 10 keys of limit 1, all started at
/// once: wall time against the ideal (sagas per key × 20 ms), and the
/// ledger's call times per key checked for overlap.
async fn serialized(report: &mut Report, quick: bool) -> Result<()> {
    const KEYS: usize = 10;
    const CALL: Duration = Duration::from_millis(20);
    let sagas = if quick { 100 } else { 1_000 };
    let host = LocalHost::start(|o| {
        o.runner.concurrency = 64;
        o.runtime.max_instances = 64;
    })
    .await?;
    let counter = wasaga_tests::Counter::start().await;
    counter.set_delay(CALL);
    let http = wasaga_tests::Http::new();
    let r = http
        .post(format!("{}/v1/plugins", host.base))
        .body(wasaga_tests::component("counter"))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("uploading counter: {}", r.status());
    }
    counter.grant_on(&http, &host.base).await;
    // Times from the ledger (the hosts' clock): polling the sagas one by
    // one after they ended must not count.
    let begun = wasaga::model::Timestamp::now().millis();
    let mut ids = Vec::with_capacity(sagas);
    for i in 0..sagas {
        let body = json!({
            "kind": "serialized",
            "steps": ["counter"],
            "inputs": {"counter_url": counter.url(), "droplet": i % KEYS},
            "concurrency": [{"key": "droplet:{{inputs.droplet}}"}],
        });
        ids.push((i % KEYS, host.start_body(&body).await?));
    }
    let mut spans: BTreeMap<usize, Vec<(i64, i64)>> = BTreeMap::new();
    for (key, id) in &ids {
        let saga = wait_completed(&host, id).await?;
        let at = |field: &str| -> Result<i64> {
            let t: wasaga::model::Timestamp =
                serde_json::from_value(saga["steps"][0][field].clone())?;
            Ok(t.millis())
        };
        spans
            .entry(*key)
            .or_default()
            .push((at("started_at")?, at("finished_at")?));
    }
    let last = spans
        .values()
        .flatten()
        .map(|(_, end)| *end)
        .max()
        .unwrap_or(begun);
    let took = Duration::from_millis((last - begun).max(0) as u64);
    host.host.shutdown().await;
    let mut overlaps = 0;
    for calls in spans.values_mut() {
        calls.sort();
        overlaps += calls.windows(2).filter(|p| p[1].0 < p[0].1).count();
    }
    if overlaps > 0 {
        bail!("{overlaps} calls began on a key before its holder's call ended");
    }
    let ideal = CALL * (sagas / KEYS) as u32;
    report.add(
        "concurrency keys",
        format!("{sagas} sagas of one 20 ms HTTP step on {KEYS} keys of limit 1, started at once: until the last call ended (no overlap on any key)"),
        ms(took),
        format!("{} ideal", ms(ideal)),
        format!("{:.2}×", took.as_secs_f64() / ideal.as_secs_f64()),
        "within 10 % of the ideal",
    );
    Ok(())
}

async fn wait_completed(host: &LocalHost, id: &str) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let saga: serde_json::Value = host
            .http
            .get(format!("{}/v1/sagas/{id}", host.base))
            .send()
            .await?
            .json()
            .await?;
        match saga["status"].as_str() {
            Some("completed") => return Ok(saga),
            Some("pending" | "running") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => bail!("saga {id} ended {other:?}: {saga}"),
        }
    }
}
