//! The attacks of issue 34, each against a real server: what a hostile web
//! page, an unauthenticated client, a costly schema, a reflecting provider
//! and a curious operator could do before, and what they get now. Each
//! test failed on the server before its fix; each ends by showing the
//! server carries on.

use crate::console::{browser, chromedriver, login_cookie, until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasaga_tests::{
    Backend, Http, TestDb, TestServer, any_of_chain, component, csrf_of, poll_saga, variant,
};

const WITHIN: Duration = Duration::from_secs(60);

async fn start_echo(http: &Http, server: &TestServer, kind: &str, inputs: Value) -> Value {
    let r = http
        .post(server.url("/v1/sagas"))
        .json(&json!({"kind": kind, "steps": ["echo"], "inputs": inputs}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

async fn saga_count(server: &TestServer, kind: &str) -> usize {
    server.get_json(&format!("/v1/sagas?kind={kind}")).await["sagas"]
        .as_array()
        .unwrap()
        .len()
}

async fn code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    (status, body["error"]["code"].as_str().unwrap_or("").into())
}

/// High 1: a server without tokens answers only its own pages and
/// clients that are not browsers, only for host names that cannot be
/// rebound, and only in the content types its routes take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_less_server_refuses_other_origins_hosts_and_content_types() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::on(&db, |_| {}).await;
    let http = &server.http;
    let start = json!({"kind": "attack", "steps": ["echo"]});
    let body = serde_json::to_vec(&start).unwrap();
    // A page of another origin (another port, `localhost` for 127.0.0.1,
    // a sandboxed frame's `null`), as a "simple" request needing no
    // preflight: refused before anything is parsed.
    for origin in [
        "http://localhost:1",
        "http://127.0.0.1:1",
        "null",
        "https://evil.example",
    ] {
        let r = http
            .post(server.url("/v1/sagas"))
            .header("origin", origin)
            .header("content-type", "text/plain;charset=UTF-8")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(code(r).await, (403, "cross_origin".into()), "{origin}");
    }
    // No Origin, but the browser says it is cross-site.
    let r = http
        .post(server.url("/v1/sagas"))
        .header("sec-fetch-site", "cross-site")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (403, "cross_origin".into()));
    // Uploads too; and a component sent as text.
    let r = http
        .post(server.url("/v1/plugins"))
        .header("origin", "http://localhost:1")
        .body(component("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (403, "cross_origin".into()));
    let r = http
        .post(server.url("/v1/plugins"))
        .header("content-type", "text/plain")
        .body(component("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (415, "unsupported_media_type".into()));
    // A non-JSON content type on a JSON route, from anyone.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = http
            .post(server.url("/v1/sagas"))
            .header("content-type", ct)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            code(r).await,
            (415, "unsupported_media_type".into()),
            "{ct}"
        );
    }
    // DNS rebinding: a name that is not this server's is not answered.
    let r = http
        .get(server.url("/v1/sagas"))
        .header("host", "rebind.attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (421, "misdirected_request".into()));
    assert_eq!(
        saga_count(&server, "attack").await,
        0,
        "nothing was started"
    );

    // Its own page, `localhost`, and clients without Origin still work.
    let port = server.base.rsplit(':').next().unwrap().to_string();
    for (origin, host) in [
        (Some(server.base.clone()), None),
        (
            Some(format!("http://localhost:{port}")),
            Some(format!("localhost:{port}")),
        ),
        (None, None),
    ] {
        let mut r = http.post(server.url("/v1/sagas")).json(&start);
        if let Some(origin) = &origin {
            r = r.header("origin", origin);
        }
        if let Some(host) = &host {
            r = r.header("host", host);
        }
        assert_eq!(
            r.send().await.unwrap().status(),
            StatusCode::CREATED,
            "{origin:?}"
        );
    }
    assert_eq!(saga_count(&server, "attack").await, 3);
    server.stop().await.unwrap();

    // `--allowed-host` adds a name (a server of its own: not a restart on
    // the same database file, which this test is not about).
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::on(&db, |o| {
        o.server.allowed_hosts = vec!["wasaga.internal".into()]
    })
    .await;
    let r = server
        .http
        .get(server.url("/healthz"))
        .header("host", "wasaga.internal:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await.unwrap();
}

/// High 1, the takeover: without tokens, an upload cannot take over a
/// name that has grants (it would inherit its origins and secrets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_less_server_keeps_granted_names() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::on(&db, |_| {}).await;
    let http = &server.http;
    let grants = server.url("/v1/plugins/echo/grants");
    let r = http
        .put(&grants)
        .json(&json!({"http": ["http://127.0.0.1:9"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let impostor = variant(&component("echo"), 7, 0);
    let r = http
        .post(server.url("/v1/plugins"))
        .body(impostor.clone())
        .send()
        .await
        .unwrap();
    let (status, code) = code(r).await;
    assert_eq!((status, code.as_str()), (403, "granted_name"));
    let current = server.get_json("/v1/plugins/echo").await;
    assert_eq!(
        current["digest"],
        wasaga::model::Digest::of(&component("echo")).as_str(),
        "the granted name still means the same code"
    );
    // The operator's way: take the grants off, upload, grant again.
    http.put(&grants).json(&json!({})).send().await.unwrap();
    server.upload_bytes(impostor).await;
    server.stop().await.unwrap();
}

/// Reads an HTTP answer's status line from a raw connection.
async fn status_line(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// High 2: no body is read before the caller is known (and, for an
/// upload, known to be an admin), and a body must arrive in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_read_only_for_known_callers_and_in_time() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::on(&db, |o| {
        o.server.tokens = Some(wasaga_tests::tokens(
            "admin-token",
            "viewer eyes viewer-token\n",
        ));
        o.server.request_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = server.base.trim_start_matches("http://").to_string();
    // 60 MB declared, no token: the 401 comes after the headers, with the
    // body unread.
    for auth in ["", "Authorization: Bearer viewer-token\r\n"] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/plugins HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/wasm\r\nContent-Length: 60000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[0u8; 1024]).await.unwrap();
        let line = status_line(&mut stream).await;
        let want = if auth.is_empty() { "401" } else { "403" };
        assert!(line.contains(want), "{auth:?}: {line}");
    }
    // An admin's body that stops coming: 408 after the deadline.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/sagas HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer admin-token\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let began = Instant::now();
    let line = status_line(&mut stream).await;
    assert!(line.contains("408"), "{line}");
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "not before the deadline"
    );
    let admin = Http::with_token("admin-token");
    let r = admin.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await.unwrap();
}

/// Medium 3: a schema's cost is bounded when it is put, and a start's
/// check runs off the request threads, within a deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_schemas_are_refused_and_checks_are_bounded() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::on(&db, |_| {}).await;
    let http = &server.http;
    let put = |name: &str, schema: Value| {
        http.put(server.url(&format!("/v1/templates/{name}")))
            .json(&json!({"steps": ["echo"], "inputs_schema": schema}))
            .send()
    };
    for (schema, says) in [
        (any_of_chain(24), "too costly"),
        (
            json!({"$defs": {"a": {"items": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"}),
            "recursive",
        ),
        (
            json!({"$ref": "https://example.com/schema.json"}),
            "not local",
        ),
        (json!({"$ref": "#/$defs/missing"}), "points at nothing"),
        (json!({"$dynamicRef": "#meta"}), "$dynamicRef"),
        (
            (0..40).fold(
                json!({"type": "string"}),
                |inner, _| json!({"items": inner}),
            ),
            "nests deeper",
        ),
    ] {
        let r = put("costly", schema).await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {message}");
    }
    assert_eq!(
        server.get_json("/v1/templates").await["templates"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing stored"
    );
    // The largest chain that passes is cheap to check, and a backtracking
    // pattern stops at its step limit.
    let r = put("chain", any_of_chain(7)).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let began = Instant::now();
    let r = http
        .post(server.url("/v1/sagas"))
        .json(&json!({"template": "chain", "inputs": {"x": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await.0, 422);
    eprintln!("a start against a 7-link chain: {:?}", began.elapsed());
    let r = put(
        "regex",
        json!({"properties": {"x": {"pattern": "^(a+)+$"}}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let evil = format!("{}!", "a".repeat(5000));
    let r = http
        .post(server.url("/v1/sagas"))
        .json(&json!({"template": "regex", "inputs": {"x": evil}}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let r = http
        .post(server.url("/v1/sagas"))
        .json(&json!({"template": "regex", "inputs": {"x": "aaaa"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "the schema still works");
    assert!(wasaga_tests::healthy(http, &server.base).await);
    server.stop().await.unwrap();
}

/// Medium 4: what a step leaves behind is redacted of every secret, not
/// only its own plugin's, in the encodings an echo gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_secret_is_redacted_in_its_encodings() {
    use base64::Engine as _;
    let db = TestDb::new(Backend::Sqlite).await;
    let key = wasaga_tests::secrets_key_file(db.dir.path());
    let server = TestServer::on(&db, |o| o.secrets_key_file = Some(key)).await;
    let http = &server.http;
    let value = "k9/Xq+Zt/7pLw2==";
    let r = http
        .put(server.url("/v1/secrets/do-token"))
        .json(&json!({"value": value, "origins": ["https://api.example.com"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let pin = "48151623421";
    http.put(server.url("/v1/secrets/pin"))
        .json(&json!({"value": pin, "origins": ["https://api.example.com"]}))
        .send()
        .await
        .unwrap();
    // `echo` is granted nothing: the secrets reach it only as an echo of
    // what a provider might reflect.
    let b64 = base64::engine::general_purpose::STANDARD;
    for echo in [
        b64.encode(format!("bearer:{value}")),
        "k9\\/Xq+Zt\\/7pLw2==".to_string(),
        value.to_lowercase(),
        url_encoded(value),
    ] {
        let saga = start_echo(http, &server, "redact", json!({"message": echo})).await;
        let id = saga["id"].as_str().unwrap();
        let done = poll_saga(http, &server.base, id, WITHIN, |s| {
            s["status"] == "completed"
        })
        .await;
        let stored = done["context"].to_string() + &done["steps"].to_string();
        assert!(stored.contains("[secret:do-token]"), "{echo}: {stored}");
        assert!(!stored.contains(&echo), "{echo}: {stored}");
    }
    server.stop().await.unwrap();
}

fn url_encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Medium 7 and low 8 to 11: sessions are server-side and revocable, the
/// CSRF token is bound to one, logins come only from this server's page,
/// pages show what the API would, the console cannot be framed, who
/// started a saga is the token's label, and guessing is throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_pages_and_logins() {
    let db = TestDb::new(Backend::Postgres).await;
    let server = TestServer::on(&db, |o| {
        o.server.tokens = Some(wasaga_tests::tokens(
            "admin-token",
            "# comments at the start of a line only\nviewer eyes viewer#token-with-hash\noperator ops ops-token\n",
        ));
        o.server.auth_failures_per_minute = 5;
    })
    .await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // A `#` inside a token is the token's.
    let viewer = login_cookie(&server.base, "viewer#token-with-hash").await;
    let cookie_value = viewer.split_once('=').unwrap().1;
    assert!(
        !cookie_value.contains("token"),
        "the cookie is not the token: {viewer}"
    );
    // Login CSRF: a form posted by another site's page is refused.
    let r = plain
        .post(server.url("/ui/login"))
        .header("origin", "https://evil.example")
        .form(&[("token", "ops-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none());

    // Pages: the secrets page is for admins, as GET /v1/secrets is; every
    // answer forbids framing.
    let r = plain
        .get(server.url("/ui/secrets"))
        .header("cookie", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let headers = r.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    let page = plain
        .get(server.url("/ui/"))
        .header("cookie", &viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("/ui/secrets"),
        "no link to a page the viewer may not see"
    );

    // Who started it: the token's label, whatever the request says.
    let ops = Http::with_token("ops-token");
    let r = ops
        .post(server.url("/v1/sagas"))
        .json(&json!({"kind": "who", "steps": ["echo"], "triggered_by": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let saga: Value = r.json().await.unwrap();
    assert_eq!(saga["triggered_by"], "admin");
    assert_eq!(saga["actions"][0]["action"], "start");
    assert_eq!(saga["actions"][0]["actor"], "ops");
    let id = saga["id"].as_str().unwrap().to_string();
    let page = plain
        .get(server.url(&format!("/ui/sagas/{id}")))
        .header("cookie", &viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<strong>ops</strong> (for admin, as the request said)"),
        "{page}"
    );

    // The CSRF token is bound to one session: a second login has another,
    // and after logout neither the cookie nor its token works.
    let first = login_cookie(&server.base, "ops-token").await;
    let second = login_cookie(&server.base, "ops-token").await;
    let page_of = |cookie: String| {
        let (plain, url) = (plain.clone(), server.url("/ui/"));
        async move {
            plain
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let (csrf1, csrf2) = (
        csrf_of(&page_of(first.clone()).await),
        csrf_of(&page_of(second.clone()).await),
    );
    assert_ne!(csrf1, csrf2);
    let pause = server.url(&format!("/v1/sagas/{id}/pause"));
    let r = plain
        .post(&pause)
        .header("cookie", &second)
        .header("x-csrf-token", &csrf1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (403, "csrf".into()),
        "another session's token"
    );
    // A cookie-authenticated change from another origin, even with the
    // right token, is refused.
    let r = plain
        .post(&pause)
        .header("cookie", &first)
        .header("x-csrf-token", &csrf1)
        .header("origin", "http://localhost:1")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (403, "cross_origin".into()));
    let r = plain
        .post(server.url("/ui/logout"))
        .header("cookie", &first)
        .form(&[("csrf", csrf1.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = plain
        .post(&pause)
        .header("cookie", &first)
        .header("x-csrf-token", &csrf1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (401, "unauthorized".into()),
        "revoked at logout"
    );
    let r = plain
        .get(server.url("/ui/"))
        .header("cookie", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "back to the login page");
    // The other session lives on.
    let r = plain
        .get(server.url("/v1/sagas"))
        .header("cookie", &second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Guessing tokens: past 5 failures a minute, the address waits.
    let guesser = Http::with_token("guess");
    for _ in 0..5 {
        let r = guesser.get(server.url("/v1/sagas")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = guesser.get(server.url("/v1/sagas")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    let r = plain
        .post(server.url("/ui/login"))
        .form(&[("token", "admin-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "logins too");
    server.stop().await.unwrap();
}

/// Low 12: a saga's kind cannot add series to `/metrics` or grow it
/// without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_kinds_cannot_write_metrics() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::on(&db, |_| {}).await;
    let http = &server.http;
    let injected = "x\"} 1\nwasaga_sagas_in_flight 424242\n# EOF";
    let saga = start_echo(http, &server, injected, json!({})).await;
    poll_saga(
        http,
        &server.base,
        saga["id"].as_str().unwrap(),
        WITHIN,
        |s| s["status"] == "completed",
    )
    .await;
    for i in 0..(wasaga::metrics::MAX_KIND_LABELS + 5) {
        start_echo(http, &server, &format!("kind-{i}"), json!({})).await;
    }
    let text = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("wasaga_sagas_in_flight 424242")),
        "no injected series"
    );
    let lines: Vec<String> = text.lines().map(String::from).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).unwrap();
    let kinds: std::collections::BTreeSet<String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "wasaga_sagas_started_total")
        .filter_map(|s| s.labels.get("kind").map(String::from))
        .collect();
    assert!(
        kinds.len() <= wasaga::metrics::MAX_KIND_LABELS + 1,
        "{}",
        kinds.len()
    );
    assert!(kinds.contains("other"), "{kinds:?}");
    server.stop().await.unwrap();
}

/// High 1 as it was reproduced: a page served from another origin, in
/// Chromium, tries to start a saga and upload a component on a server
/// without tokens. Nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_page_in_chromium_cannot_drive_the_server() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::on(&db, |_| {}).await;
    let target = server.base.clone();
    let page = format!(
        r#"<!doctype html><title>cute cats</title><script>
        const results = [];
        async function attack() {{
          const tries = [
            ["start, text/plain", () => fetch("{target}/v1/sagas", {{method: "POST", body: JSON.stringify({{kind: "attack", steps: ["echo"]}})}})],
            ["start, no type", () => fetch("{target}/v1/sagas", {{method: "POST", body: new Blob([JSON.stringify({{kind: "attack", steps: ["echo"]}})])}})],
            ["upload", () => fetch("{target}/v1/plugins", {{method: "POST", body: new Uint8Array([0, 97, 115, 109])}})],
            ["form", () => {{ const f = document.createElement("form"); f.method = "POST"; f.action = "{target}/v1/sagas"; f.enctype = "text/plain";
               const i = document.createElement("input"); i.name = '{{"kind": "attack", "steps": ["echo"], "x": "'; i.value = '"}}'; f.appendChild(i);
               const frame = document.createElement("iframe"); frame.name = "sink"; document.body.appendChild(frame); f.target = "sink";
               document.body.appendChild(f); f.submit(); return Promise.resolve("sent"); }}],
          ];
          for (const [name, go] of tries) {{
            try {{ await go(); results.push(name + ": sent"); }} catch (e) {{ results.push(name + ": " + e); }}
          }}
          document.title = "done";
        }}
        attack();
        </script>"#
    );
    // The attacker's server: `localhost`, another origin (and site) than
    // `127.0.0.1`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let driver = chromedriver().await;
    let b = browser(&driver).await;
    b.goto(&format!("http://localhost:{port}/")).await.unwrap();
    until(&b, "the attack ran", "document.title === 'done'").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.close().await.unwrap();
    assert_eq!(
        saga_count(&server, "attack").await,
        0,
        "no saga was started"
    );
    assert_eq!(
        server.get_json("/v1/plugins").await["plugins"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "nothing was uploaded"
    );
    server.stop().await.unwrap();
}

/// Medium 6: a small request cannot make a saga store without end, and a
/// read never holds every large output at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_stores_within_its_budget_and_reads_leave_large_outputs_out() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::on(&db, |o| {
        o.runner.max_saga_stored_bytes = 1 << 20;
        o.server.shown_output_bytes = 16 * 1024;
    })
    .await;
    let http = &server.http;
    let message = "m".repeat(100 * 1024);
    let r = http
        .post(server.url("/v1/sagas"))
        .json(
            &json!({"kind": "amplify", "steps": vec!["echo"; 20], "inputs": {"message": message}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = poll_saga(http, &server.base, &id, WITHIN, |s| {
        s["status"] == "rolled_back" || s["status"] == "completed"
    })
    .await;
    assert_eq!(done["status"], "rolled_back", "the budget stops it");
    let failed = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "failed")
        .expect("a failed step");
    let why = failed["error"].as_str().unwrap();
    assert!(why.contains("--max-saga-stored"), "{why}");
    let index = failed["index"].as_u64().unwrap();
    assert!((5..12).contains(&index), "stopped near 1 MiB: step {index}");
    // Each 100 KiB output is left out of the read, with its size and route.
    let first = &done["steps"][0];
    assert!(first["output"].is_null(), "{first}");
    assert!(first["output_omitted"].as_u64().unwrap() > 100 * 1024);
    let whole: Value = http
        .get(server.url(&format!("/v1/sagas/{id}/steps/0/output")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        whole["echoed_at_step_0"].as_str().unwrap().len(),
        100 * 1024
    );
    let r = http
        .get(server.url(&format!("/v1/sagas/{id}/steps/19/output")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The host carries on.
    let saga = start_echo(http, &server, "after", json!({"message": "hi"})).await;
    poll_saga(
        http,
        &server.base,
        saga["id"].as_str().unwrap(),
        WITHIN,
        |s| s["status"] == "completed",
    )
    .await;
    server.stop().await.unwrap();
}
