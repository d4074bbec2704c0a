//! The operator console and what feeds it: live events (SSE) in order, on
//! one host and across two PostgreSQL hosts; `/metrics` moving as sagas
//! run and parsing as Prometheus text; and the web console driven in a
//! real headless Chromium (chromedriver): log in, watch a saga complete
//! live, read a rolled-back saga's timeline, cancel with the button, upload
//! a plugin, and the refusals (a viewer, a stale CSRF token, a 404 page).
//! Screenshots go to `$WASAGA_SCREENSHOTS_DIR` (default
//! `$CARGO_TARGET_DIR/console-screenshots`).

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wasaga::cli::{Client, EventStream};
use wasaga_tests::{Backend, Counter, TestDb, TestServer, component, on_both, poll_saga};

const WITHIN: Duration = Duration::from_secs(60);

/// The events of a stream until it ends (or `within` passes).
async fn drain(mut events: EventStream, within: Duration) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(within, async {
        while let Some((name, data)) = events.next().await {
            seen.push((name, serde_json::from_str(&data).unwrap_or(Value::Null)));
        }
    })
    .await;
    seen
}

async fn start(server: &TestServer, steps: Value, inputs: Value) -> String {
    let r = server
        .http
        .post(server.url("/v1/sagas"))
        .json(&json!({"kind": "console", "steps": steps, "inputs": inputs}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `(event, what)` pairs: a step event as `step N STATUS`, a saga event as
/// its status.
fn story(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(name, data)| match name.as_str() {
            "step" => format!(
                "step {} {}",
                data["index"],
                data["status"].as_str().unwrap()
            ),
            "saga" | "snapshot" => format!("{name} {}", data["status"].as_str().unwrap()),
            other => other.to_string(),
        })
        .collect()
}

on_both! {
    a_sagas_events_come_in_order(backend) {
        let counter = Counter::start().await;
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        counter.grant_on(&server.http, &server.base).await;
        server.upload("counter").await;
        server.upload("fail").await;
        let client = Client::new(&server.base, None);
        // Each call waits for a go-ahead, so the stream is open before
        // anything happens.
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        {
            let gate = gate.clone();
            counter.on_call(move |_| {
                let gate = gate.clone();
                async move { gate.acquire().await.unwrap().forget() }
            });
        }
        let inputs = json!({"counter_url": counter.url()});
        let id = start(&server, json!(["counter", "counter", "counter"]), inputs.clone()).await;
        let events = client.saga_events(&id).await.unwrap();
        gate.add_permits(100);
        let seen = drain(events, WITHIN).await;
        assert_eq!(story(&seen), vec![
            "snapshot running",
            "step 0 completed", "step 1 running", "step 1 completed", "step 2 running", "step 2 completed",
            "saga completed",
        ], "{seen:?}");
        assert_eq!(seen[0].1["steps"][0]["status"], "running", "the snapshot has the ledger");
        let ids: Vec<u64> = seen.iter().skip(1).map(|(_, d)| d["index"].as_u64().unwrap_or(0)).collect();
        assert_eq!(ids.len(), 6);

        // A rolled-back saga: the failure, then compensation in reverse.
        gate.forget_permits(gate.available_permits());
        let all = client.events(&[("kind", "console".into())]).await.unwrap();
        let id = start(&server, json!(["counter", "counter", "fail"]), inputs).await;
        let events = client.saga_events(&id).await.unwrap();
        gate.add_permits(100);
        let seen = drain(events, WITHIN).await;
        // `/v1/events` carries every change of the saga's status, each as
        // the summary a list shows (no plan, inputs or context), while
        // the saga's own stream carries the saga without its ledger.
        let global: Vec<Value> = drain(all, Duration::from_secs(2)).await.into_iter()
            .filter(|(n, d)| n == "saga" && d["id"] == id.as_str()).map(|(_, d)| d).collect();
        // (The saga's own stream opened after the start: its snapshot
        // stands for the first change.)
        let own: Vec<&Value> = seen.iter().filter(|(n, _)| n == "saga" || n == "snapshot").map(|(_, d)| d).collect();
        let statuses = |v: &mut dyn Iterator<Item = &Value>| v.map(|d| d["status"].clone()).collect::<Vec<_>>();
        assert_eq!(statuses(&mut global.iter()), statuses(&mut own.iter().copied()), "{global:?}");
        assert_eq!(global.last().unwrap()["status"], "rolled_back");
        for summary in &global {
            assert_eq!(summary["steps_total"], 3, "{summary}");
            assert!(summary.get("plan").is_none() && summary.get("inputs").is_none() && summary.get("context").is_none(), "{summary}");
        }
        assert!(own.iter().all(|d| d["plan"].is_array()), "a saga's stream has the whole saga");
        let story = story(&seen);
        let tail: Vec<&str> = story.iter().skip_while(|e| *e != "step 2 failed").map(String::as_str).collect();
        assert_eq!(tail, vec![
            "step 2 failed", "saga compensating",
            "step 1 compensating", "step 1 compensated", "step 0 compensating", "step 0 compensated",
            "saga rolled_back",
        ], "{story:?}");

        // An ended saga: the snapshot, and the end at once.
        let seen = drain(client.saga_events(&id).await.unwrap(), Duration::from_secs(10)).await;
        assert_eq!(story_of(&seen), vec!["snapshot rolled_back"]);
        // No such saga: a 404 before any stream.
        let r = server.http.get(server.url("/v1/sagas/0190a0b0-0000-7000-8000-000000000000/events")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = server.http.get(server.url("/v1/events?status=nope")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        server.stop().await.unwrap();
    }

    metrics_move_as_sagas_run(backend) {
        let db = TestDb::new(backend).await;
        let server = TestServer::on(&db, |_| {}).await;
        let value = |text: &str, name: &str, labels: &[(&str, &str)]| -> f64 {
            let lines = text.lines().map(|l| Ok(l.to_string()));
            let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
            scrape.samples.iter()
                .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                    prometheus_parse::Value::Histogram(ref h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
                    _ => 0.0,
                })
                .sum()
        };
        let scrape = || async { server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap() };
        let kind = format!("metrics-{backend:?}");
        let counter = Counter::start().await;
        counter.grant_on(&server.http, &server.base).await;
        server.upload("counter").await;
        let before = scrape().await;
        // A saga that completes, one that rolls back, and one whose step
        // calls out over HTTP and is retried once.
        let retried = json!({"counter_url": counter.url(), "counter_retry_until": {"0": 2}});
        for (steps, inputs) in [
            (json!(["echo", "echo"]), json!({})),
            (json!(["echo", "fail"]), json!({})),
            (json!(["counter"]), retried),
        ] {
            let r = server.http.post(server.url("/v1/sagas")).json(&json!({"kind": kind, "steps": steps, "inputs": inputs})).send().await.unwrap();
            let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
            poll_saga(&server.http, &server.base, &id, WITHIN, |s| {
                s["status"] == "completed" || s["status"] == "rolled_back"
            }).await;
        }
        let after = scrape().await;
        let k = kind.as_str();
        assert_eq!(value(&after, "wasaga_sagas_started_total", &[("kind", k)]), 3.0, "{after}");
        assert_eq!(value(&after, "wasaga_sagas_finished_total", &[("kind", k), ("status", "completed")]), 2.0);
        let retries = |text: &str| value(text, "wasaga_step_retries_total", &[("plugin", "counter")]);
        assert!(retries(&after) >= retries(&before) + 1.0, "{after}");
        let http_ok = |text: &str| value(text, "wasaga_http_requests_total", &[("plugin", "counter"), ("outcome", "2xx")]);
        assert!(http_ok(&after) >= http_ok(&before) + 2.0, "{after}");
        assert_eq!(value(&after, "wasaga_sagas_finished_total", &[("kind", k), ("status", "rolled_back")]), 1.0);
        let calls = |text: &str, outcome: &str, phase: &str, plugin: &str| {
            value(text, "wasaga_step_calls_total", &[("plugin", plugin), ("phase", phase), ("outcome", outcome)])
        };
        assert!(calls(&after, "ok", "execute", "echo") >= calls(&before, "ok", "execute", "echo") + 3.0);
        assert!(calls(&after, "fatal", "execute", "fail") >= calls(&before, "fatal", "execute", "fail") + 1.0);
        assert!(calls(&after, "ok", "compensate", "echo") >= calls(&before, "ok", "compensate", "echo") + 1.0);
        for series in [
            "wasaga_sagas_in_flight", "wasaga_sagas_pending", "wasaga_step_call_duration_seconds_bucket",
            "wasaga_store_commit_duration_seconds_bucket", "wasaga_lease_takeovers_total",
        ] {
            assert!(after.contains(series), "{series} missing:\n{after}");
        }
        // The sample Grafana dashboard asks only for series this serves
        // (every family has samples by now: a family without any is not
        // listed).
        let dashboard = std::fs::read_to_string(wasaga_tests::repo().join("deploy/grafana/wasaga.json")).unwrap();
        let declared: Vec<&str> = after.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
        let mut asked: Vec<&str> = dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("wasaga_")).collect();
        asked.sort();
        asked.dedup();
        assert!(asked.len() >= 8, "{asked:?}");
        for name in asked {
            let family = ["_bucket", "_total"].iter().fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
            assert!(declared.contains(&family), "the dashboard asks for {name}, which /metrics does not serve");
        }
        server.stop().await.unwrap();
    }
}

fn story_of(events: &[(String, Value)]) -> Vec<String> {
    story(events)
}

/// On PostgreSQL a saga's events reach every host: a saga driven by one
/// host is followed, live, from another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_host_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let a = TestServer::on(&db, |_| {}).await;
    let b = TestServer::on(&db, |o| o.runner.concurrency = 1).await;
    let counter = Counter::start().await;
    counter.grant_on(&a.http, &a.base).await;
    a.upload("counter").await;
    counter.set_delay(Duration::from_millis(150));
    // Started on A, which drives it (it has a free slot when it stores it).
    let id = start(
        &a,
        json!(["counter", "counter"]),
        json!({"counter_url": counter.url()}),
    )
    .await;
    let on_b = Client::new(&b.base, None);
    let all_b = on_b.events(&[("kind", "console".into())]).await.unwrap();
    let seen = drain(on_b.saga_events(&id).await.unwrap(), WITHIN).await;
    let story = story(&seen);
    assert_eq!(
        story.last().map(String::as_str),
        Some("saga completed"),
        "{story:?}"
    );
    assert!(story.iter().any(|e| e == "step 1 completed"), "{story:?}");
    let executed_by =
        seen.iter().rev().find(|(n, _)| n == "step").unwrap().1["executed_by"].clone();
    let a_owner = a.get_json(&format!("/v1/sagas/{id}")).await["steps"][0]["executed_by"].clone();
    assert_eq!(executed_by, a_owner);
    let global = drain(all_b, Duration::from_secs(2)).await;
    assert!(
        global
            .iter()
            .any(|(n, d)| n == "saga" && d["id"] == id.as_str() && d["status"] == "completed"),
        "{global:?}"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

// ---- the console in a real browser

/// A chromedriver on a free port, stopped when dropped.
pub(crate) struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Driver { child, port }
}

pub(crate) async fn browser(driver: &Driver) -> Browser {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// Waits until `script` (a JS expression) is truthy in the page.
pub(crate) async fn until(b: &Browser, what: &str, script: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let v = b
            .execute(&format!("return !!({script});"), vec![])
            .await
            .unwrap();
        if v == json!(true) {
            return;
        }
        if Instant::now() > deadline {
            let source = b.source().await.unwrap_or_default();
            panic!(
                "{what}: `{script}` never held; page:\n{}",
                source.chars().take(4000).collect::<String>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn screenshots_dir() -> std::path::PathBuf {
    std::env::var_os("WASAGA_SCREENSHOTS_DIR")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(
                std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
            )
            .join("console-screenshots")
        })
}

/// The text of what `css` finds, read in one step (the live page may
/// replace elements between a find and a read).
pub(crate) async fn text(b: &Browser, css: &str) -> String {
    let css = serde_json::to_string(css).unwrap();
    let v = b
        .execute(
            &format!("const e = document.querySelector({css}); return e ? e.innerText : null;"),
            vec![],
        )
        .await
        .unwrap();
    v.as_str()
        .unwrap_or_else(|| panic!("nothing matches {css}"))
        .to_string()
}

/// Clicks what `css` finds, finding it again when the live page replaced
/// it in between.
async fn click(b: &Browser, css: &str) {
    for _ in 0..20 {
        let found = b.find(Locator::Css(css)).await.unwrap();
        match found.click().await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
    panic!("{css} kept being replaced");
}

pub(crate) async fn screenshot(b: &Browser, name: &str) {
    let dir = screenshots_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let png = b.screenshot().await.unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// Logs in with `token` by the form, as a client that is not a browser;
/// answers the `Cookie` header value of the session.
pub(crate) async fn login_cookie(base: &str, token: &str) -> String {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{base}/ui/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "a login redirects");
    let set = r
        .headers()
        .get("set-cookie")
        .expect("a login sets the session cookie")
        .to_str()
        .unwrap()
        .to_string();
    set.split(';').next().unwrap().to_string()
}

pub(crate) async fn log_in(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/ui/")).await.unwrap();
    until(
        b,
        "the login form",
        "document.querySelector('input[name=token]')",
    )
    .await;
    b.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    b.find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(b, "the sagas page", "document.getElementById('saga-rows')").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::on(&db, |o| {
        o.server.tokens = Some(wasaga_tests::tokens(
            "admin-secret-token",
            "viewer watcher viewer-secret-token\n",
        ));
    })
    .await;
    let admin = wasaga_tests::Http::with_token("admin-secret-token");
    let counter = Counter::start().await;
    counter.grant_on(&admin, &server.base).await;
    for name in ["counter", "echo", "fail"] {
        let r = admin
            .post(server.url("/v1/plugins"))
            .body(component(name))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let start_as_admin = |steps: Value, inputs: Value| {
        let (admin, url) = (admin.clone(), server.url("/v1/sagas"));
        async move {
            let r = admin
                .post(url)
                .json(&json!({"kind": "console", "steps": steps, "inputs": inputs}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let driver = chromedriver().await;
    let b = browser(&driver).await;

    // Log in; a wrong token first.
    b.goto(&format!("{}/ui/", server.base)).await.unwrap();
    until(
        &b,
        "redirected to log in",
        "location.pathname === '/ui/login'",
    )
    .await;
    b.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys("wrong")
        .await
        .unwrap();
    b.find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &b,
        "the refusal",
        "document.body.innerText.includes('That token is not valid.')",
    )
    .await;
    log_in(&b, &server.base, "admin-secret-token").await;
    let cookie = b.get_named_cookie("wasaga_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert!(
        !b.current_url().await.unwrap().as_str().contains("secret"),
        "no token in a URL"
    );

    // A saga seen live: each step takes a while; its page updates itself.
    counter.set_delay(Duration::from_millis(400));
    let id = start_as_admin(
        json!(["counter", "counter", "counter"]),
        json!({"counter_url": counter.url()}),
    )
    .await;
    b.goto(&format!("{}/ui/sagas/{id}", server.base))
        .await
        .unwrap();
    b.execute("window.notReloaded = true;", vec![])
        .await
        .unwrap();
    until(
        &b,
        "step 0 completed live",
        "document.querySelector('#ledger tr[data-step=\"0\"][data-status=completed]')",
    )
    .await;
    until(
        &b,
        "the saga completed live",
        "document.querySelector('#saga-status[data-status=completed]')",
    )
    .await;
    until(
        &b,
        "no reload",
        "window.notReloaded === true && Number(document.body.dataset.updates) > 0",
    )
    .await;
    let bars = b
        .find_all(Locator::Css("#timeline rect.bar.execute.ok"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 3);
    counter.set_delay(Duration::ZERO);

    // A rolled-back saga: the failed step's error, and compensations on the timeline.
    let rolled = start_as_admin(json!(["echo", "echo", "fail"]), json!({})).await;
    poll_saga(&admin, &server.base, &rolled, WITHIN, |s| {
        s["status"] == "rolled_back"
    })
    .await;
    b.goto(&format!("{}/ui/sagas/{rolled}", server.base))
        .await
        .unwrap();
    let error = text(&b, "#saga-error").await;
    assert!(error.contains("step 2 (fail) failed"), "{error}");
    let failed_row = text(&b, "#ledger tr[data-step=\"2\"]").await;
    assert!(failed_row.contains("step_failed:fail"), "{failed_row}");
    assert_eq!(
        b.find_all(Locator::Css("#timeline rect.bar.compensate.ok"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        b.find_all(Locator::Css("#timeline rect.bar.execute.fatal"))
            .await
            .unwrap()
            .len(),
        1
    );
    screenshot(&b, "saga-rolled-back.png").await;

    // Cancel a running saga with the button.
    counter.set_delay(Duration::from_secs(2));
    let running = start_as_admin(
        json!(["counter", "counter", "counter"]),
        json!({"counter_url": counter.url()}),
    )
    .await;
    b.goto(&format!("{}/ui/sagas/{running}", server.base))
        .await
        .unwrap();
    screenshot(&b, "saga-running.png").await;
    // The page swaps its live part as the saga moves: find the button
    // again if it was replaced between finding and clicking it.
    click(&b, "button[data-post$=\"/cancel\"]").await;
    b.accept_alert().await.unwrap();
    until(
        &b,
        "cancelled live",
        "document.querySelector('#saga-status[data-status=rolled_back]')",
    )
    .await;
    counter.set_delay(Duration::ZERO);

    // The list, filtered.
    b.goto(&format!("{}/ui/?status=rolled_back", server.base))
        .await
        .unwrap();
    let rows = b
        .find_all(Locator::Css("#saga-rows tr[data-id]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    b.goto(&format!("{}/ui/", server.base)).await.unwrap();
    screenshot(&b, "sagas.png").await;

    // Upload a plugin by choosing a file.
    b.goto(&format!("{}/ui/plugins", server.base))
        .await
        .unwrap();
    let file = wasaga_tests::repo().join("plugins/dist/ledger.wasm");
    b.find(Locator::Css("#upload-file"))
        .await
        .unwrap()
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    until(
        &b,
        "the uploaded plugin listed",
        "document.querySelector('#plugin-rows tr[data-name=ledger]')",
    )
    .await;
    until(
        &b,
        "a message",
        "document.getElementById('flash').innerText.includes('uploaded ledger')",
    )
    .await;

    // A saga id that does not exist: a 404 page, not a blank one.
    b.goto(&format!(
        "{}/ui/sagas/0190a0b0-0000-7000-8000-000000000000",
        server.base
    ))
    .await
    .unwrap();
    let main = text(&b, "main").await;
    assert!(main.contains("No such saga"), "{main}");

    // A viewer: no buttons, and the POST itself is refused.
    b.find(Locator::Css("form[action=\"/ui/logout\"] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&b, "logged out", "location.pathname === '/ui/login'").await;
    let paused = start_as_admin(
        json!(["counter", "counter"]),
        json!({"counter_url": counter.url()}),
    )
    .await;
    log_in(&b, &server.base, "viewer-secret-token").await;
    b.goto(&format!("{}/ui/sagas/{paused}", server.base))
        .await
        .unwrap();
    assert!(
        b.find_all(Locator::Css("button[data-post]"))
            .await
            .unwrap()
            .is_empty(),
        "a viewer sees no action"
    );
    b.close().await.unwrap();

    let viewer_cookie = login_cookie(&server.base, "viewer-secret-token").await;
    let admin_cookie = login_cookie(&server.base, "admin-secret-token").await;
    let page = reqwest::Client::new()
        .get(server.url(&format!("/ui/sagas/{paused}")))
        .header("cookie", &viewer_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = wasaga_tests::csrf_of(&page);
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v1/sagas/{paused}/cancel")))
        .header("cookie", &viewer_cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a viewer cannot cancel");
    // A stale (or missing) CSRF token is refused with a message, even for an admin.
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v1/sagas/{paused}/cancel")))
        .header("cookie", &admin_cookie)
        .header("x-csrf-token", "0123456789abcdef0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reload the page"),
        "{body}"
    );
    let unchanged: Value = admin
        .get(server.url(&format!("/v1/sagas/{paused}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !unchanged["cancel_requested"].as_bool().unwrap(),
        "nothing was cancelled"
    );
    server.stop().await.unwrap();
}
