//! Steps that call real APIs, against a test cloud (a real HTTP server on
//! 127.0.0.1:0 that stands in for a provider): a step creates a resource
//! with a token it never sees and deletes it when the saga rolls back;
//! grants decide where requests go and which secrets go with them; a
//! secret's value never lands in what is stored or returned; the limits on
//! outbound HTTP hold; deadlines and cancels reach a step blocked in a host
//! call; roles decide who may do what.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use wasaga_tests::{
    Backend, Cloud, TestDb, TestServer, component, on_both, poll_saga, polyglot, secrets_key_file,
};

const WITHIN: Duration = Duration::from_secs(90);
const TOKEN: &str = "cloud-t0ken-Zq81";

async fn server(db: &TestDb, adjust: impl FnOnce(&mut wasaga::server::ServeOptions)) -> TestServer {
    let key = secrets_key_file(db.dir.path());
    TestServer::on(db, |o| {
        o.secrets_key_file = Some(key);
        adjust(o);
    })
    .await
}

async fn put(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    server
        .http
        .put(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn finish(server: &TestServer, body: Value) -> Value {
    let (status, saga) = server.post_json("/v1/sagas", &body).await;
    assert_eq!(status, StatusCode::CREATED);
    poll_saga(
        &server.http,
        &server.base,
        saga["id"].as_str().unwrap(),
        WITHIN,
        |s| ["completed", "rolled_back", "failed"].contains(&s["status"].as_str().unwrap_or("")),
    )
    .await
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
    a_step_creates_with_a_token_it_never_sees_and_a_rollback_deletes(backend) {
        let cloud = Cloud::start(TOKEN).await;
        let db = TestDb::new(backend).await;
        let server = server(&db, |_| {}).await;
        server.upload("http-resource").await;
        server.grant_cloud(&cloud, TOKEN, "http-resource").await;
        let inputs = json!({"api": cloud.origin(), "name": "web-1"});

        let kept = finish(&server, json!({"kind": "provision", "steps": ["http-resource"], "inputs": inputs})).await;
        assert_eq!(kept["status"], "completed", "{kept}");
        let id = kept["context"]["resource_id"].as_str().unwrap().to_string();
        assert!(cloud.resources().contains_key(&id));
        assert_eq!(kept["resources"][0]["external_id"], id.as_str());
        assert_eq!(kept["resources"][0]["kind"], "cloud-resource");
        let logs = log_lines(&kept, 0);
        let audit = format!("http POST {}/v2/resources -> 201 (", cloud.origin());
        assert!(logs.iter().any(|l| l.starts_with(&audit) && l.ends_with(" ms)")), "{logs:?}");

        let undone = finish(&server, json!({"kind": "provision", "steps": ["http-resource", "fail"], "inputs": inputs})).await;
        assert_eq!(undone["status"], "rolled_back", "{undone}");
        assert_eq!(undone["steps"][0]["status"], "compensated");
        let gone = undone["context"]["resource_id"].as_str().unwrap();
        assert!(!cloud.resources().contains_key(gone), "the rollback deleted it");
        let logs = log_lines(&undone, 0);
        let audit = format!("http DELETE {}/v2/resources/{gone} -> 204 (", cloud.origin());
        assert!(logs.iter().any(|l| l.starts_with(&audit)), "{logs:?}");
        assert_eq!(cloud.resources().len(), 1);
        let (creates, deletes, refused) = cloud.counts();
        assert_eq!((creates, deletes, refused), (2, 1, 0));
        for saga in [&kept, &undone] {
            assert!(!saga.to_string().contains(TOKEN), "the token leaked: {saga}");
        }
    }

    a_step_waits_for_the_resource_to_boot_and_a_cancel_meanwhile_deletes_it(backend) {
        let cloud = Cloud::start(TOKEN).await;
        cloud.boot_after(2);
        let db = TestDb::new(backend).await;
        let server = server(&db, |_| {}).await;
        for plugin in ["http-resource", "wait-active"] {
            server.upload(plugin).await;
            server.grant_cloud(&cloud, TOKEN, plugin).await;
        }
        let inputs = json!({"api": cloud.origin(), "name": "web-1", "poll_ms": 200});
        let steps = json!(["http-resource", "wait-active"]);
        let done = finish(&server, json!({"kind": "provision", "steps": steps, "inputs": inputs})).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["context"]["resource_status"], "active");
        assert_eq!(done["steps"][1]["polls"], 2);
        assert_eq!(done["steps"][1]["attempts"], 1);
        let logs = log_lines(&done, 1);
        assert!(logs.iter().any(|l| l.ends_with("is booting; checking again in 200 ms")), "{logs:?}");

        // A resource that takes its time; the saga is cancelled during the wait.
        cloud.boot_after(1_000_000);
        let slow = json!({"api": cloud.origin(), "name": "web-2", "poll_ms": 60_000});
        let r = server.http.post(server.url("/v1/sagas")).json(&json!({"kind": "provision", "steps": steps, "inputs": slow})).send().await.unwrap();
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        poll_saga(&server.http, &server.base, &id, WITHIN, |s| !s["steps"][1]["waiting_until"].is_null()).await;
        let created = cloud.resources().len();
        let r = server.http.post(server.url(&format!("/v1/sagas/{id}/cancel"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let undone = poll_saga(&server.http, &server.base, &id, WITHIN, |s| s["status"] == "rolled_back").await;
        assert_eq!(undone["steps"][0]["status"], "compensated");
        assert_eq!(undone["steps"][1]["status"], "compensated");
        assert_eq!(cloud.resources().len(), created - 1, "the cancel deleted what the saga created");
    }

    a_secrets_value_is_redacted_from_everything_stored(backend) {
        // The fetch step asks the cloud to echo its request's headers back,
        // so it holds the token the host put in; it logs it, outputs it and
        // fails with it. None of it may keep the value.
        let cloud = Cloud::start(TOKEN).await;
        let db = TestDb::new(backend).await;
        let server = server(&db, |_| {}).await;
        server.upload("fetch").await;
        server.grant_cloud(&cloud, TOKEN, "fetch").await;
        let echo = json!({"url": format!("{}/v2/echo-headers", cloud.origin()),
                          "headers": {"authorization": "Bearer {{secret:cloud-token}}"}});
        let told = finish(&server, json!({"kind": "leak", "steps": ["fetch"], "inputs": {"requests": [echo], "log_bodies": true}})).await;
        assert_eq!(told["status"], "completed", "{told}");
        let body = told["context"]["responses"][0]["body"].as_str().unwrap();
        assert!(body.contains("Bearer [secret:cloud-token]"), "{body}");
        assert!(log_lines(&told, 0).iter().any(|l| l.contains("Bearer [secret:cloud-token]")));
        let failed = finish(&server, json!({"kind": "leak", "steps": ["fetch"], "inputs": {"requests": [echo], "fail_with_body": true}})).await;
        assert_eq!(failed["status"], "rolled_back");
        let error = failed["steps"][0]["error"].as_str().unwrap();
        assert!(error.contains("Bearer [secret:cloud-token]"), "{error}");
        assert!(failed["error"]["message"].as_str().unwrap().contains("[secret:cloud-token]"));
        for saga in [&told, &failed] {
            assert!(!saga.to_string().contains(TOKEN), "the token leaked: {saga}");
        }
        let list = server.get_json("/v1/sagas?limit=100").await;
        assert!(!list.to_string().contains(TOKEN));
        let secrets = server.get_json("/v1/secrets").await;
        assert!(!secrets.to_string().contains(TOKEN));
        assert_eq!(secrets["secrets"][0]["name"], "cloud-token");
    }

    every_rule_of_outbound_http_says_which_one_refused(backend) {
        let cloud = Cloud::start(TOKEN).await;
        let db = TestDb::new(backend).await;
        let server = server(&db, |o| {
            o.runtime.max_http_requests = 2;
            o.runtime.max_http_response_bytes = 1000;
        })
        .await;
        server.upload("fetch").await;
        let origin = cloud.origin();
        let req = |path: &str, secret: Option<&str>| {
            let mut r = json!({"url": format!("{origin}{path}")});
            if let Some(name) = secret {
                r["headers"] = json!({"authorization": format!("Bearer {{{{secret:{name}}}}}")});
            }
            r
        };
        let fetch = |requests: Vec<Value>| json!({"kind": "rules", "steps": ["fetch"], "inputs": {"requests": requests}});
        let refusal = |saga: &Value| {
            log_lines(saga, 0)
                .into_iter()
                .filter(|l| l.starts_with("[host] http GET"))
                .collect::<Vec<_>>()
        };

        // No grant at all.
        let saga = finish(&server, fetch(vec![req("/v2/bytes?n=10", None)])).await;
        assert_eq!(saga["context"]["responses"][0]["error"], "the host refused the request: ErrorCode::HttpRequestDenied");
        assert_eq!(
            refusal(&saga),
            [format!("[host] http GET {origin}/v2/bytes refused: {origin} is not granted: this plugin may make no HTTP requests")]
        );

        // Granted elsewhere.
        assert_eq!(put(&server, "/v1/plugins/fetch/grants", json!({"http": ["https://api.example.com"]})).await.status(), StatusCode::OK);
        let saga = finish(&server, fetch(vec![req("/v2/bytes?n=10", None)])).await;
        assert_eq!(
            refusal(&saga),
            [format!("[host] http GET {origin}/v2/bytes refused: {origin} is not granted to this plugin (its grants: https://api.example.com)")]
        );

        // The origin granted, the secret not.
        assert_eq!(put(&server, "/v1/plugins/fetch/grants", json!({"http": [origin]})).await.status(), StatusCode::OK);
        assert_eq!(put(&server, "/v1/secrets/cloud-token", json!({"value": TOKEN, "origins": [origin]})).await.status(), StatusCode::NO_CONTENT);
        let saga = finish(&server, fetch(vec![req("/v2/echo-headers", Some("cloud-token"))])).await;
        assert_eq!(
            refusal(&saga),
            [format!("[host] http GET {origin}/v2/echo-headers refused: a header uses a secret: secret `cloud-token` is not granted to this plugin")]
        );

        // Granted, but the secret may go elsewhere only.
        assert_eq!(put(&server, "/v1/secrets/cloud-token", json!({"value": TOKEN, "origins": ["https://api.example.com"]})).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(put(&server, "/v1/plugins/fetch/grants", json!({"http": [origin], "secrets": {"cloud-token": "use"}})).await.status(), StatusCode::OK);
        let saga = finish(&server, fetch(vec![req("/v2/echo-headers", Some("cloud-token"))])).await;
        assert_eq!(
            refusal(&saga),
            [format!("[host] http GET {origin}/v2/echo-headers refused: a header uses a secret: secret `cloud-token` may not be sent to {origin} (its origins: https://api.example.com)")]
        );
        // A granted secret that does not exist.
        assert_eq!(put(&server, "/v1/plugins/fetch/grants", json!({"http": [origin], "secrets": {"ghost": "use"}})).await.status(), StatusCode::OK);
        let saga = finish(&server, fetch(vec![req("/v2/echo-headers", Some("ghost"))])).await;
        assert!(refusal(&saga)[0].ends_with("secret `ghost` is granted to this plugin but not set (or this host has no secrets key)"), "{:?}", refusal(&saga));

        // A response past the size limit; more requests than the limit.
        let saga = finish(&server, fetch(vec![req("/v2/bytes?n=500", None), req("/v2/bytes?n=5000", None), req("/v2/bytes?n=1", None)])).await;
        let responses = &saga["context"]["responses"];
        assert_eq!(responses[0]["status"], 200);
        assert!(responses[1]["error"].as_str().unwrap().ends_with("HTTP response body size exceeds limit: 1000 bytes"), "{responses}");
        assert_eq!(responses[2]["error"], "the host refused the request: ErrorCode::HttpRequestDenied");
        let logs = log_lines(&saga, 0);
        assert!(logs.iter().any(|l| l == "[host] a response body passed 1000 bytes (--max-http-response): the rest is refused"), "{logs:?}");
        assert!(logs.iter().any(|l| l.ends_with("refused: this call already made 2 requests, the limit per call (--max-http-requests)")), "{logs:?}");

        // A server that never answers: the step's deadline ends the call.
        let saga = finish(&server, json!({"kind": "rules", "steps": [{"plugin": "fetch", "timeout_ms": 1000, "max_attempts": 1}],
                                       "inputs": {"requests": [req("/v2/hang", None)]}})).await;
        assert_eq!(saga["status"], "rolled_back");
        assert_eq!(saga["steps"][0]["error"], "deadline of 1000 ms exceeded (after 1 attempt)");
        assert!(wasaga_tests::healthy(&server.http, &server.base).await);
    }

    a_deadline_and_a_cancel_reach_a_step_waiting_in_a_host_call(backend) {
        // The fetch step sleeps a minute in `wasi:io/poll`, where no Wasm
        // runs for the epoch to interrupt.
        let db = TestDb::new(backend).await;
        let server = server(&db, |_| {}).await;
        server.upload("fetch").await;
        let sleeping = |timeout_ms: u64| json!({"kind": "sleep", "steps": [{"plugin": "fetch", "timeout_ms": timeout_ms, "max_attempts": 1}], "inputs": {"sleep_ms": 60_000}});
        let saga = finish(&server, sleeping(1000)).await;
        assert_eq!(saga["status"], "rolled_back");
        assert_eq!(saga["steps"][0]["error"], "deadline of 1000 ms exceeded (after 1 attempt)");
        let took = elapsed_ms(&saga["steps"][0]);
        assert!(took < 30_000, "the call ran {took} ms: the sleep was not cut short");

        let r = server.http.post(server.url("/v1/sagas")).json(&sleeping(120_000)).send().await.unwrap();
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        poll_saga(&server.http, &server.base, &id, WITHIN, |s| s["steps"][0]["status"] == "running").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = server.http.post(server.url(&format!("/v1/sagas/{id}/cancel"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let saga = poll_saga(&server.http, &server.base, &id, WITHIN, |s| s["status"] == "rolled_back").await;
        assert_eq!(saga["steps"][0]["error"], "interrupted by a cancel request");
        let took = elapsed_ms(&saga["steps"][0]);
        assert!(took < 30_000, "the call ran {took} ms: the cancel did not cut the sleep");
    }
}

/// How long a step's last call ran, by the server's own timestamps.
fn elapsed_ms(row: &Value) -> i64 {
    let at = |field: &str| {
        serde_json::from_value::<wasaga::model::Timestamp>(row[field].clone())
            .unwrap()
            .millis()
    };
    at("finished_at") - at("started_at")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_step_creates_and_deletes_with_fetch() {
    let cloud = Cloud::start(TOKEN).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server(&db, |_| {}).await;
    server.upload_bytes(polyglot("js-http-resource.wasm")).await;
    server.grant_cloud(&cloud, TOKEN, "js-http-resource").await;
    let inputs = json!({"api": cloud.origin(), "name": "js-1"});
    let saga = finish(
        &server,
        json!({"kind": "provision", "steps": ["js-http-resource", "fail"], "inputs": inputs}),
    )
    .await;
    assert_eq!(saga["status"], "rolled_back", "{saga}");
    assert_eq!(saga["steps"][0]["status"], "compensated");
    let id = saga["context"]["js_resource_id"].as_str().unwrap();
    assert_eq!(saga["resources"][0]["external_id"], id);
    assert!(cloud.resources().is_empty(), "the rollback deleted it");
    assert_eq!(cloud.counts(), (1, 1, 0));
    let logs = log_lines(&saga, 0);
    assert!(
        logs.iter()
            .any(|l| l.starts_with(&format!("http POST {}/v2/resources -> 201", cloud.origin()))),
        "{logs:?}"
    );
    assert!(!saga.to_string().contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_secrets_are_admin_business_and_say_what_is_wrong() {
    let db = TestDb::new(Backend::Sqlite).await;
    let plain = TestServer::on(&db, |_| {}).await;
    // Without a key, secrets cannot be set, and the answer says how.
    let r = put(
        &plain,
        "/v1/secrets/do-token",
        json!({"value": "x", "origins": ["https://api.example.com"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "secrets_disabled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--secrets-key-file")
    );
    plain.stop().await.unwrap();

    let db = TestDb::new(Backend::Sqlite).await;
    let server = server(&db, |_| {}).await;
    let error = |r: reqwest::Response| async move {
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        (
            status,
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    // Grants: origins normalized, a name granted before any upload.
    let r = put(&server, "/v1/plugins/not-uploaded-yet/grants", json!({"http": ["https://API.example.com:443", "http://127.0.0.1:9400", "https://*.example.net"], "secrets": {"do-token": "read"}})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let grants = server.get_json("/v1/plugins/not-uploaded-yet/grants").await;
    assert_eq!(
        grants,
        json!({"http": ["http://127.0.0.1:9400", "https://api.example.com", "https://*.example.net"], "secrets": {"do-token": "read"}})
    );
    assert_eq!(
        server.get_json("/v1/plugins/nobody/grants").await,
        json!({"http": [], "secrets": {}})
    );
    for (body, says) in [
        (
            json!({"http": ["https://api.example.com/v2"]}),
            "`https://api.example.com/v2` is not an origin: it has a path",
        ),
        (
            json!({"http": ["ftp://files.example.com"]}),
            "`ftp://files.example.com` is not an origin",
        ),
        (
            json!({"secrets": {"Bad_Name": "use"}}),
            "`Bad_Name` is not a secret name",
        ),
        (json!({"secrets": {"ok": "write"}}), "write"),
    ] {
        let (status, message) =
            error(put(&server, "/v1/plugins/p/grants", body.clone()).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, message) =
        error(put(&server, "/v1/plugins/Not%20A%20Name/grants", json!({})).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("invalid plugin name"), "{message}");

    // Secrets: write-only; bad names and origins say which; a value that is
    // not a string is not quoted back.
    for (path, body, says) in [
        (
            "/v1/secrets/UPPER",
            json!({"value": "v", "origins": []}),
            "is not a secret name",
        ),
        (
            "/v1/secrets/ok",
            json!({"value": "v", "origins": ["api.example.com"]}),
            "`api.example.com` is not an origin",
        ),
        (
            "/v1/secrets/ok",
            json!({"value": 123456789, "origins": []}),
            "`value` must be a string",
        ),
        ("/v1/secrets/ok", json!({"value": "v"}), "missing `origins`"),
    ] {
        let (status, message) = error(put(&server, path, body.clone()).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(message.contains(says), "{body}: {message}");
        assert!(!message.contains("123456789"));
    }
    let r = put(
        &server,
        "/v1/secrets/do-token",
        json!({"value": "s3cret-value", "origins": ["https://api.digitalocean.com"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let list = server.get_json("/v1/secrets").await;
    assert_eq!(list["secrets"][0]["name"], "do-token");
    assert_eq!(
        list["secrets"][0]["origins"],
        json!(["https://api.digitalocean.com"])
    );
    assert!(!list.to_string().contains("s3cret-value"));
    let r = server
        .http
        .delete(server.url("/v1/secrets/do-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = server
        .http
        .delete(server.url("/v1/secrets/do-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The value is in no row of the database file.
    let file = std::fs::read(db.dir.path().join("wasaga.db")).unwrap();
    assert!(!file.windows(12).any(|w| w == b"s3cret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_do_what_and_the_label_is_the_actor() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tokens = wasaga_tests::tokens(
        "root-t0ken",
        "viewer dash view-t0ken\noperator oncall ops-t0ken\n",
    );
    let server = server(&db, |o| o.server.tokens = Some(tokens)).await;
    let http = &server.http;
    let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut r = http.request(method, server.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    };
    use reqwest::Method;
    // Unknown or missing token: 401; known without the role: 403.
    assert_eq!(
        call(Method::GET, "/v1/sagas", None)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(Method::GET, "/v1/sagas", Some("nope"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    for token in ["view-t0ken", "ops-t0ken", "root-t0ken"] {
        assert_eq!(
            call(Method::GET, "/v1/sagas", Some(token))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            call(Method::GET, "/v1/plugins/echo/grants", Some(token))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let start = json!({"kind": "k", "steps": ["echo"]});
    let r = call(Method::POST, "/v1/sagas", Some("view-t0ken"))
        .json(&start)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        body["error"]["message"],
        "this needs the operator role; the token `dash` has the viewer role"
    );
    // An operator starts and cancels; the label is the actor.
    let r = call(Method::POST, "/v1/sagas", Some("ops-t0ken"))
        .json(&start)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let saga: Value = r.json().await.unwrap();
    assert_eq!(saga["triggered_by"], "oncall");
    let spin = call(Method::POST, "/v1/plugins", Some("root-t0ken"))
        .body(component("spin"))
        .send()
        .await
        .unwrap();
    assert_eq!(spin.status(), StatusCode::CREATED);
    let r = call(Method::POST, "/v1/sagas", Some("ops-t0ken"))
        .json(&json!({"kind": "k", "steps": ["spin"]}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = call(
        Method::POST,
        &format!("/v1/sagas/{id}/cancel"),
        Some("view-t0ken"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = call(
        Method::POST,
        &format!("/v1/sagas/{id}/cancel"),
        Some("ops-t0ken"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let cancelled: Value = r.json().await.unwrap();
    // The first action is the start, by the token that made it.
    assert_eq!(cancelled["actions"][0]["action"], "start");
    assert_eq!(cancelled["actions"][1]["action"], "cancel");
    assert_eq!(cancelled["actions"][1]["actor"], "oncall");
    // Only admins upload (so only an admin can take a granted name over),
    // grant and keep secrets.
    let r = put(
        &server,
        "/v1/plugins/echo/grants",
        json!({"http": ["https://api.example.com"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no token");
    for token in ["view-t0ken", "ops-t0ken"] {
        let up = call(Method::POST, "/v1/plugins", Some(token))
            .body(wasaga_tests::variant(&component("echo"), 9, 0))
            .send()
            .await
            .unwrap();
        assert_eq!(
            up.status(),
            StatusCode::FORBIDDEN,
            "{token} uploading a plugin named echo"
        );
        let grant = call(Method::PUT, "/v1/plugins/echo/grants", Some(token))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(grant.status(), StatusCode::FORBIDDEN);
        let secrets = call(Method::GET, "/v1/secrets", Some(token))
            .send()
            .await
            .unwrap();
        assert_eq!(secrets.status(), StatusCode::FORBIDDEN);
    }
    let grant = call(Method::PUT, "/v1/plugins/echo/grants", Some("root-t0ken"))
        .json(&json!({"http": ["https://api.example.com"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), StatusCode::OK);
    // /healthz stays open.
    assert!(wasaga_tests::healthy(&server.http, &server.base).await);
}

/// On PostgreSQL a grant made through one host reaches a step run by
/// another at once (a notice), not after its cached copy expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_on_one_host_reaches_the_others() {
    let cloud = Cloud::start(TOKEN).await;
    let db = TestDb::new(Backend::Postgres).await;
    let a = server(&db, |o| o.examples = false).await;
    let b = TestServer::on(&db, |o| o.examples = false).await;
    a.upload("fetch").await;
    let fetch = json!({"kind": "x", "steps": ["fetch"], "inputs": {"requests": [{"url": format!("{}/v2/bytes?n=3", cloud.origin())}]}});
    let denied = finish(&b, fetch.clone()).await;
    assert_eq!(
        denied["context"]["responses"][0]["error"],
        "the host refused the request: ErrorCode::HttpRequestDenied"
    );
    assert_eq!(
        put(
            &a,
            "/v1/plugins/fetch/grants",
            json!({"http": [cloud.origin()]})
        )
        .await
        .status(),
        StatusCode::OK
    );
    // B's copy of fetch's access was read a moment ago; only the notice can
    // refresh it before the test runs again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let allowed = finish(&b, fetch).await;
    assert_eq!(
        allowed["context"]["responses"][0]["status"], 200,
        "{allowed}"
    );
}

/// Steps' outbound connections are pooled per plugin and origin: a step's
/// sequential requests, and the next call's, reuse one connection; another
/// plugin going to the same origin gets its own, never the first one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_connections_are_pooled_per_plugin() {
    let cloud = Cloud::start(TOKEN).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server(&db, |_| {}).await;
    server.upload("fetch").await;
    server.grant_cloud(&cloud, TOKEN, "fetch").await;
    let gets = |n: usize| {
        let requests: Vec<Value> = (0..n)
            .map(|_| json!({"url": format!("{}/v2/bytes?n=10", cloud.origin())}))
            .collect();
        json!({"kind": "pool", "steps": ["fetch"], "inputs": {"requests": requests}})
    };
    let saga = finish(&server, gets(10)).await;
    assert_eq!(saga["status"], "completed", "{saga}");
    let answered = saga["context"]["responses"].as_array().unwrap();
    assert_eq!(answered.len(), 10);
    assert!(answered.iter().all(|r| r["status"] == 200), "{saga}");
    assert_eq!(
        cloud.connections(),
        1,
        "ten sequential GETs on one connection"
    );
    let saga = finish(&server, gets(3)).await;
    assert_eq!(saga["status"], "completed", "{saga}");
    assert_eq!(cloud.connections(), 1, "the next call reuses it");

    server.upload("http-resource").await;
    server.grant_cloud(&cloud, TOKEN, "http-resource").await;
    let inputs = json!({"api": cloud.origin(), "name": "pooled"});
    let saga = finish(
        &server,
        json!({"kind": "pool", "steps": ["http-resource"], "inputs": inputs}),
    )
    .await;
    assert_eq!(saga["status"], "completed", "{saga}");
    assert_eq!(
        cloud.connections(),
        2,
        "another plugin has a connection of its own"
    );
    let saga = finish(&server, gets(2)).await;
    assert_eq!(saga["status"], "completed", "{saga}");
    assert_eq!(cloud.connections(), 2);
    server.stop().await.unwrap();
}
