//! Several `wasaga serve` processes sharing one PostgreSQL: one is killed
//! with SIGKILL mid-run and its sagas finish on the others, with no step
//! that was recorded completed running again; a cancel sent to any host
//! interrupts the step wherever it runs.

use serde_json::{Value, json};
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use wasaga_tests::{Backend, Counter, ServerProcess, TestDb, component, poll_saga};

const BIN: &str = env!("CARGO_BIN_EXE_wasaga");

async fn start_host(db: &TestDb, node: &str, extra: &[&str]) -> ServerProcess {
    let dir = db.dir.path().join(node);
    let mut args = vec![
        "--database".to_string(),
        db.url.clone(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--node-id".into(),
        node.into(),
        "--no-examples".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    std::fs::create_dir_all(&dir).unwrap();
    ServerProcess::start(BIN, &args, db.dir.path().join(format!("{node}.log")))
        .await
        .unwrap()
}

/// Completed (saga, step) pairs in the database right now.
async fn completed_steps(url: &str) -> BTreeSet<(String, u32)> {
    let mut conn = sqlx::PgConnection::connect(url.split('?').next().unwrap())
        .await
        .unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT saga_id, step_index FROM saga_step_results WHERE status = 'completed'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.into_iter().map(|(s, i)| (s, i as u32)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_one_killed_every_saga_completes_once() {
    const SAGAS: usize = 300;
    const STEPS: usize = 4;
    let db = TestDb::new(Backend::Postgres).await;
    let counter = Counter::start().await;
    counter.set_delay(Duration::from_millis(10));
    let lease = [
        "--lease-ttl",
        "2s",
        "--poll-interval",
        "200ms",
        "--concurrency",
        "16",
    ];
    let mut hosts = Vec::new();
    for node in ["host-a", "host-b", "host-c"] {
        hosts.push(start_host(&db, node, &lease).await);
    }
    let http = wasaga_tests::Http::new();
    let r = http
        .post(format!("{}/v1/plugins", hosts[0].base))
        .body(component("counter"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Granted through one host; every host reads grants from the database.
    counter.grant_on(&http, &hosts[1].base).await;

    // Start the sagas round-robin through all three hosts' APIs: an upload
    // to one host is usable on all.
    let mut ids = Vec::new();
    for i in 0..SAGAS {
        let body = json!({"kind": "multi", "steps": vec!["counter"; STEPS], "inputs": {"counter_url": counter.url()}});
        let base = &hosts[i % 3].base;
        let r = http
            .post(format!("{base}/v1/sagas"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while counter.calls().len() < SAGAS * STEPS / 3 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hosts[1].kill();
    // What is recorded completed now must never run again: snapshot first,
    // then mark where the counter's log stands.
    let done_at_kill = completed_steps(&db.url).await;
    let boundary = counter.calls().len();
    assert!(boundary < SAGAS * STEPS, "the kill came too late");

    let survivors = [&hosts[0], &hosts[2]];
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done: Value = http
            .get(format!(
                "{}/v1/sagas?status=completed&limit=1000",
                survivors[0].base
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done["sagas"].as_array().unwrap().len() == SAGAS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {SAGAS} sagas completed",
            done["sagas"].as_array().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let calls = counter.calls();
    for call in &calls[boundary..] {
        assert!(
            !done_at_kill.contains(&(call.saga.clone(), call.step)),
            "step {} of saga {} was completed when host-b died, but ran again: {call:?}",
            call.step,
            call.saga
        );
    }
    let mut ran_by: BTreeMap<String, usize> = BTreeMap::new();
    let mut reruns = 0;
    for id in &ids {
        let saga: Value = http
            .get(format!("{}/v1/sagas/{id}", survivors[1].base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(saga["status"], "completed");
        for step in 0..STEPS as u32 {
            let row = &saga["steps"][step as usize];
            *ran_by
                .entry(row["executed_by"].as_str().unwrap().to_string())
                .or_default() += 1;
            let runs: Vec<_> = calls
                .iter()
                .filter(|c| &c.saga == id && c.step == step && c.phase == "execute")
                .collect();
            assert_eq!(
                runs.last().unwrap().attempt as u64,
                row["attempts"].as_u64().unwrap()
            );
            for pair in runs.windows(2) {
                assert!(
                    pair[1].attempt > pair[0].attempt && pair[0].key == pair[1].key,
                    "{runs:?}"
                );
            }
            if runs.len() > 1 {
                reruns += 1;
            }
        }
    }
    for node in ["host-a", "host-b", "host-c"] {
        assert!(
            ran_by.get(node).copied().unwrap_or(0) > 0,
            "{node} ran nothing: {ran_by:?}"
        );
    }
    // Only steps in flight on host-b when it died ran twice.
    assert!(reruns <= 16, "{reruns} steps ran more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_any_host_interrupts_the_step_where_it_runs() {
    let db = TestDb::new(Backend::Postgres).await;
    // Leases renew every 20 s here, so only a notice can carry the cancel
    // across in time.
    let slow = ["--lease-ttl", "60s", "--poll-interval", "30s"];
    let a = start_host(&db, "host-a", &slow).await;
    let b = start_host(&db, "host-b", &slow).await;
    let http = wasaga_tests::Http::new();
    http.post(format!("{}/v1/plugins", a.base))
        .body(component("spin"))
        .send()
        .await
        .unwrap();
    let body = json!({"kind": "k", "steps": [{"plugin": "spin", "timeout_ms": 120000}]});
    let saga: Value = http
        .post(format!("{}/v1/sagas", a.base))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = saga["id"].as_str().unwrap().to_string();
    // Let it run on host-a, then cancel through host-b.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = http
        .post(format!("{}/v1/sagas/{id}/cancel", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The cancel must reach host-a within 10 s.
    let s = poll_saga(&http, &b.base, &id, Duration::from_secs(10), |s| {
        s["status"] == "rolled_back"
    })
    .await;
    assert_eq!(s["steps"][0]["error"], "interrupted by a cancel request");
    assert_eq!(s["steps"][0]["executed_by"], "host-a");
}
