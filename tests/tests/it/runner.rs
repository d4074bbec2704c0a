//! The saga runner against real components and real databases: every test
//! runs on SQLite and on PostgreSQL. Time is a `ManualClock`, so backoff
//! never sleeps.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wasaga::config::{RetryPolicy, RunnerConfig, RuntimeConfig};
use wasaga::model::{
    Phase, Resolution, SagaId, SagaStatus, Semantics, StepSpec, StepStatus, Timestamp,
};
use wasaga::plugin::PluginHost;
use wasaga::runner::{ManualClock, Runner};
use wasaga::store::{Fence, Lease, Store, StoreError, Transition};
use wasaga_tests::{
    Backend, Counter, TestDb, assert_status, create_saga, install, on_both, wait_final, wait_for,
};

const WITHIN: Duration = Duration::from_secs(60);

/// A store, a plugin runtime and a runner with virtual time.
struct Rig {
    /// Keeps the database alive (and drops it at the end).
    _db: TestDb,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    runner: Runner,
}

impl Rig {
    async fn new(backend: Backend) -> Rig {
        Rig::with(backend, RuntimeConfig::default(), RunnerConfig::default()).await
    }

    async fn with(backend: Backend, mut runtime: RuntimeConfig, runner: RunnerConfig) -> Rig {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        runtime.max_instances = runtime.max_instances.min(32);
        let plugins = PluginHost::new(runtime).unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let runner = Runner::new(
            store.clone(),
            plugins,
            RunnerConfig {
                poll_every: Duration::from_millis(50),
                ..runner
            },
            clock.clone(),
        );
        runner.start();
        Rig {
            _db: db,
            store,
            clock,
            runner,
        }
    }

    async fn step(&self, name: &str) -> StepSpec {
        install(self.store.as_ref(), name).await
    }

    async fn start(&self, plan: Vec<StepSpec>, inputs: serde_json::Value) -> SagaId {
        let id = create_saga(self.store.as_ref(), plan, inputs).await;
        self.runner.wake();
        id
    }
}

on_both! {
    three_echoes_complete(backend) {
        let rig = Rig::new(backend).await;
        let echo = rig.step("echo").await;
        let id = rig.start(vec![echo.clone(), echo.clone(), echo], json!({"message": "hello"})).await;
        let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::Completed);
        assert_eq!(
            serde_json::Value::Object(done.saga.context.clone()),
            json!({"echoed_at_step_0": "hello", "echoed_at_step_1": "hello", "echoed_at_step_2": "hello"})
        );
        assert_eq!(done.saga.current_step_index, 3);
        assert!(done.saga.error.is_none());
        for (i, row) in done.steps.iter().enumerate() {
            assert_eq!(row.index as usize, i);
            assert_eq!(row.status, StepStatus::Completed);
            assert_eq!(row.attempts, 1);
            assert_eq!(row.output, Some(json!({format!("echoed_at_step_{i}"): "hello"})));
            assert!(row.started_at.is_some() && row.finished_at.is_some());
        }
    }

    a_failing_last_step_rolls_back_the_others(backend) {
        let rig = Rig::new(backend).await;
        let echo = rig.step("echo").await;
        let fail = rig.step("fail").await;
        let id = rig.start(vec![echo.clone(), echo, fail], json!({"message": "hello"})).await;
        let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::RolledBack);
        let statuses: Vec<StepStatus> = done.steps.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [StepStatus::Compensated, StepStatus::Compensated, StepStatus::Failed]);
        let error = done.saga.error.clone().unwrap();
        assert_eq!(error.compensate_from_idx, Some(1));
        assert_eq!(error.failed_step, Some(2));
        assert_eq!(error.reason, "step_failed:fail");
        assert_eq!(error.message, "step 2 (fail) failed: step_failed:fail; compensating from step 1");
        assert_eq!(done.steps[2].error.as_deref(), Some("step_failed:fail"));
        assert_eq!(done.steps[2].attempts, 1, "a fatal failure is not retried");
        assert_eq!(done.steps[0].compensate_attempts, 1);
        assert_eq!(done.steps[0].phase, Phase::Compensate);
    }

    retries_then_success(backend) {
        let rig = Rig::new(backend).await;
        let flaky = rig.step("flaky").await;
        let id = rig.start(vec![flaky], json!({"flaky_succeed_on_attempt": 3})).await;
        let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::Completed);
        assert_eq!(done.steps[0].attempts, 3);
        assert_eq!(done.saga.context["flaky_succeeded_on_attempt_0"], 3);
        // Two backoffs, exponential with ±20 % jitter around 200 and 400 ms.
        let sleeps = rig.clock.sleeps();
        assert_eq!(sleeps.len(), 2, "{sleeps:?}");
        assert!((160..=240).contains(&sleeps[0].as_millis()), "{sleeps:?}");
        assert!((320..=480).contains(&sleeps[1].as_millis()), "{sleeps:?}");
        let attempts_logged: Vec<u32> = done.steps[0].logs.iter().map(|l| l.attempt).collect();
        assert!(attempts_logged.iter().all(|a| (1..=3).contains(a)));
    }

    retries_exhausted_is_fatal(backend) {
        let rig = Rig::new(backend).await;
        let echo = rig.step("echo").await;
        let flaky = StepSpec { max_attempts: 4, ..rig.step("flaky").await };
        let id = rig.start(vec![echo, flaky], json!({"flaky_succeed_on_attempt": 10})).await;
        let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::RolledBack);
        assert_eq!(done.steps[1].status, StepStatus::Failed);
        assert_eq!(done.steps[1].attempts, 4);
        assert_eq!(
            done.steps[1].error.as_deref(),
            Some("flaky: attempt 4 of a step that succeeds on attempt 10 (after 4 attempts)")
        );
        assert_eq!(done.steps[0].status, StepStatus::Compensated);
        assert_eq!(rig.clock.sleeps().len(), 3);
    }

    a_failing_compensation_ends_failed(backend) {
        let rig = Rig::new(backend).await;
        let stubborn = rig.step("stubborn").await;
        let echo = rig.step("echo").await;
        let fail = rig.step("fail").await;
        let id = rig.start(vec![stubborn, echo, fail], json!({})).await;
        let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::Failed);
        let statuses: Vec<StepStatus> = done.steps.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [StepStatus::CompensationFailed, StepStatus::Compensated, StepStatus::Failed]);
        assert_eq!(done.steps[0].compensate_attempts, 3, "compensation is retried too");
        let error = done.saga.error.clone().unwrap();
        assert_eq!(error.compensation_failed_steps, vec![0]);
        assert_eq!(error.compensate_from_idx, Some(1));
        assert!(
            error.message.ends_with("compensation of step 0 (stubborn) failed: needs a human"),
            "{}",
            error.message
        );
        assert!(done.steps[0].error.as_deref().unwrap().contains("stubborn: cannot undo step 0"));
    }

    hostile_plugins_roll_back_and_the_host_carries_on(backend) {
        let rig = Rig::new(backend).await;
        let echo = rig.step("echo").await;
        let mut sagas = Vec::new();
        for hostile in ["spin", "hog", "recurse", "panic", "bloat"] {
            // Only the loop gets a short deadline; the others must be
            // stopped by their own limits, however slow the machine.
            let timeout_ms = if hostile == "spin" { 300 } else { 30_000 };
            let spec = StepSpec { max_attempts: 2, timeout_ms, ..rig.step(hostile).await };
            let id = rig.start(vec![echo.clone(), spec], json!({"message": hostile})).await;
            sagas.push((hostile, id));
        }
        let calm = rig.start(vec![echo.clone(), echo.clone()], json!({"message": "calm"})).await;
        for (hostile, id) in sagas {
            let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
            assert_status(&done, SagaStatus::RolledBack);
            assert_eq!(done.steps[0].status, StepStatus::Compensated, "{hostile}");
            // spin is stopped from outside (its deadline), and being built on
            // contract 0.2.0 its work counts as begun: it is compensated.
            // The others fail by themselves, so nothing of theirs is undone.
            let expected = if hostile == "spin" { StepStatus::Compensated } else { StepStatus::Failed };
            assert_eq!(done.steps[1].status, expected, "{hostile}");
            let error = done.steps[1].error.clone().unwrap();
            let expected = match hostile {
                "spin" => "deadline of 300 ms exceeded (after 2 attempts)",
                "hog" => "memory limit of 64 MiB exceeded",
                "recurse" => "call stack exhausted",
                "panic" => "the panic plugin panics on attempt 2",
                "bloat" => "memory limit of 64 MiB exceeded",
                _ => unreachable!(),
            };
            assert!(error.contains(expected), "{hostile}: {error}");
        }
        let calm = wait_final(rig.store.as_ref(), calm, WITHIN).await;
        assert_status(&calm, SagaStatus::Completed);
        rig.store.health().await.unwrap();
    }

    resources_are_stored_with_the_step(backend) {
        let rig = Rig::new(backend).await;
        let ledger = rig.step("ledger").await;
        let fail = rig.step("fail").await;
        let id = rig.start(vec![ledger.clone(), ledger, fail], json!({"ledger_resources": 2})).await;
        let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::RolledBack);
        assert_eq!(done.resources.len(), 4);
        let first = &done.resources[0];
        assert_eq!(first.step_index, 0);
        assert_eq!(first.kind, "vm");
        assert_eq!(first.external_id, format!("{id}-vm-0"));
        assert_eq!(first.spec, json!({"size": "s-1vcpu-1gb", "ordinal": 0}));
        // Step 1 recorded the same ids again: their spec version is 2.
        assert_eq!(done.resources[2].external_id, first.external_id);
        assert_eq!((first.spec_version, done.resources[2].spec_version), (1, 2));
        let levels: Vec<&str> = done.steps[0].logs.iter().map(|l| l.level.as_str()).collect();
        assert_eq!(&levels[..5], ["trace", "debug", "info", "warn", "error"]);
        let released: Vec<&str> = done.steps[0]
            .logs
            .iter()
            .filter(|l| l.phase == Phase::Compensate)
            .map(|l| l.message.as_str())
            .collect();
        assert_eq!(released, [format!("released {id}-vm-0"), format!("released {id}-vm-1")]);
    }

    cancel_before_start_rolls_back_with_nothing_to_undo(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let id = create_saga(store.as_ref(), vec![echo.clone(), echo], json!({})).await;
        let plugins = PluginHost::new(RuntimeConfig { max_instances: 8, ..RuntimeConfig::default() }).unwrap();
        let runner = Runner::new(store.clone(), plugins, RunnerConfig::default(), Arc::new(ManualClock::new(Timestamp::now())));
        // Recorded before any runner claims it.
        let requested = runner.cancel(id, Some("tester".into())).await.unwrap();
        assert!(requested.cancel_requested);
        assert_eq!(requested.actions.len(), 1);
        runner.start();
        let done = wait_final(store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::RolledBack);
        assert!(done.steps.is_empty(), "no step ran: {:?}", done.steps);
        let error = done.saga.error.unwrap();
        assert_eq!(error.reason, "cancelled");
        assert_eq!(error.compensate_from_idx, None);
        assert_eq!(error.message, "cancelled; no step had completed, nothing to compensate");
    }

    cancel_between_steps_starts_no_further_step(backend) {
        let counter = Counter::start().await;
        let rig = Rig::new(backend).await;
        counter.grant(rig.store.as_ref()).await;
        let step = rig.step("counter").await;
        let runner = rig.runner.clone();
        // The cancel is committed while step 1's call is answered: step 1
        // completes, and step 2 must not start.
        counter.on_call(move |call| {
            let runner = runner.clone();
            async move {
                if call.phase == "execute" && call.step == 1 {
                    runner.cancel(call.saga.parse().unwrap(), None).await.unwrap();
                }
            }
        });
        let id = rig.start(vec![step.clone(), step.clone(), step.clone(), step], json!({"counter_url": counter.url()})).await;
        let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::RolledBack);
        assert_eq!(done.steps.len(), 2, "step 2 never started: {:?}", done.steps);
        assert_eq!(done.steps[0].status, StepStatus::Compensated);
        let calls: Vec<(String, u32)> = counter.calls_of(&id).into_iter().map(|c| (c.phase, c.step)).collect();
        let error = done.saga.error.unwrap();
        assert_eq!(error.reason, "cancelled");
        // The cancel interrupts step 1 in flight (it fails, and being a
        // 0.1.0 step it is not compensated), or arrives just as it
        // completed (it is compensated); either way step 2 never starts.
        match done.steps[1].status {
            StepStatus::Failed => {
                assert_eq!(done.steps[1].error.as_deref(), Some("interrupted by a cancel request"));
                assert_eq!(calls, [("execute".into(), 0), ("execute".into(), 1), ("compensate".into(), 0)]);
                assert_eq!((error.failed_step, error.compensate_from_idx), (Some(1), Some(0)));
            }
            StepStatus::Compensated => {
                assert_eq!(
                    calls,
                    [("execute".into(), 0), ("execute".into(), 1), ("compensate".into(), 1), ("compensate".into(), 0)]
                );
                assert_eq!((error.failed_step, error.compensate_from_idx), (None, Some(1)));
            }
            other => panic!("step 1 ended {other}"),
        }
    }

    cancel_in_flight_interrupts_the_step(backend) {
        // spin loops in Wasm (contract 0.2.0); counter waits in a host call
        // on a slow endpoint (contract 0.1.0).
        let counter = Counter::start().await;
        counter.set_delay(Duration::from_secs(60));
        let rig = Rig::new(backend).await;
        counter.grant(rig.store.as_ref()).await;
        let echo = rig.step("echo").await;
        let spin = rig.step("spin").await;
        let slow = rig.step("counter").await;
        let newer = rig.start(vec![echo.clone(), spin], json!({})).await;
        let older = rig.start(vec![echo, slow], json!({"counter_url": counter.url()})).await;
        for id in [newer, older] {
            wait_for(rig.store.as_ref(), id, WITHIN, |d| {
                d.steps.get(1).is_some_and(|r| r.status == StepStatus::Running)
            })
            .await;
        }
        // Let the calls get going, then cancel as the API does.
        tokio::time::sleep(Duration::from_millis(100)).await;
        rig.runner.cancel(newer, None).await.unwrap();
        rig.runner.cancel(older, None).await.unwrap();
        for id in [newer, older] {
            let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
            assert_status(&done, SagaStatus::RolledBack);
            assert_eq!(done.steps[1].error.as_deref(), Some("interrupted by a cancel request"));
            assert_eq!(done.steps[1].attempts, 1, "an interrupted step is not retried");
            assert_eq!(done.steps[0].status, StepStatus::Compensated);
            let error = done.saga.error.unwrap();
            if id == newer {
                // A 0.2.0 step's work had begun: it is compensated too.
                assert_eq!(done.steps[1].status, StepStatus::Compensated);
                assert_eq!(done.steps[1].compensate_attempts, 1);
                assert_eq!(
                    error.message,
                    "cancelled while step 1 (spin) ran; its work had begun, so compensating from step 1"
                );
            } else {
                // A 0.1.0 step that did not complete is not, as before 0.2.0.
                assert_eq!(done.steps[1].status, StepStatus::Failed);
                assert_eq!(done.steps[1].compensate_attempts, 0);
                assert_eq!(error.message, "cancelled while step 1 (counter) ran; compensating from step 0");
            }
        }
    }

    a_dead_hosts_saga_resumes_with_the_next_attempt(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let step = install(store.as_ref(), "counter").await;
        let id = create_saga(store.as_ref(), vec![step.clone(), step], json!({"counter_url": counter.url()})).await;
        // A host claims the saga, marks step 0 running (attempt 1), and dies.
        let ttl = Duration::from_millis(500);
        let now = Timestamp::now();
        let claimed = store.claim_sagas(&claim("dead-host", now, ttl), 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let dead = Fence::Lease { owner: Arc::from("dead-host"), epoch: claimed[0].epoch };
        let mut mark = Transition::new(id, dead.clone(), 0, now);
        mark.saga.status = Some(SagaStatus::Running);
        mark.steps.push(running_row(&claimed[0].saga.plan[0], 0));
        store.apply(mark).await.unwrap();
        // Before the lease expires, nobody else may take it.
        counter.grant(store.as_ref()).await;
        let plugins = PluginHost::new(RuntimeConfig::default()).unwrap();
        assert!(store.claim_sagas(&claim("other", now, ttl), 10).await.unwrap().is_empty());
        // After it expires (by each database's own clock), a new runner
        // resumes it.
        tokio::time::sleep(ttl * 2).await;
        let runner = Runner::new(store.clone(), plugins, RunnerConfig { poll_every: Duration::from_millis(50), ..RunnerConfig::default() }, Arc::new(wasaga::runner::SystemClock));
        runner.start();
        let done = wait_final(store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::Completed);
        assert_eq!(done.steps[0].attempts, 2, "the interrupted step runs again with attempt + 1");
        let calls = counter.calls_of(&id);
        assert_eq!(calls[0].step, 0);
        assert_eq!(calls[0].attempt, 2);
        assert_eq!(calls[0].key, format!("{id}:0:execute"), "the same idempotency key");
        // The dead host's late write is refused: the lease is fenced.
        let late = Transition::new(id, dead, done.saga.version, now);
        assert!(matches!(store.apply(late).await, Err(StoreError::LeaseLost(_))));
    }

    a_freed_slot_claims_the_sagas_waiting_for_one_without_a_poll(backend) {
        // One slot and a poll too rare to matter: every saga after the first
        // is claimed only because the slot freeing up claims again.
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let runtime = RuntimeConfig { max_instances: 8, ..RuntimeConfig::default() };
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let config = RunnerConfig { concurrency: 1, poll_every: Duration::from_secs(3600), ..RunnerConfig::default() };
        let runner = Runner::new(store.clone(), PluginHost::new(runtime).unwrap(), config, clock);
        runner.start();
        let echo = install(store.as_ref(), "echo").await;
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(create_saga(store.as_ref(), vec![echo.clone(), echo.clone()], json!({})).await);
            runner.wake();
        }
        for id in ids {
            assert_status(&wait_final(store.as_ref(), id, WITHIN).await, SagaStatus::Completed);
        }
    }

    a_step_interrupted_past_its_attempt_limit_fails(backend) {
        // flaky is built on contract 0.1.0, echo on 0.2.0: only the newer
        // contract's step counts as begun, and is compensated.
        for (plugin, compensated) in [("flaky", false), ("echo", true)] {
            let db = TestDb::new(backend).await;
            let store = db.open().await;
            let echo = install(store.as_ref(), "echo").await;
            let crashing = install(store.as_ref(), plugin).await;
            let id = create_saga(store.as_ref(), vec![echo, StepSpec { max_attempts: 2, ..crashing }], json!({})).await;
            let now = Timestamp::now();
            // Step 0 completed; step 1 was marked running twice by hosts that died.
            let claimed = store.claim_sagas(&claim("dead", now, Duration::ZERO), 10).await.unwrap();
            let plan = claimed[0].saga.plan.clone();
            let mut t = Transition::new(id, Fence::Lease { owner: Arc::from("dead"), epoch: claimed[0].epoch }, 0, now);
            t.saga.status = Some(SagaStatus::Running);
            t.saga.current_step_index = Some(1);
            let mut done_row = running_row(&plan[0], 0);
            done_row.status = StepStatus::Completed;
            done_row.attempts = 1;
            done_row.output = Some(json!({}));
            let mut crashed = running_row(&plan[1], 1);
            crashed.attempts = 2;
            t.steps = vec![done_row, crashed];
            store.apply(t).await.unwrap();
            let plugins = PluginHost::new(RuntimeConfig { max_instances: 8, ..RuntimeConfig::default() }).unwrap();
            let runner = Runner::new(store.clone(), plugins, RunnerConfig::default(), Arc::new(ManualClock::new(now.plus(Duration::from_secs(1)))));
            runner.start();
            let done = wait_final(store.as_ref(), id, WITHIN).await;
            assert_status(&done, SagaStatus::RolledBack);
            let expected = if compensated { StepStatus::Compensated } else { StepStatus::Failed };
            assert_eq!(done.steps[1].status, expected, "{plugin}");
            assert_eq!(
                done.steps[1].error.as_deref(),
                Some("the step's last call was cut short (its host stopped mid-call) and all 2 attempts are used: it did not finish"),
                "{plugin}"
            );
            assert_eq!(done.steps[0].status, StepStatus::Compensated);
            runner.shutdown(Duration::from_secs(5)).await;
        }
    }

    graceful_shutdown_releases_leases_and_a_new_runner_finishes(backend) {
        let counter = Counter::start().await;
        counter.set_delay(Duration::from_millis(200));
        let runtime = RuntimeConfig::default();
        let rig = Rig::with(backend, runtime.clone(), RunnerConfig::default()).await;
        counter.grant(rig.store.as_ref()).await;
        let step = rig.step("counter").await;
        let id = rig.start(vec![step.clone(); 6], json!({"counter_url": counter.url()})).await;
        wait_for(rig.store.as_ref(), id, WITHIN, |d| d.steps.len() >= 2).await;
        rig.runner.shutdown(Duration::from_secs(5)).await;
        let paused = rig.store.saga(id).await.unwrap().unwrap();
        assert!(!paused.saga.status.is_final(), "shutdown stops between steps");
        let running = paused.steps.iter().filter(|r| r.status == StepStatus::Running).count();
        assert_eq!(running, 0, "the step in flight finished within the grace: {:?}", paused.steps);
        let plugins = PluginHost::new(runtime).unwrap();
        let next = Runner::new(rig.store.clone(), plugins, RunnerConfig::default(), rig.clock.clone());
        next.start();
        let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::Completed);
        assert!(done.steps.iter().all(|r| r.attempts == 1), "nothing ran twice: {:?}", done.steps);
        assert_eq!(counter.calls_of(&id).len(), 6);
    }

    a_call_stuck_outside_its_task_gives_up_its_lease(backend) {
        // Host A's only Wasm thread is blocked by another task while a call
        // waits for its answer: the call's own timeout cannot fire, and
        // without the watchdog A renews the lease forever. With it, A gives
        // the lease up after the deadline and grace, and host B takes the
        // saga over with the next attempt while A is still stuck. A, with
        // free slots but no free Wasm thread, claims nothing meanwhile.
        let counter = Counter::start().await;
        counter.set_delay(Duration::from_millis(300));
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        counter.grant(store.as_ref()).await;
        let step = StepSpec { timeout_ms: 1_000, max_attempts: 3, ..install(store.as_ref(), "counter").await };
        let step_one = step.clone();
        let arrived = Arc::new(tokio::sync::Notify::new());
        let first = arrived.clone();
        counter.on_call(move |call| {
            let first = first.clone();
            async move {
                if call.attempt == 1 {
                    first.notify_one();
                }
            }
        });
        let plugins = PluginHost::new(RuntimeConfig { wasm_threads: 1, max_instances: 4, ..RuntimeConfig::default() }).unwrap();
        let stuck_host = Runner::new(
            store.clone(),
            plugins.clone(),
            RunnerConfig {
                concurrency: 4,
                lease_ttl: Duration::from_secs(3),
                lease_renew_every: Duration::from_millis(200),
                call_grace: Duration::from_millis(300),
                poll_every: Duration::from_millis(50),
                node_id: Some("stuck-host".into()),
                ..RunnerConfig::default()
            },
            Arc::new(wasaga::runner::SystemClock),
        );
        stuck_host.start();
        let abandoned_before = wasaga::metrics::global().calls_abandoned.get();
        let id = create_saga(store.as_ref(), vec![step.clone(), step], json!({"counter_url": counter.url()})).await;
        stuck_host.wake();
        arrived.notified().await;
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        plugins.runtime().expect("Wasm threads").spawn(async move {
            // A host task stuck outside the call, on the call's thread.
            let _ = blocked.recv();
        });

        let other = Runner::new(
            store.clone(),
            PluginHost::new(RuntimeConfig { max_instances: 4, ..RuntimeConfig::default() }).unwrap(),
            RunnerConfig { poll_every: Duration::from_millis(50), node_id: Some("other-host".into()), ..RunnerConfig::default() },
            Arc::new(wasaga::runner::SystemClock),
        );
        other.start();
        let done = wait_final(store.as_ref(), id, WITHIN).await;
        assert_status(&done, SagaStatus::Completed);
        assert_eq!(done.steps[0].attempts, 2, "the stuck call counts as begun: {:?}", done.steps[0]);
        assert_eq!(done.steps[0].executed_by.as_deref(), Some("other-host"));
        assert!(wasaga::metrics::global().calls_abandoned.get() > abandoned_before);

        // A new saga while A is stuck: A has free slots, but a saga it
        // claimed could not start (and A would renew its lease forever), so
        // it claims nothing; B runs it.
        let next = create_saga(store.as_ref(), vec![step_one.clone()], json!({"counter_url": counter.url()})).await;
        stuck_host.wake();
        other.wake();
        let done_next = wait_final(store.as_ref(), next, WITHIN).await;
        assert_status(&done_next, SagaStatus::Completed);
        assert_eq!(done_next.steps[0].executed_by.as_deref(), Some("other-host"));

        // Unstuck, the abandoned call's end writes nothing.
        release.send(()).unwrap();
        stuck_host.shutdown(Duration::from_secs(5)).await;
        let after = store.saga(id).await.unwrap().unwrap();
        assert_eq!(after.saga.version, done.saga.version, "the abandoned call wrote nothing");
        let attempts: Vec<u32> = counter.calls_of(&id).iter().filter(|c| c.step == 0).map(|c| c.attempt).collect();
        assert_eq!(attempts, [1, 2]);
        other.shutdown(Duration::from_secs(5)).await;
    }

    an_at_most_once_step_cut_short_goes_in_doubt_until_resolved(backend) {
        // A dead host marked an at_most_once step running and died: whether
        // its call happened is unknown, so the next host does not call it.
        // A human resolves it: applied (its output given) or not_applied
        // (called again, fresh attempts, a new key).
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        counter.grant(store.as_ref()).await;
        let counter_step = install(store.as_ref(), "counter").await;
        let once = StepSpec { semantics: Semantics::AtMostOnce, max_attempts: 1, ..counter_step.clone() };
        let inputs = json!({"counter_url": counter.url()});
        let applied = create_saga(store.as_ref(), vec![once.clone(), counter_step.clone()], inputs.clone()).await;
        let not_applied = create_saga(store.as_ref(), vec![once.clone(), counter_step], inputs).await;
        let ttl = Duration::from_millis(300);
        let now = Timestamp::now();
        let claimed = store.claim_sagas(&claim("dead-host", now, ttl), 10).await.unwrap();
        assert_eq!(claimed.len(), 2);
        for c in &claimed {
            let mut mark = Transition::new(c.saga.id, Fence::Lease { owner: Arc::from("dead-host"), epoch: c.epoch }, 0, now);
            mark.saga.status = Some(SagaStatus::Running);
            mark.steps.push(running_row(&c.saga.plan[0], 0));
            store.apply(mark).await.unwrap();
        }
        tokio::time::sleep(ttl * 2).await;
        let plugins = PluginHost::new(RuntimeConfig { max_instances: 8, ..RuntimeConfig::default() }).unwrap();
        let runner = Runner::new(store.clone(), plugins, RunnerConfig { poll_every: Duration::from_millis(50), ..RunnerConfig::default() }, Arc::new(wasaga::runner::SystemClock));
        runner.start();
        for id in [applied, not_applied] {
            let doubt = wait_for(store.as_ref(), id, WITHIN, |d| d.saga.status == SagaStatus::InDoubt).await;
            let error = doubt.saga.error.as_ref().unwrap();
            assert!(error.message.contains("step 0 (counter) is at_most_once and its call (attempt 1) was cut short"), "{}", error.message);
            assert_eq!(doubt.steps[0].attempts, 1, "no call made again");
        }
        assert!(counter.calls().is_empty(), "no step was called: {:?}", counter.calls());
        // Nothing but a resolution moves it, and a resolution is checked.
        let refused = runner.cancel(applied, None).await.unwrap_err();
        assert!(refused.to_string().contains("is in_doubt: resolve step 0 first"), "{refused}");
        let refused = runner.resolve(applied, 1, Some((Resolution::Applied, None)), None, None).await.unwrap_err();
        assert!(refused.to_string().contains("step 1 of saga"), "{refused}");
        let refused = runner.resolve(applied, 0, None, None, None).await.unwrap_err();
        assert!(refused.to_string().contains("say `resolution`"), "{refused}");
        let refused = runner.resolve(applied, 0, Some((Resolution::Applied, Some(json!([1])))), None, None).await.unwrap_err();
        assert!(refused.to_string().contains("`output` must be a JSON object"), "{refused}");

        runner.resolve(applied, 0, Some((Resolution::Applied, Some(json!({"vm": "vm-7"})))), Some("seen in the console".into()), Some("ops".into())).await.unwrap();
        let done = wait_final(store.as_ref(), applied, WITHIN).await;
        assert_status(&done, SagaStatus::Completed);
        assert_eq!(done.saga.context["vm"], "vm-7");
        assert_eq!(done.saga.error, None);
        let calls: Vec<(u32, u32)> = counter.calls_of(&applied).iter().map(|c| (c.step, c.attempt)).collect();
        assert_eq!(calls, [(1, 1)], "step 0 was never called; step 1 once");
        let action = done.saga.actions.last().unwrap();
        assert_eq!((action.actor.as_deref(), action.step_index), (Some("ops"), Some(0)));

        runner.resolve(not_applied, 0, Some((Resolution::NotApplied, None)), None, None).await.unwrap();
        let done = wait_final(store.as_ref(), not_applied, WITHIN).await;
        assert_status(&done, SagaStatus::Completed);
        assert_eq!(done.steps[0].attempts, 2, "calls begun: the cut-short one and this");
        let calls: Vec<(u32, u32, String)> = counter.calls_of(&not_applied).into_iter().map(|c| (c.step, c.attempt, c.key)).collect();
        assert_eq!(calls[0], (0, 2, format!("{not_applied}:0:execute:r1")));
        runner.shutdown(Duration::from_secs(5)).await;
    }

    many_sagas_run_at_once(backend) {
        let rig = Rig::with(backend, RuntimeConfig::default(), RunnerConfig { concurrency: 16, ..RunnerConfig::default() }).await;
        let echo = rig.step("echo").await;
        let mut ids = Vec::new();
        for i in 0..60 {
            ids.push(rig.start(vec![echo.clone(); 4], json!({"message": i})).await);
        }
        for (i, id) in ids.into_iter().enumerate() {
            let done = wait_final(rig.store.as_ref(), id, WITHIN).await;
            assert_status(&done, SagaStatus::Completed);
            assert_eq!(done.saga.context["echoed_at_step_3"], i);
        }
    }
}

/// A claim as a host would make it.
fn claim(owner: &str, now: Timestamp, ttl: Duration) -> Lease {
    Lease {
        owner: Arc::from(owner),
        ttl,
        now,
    }
}

/// A running ledger row (attempt 1) for `spec` at `index`, as a host that
/// then died would have written it.
fn running_row(spec: &StepSpec, index: u32) -> wasaga::model::StepResult {
    wasaga::model::StepResult {
        index,
        name: spec.name.clone(),
        plugin: spec.plugin.clone(),
        status: StepStatus::Running,
        phase: Phase::Execute,
        attempts: 1,
        compensate_attempts: 0,
        compensate_attempt_base: 0,
        attempt_base: 0,
        calls: Vec::new(),
        output: None,
        output_omitted: None,
        error: None,
        logs: Vec::new(),
        started_at: Some(Timestamp::now()),
        finished_at: None,
        executed_by: Some("a-host-that-died".into()),
        waiting_until: None,
        polls: 0,
        wait_started_at: None,
        received: None,
        correlation_key: None,
        wait_for: None,
        callback_url: None,
    }
}

#[test]
fn retry_policy_defaults_match_the_documentation() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.max_attempts, 3);
    assert_eq!(policy.initial_backoff, Duration::from_millis(200));
}
