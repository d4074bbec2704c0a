//! A saga's life after it stops: a `failed` saga (a compensation that kept
//! failing) is left to a human, who resolves each such step by hand; the
//! saga then ends `rolled_back`, and every action is kept on it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use wasaga_tests::{Counter, TestDb, TestServer, component, on_both, poll_saga};

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
        assert_eq!(body["error"]["message"], format!("saga {id} is rolled_back; only a failed saga's steps can be resolved"));
        server.stop().await.unwrap();
    }
}
