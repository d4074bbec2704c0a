//! Flow control (docs/flow-control.md): concurrency keys held for a saga's
//! whole life, queued in arrival order or rejected, released when the saga
//! ends, on both databases, and on PostgreSQL shared by two hosts racing
//! starts on one key.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wasaga_tests::{Backend, Counter, Provider, TestDb, TestServer, on_both};

async fn start(server: &TestServer, body: Value) -> (StatusCode, Value) {
    server.post_json("/v1/sagas", &body).await
}

async fn started(server: &TestServer, body: Value) -> Value {
    let (status, saga) = start(server, body).await;
    assert_eq!(status, StatusCode::CREATED, "{saga}");
    saga
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
        let html = server.http.get(server.url(&format!("/ui/sagas/{}", b["id"].as_str().unwrap()))).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("Concurrency keys") && html.contains("droplet:7") && html.contains("waits for it"), "{html}");

        // A queued saga cancelled ends at once, with nothing to undo.
        let c_id = c["id"].as_str().unwrap();
        let r = server.http.post(server.url(&format!("/v1/sagas/{c_id}/cancel"))).json(&json!({})).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let c_done = server.wait_status(c_id, "rolled_back").await;
        assert!(counter.calls_of(&c_id.parse().unwrap()).is_empty(), "{c_done}");

        for saga in [&a, &b, &other] {
            server.wait_status(saga["id"].as_str().unwrap(), "completed").await;
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
        server.wait_status(saga["id"].as_str().unwrap(), "completed").await;

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

/// A saga on `keys` (each limit 1, queued on conflict).
fn on_keys(counter: &Counter, keys: &[&str]) -> Value {
    let keys: Vec<Value> = keys.iter().map(|k| json!({"key": k})).collect();
    json!({
        "kind": "multi",
        "steps": ["counter"],
        "inputs": {"counter_url": counter.url()},
        "concurrency": keys,
    })
}

on_both! {
    a_saga_on_several_keys_is_admitted_all_or_nothing_and_never_overtaken(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        let counter = Counter::start().await;
        server.upload("counter").await;
        counter.grant_on(&server.http, &server.base).await;
        let hold = Duration::from_millis(400);
        counter.set_delay(hold);

        let x = started(&server, on_keys(&counter, &["x"])).await;
        let y = started(&server, on_keys(&counter, &["y"])).await;
        // Needs both: waits for both holders, holding neither meanwhile.
        let xy = started(&server, on_keys(&counter, &["x", "y"])).await;
        // Behind `xy` on y: never overtakes it, though y frees first or
        // at the same time as x.
        let y2 = started(&server, on_keys(&counter, &["y"])).await;
        assert_eq!(xy["status"], "pending", "{xy}");
        assert_eq!(y2["status"], "pending", "{y2}");
        let key = server.get_json("/v1/concurrency/y").await;
        assert_eq!(ids(&key["queue"]), [xy["id"].as_str().unwrap(), y2["id"].as_str().unwrap()], "{key}");

        for saga in [&x, &y, &xy, &y2] {
            server.wait_status(saga["id"].as_str().unwrap(), "completed").await;
        }
        let first = |s: &Value| counter.calls_of(&s["id"].as_str().unwrap().parse().unwrap())[0].at;
        for holder in [&x, &y] {
            let gap = first(&xy).duration_since(first(holder)).expect("xy called after its holders");
            assert!(gap >= hold, "xy's call began {gap:?} after a holder's");
        }
        let gap = first(&y2).duration_since(first(&xy)).expect("y2 called after xy");
        assert!(gap >= hold, "y2's call began {gap:?} after xy's: it overtook");
        for k in ["x", "y"] {
            let key = server.get_json(&format!("/v1/concurrency/{k}")).await;
            assert_eq!(key["holders"], json!([]), "{key}");
            assert_eq!(key["queue"], json!([]), "{key}");
        }
        server.stop().await.unwrap();
    }
}

on_both! {
    a_retried_saga_takes_its_key_again_for_its_compensation(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        let counter = Counter::start().await;
        server.upload("counter").await;
        counter.grant_on(&server.http, &server.base).await;
        // A: step 1 fails, step 0's compensation fails twice (failed), then
        // works when retried.
        let step = json!({"plugin": "counter", "max_attempts": 2});
        let a = started(&server, json!({
            "kind": "offboard",
            "steps": [step, step],
            "inputs": {"counter_url": counter.url(), "counter_fail_at": [1], "counter_compensate_retry_until": {"0": 3}},
            "concurrency": [{"key": "customer:9"}],
        })).await;
        let a_id = a["id"].as_str().unwrap();
        server.wait_status(a_id, "failed").await;
        let key = server.get_json("/v1/concurrency/customer:9").await;
        assert_eq!(key["holders"], json!([]), "a failed saga has let its key go: {key}");

        // B holds the key now, for 400 ms.
        let hold = Duration::from_millis(400);
        counter.set_delay(hold);
        let b = started(&server, json!({
            "kind": "offboard",
            "steps": ["counter"],
            "inputs": {"counter_url": counter.url()},
            "concurrency": [{"key": "customer:9"}],
        })).await;
        let b_id = b["id"].as_str().unwrap();
        let r = server.http.post(server.url(&format!("/v1/sagas/{a_id}/retry"))).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let key = server.get_json("/v1/concurrency/customer:9").await;
        assert_eq!(ids(&key["holders"]), [b_id], "{key}");
        assert_eq!(ids(&key["queue"]), [a_id], "the retried saga waits for its key: {key}");

        server.wait_status(b_id, "completed").await;
        let rolled = server.wait_status(a_id, "rolled_back").await;
        assert_eq!(rolled["steps"][0]["compensate_attempts"], 3, "{rolled}");
        let b_call = counter.calls_of(&b_id.parse().unwrap())[0].at;
        let undo = counter
            .calls_of(&a_id.parse().unwrap())
            .into_iter()
            .find(|c| c.phase == "compensate" && c.attempt == 3)
            .expect("the retried compensation")
            .at;
        let gap = undo.duration_since(b_call).expect("A undid after B's call began");
        assert!(gap >= hold, "A's compensation began {gap:?} after B's call: B still held the key");
        let key = server.get_json("/v1/concurrency/customer:9").await;
        assert_eq!(key["holders"], json!([]), "{key}");
        assert_eq!(key["queue"], json!([]), "{key}");
        server.stop().await.unwrap();
    }
}

/// Two hosts on one PostgreSQL database race starts on one key of limit 1
/// (each start takes or queues under the key's lock): the ledger's call
/// times never overlap, and every saga completes. (Once queued, each
/// holder's end hands the key to the next saga in its own commit, so the
/// chain then runs on the host of the first holder.)
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
        let done = first
            .wait_status(saga["id"].as_str().unwrap(), "completed")
            .await;
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
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

async fn grant_provider(server: &TestServer, provider: &Provider) {
    let r = server
        .http
        .put(server.url("/v1/plugins/counter/grants"))
        .json(&json!({"http": [provider.url()]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

async fn put_budget(server: &TestServer, name: &str, body: Value) -> (StatusCode, Value) {
    let r = server
        .http
        .put(server.url(&format!("/v1/budgets/{name}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

fn provider_saga(provider: &Provider) -> Value {
    json!({"kind": "call", "steps": ["counter"], "inputs": {"counter_url": provider.url()}})
}

fn logs(saga: &Value) -> String {
    saga["steps"][0]["logs"].to_string()
}

on_both! {
    a_budget_spaces_requests_and_a_429_pauses_it_without_costing_an_attempt(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        let provider = Provider::start().await;
        server.upload("counter").await;
        grant_provider(&server, &provider).await;

        // Bad budgets: each names its field; nothing stored.
        for (body, says) in [
            (json!({"origins": [provider.url()], "rate": 0}), "rate"),
            (json!({"origins": ["api.example.com"], "rate": 5}), "origins"),
            (json!({"origins": [provider.url()], "rate": 5, "per": "soon"}), "per"),
            (json!({"origins": [provider.url()], "rate": 5, "burst": 0}), "burst"),
            (json!({"origins": [], "rate": 5}), "origins"),
            (json!({"origins": [provider.url()], "rate": 5, "ceiling": 1}), "ceiling"),
        ] {
            let (status, answer) = put_budget(&server, "provider", body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
            assert!(answer["error"]["message"].as_str().unwrap().contains(says), "{body}: {answer}");
        }
        assert_eq!(server.get_json("/v1/budgets").await["budgets"], json!([]));

        // 5 a second, one at a time: 6 calls span a second at least.
        let (status, budget) = put_budget(&server, "provider", json!({"origins": [provider.url()], "rate": 5, "per": "1s"})).await;
        assert_eq!(status, StatusCode::CREATED, "{budget}");
        let (status, answer) = put_budget(&server, "other", json!({"origins": [provider.url()], "rate": 1})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("budget `provider`"), "{answer}");

        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(started(&server, provider_saga(&provider)).await["id"].as_str().unwrap().to_string());
        }
        let mut waited = false;
        for id in &ids {
            let saga = server.wait_status(id, "completed").await;
            waited |= logs(&saga).contains("ms for budget provider");
        }
        assert!(waited, "a request that waited says so in its call's log");
        let mut arrivals: Vec<Instant> = provider.arrivals().into_iter().map(|(_, at)| at).collect();
        arrivals.sort();
        assert_eq!(arrivals.len(), 6);
        // The k-th request went out no sooner than k intervals after the
        // first (less a little for the database's round trip).
        for (k, at) in arrivals.iter().enumerate() {
            let since = at.duration_since(arrivals[0]);
            assert!(
                since + Duration::from_millis(40) >= Duration::from_millis(200) * k as u32,
                "request {k} went out {since:?} after the first"
            );
        }

        // The provider answers 429 (Retry-After: 1) once: the budget is
        // paused for a second, the host sends the request again after it,
        // and the step never sees the 429 nor pays an attempt.
        provider.throttle(1, "1");
        let id = started(&server, provider_saga(&provider)).await["id"].as_str().unwrap().to_string();
        let saga = server.wait_status(&id, "completed").await;
        assert_eq!(saga["steps"][0]["attempts"], 1, "{saga}");
        assert!(logs(&saga).contains("-> 429: budget provider paused until"), "{}", logs(&saga));
        let mine: Vec<Instant> = provider.arrivals().into_iter().filter(|(s, _)| *s == id).map(|(_, at)| at).collect();
        assert_eq!(mine.len(), 2, "sent once more after the pause");
        assert!(mine[1].duration_since(mine[0]) + Duration::from_millis(50) >= Duration::from_secs(1));
        let status = server.get_json("/v1/budgets/provider").await;
        assert!(status["paused_until"].is_string(), "{status}");
        let html = server.http.get(server.url("/ui/budgets")).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("Provider budgets") && html.contains(&provider.url()) && html.contains("5 per 1s"), "{html}");
        assert_eq!(status["rate"], 5);
        let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        // (One registry per process: other tests' budgets count there too.)
        assert!(metrics.contains("wasaga_budget_wait_seconds_count{budget=\"provider\"}"), "{metrics}");
        assert!(metrics.contains("wasaga_budget_paused{budget=\"provider\"}"), "{metrics}");

        // A provider that keeps answering 429: after 3 retries by the host
        // the step gets the 429 (and the counter step retries it itself).
        provider.throttle(4, "0");
        let id = started(&server, provider_saga(&provider)).await["id"].as_str().unwrap().to_string();
        let saga = server.wait_status(&id, "completed").await;
        assert!(logs(&saga).contains("3 retries by the host spent"), "{}", logs(&saga));
        assert_eq!(saga["steps"][0]["attempts"], 2, "the step's own retry is an attempt: {saga}");

        // A pause by hand, lifted; a delete.
        let r = server.http.post(server.url("/v1/budgets/provider/pause")).json(&json!({"until": "2000-01-01T00:00:00Z"})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = server.http.delete(server.url("/v1/budgets/provider")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = server.http.delete(server.url("/v1/budgets/provider")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        server.stop().await.unwrap();
    }
}

/// A 429 seen by one host pauses the budget for the other: on PostgreSQL
/// two hosts share the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_one_host_holds_back_the_other() {
    let db = TestDb::new(Backend::Postgres).await;
    let first = TestServer::on(&db, |_| {}).await;
    let second = TestServer::on(&db, |o| {
        o.runtime.outbound.budgets_refresh = Duration::from_millis(100)
    })
    .await;
    let provider = Provider::start().await;
    first.upload("counter").await;
    grant_provider(&first, &provider).await;
    let (status, body) = put_budget(
        &first,
        "provider",
        json!({"origins": [provider.url()], "rate": 100, "burst": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    provider.throttle(1, "2");
    let throttled = started(&first, provider_saga(&provider)).await;
    // Wait until the 429 was answered, then start on the other host.
    let deadline = Instant::now() + Duration::from_secs(30);
    while provider.arrivals().is_empty() {
        assert!(Instant::now() < deadline, "no request came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pushed_back = provider.arrivals()[0].1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = started(&second, provider_saga(&provider)).await;
    for saga in [&throttled, &other] {
        first
            .wait_status(saga["id"].as_str().unwrap(), "completed")
            .await;
    }
    let other_id = other["id"].as_str().unwrap();
    let other_at = provider
        .arrivals()
        .into_iter()
        .find(|(s, _)| s == other_id)
        .unwrap()
        .1;
    assert!(
        other_at.duration_since(pushed_back) + Duration::from_millis(50) >= Duration::from_secs(2),
        "the other host's request went out {:?} after the 429 (Retry-After: 2)",
        other_at.duration_since(pushed_back)
    );
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}
