//! A soak with crashes, on SQLite and on PostgreSQL: the real `wasaga
//! serve` runs sagas of mixed steps (succeeding, retried, failing for good,
//! compensating, refusing to compensate, slow) while it is SIGKILLed at
//! random moments several times and restarted; clients keep starting sagas
//! through the kills, retrying with their idempotency keys. At the end,
//! from the API and from the counter (an HTTP endpoint outside the host
//! that every call reports to):
//!
//! - every acknowledged saga exists and ended, as its script says it must;
//! - a step's attempts are the calls begun: the ledger's count equals the
//!   calls the counter saw, give or take the calls a kill cut short (each
//!   a gap in the attempt numbers), and attempts only grow, under one key;
//! - no step recorded completed (or compensated) at a kill ran (or was
//!   compensated) again after it;
//! - a rolled-back saga compensated exactly the steps that completed, each
//!   once, in reverse order.
//!
//! Quick by default (CI); `WASAGA_SOAK_SAGAS` and `WASAGA_SOAK_KILLS` make
//! it longer (the bench runs it so).

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasaga_tests::{Backend, Call, Counter, Http, ServerProcess, TestDb, component};

const BIN: &str = env!("CARGO_BIN_EXE_wasaga");
const STEPS: u32 = 3;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a saga's steps are scripted to do (the counter plugin's inputs).
#[derive(Debug, Clone)]
struct Script {
    fail_at: Option<u32>,
    retry_until: BTreeMap<u32, u32>,
    compensate_fail_at: Option<u32>,
}

impl Script {
    fn random(rng: &mut impl Rng) -> Script {
        let mut script = Script {
            fail_at: None,
            retry_until: BTreeMap::new(),
            compensate_fail_at: None,
        };
        match rng.random_range(0..10) {
            // Succeeds, some steps after retries.
            0..=5 => {
                if rng.random_bool(0.5) {
                    script.retry_until.insert(rng.random_range(0..STEPS), 2);
                }
            }
            // Fails for good at a step: the earlier ones are compensated.
            6 | 7 => script.fail_at = Some(rng.random_range(0..STEPS)),
            // Retries run out (the attempt limit is 3).
            8 => {
                script.retry_until.insert(rng.random_range(0..STEPS), 5);
            }
            // The last step fails and step 0 refuses to be compensated.
            _ => {
                script.fail_at = Some(STEPS - 1);
                script.compensate_fail_at = Some(0);
            }
        }
        script
    }

    /// The step that fails for good, if any.
    fn failing_step(&self) -> Option<u32> {
        let exhausted = self
            .retry_until
            .iter()
            .filter(|(_, until)| **until > 3)
            .map(|(step, _)| *step);
        self.fail_at.into_iter().chain(exhausted).min()
    }

    fn inputs(&self, counter: &str, n: usize) -> Value {
        let retry: BTreeMap<String, u32> = self
            .retry_until
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        json!({
            "counter_url": counter,
            "n": n,
            "counter_fail_at": self.fail_at.into_iter().collect::<Vec<_>>(),
            "counter_retry_until": retry,
            "counter_compensate_fail_at": self.compensate_fail_at.into_iter().collect::<Vec<_>>(),
        })
    }
}

/// Where the database is, to read what was committed at a kill.
enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Db {
    /// (saga, step) pairs recorded completed, and recorded compensated.
    async fn recorded(&self) -> (BTreeSet<(String, u32)>, BTreeSet<(String, u32)>) {
        const SQL: &str = "SELECT saga_id, step_index, status FROM saga_step_results
                           WHERE status IN ('completed', 'compensated')";
        let rows: Vec<(String, i64, String)> = match self {
            Db::Sqlite(path) => {
                let url = format!("sqlite://{}?mode=ro", path.display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query_as(SQL).fetch_all(&mut conn).await.unwrap()
            }
            Db::Postgres(url) => {
                let base = url.split('?').next().unwrap();
                let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
                sqlx::query_as(SQL).fetch_all(&mut conn).await.unwrap()
            }
        };
        let mut completed = BTreeSet::new();
        let mut compensated = BTreeSet::new();
        for (saga, step, status) in rows {
            let pair = (saga, step as u32);
            match status.as_str() {
                // A compensated step had completed too.
                "compensated" => {
                    completed.insert(pair.clone());
                    compensated.insert(pair);
                }
                _ => {
                    completed.insert(pair);
                }
            }
        }
        (completed, compensated)
    }
}

/// What was recorded at one kill, and how many calls the counter had seen.
struct Kill {
    calls_seen: usize,
    completed: BTreeSet<(String, u32)>,
    compensated: BTreeSet<(String, u32)>,
}

async fn soak(backend: Backend) {
    let sagas = setting("WASAGA_SOAK_SAGAS", 240);
    let kills = setting("WASAGA_SOAK_KILLS", 3);
    let seed = setting("WASAGA_SOAK_SEED", 7) as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let counter = Counter::start().await;
    // A slow external API: kills land mid-call.
    counter.set_delay(Duration::from_millis(3));
    let dir = tempfile::tempdir().unwrap();
    let test_db = TestDb::new(backend).await;
    let mut args = vec![
        "--data-dir".to_string(),
        dir.path().display().to_string(),
        "--no-examples".into(),
        "--concurrency".into(),
        "16".into(),
        "--poll-interval".into(),
        "100ms".into(),
        // A dead host's sagas move on after this (PostgreSQL keeps the
        // dead process's leases; SQLite releases them at open).
        "--lease-ttl".into(),
        "2s".into(),
        "--retry-backoff".into(),
        "20ms".into(),
    ];
    let db = match backend {
        Backend::Sqlite => Db::Sqlite(dir.path().join("wasaga.db")),
        Backend::Postgres => {
            args.extend(["--database".to_string(), test_db.url.clone()]);
            Db::Postgres(test_db.url.clone())
        }
    };
    let http = Http::new();
    let mut generation = 0;
    let start = |generation: usize| {
        let args = args.clone();
        let log = dir.path().join(format!("serve-{generation}.log"));
        async move { ServerProcess::start(BIN, &args, log).await.unwrap() }
    };
    let mut server = start(generation).await;
    let r = http
        .post(format!("{}/v1/plugins", server.base))
        .body(component("counter"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    counter.grant_on(&http, &server.base).await;
    let base = Arc::new(Mutex::new(server.base.clone()));

    // Clients start sagas through the kills, retrying with their keys.
    let scripts: Vec<Script> = (0..sagas).map(|_| Script::random(&mut rng)).collect();
    let producer = {
        let base = base.clone();
        let scripts = scripts.clone();
        let url = counter.url();
        tokio::spawn(async move {
            let http = Http::new();
            let mut acknowledged = BTreeMap::new();
            for (n, script) in scripts.iter().enumerate() {
                let body = json!({"kind": "soak", "steps": vec!["counter"; STEPS as usize], "inputs": script.inputs(&url, n)});
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    assert!(Instant::now() < deadline, "saga {n} could not be started");
                    let target = base.lock().unwrap().clone();
                    let answer = http
                        .post(format!("{target}/v1/sagas"))
                        .header("idempotency-key", format!("soak-{n}"))
                        .json(&body)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status().is_success() => {
                            let saga: Value = r.json().await.unwrap();
                            acknowledged.insert(n, saga["id"].as_str().unwrap().to_string());
                            break;
                        }
                        // The server is down or restarting: try again.
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
            acknowledged
        })
    };

    let mut recorded_at_kills = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        server.kill();
        let calls_seen = counter.calls().len();
        let (completed, compensated) = db.recorded().await;
        recorded_at_kills.push(Kill {
            calls_seen,
            completed,
            compensated,
        });
        generation += 1;
        server = start(generation).await;
        *base.lock().unwrap() = server.base.clone();
    }
    let acknowledged = producer.await.unwrap();
    assert_eq!(acknowledged.len(), sagas);

    // 1. Every acknowledged saga ended, as its script says.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut ended: BTreeMap<usize, Value> = BTreeMap::new();
    for (n, id) in &acknowledged {
        let left = deadline.saturating_duration_since(Instant::now());
        let saga = wasaga_tests::poll_saga(&http, &server.base, id, left, |s| {
            ["completed", "rolled_back", "failed"].contains(&s["status"].as_str().unwrap_or(""))
        })
        .await;
        ended.insert(*n, saga);
    }
    let calls = counter.calls();
    let mut by_step: BTreeMap<(&str, u32, &str), Vec<&Call>> = BTreeMap::new();
    for call in &calls {
        by_step
            .entry((call.saga.as_str(), call.step, call.phase.as_str()))
            .or_default()
            .push(call);
    }
    let mut interrupted = 0;
    let mut worn_out = 0;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (n, saga) in &ended {
        let id = saga["id"].as_str().unwrap();
        let status = saga["status"].as_str().unwrap();
        *outcomes.entry(status.to_string()).or_default() += 1;
        let script = &scripts[*n];
        // A step cut short by kills more often than its attempt limit fails
        // for good (the contract), earlier than the script says.
        let exhausted_by_kills = saga["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["phase"] == "execute" && cut_short(r))
            .map(|r| r["index"].as_u64().unwrap() as u32);
        // So does a compensation: the saga then ends failed, needing a human.
        let undo_worn_out = saga["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["phase"] == "compensate" && cut_short(r));
        if exhausted_by_kills.is_some() || undo_worn_out {
            worn_out += 1;
        }
        let failing = match (script.failing_step(), exhausted_by_kills) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expected = match (failing, script.compensate_fail_at) {
            (None, _) => "completed",
            (Some(_), _) if undo_worn_out => "failed",
            (Some(at), Some(refuses)) if refuses < at => "failed",
            (Some(_), _) => "rolled_back",
        };
        if status != expected {
            let seen: Vec<&Call> = calls.iter().filter(|c| c.saga == id).collect();
            panic!(
                "saga {n} ({script:?}) ended {status}, not {expected}: {saga}\ncalls: {seen:#?}"
            );
        }

        // 2. Attempts are the calls begun.
        for step in 0..STEPS {
            let row = saga["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["index"] == step);
            for (phase, field) in [
                ("execute", "attempts"),
                ("compensate", "compensate_attempts"),
            ] {
                let seen = by_step.get(&(id, step, phase)).cloned().unwrap_or_default();
                let ledger = row.map_or(0, |r| r[field].as_u64().unwrap() as u32);
                for pair in seen.windows(2) {
                    assert!(
                        pair[1].attempt > pair[0].attempt,
                        "{id} step {step} {phase}: {seen:?}"
                    );
                    assert_eq!(pair[0].key, pair[1].key);
                }
                let last_seen = seen.last().map_or(0, |c| c.attempt);
                assert!(
                    ledger >= last_seen,
                    "{id} step {step} {phase}: the ledger says {ledger} attempts, the counter saw attempt {last_seen}"
                );
                let cut = ledger - seen.len() as u32;
                assert!(
                    cut as usize <= kills,
                    "{id} step {step} {phase}: {ledger} attempts in the ledger, {} calls seen, {kills} kills",
                    seen.len()
                );
                interrupted += cut as usize;
            }
        }

        // 4. Rolled back: exactly the completed steps were compensated, in
        // reverse order (each once, but for calls a kill cut short).
        if status == "rolled_back" {
            let failing = failing.unwrap();
            let mut order: Vec<u32> = Vec::new();
            for c in calls
                .iter()
                .filter(|c| c.saga == id && c.phase == "compensate")
            {
                if order.last() != Some(&c.step) {
                    order.push(c.step);
                }
            }
            let expected: Vec<u32> = (0..failing).rev().collect();
            assert_eq!(order, expected, "saga {id} compensations");
        }
    }

    // 3. Nothing recorded done at a kill was done again after it.
    for kill in &recorded_at_kills {
        for call in &calls[kill.calls_seen..] {
            let pair = (call.saga.clone(), call.step);
            match call.phase.as_str() {
                "execute" => assert!(
                    !kill.completed.contains(&pair),
                    "step {} of {} was recorded completed at a kill and ran again: {call:?}",
                    call.step,
                    call.saga
                ),
                _ => assert!(
                    !kill.compensated.contains(&pair),
                    "step {} of {} was recorded compensated at a kill and was compensated again: {call:?}",
                    call.step,
                    call.saga
                ),
            }
        }
    }
    eprintln!(
        "soak on {backend:?}: {sagas} sagas, {kills} kills, {} calls, {interrupted} attempts cut short by a kill, \
         {worn_out} steps cut short past their attempt limit, outcomes {outcomes:?}",
        calls.len()
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_kills_on_sqlite() {
    soak(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_kills_on_postgres() {
    soak(Backend::Postgres).await;
}

/// Whether a step row's last call was cut short by a kill and used up its
/// attempts.
fn cut_short(row: &Value) -> bool {
    row["error"]
        .as_str()
        .is_some_and(|e| e.contains("was cut short"))
}
