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

/// Uploads a bundled plugin to the server at `base`.
async fn upload(http: &wasaga_tests::Http, base: &str, name: &str) {
    let r = http
        .post(format!("{base}/v1/plugins"))
        .body(component(name))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "uploading {name}: {}", r.status());
}

/// Uploads `plugin`, sets the secret `cloud-token` to the cloud's `token`,
/// and grants `plugin` the cloud's origin and that secret.
async fn upload_granted(
    http: &wasaga_tests::Http,
    base: &str,
    plugin: &str,
    cloud: &wasaga_tests::Cloud,
    token: &str,
) {
    upload(http, base, plugin).await;
    let r = http
        .put(format!("{base}/v1/secrets/cloud-token"))
        .json(&json!({"value": token, "origins": [cloud.origin()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .put(format!("{base}/v1/plugins/{plugin}/grants"))
        .json(&json!({"http": [cloud.origin()], "secrets": {"cloud-token": "use"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn upload_counter(http: &wasaga_tests::Http, base: &str, counter: &Counter) {
    counter.grant_on(http, base).await;
    upload(http, base, "counter").await;
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

/// A kill between a real API's create and the commit of the step's result:
/// the step runs again with the same idempotency key, and the provider
/// (the test cloud, which honours the key) holds one resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_create_and_commit_creates_nothing_twice() {
    let cloud = wasaga_tests::Cloud::start("crash-t0ken").await;
    let (created_tx, mut created_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    cloud.on_create(move || {
        let created_tx = created_tx.clone();
        async move {
            // The resource exists; hold the answer until the host is gone.
            let _ = created_tx.send(());
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let args = keyed_args(dir.path());
    let http = wasaga_tests::Http::new();
    let mut server = ServerProcess::start(BIN, &args, dir.path().join("first.log"))
        .await
        .unwrap();
    let base = server.base.clone();
    upload_granted(&http, &base, "http-resource", &cloud, "crash-t0ken").await;
    let r = http
        .post(format!("{base}/v1/sagas"))
        .json(&json!({"kind": "provision", "steps": ["http-resource"], "inputs": {"api": cloud.origin(), "name": "db-1"}}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::timeout(Duration::from_secs(60), created_rx.recv())
        .await
        .expect("the step called the cloud");
    server.kill();
    assert_eq!(cloud.resources().len(), 1, "created before the kill");

    let server = ServerProcess::start(BIN, &args, dir.path().join("second.log"))
        .await
        .unwrap();
    let saga = poll_saga(&http, &server.base, &id, Duration::from_secs(60), |s| {
        s["status"] == "completed"
    })
    .await;
    assert_eq!(
        saga["steps"][0]["attempts"], 2,
        "the interrupted call ran again"
    );
    let resources = cloud.resources();
    assert_eq!(
        resources.len(),
        1,
        "the key made the second create the first: {resources:?}"
    );
    assert_eq!(cloud.counts().0, 2, "two calls to create");
    let id_in_cloud = resources.keys().next().unwrap();
    assert_eq!(saga["context"]["resource_id"], id_in_cloud.as_str());
    assert_eq!(saga["resources"].as_array().unwrap().len(), 1);
}

/// SIGTERM while a step waits in a host call (a minute's sleep): the host
/// gives it the grace period, then interrupts it, and exits; a restart
/// runs the step again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_step_waiting_in_a_host_call_exits_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--data-dir".to_string(),
        dir.path().display().to_string(),
        "--no-examples".into(),
        "--shutdown-grace".into(),
        "2s".into(),
    ];
    let http = wasaga_tests::Http::new();
    let mut server = ServerProcess::start(BIN, &args, dir.path().join("first.log"))
        .await
        .unwrap();
    let r = http
        .post(format!("{}/v1/plugins", server.base))
        .body(component("fetch"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = http
        .post(format!("{}/v1/sagas", server.base))
        .json(&json!({"kind": "sleepy", "steps": [{"plugin": "fetch", "timeout_ms": 120000}], "inputs": {"sleep_ms": 60000}}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    poll_saga(&http, &server.base, &id, Duration::from_secs(60), |s| {
        s["steps"][0]["status"] == "running"
    })
    .await;
    let asked = Instant::now();
    let status = server.terminate();
    let took = asked.elapsed();
    assert!(status.success(), "wasaga serve exited with {status}");
    assert!(
        took < Duration::from_secs(30),
        "shutdown took {took:?}: the one-minute sleep was not interrupted"
    );
    let log = std::fs::read_to_string(dir.path().join("first.log")).unwrap();
    assert!(
        log.contains("steps still running after the grace period; interrupting them"),
        "{log}"
    );
}

/// `wasaga serve` flags for a test database, without the bundled examples.
/// `serve` on SQLite in `dir`, with a secrets key there and no examples.
fn keyed_args(dir: &std::path::Path) -> Vec<String> {
    let key = wasaga_tests::secrets_key_file(dir);
    vec![
        "--data-dir".to_string(),
        dir.display().to_string(),
        "--no-examples".into(),
        "--secrets-key-file".into(),
        key.display().to_string(),
    ]
}

fn db_args(db: &wasaga_tests::TestDb) -> Vec<String> {
    vec![
        "--database".to_string(),
        db.url.clone(),
        "--data-dir".into(),
        db.dir.path().display().to_string(),
        "--no-examples".into(),
    ]
}

/// A durable wait survives SIGKILL: a step answered `poll-after` 2.5 s, the
/// host is killed during the wait and restarted; the next call comes at
/// `waiting_until`, not before, with the same attempt. On both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_survives_a_sigkill_and_is_not_called_early() {
    for backend in [
        wasaga_tests::Backend::Sqlite,
        wasaga_tests::Backend::Postgres,
    ] {
        let counter = Counter::start().await;
        let db = wasaga_tests::TestDb::new(backend).await;
        let args = db_args(&db);
        let http = wasaga_tests::Http::new();
        let mut server = ServerProcess::start(BIN, &args, db.dir.path().join("first.log"))
            .await
            .unwrap();
        let base = server.base.clone();
        upload(&http, &base, "poll").await;
        counter.grant_on_to("poll", &http, &base).await;
        let inputs = json!({"counter_url": counter.url(), "polls": 1, "poll_ms": 2500});
        let r = http
            .post(format!("{base}/v1/sagas"))
            .json(&json!({"kind": "wait", "steps": ["poll"], "inputs": inputs}))
            .send()
            .await
            .unwrap();
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let waiting = poll_saga(&http, &base, &id, Duration::from_secs(60), |s| {
            !s["steps"][0]["waiting_until"].is_null()
        })
        .await;
        let until: wasaga::model::Timestamp =
            serde_json::from_value(waiting["steps"][0]["waiting_until"].clone()).unwrap();
        server.kill();

        let server = ServerProcess::start(BIN, &args, db.dir.path().join("second.log"))
            .await
            .unwrap();
        let done = poll_saga(&http, &server.base, &id, Duration::from_secs(60), |s| {
            s["status"] == "completed"
        })
        .await;
        assert_eq!(
            done["steps"][0]["attempts"], 1,
            "{backend:?}: a wait is not an attempt"
        );
        assert_eq!(done["steps"][0]["polls"], 1);
        let calls = counter.calls();
        assert_eq!(calls.len(), 2, "{backend:?}: {calls:?}");
        let second = calls[1]
            .at
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            second >= until.millis(),
            "{backend:?}: called again at {second}, before waiting_until {}",
            until.millis()
        );
    }
}

/// A pause survives SIGKILL: a saga paused between steps stays paused
/// across a kill and a restart (no step runs), and resumes where it
/// stopped, each step executed once. On both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_a_sigkill() {
    for backend in [
        wasaga_tests::Backend::Sqlite,
        wasaga_tests::Backend::Postgres,
    ] {
        let counter = Counter::start().await;
        let db = wasaga_tests::TestDb::new(backend).await;
        let mut args = db_args(&db);
        args.extend(["--poll-interval".into(), "100ms".into()]);
        let http = wasaga_tests::Http::new();
        let mut server = ServerProcess::start(BIN, &args, db.dir.path().join("first.log"))
            .await
            .unwrap();
        let base = server.base.clone();
        upload_counter(&http, &base, &counter).await;
        // Paused while step 0 runs: step 0 finishes, step 1 does not start.
        let pause_base = base.clone();
        counter.on_call(move |call| {
            let base = pause_base.clone();
            async move {
                if call.step == 0 {
                    let r = wasaga_tests::Http::new()
                        .post(format!("{base}/v1/sagas/{}/pause", call.saga))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
                }
            }
        });
        let r = http
            .post(format!("{base}/v1/sagas"))
            .json(&json!({"kind": "k", "steps": ["counter", "counter", "counter"], "inputs": {"counter_url": counter.url()}}))
            .send()
            .await
            .unwrap();
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        poll_saga(&http, &base, &id, Duration::from_secs(60), |s| {
            s["status"] == "paused"
        })
        .await;
        server.kill();

        let server = ServerProcess::start(BIN, &args, db.dir.path().join("second.log"))
            .await
            .unwrap();
        // Several of the restarted host's polls pass: still paused, no call.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let after = http
            .get(format!("{}/v1/sagas/{id}", server.base))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(after["status"], "paused", "{backend:?}: {after}");
        assert_eq!(counter.calls().len(), 1, "{backend:?}: only step 0 ran");
        let r = http
            .post(format!("{}/v1/sagas/{id}/resume", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
        let done = poll_saga(&http, &server.base, &id, Duration::from_secs(60), |s| {
            s["status"] == "completed"
        })
        .await;
        let steps: Vec<u32> = counter.calls().iter().map(|c| c.step).collect();
        assert_eq!(
            steps,
            vec![0, 1, 2],
            "{backend:?}: each step once, in order"
        );
        for row in done["steps"].as_array().unwrap() {
            assert_eq!(row["attempts"], 1, "{backend:?}: {row}");
        }
    }
}

/// A concurrency key belongs to the saga, not the host: a saga holding a
/// key while it waits, and one queued behind it, survive a SIGKILL; after
/// the restart the first still holds the key and the second is admitted
/// only when the first ends. On both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_key_is_held_across_a_sigkill() {
    for backend in [
        wasaga_tests::Backend::Sqlite,
        wasaga_tests::Backend::Postgres,
    ] {
        let counter = Counter::start().await;
        let db = wasaga_tests::TestDb::new(backend).await;
        let args = db_args(&db);
        let http = wasaga_tests::Http::new();
        let mut server = ServerProcess::start(BIN, &args, db.dir.path().join("first.log"))
            .await
            .unwrap();
        let base = server.base.clone();
        for name in ["poll", "echo"] {
            upload(&http, &base, name).await;
        }
        counter.grant_on_to("poll", &http, &base).await;
        let key = json!([{"key": "customer:{{inputs.customer}}"}]);
        let start = |steps: Value, inputs: Value| {
            let body =
                json!({"kind": "offboard", "steps": steps, "inputs": inputs, "concurrency": key});
            let request = http.post(format!("{base}/v1/sagas")).json(&body);
            async move {
                let r = request.send().await.unwrap();
                assert_eq!(r.status(), reqwest::StatusCode::CREATED);
                r.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
        };
        let holder = start(
            json!(["poll"]),
            json!({"customer": "acme", "counter_url": counter.url(), "polls": 1, "poll_ms": 1500}),
        )
        .await;
        let queued = start(json!(["echo"]), json!({"customer": "acme"})).await;
        poll_saga(&http, &base, &holder, Duration::from_secs(60), |s| {
            !s["steps"][0]["waiting_until"].is_null()
        })
        .await;
        server.kill();

        let server = ServerProcess::start(BIN, &args, db.dir.path().join("second.log"))
            .await
            .unwrap();
        let base = server.base.clone();
        let status: Value = http
            .get(format!("{base}/v1/concurrency/customer:acme"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            status["holders"][0]["saga_id"], holder,
            "{backend:?}: {status}"
        );
        assert_eq!(
            status["queue"][0]["saga_id"], queued,
            "{backend:?}: {status}"
        );
        let done = |id: String| {
            let http = &http;
            let base = base.clone();
            async move {
                poll_saga(http, &base, &id, Duration::from_secs(60), |s| {
                    s["status"] == "completed"
                })
                .await
            }
        };
        let first = done(holder).await;
        let second = done(queued).await;
        let ended = first["steps"][0]["finished_at"]
            .as_str()
            .unwrap()
            .to_string();
        let began = second["steps"][0]["started_at"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            began >= ended,
            "{backend:?}: the queued saga began at {began}, before the holder ended at {ended}"
        );
    }
}

/// A saga waiting for a message (docs/waits.md) is a row and a time: a
/// SIGKILL while it waits loses nothing, and a message posted to the next
/// host completes the wait; a message posted before its saga even started
/// is taken as the wait opens. On both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_a_message_survives_a_sigkill() {
    for backend in [
        wasaga_tests::Backend::Sqlite,
        wasaga_tests::Backend::Postgres,
    ] {
        let db = wasaga_tests::TestDb::new(backend).await;
        let args = db_args(&db);
        let http = wasaga_tests::Http::new();
        let mut server = ServerProcess::start(BIN, &args, db.dir.path().join("first.log"))
            .await
            .unwrap();
        let base = server.base.clone();
        upload(&http, &base, "echo").await;
        let post = |base: String, path: &'static str, body: Value| {
            let request = http.post(format!("{base}{path}")).json(&body);
            async move {
                let r = request.send().await.unwrap();
                assert_eq!(r.status(), reqwest::StatusCode::CREATED, "{path}");
                r.json::<Value>().await.unwrap()
            }
        };
        let saga = |order: u32| {
            json!({"kind": "order", "inputs": {"order": order}, "steps": [
                {"wait": {"name": "paid", "timeout": "1h", "correlation_key": "order:{{inputs.order}}"}},
                "echo",
            ]})
        };
        let early = post(
            base.clone(),
            "/v1/messages",
            json!({"key": "order:2", "payload": {"early": true}}),
        )
        .await;
        assert_eq!(early["status"], "kept", "{backend:?}: {early}");
        let waiting = post(base.clone(), "/v1/sagas", saga(1)).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        poll_saga(&http, &base, &waiting, Duration::from_secs(60), |s| {
            s["steps"][0]["status"] == "waiting"
        })
        .await;
        server.kill();

        let server = ServerProcess::start(BIN, &args, db.dir.path().join("second.log"))
            .await
            .unwrap();
        let base = server.base.clone();
        let delivered = post(
            base.clone(),
            "/v1/messages",
            json!({"key": "order:1", "payload": {"paid": 10}}),
        )
        .await;
        assert_eq!(delivered["status"], "delivered", "{backend:?}: {delivered}");
        let done = poll_saga(&http, &base, &waiting, Duration::from_secs(60), |s| {
            s["status"] == "completed"
        })
        .await;
        assert_eq!(
            done["context"]["paid"],
            json!({"paid": 10}),
            "{backend:?}: {done}"
        );
        let second = post(base.clone(), "/v1/sagas", saga(2)).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let done = poll_saga(&http, &base, &second, Duration::from_secs(60), |s| {
            s["status"] == "completed"
        })
        .await;
        assert_eq!(
            done["context"]["paid"],
            json!({"early": true}),
            "{backend:?}: {done}"
        );
        drop(server);
    }
}

/// A redrive survives SIGKILL: a `failed` saga (step 0's compensation
/// failed) is redriven with `rewind`, and the host is killed while the
/// rewind's compensation of step 0 is in flight. After a restart the walk
/// goes on with that compensation's next attempt (same idempotency key),
/// then the steps run forward with new keys. Every call is counted from
/// outside; attempts are calls begun. On both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_survives_a_sigkill_mid_rewind() {
    for backend in [
        wasaga_tests::Backend::Sqlite,
        wasaga_tests::Backend::Postgres,
    ] {
        let counter = Counter::start().await;
        let db = wasaga_tests::TestDb::new(backend).await;
        let args = db_args(&db);
        let http = wasaga_tests::Http::new();
        let mut server = ServerProcess::start(BIN, &args, db.dir.path().join("first.log"))
            .await
            .unwrap();
        let base = server.base.clone();
        upload_counter(&http, &base, &counter).await;
        let step = json!({"plugin": "counter", "max_attempts": 2});
        let r = http
            .post(format!("{base}/v1/sagas"))
            .json(&json!({"kind": "k", "steps": [step, step, step], "inputs": {
                "counter_url": counter.url(), "counter_fail_at": [2], "counter_compensate_fail_at": [0],
            }}))
            .send()
            .await
            .unwrap();
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        poll_saga(&http, &base, &id, Duration::from_secs(60), |s| {
            s["status"] == "failed"
        })
        .await;

        // The rewind's compensation of step 0 hangs at the provider; the
        // host is killed while it is in flight.
        let in_flight = std::sync::Arc::new(tokio::sync::Notify::new());
        let seen = in_flight.clone();
        counter.on_call(move |call| {
            let seen = seen.clone();
            async move {
                if call.step == 0 && call.phase == "compensate" && call.attempt == 3 {
                    seen.notify_one();
                }
            }
        });
        counter.set_delay(Duration::from_secs(30));
        let r = http
            .post(format!("{base}/v1/sagas/{id}/redrive"))
            .json(&json!({"mode": "rewind", "from_step": 0,
                          "inputs_patch": {"counter_fail_at": null, "counter_compensate_fail_at": null}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED, "{backend:?}");
        tokio::time::timeout(Duration::from_secs(60), in_flight.notified())
            .await
            .expect("the rewind's compensation began");
        server.kill();
        counter.set_delay(Duration::ZERO);

        let server = ServerProcess::start(BIN, &args, db.dir.path().join("second.log"))
            .await
            .unwrap();
        let done = poll_saga(&http, &server.base, &id, Duration::from_secs(60), |s| {
            s["status"] == "completed"
        })
        .await;
        let calls: Vec<(u32, String, u32, String)> = counter
            .calls_of(&id.parse().unwrap())
            .into_iter()
            .map(|c| (c.step, c.phase, c.attempt, c.key))
            .collect();
        let compensations: Vec<&(u32, String, u32, String)> = calls
            .iter()
            .filter(|c| c.0 == 0 && c.1 == "compensate")
            .collect();
        // Two failed before the redrive, the one cut short, its retry.
        assert_eq!(
            compensations.iter().map(|c| c.2).collect::<Vec<_>>(),
            [1, 2, 3, 4],
            "{backend:?}: {calls:?}"
        );
        assert!(
            compensations
                .iter()
                .all(|c| c.3 == format!("{id}:0:compensate")),
            "{backend:?}: {calls:?}"
        );
        assert_eq!(
            done["steps"][0]["compensate_attempts"], 4,
            "{backend:?}: {done}"
        );
        // Then forward, each step with its new key.
        let executed: Vec<&String> = calls
            .iter()
            .filter(|c| c.1 == "execute")
            .skip(3)
            .map(|c| &c.3)
            .collect();
        assert_eq!(
            executed,
            [
                &format!("{id}:0:execute:r1"),
                &format!("{id}:1:execute:r1"),
                &format!("{id}:2:execute:r1"),
            ],
            "{backend:?}: {calls:?}"
        );
        assert_eq!(done["redrives"], 1, "{backend:?}");
        drop(server);
    }
}

/// `observe` after a SIGKILL mid-call (contract 0.3.0): the `observed`
/// step's create reached the test cloud, and the host died before the
/// answer. On the restart the host asks `observe` before calling again.
///
/// - Applied (the cloud made the resource): the step completes with what
///   observe saw, and nothing is created or called again: one create, one
///   attempt; the step is `at_most_once`, which without observe would go
///   `in_doubt`.
/// - Not applied (the cloud held the create, then refused it having made
///   nothing): the step runs again, attempt 2, and creates once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_after_a_sigkill_mid_call_decides_between_done_and_run_again() {
    for applied in [true, false] {
        let cloud = wasaga_tests::Cloud::start("observe-t0ken").await;
        let (reached_tx, mut reached_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        if applied {
            cloud.on_create(move || {
                let reached_tx = reached_tx.clone();
                async move {
                    // The resource exists; hold the answer until the host is gone.
                    let _ = reached_tx.send(());
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            });
        } else {
            cloud.hold_first_create(Duration::from_secs(2));
        }
        let dir = tempfile::tempdir().unwrap();
        let args = keyed_args(dir.path());
        let http = wasaga_tests::Http::new();
        let mut server = ServerProcess::start(BIN, &args, dir.path().join("first.log"))
            .await
            .unwrap();
        let base = server.base.clone();
        upload_granted(&http, &base, "observed", &cloud, "observe-t0ken").await;
        let r = http
            .post(format!("{base}/v1/sagas"))
            .json(&json!({
                "kind": "provision",
                "steps": [{"plugin": "observed", "semantics": "at_most_once", "max_attempts": 3}],
                "inputs": {"api": cloud.origin(), "name": "db-1"},
            }))
            .send()
            .await
            .unwrap();
        let created: Value = r.json().await.unwrap();
        let id = created["id"].as_str().expect("a saga id").to_string();
        if applied {
            tokio::time::timeout(Duration::from_secs(60), reached_rx.recv())
                .await
                .expect("the step called the cloud");
        } else {
            let deadline = Instant::now() + Duration::from_secs(60);
            while cloud.counts().0 == 0 {
                assert!(Instant::now() < deadline, "the step never called the cloud");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        server.kill();
        assert_eq!(cloud.resources().len(), usize::from(applied));

        let server = ServerProcess::start(BIN, &args, dir.path().join("second.log"))
            .await
            .unwrap();
        let saga = poll_saga(&http, &server.base, &id, Duration::from_secs(60), |s| {
            s["status"] == "completed"
        })
        .await;
        let row = &saga["steps"][0];
        let outcomes: Vec<&str> = row["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["outcome"].as_str().unwrap())
            .collect();
        let resources = cloud.resources();
        assert_eq!(resources.len(), 1, "{resources:?}");
        let in_cloud = resources.keys().next().unwrap();
        assert_eq!(saga["context"]["resource_id"], in_cloud.as_str(), "{saga}");
        assert_eq!(saga["resources"].as_array().unwrap().len(), 1, "{saga}");
        if applied {
            assert_eq!(outcomes, ["observe:applied"], "{row}");
            assert_eq!(row["attempts"], 1, "nothing ran again: {row}");
            assert_eq!(cloud.counts().0, 1, "one create");
        } else {
            assert_eq!(outcomes, ["observe:not-applied", "ok"], "{row}");
            assert_eq!(row["attempts"], 2, "the call ran again: {row}");
            assert_eq!(cloud.counts().0, 2, "the refused create and the real one");
        }
    }
}
