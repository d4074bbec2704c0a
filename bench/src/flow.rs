//! Flow control's figures (docs/flow-control.md): what a concurrency key
//! costs a saga with no contention, how close sagas serialized on shared
//! keys come to the ideal (one after another per key, keys side by side),
//! with the ledger's call times checked for overlap; and a provider budget
//! shared by two hosts on PostgreSQL, counted at the provider.

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

/// `--only budgets`: a budget of 50 requests/s (burst 10) shared by 2
/// hosts on one PostgreSQL database, sagas of one request each started on
/// both; the provider answers one `429 Retry-After: 2` halfway. Counted
/// at the provider: the most requests in any 1 s window, and the requests
/// within 2 s after the 429.
pub(crate) async fn shared_budget(report: &mut Report, quick: bool) -> Result<()> {
    report.measured_by(format!("{BENCH} --only budgets"));
    const RATE: usize = 50;
    const BURST: usize = 10;
    let sagas = if quick { 100 } else { 500 };
    let db = wasaga_tests::TestDb::new(wasaga_tests::Backend::Postgres).await;
    let start_host = || {
        let url = db.url.clone();
        LocalHost::start(move |o| {
            o.database_url = Some(url);
            o.runner.concurrency = 64;
            o.runtime.max_instances = 64;
        })
    };
    let hosts = [start_host().await?, start_host().await?];
    let provider = wasaga_tests::Provider::start().await;
    let origin = provider.url();
    let http = wasaga_tests::Http::new();
    let base = &hosts[0].base;
    let r = http
        .post(format!("{base}/v1/plugins"))
        .body(wasaga_tests::component("counter"))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("uploading counter: {}", r.status());
    }
    for (path, body) in [
        ("plugins/counter/grants", json!({"http": [origin]})),
        (
            "budgets/provider",
            json!({"origins": [origin], "rate": RATE, "per": "1s", "burst": BURST}),
        ),
    ] {
        let r = http
            .put(format!("{base}/v1/{path}"))
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("PUT {path}: {}", r.status());
        }
    }
    let mut ids = Vec::with_capacity(sagas);
    for i in 0..sagas {
        let body =
            json!({"kind": "budgeted", "steps": ["counter"], "inputs": {"counter_url": origin}});
        ids.push(hosts[i % 2].start_body(&body).await?);
    }
    // Halfway through the requests, the provider pushes back once.
    while provider.arrivals().len() < sagas / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    provider.throttle(1, "2");
    for id in &ids {
        wait_completed(&hosts[0], id).await?;
    }
    for host in hosts {
        host.host.shutdown().await;
    }
    let mut arrivals: Vec<Instant> = provider.arrivals().into_iter().map(|(_, at)| at).collect();
    arrivals.sort();
    let most = arrivals
        .iter()
        .enumerate()
        .map(|(i, at)| {
            arrivals[i..]
                .iter()
                .take_while(|later| later.duration_since(*at) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    let throttled = provider.first_429().context("the 429 was never sent")?;
    let during_pause = arrivals
        .iter()
        .filter(|at| **at > throttled && at.duration_since(throttled) < Duration::from_secs(2))
        .count();
    report.add(
        "provider budgets",
        format!("{sagas} sagas of one request, 2 hosts on PostgreSQL, budget 50/s burst 10: most requests in any 1 s window at the provider"),
        most.to_string(),
        format!("{} allowed", RATE + BURST),
        format!("{:.2}", most as f64 / (RATE + BURST) as f64),
        "≤ rate + burst",
    );
    report.add(
        "provider budgets",
        "requests reaching the provider within 2 s after its 429 Retry-After: 2",
        during_pause.to_string(),
        "0 allowed".into(),
        String::new(),
        "0",
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
