//! HTTP API v1 over real HTTP against the real server on 127.0.0.1:0:
//! every route, every error status of the contract, authentication, body
//! limits, broken JSON, idempotency, and the OpenAPI document.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use wasaga::server::ServeOptions;
use wasaga_tests::{Backend, TestDb, TestServer, component, poll_saga};

const WITHIN: Duration = Duration::from_secs(60);

async fn server_with(db: &TestDb, adjust: impl FnOnce(&mut ServeOptions)) -> TestServer {
    let mut options = ServeOptions::new(db.dir.path());
    options.database_url = Some(db.url.clone());
    options.runtime.max_instances = 16;
    options.runner.poll_every = Duration::from_millis(50);
    adjust(&mut options);
    TestServer::start(options).await
}

/// Asserts the contract's error body and returns its message.
async fn error_of(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("an error body in JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"]
        .as_str()
        .expect("a message")
        .to_string()
}

async fn start(server: &TestServer, body: Value) -> reqwest::Response {
    server
        .http
        .post(server.url("/v1/sagas"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn wait_final(server: &TestServer, id: &str) -> Value {
    poll_saga(&server.http, &server.base, id, WITHIN, |saga| {
        ["completed", "rolled_back", "failed"].contains(&saga["status"].as_str().unwrap())
    })
    .await
}

#[tokio::test]
async fn plugins_upload_list_show_and_delete() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_with(&db, |o| o.examples = false).await;

    let r = server
        .http
        .post(server.url("/v1/plugins"))
        .body(component("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["size"], component("echo").len());
    let digest = echo["digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71);
    assert!(echo["created_at"].as_str().unwrap().ends_with('Z'));

    let again = server
        .http
        .post(server.url("/v1/plugins"))
        .body(component("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "the same digest again is 200"
    );
    assert_eq!(again.json::<Value>().await.unwrap()["digest"], digest);

    server.upload("fail").await;
    let list: Value = server
        .http
        .get(server.url("/v1/plugins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fail", "echo"], "newest first");

    for reference in [digest.as_str(), "echo"] {
        let shown: Value = server
            .http
            .get(server.url(&format!("/v1/plugins/{reference}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(shown["digest"], digest.as_str());
    }
    for missing in [
        "nope",
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "sha256:bad",
    ] {
        let r = server
            .http
            .get(server.url(&format!("/v1/plugins/{missing}")))
            .send()
            .await
            .unwrap();
        error_of(r, StatusCode::NOT_FOUND, "not_found").await;
    }

    let r = server
        .http
        .delete(server.url(&format!("/v1/plugins/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = server
        .http
        .delete(server.url(&format!("/v1/plugins/{digest}")))
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::NOT_FOUND, "not_found").await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_uploads_get_clear_errors_and_store_nothing() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_with(&db, |o| {
        o.examples = false;
        o.runtime.max_component_bytes = 200_000;
    })
    .await;
    let upload = |bytes: Vec<u8>| {
        server
            .http
            .post(server.url("/v1/plugins"))
            .body(bytes)
            .send()
    };

    let message = error_of(
        upload(b"hello".to_vec()).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "not_a_component",
    )
    .await;
    assert!(
        message.starts_with("not a component: the body does not start with the Wasm magic number"),
        "{message}"
    );
    let message = error_of(
        upload(Vec::new()).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "not_a_component",
    )
    .await;
    assert_eq!(message, "not a component: the body is empty");
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let message = error_of(
        upload(core_module).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "not_a_component",
    )
    .await;
    assert!(message.contains("this is a core Wasm module"), "{message}");

    let message = error_of(
        upload(component("misnamed")).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(
        message.starts_with("invalid plugin name \"Not A Valid_Name!\""),
        "{message}"
    );

    let huge = vec![0u8; 300_000];
    let message = error_of(
        upload(huge).await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    assert_eq!(
        message,
        "the request body is 300000 bytes; this route takes at most 200000 bytes"
    );

    let list: Value = server
        .http
        .get(server.url("/v1/plugins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["plugins"], json!([]), "nothing was stored");
    // And the server still serves.
    server.upload("echo").await;
}

#[tokio::test]
async fn starting_listing_showing_and_cancelling_sagas() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_with(&db, |_| {}).await;
    server.upload("spin").await;

    // The bundled examples are there on an empty database.
    let r = start(&server, json!({"kind": "provision", "steps": ["echo", "echo", "echo"], "inputs": {"message": "hello"}, "deployment_id": "dep-1", "triggered_by": "alice"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let saga: Value = r.json().await.unwrap();
    // This host has a free slot: the saga was stored already started.
    assert_eq!(saga["status"], "running");
    assert_eq!(saga["kind"], "provision");
    assert_eq!(saga["deployment_id"], "dep-1");
    assert_eq!(saga["triggered_by"], "alice");
    assert_eq!(saga["plan"].as_array().unwrap().len(), 3);
    assert!(
        saga["plan"][0]["plugin"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "refs are pinned to digests"
    );
    let id = saga["id"].as_str().unwrap().to_string();

    let done = wait_final(&server, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["context"],
        json!({"echoed_at_step_0": "hello", "echoed_at_step_1": "hello", "echoed_at_step_2": "hello"})
    );
    assert_eq!(done["steps"].as_array().unwrap().len(), 3);
    let step = &done["steps"][1];
    for field in [
        "index",
        "name",
        "plugin",
        "status",
        "attempts",
        "output",
        "error",
        "logs",
        "started_at",
        "finished_at",
    ] {
        assert!(
            step.get(field).is_some(),
            "step field {field} missing: {step}"
        );
    }
    assert_eq!(step["name"], "echo");
    assert_eq!(done["resources"], json!([]));
    for field in [
        "id",
        "kind",
        "status",
        "current_step_index",
        "context",
        "error",
        "cancel_requested",
        "deployment_id",
        "triggered_by",
        "created_at",
        "updated_at",
    ] {
        assert!(done.get(field).is_some(), "saga field {field} missing");
    }

    // A detailed step with its own settings, then a failing saga.
    let r = start(&server, json!({"kind": "offboard", "steps": [{"plugin": "echo", "max_attempts": 1, "timeout_ms": 5000}, "fail"]})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let failed_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rolled_back = wait_final(&server, &failed_id).await;
    assert_eq!(rolled_back["status"], "rolled_back");
    assert_eq!(rolled_back["error"]["reason"], "step_failed:fail");
    assert_eq!(rolled_back["error"]["compensate_from_idx"], 0);

    // Cancel a saga in flight.
    let r = start(
        &server,
        json!({"kind": "suspend", "steps": ["echo", {"plugin": "spin", "timeout_ms": 60000}]}),
    )
    .await;
    let spinning = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    poll_saga(&server.http, &server.base, &spinning, WITHIN, |s| {
        s["steps"].as_array().unwrap().len() == 2
    })
    .await;
    let r = server
        .http
        .post(server.url(&format!("/v1/sagas/{spinning}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.json::<Value>().await.unwrap()["cancel_requested"], true);
    let cancelled = wait_final(&server, &spinning).await;
    assert_eq!(cancelled["status"], "rolled_back");
    assert_eq!(
        cancelled["steps"][1]["error"],
        "interrupted by a cancel request"
    );
    let r = server
        .http
        .post(server.url(&format!("/v1/sagas/{spinning}/cancel")))
        .send()
        .await
        .unwrap();
    let message = error_of(r, StatusCode::CONFLICT, "conflict").await;
    assert!(
        message.contains("has already ended (rolled_back)"),
        "{message}"
    );

    // Listing, newest first, with filters.
    let all: Value = server
        .http
        .get(server.url("/v1/sagas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = all["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["suspend", "offboard", "provision"]);
    let filtered = |query: &'static str| {
        let http = server.http.clone();
        let url = server.url(&format!("/v1/sagas?{query}"));
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["sagas"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(filtered("status=completed").await, 1);
    assert_eq!(filtered("status=rolled_back").await, 2);
    assert_eq!(filtered("kind=offboard").await, 1);
    assert_eq!(filtered("deployment_id=dep-1").await, 1);
    assert_eq!(filtered("limit=2").await, 2);
    let r = server
        .http
        .get(server.url("/v1/sagas?status=done"))
        .send()
        .await
        .unwrap();
    let message = error_of(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(message.contains("unknown SagaStatus `done`"), "{message}");
    let r = server
        .http
        .get(server.url("/v1/sagas?limit=0"))
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::BAD_REQUEST, "invalid_request").await;

    // Unknown ids.
    for missing in ["019ac4f2-6b1e-7c3a-9d2e-5f1a2b3c4d5e", "not-a-uuid"] {
        let r = server
            .http
            .get(server.url(&format!("/v1/sagas/{missing}")))
            .send()
            .await
            .unwrap();
        error_of(r, StatusCode::NOT_FOUND, "not_found").await;
        let r = server
            .http
            .post(server.url(&format!("/v1/sagas/{missing}/cancel")))
            .send()
            .await
            .unwrap();
        error_of(r, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn a_pinned_plugin_cannot_be_deleted() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_with(&db, |_| {}).await;
    let spin = server.upload("spin").await;
    let digest = spin["digest"].as_str().unwrap();
    let r = start(
        &server,
        json!({"kind": "k", "steps": [{"plugin": digest, "timeout_ms": 60000}]}),
    )
    .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = server
        .http
        .delete(server.url(&format!("/v1/plugins/{digest}")))
        .send()
        .await
        .unwrap();
    let message = error_of(r, StatusCode::CONFLICT, "conflict").await;
    assert!(message.contains(&id), "{message}");
    server
        .http
        .post(server.url(&format!("/v1/sagas/{id}/cancel")))
        .send()
        .await
        .unwrap();
    wait_final(&server, &id).await;
    let r = server
        .http
        .delete(server.url(&format!("/v1/plugins/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "deletable once the saga ended"
    );
}

#[tokio::test]
async fn bad_saga_requests_are_400_or_422_with_the_error_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_with(&db, |o| o.server.max_json_bytes = 64 * 1024).await;
    let raw = |body: &'static str| {
        server
            .http
            .post(server.url("/v1/sagas"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let cases: Vec<(&str, &str)> = vec![
        ("{\"kind\": \"k\", \"steps\": [\"echo\"", "invalid JSON"),
        ("", "the request body is empty"),
        ("[1,2]", "invalid JSON"),
        ("{\"kind\": 5, \"steps\": [\"echo\"]}", "at `kind`"),
        ("{\"kind\": \"k\", \"steps\": \"echo\"}", "at `steps`"),
        (
            "{\"kind\": \"k\", \"steps\": [7]}",
            "steps[0]: a step is a plugin reference",
        ),
        (
            "{\"kind\": \"k\", \"steps\": [{\"plugin\": \"echo\", \"retries\": 2}]}",
            "unknown field `retries`",
        ),
        (
            "{\"kind\": \"k\", \"step\": [\"echo\"]}",
            "unknown field `step`",
        ),
        ("{\"steps\": [\"echo\"]}", "missing field `kind`"),
    ];
    for (body, expected) in cases {
        let message = error_of(
            raw(body).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        )
        .await;
        assert!(message.contains(expected), "{body}: {message}");
    }
    let semantic = vec![
        (
            json!({"kind": "", "steps": ["echo"]}),
            "`kind` must be 1 to 256 bytes",
        ),
        (
            json!({"kind": "k", "steps": []}),
            "`steps` must hold 1 to 1000 steps",
        ),
        (
            json!({"kind": "k", "steps": ["echo"], "inputs": [1]}),
            "`inputs` must be a JSON object",
        ),
        (
            json!({"kind": "k", "steps": [{"plugin": "echo", "max_attempts": 0}]}),
            "steps[0].max_attempts must be 1 to 100",
        ),
        (
            json!({"kind": "k", "steps": [{"plugin": "echo", "timeout_ms": 0}]}),
            "steps[0].timeout_ms must be 1 to",
        ),
    ];
    for (body, expected) in semantic {
        let message = error_of(
            start(&server, body.clone()).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        assert!(message.contains(expected), "{body}: {message}");
    }
    let message = error_of(
        start(&server, json!({"kind": "k", "steps": ["echo", "ghost", "sha256:0000000000000000000000000000000000000000000000000000000000000000"]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_plugin",
    )
    .await;
    assert_eq!(
        message,
        "unknown plugins: `ghost` (steps[1]), `sha256:0000000000000000000000000000000000000000000000000000000000000000` (steps[2])"
    );
    let big = json!({"kind": "k", "steps": ["echo"], "inputs": {"blob": "x".repeat(100_000)}});
    let message = error_of(
        start(&server, big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    assert_eq!(
        message,
        "the request body is 100050 bytes; this route takes at most 65536 bytes"
    );

    let sagas: Value = server
        .http
        .get(server.url("/v1/sagas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sagas["sagas"], json!([]), "no bad request created a saga");
}

#[tokio::test]
async fn idempotent_start() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_with(&db, |_| {}).await;
    let post = |key: &'static str, body: Value| {
        server
            .http
            .post(server.url("/v1/sagas"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let body = json!({"kind": "provision", "steps": ["echo"], "inputs": {"a": 1, "b": 2}});
    let first = post("order-42", body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    // Same body, keys in another order: the same request.
    let same = post(
        "order-42",
        json!({"inputs": {"b": 2, "a": 1}, "steps": ["echo"], "kind": "provision"}),
    )
    .await
    .unwrap();
    assert_eq!(same.status(), StatusCode::OK);
    assert_eq!(same.json::<Value>().await.unwrap()["id"], first["id"]);
    let other = post(
        "order-42",
        json!({"kind": "provision", "steps": ["echo"], "inputs": {"a": 2}}),
    )
    .await
    .unwrap();
    let message = error_of(other, StatusCode::CONFLICT, "conflict").await;
    assert!(message.contains(first["id"].as_str().unwrap()), "{message}");
    let fresh = post("order-43", body).await.unwrap();
    assert_eq!(fresh.status(), StatusCode::CREATED);
    let list: Value = server
        .http
        .get(server.url("/v1/sagas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["sagas"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn idempotent_start_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let server = server_with(&db, |_| {}).await;
    let body = json!({"kind": "provision", "steps": ["echo"]});
    let mut ids = Vec::new();
    // Ten concurrent retries of one request: one saga.
    let posts = (0..10).map(|_| {
        server
            .http
            .post(server.url("/v1/sagas"))
            .header("Idempotency-Key", "k-1")
            .json(&body)
            .send()
    });
    for r in futures::future::join_all(posts).await {
        let r = r.unwrap();
        assert!(
            r.status() == StatusCode::CREATED || r.status() == StatusCode::OK,
            "{}",
            r.status()
        );
        ids.push(r.json::<Value>().await.unwrap()["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn a_token_guards_every_v1_route_but_not_healthz() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_with(&db, |o| {
        o.server.tokens = Some(wasaga::api::Tokens::admin("s3cret-token").unwrap())
    })
    .await;
    let routes = [
        ("GET", "/v1/plugins"),
        ("POST", "/v1/plugins"),
        ("GET", "/v1/plugins/echo"),
        (
            "DELETE",
            "/v1/plugins/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("GET", "/v1/sagas"),
        ("POST", "/v1/sagas"),
        ("GET", "/v1/sagas/019ac4f2-6b1e-7c3a-9d2e-5f1a2b3c4d5e"),
        (
            "POST",
            "/v1/sagas/019ac4f2-6b1e-7c3a-9d2e-5f1a2b3c4d5e/cancel",
        ),
        ("GET", "/v1/openapi.json"),
    ];
    for (method, path) in routes {
        let method: reqwest::Method = method.parse().unwrap();
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic czNjcmV0LXRva2Vu"),
            Some("Bearer s3cret-token-and-more"),
        ] {
            let mut request = server.http.request(method.clone(), server.url(path));
            if let Some(auth) = auth {
                request = request.header("Authorization", auth);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            error_of(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
    }
    let ok = server
        .http
        .get(server.url("/v1/plugins"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_a_token_only_loopback_is_allowed() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut options = ServeOptions::new(db.dir.path());
    options.database_url = Some(db.url.clone());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = wasaga::server::run(options, listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, wasaga::server::ServeError::NoTokenOnPublicAddress(_)),
        "{err}"
    );
    assert!(
        err.to_string().contains("refusing to listen on 0.0.0.0:"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_with(&db, |_| {}).await;
    let r = server
        .http
        .get(server.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = server
        .http
        .get(server.url("/v2/sagas"))
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = server
        .http
        .put(server.url("/v1/sagas"))
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let health: Value = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
}

/// The OpenAPI document lists exactly the routes the server serves.
#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_with(&db, |_| {}).await;
    let doc: Value = server
        .http
        .get(server.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let mut contract = vec![
        "POST /plugins",
        "GET /plugins",
        "GET /plugins/{ref}",
        "DELETE /plugins/{ref}",
        "POST /sagas",
        "GET /sagas",
        "GET /sagas/{id}",
        "POST /sagas/{id}/cancel",
        "POST /sagas/{id}/pause",
        "POST /sagas/{id}/resume",
        "POST /sagas/{id}/retry",
        "POST /sagas/{id}/redrive",
        "POST /sagas/redrive",
        "GET /resources",
        "POST /resources/scan",
        "GET /events",
        "GET /sagas/{id}/events",
        "GET /sagas/{id}/steps/{index}/output",
        "PUT /templates/{name}",
        "GET /templates",
        "GET /templates/{name}",
        "DELETE /templates/{name}",
        "POST /sagas/{id}/steps/{index}/resolve",
        "PUT /plugins/{ref}/grants",
        "GET /plugins/{ref}/grants",
        "PUT /secrets/{name}",
        "GET /secrets",
        "DELETE /secrets/{name}",
        "POST /webhooks",
        "GET /webhooks",
        "GET /webhooks/{id}",
        "DELETE /webhooks/{id}",
        "POST /webhooks/{id}/rotate",
        "POST /webhooks/{id}/enable",
        "GET /webhooks/{id}/deliveries",
        "POST /webhooks/{id}/deliveries/{delivery}/redeliver",
        "GET /concurrency/{key}",
        "GET /budgets",
        "GET /budgets/{name}",
        "PUT /budgets/{name}",
        "DELETE /budgets/{name}",
        "POST /budgets/{name}/pause",
        "GET /schedules",
        "GET /schedules/{name}",
        "PUT /schedules/{name}",
        "DELETE /schedules/{name}",
        "POST /schedules/{name}/trigger",
        "POST /schedules/{name}/pause",
        "POST /schedules/{name}/resume",
        "POST /sagas/{id}/waits/{name}/complete",
        "POST /sagas/{id}/waits/{name}/reject",
        "POST /callbacks/{token}",
        "POST /messages",
    ];
    contract.sort();
    assert_eq!(
        documented, contract,
        "the document lists the contract's routes"
    );
    // Every documented route is served (a 404 or 405 from the router would
    // come with our fallback's message).
    for route in &documented {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{ref}", "echo")
            .replace(
                "{digest}",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            )
            .replace("{id}", "019ac4f2-6b1e-7c3a-9d2e-5f1a2b3c4d5e")
            .replace("{name}", "some-name")
            .replace("{index}", "0")
            .replace("{key}", "droplet:1");
        let r = server
            .http
            .request(method.parse().unwrap(), server.url(&format!("/v1{path}")))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{route}");
        if r.status() == StatusCode::NOT_FOUND {
            let body: Value = r.json().await.unwrap();
            assert_ne!(
                body["error"]["message"], "no such route in API v1",
                "{route} is not routed"
            );
        }
    }
    for schema in [
        "SagaRun",
        "SagaDetail",
        "StepResult",
        "PluginInfo",
        "ErrorBody",
        "StartSaga",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "schema {schema} missing"
        );
    }
}

/// The document describes the wire: the served document is the library's
/// (which the test client checks every answer against), its enums are
/// spelled as the API spells them, and the check rejects what the document
/// does not allow.
#[tokio::test]
async fn the_openapi_document_is_what_answers_are_checked_against() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_with(&db, |_| {}).await;
    let served: Value = server.get_json("/v1/openapi.json").await;
    let library = serde_json::to_value(wasaga::api::openapi_document()).unwrap();
    assert_eq!(served, library);
    let schemas = &served["components"]["schemas"];
    assert_eq!(
        schemas["SagaStatus"]["enum"],
        json!([
            "pending",
            "running",
            "paused",
            "compensating",
            "completed",
            "rolled_back",
            "failed",
            "in_doubt"
        ])
    );
    assert_eq!(
        schemas["LogLevel"]["enum"],
        json!(["trace", "debug", "info", "warn", "error"])
    );
    assert_eq!(schemas["Phase"]["enum"], json!(["execute", "compensate"]));
    assert_eq!(
        schemas["StepStatus"]["enum"],
        json!([
            "running",
            "waiting",
            "completed",
            "failed",
            "compensating",
            "compensated",
            "compensation_failed"
        ])
    );

    let contract = wasaga_tests::Contract::new(served);
    let get = reqwest::Method::GET;
    let id = "/sagas/019ac4f2-6b1e-7c3a-9d2e-5f1a2b3c4d5e";
    let saga = server
        .http
        .post(server.url("/v1/sagas"))
        .json(&json!({"kind": "k", "steps": ["echo"]}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let mut detail = server
        .get_json(&format!("/v1/sagas/{}", saga["id"].as_str().unwrap()))
        .await;
    let body = |v: &Value| serde_json::to_vec(v).unwrap();
    assert!(
        contract
            .check(&get, id, 200, "application/json", &body(&detail))
            .is_ok()
    );
    detail["status"] = json!("Pending");
    let why = contract
        .check(&get, id, 200, "application/json", &body(&detail))
        .unwrap_err();
    assert!(why.contains("Pending"), "{why}");
    let why = contract
        .check(&get, id, 201, "application/json", &body(&detail))
        .unwrap_err();
    assert!(why.contains("status 201 is not documented"), "{why}");
    let why = contract
        .check(&get, "/sagas", 200, "application/json", b"{\"sagas\": 1}")
        .unwrap_err();
    assert!(why.contains("sagas"), "{why}");
    let why = contract
        .check(&get, id, 404, "application/json", b"{\"error\": \"gone\"}")
        .unwrap_err();
    assert!(why.contains("error"), "{why}");
}
