//! A saga's whole life, through the API on both databases: templates
//! (versions pinned at start, inputs checked against a schema), pause and
//! resume (and a cancel while paused), a `failed` saga retried or resolved
//! by hand, the desired-state resource ledger across sagas, cursor pages
//! that never skip or repeat while sagas start, and retention.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use wasaga::config::RunnerConfig;
use wasaga::model::{ResourceState, SagaStatus, Timestamp};
use wasaga::plugin::PluginHost;
use wasaga::runner::{ManualClock, Runner};
use wasaga::store::ResourceFilter;
use wasaga_tests::{
    Counter, TestDb, TestServer, component, create_saga, install, on_both, poll_saga, wait_final,
};

const WITHIN: Duration = Duration::from_secs(60);

/// POSTs a resolve and returns its status and body.
async fn resolve(server: &TestServer, id: &str, index: &str, body: Value) -> (StatusCode, Value) {
    let r = server
        .http
        .post(server.url(&format!("/v1/sagas/{id}/steps/{index}/resolve")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

on_both! {
    a_failed_sagas_steps_are_resolved_by_hand(backend) {
        // Step 2 fails for good; the compensations of steps 1 and 0 fail
        // on every attempt: the saga ends failed, needing a human.
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        counter.grant_on(&server.http, &server.base).await;
        let r = server.http.post(server.url("/v1/plugins")).body(component("counter")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let step = json!({"plugin": "counter", "max_attempts": 2});
        let inputs = json!({"counter_url": counter.url(), "counter_fail_at": [2], "counter_compensate_fail_at": [0, 1]});
        let r = server.http.post(server.url("/v1/sagas"))
            .json(&json!({"kind": "stuck", "steps": [step, step, step], "inputs": inputs}))
            .send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let failed = poll_saga(&server.http, &server.base, &id, WITHIN, |s| s["status"] == "failed").await;
        assert_eq!(failed["error"]["compensation_failed_steps"], json!([0, 1]), "{failed}");
        assert_eq!(
            failed["error"]["message"],
            "step 2 (counter) failed: counter: step 2 fails on purpose; compensating from step 1; \
             compensation of steps 0 (counter), 1 (counter) failed: needs a human"
        );

        // What cannot be resolved says why, and changes nothing.
        let (status, body) = resolve(&server, &id, "2", json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["message"], format!("step 2 of saga {id} is failed, not compensation_failed"));
        let (status, body) = resolve(&server, &id, "7", json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["message"], format!("step 7 of saga {id} never ran; only a compensation_failed step can be resolved"));
        let (status, body) = resolve(&server, &id, "one", json!({})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["message"], "`one` is not a step index (a number from 0)");
        let (status, body) = resolve(&server, &id, "1", json!({"note": 5})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, _) = resolve(&server, "0190a0b0-0000-7000-8000-000000000000", "1", json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let unchanged = server.get_json(&format!("/v1/sagas/{id}")).await;
        assert_eq!(unchanged["version"], failed["version"]);

        // One resolved: still failed, the message names the one left.
        let (status, saga) = resolve(&server, &id, "1", json!({"note": "deleted by hand"})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{saga}");
        assert_eq!(saga["status"], "failed");
        assert_eq!(saga["error"]["compensation_failed_steps"], json!([0]));
        assert!(saga["error"]["message"].as_str().unwrap().ends_with("compensation of step 0 (counter) failed: needs a human"), "{saga}");

        // The last one: rolled back, each action kept with its note.
        let (status, saga) = resolve(&server, &id, "0", json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{saga}");
        assert_eq!(saga["status"], "rolled_back");
        let detail = server.get_json(&format!("/v1/sagas/{id}")).await;
        assert_eq!(detail["status"], "rolled_back");
        assert!(detail["error"]["compensation_failed_steps"].as_array().is_none_or(|a| a.is_empty()), "{detail}");
        let actions: Vec<(Value, Value, Value)> = detail["actions"].as_array().unwrap().iter()
            .map(|a| (a["action"].clone(), a["step_index"].clone(), a["note"].clone())).collect();
        assert_eq!(actions, vec![
            (json!("resolve"), json!(1), json!("deleted by hand")),
            (json!("resolve"), json!(0), Value::Null),
        ]);
        for index in [0, 1] {
            let row = &detail["steps"][index];
            assert_eq!(row["status"], "compensated", "{row}");
            assert_eq!(row["compensate_attempts"], 2, "the calls made stay counted: {row}");
            assert!(row["error"].as_str().unwrap().contains("cannot undo step"), "{row}");
            assert!(row["error"].as_str().unwrap().contains("resolved by hand by "), "{row}");
        }
        let (status, body) = resolve(&server, &id, "0", json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["message"], format!("saga {id} is rolled_back; only a failed or in_doubt saga's steps can be resolved"));
        server.stop().await.unwrap();
    }
}

/// Sends a request with a JSON body and returns its status and body.
async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server.http.request(method, server.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    send(server, reqwest::Method::POST, path, Some(body)).await
}

fn id_of(saga: &Value) -> String {
    saga["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {saga}"))
        .to_string()
}

on_both! {
    templates_pin_their_version_and_check_inputs(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        for name in ["echo", "ledger"] {
            server.upload(name).await;
        }
        let put = |body: Value| send(&server, reqwest::Method::PUT, "/v1/templates/provision", Some(body));

        // Unknown plugins are named at put; nothing is stored.
        let (status, body) = put(json!({"steps": ["echo", "nope", {"plugin": "gone"}]})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "unknown_plugin");
        assert_eq!(body["error"]["message"], "unknown plugins: `nope` (steps[1]), `gone` (steps[2])");
        let (status, _) = send(&server, reqwest::Method::GET, "/v1/templates/provision", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // A schema that is not one, a bad name, a missing list of steps.
        let (status, body) = put(json!({"steps": ["echo"], "inputs_schema": {"type": "nonsense"}})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("`inputs_schema` is not a valid JSON Schema"), "{body}");
        let (status, body) = send(&server, reqwest::Method::PUT, "/v1/templates/no%20spaces", Some(json!({"steps": ["echo"]}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = put(json!({"description": "x"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["message"], "invalid JSON: missing field `steps`");

        // Version 1, with a schema.
        let schema = json!({
            "type": "object",
            "required": ["customer"],
            "properties": {"customer": {"type": "string", "minLength": 3}, "size": {"enum": ["s", "m"]}}
        });
        let v1 = json!({"description": "a customer's VMs", "steps": ["ledger", {"plugin": "echo", "max_attempts": 2}], "inputs_schema": schema});
        let (status, t) = put(v1.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{t}");
        assert_eq!(t["version"], 1);
        // The same content again is not a new version.
        let (status, t) = put(v1.clone()).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        assert_eq!(t["version"], 1);

        // Inputs failing the schema: 422, with the pointer and the rule.
        let start = |body: Value| post(&server, "/v1/sagas", body);
        let (status, body) = start(json!({"template": "provision", "inputs": {"customer": "ab", "size": "xl"}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "invalid_inputs");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("at `/customer`") && message.contains("rule `minLength`"), "{message}");
        assert!(message.contains("at `/size`") && message.contains("rule `enum`"), "{message}");
        let (status, body) = start(json!({"template": "provision", "inputs": {}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("rule `required`"), "{body}");
        // Both a template and steps; an unknown template.
        let (status, body) = start(json!({"template": "provision", "steps": ["echo"], "inputs": {"customer": "acme"}})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["message"], "give either `steps` or `template`, not both");
        let (status, body) = start(json!({"template": "nope"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "unknown_template");

        // A start pins version 1; a later put does not change it.
        let (status, first) = start(json!({"template": "provision", "inputs": {"customer": "acme"}})).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert_eq!(first["kind"], "provision", "kind defaults to the template's name");
        assert_eq!(first["template"], "provision");
        assert_eq!(first["template_version"], 1);
        assert_eq!(first["plan"].as_array().unwrap().len(), 2);
        assert_eq!(first["plan"][1]["max_attempts"], 2);
        let (status, t) = put(json!({"steps": ["echo"]})).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        assert_eq!(t["version"], 2);
        let done = poll_saga(&server.http, &server.base, &id_of(&first), WITHIN, |s| s["status"] == "completed").await;
        assert_eq!(done["plan"].as_array().unwrap().len(), 2, "the saga kept version 1's steps");
        assert_eq!(done["template_version"], 1);
        let (status, second) = start(json!({"template": "provision", "kind": "resize", "inputs": {"anything": true}})).await;
        assert_eq!(status, StatusCode::CREATED, "{second}");
        assert_eq!((second["kind"].clone(), second["template_version"].clone()), (json!("resize"), json!(2)));
        assert_eq!(second["plan"].as_array().unwrap().len(), 1);
        let listed = server.get_json("/v1/sagas?template=provision").await;
        assert_eq!(listed["sagas"].as_array().unwrap().len(), 2, "{listed}");

        // Reading: latest, one version, the list.
        let latest = server.get_json("/v1/templates/provision").await;
        assert_eq!(latest["version"], 2);
        let old = server.get_json("/v1/templates/provision?version=1").await;
        assert_eq!(old["inputs_schema"], schema);
        assert_eq!(old["description"], "a customer's VMs");
        let (status, body) = send(&server, reqwest::Method::GET, "/v1/templates/provision?version=9", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["message"], "no version 9 of template `provision`");
        let list = server.get_json("/v1/templates").await;
        assert_eq!(list["templates"].as_array().unwrap().len(), 1);
        assert_eq!(list["templates"][0]["version"], 2);

        // Delete: gone for reads and starts; a put after it goes on numbering.
        let (status, _) = send(&server, reqwest::Method::DELETE, "/v1/templates/provision", None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = send(&server, reqwest::Method::DELETE, "/v1/templates/provision", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = start(json!({"template": "provision"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, t) = put(json!({"steps": ["echo"]})).await;
        assert_eq!(status, StatusCode::CREATED, "{t}");
        assert_eq!(t["version"], 3, "a version never means two things");
        server.stop().await.unwrap();
    }

    pause_resume_and_cancel_while_paused(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        counter.grant_on(&server.http, &server.base).await;
        server.upload("counter").await;
        // Each saga is paused while its step 0 runs: step 0 finishes, step 1 waits.
        let base = server.base.clone();
        counter.on_call(move |call| {
            let base = base.clone();
            async move {
                if call.step == 0 && call.phase == "execute" {
                    let http = wasaga_tests::Http::new();
                    let r = http.post(format!("{base}/v1/sagas/{}/pause", call.saga)).send().await.unwrap();
                    assert_eq!(r.status(), StatusCode::ACCEPTED);
                }
            }
        });
        let inputs = json!({"counter_url": counter.url()});
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (status, saga) = post(&server, "/v1/sagas", json!({"kind": "k", "steps": ["counter", "counter", "counter"], "inputs": inputs})).await;
            assert_eq!(status, StatusCode::CREATED, "{saga}");
            ids.push(id_of(&saga));
        }
        for id in &ids {
            let paused = poll_saga(&server.http, &server.base, id, WITHIN, |s| s["status"] == "paused").await;
            assert_eq!(paused["steps"].as_array().unwrap().len(), 1, "only step 0 ran: {paused}");
            assert_eq!(paused["steps"][0]["status"], "completed");
            assert_eq!(paused["pause_requested"], false);
            // Resume of a paused saga is the only resume allowed; a second pause is a no-op.
            let (status, again) = post(&server, &format!("/v1/sagas/{id}/pause"), json!({})).await;
            assert_eq!((status, again["status"].clone()), (StatusCode::ACCEPTED, json!("paused")));
        }
        // Nothing runs while paused.
        let calls = counter.calls().len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(counter.calls().len(), calls, "a call while paused");

        // Resume the first: it goes on where it stopped.
        let (status, resumed) = post(&server, &format!("/v1/sagas/{}/resume", ids[0]), json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{resumed}");
        let done = poll_saga(&server.http, &server.base, &ids[0], WITHIN, |s| s["status"] == "completed").await;
        for row in done["steps"].as_array().unwrap() {
            assert_eq!(row["attempts"], 1, "{row}");
        }
        // Resume of a completed one, pause of an ended one: 409 with the state.
        let (status, body) = post(&server, &format!("/v1/sagas/{}/resume", ids[0]), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["message"], format!("saga {} is completed, not paused", ids[0]));
        let (status, body) = post(&server, &format!("/v1/sagas/{}/pause", ids[0]), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["message"], format!("saga {} has already ended (completed)", ids[0]));
        let (status, body) = post(&server, &format!("/v1/sagas/{}/retry", ids[0]), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["message"], format!("saga {} is completed; only a failed saga can be retried", ids[0]));

        // Cancel the second while paused: it compensates step 0 and rolls back.
        let (status, _) = post(&server, &format!("/v1/sagas/{}/cancel", ids[1]), json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let rolled = poll_saga(&server.http, &server.base, &ids[1], WITHIN, |s| s["status"] == "rolled_back").await;
        assert_eq!(rolled["steps"][0]["status"], "compensated", "{rolled}");
        assert_eq!(rolled["steps"].as_array().unwrap().len(), 1, "{rolled}");
        let actions: Vec<Value> = rolled["actions"].as_array().unwrap().iter().map(|a| a["action"].clone()).collect();
        assert_eq!(actions, vec![json!("pause"), json!("cancel")], "a pause of a paused saga changes nothing");
        let executes = counter.calls_of(&ids[1].parse().unwrap()).iter().filter(|c| c.phase == "execute").count();
        assert_eq!(executes, 1, "nothing executed after the pause");
        server.stop().await.unwrap();
    }

    a_failed_saga_is_retried(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        counter.grant_on(&server.http, &server.base).await;
        server.upload("counter").await;
        let step = json!({"plugin": "counter", "max_attempts": 2});
        // Saga A: step 0's compensation fails twice, then works. Saga B's never works.
        let a_inputs = json!({"counter_url": counter.url(), "counter_fail_at": [1], "counter_compensate_retry_until": {"0": 3}});
        let b_inputs = json!({"counter_url": counter.url(), "counter_fail_at": [1], "counter_compensate_fail_at": [0]});
        let mut ids = Vec::new();
        for inputs in [a_inputs, b_inputs] {
            let (status, saga) = post(&server, "/v1/sagas", json!({"kind": "k", "steps": [step, step], "inputs": inputs})).await;
            assert_eq!(status, StatusCode::CREATED, "{saga}");
            ids.push(id_of(&saga));
        }
        for id in &ids {
            let failed = poll_saga(&server.http, &server.base, id, WITHIN, |s| s["status"] == "failed").await;
            assert_eq!(failed["steps"][0]["compensate_attempts"], 2, "{failed}");
            let (status, saga) = post(&server, &format!("/v1/sagas/{id}/retry"), json!({})).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{saga}");
            assert_eq!(saga["status"], "compensating");
        }
        let a = poll_saga(&server.http, &server.base, &ids[0], WITHIN, |s| s["status"] == "rolled_back").await;
        let row = &a["steps"][0];
        assert_eq!(row["status"], "compensated", "{row}");
        assert_eq!(row["compensate_attempts"], 3, "every call counted: {row}");
        assert_eq!(row["compensate_attempt_base"], 2, "{row}");
        assert!(a["error"]["compensation_failed_steps"].as_array().is_none_or(|l| l.is_empty()), "{a}");
        assert_eq!(a["actions"][0]["action"], "retry");

        // B: fails again after fresh attempts (2 more), and can be retried again.
        let b = poll_saga(&server.http, &server.base, &ids[1], WITHIN, |s| {
            s["status"] == "failed" && s["steps"][0]["compensate_attempts"] == 4
        }).await;
        assert_eq!(b["error"]["compensation_failed_steps"], json!([0]), "{b}");
        assert!(b["error"]["message"].as_str().unwrap().ends_with("compensation of step 0 (counter) failed: needs a human"), "{b}");
        assert!(b["steps"][0]["error"].as_str().unwrap().contains("(after 2 attempts)"), "{b}");
        let calls: Vec<u32> = counter.calls_of(&ids[1].parse().unwrap()).iter()
            .filter(|c| c.phase == "compensate").map(|c| c.attempt).collect();
        assert_eq!(calls, vec![1, 2, 3, 4], "attempts keep counting across the retry");
        // A retry needs the plugins back: deleting one makes it a 409 naming it.
        let digest = b["plan"][0]["plugin"].as_str().unwrap().to_string();
        let (status, body) = send(&server, reqwest::Method::DELETE, &format!("/v1/plugins/{digest}"), None).await;
        assert!(status.is_success(), "{body}");
        let (status, body) = post(&server, &format!("/v1/sagas/{}/retry", ids[1]), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(&format!("its plugin {digest} was deleted")), "{body}");
        let unchanged = server.get_json(&format!("/v1/sagas/{}", ids[1])).await;
        assert_eq!(unchanged["status"], "failed");
        assert_eq!(unchanged["version"], b["version"]);
        server.stop().await.unwrap();
    }

    the_resource_ledger_spans_sagas(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        for name in ["ledger", "fail"] {
            server.upload(name).await;
        }
        // Two sagas record the same two VMs; a third records others and rolls back.
        let mut ids = Vec::new();
        for (deployment, steps, prefix) in [
            ("blue", json!(["ledger"]), "shared"),
            ("green", json!(["ledger"]), "shared"),
            ("red", json!(["ledger", "fail"]), "doomed"),
        ] {
            let (status, saga) = post(&server, "/v1/sagas", json!({
                "kind": "vm", "steps": steps, "deployment_id": deployment,
                "inputs": {"ledger_prefix": prefix, "ledger_resources": 2}
            })).await;
            assert_eq!(status, StatusCode::CREATED, "{saga}");
            // One after the other, so the second records last.
            poll_saga(&server.http, &server.base, &id_of(&saga), WITHIN, |s| {
                s["status"] == "completed" || s["status"] == "rolled_back"
            }).await;
            ids.push(id_of(&saga));
        }
        let all = server.get_json("/v1/resources").await;
        let rows = all["resources"].as_array().unwrap();
        assert_eq!(rows.len(), 4, "{all}");
        let shared = rows.iter().find(|r| r["external_id"] == "shared-vm-0").unwrap();
        assert_eq!(shared["spec_version"], 2, "{shared}");
        assert_eq!(shared["saga_id"], ids[1].as_str(), "{shared}");
        assert_eq!(shared["deployment_id"], "green");
        assert_eq!(shared["state"], "present");
        assert_eq!(shared["kind"], "vm");
        assert_eq!(shared["spec"]["ordinal"], 0);
        assert!(shared["updated_at"].as_i64() >= shared["created_at"].as_i64());
        let doomed = rows.iter().find(|r| r["external_id"] == "doomed-vm-1").unwrap();
        assert_eq!(doomed["state"], "removed", "compensation removes it: {doomed}");
        // The saga's own history numbers the same way.
        let green = server.get_json(&format!("/v1/sagas/{}", ids[1])).await;
        assert_eq!(green["resources"][0]["spec_version"], 2, "{green}");

        // Filters.
        let removed = server.get_json("/v1/resources?state=removed").await;
        assert_eq!(removed["resources"].as_array().unwrap().len(), 2, "{removed}");
        let blue = server.get_json("/v1/resources?deployment_id=blue").await;
        assert!(blue["resources"].as_array().unwrap().is_empty(), "green recorded them last: {blue}");
        let by_saga = server.get_json(&format!("/v1/resources?saga_id={}&state=present", ids[1])).await;
        assert_eq!(by_saga["resources"].as_array().unwrap().len(), 2, "{by_saga}");
        let none = server.get_json("/v1/resources?kind=dns").await;
        assert!(none["resources"].as_array().unwrap().is_empty());
        let (status, body) = send(&server, reqwest::Method::GET, "/v1/resources?state=gone", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("expected one of: present, removed"), "{body}");
        let (status, _) = send(&server, reqwest::Method::GET, "/v1/resources?saga_id=x", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Pages of one follow the cursor over all four, in order.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/resources?limit=1&cursor={c}"),
                None => "/v1/resources?limit=1".into(),
            };
            let page = server.get_json(&path).await;
            for r in page["resources"].as_array().unwrap() {
                seen.push(r["external_id"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, vec!["doomed-vm-0", "doomed-vm-1", "shared-vm-0", "shared-vm-1"]);
        let page = server.get_json("/v1/resources?limit=1").await;
        let c = page["next_cursor"].as_str().unwrap();
        let (status, body) = send(&server, reqwest::Method::GET, &format!("/v1/resources?limit=1&state=present&cursor={c}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"]["message"].as_str().unwrap().contains("belongs to a list with other filters"), "{body}");
        let (status, _) = send(&server, reqwest::Method::GET, "/v1/resources?cursor=garbage", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        server.stop().await.unwrap();
    }

    pages_never_skip_or_repeat_while_sagas_start(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        server.upload("echo").await;
        let start = |kind: &'static str| {
            let (http, url) = (server.http.clone(), server.url("/v1/sagas"));
            async move {
                let r = http.post(url).json(&json!({"kind": kind, "steps": ["echo"]})).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                id_of(&r.json::<Value>().await.unwrap())
            }
        };
        let first: HashSet<String> = futures::stream::iter(0..1000).map(|_| start("page")).buffer_unordered(16).collect().await;
        assert_eq!(first.len(), 1000);
        // Page through while 300 more start.
        let more = tokio::spawn({
            let starts: Vec<_> = (0..300).map(|_| start("page")).collect();
            async move { futures::stream::iter(starts).buffer_unordered(4).collect::<Vec<String>>().await }
        });
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/sagas?kind=page&limit=37&cursor={c}"),
                None => "/v1/sagas?kind=page&limit=37".into(),
            };
            let page = server.get_json(&path).await;
            seen.extend(page["sagas"].as_array().unwrap().iter().map(id_of));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let added: HashSet<String> = more.await.unwrap().into_iter().collect();
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "a saga was listed twice");
        let missing: Vec<&String> = first.iter().filter(|id| !unique.contains(id)).collect();
        assert!(missing.is_empty(), "{} sagas skipped, e.g. {:?}", missing.len(), missing.first());
        assert!(seen.iter().all(|id| first.contains(id) || added.contains(id)));
        server.stop().await.unwrap();
    }

    retention_deletes_only_ended_sagas_past_the_age(backend) {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let ledger = install(store.as_ref(), "ledger").await;
        let plugins = PluginHost::new(wasaga::config::RuntimeConfig { max_instances: 4, ..Default::default() }).unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let config = RunnerConfig {
            retention: Some(Duration::from_secs(3600)),
            retention_batch: 2,
            poll_every: Duration::from_millis(20),
            ..RunnerConfig::default()
        };
        let runner = Runner::new(store.clone(), plugins.clone(), config.clone(), clock.clone());
        runner.start();
        // Three sagas end now.
        let mut old = Vec::new();
        for _ in 0..3 {
            let id = create_saga(store.as_ref(), vec![ledger.clone()], json!({"ledger_resources": 1})).await;
            assert_eq!(wait_final(store.as_ref(), id, WITHIN).await.saga.status, SagaStatus::Completed);
            old.push(id);
        }
        runner.shutdown(Duration::from_secs(5)).await;
        // Two hours on, one more ends: recent.
        clock.advance(Duration::from_secs(2 * 3600));
        let runner = Runner::new(store.clone(), plugins.clone(), RunnerConfig { retention: None, ..config.clone() }, clock.clone());
        runner.start();
        let recent = create_saga(store.as_ref(), vec![ledger.clone()], json!({"ledger_resources": 1})).await;
        assert_eq!(wait_final(store.as_ref(), recent, WITHIN).await.saga.status, SagaStatus::Completed);
        runner.shutdown(Duration::from_secs(5)).await;
        // One never taken by a runner: unfinished, and as old as the first three.
        let unfinished = create_saga(store.as_ref(), vec![ledger.clone()], json!({})).await;
        let sweeper = Runner::new(store.clone(), plugins, config, clock.clone());
        assert_eq!(sweeper.sweep_retention().await.unwrap(), 3, "in batches of 2");
        for id in &old {
            assert!(store.saga(*id).await.unwrap().is_none(), "{id} was past the age");
        }
        assert!(store.saga(recent).await.unwrap().is_some(), "it ended within the age");
        let kept = store.saga(unfinished).await.unwrap().expect("an unfinished saga is never deleted");
        assert_eq!(kept.saga.status, SagaStatus::Pending);
        // The resource ledger keeps what the deleted sagas provisioned.
        let resources = store.list_resources(&ResourceFilter { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(resources.len(), 4, "{resources:?}");
        assert!(old.iter().all(|id| resources.iter().any(|r| r.saga_id == *id && r.state == ResourceState::Present)));
        assert_eq!(sweeper.sweep_retention().await.unwrap(), 0);
    }
}
