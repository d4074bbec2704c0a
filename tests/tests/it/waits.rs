//! Waits for people and systems (docs/waits.md): approvals by N distinct
//! actors checked against a schema, rejection (the saga compensates),
//! timeouts with a default or a failure, capability URLs that need no
//! token, and messages under a correlation key, including those posted
//! before their wait opens; on both databases, across a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use wasaga_tests::{Counter, Http, TestDb, TestServer, on_both, secrets_key_file};

const TOKENS: &str = "operator ops ops-token\nviewer alice alice-token\nviewer bob bob-token\nviewer eve eve-token\n";

/// A server with tokens (admin, an operator, three viewers) and a secrets
/// key (so waits have callback URLs), its admin's client.
async fn server_on(db: &TestDb) -> TestServer {
    let key = secrets_key_file(db.dir.path());
    let mut server = TestServer::on(db, |o| {
        o.server.tokens = Some(wasaga_tests::tokens("admin-token", TOKENS));
        o.secrets_key_file = Some(key);
        o.server.public_url = Some("https://wasaga.example.com".into());
    })
    .await;
    server.http = Http::with_token("admin-token");
    server
}

async fn post_as(server: &TestServer, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let r = Http::with_token(token)
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

async fn wait_until(
    server: &TestServer,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let saga = server.get_json(&format!("/v1/sagas/{id}")).await;
        if done(&saga) {
            return saga;
        }
        assert!(Instant::now() < deadline, "saga {id} never {what}: {saga}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn wait_status(server: &TestServer, id: &str, want: &str) -> Value {
    wait_until(server, id, &format!("became {want}"), |s| {
        s["status"] == want
    })
    .await
}

/// The saga once step `index` is an open wait.
async fn waiting_at(server: &TestServer, id: &str, index: usize) -> Value {
    wait_until(server, id, "reached its wait", |s| {
        s["steps"][index]["status"] == "waiting"
    })
    .await
}

async fn start(server: &TestServer, body: Value) -> String {
    let (status, saga) = server.post_json("/v1/sagas", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{saga}");
    saga["id"].as_str().unwrap().to_string()
}

on_both! {
    an_approval_takes_n_distinct_approvers_and_its_payload_goes_into_the_context(backend) {
        let db = TestDb::new(backend).await;
        let server = server_on(&db).await;
        server.upload("echo").await;
        let id = start(&server, json!({
            "kind": "offboard",
            "steps": [
                "echo",
                {"wait": {
                    "name": "manager-approval",
                    "timeout": "72h",
                    "approvals": 2,
                    "approvers": ["alice", "bob"],
                    "schema": {"type": "object", "required": ["ticket"], "properties": {"ticket": {"type": "string"}}},
                }},
                "echo",
            ],
            "inputs": {"message": "bye"},
        })).await;
        let saga = waiting_at(&server, &id, 1).await;
        assert_eq!(saga["status"], "running", "{saga}");
        let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("wasaga_waits_open 1"), "{metrics}");
        let row = &saga["steps"][1];
        assert_eq!(row["name"], "manager-approval");
        assert_eq!(row["attempts"], 0, "a wait calls nothing: {row}");
        assert!(row["waiting_until"].is_string() || row["waiting_until"].is_number(), "{row}");
        assert!(
            row["callback_url"].as_str().unwrap().starts_with("https://wasaga.example.com/v1/callbacks/"),
            "{row}"
        );
        let path = format!("/v1/sagas/{id}/waits/manager-approval/complete");
        let approve = json!({"payload": {"ticket": "T-1"}, "note": "ok by me"});

        // Not an approver, not an operator: 403.
        let (status, body) = post_as(&server, "eve-token", &path, approve.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        // A payload failing the schema: 422, the wait stays open.
        let (status, body) = post_as(&server, "alice-token", &path, json!({"payload": {"ticket": 7}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("schema"), "{body}");
        // An unknown wait: 404 naming it.
        let (status, body) = post_as(&server, "alice-token", &format!("/v1/sagas/{id}/waits/nope/complete"), approve.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("`nope`"), "{body}");

        // One of two approvals.
        let (status, body) = post_as(&server, "alice-token", &path, approve.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let saga = server.get_json(&format!("/v1/sagas/{id}")).await;
        assert_eq!(saga["steps"][1]["status"], "waiting", "one approval of two: {saga}");
        // The same actor twice: 409, and it does not count.
        let (status, body) = post_as(&server, "alice-token", &path, approve.clone()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("alice has approved"), "{body}");
        // Another payload than the first approval's: 409.
        let (status, body) = post_as(&server, "bob-token", &path, json!({"payload": {"ticket": "T-2"}})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");

        let (status, body) = post_as(&server, "bob-token", &path, approve.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let saga = wait_status(&server, &id, "completed").await;
        assert_eq!(saga["context"]["manager-approval"], json!({"ticket": "T-1"}), "{saga}");
        assert_eq!(saga["steps"][1]["output"], json!({"manager-approval": {"ticket": "T-1"}}));
        assert!(saga["steps"][1].get("callback_url").is_none(), "a closed wait has no URL: {saga}");
        let log = saga["steps"][1]["logs"].to_string();
        assert!(log.contains("completed by alice, bob"), "{log}");
        let approvals: Vec<&Value> = saga["actions"].as_array().unwrap().iter().filter(|a| a["action"] == "complete").collect();
        assert_eq!(approvals.len(), 2, "{saga}");
        assert_eq!(approvals[0]["actor"], "alice");
        assert_eq!(approvals[0]["note"], "ok by me");
        assert_eq!(approvals[1]["actor"], "bob");

        // After completion: the same payload is 200, another 409, a
        // rejection 409; the saga is unchanged.
        let (status, _) = post_as(&server, "ops-token", &path, approve.clone()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = post_as(&server, "ops-token", &path, json!({"payload": {"ticket": "T-9"}})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = post_as(&server, "ops-token", &format!("/v1/sagas/{id}/waits/manager-approval/reject"), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let after = server.get_json(&format!("/v1/sagas/{id}")).await;
        assert_eq!(after["version"], saga["version"], "refused answers change nothing");
        server.stop().await.unwrap();
    }

    a_rejected_wait_fails_and_the_steps_before_it_are_compensated(backend) {
        let db = TestDb::new(backend).await;
        let server = server_on(&db).await;
        let counter = Counter::start().await;
        server.upload("counter").await;
        counter.grant_on(&server.http, &server.base).await;
        let id = start(&server, json!({
            "kind": "delete-db",
            "steps": ["counter", {"wait": {"name": "approval", "timeout": "1h"}}, "counter"],
            "inputs": {"counter_url": counter.url()},
        })).await;
        waiting_at(&server, &id, 1).await;
        let (status, body) = post_as(&server, "ops-token", &format!("/v1/sagas/{id}/waits/approval/reject"), json!({"note": "not today"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let saga = wait_status(&server, &id, "rolled_back").await;
        assert_eq!(saga["steps"][1]["status"], "failed", "{saga}");
        let error = saga["steps"][1]["error"].as_str().unwrap();
        assert!(error.contains("rejected by ops: not today"), "{error}");
        let phases: Vec<(u32, String)> = counter.calls_of(&id.parse().unwrap()).iter().map(|c| (c.step, c.phase.clone())).collect();
        assert_eq!(phases, [(0, "execute".to_string()), (0, "compensate".to_string())], "the step after the wait never ran");
        // Past the wait: 410.
        let (status, body) = post_as(&server, "ops-token", &format!("/v1/sagas/{id}/waits/approval/complete"), json!({})).await;
        assert_eq!(status, StatusCode::GONE, "{body}");
        server.stop().await.unwrap();
    }

    a_wait_times_out_to_its_default_or_fails(backend) {
        let db = TestDb::new(backend).await;
        let server = server_on(&db).await;
        server.upload("echo").await;
        let with_default = start(&server, json!({
            "kind": "t",
            "steps": [{"wait": {"name": "answer", "timeout": "1s", "on_timeout": {"default": {"approved": false}}}}, "echo"],
        })).await;
        let failing = start(&server, json!({
            "kind": "t",
            "steps": ["echo", {"wait": {"name": "answer", "timeout": "1s", "on_timeout": {"fail": true}}}],
        })).await;
        let saga = wait_status(&server, &with_default, "completed").await;
        assert_eq!(saga["context"]["answer"], json!({"approved": false}), "{saga}");
        assert!(saga["steps"][0]["logs"].to_string().contains("went on with its default"), "{saga}");
        let saga = wait_status(&server, &failing, "rolled_back").await;
        assert!(saga["error"]["message"].as_str().unwrap().contains("timed out after 1s"), "{saga}");
        server.stop().await.unwrap();
    }

    a_message_reaches_its_wait_whether_posted_before_or_after_it_opens(backend) {
        let db = TestDb::new(backend).await;
        let server = server_on(&db).await;
        server.upload("echo").await;
        let saga_for = |order: u32| json!({
            "kind": "provision",
            "steps": ["echo", {"wait": {"name": "provider", "timeout": "1h", "correlation_key": "order:{{inputs.order}}",
                                         "schema": {"type": "object", "required": ["droplet"]}}}],
            "inputs": {"order": order},
        });
        // Posted before any saga exists: kept.
        let (status, early) = server.post_json("/v1/messages", &json!({"key": "order:1", "payload": {"droplet": 11}})).await;
        assert_eq!(status, StatusCode::CREATED, "{early}");
        assert_eq!(early["status"], "kept", "{early}");
        let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("wasaga_messages_kept 1"), "{metrics}");
        let one = start(&server, saga_for(1)).await;
        let saga = wait_status(&server, &one, "completed").await;
        assert_eq!(saga["context"]["provider"], json!({"droplet": 11}), "{saga}");
        assert!(saga["steps"][1]["logs"].to_string().contains(&format!("message:{}", early["id"].as_str().unwrap())), "{saga}");

        // Posted while the wait is open: delivered at once, exactly once
        // under its Idempotency-Key.
        let two = start(&server, saga_for(2)).await;
        waiting_at(&server, &two, 1).await;
        let post = |payload: Value| {
            server.http.post(server.url("/v1/messages"))
                .header("Idempotency-Key", "provider-event-2")
                .json(&json!({"key": "order:2", "payload": payload}))
                .send()
        };
        let r = post(json!({"droplet": 22})).await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let delivered: Value = r.json().await.unwrap();
        assert_eq!(delivered["status"], "delivered", "{delivered}");
        assert_eq!(delivered["saga_id"], two.as_str());
        let r = post(json!({"droplet": 22})).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "a repeat");
        let repeat: Value = r.json().await.unwrap();
        assert_eq!(repeat["repeat"], true, "{repeat}");
        let r = post(json!({"droplet": 99})).await.unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT, "another message under the same key");
        let saga = wait_status(&server, &two, "completed").await;
        assert_eq!(saga["context"]["provider"], json!({"droplet": 22}));

        // A message whose payload fails the wait's schema fails the wait,
        // saying whose it was.
        let three = start(&server, saga_for(3)).await;
        let (_, bad) = server.post_json("/v1/messages", &json!({"key": "order:3", "payload": {"nope": 1}})).await;
        let saga = wait_status(&server, &three, "rolled_back").await;
        let error = saga["steps"][1]["error"].as_str().unwrap();
        assert!(error.contains("does not pass its schema") && error.contains(bad["id"].as_str().unwrap()), "{error}");

        // Posted right after each start, racing the wait's opening (its
        // park once found the saga changed, read it again and parked past
        // the delivery until the timeout): every one arrives.
        let mut racing = Vec::new();
        for order in 10..30 {
            let id = start(&server, saga_for(order)).await;
            let (status, posted) = server.post_json("/v1/messages", &json!({"key": format!("order:{order}"), "payload": {"droplet": order}})).await;
            assert_eq!(status, StatusCode::CREATED, "{posted}");
            racing.push((id, order));
        }
        for (id, order) in racing {
            let saga = wait_status(&server, &id, "completed").await;
            assert_eq!(saga["context"]["provider"], json!({"droplet": order}), "{saga}");
        }

        // Bad input: a viewer may not post; an empty key is refused.
        let (status, _) = post_as(&server, "alice-token", "/v1/messages", json!({"key": "order:4", "payload": {}})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = server.post_json("/v1/messages", &json!({"key": "", "payload": {}})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        server.stop().await.unwrap();
    }

    a_callback_url_completes_its_wait_once_without_a_token(backend) {
        let db = TestDb::new(backend).await;
        let server = server_on(&db).await;
        server.upload("echo").await;
        let id = start(&server, json!({
            "kind": "t",
            "steps": [{"wait": {"name": "webhook", "timeout": "1h", "schema": {"type": "object", "required": ["status"]}}}],
        })).await;
        let saga = waiting_at(&server, &id, 0).await;
        let url = saga["steps"][0]["callback_url"].as_str().unwrap().to_string();
        let path = url.strip_prefix("https://wasaga.example.com").unwrap().to_string();
        let anonymous = Http::new();
        let call = |body: Value| anonymous.post(server.url(&path)).json(&body).send();
        // A forged token: 404, and the wait stays open.
        let mut forged = path.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        let r = anonymous.post(server.url(&forged)).json(&json!({"status": "ok"})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // A payload failing the schema: 422, still open.
        let r = call(json!({"nope": 1})).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let r = call(json!({"status": "ok"})).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer, json!({"saga_id": id, "wait": "webhook", "status": "completed"}));
        let saga = wait_status(&server, &id, "completed").await;
        assert_eq!(saga["context"]["webhook"], json!({"status": "ok"}));
        // Used again: the same payload is a success, another a conflict.
        assert_eq!(call(json!({"status": "ok"})).await.unwrap().status(), StatusCode::OK);
        assert_eq!(call(json!({"status": "other"})).await.unwrap().status(), StatusCode::CONFLICT);

        // A wait cancelled: its URL is gone.
        let cancelled = start(&server, json!({"kind": "t", "steps": [{"wait": {"name": "webhook", "timeout": "1h"}}]})).await;
        let saga = waiting_at(&server, &cancelled, 0).await;
        let path = saga["steps"][0]["callback_url"].as_str().unwrap().strip_prefix("https://wasaga.example.com").unwrap().to_string();
        let (status, _) = server.post_json(&format!("/v1/sagas/{cancelled}/cancel"), &json!({})).await;
        assert!(status.is_success());
        let saga = wait_status(&server, &cancelled, "rolled_back").await;
        assert!(saga["error"]["message"].as_str().unwrap().contains("was waiting"), "{saga}");
        let r = anonymous.post(server.url(&path)).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::GONE);
        server.stop().await.unwrap();
    }

    a_waiting_saga_survives_a_restart_and_bad_waits_are_refused(backend) {
        let db = TestDb::new(backend).await;
        let server = server_on(&db).await;
        server.upload("echo").await;
        let id = start(&server, json!({
            "kind": "t",
            "steps": [{"wait": {"name": "approval", "timeout": "1h", "correlation_key": "k:{{inputs.k}}"}}, "echo"],
            "inputs": {"k": "x"},
        })).await;
        // (A SIGKILL while waiting: host/tests/it/crash.rs.)
        waiting_at(&server, &id, 0).await;
        let (status, posted) = server.post_json("/v1/messages", &json!({"key": "k:x", "payload": {"go": true}})).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(posted["status"], "delivered", "{posted}");
        let saga = wait_status(&server, &id, "completed").await;
        assert_eq!(saga["context"]["approval"], json!({"go": true}));

        // A payload over the JSON limit: 413, the wait unchanged.
        let second = start(&server, json!({"kind": "t", "steps": [{"wait": {"name": "big", "timeout": "1h"}}]})).await;
        let before = waiting_at(&server, &second, 0).await;
        let huge = "x".repeat(2 << 20);
        let (status, _) = server.post_json(&format!("/v1/sagas/{second}/waits/big/complete"), &json!({"payload": {"blob": huge}})).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let after = server.get_json(&format!("/v1/sagas/{second}")).await;
        assert_eq!(after["actions"], before["actions"], "no answer recorded: {after}");
        assert_eq!(after["steps"][0]["status"], "waiting", "{after}");
        assert!(after["steps"][0].get("received").is_none(), "{after}");

        // Bad waits: a clear 400 naming the field, nothing stored.
        let before = server.get_json("/v1/sagas?limit=1000").await["sagas"].as_array().unwrap().len();
        for (wait, says) in [
            (json!({"name": "a", "timeout": "soon"}), "steps[0].wait.timeout"),
            (json!({"name": "a", "timeout": "100d"}), "steps[0].wait.timeout must be"),
            (json!({"name": "a b", "timeout": "1h"}), "steps[0].wait.name"),
            (json!({"name": "a", "timeout": "1h", "approvals": 0}), "approvals must be"),
            (json!({"name": "a", "timeout": "1h", "correlation_key": "x:{{inputs.missing}}"}), "correlation_key"),
            (json!({"name": "a", "timeout": "1h", "schema": {"required": ["x"]}, "on_timeout": {"default": {}}}), "on_timeout.default does not pass"),
            (json!({"name": "a", "timeout": "1h", "unknown": 1}), "unknown field"),
        ] {
            let (status, body) = server.post_json("/v1/sagas", &json!({"kind": "t", "steps": [{"wait": wait}]})).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(body["error"]["message"].as_str().unwrap().contains(says), "{says}: {body}");
        }
        let (status, body) = server.post_json("/v1/sagas", &json!({"kind": "t", "steps": [
            {"wait": {"name": "a", "timeout": "1h"}}, {"wait": {"name": "a", "timeout": "1h"}}]})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"]["message"].as_str().unwrap().contains("used by another wait"), "{body}");
        let after = server.get_json("/v1/sagas?limit=1000").await["sagas"].as_array().unwrap().len();
        assert_eq!(before, after, "nothing stored");
        // A wait in a template: its correlation key is filled at each start.
        let r = server.http.put(server.url("/v1/templates/approved-delete"))
            .json(&json!({"steps": [{"wait": {"name": "approval", "timeout": "1h", "correlation_key": "del:{{inputs.db}}"}}, "echo"]}))
            .send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let from_template = start(&server, json!({"template": "approved-delete", "inputs": {"db": "main"}})).await;
        let saga = waiting_at(&server, &from_template, 0).await;
        assert_eq!(saga["steps"][0]["correlation_key"], "del:main", "{saga}");
        assert_eq!(saga["plan"][0]["wait"]["correlation_key"], "del:main", "{saga}");
        server.stop().await.unwrap();
    }
}

on_both! {
    a_waits_events_carry_its_callback_url_and_who_answered_it(backend) {
        let db = TestDb::new(backend).await;
        let server = server_on(&db).await;
        let id = start(&server, json!({"kind": "t", "steps": [{"wait": {"name": "go", "timeout": "1h"}}]})).await;
        waiting_at(&server, &id, 0).await;
        let client = wasaga::cli::Client::new(&server.base, Some("admin-token".into()));
        let mut events = client.saga_events(&id).await.unwrap();
        let (name, snapshot) = events.next().await.unwrap();
        assert_eq!(name, "snapshot");
        let snapshot: Value = serde_json::from_str(&snapshot).unwrap();
        assert!(snapshot["steps"][0]["callback_url"].as_str().is_some(), "{snapshot}");
        let (status, _) = post_as(&server, "ops-token", &format!("/v1/sagas/{id}/waits/go/complete"), json!({"payload": {"n": 1}})).await;
        assert_eq!(status, StatusCode::OK);
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some((name, data)) = events.next().await {
                let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                let done = name == "saga" && data["status"] == "completed";
                seen.push((name, data));
                if done {
                    break;
                }
            }
        })
        .await;
        let step = seen.iter().rev().find(|(n, d)| n == "step" && d["index"] == 0).expect("a step event");
        assert_eq!(step.1["status"], "completed", "{seen:?}");
        assert!(step.1["logs"].to_string().contains("completed by ops"), "{seen:?}");
        let answered = seen.iter().find(|(n, d)| n == "saga" && d["actions"].to_string().contains("\"complete\""));
        assert!(answered.is_some(), "the answer's action reaches the stream: {seen:?}");

        // A wait opening live: its step event carries its URL.
        let second = start(&server, json!({"kind": "t", "steps": [{"wait": {"name": "go", "timeout": "1h"}}]})).await;
        let mut events = client.saga_events(&second).await.unwrap();
        let opened = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let (name, data) = events.next().await.expect("the stream goes on");
                let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                let row = if name == "snapshot" { data["steps"][0].clone() } else { data };
                if row["status"] == "waiting" {
                    return row;
                }
            }
        })
        .await
        .expect("the wait opened");
        assert!(opened["callback_url"].as_str().unwrap().contains("/v1/callbacks/"), "{opened}");
        // An open stream would hold the graceful stop.
        drop(events);
        server.stop().await.unwrap();
    }
}

/// The console's wait form in Chromium: an approver (a viewer) fills in
/// the schema's fields and approves; one who is neither sees no form; an
/// operator sees the capability URL, which completes the other wait from
/// the page with no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_is_answered_from_the_console_in_chromium() {
    use crate::console::{browser, chromedriver, log_in, screenshot, text, until};
    let db = TestDb::new(wasaga_tests::Backend::Sqlite).await;
    let server = server_on(&db).await;
    let approval = start(&server, json!({"kind": "console-wait", "steps": [{"wait": {
        "name": "approval", "timeout": "1h", "approvers": ["alice"],
        "schema": {"type": "object", "required": ["ticket"], "properties": {"ticket": {"type": "string"}, "urgent": {"type": "boolean"}}},
    }}]})).await;
    let hook = start(
        &server,
        json!({"kind": "console-wait", "steps": [{"wait": {"name": "hook", "timeout": "1h"}}]}),
    )
    .await;
    waiting_at(&server, &approval, 0).await;
    waiting_at(&server, &hook, 0).await;
    let driver = chromedriver().await;

    let eve = browser(&driver).await;
    log_in(&eve, &server.base, "eve-token").await;
    eve.goto(&server.url(&format!("/ui/sagas/{approval}")))
        .await
        .unwrap();
    until(
        &eve,
        "the saga page",
        "document.getElementById('saga-live')",
    )
    .await;
    until(
        &eve,
        "no form for eve",
        "document.querySelector('form.wait-answer') === null && document.querySelector('#ledger')",
    )
    .await;
    eve.close().await.unwrap();

    let alice = browser(&driver).await;
    log_in(&alice, &server.base, "alice-token").await;
    alice
        .goto(&server.url(&format!("/ui/sagas/{approval}")))
        .await
        .unwrap();
    until(
        &alice,
        "the wait's form",
        "document.querySelector('form.wait-answer input[name=ticket]')",
    )
    .await;
    alice
        .execute(
            "document.querySelector('form.wait-answer input[name=ticket]').value = 'T-7'; \
             document.querySelector('form.wait-answer input[name=urgent]').checked = true; \
             document.querySelector('form.wait-answer input[name=note]').value = 'looks fine'; \
             document.querySelector('form.wait-answer button[data-answer=complete]').click();",
            vec![],
        )
        .await
        .unwrap();
    let saga = wait_status(&server, &approval, "completed").await;
    assert_eq!(
        saga["context"]["approval"],
        json!({"ticket": "T-7", "urgent": true}),
        "{saga}"
    );
    let action = saga["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "complete")
        .unwrap()
        .clone();
    assert_eq!(action["actor"], "alice");
    assert_eq!(action["note"], "looks fine");
    until(
        &alice,
        "the page follows",
        "document.querySelector('#saga-status').dataset.status === 'completed'",
    )
    .await;
    screenshot(&alice, "wait-approved.png").await;
    alice.close().await.unwrap();

    let ops = browser(&driver).await;
    log_in(&ops, &server.base, "ops-token").await;
    ops.goto(&server.url(&format!("/ui/sagas/{hook}")))
        .await
        .unwrap();
    until(
        &ops,
        "the callback URL",
        "document.querySelector('code.callback-url')",
    )
    .await;
    let url = text(&ops, "code.callback-url").await;
    let path = url
        .strip_prefix("https://wasaga.example.com")
        .expect("the public URL")
        .to_string();
    let status = ops
        .execute(
            "return fetch(arguments[0], {method: 'POST', credentials: 'omit', headers: {'Content-Type': 'application/json'}, body: '{\"status\": \"done\"}'}).then(r => r.status);",
            vec![json!(path)],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(200));
    let saga = wait_status(&server, &hook, "completed").await;
    assert_eq!(saga["context"]["hook"], json!({"status": "done"}));
    assert!(
        saga["steps"][0]["logs"]
            .to_string()
            .contains("completed by callback"),
        "{saga}"
    );

    // A wait a step opened (`wait-for`) gets the same form, from its
    // schema; the operator approves it and the step runs on.
    let cloud = wasaga_tests::Cloud::start("console-t0ken").await;
    server.upload("observed").await;
    server
        .grant_cloud(&cloud, "console-t0ken", "observed")
        .await;
    let asked = start(&server, json!({"kind": "console-wait", "steps": ["observed"], "inputs": {
        "api": cloud.origin(), "name": "db-9",
        "approval": {"name": "go-ahead", "timeout_ms": 3_600_000,
                     "schema": {"type": "object", "required": ["ticket"], "properties": {"ticket": {"type": "string"}}}},
    }})).await;
    waiting_at(&server, &asked, 0).await;
    ops.goto(&server.url(&format!("/ui/sagas/{asked}")))
        .await
        .unwrap();
    until(
        &ops,
        "the step's wait form",
        "document.querySelector('form.wait-answer[data-wait=go-ahead] input[name=ticket]')",
    )
    .await;
    ops.execute(
        "document.querySelector('form.wait-answer input[name=ticket]').value = 'T-9'; \
         document.querySelector('form.wait-answer button[data-answer=complete]').click();",
        vec![],
    )
    .await
    .unwrap();
    let saga = wait_status(&server, &asked, "completed").await;
    assert_eq!(
        saga["steps"][0]["output"]["approved"],
        json!({"ticket": "T-9"}),
        "{saga}"
    );
    ops.close().await.unwrap();
    server.stop().await.unwrap();
}

on_both! {
    a_message_kept_past_its_ttl_is_dropped_not_delivered(backend) {
        let db = TestDb::new(backend).await;
        let mut server = TestServer::on(&db, |o| o.server.message_ttl = Duration::from_millis(300)).await;
        server.http = Http::new();
        let (status, kept) = server.post_json("/v1/messages", &json!({"key": "late:1", "payload": {"stale": true}})).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(kept["status"], "kept", "{kept}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let id = start(&server, json!({"kind": "t", "steps": [
            {"wait": {"name": "w", "timeout": "1h", "correlation_key": "late:1"}}]})).await;
        let saga = waiting_at(&server, &id, 0).await;
        assert!(saga["steps"][0].get("received").is_none(), "an expired message is not delivered: {saga}");
        let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("wasaga_messages_kept 0"), "{metrics}");
        // A fresh one is.
        let (_, fresh) = server.post_json("/v1/messages", &json!({"key": "late:1", "payload": {"fresh": true}})).await;
        assert_eq!(fresh["status"], "delivered", "{fresh}");
        let saga = wait_status(&server, &id, "completed").await;
        assert_eq!(saga["context"]["w"], json!({"fresh": true}));
        server.stop().await.unwrap();
    }
}

on_both! {
    a_step_opens_a_wait_itself_and_is_called_again_with_its_payload(backend) {
        let db = TestDb::new(backend).await;
        let server = server_on(&db).await;
        let cloud = wasaga_tests::Cloud::start("wait-t0ken").await;
        let plugin = server.upload("observed").await;
        assert_eq!(plugin["contract"], "0.3.0", "{plugin}");
        server.grant_cloud(&cloud, "wait-t0ken", "observed").await;
        let body = |name: &str, timeout_ms: u64| json!({
            "kind": "delete-db",
            "steps": ["observed"],
            "inputs": {
                "api": cloud.origin(),
                "name": "db-1",
                "approval": {
                    "name": name,
                    "timeout_ms": timeout_ms,
                    "schema": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
                },
            },
        });

        // Opened by the step: its row waits, names the wait, has a URL;
        // and it survives a restart of the host.
        let id = start(&server, body("go-ahead", 3_600_000)).await;
        waiting_at(&server, &id, 0).await;
        server.stop().await.unwrap();
        let server = server_on(&db).await;
        let saga = waiting_at(&server, &id, 0).await;
        let row = &saga["steps"][0];
        assert_eq!(row["wait_for"]["name"], "go-ahead", "{row}");
        assert_eq!(row["attempts"], 1, "{row}");
        assert!(row["callback_url"].as_str().unwrap().starts_with("https://wasaga.example.com/v1/callbacks/"), "{row}");
        assert_eq!(cloud.counts().0, 0, "nothing is created before the approval");
        let path = format!("/v1/sagas/{id}/waits/go-ahead/complete");
        // Viewers may not answer it (it names no approvers); a payload
        // failing its schema is refused and it stays open.
        let (status, _) = post_as(&server, "alice-token", &path, json!({"payload": {"ok": true}})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body422) = post_as(&server, "ops-token", &path, json!({"payload": {"ok": "yes"}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body422}");
        let (status, _) = post_as(&server, "ops-token", &path, json!({"payload": {"ok": true}, "note": "go"})).await;
        assert_eq!(status, StatusCode::OK);
        let saga = wait_status(&server, &id, "completed").await;
        let row = &saga["steps"][0];
        assert_eq!(row["output"]["approved"], json!({"ok": true}), "{row}");
        assert_eq!(row["attempts"], 1, "the call after the wait is the same attempt: {row}");
        assert_eq!(cloud.resources().len(), 1);
        // Answered again: the same payload is a success, another a conflict.
        let (status, _) = post_as(&server, "ops-token", &path, json!({"payload": {"ok": true}})).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = post_as(&server, "ops-token", &path, json!({"payload": {"ok": false}})).await;
        assert_eq!(status, StatusCode::CONFLICT);

        // Its capability URL answers it with no token.
        let id = start(&server, body("go-ahead", 3_600_000)).await;
        let saga = waiting_at(&server, &id, 0).await;
        let url = saga["steps"][0]["callback_url"].as_str().unwrap();
        let path = url.strip_prefix("https://wasaga.example.com").unwrap().to_string();
        let r = Http::new().post(server.url(&path)).json(&json!({"ok": true})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        wait_status(&server, &id, "completed").await;

        // Rejected: the step fails; it was waiting, so it is compensated
        // (nothing was created: nothing to delete).
        let id = start(&server, body("go-ahead", 3_600_000)).await;
        waiting_at(&server, &id, 0).await;
        let (status, _) = post_as(&server, "ops-token", &format!("/v1/sagas/{id}/waits/go-ahead/reject"), json!({"note": "not today"})).await;
        assert_eq!(status, StatusCode::OK);
        let saga = wait_status(&server, &id, "rolled_back").await;
        assert!(saga["error"]["message"].as_str().unwrap().contains("rejected by ops: not today"), "{saga}");

        // Its timeout fails the step.
        let id = start(&server, body("go-ahead", 1_000)).await;
        let saga = wait_status(&server, &id, "rolled_back").await;
        assert!(saga["error"]["message"].as_str().unwrap().contains("timed out after 1s"), "{saga}");

        // A wait the rules refuse (a timeout under a second) fails the step
        // with the reason.
        let id = start(&server, body("go-ahead", 10)).await;
        let saga = wait_status(&server, &id, "rolled_back").await;
        assert!(saga["error"]["message"].as_str().unwrap().contains("wait-for: timeout-ms must be"), "{saga}");
        assert_eq!(cloud.resources().len(), 2, "the two approved sagas' resources, no other");
        server.stop().await.unwrap();
    }
}
