//! The `Store` contract, on SQLite and on PostgreSQL alike: plugins,
//! idempotent creation, claims that never hand one saga to two owners,
//! leases that fence every write, renewal that reports cancels, and
//! transitions that are all or nothing.

use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use wasaga::model::{Digest, PluginInfo, SagaRun, SagaStatus, StepStatus, Timestamp};
use wasaga::store::{
    CancelSaga, Claim, CreateSaga, DeletePlugin, PutPlugin, SagaFilter, StoreError, Transition,
};
use wasaga_tests::{Backend, TestDb, component, create_saga, install, on_both};

fn claim(owner: &str, now: Timestamp, start_pending: bool) -> Claim {
    Claim {
        owner: Arc::from(owner),
        now,
        lease_until: now.plus(Duration::from_secs(10)),
        start_pending,
    }
}

fn info(name: &str, bytes: &[u8], created_at: i64) -> PluginInfo {
    PluginInfo {
        digest: Digest::of(bytes),
        name: name.into(),
        size: bytes.len() as u64,
        created_at: Timestamp(created_at),
    }
}

on_both! {
    plugins_by_digest_and_newest_name(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let old = component("echo");
        let new = component("fail");
        let first = info("greeter", &old, 1_000);
        assert!(matches!(store.put_plugin(&first, &old).await.unwrap(), PutPlugin::Created(_)));
        assert_eq!(store.put_plugin(&first, &old).await.unwrap(), PutPlugin::Existing(first.clone()));
        // Looked up before and after each change: a store that keeps the
        // metadata in memory must see every acknowledged change.
        assert_eq!(store.plugin_by_name("greeter").await.unwrap(), Some(first.clone()));
        let second = info("greeter", &new, 2_000);
        store.put_plugin(&second, &new).await.unwrap();
        assert_eq!(store.plugin_by_name("greeter").await.unwrap(), Some(second.clone()), "the newest of a name");
        assert_eq!(store.plugin(&first.digest).await.unwrap(), Some(first.clone()));
        assert_eq!(store.plugin_bytes(&first.digest).await.unwrap(), Some(old));
        assert_eq!(store.list_plugins().await.unwrap(), vec![second.clone(), first.clone()]);
        assert_eq!(store.delete_plugin(&first.digest).await.unwrap(), DeletePlugin::Deleted);
        assert_eq!(store.delete_plugin(&first.digest).await.unwrap(), DeletePlugin::NotFound);
        assert_eq!(store.plugin_bytes(&first.digest).await.unwrap(), None);
        assert_eq!(store.plugin(&first.digest).await.unwrap(), None);
        assert_eq!(store.list_plugins().await.unwrap(), vec![second.clone()]);
        assert_eq!(store.delete_plugin(&second.digest).await.unwrap(), DeletePlugin::Deleted);
        assert_eq!(store.plugin_by_name("greeter").await.unwrap(), None, "no upload of the name is left");
        assert_eq!(store.list_plugins().await.unwrap(), vec![]);
    }

    an_unfinished_saga_pins_its_plugins(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let id = create_saga(store.as_ref(), vec![echo.clone()], json!({})).await;
        assert_eq!(store.delete_plugin(&echo.plugin).await.unwrap(), DeletePlugin::Pinned(vec![id]));
    }

    idempotent_creation(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let a = SagaRun::pending("k", vec![echo.clone()], json!({}), None, None, Timestamp::now());
        let b = SagaRun::pending("k", vec![echo], json!({}), None, None, Timestamp::now());
        assert!(matches!(store.create_saga(&a, Some(("key", "h1")), None).await.unwrap(), CreateSaga::Created(_)));
        match store.create_saga(&b, Some(("key", "h1")), None).await.unwrap() {
            CreateSaga::Existing(existing) => assert_eq!(existing.id, a.id),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.create_saga(&b, Some(("key", "h2")), None).await.unwrap(), CreateSaga::KeyConflict(a.id));
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
                    let got = store.claim_sagas(&claim(&format!("host-{i}"), now, true), 7).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| {
                        assert!(c.first_step_started);
                        assert_eq!(c.saga.status, SagaStatus::Running);
                        assert_eq!(c.ledger[0].status, StepStatus::Running);
                        assert_eq!(c.ledger[0].executed_by.as_deref(), Some(format!("host-{i}").as_str()));
                        c.saga.id
                    }));
                }
            }
        });
        let results = futures::future::join_all(claimers).await;
        // What a claim answers is what it stored.
        for id in results.iter().flatten().take(5) {
            let detail = store.saga(*id).await.unwrap().unwrap();
            assert_eq!(detail.saga.status, SagaStatus::Running);
            assert_eq!(detail.saga.updated_at, now);
            assert_eq!(detail.steps.len(), 1);
            let row = &detail.steps[0];
            let expected = wasaga::model::StepResult::first_attempt(0, &detail.saga.plan[0], row.executed_by.as_deref().unwrap(), now);
            assert_eq!(*row, expected, "the stored running mark");
        }
        let mut seen = BTreeSet::new();
        for mine in &results {
            for id in mine {
                assert!(seen.insert(*id), "saga {id} claimed twice");
            }
        }
        assert_eq!(seen, ids, "every saga claimed exactly once");
        // Held leases are not claimable until they expire.
        assert!(store.claim_sagas(&claim("late", now, true), 100).await.unwrap().is_empty());
        let later = now.plus(Duration::from_secs(11));
        let taken = store.claim_sagas(&claim("late", later, false), 100).await.unwrap();
        assert_eq!(taken.len(), 60);
        for c in &taken {
            assert!(!c.first_step_started, "already started");
            let stored = store.saga(c.saga.id).await.unwrap().unwrap();
            assert_eq!(c.ledger, stored.steps, "a taken-over saga comes with its ledger");
            assert_eq!(c.ledger.len(), 1);
        }
    }

    leases_fence_writes_and_renewal_reports_cancels(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let id = create_saga(store.as_ref(), vec![echo.clone(), echo], json!({})).await;
        let now = Timestamp::now();
        let claimed = store.claim_sagas(&claim("a", now, true), 1).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let mut t = Transition::new(id, Arc::from("b"), now);
        t.saga.current_step_index = Some(1);
        assert!(matches!(store.apply(t).await, Err(StoreError::LeaseLost(_))), "another owner cannot write");
        let states = store.renew_leases("a", &[id], now.plus(Duration::from_secs(20))).await.unwrap();
        assert!(states[0].held && !states[0].cancel_requested);
        assert!(matches!(store.request_cancel(id, now).await.unwrap(), CancelSaga::Requested(_)));
        let states = store.renew_leases("a", &[id], now.plus(Duration::from_secs(20))).await.unwrap();
        assert!(states[0].held && states[0].cancel_requested);
        assert!(!store.renew_leases("b", &[id], now).await.unwrap()[0].held);
        // A transition's start is refused once a cancel is recorded.
        let mut t = Transition::new(id, Arc::from("a"), now);
        t.start = Some(wasaga::model::StepResult::first_attempt(1, &claimed[0].saga.plan[1], "a", now));
        let applied = store.apply(t).await.unwrap();
        assert!(applied.cancel_requested && !applied.started);
        store.release_leases("a", &[id]).await.unwrap();
        let t = Transition::new(id, Arc::from("a"), now);
        assert!(matches!(store.apply(t).await, Err(StoreError::LeaseLost(_))), "a released lease fences too");
    }

    transitions_written_together_each_get_their_own_answer(backend) {
        // Many transitions at once: the SQLite writer commits them in one
        // transaction (each in its own savepoint), PostgreSQL writes them in
        // grouped statements. Each must still be fenced
        // by its own lease, refused its own start after its own cancel, and
        // answered with its own result; a lost lease must not sink the rest.
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let mut ids = Vec::new();
        for _ in 0..40 {
            ids.push(create_saga(store.as_ref(), vec![echo.clone(), echo.clone()], json!({})).await);
        }
        let now = Timestamp::now();
        let claimed = store.claim_sagas(&claim("a", now, true), 40).await.unwrap();
        assert_eq!(claimed.len(), 40);
        let plan = claimed[0].saga.plan.clone();
        for id in ids.iter().skip(2).step_by(5) {
            store.request_cancel(*id, now).await.unwrap();
        }
        let transitions = ids.iter().enumerate().map(|(i, id)| {
            let owner = if i % 5 == 1 { "b" } else { "a" };
            let mut t = Transition::new(*id, Arc::from(owner), now);
            let mut done = wasaga::model::StepResult::first_attempt(0, &plan[0], owner, now);
            done.status = StepStatus::Completed;
            done.output = Some(json!({"n": i}));
            done.finished_at = Some(now);
            t.steps.push(done);
            t.saga.current_step_index = Some(1);
            t.saga.context = Some(json!({"n": i}).as_object().unwrap().clone());
            t.start = Some(wasaga::model::StepResult::first_attempt(1, &plan[1], owner, now));
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
                    assert_eq!(detail.steps[0].status, StepStatus::Running);
                    assert_eq!(detail.steps.len(), 1);
                }
                cancelled => {
                    let applied = result.unwrap_or_else(|e| panic!("{i}: {e}"));
                    assert_eq!(applied.cancel_requested, cancelled == 2, "{i}");
                    assert_eq!(applied.started, cancelled != 2, "{i}");
                    assert_eq!(detail.saga.current_step_index, 1, "{i}");
                    assert_eq!(detail.saga.context, *json!({"n": i}).as_object().unwrap(), "{i}");
                    assert_eq!(detail.steps[0].status, StepStatus::Completed, "{i}");
                    assert_eq!(detail.steps[0].output, Some(json!({"n": i})), "{i}");
                    assert_eq!(detail.steps.len(), if cancelled == 2 { 1 } else { 2 }, "{i}: start after cancel");
                    assert_eq!(detail.resources.len(), usize::from(cancelled == 3), "{i}");
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
        store.create_saga(&taken, None, None).await.unwrap();
        let writes = (0..30).map(|i| {
            let store = store.clone();
            let saga = if i % 3 == 0 {
                SagaRun { inputs: json!({"i": i}), ..taken.clone() }
            } else {
                SagaRun::pending("test", vec![echo.clone()], json!({"i": i}), None, None, Timestamp::now())
            };
            async move { (saga.id, store.create_saga(&saga, None, Some(&claim("a", Timestamp::now(), true))).await) }
        });
        let results = futures::future::join_all(writes).await;
        for (i, (id, result)) in results.into_iter().enumerate() {
            if i % 3 == 0 {
                assert!(result.is_err(), "{i}: a second saga with id {id} was accepted: {result:?}");
                continue;
            }
            assert!(matches!(result, Ok(CreateSaga::Created(_))), "{i}: {result:?}");
            let detail = store.saga(id).await.unwrap().expect("created");
            assert_eq!(detail.saga.inputs, json!({"i": i}));
            assert_eq!(detail.steps.len(), 1, "{i}: started in the same commit");
        }
        let first = store.saga(taken.id).await.unwrap().unwrap();
        assert_eq!(first.saga.inputs, json!({"first": true}), "the existing saga is untouched");
        assert!(first.steps.is_empty());
    }

    a_final_transition_releases_the_lease_and_cancel_after_the_end_is_refused(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let echo = install(store.as_ref(), "echo").await;
        let id = create_saga(store.as_ref(), vec![echo], json!({})).await;
        let now = Timestamp::now();
        store.claim_sagas(&claim("a", now, false), 1).await.unwrap();
        let mut t = Transition::new(id, Arc::from("a"), now);
        t.saga.status = Some(SagaStatus::Completed);
        store.apply(t).await.unwrap();
        assert!(!store.renew_leases("a", &[id], now).await.unwrap()[0].held);
        assert!(matches!(store.request_cancel(id, now).await.unwrap(), CancelSaga::AlreadyEnded(_)));
        assert!(store.claim_sagas(&claim("b", now.plus(Duration::from_secs(60)), true), 5).await.unwrap().is_empty());
        let detail = store.saga(id).await.unwrap().unwrap();
        assert_eq!(detail.saga.status, SagaStatus::Completed);
    }
}

/// SQLite's second migration rebuilds `saga_runs` and the ledger. A database
/// written under the first migration alone reads the same after it, row for
/// row, keeps its idempotency keys unique, and ends with the schema of a new
/// database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_migrations_keep_every_row_of_an_older_database() {
    use sqlx::{Connection, Executor, Row};
    // The reference: a current database, written through the store.
    let current = TestDb::new(Backend::Sqlite).await;
    let store = current.open().await;
    let echo = install(store.as_ref(), "echo").await;
    let plan = vec![echo.clone(), echo.clone()];
    let mut ids = Vec::new();
    for i in 0..12 {
        let saga = SagaRun::pending(
            "old",
            plan.clone(),
            json!({"i": i}),
            None,
            None,
            Timestamp::now(),
        );
        let key = format!("key-{i}");
        let keyed = (i % 3 == 0).then_some((key.as_str(), "hash"));
        assert!(matches!(
            store.create_saga(&saga, keyed, None).await.unwrap(),
            CreateSaga::Created(_)
        ));
        ids.push(saga.id);
    }
    let now = Timestamp::now();
    assert_eq!(
        store
            .claim_sagas(&claim("a", now, true), 8)
            .await
            .unwrap()
            .len(),
        8
    );
    for (i, id) in ids.iter().take(8).enumerate() {
        let mut t = Transition::new(*id, Arc::from("a"), now);
        let mut done = wasaga::model::StepResult::first_attempt(0, &plan[0], "a", now);
        done.status = StepStatus::Completed;
        done.output = Some(json!({"n": i}));
        done.finished_at = Some(now);
        t.steps.push(done);
        t.saga.context = Some(json!({"n": i}).as_object().unwrap().clone());
        t.resources.push((
            0,
            wasaga::model::RecordedResource {
                kind: "vm".into(),
                external_id: format!("vm-{i}"),
                spec: json!({"i": i}),
            },
        ));
        if i % 2 == 0 {
            t.saga.status = Some(SagaStatus::Completed);
        } else {
            t.saga.current_step_index = Some(1);
            t.start = Some(wasaga::model::StepResult::first_attempt(
                1, &plan[1], "a", now,
            ));
        }
        store.apply(t).await.unwrap();
    }
    let mut expected = Vec::new();
    for id in &ids {
        expected.push(store.saga(*id).await.unwrap().unwrap());
    }
    let all = SagaFilter {
        limit: 100,
        ..SagaFilter::default()
    };
    let listed = store.list_sagas(&all).await.unwrap();
    assert_eq!(listed.len(), 12);

    // The same rows in a database that has had the first migration only.
    let older = TestDb::new(Backend::Sqlite).await;
    let first_only = tempfile::tempdir().unwrap();
    std::fs::copy(
        wasaga_tests::repo().join("migrations/sqlite/0001_initial.sql"),
        first_only.path().join("0001_initial.sql"),
    )
    .unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(older.dir.path().join("wasaga.db"))
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(first_only.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    let schema = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name != '_sqlx_migrations' ORDER BY name";
    let old_schema = conn.fetch_all(schema).await.unwrap();
    assert!(
        old_schema.iter().all(|r| !r
            .get::<Option<String>, _>(3)
            .unwrap_or_default()
            .contains("WITHOUT ROWID")),
        "the older database is in the first migration's schema"
    );
    let reference = current.dir.path().join("wasaga.db");
    conn.execute(format!("ATTACH DATABASE '{}' AS reference", reference.display()).as_str())
        .await
        .unwrap();
    for table in [
        "plugins",
        "saga_runs",
        "saga_step_results",
        "provisioned_resources",
    ] {
        conn.execute(format!("INSERT INTO main.{table} SELECT * FROM reference.{table}").as_str())
            .await
            .unwrap();
    }
    conn.execute("DETACH DATABASE reference").await.unwrap();
    conn.close().await.unwrap();

    let migrated = older.open().await;
    for detail in &expected {
        assert_eq!(
            migrated.saga(detail.saga.id).await.unwrap().as_ref(),
            Some(detail)
        );
    }
    assert_eq!(migrated.list_sagas(&all).await.unwrap(), listed);
    assert_eq!(
        migrated.list_plugins().await.unwrap(),
        store.list_plugins().await.unwrap()
    );
    assert_eq!(expected.iter().map(|d| d.resources.len()).sum::<usize>(), 8);
    assert_eq!(expected.iter().map(|d| d.steps.len()).sum::<usize>(), 12);

    // Keys still resolve and stay unique; sagas without one never collide.
    let again = SagaRun::pending("old", plan.clone(), json!({}), None, None, Timestamp::now());
    match migrated
        .create_saga(&again, Some(("key-3", "hash")), None)
        .await
        .unwrap()
    {
        CreateSaga::Existing(found) => assert_eq!(found.id, ids[3]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        migrated
            .create_saga(&again, Some(("key-3", "other")), None)
            .await
            .unwrap(),
        CreateSaga::KeyConflict(ids[3])
    );
    for _ in 0..2 {
        create_saga(migrated.as_ref(), plan.clone(), json!({})).await;
    }
    assert_eq!(migrated.list_sagas(&all).await.unwrap().len(), 14);

    // The migrated schema is the schema of a database created new.
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
                .map(|r| {
                    (
                        r.get::<String, _>(0),
                        r.get::<String, _>(1),
                        r.get::<Option<String>, _>(3),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let new_schema = read(&current).await;
    assert_eq!(read(&older).await, new_schema);
    assert!(
        new_schema
            .iter()
            .any(|(_, name, sql)| name == "saga_step_results"
                && sql.as_deref().is_some_and(|s| s.contains("WITHOUT ROWID")))
    );
}
