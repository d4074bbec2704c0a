//! Schedules (docs/schedules.md): a template fired on a timer once per
//! nominal time, with bad puts refused whole, the overlap policies kept
//! across runs (skip, buffer one, allow, cancel the other), pause, resume,
//! trigger and delete; fires missed while no host ran recorded, not
//! started; and two hosts on PostgreSQL firing every nominal time of many
//! schedules exactly once, with no leader.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use wasaga_tests::{Backend, Counter, TestDb, TestServer, on_both};

async fn put(server: &TestServer, path: &str, body: &Value) -> (StatusCode, Value) {
    let r = server
        .http
        .put(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

async fn post(server: &TestServer, path: &str) -> (StatusCode, Value) {
    server.post_json(path, &json!({})).await
}

/// The schedule's finished fires, oldest first, once at least `n` have
/// finished.
async fn wait_fires(server: &TestServer, name: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let schedule = server.get_json(&format!("/v1/schedules/{name}")).await;
        let mut fires: Vec<Value> = schedule["fires"]
            .as_array()
            .unwrap_or_else(|| panic!("{schedule}"))
            .iter()
            .filter(|f| !f["outcome"].is_null())
            .cloned()
            .collect();
        if fires.len() >= n {
            fires.reverse();
            return fires;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never fired {n} times: {schedule}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn millis(at: &Value) -> i64 {
    serde_json::from_value::<wasaga::model::Timestamp>(at.clone())
        .unwrap_or_else(|e| panic!("{at}: {e}"))
        .millis()
}

/// A template of one `counter` step whose inputs must name the counter.
async fn counter_template(server: &TestServer, counter: &Counter, delay: Duration) {
    server.upload("counter").await;
    counter.grant_on(&server.http, &server.base).await;
    counter.set_delay(delay);
    let (status, body) = put(
        server,
        "/v1/templates/tick",
        &json!({
            "steps": ["counter"],
            "inputs_schema": {"type": "object", "required": ["counter_url"]},
        }),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
}

on_both! {
    a_schedule_fires_each_nominal_time_once_and_says_why_it_skipped(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        let counter = Counter::start().await;
        // Each run takes 2.5 s: fires every second meet a run still going.
        counter_template(&server, &counter, Duration::from_millis(2500)).await;
        let inputs = json!({"counter_url": counter.url()});

        // Bad puts: the field named, nothing stored.
        let cases = [
            (json!({"every": "1s"}), StatusCode::BAD_REQUEST, "`template` is required"),
            (json!({"template": "nope", "every": "1s"}), StatusCode::UNPROCESSABLE_ENTITY, "nope"),
            (json!({"template": "tick", "every": "1s"}), StatusCode::UNPROCESSABLE_ENTITY, "counter_url"),
            (json!({"template": "tick", "inputs": [1], "every": "1s"}), StatusCode::BAD_REQUEST, "`inputs`"),
            (json!({"template": "tick", "inputs": inputs, "every": "1s", "cron": "* * * * *"}), StatusCode::BAD_REQUEST, "not both"),
            (json!({"template": "tick", "inputs": inputs}), StatusCode::BAD_REQUEST, "`cron` or `every`"),
            (json!({"template": "tick", "inputs": inputs, "cron": "61 * * * *"}), StatusCode::BAD_REQUEST, "`cron`"),
            (json!({"template": "tick", "inputs": inputs, "cron": "0 0 30 2 *"}), StatusCode::BAD_REQUEST, "never fires"),
            (json!({"template": "tick", "inputs": inputs, "cron": "0 3 * * *", "timezone": "Mars/Olympus"}), StatusCode::BAD_REQUEST, "`timezone`"),
            (json!({"template": "tick", "inputs": inputs, "every": "250ms"}), StatusCode::BAD_REQUEST, "`every`"),
            (json!({"template": "tick", "inputs": inputs, "every": "1s", "overlap": "sometimes"}), StatusCode::BAD_REQUEST, "overlap"),
            (json!({"template": "tick", "inputs": inputs, "every": "1s", "catchup_window": "0s"}), StatusCode::BAD_REQUEST, "`catchup_window`"),
            (json!({"template": "tick", "inputs": inputs, "every": "1s", "jitter": "1s"}), StatusCode::BAD_REQUEST, "jitter"),
        ];
        for (body, want, says) in cases {
            let (status, error) = put(&server, "/v1/schedules/tick-every", &body).await;
            assert_eq!(status, want, "{body}: {error}");
            let message = error["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{body}: `{message}` should say {says}");
        }
        let (status, _) = put(&server, "/v1/schedules/-bad", &json!({"template": "tick", "inputs": inputs, "every": "1s"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(server.get_json("/v1/schedules").await, json!({"schedules": []}), "nothing stored");

        // Every second, `skip` by default.
        let (status, created) = put(&server, "/v1/schedules/tick-every", &json!({"template": "tick", "inputs": inputs, "every": "1s"})).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["overlap"], "skip");
        assert_eq!(created["catchup_window"], "1h");
        let next: Vec<i64> = created["next_runs"].as_array().unwrap().iter().map(millis).collect();
        assert_eq!(next.len(), 5, "{created}");
        assert!(next.windows(2).all(|w| w[1] - w[0] == 1000) && next[0] % 1000 == 0, "{created}");

        let fires = wait_fires(&server, "tick-every", 7).await;
        let (status, paused) = post(&server, "/v1/schedules/tick-every/pause").await;
        assert_eq!(status, StatusCode::OK, "{paused}");
        assert_eq!(paused["paused"], true);
        assert_eq!(paused["next_runs"], json!([]));

        // One record per nominal time, every second, none twice.
        let nominal: Vec<i64> = fires.iter().map(|f| millis(&f["nominal_at"])).collect();
        assert!(nominal.windows(2).all(|w| w[1] - w[0] == 1000), "{fires:?}");
        let started: Vec<&Value> = fires.iter().filter(|f| f["outcome"] == "started").collect();
        let skipped: Vec<&Value> = fires.iter().filter(|f| f["outcome"] == "skipped").collect();
        assert!(started.len() >= 2 && !skipped.is_empty(), "{fires:?}");
        assert_eq!(started.len() + skipped.len(), fires.len(), "{fires:?}");
        for fire in &skipped {
            let reason = fire["reason"].as_str().unwrap();
            assert!(reason.contains("still going") && fire["saga_id"].is_null(), "{fire}");
            let holder = started.iter().rev().find(|s| millis(&s["nominal_at"]) < millis(&fire["nominal_at"])).expect("a run before");
            assert!(reason.contains(holder["saga_id"].as_str().unwrap()), "it names the run still going: {fire}");
        }
        // Runs never overlapped: each began after the one before ended.
        let mut calls = Vec::new();
        for fire in &started {
            let id = fire["saga_id"].as_str().unwrap();
            let saga = server.wait_status(id, "completed").await;
            assert_eq!(saga["template"], "tick");
            assert_eq!(saga["triggered_by"], "schedule:tick-every", "{saga}");
            calls.push(counter.calls_of(&id.parse().unwrap())[0].at);
        }
        for pair in calls.windows(2) {
            let gap = pair[1].duration_since(pair[0]).expect("in order");
            assert!(gap >= Duration::from_millis(2500), "a run began {gap:?} after the one before");
        }

        // Paused: nothing fires.
        let count = server.get_json("/v1/schedules/tick-every").await["fires"].as_array().unwrap().len();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(server.get_json("/v1/schedules/tick-every").await["fires"].as_array().unwrap().len(), count);

        // Resumed from now; a trigger fires at once, by hand.
        let (status, resumed) = post(&server, "/v1/schedules/tick-every/resume").await;
        assert_eq!(status, StatusCode::OK, "{resumed}");
        assert_eq!(resumed["next_runs"].as_array().unwrap().len(), 5);
        let (status, _) = post(&server, "/v1/schedules/tick-every/pause").await;
        assert_eq!(status, StatusCode::OK);
        let (status, fire) = post(&server, "/v1/schedules/tick-every/trigger").await;
        assert_eq!(status, StatusCode::OK, "{fire}");
        assert_eq!(fire["manual"], true);
        assert!(fire["outcome"] == "started" || fire["outcome"] == "skipped", "{fire}");
        let list = server.get_json("/v1/schedules").await;
        assert_eq!(list["schedules"][0]["name"], "tick-every");
        assert_eq!(list["schedules"][0]["fires"].as_array().unwrap().len(), 1, "the list shows the latest fire");
        let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("wasaga_schedule_fires_total{outcome=\"skipped\"}"), "{metrics}");
        // The console's page lists it with its latest fires.
        let html = server.http.get(server.url("/ui/schedules")).send().await.unwrap().text().await.unwrap();
        let a_run = started[0]["saga_id"].as_str().unwrap();
        assert!(html.contains("tick-every") && html.contains("every 1s") && html.contains("paused") && html.contains("(by hand)"), "{html}");
        assert!(html.contains("still going") || html.contains(&format!("/ui/sagas/{a_run}")), "{html}");

        // A replace keeps the record; a delete ends it.
        let (status, replaced) = put(&server, "/v1/schedules/tick-every", &json!({"template": "tick", "inputs": inputs, "cron": "0 3 * * *", "timezone": "Europe/Rome", "paused": true})).await;
        assert_eq!(status, StatusCode::OK, "{replaced}");
        assert_eq!(replaced["timezone"], "Europe/Rome");
        assert!(!replaced["fires"].as_array().unwrap().is_empty());
        let r = server.http.delete(server.url("/v1/schedules/tick-every")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = server.http.get(server.url("/v1/schedules/tick-every")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let (status, _) = post(&server, "/v1/schedules/tick-every/trigger").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // The host carries on.
        assert!(server.http.get(server.url("/healthz")).send().await.unwrap().status().is_success());
        server.stop().await.unwrap();
    }

    the_overlap_policies_buffer_one_allow_and_cancel_the_other(backend) {
        // Fired by hand (the schedules are paused), so every fire's moment
        // is the test's: a trigger applies the policy as a timed fire does.
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        let counter = Counter::start().await;
        counter_template(&server, &counter, Duration::from_millis(1500)).await;
        let inputs = json!({"counter_url": counter.url()});
        let schedule = |overlap: &str| json!({"template": "tick", "inputs": inputs, "cron": "0 3 1 1 *", "overlap": overlap, "paused": true});
        let trigger = |name: &'static str| {
            let server = &server;
            async move {
                let (status, fire) = post(server, &format!("/v1/schedules/{name}/trigger")).await;
                assert_eq!(status, StatusCode::OK, "{fire}");
                fire
            }
        };

        // buffer_one: a run, one waiting behind it, and the third skipped.
        assert_eq!(put(&server, "/v1/schedules/buffered", &schedule("buffer_one")).await.0, StatusCode::CREATED);
        let a = trigger("buffered").await;
        let b = trigger("buffered").await;
        let c = trigger("buffered").await;
        assert_eq!(a["outcome"], "started", "{a}");
        assert_eq!(b["outcome"], "buffered", "{b}");
        let (a_id, b_id) = (a["saga_id"].as_str().unwrap(), b["saga_id"].as_str().unwrap());
        assert_eq!(server.get_json(&format!("/v1/sagas/{b_id}")).await["status"], "pending");
        assert_eq!(c["outcome"], "skipped", "{c}");
        assert!(c["reason"].as_str().unwrap().contains(b_id), "{c}");
        server.wait_status(a_id, "completed").await;
        server.wait_status(b_id, "completed").await;
        let first = |id: &str| counter.calls_of(&id.parse().unwrap())[0].at;
        assert!(first(b_id).duration_since(first(a_id)).unwrap() >= Duration::from_millis(1500), "the buffered run waited for the first");

        // allow: runs side by side.
        assert_eq!(put(&server, "/v1/schedules/allowed", &schedule("allow")).await.0, StatusCode::CREATED);
        let d = trigger("allowed").await;
        let e = trigger("allowed").await;
        assert_eq!((d["outcome"].as_str(), e["outcome"].as_str()), (Some("started"), Some("started")));
        let (d_id, e_id) = (d["saga_id"].as_str().unwrap(), e["saga_id"].as_str().unwrap());
        server.wait_status(d_id, "completed").await;
        server.wait_status(e_id, "completed").await;
        assert!(first(e_id).duration_since(first(d_id)).unwrap_or_default() < Duration::from_millis(1500), "allow does not wait");

        // cancel_other: the run going is cancelled and compensated; the new
        // one starts when it has ended.
        counter.set_delay(Duration::from_secs(3));
        assert_eq!(put(&server, "/v1/schedules/replacing", &schedule("cancel_other")).await.0, StatusCode::CREATED);
        let f = trigger("replacing").await;
        let f_id = f["saga_id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while counter.calls_of(&f_id.parse().unwrap()).is_empty() {
            assert!(Instant::now() < deadline, "the first run never called");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        counter.set_delay(Duration::from_millis(100));
        let g = trigger("replacing").await;
        assert_eq!(g["outcome"], "started", "{g}");
        assert!(g["reason"].as_str().unwrap().contains(&f_id), "{g}");
        let g_id = g["saga_id"].as_str().unwrap();
        let f_done = server.wait_status(&f_id, "rolled_back").await;
        assert!(f_done["actions"].to_string().contains("schedule:replacing"), "who cancelled it: {f_done}");
        server.wait_status(g_id, "completed").await;
        let g_first = first(g_id);
        assert!(counter.calls_of(&f_id.parse().unwrap()).iter().all(|c| c.at <= g_first), "the new run began after the old one ended");

        // A fire whose start is refused (its template deleted since) is
        // recorded `failed` with why; the schedule carries on.
        let r = server.http.delete(server.url("/v1/templates/tick")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let failed = trigger("allowed").await;
        assert_eq!(failed["outcome"], "failed", "{failed}");
        assert!(failed["reason"].as_str().unwrap().contains("tick") && failed["saga_id"].is_null(), "{failed}");
        let shown = server.get_json("/v1/schedules/allowed").await;
        assert_eq!(shown["fires"][0]["outcome"], "failed", "{shown}");
        server.stop().await.unwrap();
    }

    fires_missed_while_no_host_ran_are_recorded_not_started(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        let counter = Counter::start().await;
        counter_template(&server, &counter, Duration::ZERO).await;
        let body = json!({"template": "tick", "inputs": {"counter_url": counter.url()}, "every": "1s", "catchup_window": "1s"});
        assert_eq!(put(&server, "/v1/schedules/late", &body).await.0, StatusCode::CREATED);
        wait_fires(&server, "late", 1).await;
        server.stop().await.unwrap();
        // No host for 4 s: 3 or 4 nominal times pass the 1 s window.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let server = TestServer::on(&db, |_| {}).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let missed = loop {
            let schedule = server.get_json("/v1/schedules/late").await;
            let fires = schedule["fires"].as_array().unwrap().clone();
            if let Some(missed) = fires.iter().find(|f| f["outcome"] == "missed") {
                let newer = fires.iter().filter(|f| f["outcome"] == "started" && millis(&f["nominal_at"]) > millis(&missed["nominal_at"])).count();
                if newer > 0 {
                    break missed.clone();
                }
            }
            assert!(Instant::now() < deadline, "{schedule}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let reason = missed["reason"].as_str().unwrap();
        assert!(reason.contains("catch-up window (1s)") && reason.contains("nominal time"), "{missed}");
        assert!(missed["saga_id"].is_null());
        // Every missed nominal time started nothing: the sagas are the
        // started fires'.
        let schedule = server.get_json("/v1/schedules/late").await;
        let started = schedule["fires"].as_array().unwrap().iter().filter(|f| f["outcome"] == "started").count();
        let sagas = server.get_json("/v1/sagas?template=tick&limit=1000").await["sagas"].as_array().unwrap().len();
        assert!(sagas <= started + 1, "{sagas} sagas for {started} started fires: {schedule}");
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_fire_every_nominal_time_of_many_schedules_once() {
    // Two hosts on one PostgreSQL database, 20 schedules every second,
    // overlap `allow` (so every nominal time must start a saga): each
    // nominal time has one record and one saga, with no leader.
    let db = TestDb::new(Backend::Postgres).await;
    let a = TestServer::on(&db, |_| {}).await;
    let b = TestServer::on(&db, |_| {}).await;
    a.upload("echo").await;
    let (status, body) = put(&a, "/v1/templates/ping", &json!({"steps": ["echo"]})).await;
    assert!(status.is_success(), "{body}");
    let names: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        let host = if i % 2 == 0 { &a } else { &b };
        let (status, body) = put(
            host,
            &format!("/v1/schedules/{name}"),
            &json!({"template": "ping", "inputs": {"n": i}, "every": "1s", "overlap": "allow"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for name in &names {
        wait_fires(&a, name, 4).await;
    }
    for name in &names {
        let (status, _) = post(&b, &format!("/v1/schedules/{name}/pause")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut started = BTreeSet::new();
    for name in &names {
        // A fire acted on while the pause landed finishes.
        let deadline = Instant::now() + Duration::from_secs(30);
        let fires = loop {
            let fires: Vec<Value> = a.get_json(&format!("/v1/schedules/{name}")).await["fires"]
                .as_array()
                .unwrap()
                .clone();
            if fires.iter().all(|f| !f["outcome"].is_null()) {
                break fires;
            }
            assert!(Instant::now() < deadline, "{name}: {fires:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let nominal: Vec<i64> = fires
            .iter()
            .rev()
            .map(|f| millis(&f["nominal_at"]))
            .collect();
        assert!(
            nominal.windows(2).all(|w| w[1] - w[0] == 1000),
            "{name}: {fires:?}"
        );
        for fire in &fires {
            assert_eq!(fire["outcome"], "started", "{name}: {fire}");
            assert!(
                started.insert(fire["saga_id"].as_str().unwrap().to_string()),
                "one saga per fire"
            );
        }
    }
    let sagas: BTreeSet<String> = a.get_json("/v1/sagas?template=ping&limit=1000").await["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        sagas, started,
        "every saga is one fire's, and every fire's saga exists"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
