//! Webhooks against a real receiver on 127.0.0.1:0 that verifies every
//! delivery with the Standard Webhooks reference library
//! (`standardwebhooks`): sagas' ends arrive signed, once per endpoint and in
//! order per saga; a failing endpoint is retried with the same
//! `webhook-id` until it answers; a rotation signs with both secrets; the
//! outbox survives the host (a new host on the same database sends what the
//! old one could not); an endpoint failing for the whole retry window is
//! disabled, and enabling it sends what waited; private addresses are
//! refused unless allowed; bad input is refused with the field named and
//! nothing stored.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasaga_tests::{Backend, TestDb, TestServer, on_both, poll_saga, secrets_key_file};

const WITHIN: Duration = Duration::from_secs(60);

/// A delivery as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    signature: String,
    body: Value,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Statuses to answer next (then 204).
    answers: VecDeque<u16>,
    /// Secrets a delivery must verify with (each of them).
    secrets: Vec<String>,
    /// Deliveries whose signature did not verify.
    forged: usize,
}

/// The endpoint: verifies with the reference library, records, answers.
#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move {
                    let mut s = state.lock().unwrap();
                    let verified = !s.secrets.is_empty()
                        && s.secrets.iter().all(|secret| {
                            standardwebhooks::Webhook::new(secret)
                                .unwrap()
                                .verify(&body, &headers)
                                .is_ok()
                        });
                    if !verified {
                        s.forged += 1;
                    }
                    s.received.push(Received {
                        id: headers["webhook-id"].to_str().unwrap().to_string(),
                        signature: headers["webhook-signature"].to_str().unwrap().to_string(),
                        body: serde_json::from_slice(&body).unwrap(),
                    });
                    AxumStatus::from_u16(s.answers.pop_front().unwrap_or(204)).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, state }
    }

    fn origin(&self) -> String {
        self.url.trim_end_matches("/hooks").to_string()
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn forged(&self) -> usize {
        self.state.lock().unwrap().forged
    }

    fn verify_with(&self, secrets: &[&str]) {
        self.state.lock().unwrap().secrets = secrets.iter().map(|s| s.to_string()).collect();
    }

    fn answer(&self, statuses: &[u16]) {
        self.state.lock().unwrap().answers = statuses.iter().copied().collect();
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let got = self.received();
            if got.len() >= count {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver got {} deliveries, expected {count}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A server with a secrets key, allowed to deliver to `receiver`, with
/// retries a test can wait for.
async fn server(db: &TestDb, receiver: &Receiver) -> TestServer {
    server_with(db, receiver, |_| {}).await
}

async fn server_with(
    db: &TestDb,
    receiver: &Receiver,
    adjust: impl FnOnce(&mut wasaga::config::WebhookConfig),
) -> TestServer {
    // The key the database's secrets were sealed with, if a host made one.
    let existing = db.dir.path().join("secrets.key");
    let key = if existing.exists() {
        existing
    } else {
        secrets_key_file(db.dir.path())
    };
    let allow = receiver.origin().parse().unwrap();
    TestServer::on(db, |o| {
        o.secrets_key_file = Some(key);
        o.webhooks.allow = vec![allow];
        o.webhooks.poll_every = Duration::from_millis(50);
        o.webhooks.retry_delays = vec![Duration::from_millis(100)];
        adjust(&mut o.webhooks);
    })
    .await
}

async fn subscribe(server: &TestServer, body: Value) -> reqwest::Response {
    server
        .http
        .post(server.url("/v1/webhooks"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn create(server: &TestServer, receiver: &Receiver, events: &[&str]) -> Value {
    let r = subscribe(server, json!({"url": receiver.url, "events": events})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

/// Starts a saga and waits for its end.
async fn finish(server: &TestServer, body: Value) -> Value {
    let r = server
        .http
        .post(server.url("/v1/sagas"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    poll_saga(&server.http, &server.base, &id, WITHIN, |s| {
        ["completed", "rolled_back", "failed"].contains(&s["status"].as_str().unwrap_or(""))
    })
    .await
}

async fn deliveries(server: &TestServer, webhook: &str) -> Vec<Value> {
    server
        .get_json(&format!("/v1/webhooks/{webhook}/deliveries"))
        .await["deliveries"]
        .as_array()
        .unwrap()
        .clone()
}

on_both! {
    a_wait_opening_is_announced(backend) {
        let db = TestDb::new(backend).await;
        let receiver = Receiver::start().await;
        let server = server(&db, &receiver).await;
        create(&server, &receiver, &["wait.opened", "saga.completed"]).await;
        let r = server.http.post(server.url("/v1/sagas"))
            .json(&json!({"kind": "offboard", "steps": ["echo", {"wait": {"name": "approval", "timeout": "1h"}}]}))
            .send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let got = receiver.wait_for(1).await;
        assert_eq!(got[0].body["type"], "wait.opened", "{:?}", got[0].body);
        assert_eq!(got[0].body["data"]["id"], id.as_str());
        assert_eq!(got[0].body["data"]["current_step_index"], 1, "the wait's step");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.received().len(), 1, "once, and nothing else yet");
    }

    sagas_ends_arrive_signed_once_per_endpoint(backend) {
        let db = TestDb::new(backend).await;
        let receiver = Receiver::start().await;
        let server = server(&db, &receiver).await;
        let all = create(&server, &receiver, &["saga.completed", "saga.rolled_back"]).await;
        let secret = all["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("whsec_"), "{all}");
        receiver.verify_with(&[&secret]);
        // Only `provision` sagas that complete.
        let r = subscribe(&server, json!({
            "url": receiver.url, "events": ["saga.completed"], "filter": {"kind": "provision"},
        })).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let filtered: Value = r.json().await.unwrap();

        let done = finish(&server, json!({"kind": "provision", "steps": ["echo"], "inputs": {"n": 1}})).await;
        assert_eq!(done["status"], "completed");
        let undone = finish(&server, json!({"kind": "offboard", "steps": ["echo", "fail"]})).await;
        assert_eq!(undone["status"], "rolled_back");

        // 2 for the first endpoint, 1 for the filtered one.
        let got = receiver.wait_for(3).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got_all = receiver.received();
        assert_eq!(got_all.len(), 3, "no more than one delivery per endpoint and event: {got_all:?}");
        // The filtered endpoint's secret is another: its delivery fails the
        // first secret's check, and passes its own.
        assert_eq!(receiver.forged(), 1);
        let types: Vec<&str> = got.iter().map(|r| r.body["type"].as_str().unwrap()).collect();
        assert_eq!(types.iter().filter(|t| **t == "saga.completed").count(), 2, "{types:?}");
        assert_eq!(types.iter().filter(|t| **t == "saga.rolled_back").count(), 1, "{types:?}");
        let completed = got.iter().find(|r| r.body["type"] == "saga.completed").unwrap();
        // The body is the saga's summary.
        assert_eq!(completed.body["data"]["id"], done["id"]);
        assert_eq!(completed.body["data"]["status"], "completed");
        assert_eq!(completed.body["data"]["steps_total"], 1);
        assert!(completed.body["data"].get("inputs").is_none());
        assert!(completed.body["timestamp"].is_string());
        assert!(completed.id.starts_with("msg_"));
        // The same message to both endpoints has one id.
        let ids: Vec<&str> = got
            .iter()
            .filter(|r| r.body["type"] == "saga.completed")
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids[0], ids[1]);

        let listed = deliveries(&server, all["id"].as_str().unwrap()).await;
        assert_eq!(listed.len(), 2);
        for d in &listed {
            assert_eq!(d["status"], "delivered", "{d}");
            assert_eq!(d["attempts"], 1, "{d}");
            assert_eq!(d["last_status"], 204, "{d}");
        }
        assert_eq!(deliveries(&server, filtered["id"].as_str().unwrap()).await.len(), 1);
        // The list never shows a secret.
        let list = server.get_json("/v1/webhooks").await;
        assert!(!list.to_string().contains(&secret));
        assert_eq!(list["webhooks"].as_array().unwrap().len(), 2);
        server.stop().await.unwrap();
    }

    a_failing_endpoint_is_retried_with_the_same_id_and_redelivery_resends(backend) {
        let db = TestDb::new(backend).await;
        let receiver = Receiver::start().await;
        let server = server(&db, &receiver).await;
        let hook = create(&server, &receiver, &["saga.completed"]).await;
        receiver.verify_with(&[hook["secret"].as_str().unwrap()]);
        receiver.answer(&[500, 302]);
        finish(&server, json!({"kind": "k", "steps": ["echo"]})).await;
        let got = receiver.wait_for(3).await;
        assert!(got.iter().all(|r| r.id == got[0].id), "one webhook-id on every attempt: {got:?}");
        assert_eq!(receiver.forged(), 0);
        let id = hook["id"].as_str().unwrap();
        let listed = poll(|| async { deliveries(&server, id).await }, |d| d[0]["status"] == "delivered").await;
        assert_eq!(listed[0]["attempts"], 3, "{listed:?}");

        // Redelivery: the same message as a new delivery.
        let did = listed[0]["id"].as_i64().unwrap();
        let r = server.http.post(server.url(&format!("/v1/webhooks/{id}/deliveries/{did}/redeliver"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let again = receiver.wait_for(4).await;
        assert_eq!(again[3].id, got[0].id);
        let r = server.http.post(server.url(&format!("/v1/webhooks/{id}/deliveries/999999/redeliver"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = server.http.post(server.url(&format!("/v1/webhooks/{id}/deliveries/first/redeliver"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["message"], "`first` is not a delivery id (a number)");
        assert_eq!(receiver.received().len(), 4, "nothing more was sent");
        server.stop().await.unwrap();
    }

    a_rotation_signs_with_both_secrets(backend) {
        let db = TestDb::new(backend).await;
        let receiver = Receiver::start().await;
        let server = server(&db, &receiver).await;
        let hook = create(&server, &receiver, &["saga.completed"]).await;
        let id = hook["id"].as_str().unwrap();
        let old = hook["secret"].as_str().unwrap().to_string();
        let r = server.http.post(server.url(&format!("/v1/webhooks/{id}/rotate"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let rotated: Value = r.json().await.unwrap();
        let new = rotated["secret"].as_str().unwrap().to_string();
        assert_ne!(new, old);
        assert!(rotated["previous_secret_expires_at"].is_string(), "{rotated}");
        // A receiver holding either secret verifies.
        receiver.verify_with(&[&old, &new]);
        finish(&server, json!({"kind": "k", "steps": ["echo"]})).await;
        let got = receiver.wait_for(1).await;
        assert_eq!(receiver.forged(), 0);
        assert_eq!(got[0].signature.split(' ').count(), 2, "{}", got[0].signature);
        server.stop().await.unwrap();
    }

    the_outbox_outlives_the_host(backend) {
        let db = TestDb::new(backend).await;
        let receiver = Receiver::start().await;
        // Retries far apart: the first host gives up its chance.
        let first = server_with(&db, &receiver, |w| w.retry_delays = vec![Duration::from_secs(3600)]).await;
        let hook = create(&first, &receiver, &["saga.completed"]).await;
        receiver.verify_with(&[hook["secret"].as_str().unwrap()]);
        receiver.answer(&[503]);
        finish(&first, json!({"kind": "k", "steps": ["echo"]})).await;
        let got = receiver.wait_for(1).await;
        first.stop().await.unwrap();
        // Due now: as if the hour went by.
        make_due(&db).await;
        let second = server(&db, &receiver).await;
        let again = receiver.wait_for(2).await;
        assert_eq!(again[1].id, got[0].id, "the same message");
        assert_eq!(receiver.forged(), 0, "the second host opens the secret with the shared key");
        second.stop().await.unwrap();
    }

    an_endpoint_failing_past_the_window_is_disabled_until_enabled(backend) {
        let db = TestDb::new(backend).await;
        let receiver = Receiver::start().await;
        let server = server_with(&db, &receiver, |w| w.retry_window = Duration::from_millis(400)).await;
        let hook = create(&server, &receiver, &["saga.completed"]).await;
        let id = hook["id"].as_str().unwrap().to_string();
        receiver.verify_with(&[hook["secret"].as_str().unwrap()]);
        receiver.answer(&[500; 1000]);
        finish(&server, json!({"kind": "k", "steps": ["echo"]})).await;
        let webhook = poll(|| async { server.get_json(&format!("/v1/webhooks/{id}")).await }, |w| w["disabled_at"].is_string()).await;
        assert!(webhook["disabled_reason"].as_str().unwrap().contains("500"), "{webhook}");
        let listed = deliveries(&server, &id).await;
        assert_eq!(listed[0]["status"], "failed");
        // While disabled, a new end is kept, not sent.
        let tried = receiver.received().len();
        finish(&server, json!({"kind": "k", "steps": ["echo"]})).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(receiver.received().len(), tried);
        receiver.answer(&[]);
        let r = server.http.post(server.url(&format!("/v1/webhooks/{id}/enable"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        receiver.wait_for(tried + 1).await;
        server.stop().await.unwrap();
    }

    private_addresses_and_bad_input_are_refused(backend) {
        let db = TestDb::new(backend).await;
        let receiver = Receiver::start().await;
        let key = secrets_key_file(db.dir.path());
        // No --webhook-allow: the receiver on loopback is refused.
        let server = TestServer::on(&db, |o| {
            o.secrets_key_file = Some(key);
            o.webhooks.poll_every = Duration::from_millis(50);
        }).await;
        for (body, says) in [
            (json!({"url": receiver.url, "events": ["saga.completed"]}), "--webhook-allow http://127.0.0.1:"),
            (json!({"url": "http://10.0.0.8/x", "events": ["saga.completed"]}), "not a public address"),
            (json!({"url": "ftp://example.com/", "events": ["saga.completed"]}), "http or https"),
            (json!({"url": "https://example.com/", "events": ["saga.done"]}), "saga.done"),
            (json!({"url": "https://example.com/", "events": []}), "`events` is empty"),
            (json!({"url": "https://example.com/", "events": ["saga.failed"], "secret": "x"}), "secret"),
            (json!({"url": "https://example.com/", "events": ["saga.failed"], "filter": {"status": "x"}}), "status"),
            (json!({"events": ["saga.failed"]}), "url"),
        ] {
            let r = subscribe(&server, body.clone()).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
            let e: Value = r.json().await.unwrap();
            assert!(e["error"]["message"].as_str().unwrap().contains(says), "{body}: {e}");
        }
        assert_eq!(server.get_json("/v1/webhooks").await["webhooks"], json!([]));
        // A name that resolves to loopback passes the URL check and is
        // refused when it is resolved, at delivery.
        let port = receiver.origin().rsplit(':').next().unwrap().to_string();
        let r = subscribe(&server, json!({"url": format!("http://localhost:{port}/hooks"), "events": ["saga.completed"]})).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let hook: Value = r.json().await.unwrap();
        let id = hook["id"].as_str().unwrap();
        finish(&server, json!({"kind": "k", "steps": ["echo"]})).await;
        let listed = poll(|| async { deliveries(&server, id).await }, |d| !d.is_empty() && d[0]["attempts"].as_u64() >= Some(1) && d[0]["last_error"].is_string()).await;
        let error = listed[0]["last_error"].as_str().unwrap();
        assert!(error.contains("not a public address"), "{error}");
        assert!(receiver.received().is_empty());
        // The host carries on.
        let r = server.http.get(server.url(&format!("/v1/webhooks/{id}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        for path in ["/v1/webhooks/wh_nope", "/v1/webhooks/wh_nope/deliveries"] {
            let r = server.http.get(server.url(path)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let r = server.http.delete(server.url(&format!("/v1/webhooks/{id}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        server.stop().await.unwrap();
    }
}

/// A server without a secrets key cannot seal a signing secret: 409, and
/// nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_need_the_secrets_key() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::on(&db, |_| {}).await;
    let r = subscribe(
        &server,
        json!({"url": "https://example.com/", "events": ["saga.completed"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "secrets_disabled");
    assert_eq!(server.get_json("/v1/webhooks").await["webhooks"], json!([]));
    server.stop().await.unwrap();
}

/// Makes every pending delivery due now, in the database itself.
async fn make_due(db: &TestDb) {
    const SQL: &str = "UPDATE webhook_deliveries SET next_at = 0 WHERE status = 'pending'";
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query(SQL).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query(SQL).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// Polls `read` until `done` holds.
async fn poll<T, F, Fut>(read: F, done: impl Fn(&T) -> bool) -> T
where
    T: std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never came: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
