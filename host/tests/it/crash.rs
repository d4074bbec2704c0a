//! Crashes lose nothing: the real `wasaga serve` binary runs 50 sagas, is
//! killed with SIGKILL mid-run, and restarted on the same data directory.
//! Every saga must complete, and the counter (an HTTP endpoint outside the
//! host, which every step call reports to) must show that no step recorded
//! completed at the moment of the kill ran again afterwards.

use serde_json::{Value, json};
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use wasaga_tests::{Counter, ServerProcess, component, poll_saga};

const BIN: &str = env!("CARGO_BIN_EXE_wasaga");

const SAGAS: usize = 50;
const STEPS: usize = 5;

async fn upload_counter(http: &wasaga_tests::Http, base: &str, counter: &Counter) {
    counter.grant_on(http, base).await;
    let r = http
        .post(format!("{base}/v1/plugins"))
        .body(component("counter"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Completed (saga, step) pairs as the database holds them: what was
/// acknowledged before the kill.
async fn completed_steps(db: &std::path::Path) -> BTreeSet<(String, u32)> {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT saga_id, step_index FROM saga_step_results WHERE status = 'completed'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.into_iter().map(|(s, i)| (s, i as u32)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_nothing_and_reruns_no_completed_step() {
    let counter = Counter::start().await;
    // A slow external API: each call takes 15 ms, so the kill lands mid-run.
    counter.set_delay(Duration::from_millis(15));
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--data-dir".to_string(),
        dir.path().display().to_string(),
        "--no-examples".into(),
        "--concurrency".into(),
        "16".into(),
    ];
    let http = wasaga_tests::Http::new();
    let mut server = ServerProcess::start(BIN, &args, dir.path().join("first.log"))
        .await
        .unwrap();
    upload_counter(&http, &server.base, &counter).await;

    let mut ids = Vec::new();
    for i in 0..SAGAS {
        let body = json!({"kind": "crash-test", "steps": vec!["counter"; STEPS], "inputs": {"counter_url": counter.url(), "n": i}});
        let r = http
            .post(format!("{}/v1/sagas", server.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Kill once a third of the work has been reported, but not all of it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter.calls().len() < SAGAS * STEPS / 3 {
        assert!(Instant::now() < deadline, "the sagas did not make progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let calls_before_kill = counter.calls().len();
    assert!(
        calls_before_kill < SAGAS * STEPS,
        "the kill came too late to test anything"
    );
    let done_before_kill = completed_steps(&dir.path().join("wasaga.db")).await;
    assert!(!done_before_kill.is_empty());

    let server = ServerProcess::start(BIN, &args, dir.path().join("second.log"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut details = BTreeMap::new();
    for id in &ids {
        let left = deadline.saturating_duration_since(Instant::now());
        let saga = poll_saga(&http, &server.base, id, left, |saga| {
            let status = saga["status"].as_str().unwrap();
            assert!(
                !["rolled_back", "failed"].contains(&status),
                "saga {id} ended {status}: {saga}"
            );
            status == "completed"
        })
        .await;
        details.insert(id.clone(), saga);
    }

    let calls = counter.calls();
    let after_kill = &calls[calls_before_kill..];
    // No step that was recorded completed at the kill ran again.
    for call in after_kill {
        assert!(
            !done_before_kill.contains(&(call.saga.clone(), call.step)),
            "step {} of saga {} was completed before the kill but ran again: {call:?}",
            call.step,
            call.saga
        );
    }
    // Every step ran; steps in flight at the kill ran again with the next
    // attempt and the same idempotency key; the ledger agrees.
    let mut reruns = 0;
    for (id, saga) in &details {
        for step in 0..STEPS as u32 {
            let runs: Vec<_> = calls
                .iter()
                .filter(|c| &c.saga == id && c.step == step && c.phase == "execute")
                .collect();
            assert!(!runs.is_empty(), "step {step} of {id} never ran");
            let row = &saga["steps"][step as usize];
            assert_eq!(row["status"], "completed");
            let attempts = row["attempts"].as_u64().unwrap() as u32;
            assert_eq!(
                runs.last().unwrap().attempt,
                attempts,
                "the ledger names the last attempt"
            );
            for pair in runs.windows(2) {
                assert!(pair[1].attempt > pair[0].attempt, "attempts grow: {runs:?}");
                assert_eq!(pair[0].key, pair[1].key, "the same idempotency key");
            }
            assert_eq!(runs[0].key, format!("{id}:{step}:execute"));
            if runs.len() > 1 {
                reruns += 1;
            }
        }
        assert_eq!(saga["context"].as_object().unwrap().len(), STEPS);
    }
    // Only steps in flight at the kill can have run twice: at most one per
    // saga being driven (16).
    assert!(reruns <= 16, "{reruns} steps ran more than once");
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    assert!(
        log.contains("released leases left by a previous process"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_steps_finish_releases_leases_and_a_restart_runs_nothing_twice() {
    let counter = Counter::start().await;
    counter.set_delay(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--data-dir".to_string(),
        dir.path().display().to_string(),
        "--no-examples".into(),
        "--concurrency".into(),
        "4".into(),
        "--shutdown-grace".into(),
        "20s".into(),
    ];
    let http = wasaga_tests::Http::new();
    let mut server = ServerProcess::start(BIN, &args, dir.path().join("first.log"))
        .await
        .unwrap();
    upload_counter(&http, &server.base, &counter).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        let body = json!({"kind": "drain", "steps": vec!["counter"; 5], "inputs": {"counter_url": counter.url()}});
        let r = http
            .post(format!("{}/v1/sagas", server.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    while counter.calls().len() < 6 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = server.terminate();
    assert!(status.success(), "wasaga serve exited with {status}");

    let url = format!(
        "sqlite://{}?mode=ro",
        dir.path().join("wasaga.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga_step_results WHERE status = 'running'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        running, 0,
        "the steps in flight finished within the grace period"
    );
    let leased: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga_runs WHERE lease_owner IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(leased, 0, "every lease was released");
    let log = std::fs::read_to_string(dir.path().join("first.log")).unwrap();
    assert!(log.contains("SIGTERM: shutting down"), "{log}");

    let server = ServerProcess::start(BIN, &args, dir.path().join("second.log"))
        .await
        .unwrap();
    for id in &ids {
        poll_saga(&http, &server.base, id, Duration::from_secs(60), |saga| {
            saga["status"] == "completed"
        })
        .await;
    }
    let calls = counter.calls();
    assert_eq!(calls.len(), 8 * 5, "every step ran exactly once: {calls:?}");
    assert!(calls.iter().all(|c| c.attempt == 1));
}
