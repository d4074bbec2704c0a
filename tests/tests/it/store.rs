//! The `Store` contract, on SQLite and on PostgreSQL alike: plugins and
//! which upload a name means, pins that make a start and a delete of its
//! plugin exclude each other, idempotent creation, claims that never hand
//! one saga to two owners, leases whose fencing number fences every write,
//! versions that refuse a writer who missed a change, and transitions that
//! are all or nothing.

use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use wasaga::model::{
    Digest, FireOutcome, Overlap, PluginInfo, SagaId, SagaRun, SagaStatus, Schedule, ScheduleSpec,
    StepResult, StepSpec, StepStatus, Timestamp,
};
use wasaga::store::{
    Applied, ClaimedSaga, CreateSaga, DeletePlugin, Fence, FireDone, Lease, NewSaga, Pins,
    SagaFilter, Store, StoreError, Transition,
};
use wasaga_tests::{Backend, TestDb, component, create_saga, install, on_both};

const TTL: Duration = Duration::from_millis(400);

fn lease(owner: &str, now: Timestamp) -> Lease {
    Lease {
        owner: Arc::from(owner),
        ttl: TTL,
        now,
    }
}

/// A time when leases taken at `now` have expired: on SQLite the claim's
/// own clock says so; PostgreSQL uses its own clock, so real time passes.
async fn after_expiry(backend: Backend, now: Timestamp) -> Timestamp {
    match backend {
        Backend::Sqlite => now.plus(TTL * 2),
        Backend::Postgres => {
            tokio::time::sleep(TTL * 2).await;
            Timestamp::now()
        }
    }
}

fn info(name: &str, bytes: &[u8], created_at: i64) -> PluginInfo {
    PluginInfo {
        digest: Digest::of(bytes),
        name: name.into(),
        size: bytes.len() as u64,
        created_at: Timestamp(created_at),
        current: true,
        contract: "0.2.0".into(),
    }
}

fn fence(c: &ClaimedSaga, owner: &str) -> Fence {
    Fence::Lease {
        owner: Arc::from(owner),
        epoch: c.epoch,
    }
}

/// A completed row for step 0 and a running mark for step 1.
fn step_rows(plan: &[StepSpec], owner: &str, now: Timestamp, n: usize) -> (StepResult, StepResult) {
    let row = |index: usize| StepResult {
        index: index as u32,
        name: plan[index].name.clone(),
        plugin: plan[index].plugin.clone(),
        status: StepStatus::Running,
        phase: wasaga::model::Phase::Execute,
        attempts: 1,
        compensate_attempts: 0,
        compensate_attempt_base: 0,
        attempt_base: 0,
        calls: Vec::new(),
        output: None,
        output_omitted: None,
        error: None,
        logs: Vec::new(),
        started_at: Some(now),
        finished_at: None,
        executed_by: Some(owner.into()),
        waiting_until: None,
        polls: 0,
        wait_started_at: None,
        received: None,
        correlation_key: None,
        wait_for: None,
        callback_url: None,
    };
    let mut done = row(0);
    done.status = StepStatus::Completed;
    done.output = Some(json!({"n": n}));
    done.finished_at = Some(now);
    (done, row(1))
}

async fn new_saga(store: &dyn Store, saga: SagaRun, key: Option<(&str, &str)>) -> CreateSaga {
    store
        .create_saga(NewSaga {
            ready_at: Some(saga.created_at),
            saga,
            idempotency: key.map(|(k, h)| (k.to_string(), h.to_string())),
            lease: None,
            ledger: Vec::new(),
        })
        .await
        .unwrap()
}

/// Records a request (a cancel) the way the runner does: fenced by the
/// version only.
async fn request_cancel(store: &dyn Store, id: SagaId) {
    let saga = store.saga(id).await.unwrap().unwrap().saga;
    let mut t = Transition::new(id, Fence::Version, saga.version, Timestamp::now());
    t.saga.cancel_requested = Some(true);
    assert!(matches!(
        store.apply(t).await.unwrap(),
        Applied::Done { .. }
    ));
}

on_both! {
    plugins_by_digest_and_current_name(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let old = component("echo");
        let new = component("fail");
        let first = info("greeter", &old, 1_000);
        let put = store.put_plugin(&first, &old).await.unwrap();
        assert!(put.created && put.previous.is_none() && put.info.current, "{put:?}");
        assert_eq!(put.info, first);
        let again = store.put_plugin(&first, &old).await.unwrap();
        assert!(!again.created && again.previous.is_none());
        // Looked up before and after each change: a store that keeps the
        // metadata in memory must see every acknowledged change.
        assert_eq!(store.plugin_by_name("greeter").await.unwrap(), Some(first.clone()));
        let second = info("greeter", &new, 2_000);
        let takeover = store.put_plugin(&second, &new).await.unwrap();
        assert_eq!(takeover.previous, Some(first.digest.clone()), "the name changed hands");
        assert_eq!(store.plugin_by_name("greeter").await.unwrap(), Some(second.clone()));
        let demoted = PluginInfo { current: false, ..first.clone() };
        assert_eq!(store.plugin(&first.digest).await.unwrap(), Some(demoted.clone()));
        assert_eq!(store.list_plugins().await.unwrap(), vec![second.clone(), demoted.clone()]);
        // Re-uploading the older digest makes it current again.
        let back = store.put_plugin(&first, &old).await.unwrap();
        assert!(!back.created);
        assert_eq!(back.previous, Some(second.digest.clone()));
        assert_eq!(store.plugin_by_name("greeter").await.unwrap(), Some(first.clone()));
        assert!(!store.plugin(&second.digest).await.unwrap().unwrap().current);
        assert_eq!(store.plugin_bytes(&first.digest).await.unwrap(), Some(old));
        // Deleting the current one makes the other current.
        assert_eq!(store.delete_plugin(&first.digest).await.unwrap(), DeletePlugin::Deleted);
        assert_eq!(store.delete_plugin(&first.digest).await.unwrap(), DeletePlugin::NotFound);
        assert_eq!(store.plugin_bytes(&first.digest).await.unwrap(), None);
        assert_eq!(store.plugin(&first.digest).await.unwrap(), None);
        assert_eq!(store.plugin_by_name("greeter").await.unwrap(), Some(second.clone()));
        assert_eq!(store.delete_plugin(&second.digest).await.unwrap(), DeletePlugin::Deleted);
        assert_eq!(store.plugin_by_name("greeter").await.unwrap(), None, "no upload of the name is left");
        assert_eq!(store.list_plugins().await.unwrap(), vec![]);
    }

    an_unfinished_saga_pins_its_plugins_until_it_ends(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let id = create_saga(store.as_ref(), vec![echo.clone(), echo.clone()], json!({})).await;
        assert_eq!(store.delete_plugin(&echo.plugin).await.unwrap(), DeletePlugin::Pinned(vec![id]));
        let claimed = store.claim_sagas(&lease("a", Timestamp::now()), 1).await.unwrap();
        let mut t = Transition::new(id, fence(&claimed[0], "a"), 0, Timestamp::now());
        t.saga.status = Some(SagaStatus::Completed);
        t.saga.ready_at = Some(None);
        t.release_lease = true;
        t.pins = Pins::Release;
        assert!(matches!(store.apply(t).await.unwrap(), Applied::Done { version: 1, woke: false, .. }));
        assert_eq!(store.delete_plugin(&echo.plugin).await.unwrap(), DeletePlugin::Deleted);
    }

    a_start_and_a_delete_of_its_plugin_never_both_win(backend) {
        // Defect: a delete answered 204 while sagas naming the plugin were
        // being stored, which then failed with "not in the store". Now the
        // pins' foreign key makes one of the two lose, atomically.
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        for round in 0..20 {
            let spec = install(store.as_ref(), "echo").await;
            let starts = (0..6).map(|_| {
                let store = store.clone();
                let spec = spec.clone();
                async move {
                    let saga = SagaRun::pending("race", vec![spec], json!({}), None, None, Timestamp::now());
                    new_saga(store.as_ref(), saga, None).await
                }
            });
            let delete = {
                let store = store.clone();
                let digest = spec.plugin.clone();
                async move {
                    tokio::task::yield_now().await;
                    store.delete_plugin(&digest).await.unwrap()
                }
            };
            let (created, deleted) = tokio::join!(futures::future::join_all(starts), delete);
            let stored: Vec<SagaId> = created.iter().filter_map(|c| match c {
                CreateSaga::Created(c) => Some(c.saga.id),
                CreateSaga::PluginGone(d) => { assert_eq!(*d, spec.plugin); None }
                other => panic!("round {round}: {other:?}"),
            }).collect();
            match deleted {
                DeletePlugin::Deleted => assert!(stored.is_empty(), "round {round}: the plugin was deleted under {stored:?}"),
                DeletePlugin::Pinned(by) => {
                    assert!(!stored.is_empty(), "round {round}");
                    assert!(by.iter().all(|id| stored.contains(id)), "round {round}");
                    assert!(store.plugin_bytes(&spec.plugin).await.unwrap().is_some());
                }
                DeletePlugin::NotFound => panic!("round {round}: not found"),
            }
            // Leave no pin for the next round.
            let claimed = store.claim_sagas(&lease("a", Timestamp::now()), 100).await.unwrap();
            assert_eq!(claimed.len(), stored.len(), "round {round}");
            for c in claimed {
                let mut t = Transition::new(c.saga.id, fence(&c, "a"), c.saga.version, Timestamp::now());
                t.saga.status = Some(SagaStatus::Completed);
                t.saga.ready_at = Some(None);
                t.release_lease = true;
                t.pins = Pins::Release;
                store.apply(t).await.unwrap();
            }
            if store.plugin(&spec.plugin).await.unwrap().is_some() {
                assert_eq!(store.delete_plugin(&spec.plugin).await.unwrap(), DeletePlugin::Deleted);
            }
        }
    }

    idempotent_creation(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let a = SagaRun::pending("k", vec![echo.clone()], json!({}), None, None, Timestamp::now());
        let b = SagaRun::pending("k", vec![echo], json!({}), None, None, Timestamp::now());
        assert!(matches!(new_saga(store.as_ref(), a.clone(), Some(("key", "h1"))).await, CreateSaga::Created(_)));
        match new_saga(store.as_ref(), b.clone(), Some(("key", "h1"))).await {
            CreateSaga::Existing(existing) => assert_eq!(existing.id, a.id),
            other => panic!("{other:?}"),
        }
        assert_eq!(new_saga(store.as_ref(), b, Some(("key", "h2"))).await, CreateSaga::KeyConflict(a.id));
        let all = store.list_sagas(&SagaFilter { limit: 10, ..SagaFilter::default() }).await.unwrap();
        assert_eq!(all.len(), 1);
    }

    concurrent_claimers_never_share_a_saga(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let mut ids = BTreeSet::new();
        for _ in 0..60 {
            ids.insert(create_saga(store.as_ref(), vec![echo.clone()], json!({})).await);
        }
        let now = Timestamp::now();
        let claimers = (0..4).map(|i| {
            let store = store.clone();
            async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.claim_sagas(&lease(&format!("host-{i}"), now), 7).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| {
                        assert_eq!(c.epoch, 1, "the first claim");
                        assert_eq!(c.saga.status, SagaStatus::Pending, "a claim decides nothing");
                        assert!(c.ledger.is_empty());
                        c.saga.id
                    }));
                }
            }
        });
        let results = futures::future::join_all(claimers).await;
        let mut seen = BTreeSet::new();
        for mine in &results {
            for id in mine {
                assert!(seen.insert(*id), "saga {id} claimed twice");
            }
        }
        assert_eq!(seen, ids, "every saga claimed exactly once");
        // Held leases are not claimable until they expire.
        assert!(store.claim_sagas(&lease("late", now), 100).await.unwrap().is_empty());
        let later = after_expiry(backend, now).await;
        let taken = store.claim_sagas(&lease("late", later), 100).await.unwrap();
        assert_eq!(taken.len(), 60);
        assert!(taken.iter().all(|c| c.epoch == 2), "each claim bumps the fencing number");
    }

    one_host_takes_each_periodic_drift_scan(backend) {
        // Two stores on one database (two hosts; SQLite serves one, so
        // there its callers race within it), racing for each period:
        // exactly one takes it; a period at or before the last taken is
        // nobody's.
        let db = TestDb::new(backend).await;
        let first = db.open().await;
        let second = match backend {
            Backend::Postgres => db.open().await,
            Backend::Sqlite => first.clone(),
        };
        let hosts = [first, second];
        for period in [1_000_i64, 1_001, 1_005] {
            let takes = hosts.iter().flat_map(|h| [h.clone(), h.clone()]).map(|h| async move {
                h.take_drift_scan(period).await.unwrap()
            });
            let won = futures::future::join_all(takes).await;
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "period {period}: {won:?}");
        }
        assert!(!hosts[0].take_drift_scan(1_005).await.unwrap());
        assert!(!hosts[1].take_drift_scan(1_002).await.unwrap());
    }

    one_host_acts_on_each_schedule_fire_and_moves_the_schedule_on(backend) {
        // Two stores on one database racing for each fire: exactly one
        // claims it; a claim not finished within its lease is taken over;
        // the finish of a host whose claim was taken is refused; the
        // schedule moves on only from the nominal time fired.
        let db = TestDb::new(backend).await;
        let first = db.open().await;
        let second = match backend {
            Backend::Postgres => db.open().await,
            Backend::Sqlite => first.clone(),
        };
        let now = Timestamp::now();
        let schedule = Schedule {
            name: "nightly".into(),
            spec: ScheduleSpec {
                template: "t".into(),
                inputs: json!({}),
                cron: None,
                every: Some("1s".into()),
                timezone: "UTC".into(),
                overlap: Overlap::Allow,
                catchup_window: "1h".into(),
            },
            paused: false,
            created_at: now,
            updated_at: now,
        };
        let nominal = Timestamp(now.millis() / 1000 * 1000);
        assert!(first.put_schedule(&schedule, Some(nominal)).await.unwrap(), "created");
        assert!(!second.put_schedule(&schedule, Some(nominal)).await.unwrap(), "replaced");
        let due = second.due_schedules(now, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].schedule, schedule);
        assert_eq!(second.next_schedule_due().await.unwrap(), Some(nominal));

        let hosts = [("a", first.clone()), ("b", second.clone())];
        let claims = hosts.iter().flat_map(|h| [h.clone(), h.clone()]).map(|(owner, store)| async move {
            (owner, store.claim_fire("nightly", nominal, owner, now, now.minus(Duration::from_secs(30)), false).await.unwrap())
        });
        let won: Vec<_> = futures::future::join_all(claims).await.into_iter().filter(|(_, won)| *won).collect();
        assert_eq!(won.len(), 1, "{won:?}");
        let winner = won[0].0;
        let loser = if winner == "a" { "b" } else { "a" };
        let fires = first.schedule_fires("nightly", 10).await.unwrap();
        assert_eq!(fires.len(), 1);
        assert_eq!(fires[0].outcome, None, "acted on, not finished");

        // The winner died: after the lease the other host takes the fire
        // over, and the first one's late finish is refused.
        let later = now.plus(Duration::from_secs(31));
        assert!(!second.claim_fire("nightly", nominal, loser, now, now.minus(Duration::from_secs(30)), false).await.unwrap(), "a live claim holds");
        assert!(second.claim_fire("nightly", nominal, loser, later, later.minus(Duration::from_secs(30)), false).await.unwrap(), "a stale claim is taken over");
        let next = nominal.plus(Duration::from_secs(1));
        let done = |owner: &str| FireDone {
            schedule: "nightly".into(),
            nominal_at: nominal,
            owner: owner.into(),
            fired_at: later,
            outcome: FireOutcome::Started,
            saga_id: Some(SagaId::new()),
            reason: None,
            manual: false,
            next_fire_at: Some(next),
        };
        assert!(!first.finish_fire(&done(winner), 100).await.unwrap(), "the first claim was taken over");
        let finished = done(loser);
        assert!(first.finish_fire(&finished, 100).await.unwrap());
        assert!(!second.claim_fire("nightly", nominal, winner, later.plus(Duration::from_secs(60)), later, false).await.unwrap(), "a finished fire is nobody's");
        let stored = second.schedule("nightly").await.unwrap().unwrap();
        assert_eq!(stored.next_fire_at, Some(next), "moved on");
        let fires = second.schedule_fires("nightly", 10).await.unwrap();
        assert_eq!(fires[0].outcome, Some(FireOutcome::Started));
        assert_eq!(fires[0].saga_id, finished.saga_id);

        // Moving on is only from the nominal time fired: a host that read
        // the schedule before does not move it back.
        assert!(!first.miss_fires("nightly", nominal, Some(nominal.plus(Duration::from_secs(60))), "late", later).await.unwrap());
        assert!(first.miss_fires("nightly", next, Some(next.plus(Duration::from_secs(60))), "3 missed", later).await.unwrap());
        let fires = second.schedule_fires("nightly", 10).await.unwrap();
        assert_eq!(fires[0].outcome, Some(FireOutcome::Missed));
        assert_eq!(fires[0].reason.as_deref(), Some("3 missed"));

        // Only the newest fires are kept.
        for i in 0..5 {
            let at = Timestamp(nominal.millis() + 100_000 + i * 1000);
            assert!(first.claim_fire("nightly", at, "a", later, later, true).await.unwrap());
            let mut d = done("a");
            d.nominal_at = at;
            d.manual = true;
            assert!(first.finish_fire(&d, 3).await.unwrap());
        }
        let fires = first.schedule_fires("nightly", 10).await.unwrap();
        assert_eq!(fires.len(), 3, "{fires:?}");
        assert!(fires.iter().all(|f| f.manual));
        assert_eq!(second.schedule("nightly").await.unwrap().unwrap().next_fire_at, Some(next.plus(Duration::from_secs(60))), "a fire by hand moves nothing");

        assert!(first.set_schedule_paused("nightly", true, None, later).await.unwrap());
        assert!(second.due_schedules(later.plus(Duration::from_secs(3600)), 10).await.unwrap().is_empty(), "a paused schedule is not due");
        assert!(second.delete_schedule("nightly").await.unwrap());
        assert!(second.schedule_fires("nightly", 10).await.unwrap().is_empty());
        assert!(!first.delete_schedule("nightly").await.unwrap());
    }

    fencing_numbers_and_versions_fence_every_write(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let id = create_saga(store.as_ref(), vec![echo.clone(), echo], json!({})).await;
        let now = Timestamp::now();
        let a = store.claim_sagas(&lease("a", now), 1).await.unwrap().remove(0);
        let write = |f: Fence, version: u64| {
            let mut t = Transition::new(id, f, version, Timestamp::now());
            t.saga.current_step_index = Some(1);
            store.apply(t)
        };
        assert!(matches!(write(fence(&a, "b"), 0).await, Err(StoreError::LeaseLost(_))), "another owner cannot write");
        assert!(matches!(write(Fence::Lease { owner: Arc::from("a"), epoch: 7 }, 0).await, Err(StoreError::LeaseLost(_))), "nor an old epoch");
        assert!(matches!(write(Fence::Unleased, 0).await, Err(StoreError::LeaseLost(_))), "a live lease is not unleased");
        assert_eq!(write(fence(&a, "a"), 0).await.unwrap(), Applied::Done { version: 1, woke: false, taken: Vec::new() });
        assert_eq!(write(fence(&a, "a"), 0).await.unwrap(), Applied::Stale, "a writer that missed a change");
        let states = store.renew_leases("a", &[(id, a.epoch)], TTL, now).await.unwrap();
        assert!(states[0].held && !states[0].cancel_requested && !states[0].pause_requested);
        request_cancel(store.as_ref(), id).await;
        assert_eq!(write(fence(&a, "a"), 1).await.unwrap(), Applied::Stale, "the request moved the version on");
        let states = store.renew_leases("a", &[(id, a.epoch)], TTL, now).await.unwrap();
        assert!(states[0].held && states[0].cancel_requested);
        assert!(!store.renew_leases("b", &[(id, a.epoch)], TTL, now).await.unwrap()[0].held);
        // Two hosts with one node id: the second claim fences the first.
        let later = after_expiry(backend, now).await;
        let again = store.claim_sagas(&lease("a", later), 1).await.unwrap().remove(0);
        assert_eq!(again.epoch, a.epoch + 1);
        assert!(matches!(write(fence(&a, "a"), 2).await, Err(StoreError::LeaseLost(_))), "the older claim is fenced off");
        assert!(!store.renew_leases("a", &[(id, a.epoch)], TTL, later).await.unwrap()[0].held);
        assert_eq!(write(fence(&again, "a"), 2).await.unwrap(), Applied::Done { version: 3, woke: false, taken: Vec::new() });
        store.release_leases("a", &[(id, again.epoch)]).await.unwrap();
        assert!(matches!(write(fence(&again, "a"), 3).await, Err(StoreError::LeaseLost(_))), "a released lease fences too");
        // Nobody holds it now: an unleased write applies, and fences off
        // the last holder for good.
        assert_eq!(write(Fence::Unleased, 3).await.unwrap(), Applied::Done { version: 4, woke: false, taken: Vec::new() });
    }

    transitions_written_together_each_get_their_own_answer(backend) {
        // Many transitions at once: the SQLite writer commits them in one
        // transaction (each in its own savepoint), PostgreSQL writes them in
        // grouped statements. Each must still be fenced by its own lease and
        // version, and answered with its own result; a lost lease or a stale
        // version must not sink the rest.
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let mut ids = Vec::new();
        for _ in 0..40 {
            ids.push(create_saga(store.as_ref(), vec![echo.clone(), echo.clone()], json!({})).await);
        }
        let now = Timestamp::now();
        let claimed = store.claim_sagas(&lease("a", now), 40).await.unwrap();
        assert_eq!(claimed.len(), 40);
        let plan = claimed[0].saga.plan.clone();
        for id in ids.iter().skip(2).step_by(5) {
            request_cancel(store.as_ref(), *id).await;
        }
        let transitions = ids.iter().enumerate().map(|(i, id)| {
            let c = claimed.iter().find(|c| c.saga.id == *id).unwrap();
            let owner = if i % 5 == 1 { "b" } else { "a" };
            let mut t = Transition::new(*id, fence(c, owner), 0, now);
            let (done, next) = step_rows(&plan, owner, now, i);
            t.steps.push(done);
            t.steps.push(next);
            t.saga.current_step_index = Some(1);
            t.saga.context = Some(json!({"n": i}).as_object().unwrap().clone());
            if i % 5 == 3 {
                t.resources.push((0, wasaga::model::RecordedResource {
                    kind: "vm".into(),
                    external_id: format!("vm-{i}"),
                    spec: json!({"i": i}),
                }));
            }
            let store = store.clone();
            async move { store.apply(t).await }
        });
        let results = futures::future::join_all(transitions).await;
        for (i, (id, result)) in ids.iter().zip(results).enumerate() {
            let detail = store.saga(*id).await.unwrap().unwrap();
            match i % 5 {
                1 => {
                    assert!(matches!(result, Err(StoreError::LeaseLost(got)) if got == *id), "{i}: {result:?}");
                    assert_eq!(detail.saga.current_step_index, 0, "{i}: a fenced write changes nothing");
                    assert!(detail.steps.is_empty());
                }
                2 => {
                    assert_eq!(result.unwrap(), Applied::Stale, "{i}: a cancel was recorded");
                    assert_eq!(detail.saga.current_step_index, 0, "{i}: a stale write changes nothing");
                    assert!(detail.steps.is_empty());
                    assert!(detail.saga.cancel_requested);
                }
                other => {
                    assert_eq!(result.unwrap_or_else(|e| panic!("{i}: {e}")), Applied::Done { version: 1, woke: false, taken: Vec::new() }, "{i}");
                    assert_eq!(detail.saga.version, 1);
                    assert_eq!(detail.saga.current_step_index, 1, "{i}");
                    assert_eq!(detail.saga.context, *json!({"n": i}).as_object().unwrap(), "{i}");
                    assert_eq!(detail.steps[0].status, StepStatus::Completed, "{i}");
                    assert_eq!(detail.steps[0].output, Some(json!({"n": i})), "{i}");
                    assert_eq!(detail.steps.len(), 2, "{i}");
                    assert_eq!(detail.resources.len(), usize::from(other == 3), "{i}");
                }
            }
        }
    }

    a_failing_write_among_many_fails_alone(backend) {
        // Writes that reach the store together (one SQLite transaction):
        // the ones that fail (a saga id that exists) get their own error,
        // leave nothing behind, and the others commit.
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let taken = SagaRun::pending("test", vec![echo.clone()], json!({"first": true}), None, None, Timestamp::now());
        new_saga(store.as_ref(), taken.clone(), None).await;
        let writes = (0..30).map(|i| {
            let store = store.clone();
            let saga = if i % 3 == 0 {
                SagaRun { inputs: json!({"i": i}), ..taken.clone() }
            } else {
                SagaRun::pending("test", vec![echo.clone()], json!({"i": i}), None, None, Timestamp::now())
            };
            let (first, _) = step_rows(&[echo.clone(), echo.clone()], "a", Timestamp::now(), i);
            async move {
                let id = saga.id;
                let created = store.create_saga(NewSaga {
                    ready_at: Some(saga.created_at),
                    saga,
                    idempotency: None,
                    lease: Some(lease("a", Timestamp::now())),
                    ledger: vec![first],
                }).await;
                (id, created)
            }
        });
        let results = futures::future::join_all(writes).await;
        for (i, (id, result)) in results.into_iter().enumerate() {
            if i % 3 == 0 {
                assert!(result.is_err(), "{i}: a second saga with id {id} was accepted: {result:?}");
                continue;
            }
            match result {
                Ok(CreateSaga::Created(c)) => assert_eq!(c.epoch, 1),
                other => panic!("{i}: {other:?}"),
            }
            let detail = store.saga(id).await.unwrap().expect("created");
            assert_eq!(detail.saga.inputs, json!({"i": i}));
            assert_eq!(detail.steps.len(), 1, "{i}: its first row in the same commit");
        }
        let first = store.saga(taken.id).await.unwrap().unwrap();
        assert_eq!(first.saga.inputs, json!({"first": true}), "the existing saga is untouched");
        assert!(first.steps.is_empty());
    }

    a_parked_saga_is_not_claimed_before_it_is_ready(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let id = create_saga(store.as_ref(), vec![echo], json!({})).await;
        let now = Timestamp::now();
        let c = store.claim_sagas(&lease("a", now), 1).await.unwrap().remove(0);
        let ready = now.plus(Duration::from_millis(800));
        let mut t = Transition::new(id, fence(&c, "a"), 0, now);
        t.saga.ready_at = Some(Some(ready));
        t.release_lease = true;
        store.apply(t).await.unwrap();
        assert!(store.claim_sagas(&lease("b", now), 1).await.unwrap().is_empty(), "not before it is ready");
        let when = match backend {
            Backend::Sqlite => ready,
            Backend::Postgres => {
                tokio::time::sleep(Duration::from_millis(900)).await;
                Timestamp::now()
            }
        };
        let again = store.claim_sagas(&lease("b", when), 1).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].epoch, 2);
        // Not ready at all (paused): never claimed.
        let mut t = Transition::new(id, fence(&again[0], "b"), 1, when);
        t.saga.status = Some(SagaStatus::Paused);
        t.saga.ready_at = Some(None);
        t.release_lease = true;
        store.apply(t).await.unwrap();
        let much_later = after_expiry(backend, when).await.plus(Duration::from_secs(3600));
        assert!(store.claim_sagas(&lease("c", much_later), 1).await.unwrap().is_empty());
    }
}

/// SQLite databases written under the earlier migrations read the same
/// after the newest, unfinished sagas pin their plugins (so a pinned plugin
/// cannot be deleted), and the schema ends as a new database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_migrations_keep_every_row_of_an_older_database() {
    use sqlx::{Connection, Executor, Row};
    let older = TestDb::new(Backend::Sqlite).await;
    let earlier = tempfile::tempdir().unwrap();
    for file in ["0001_initial.sql", "0002_fewer_pages_per_commit.sql"] {
        std::fs::copy(
            wasaga_tests::repo().join("migrations/sqlite").join(file),
            earlier.path().join(file),
        )
        .unwrap();
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(older.dir.path().join("wasaga.db"))
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(earlier.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    let echo = component("echo");
    let digest = Digest::of(&echo);
    sqlx::query(
        "INSERT INTO plugins (digest, name, size, wasm, created_at) VALUES (?, 'echo', ?, ?, 1000)",
    )
    .bind(digest.as_str())
    .bind(echo.len() as i64)
    .bind(&echo)
    .execute(&mut conn)
    .await
    .unwrap();
    let plan = serde_json::to_string(&json!([{"name": "echo", "plugin": digest.as_str(), "max_attempts": 3, "timeout_ms": 30000}])).unwrap();
    let sagas = [
        ("019ac4f2-0000-7000-8000-000000000001", "pending", 0),
        ("019ac4f2-0000-7000-8000-000000000002", "running", 0),
        ("019ac4f2-0000-7000-8000-000000000003", "completed", 1),
    ];
    for (i, (id, status, index)) in sagas.iter().enumerate() {
        sqlx::query(
            "INSERT INTO saga_runs (id, kind, status, steps, inputs, current_step_index, context, idempotency_key,
                 request_hash, created_at, updated_at)
             VALUES (?, 'old', ?, ?, '{}', ?, '{}', ?, 'hash', ?, ?)",
        )
        .bind(id)
        .bind(status)
        .bind(&plan)
        .bind(index)
        .bind(format!("key-{i}"))
        .bind(2000 + i as i64)
        .bind(2000 + i as i64)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO saga_step_results (saga_id, step_index, phase, status, output, attempts, logs, started_at, finished_at)
         VALUES ('019ac4f2-0000-7000-8000-000000000003', 0, 'execute', 'completed', '{\"a\":1}', 1, '[]', 2100, 2200),
                ('019ac4f2-0000-7000-8000-000000000002', 0, 'execute', 'running', NULL, 1, '[]', 2100, NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let migrated = older.open().await;
    let all = SagaFilter {
        limit: 100,
        ..SagaFilter::default()
    };
    let listed = migrated.list_sagas(&all).await.unwrap();
    assert_eq!(listed.len(), 3);
    let running = migrated
        .saga(sagas[1].0.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running.saga.status, SagaStatus::Running);
    assert_eq!(running.steps[0].status, StepStatus::Running);
    assert_eq!(running.steps[0].polls, 0);
    let done = migrated
        .saga(sagas[2].0.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.steps[0].output, Some(json!({"a": 1})));
    assert_eq!(
        migrated
            .plugin_by_name("echo")
            .await
            .unwrap()
            .map(|p| p.current),
        Some(true)
    );
    // The unfinished ones pin echo, and are ready to be claimed.
    match migrated.delete_plugin(&digest).await.unwrap() {
        DeletePlugin::Pinned(by) => assert_eq!(by.len(), 2),
        other => panic!("{other:?}"),
    }
    let claimed = migrated
        .claim_sagas(&lease("a", Timestamp::now()), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    // Keys still resolve.
    let again = SagaRun::pending("old", Vec::new(), json!({}), None, None, Timestamp::now());
    match new_saga(migrated.as_ref(), again, Some(("key-1", "hash"))).await {
        CreateSaga::Existing(found) => assert_eq!(found.id.to_string(), sagas[1].0),
        other => panic!("{other:?}"),
    }
    drop(migrated);

    // The migrated schema is the schema of a database created new.
    let current = TestDb::new(Backend::Sqlite).await;
    drop(current.open().await);
    let schema = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name != '_sqlx_migrations' ORDER BY name";
    let read = |db: &TestDb| {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db.dir.path().join("wasaga.db"))
            .read_only(true);
        async move {
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            let rows = conn.fetch_all(schema).await.unwrap();
            rows.iter()
                .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(read(&older).await, read(&current).await);
}
