//! Redrive (docs/recovery.md): a `failed` or `rolled_back` saga driven
//! forward again by resume, rerun and rewind, one by one or by a filter,
//! with a dry run that changes nothing; every call counted by a real
//! endpoint, so what ran again (and under which idempotency key) is seen
//! from outside. On both databases.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

use wasaga_tests::{Counter, Http, TestDb, TestServer, on_both, poll_saga};

const WITHIN: Duration = Duration::from_secs(60);
const TOKENS: &str = "operator ops ops-token\nviewer alice alice-token\n";

async fn server_on(db: &TestDb, counter: &Counter) -> TestServer {
    let mut server = TestServer::on(db, |o| {
        o.server.tokens = Some(wasaga_tests::tokens("admin-token", TOKENS));
    })
    .await;
    server.http = Http::with_token("ops-token");
    let admin = Http::with_token("admin-token");
    counter.grant_on(&admin, &server.base).await;
    let r = admin
        .post(server.url("/v1/plugins"))
        .body(wasaga_tests::component("counter"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    server
}

async fn start(server: &TestServer, kind: &str, steps: usize, inputs: Value) -> String {
    let step = json!({"plugin": "counter", "max_attempts": 2});
    let (status, saga) = server
        .post_json(
            "/v1/sagas",
            &json!({"kind": kind, "steps": vec![step; steps], "inputs": inputs}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{saga}");
    saga["id"].as_str().unwrap().to_string()
}

async fn ends(server: &TestServer, id: &str, status: &str) -> Value {
    poll_saga(&server.http, &server.base, id, WITHIN, |s| {
        s["status"] == status
    })
    .await
}

async fn redrive(server: &TestServer, id: &str, body: Value) -> (StatusCode, Value) {
    server
        .post_json(&format!("/v1/sagas/{id}/redrive"), &body)
        .await
}

fn statuses(saga: &Value) -> Vec<String> {
    saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect()
}

fn does(plan: &Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["does"].as_str().unwrap().to_string())
        .collect()
}

on_both! {
    resume_finishes_a_rolled_back_saga_with_patched_inputs_and_new_keys(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = server_on(&db, &counter).await;
        let id = start(&server, "provision", 4, json!({"counter_url": counter.url(), "counter_fail_at": [2]})).await;
        let ended = ends(&server, &id, "rolled_back").await;
        assert_eq!(statuses(&ended), ["compensated", "compensated", "failed"]);

        // A dry run answers the plan and changes nothing.
        let (status, plan) = redrive(&server, &id, json!({"mode": "resume", "dry_run": true})).await;
        assert_eq!(status, StatusCode::OK, "{plan}");
        assert_eq!(plan["from_step"], 0);
        assert_eq!(does(&plan), ["execute"; 4]);
        assert_eq!(plan["steps"][3]["status"], Value::Null, "never ran");
        let after = server.get_json(&format!("/v1/sagas/{id}")).await;
        assert_eq!(after["version"], ended["version"], "the dry run wrote nothing");

        // Bad input: each a clear error, the saga unchanged.
        for (body, want, says) in [
            (json!({"mode": "rerun", "from_step": 2}), StatusCode::CONFLICT, "step 0 (counter) is compensated: its work is not in effect"),
            (json!({"mode": "rerun"}), StatusCode::UNPROCESSABLE_ENTITY, "`rerun` needs `from_step`"),
            (json!({"mode": "rewind", "from_step": 9}), StatusCode::UNPROCESSABLE_ENTITY, "has 4 steps (0 to 3)"),
            (json!({"mode": "rewind", "from_step": "nope"}), StatusCode::UNPROCESSABLE_ENTITY, "no step of that name"),
            (json!({"mode": "resume", "from_step": 2}), StatusCode::UNPROCESSABLE_ENTITY, "resume goes on from step 0"),
            (json!({"mode": "sideways"}), StatusCode::BAD_REQUEST, "mode"),
            (json!({"mode": "resume", "colour": 1}), StatusCode::BAD_REQUEST, "colour"),
            (json!({"inputs_patch": [1]}), StatusCode::BAD_REQUEST, "`inputs_patch` must be a JSON object"),
        ] {
            let (status, body) = redrive(&server, &id, body.clone()).await;
            assert_eq!(status, want, "{body}");
            assert!(body["error"]["message"].as_str().unwrap().contains(says), "{body}");
        }
        let r = Http::with_token("alice-token").post(server.url(&format!("/v1/sagas/{id}/redrive"))).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "a viewer may not redrive");
        let after = server.get_json(&format!("/v1/sagas/{id}")).await;
        assert_eq!(after["version"], ended["version"], "refusals wrote nothing");

        // The fix: the input that made step 2 fail is patched away.
        let (status, plan) = redrive(&server, &id, json!({"inputs_patch": {"counter_fail_at": null}, "note": "provider fixed"})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{plan}");
        let done = ends(&server, &id, "completed").await;
        assert_eq!(done["redrives"], 1);
        assert!(done["inputs"].get("counter_fail_at").is_none(), "{done}");
        let action = done["actions"].as_array().unwrap().last().unwrap().clone();
        assert_eq!((action["action"].as_str(), action["actor"].as_str(), action["note"].as_str()), (Some("redrive"), Some("ops"), Some("provider fixed")));
        assert_eq!(action["payload"]["mode"], "resume");
        assert_eq!(done["error"], Value::Null);
        // Attempts are calls begun: one before, one after; the new
        // execution has a new idempotency key.
        assert_eq!(done["steps"][0]["attempts"], 2, "{done}");
        assert_eq!(done["steps"][0]["attempt_base"], 1);
        assert_eq!(done["steps"][3]["attempts"], 1);
        for step in 1..=2 {
            assert_eq!(done["steps"][step]["attempts"], 2, "every step run again counts on: {done}");
            assert_eq!(done["steps"][step]["calls"].as_array().unwrap().len(), if step == 1 { 3 } else { 2 }, "its history stays: {done}");
        }
        let keys: Vec<String> = counter.calls().into_iter()
            .filter(|c| c.saga == id && c.step == 0 && c.phase == "execute").map(|c| c.key).collect();
        assert_eq!(keys, [format!("{id}:0:execute"), format!("{id}:0:execute:r1")]);

        // A completed saga is not redriven.
        let (status, body) = redrive(&server, &id, json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("only a failed or rolled_back saga"), "{body}");
    }

    rerun_executes_over_a_failed_compensation_and_rewind_undoes_it_first(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = server_on(&db, &counter).await;
        let inputs = json!({"counter_url": counter.url(), "counter_fail_at": [2], "counter_compensate_fail_at": [1]});
        let rerun = start(&server, "k", 3, inputs.clone()).await;
        let rewind = start(&server, "k", 3, inputs).await;
        for id in [&rerun, &rewind] {
            let failed = ends(&server, id, "failed").await;
            assert_eq!(statuses(&failed), ["compensated", "compensation_failed", "failed"]);
        }
        let fixed = json!({"counter_fail_at": null, "counter_compensate_fail_at": null});

        // rerun: step 1 is executed again, not compensated.
        let (status, plan) = redrive(&server, &rerun, json!({"mode": "rerun", "from_step": 0, "inputs_patch": fixed})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{plan}");
        assert_eq!(does(&plan), ["execute", "execute", "execute"]);
        ends(&server, &rerun, "completed").await;
        let compensations = |id: &str| counter.calls().into_iter().filter(|c| c.saga == id && c.step == 1 && c.phase == "compensate").count();
        assert_eq!(compensations(&rerun), 2, "only the two failed ones before the redrive");

        // rewind, from step 1 by name... refused: step 0 was undone.
        let (status, body) = redrive(&server, &rewind, json!({"mode": "rewind", "from_step": 1})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, plan) = redrive(&server, &rewind, json!({"mode": "rewind", "from_step": "counter", "inputs_patch": fixed})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{plan}");
        assert_eq!(does(&plan), ["execute", "compensate_then_execute", "execute"]);
        let done = ends(&server, &rewind, "completed").await;
        assert_eq!(compensations(&rewind), 3, "compensated once more, with fresh attempts, and it worked");
        // The undo came before any step ran again.
        let calls: Vec<(u32, String)> = counter.calls().into_iter().filter(|c| c.saga == rewind).map(|c| (c.step, c.phase)).collect();
        let undo = calls.iter().rposition(|c| *c == (1, "compensate".into())).unwrap();
        let first_again = calls.iter().enumerate().filter(|(_, c)| c.1 == "execute").nth(3).map(|(i, _)| i).unwrap();
        assert!(undo < first_again, "{calls:?}");
        // Its next compensation would count afresh from here.
        assert_eq!(done["steps"][1]["compensate_attempts"], 3, "{done}");
        assert_eq!(done["steps"][1]["compensate_attempt_base"], 3);
    }

    an_inputs_patch_is_checked_against_the_template_the_saga_started_from(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = server_on(&db, &counter).await;
        let schema = json!({"type": "object", "required": ["counter_url"], "properties": {
            "counter_url": {"type": "string"}, "counter_fail_at": {"type": "array", "items": {"type": "integer"}},
        }});
        let r = Http::with_token("admin-token").put(server.url("/v1/templates/provision"))
            .json(&json!({"steps": [{"plugin": "counter", "max_attempts": 1}, {"plugin": "counter", "max_attempts": 1}], "inputs_schema": schema}))
            .send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let (status, saga) = server.post_json("/v1/sagas", &json!({"template": "provision", "inputs": {"counter_url": counter.url(), "counter_fail_at": [1]}})).await;
        assert_eq!(status, StatusCode::CREATED, "{saga}");
        let id = saga["id"].as_str().unwrap().to_string();
        let ended = ends(&server, &id, "rolled_back").await;
        for (patch, says) in [
            (json!({"counter_fail_at": "none"}), "counter_fail_at"),
            (json!({"counter_url": null}), "counter_url"),
        ] {
            let (status, body) = redrive(&server, &id, json!({"inputs_patch": patch})).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(body["error"]["code"], "invalid_inputs", "{body}");
            assert!(body["error"]["message"].as_str().unwrap().contains(says), "{body}");
        }
        let after = server.get_json(&format!("/v1/sagas/{id}")).await;
        assert_eq!(after["version"], ended["version"], "refused patches change nothing");
        let (status, plan) = redrive(&server, &id, json!({"inputs_patch": {"counter_fail_at": []}})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{plan}");
        let done = ends(&server, &id, "completed").await;
        assert_eq!(done["inputs"]["counter_fail_at"], json!([]));
    }

    a_filter_redrives_many_and_a_dry_run_lists_them(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = server_on(&db, &counter).await;
        let failing = json!({"counter_url": counter.url(), "counter_fail_at": [1]});
        let mut ours = Vec::new();
        for _ in 0..5 {
            ours.push(start(&server, "fleet", 2, failing.clone()).await);
        }
        let other = start(&server, "other", 2, failing.clone()).await;
        for id in ours.iter().chain([&other]) {
            ends(&server, id, "rolled_back").await;
        }
        let body = |dry_run: bool| json!({
            "filter": {"kind": "fleet", "error_contains": "fails on purpose"},
            "mode": "resume", "inputs_patch": {"counter_fail_at": null}, "dry_run": dry_run,
        });
        let (status, dry) = server.post_json("/v1/sagas/redrive", &body(true)).await;
        assert_eq!(status, StatusCode::OK, "{dry}");
        let listed: Vec<&str> = dry["redriven"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let mut want: Vec<&str> = ours.iter().map(String::as_str).collect();
        want.sort();
        assert_eq!(listed, want, "oldest first (UUIDv7 ids sort by time)");
        assert_eq!(dry["plans"].as_array().unwrap().len(), 5);
        let before = server.get_json(&format!("/v1/sagas/{}", ours[0])).await;
        assert_eq!(before["status"], "rolled_back", "a dry run changes nothing");

        let (status, done) = server.post_json("/v1/sagas/redrive", &body(false)).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert_eq!(done["redriven"].as_array().unwrap().len(), 5, "{done}");
        assert_eq!(done["refused"], json!([]));
        for id in &ours {
            ends(&server, id, "completed").await;
        }
        let untouched = server.get_json(&format!("/v1/sagas/{other}")).await;
        assert_eq!(untouched["status"], "rolled_back", "another kind is not redriven");

        // Bad filters.
        let (status, body) = server.post_json("/v1/sagas/redrive", &json!({"filter": {"status": "running"}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let (status, body) = server.post_json("/v1/sagas/redrive", &json!({"filter": {"colour": "red"}})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // Nothing found: nothing redriven.
        let (status, body) = server.post_json("/v1/sagas/redrive", &json!({"filter": {"kind": "fleet"}})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["redriven"], json!([]));
    }
}
