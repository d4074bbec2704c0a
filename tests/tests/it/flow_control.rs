//! Flow control (docs/flow-control.md): concurrency keys held for a saga's
//! whole life, queued in arrival order or rejected, released when the saga
//! ends, on both databases, and on PostgreSQL shared by two hosts racing
//! starts on one key.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wasaga_tests::{Backend, Counter, TestDb, TestServer, on_both};

async fn start(server: &TestServer, body: Value) -> (StatusCode, Value) {
    let r = server
        .http
        .post(server.url("/v1/sagas"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

async fn started(server: &TestServer, body: Value) -> Value {
    let (status, saga) = start(server, body).await;
    assert_eq!(status, StatusCode::CREATED, "{saga}");
    saga
}

async fn wait_status(server: &TestServer, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let saga = server.get_json(&format!("/v1/sagas/{id}")).await;
        if saga["status"] == want {
            return saga;
        }
        assert!(
            Instant::now() < deadline,
            "saga {id} never became {want}: {saga}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["saga_id"].as_str().unwrap().to_string())
        .collect()
}

/// A saga of one `counter` step on `droplet:{n}`.
fn on_droplet(counter: &Counter, n: u32, on_conflict: &str) -> Value {
    json!({
        "kind": "resize",
        "steps": ["counter"],
        "inputs": {"counter_url": counter.url(), "droplet": n},
        "concurrency": [{"key": "droplet:{{inputs.droplet}}", "limit": 1, "on_conflict": on_conflict}],
    })
}

on_both! {
    a_key_is_held_for_the_sagas_life_queued_in_order_rejected_and_released(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        let counter = Counter::start().await;
        server.upload("counter").await;
        counter.grant_on(&server.http, &server.base).await;
        // Each call holds the key for 400 ms.
        counter.set_delay(Duration::from_millis(400));

        let a = started(&server, on_droplet(&counter, 7, "queue")).await;
        let b = started(&server, on_droplet(&counter, 7, "queue")).await;
        let c = started(&server, on_droplet(&counter, 7, "queue")).await;
        assert_eq!(b["status"], "pending", "{b}");
        assert_eq!(b["concurrency"][0]["key"], "droplet:7", "the field is filled in: {b}");
        let other = started(&server, on_droplet(&counter, 8, "queue")).await;

        // A `reject` start meets a held key: 409 with its holders, nothing stored.
        let before = server.get_json("/v1/sagas?limit=1000").await["sagas"].as_array().unwrap().len();
        let (status, refused) = start(&server, on_droplet(&counter, 7, "reject")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{refused}");
        assert_eq!(refused["error"]["code"], "concurrency_conflict");
        assert_eq!(refused["error"]["key"], "droplet:7");
        assert_eq!(refused["error"]["holders"], json!([a["id"]]), "{refused}");
        let after = server.get_json("/v1/sagas?limit=1000").await["sagas"].as_array().unwrap().len();
        assert_eq!(before, after, "a rejected start stores nothing");

        // Holders and the queue, in order.
        let key = server.get_json("/v1/concurrency/droplet:7").await;
        assert_eq!(ids(&key["holders"]), [a["id"].as_str().unwrap()], "{key}");
        assert_eq!(ids(&key["queue"]), [b["id"].as_str().unwrap(), c["id"].as_str().unwrap()], "{key}");
        assert!(key["queue"][0]["age_ms"].is_u64(), "{key}");
        let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("wasaga_concurrency_queued{key_prefix=\"droplet\"} 2"), "{metrics}");
        let page = server.get_json(&format!("/v1/sagas/{}", b["id"].as_str().unwrap())).await;
        assert_eq!(page["slots"][0]["state"], "queued", "{page}");

        // A queued saga cancelled ends at once, with nothing to undo.
        let c_id = c["id"].as_str().unwrap();
        let r = server.http.post(server.url(&format!("/v1/sagas/{c_id}/cancel"))).json(&json!({})).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let c_done = wait_status(&server, c_id, "rolled_back").await;
        assert!(counter.calls_of(&c_id.parse().unwrap()).is_empty(), "{c_done}");

        for saga in [&a, &b, &other] {
            wait_status(&server, saga["id"].as_str().unwrap(), "completed").await;
        }
        // B's call began only after A's had ended (A's answer took 400 ms);
        // the saga on another key did not wait for A.
        let first = |s: &Value| counter.calls_of(&s["id"].as_str().unwrap().parse().unwrap())[0].at;
        let gap = first(&b).duration_since(first(&a)).expect("B called after A");
        assert!(gap >= Duration::from_millis(400), "B's call began {gap:?} after A's");
        assert!(
            first(&other).duration_since(first(&a)).unwrap_or_default() < Duration::from_millis(400),
            "a saga on another key does not wait"
        );
        let key = server.get_json("/v1/concurrency/droplet:7").await;
        assert_eq!(key["holders"], json!([]), "{key}");
        assert_eq!(key["queue"], json!([]), "{key}");
        let page = server.get_json(&format!("/v1/sagas/{}", a["id"].as_str().unwrap())).await;
        assert_eq!(page["slots"][0]["state"], "released", "{page}");
        server.stop().await.unwrap();
    }

    keys_come_from_templates_and_bad_keys_are_refused_naming_the_field(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        server.upload("echo").await;
        let put = |body: Value| {
            let server = &server;
            async move {
                let r = server.http.put(server.url("/v1/templates/resize")).json(&body).send().await.unwrap();
                (r.status(), r.json::<Value>().await.unwrap_or_default())
            }
        };
        let (status, body) = put(json!({"steps": ["echo"], "concurrency": [{"key": "c:{{saga_id}}"}]})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("concurrency[0].key"), "{body}");
        let (status, body) = put(json!({"steps": ["echo"], "concurrency": [{"key": "c", "limit": 0}]})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("limit"), "{body}");
        let (status, body) = put(json!({"steps": ["echo"], "concurrency": [{"key": "customer:{{inputs.customer}}", "limit": 2}]})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["concurrency"][0]["limit"], 2);

        // A start from it fills the key in; a missing field is named.
        let (status, body) = start(&server, json!({"template": "resize", "inputs": {}})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("customer"), "{body}");
        let saga = started(&server, json!({"template": "resize", "inputs": {"customer": "acme"}})).await;
        assert_eq!(saga["concurrency"][0]["key"], "customer:acme", "{saga}");
        wait_status(&server, saga["id"].as_str().unwrap(), "completed").await;

        // Bad keys on a start: each a 400 naming what is wrong; nothing stored.
        let five: Vec<Value> = (0..5).map(|i| json!({"key": format!("k{i}")})).collect();
        for (concurrency, says) in [
            (json!(five), "at most 4"),
            (json!([{"key": "k", "on_conflict": "wait"}]), "on_conflict"),
            (json!([{"key": "k:{{inputs.a"}]), "not closed"),
            (json!([{"key": "k", "limit": 1}, {"key": "k"}]), "named twice"),
            (json!([{"key": "k", "holders": 1}]), "holders"),
        ] {
            let (status, body) = start(&server, json!({"kind": "bad", "steps": ["echo"], "concurrency": concurrency})).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{concurrency}: {body}");
            assert!(body["error"]["message"].as_str().unwrap().contains(says), "{concurrency}: {body}");
        }
        assert!(server.get_json("/v1/sagas?kind=bad").await["sagas"].as_array().unwrap().is_empty());
        server.stop().await.unwrap();
    }
}

/// Two hosts on one PostgreSQL database race starts on one key of limit 1:
/// the ledger's call times never overlap, and every saga completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_never_let_more_than_the_limit_hold_a_key() {
    let db = TestDb::new(Backend::Postgres).await;
    let first = TestServer::on(&db, |_| {}).await;
    let second = TestServer::on(&db, |_| {}).await;
    let counter = Counter::start().await;
    first.upload("counter").await;
    counter.grant_on(&first.http, &first.base).await;
    counter.set_delay(Duration::from_millis(30));
    let starts = (0..24).map(|i| {
        let host = if i % 2 == 0 { &first } else { &second };
        started(host, on_droplet(&counter, 1, "queue"))
    });
    let sagas = futures::future::join_all(starts).await;
    let mut spans = Vec::new();
    for saga in &sagas {
        let done = wait_status(&first, saga["id"].as_str().unwrap(), "completed").await;
        let step = &done["steps"][0];
        // RFC 3339 in one format (milliseconds, UTC): they sort as times.
        let at = |field: &str| step[field].as_str().unwrap().to_string();
        spans.push((at("started_at"), at("finished_at")));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two sagas held droplet:1 at once: {pair:?}"
        );
    }
    let mut hosts = std::collections::BTreeSet::new();
    for saga in &sagas {
        let done = first
            .get_json(&format!("/v1/sagas/{}", saga["id"].as_str().unwrap()))
            .await;
        hosts.insert(
            done["steps"][0]["executed_by"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(hosts.len(), 2, "both hosts ran some: {hosts:?}");
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}
