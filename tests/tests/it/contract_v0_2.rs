//! Contract 0.2.0 next to 0.1.0: both versions in one saga, durable waits
//! (`poll-after`) that use no attempt and hold nothing, their bounds, a
//! cancel or pause during a wait, and `secrets.get`. The `poll` test plugin
//! (0.2.0) counts its calls through the test counter, which answers how
//! many calls of that step and phase it has seen; `flaky` and `counter` are
//! built on 0.1.0 and stay so. A wait across a SIGKILL is in the wasaga
//! package's crash tests, which run the real binary.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use wasaga_tests::{Counter, TestDb, TestServer, on_both, poll_saga, secrets_key_file};

const WITHIN: Duration = Duration::from_secs(90);

async fn server(db: &TestDb, adjust: impl FnOnce(&mut wasaga::server::ServeOptions)) -> TestServer {
    let key = secrets_key_file(db.dir.path());
    TestServer::on(db, |o| {
        o.secrets_key_file = Some(key);
        adjust(o);
    })
    .await
}

async fn start(server: &TestServer, body: Value) -> String {
    let (status, saga) = server.post_json("/v1/sagas", &body).await;
    assert_eq!(status, StatusCode::CREATED);
    saga["id"].as_str().unwrap().to_string()
}

fn ended(s: &Value) -> bool {
    ["completed", "rolled_back", "failed"].contains(&s["status"].as_str().unwrap_or(""))
}

async fn finish(server: &TestServer, body: Value) -> Value {
    let id = start(server, body).await;
    poll_saga(&server.http, &server.base, &id, WITHIN, ended).await
}

/// A server with `poll` uploaded and allowed to reach `counter`.
async fn with_poll(db: &TestDb, counter: &Counter) -> TestServer {
    let server = server(db, |_| {}).await;
    server.upload("poll").await;
    counter
        .grant_on_to("poll", &server.http, &server.base)
        .await;
    server
}

fn log_lines(saga: &Value, step: usize) -> Vec<String> {
    saga["steps"][step]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect()
}

on_both! {
    both_versions_run_in_one_saga_and_compensate_each_other(backend) {
        let db = TestDb::new(backend).await;
        let server = server(&db, |_| {}).await;
        let flaky = server.upload("flaky").await;
        assert_eq!(flaky["contract"], "0.1.0");
        let echo = server.upload("echo").await;
        assert_eq!(echo["contract"], "0.2.0");
        let listed: Value = server.http.get(server.url("/v1/plugins/flaky")).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["contract"], "0.1.0");
        // 0.1.0, 0.2.0, 0.1.0, 0.2.0, then a failure: compensation walks
        // back through both versions, each after the other.
        let steps = json!(["flaky", "echo", "flaky", "echo", "fail"]);
        let inputs = json!({"flaky_succeed_on_attempt": 1, "message": "mixed"});
        let done = finish(&server, json!({"kind": "mixed", "steps": steps, "inputs": inputs})).await;
        assert_eq!(done["status"], "rolled_back", "{done}");
        let statuses: Vec<&str> = done["steps"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["compensated", "compensated", "compensated", "compensated", "failed"]);
        let finished: Vec<i64> = (0..4)
            .map(|i| serde_json::from_value::<wasaga::model::Timestamp>(done["steps"][i]["finished_at"].clone()).unwrap().millis())
            .collect();
        assert!(finished.windows(2).all(|w| w[0] >= w[1]), "compensated in reverse order: {finished:?}");
        assert_eq!(done["context"]["echoed_at_step_3"], "mixed");
        // The same kinds complete together too.
        let done = finish(&server, json!({"kind": "mixed", "steps": ["echo", "flaky", "echo"], "inputs": inputs})).await;
        assert_eq!(done["status"], "completed", "{done}");
    }

    a_step_polls_without_using_attempts_and_is_not_called_early(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = with_poll(&db, &counter).await;
        let inputs = json!({"counter_url": counter.url(), "polls": 3, "poll_ms": 300});
        let id = start(&server, json!({"kind": "wait", "steps": ["poll"], "inputs": inputs})).await;
        // While it waits, the saga is running and the row says until when.
        let waiting = poll_saga(&server.http, &server.base, &id, WITHIN, |s| !s["steps"][0]["waiting_until"].is_null()).await;
        assert_eq!(waiting["status"], "running");
        assert_eq!(waiting["steps"][0]["status"], "running");
        let done = poll_saga(&server.http, &server.base, &id, WITHIN, ended).await;
        assert_eq!(done["status"], "completed", "{done}");
        let row = &done["steps"][0];
        assert_eq!(row["attempts"], 1, "a poll is not an attempt");
        assert_eq!(row["polls"], 3);
        assert!(row["waiting_until"].is_null());
        assert_eq!(done["context"]["calls"], 4);
        let calls = counter.calls();
        assert_eq!(calls.len(), 4);
        assert!(calls.iter().all(|c| c.attempt == 1 && c.key == format!("{id}:0:execute")), "{calls:?}");
        for pair in calls.windows(2) {
            let gap = pair[1].at.duration_since(pair[0].at).unwrap();
            assert!(gap >= Duration::from_millis(295), "called again after {gap:?}, before the 300 ms asked");
        }
    }

    a_wait_holds_no_slot(backend) {
        // One saga driven at a time: a waiting saga must not keep another
        // from running.
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = server(&db, |o| o.runner.concurrency = 1).await;
        server.upload("poll").await;
        counter.grant_on_to("poll", &server.http, &server.base).await;
        let waiting = start(&server, json!({"kind": "wait", "steps": ["poll"], "inputs": {"counter_url": counter.url(), "forever": true, "poll_ms": 60_000}})).await;
        poll_saga(&server.http, &server.base, &waiting, WITHIN, |s| !s["steps"][0]["waiting_until"].is_null()).await;
        let quick = finish(&server, json!({"kind": "quick", "steps": ["echo", "echo"]})).await;
        assert_eq!(quick["status"], "completed");
        let r = server.http.post(server.url(&format!("/v1/sagas/{waiting}/cancel"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }

    a_wait_past_max_wait_ms_fails_for_good(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = with_poll(&db, &counter).await;
        let forever = json!({"counter_url": counter.url(), "forever": true, "poll_ms": 200});
        let done = finish(&server, json!({"kind": "wait", "steps": [{"plugin": "poll", "max_wait_ms": 700}], "inputs": forever})).await;
        assert_eq!(done["status"], "rolled_back", "{done}");
        let error = done["steps"][0]["error"].as_str().unwrap();
        assert!(error.contains("beyond its max_wait_ms of 700"), "{error}");
        assert_eq!(done["steps"][0]["attempts"], 1);
        // It had begun (it was waiting): it is compensated.
        assert_eq!(done["steps"][0]["status"], "compensated");
        // An absurd delay fails at once, with no call made later.
        let absurd = json!({"counter_url": counter.url(), "forever": true, "poll_ms": 4_000_000_000u64});
        let done = finish(&server, json!({"kind": "wait", "steps": ["poll"], "inputs": absurd})).await;
        assert_eq!(done["status"], "rolled_back");
        let error = done["steps"][0]["error"].as_str().unwrap();
        assert!(error.contains("beyond its max_wait_ms of 3600000"), "{error}");
        // A max_wait_ms past the host's ceiling is refused at the start.
        let r = server.http.post(server.url("/v1/sagas"))
            .json(&json!({"kind": "wait", "steps": [{"plugin": "poll", "max_wait_ms": 10_u64.pow(12)}]}))
            .send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("steps[0].max_wait_ms must be at most"), "{body}");
    }

    a_poll_after_zero_waits_the_minimum(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = with_poll(&db, &counter).await;
        let done = finish(&server, json!({"kind": "wait", "steps": ["poll"], "inputs": {"counter_url": counter.url(), "polls": 3, "poll_ms": 0}})).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["steps"][0]["polls"], 3);
        let calls = counter.calls();
        for pair in calls.windows(2) {
            let gap = pair[1].at.duration_since(pair[0].at).unwrap();
            assert!(gap >= Duration::from_millis(10), "a 0 ms poll is not a busy loop: {gap:?}");
        }
    }

    a_cancel_during_a_wait_compensates_the_waiting_step(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = with_poll(&db, &counter).await;
        let inputs = json!({"counter_url": counter.url(), "forever": true, "poll_ms": 600_000});
        let id = start(&server, json!({"kind": "wait", "steps": ["echo", "poll"], "inputs": inputs})).await;
        poll_saga(&server.http, &server.base, &id, WITHIN, |s| !s["steps"][1]["waiting_until"].is_null()).await;
        let r = server.http.post(server.url(&format!("/v1/sagas/{id}/cancel"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        // Promptly: the ten-minute wait does not delay it.
        let done = poll_saga(&server.http, &server.base, &id, Duration::from_secs(30), ended).await;
        assert_eq!(done["status"], "rolled_back", "{done}");
        assert_eq!(done["steps"][1]["status"], "compensated");
        assert_eq!(done["steps"][1]["error"], "interrupted by a cancel request");
        assert_eq!(done["steps"][0]["status"], "compensated");
        assert_eq!(
            done["error"]["message"],
            "cancelled while step 1 (poll) was waiting; its work had begun, so compensating from step 1"
        );
        assert_eq!(done["error"]["compensate_from_idx"], 1);
        let phases: Vec<(String, u32)> = counter.calls().iter().map(|c| (c.phase.clone(), c.step)).collect();
        assert_eq!(phases, [("execute".into(), 1), ("compensate".into(), 1)]);
    }

    a_compensation_can_wait_too(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = with_poll(&db, &counter).await;
        let inputs = json!({"counter_url": counter.url(), "compensate_polls": 2, "poll_ms": 100});
        let done = finish(&server, json!({"kind": "wait", "steps": ["poll", "fail"], "inputs": inputs})).await;
        assert_eq!(done["status"], "rolled_back", "{done}");
        let row = &done["steps"][0];
        assert_eq!(row["status"], "compensated");
        assert_eq!(row["compensate_attempts"], 1, "a poll is not an attempt");
        assert_eq!(row["polls"], 2);
        let compensations = counter.calls().iter().filter(|c| c.phase == "compensate").count();
        assert_eq!(compensations, 3);
    }

    a_pause_stops_the_next_poll(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = with_poll(&db, &counter).await;
        let inputs = json!({"counter_url": counter.url(), "polls": 3, "poll_ms": 300});
        let id = start(&server, json!({"kind": "wait", "steps": ["poll"], "inputs": inputs})).await;
        poll_saga(&server.http, &server.base, &id, WITHIN, |s| !s["steps"][0]["waiting_until"].is_null()).await;
        let r = server.http.post(server.url(&format!("/v1/sagas/{id}/pause"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let paused = poll_saga(&server.http, &server.base, &id, WITHIN, |s| s["status"] == "paused").await;
        assert_eq!(paused["steps"][0]["attempts"], 1);
        let seen = counter.calls().len();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(counter.calls().len(), seen, "no poll while paused");
        let r = server.http.post(server.url(&format!("/v1/sagas/{id}/resume"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let done = poll_saga(&server.http, &server.base, &id, WITHIN, ended).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["context"]["calls"], 4);
        assert_eq!(done["steps"][0]["attempts"], 1);
    }

    secrets_get_reads_only_under_a_read_grant(backend) {
        let db = TestDb::new(backend).await;
        let server = server(&db, |_| {}).await;
        server.upload("poll").await;
        let r = server.http.put(server.url("/v1/secrets/signing-key"))
            .json(&json!({"value": "k3y-Vq2-very-secret", "origins": ["https://api.example.com"]}))
            .send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let read = |grant: Value| {
            let server = &server;
            async move {
                let r = server.http.put(server.url("/v1/plugins/poll/grants")).json(&grant).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                finish(server, json!({"kind": "sign", "steps": ["poll"], "inputs": {"secret": "signing-key"}})).await
            }
        };
        // `read`: the step gets the value; what it outputs is redacted.
        let done = read(json!({"secrets": {"signing-key": "read"}})).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["context"]["secret_found"], true);
        assert_eq!(done["context"]["secret"], "[secret:signing-key]");
        assert!(!done.to_string().contains("k3y-Vq2-very-secret"));
        assert_eq!(log_lines(&done, 0), ["[host] secrets.get \"signing-key\" -> read"]);
        // `use` only, or no grant: nothing.
        let done = read(json!({"secrets": {"signing-key": "use"}})).await;
        assert_eq!(done["context"]["secret_found"], false);
        assert_eq!(done["context"]["secret"], Value::Null);
        assert_eq!(log_lines(&done, 0), ["[host] secrets.get \"signing-key\" -> none: granted `use` only, not `read`"]);
        let done = read(json!({})).await;
        assert_eq!(done["context"]["secret_found"], false);
        assert_eq!(log_lines(&done, 0), ["[host] secrets.get \"signing-key\" -> none: not granted to this plugin"]);
    }
}

/// The Python and JavaScript examples of 0.2.0 wait with `poll-after` in
/// one saga with Rust steps of both versions and the 0.1.0 Python and
/// JavaScript echo steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_steps_wait_next_to_both_versions() {
    let db = TestDb::new(wasaga_tests::Backend::Sqlite).await;
    let server = server(&db, |_| {}).await;
    for file in [
        "python-wait.wasm",
        "js-wait.wasm",
        "python-echo.wasm",
        "js-echo.wasm",
    ] {
        let contract = server.upload_bytes(wasaga_tests::polyglot(file)).await["contract"].clone();
        assert_eq!(
            contract,
            if file.contains("wait") {
                "0.2.0"
            } else {
                "0.1.0"
            },
            "{file}"
        );
    }
    server.upload("flaky").await;
    let not_before = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1500;
    let inputs = json!({"not_before_ms": not_before, "poll_ms": 400, "message": "hi", "flaky_succeed_on_attempt": 1});
    // Two sagas at once, so that each wait step meets the time still ahead.
    let python = start(&server, json!({"kind": "mixed", "steps": ["py-wait", "flaky", "js-echo", "echo"], "inputs": inputs})).await;
    let javascript = start(&server, json!({"kind": "mixed", "steps": ["js-wait", "echo", "py-echo", "flaky"], "inputs": inputs})).await;
    for (id, key) in [(python, "py_waited_until"), (javascript, "js_waited_until")] {
        let done = poll_saga(&server.http, &server.base, &id, WITHIN, ended).await;
        assert_eq!(done["status"], "completed", "{done}");
        let row = &done["steps"][0];
        assert_eq!(row["attempts"], 1);
        assert!(row["polls"].as_u64().unwrap() >= 1, "{row}");
        assert!(
            done["context"][key].as_u64().unwrap() >= not_before,
            "{done}"
        );
    }
}
