//! Properties of the saga state machine over random step lists with random
//! failures, and random interleavings of pauses, resumes, cancels and
//! crashes, on real components and SQLite.
//!
//! Every step is the `counter` plugin, scripted per step through the
//! inputs (succeed, fail for good, fail retryably until an attempt, refuse
//! to compensate) and reporting every call to an external endpoint, which
//! gives an exact trace. At a chosen call the endpoint commits a cancel, or
//! "crashes" the host: the runner is stopped with no grace while that call
//! is in flight (its result is discarded, nothing more is written: the
//! database is left as a crash would leave it) and a new runner takes over.
//! At another it commits a pause; whenever the saga is seen `paused`, an
//! operator checks that no call happens while it stays paused, then
//! resumes it (a crash may come before or after).
//!
//! Checked for every case: the saga ends in a final status; compensation
//! covers exactly the steps that completed, in reverse order; no step
//! executes after a cancel was committed; the context holds exactly the
//! completed steps' outputs; a step's attempts grow and keep one key; no
//! call is made while the saga is paused.

use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasaga::config::{RetryPolicy, RunnerConfig, RuntimeConfig};
use wasaga::model::{SagaStatus, StepSpec, StepStatus, Timestamp};
use wasaga::plugin::PluginHost;
use wasaga::runner::{ManualClock, Runner};
use wasaga_tests::{Backend, Counter, TestDb, create_saga, install, wait_final};

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Succeeds,
    FailsForGood,
    /// Fails retryably until this attempt (3 attempts allowed).
    RetriesUntil(u32),
    /// Executes, but its compensation always fails.
    CannotUndo,
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        4 => Just(Behaviour::Succeeds),
        1 => Just(Behaviour::FailsForGood),
        2 => (2u32..=4).prop_map(Behaviour::RetriesUntil),
        1 => Just(Behaviour::CannotUndo),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    steps: Vec<Behaviour>,
    /// Commit a cancel while answering this call (by arrival order).
    cancel_at: Option<usize>,
    /// Crash the host while this call is in flight.
    crash_at: Option<usize>,
    /// Commit a pause while answering this call.
    pause_at: Option<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(behaviour(), 1..=5),
        proptest::option::weighted(0.6, 0usize..8),
        proptest::option::weighted(0.6, 0usize..8),
        proptest::option::weighted(0.6, 0usize..8),
    )
        .prop_map(|(steps, cancel_at, crash_at, pause_at)| Case {
            steps,
            cancel_at,
            crash_at,
            pause_at,
        })
}

fn inputs(case: &Case, url: &str) -> serde_json::Value {
    let mut fail_at = Vec::new();
    let mut retry_until = serde_json::Map::new();
    let mut compensate_fail_at = Vec::new();
    for (i, b) in case.steps.iter().enumerate() {
        match b {
            Behaviour::Succeeds => {}
            Behaviour::FailsForGood => fail_at.push(i),
            Behaviour::RetriesUntil(n) => {
                retry_until.insert(i.to_string(), json!(n));
            }
            Behaviour::CannotUndo => compensate_fail_at.push(i),
        }
    }
    json!({
        "counter_url": url,
        "counter_fail_at": fail_at,
        "counter_retry_until": retry_until,
        "counter_compensate_fail_at": compensate_fail_at,
    })
}

/// How many cases really crashed, and really cancelled, mid-saga: the test
/// checks both happen, so the properties are not checked only on calm runs.
static CRASHES: AtomicUsize = AtomicUsize::new(0);
static CANCELS: AtomicUsize = AtomicUsize::new(0);
static PAUSES: AtomicUsize = AtomicUsize::new(0);

struct World {
    rt: tokio::runtime::Runtime,
    plugins: PluginHost,
    counter: Counter,
}

fn world() -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counter = rt.block_on(Counter::start());
    let runtime = RuntimeConfig {
        max_instances: 16,
        ..RuntimeConfig::default()
    };
    let plugins = PluginHost::new(runtime).unwrap();
    World {
        rt,
        plugins,
        counter,
    }
}

fn runner_config() -> RunnerConfig {
    RunnerConfig {
        poll_every: Duration::from_millis(20),
        retry: RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        },
        ..RunnerConfig::default()
    }
}

fn check(world: &World, case: &Case) -> Result<(), TestCaseError> {
    world.rt.block_on(async {
        let db = TestDb::new(Backend::Sqlite).await;
        let store = db.open().await;
        let spec = install(store.as_ref(), "counter").await;
        world.counter.grant(store.as_ref()).await;
        let plan: Vec<StepSpec> = vec![spec; case.steps.len()];
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let runner = Arc::new(Mutex::new(Runner::new(
            store.clone(),
            world.plugins.clone(),
            runner_config(),
            clock.clone(),
        )));
        runner.lock().unwrap().start();

        let id = create_saga(store.as_ref(), plan, inputs(case, &world.counter.url())).await;
        let seen = Arc::new(Mutex::new(0usize));
        let cancel_seq = Arc::new(Mutex::new(None::<u64>));
        let (crash_tx, mut crash_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        {
            let runner = runner.clone();
            let (seen, cancel_seq) = (seen.clone(), cancel_seq.clone());
            let case = case.clone();
            let saga = id.to_string();
            world.counter.on_call(move |call| {
                let (runner, seen, cancel_seq, crash_tx, case, saga) = (
                    runner.clone(),
                    seen.clone(),
                    cancel_seq.clone(),
                    crash_tx.clone(),
                    case.clone(),
                    saga.clone(),
                );
                async move {
                    if call.saga != saga {
                        return;
                    }
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        *seen += 1;
                        *seen - 1
                    };
                    if case.cancel_at == Some(n) {
                        let id = saga.parse().unwrap();
                        let current = runner.lock().unwrap().clone();
                        if current.cancel(id, None).await.is_ok() {
                            *cancel_seq.lock().unwrap() = Some(call.seq);
                            CANCELS.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if case.pause_at == Some(n) {
                        let id = saga.parse().unwrap();
                        let current = runner.lock().unwrap().clone();
                        let _ = current.pause(id, None).await;
                    }
                    if case.crash_at == Some(n) {
                        let _ = crash_tx.send(());
                        // Hold the answer until the host is gone.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            });
        }
        // The "crash": stop the runner with no grace mid-call; a new one resumes.
        let crasher = {
            let (runner, store, plugins, clock) = (
                runner.clone(),
                store.clone(),
                world.plugins.clone(),
                clock.clone(),
            );
            tokio::spawn(async move {
                if crash_rx.recv().await.is_some() {
                    CRASHES.fetch_add(1, Ordering::Relaxed);
                    let old = runner.lock().unwrap().clone();
                    old.shutdown(Duration::ZERO).await;
                    let fresh = Runner::new(store, plugins, runner_config(), clock);
                    fresh.start();
                    *runner.lock().unwrap() = fresh;
                }
            })
        };

        // The operator: whenever the saga is paused, no call may happen
        // until it is resumed; then it resumes it.
        let calls_while_paused = Arc::new(Mutex::new(Vec::new()));
        let operator = {
            let (runner, store, counter, calls_while_paused) = (
                runner.clone(),
                store.clone(),
                world.counter.clone(),
                calls_while_paused.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let Ok(Some(d)) = store.saga(id).await else {
                        continue;
                    };
                    if d.saga.status != SagaStatus::Paused {
                        continue;
                    }
                    PAUSES.fetch_add(1, Ordering::Relaxed);
                    let before = counter.calls_of(&id).len();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let after = counter.calls_of(&id);
                    if after.len() != before {
                        calls_while_paused
                            .lock()
                            .unwrap()
                            .extend(after[before..].iter().cloned());
                    }
                    let current = runner.lock().unwrap().clone();
                    let _ = current.resume(id, None).await;
                }
            })
        };

        let done = wait_final(store.as_ref(), id, Duration::from_secs(60)).await;
        operator.abort();
        crasher.abort();
        let last = runner.lock().unwrap().clone();
        last.shutdown(Duration::from_secs(1)).await;
        let calls = world.counter.calls_of(&id);
        let ledger: BTreeMap<u32, _> = done.steps.iter().map(|r| (r.index, r.clone())).collect();

        // 1. It ended.
        prop_assert!(done.saga.status.is_final());

        // 2. Compensation covers exactly the completed steps, in reverse.
        let completed: Vec<u32> = ledger
            .values()
            .filter(|r| {
                matches!(
                    r.status,
                    StepStatus::Completed
                        | StepStatus::Compensated
                        | StepStatus::CompensationFailed
                )
            })
            .map(|r| r.index)
            .collect();
        let mut compensated_order: Vec<u32> = Vec::new();
        for c in calls.iter().filter(|c| c.phase == "compensate") {
            if compensated_order.last() != Some(&c.step) {
                compensated_order.push(c.step);
            }
        }
        match done.saga.status {
            SagaStatus::Completed => {
                prop_assert!(compensated_order.is_empty(), "{compensated_order:?}");
                prop_assert_eq!(completed.len(), case.steps.len());
            }
            _ => {
                let mut expected = completed.clone();
                expected.reverse();
                prop_assert_eq!(
                    &compensated_order,
                    &expected,
                    "compensation order; ledger {:?}",
                    done.steps
                );
                for r in ledger.values() {
                    prop_assert!(
                        r.status != StepStatus::Completed,
                        "a completed step left uncompensated: {r:?}"
                    );
                }
                let failed_compensations: Vec<u32> = ledger
                    .values()
                    .filter(|r| r.status == StepStatus::CompensationFailed)
                    .map(|r| r.index)
                    .collect();
                let expected_status = if failed_compensations.is_empty() {
                    SagaStatus::RolledBack
                } else {
                    SagaStatus::Failed
                };
                prop_assert_eq!(done.saga.status, expected_status);
            }
        }

        // 3. No step executes after the cancel was committed.
        if let Some(cancel_seq) = *cancel_seq.lock().unwrap() {
            let late: Vec<_> = calls
                .iter()
                .filter(|c| c.phase == "execute" && c.seq > cancel_seq)
                .collect();
            prop_assert!(late.is_empty(), "executions after the cancel: {late:?}");
            prop_assert!(
                done.saga.status != SagaStatus::Completed || completed.len() == case.steps.len()
            );
        }

        // 4. Nothing was called while the saga was paused.
        let paused_calls = calls_while_paused.lock().unwrap().clone();
        prop_assert!(
            paused_calls.is_empty(),
            "calls while paused: {paused_calls:?}"
        );

        // 5. The context holds exactly the completed steps' outputs.
        let mut expected_context = serde_json::Map::new();
        for index in &completed {
            let output = ledger[index]
                .output
                .clone()
                .expect("a completed step has an output");
            for (k, v) in output.as_object().unwrap() {
                expected_context.insert(k.clone(), v.clone());
            }
        }
        prop_assert_eq!(&done.saga.context, &expected_context);

        // 6. Attempts of a step grow and share one idempotency key.
        for step in 0..case.steps.len() as u32 {
            for phase in ["execute", "compensate"] {
                let runs: Vec<_> = calls
                    .iter()
                    .filter(|c| c.step == step && c.phase == phase)
                    .collect();
                for pair in runs.windows(2) {
                    prop_assert!(pair[1].attempt > pair[0].attempt, "{runs:?}");
                    prop_assert_eq!(&pair[0].key, &pair[1].key);
                }
                prop_assert!(
                    runs.iter().all(|c| c.attempt <= 3),
                    "no more than max_attempts: {runs:?}"
                );
            }
        }
        Ok(())
    })
}

#[test]
fn saga_state_machine_properties() {
    let world = world();
    // A fixed seed by default, so the mix of crashes and cancels (asserted
    // below) is the same on every run; set WASAGA_PROPTEST_SEED=random, or
    // a number, and WASAGA_PROPTEST_CASES to explore further.
    let env = |name: &str| std::env::var(name).ok();
    let rng_seed = match env("WASAGA_PROPTEST_SEED").as_deref() {
        Some("random") => proptest::test_runner::RngSeed::Random,
        Some(n) => proptest::test_runner::RngSeed::Fixed(
            n.parse().expect("WASAGA_PROPTEST_SEED: a number or random"),
        ),
        None => proptest::test_runner::RngSeed::Fixed(0x5a6a),
    };
    let config = ProptestConfig {
        cases: env("WASAGA_PROPTEST_CASES")
            .and_then(|n| n.parse().ok())
            .unwrap_or(200),
        max_shrink_iters: 50,
        failure_persistence: None,
        rng_seed,
        ..ProptestConfig::default()
    };
    let cases = config.cases as usize;
    proptest!(config, |(case in case())| {
        check(&world, &case)?;
    });
    let (crashes, cancels, pauses) = (
        CRASHES.load(Ordering::Relaxed),
        CANCELS.load(Ordering::Relaxed),
        PAUSES.load(Ordering::Relaxed),
    );
    eprintln!(
        "{cases} cases: {crashes} crashed mid-saga, {cancels} cancelled mid-saga, {pauses} paused and resumed"
    );
    assert!(
        crashes >= cases / 20 && cancels >= cases / 20 && pauses >= cases / 20,
        "too few crashes ({crashes}), cancels ({cancels}) or pauses ({pauses})"
    );
}
