//! The `wasaga` command line against a live server: uploads, starting with
//! `--wait` (and its exit codes), list, show, cancel, watch, templates,
//! resources, JSON output, tokens, and errors that print the server's
//! message rather than a backtrace.

use serde_json::Value;
use std::process::Output;
use std::time::Duration;
use wasaga::server::ServeOptions;
use wasaga_tests::{Backend, TestDb, TestServer, repo};

fn wasaga_binary() -> &'static str {
    env!("CARGO_BIN_EXE_wasaga")
}

async fn server(db: &TestDb, token: Option<&str>) -> TestServer {
    let mut options = ServeOptions::new(db.dir.path());
    options.database_url = Some(db.url.clone());
    options.runtime.max_instances = 16;
    options.runner.poll_every = Duration::from_millis(50);
    options.server.tokens = token.map(|t| wasaga::api::Tokens::admin(t).unwrap());
    TestServer::start(options).await
}

/// Runs `wasaga ARGS --server BASE` off the async threads.
async fn wasaga(server: &TestServer, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(wasaga_binary());
    command
        .args(args)
        .env("WASAGA_SERVER", &server.base)
        .env_remove("WASAGA_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    tokio::task::spawn_blocking(move || command.output().expect("running wasaga"))
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn dist(name: &str) -> String {
    repo()
        .join("plugins/dist")
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_works_from_the_command_line() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server(&db, None).await;

    let out = wasaga(&server, &["plugin", "push", &dist("stubborn")], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("uploaded: stubborn sha256:"),
        "{}",
        stdout(&out)
    );
    let out = wasaga(&server, &["plugin", "push", &dist("stubborn")], &[]).await;
    assert!(
        stdout(&out).starts_with("already there: stubborn"),
        "{}",
        stdout(&out)
    );
    wasaga(&server, &["plugin", "push", &dist("spin")], &[]).await;

    let out = wasaga(&server, &["plugin", "list"], &[]).await;
    let listed = stdout(&out);
    for name in ["echo", "fail", "stubborn", "spin"] {
        assert!(listed.contains(name), "{listed}");
    }
    let out = wasaga(&server, &["plugin", "show", "echo", "--json"], &[]).await;
    let shown: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["name"], "echo");

    // --wait follows the saga and exits by its outcome.
    let out = wasaga(
        &server,
        &[
            "saga",
            "start",
            "--kind",
            "provision",
            "--step",
            "echo",
            "--step",
            "echo",
            "--inputs",
            r#"{"message":"hi"}"#,
            "--wait",
        ],
        &[],
    )
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("step 1 echo completed (attempt 1)"), "{text}");
    assert!(
        text.contains(r#"completed: context {"echoed_at_step_0":"hi","echoed_at_step_1":"hi"}"#),
        "{text}"
    );

    let out = wasaga(
        &server,
        &[
            "saga", "start", "--kind", "k", "--step", "echo", "--step", "fail", "--wait",
        ],
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "rolled back exits 3: {}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(
            "rolled_back: step 1 (fail) failed: step_failed:fail; compensating from step 0"
        ),
        "{}",
        stdout(&out)
    );

    let out = wasaga(
        &server,
        &[
            "saga",
            "start",
            "--kind",
            "k",
            "--step",
            "stubborn",
            "--step",
            "fail",
            "--max-attempts",
            "2",
            "--wait",
        ],
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "failed exits 4: {}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("needs a human"), "{}", stdout(&out));
    // The human cleans up and says so; the saga then ends rolled back.
    let text = stdout(&out);
    let failed_id = text
        .split_whitespace()
        .nth(2)
        .expect("started saga ID ...")
        .to_string();
    let out = wasaga(
        &server,
        &[
            "saga",
            "resolve",
            &failed_id,
            "--step",
            "0",
            "--note",
            "deleted by hand",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("resolved step 0 of saga {failed_id} (status rolled_back)")
    );
    let out = wasaga(
        &server,
        &["saga", "resolve", &failed_id, "--step", "0"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: saga {failed_id} is rolled_back; only a failed or in_doubt saga's steps can be resolved (409 Conflict, conflict)"
        )
    );

    // start, watch from another command, cancel.
    let out = wasaga(
        &server,
        &[
            "saga",
            "start",
            "--kind",
            "suspend",
            "--step",
            "echo",
            "--step",
            "spin",
            "--timeout",
            "60s",
            "--json",
        ],
        &[],
    )
    .await;
    let started: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    let watcher = {
        let base = server.base.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(wasaga_binary())
                .args(["saga", "watch", &id])
                .env("WASAGA_SERVER", base)
                .output()
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let out = wasaga(&server, &["saga", "cancel", &id], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("cancel requested for saga {id}")),
        "{}",
        stdout(&out)
    );
    let watched = watcher.await.unwrap();
    let text = stdout(&watched);
    assert_eq!(watched.status.code(), Some(3), "{text}");
    assert!(
        // spin is built on contract 0.2.0: its work had begun, so it is
        // compensated too.
        text.contains("step 1 spin compensated (attempt 1): interrupted by a cancel request"),
        "{text}"
    );
    assert!(text.contains("step 0 echo compensated"), "{text}");

    let out = wasaga(&server, &["saga", "show", &id], &[]).await;
    let text = stdout(&out);
    assert!(text.contains("status rolled_back"), "{text}");
    assert!(
        text.contains(
            "error: cancelled while step 1 (spin) ran; its work had begun, so compensating from step 1"
        ),
        "{text}"
    );
    let out = wasaga(
        &server,
        &["saga", "list", "--status", "rolled_back", "--json"],
        &[],
    )
    .await;
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    // The cancelled one, the one whose last step failed, and the resolved one.
    assert_eq!(listed["sagas"].as_array().unwrap().len(), 3);
    let out = wasaga(&server, &["saga", "list"], &[]).await;
    assert_eq!(
        stdout(&out).lines().count(),
        5,
        "a header and four sagas: {}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_print_the_servers_message_not_a_backtrace() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server(&db, Some("t0ken")).await;

    let out = wasaga(&server, &["plugin", "list"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: this server needs `Authorization: Bearer <token>` (401 Unauthorized, unauthorized)"
    );
    let out = wasaga(&server, &["plugin", "list"], &[("WASAGA_TOKEN", "t0ken")]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = wasaga(
        &server,
        &["saga", "start", "--kind", "k", "--step", "ghost"],
        &[("WASAGA_TOKEN", "t0ken")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        "error: unknown plugin: `ghost` (steps[0]) (422 Unprocessable Entity, unknown_plugin)"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );

    let out = wasaga(
        &server,
        &[
            "saga", "start", "--kind", "k", "--step", "echo", "--inputs", "{oops",
        ],
        &[("WASAGA_TOKEN", "t0ken")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: --inputs is not JSON:"),
        "{}",
        stderr(&out)
    );

    let out = wasaga(
        &server,
        &["plugin", "push", "/no/such/file.wasm"],
        &[("WASAGA_TOKEN", "t0ken")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: reading /no/such/file.wasm:"),
        "{}",
        stderr(&out)
    );

    // An id from the user is one path segment, whatever it holds (the
    // client once sent `a/b?c` as a path and a query, and got "no route").
    let out = wasaga(
        &server,
        &["saga", "show", "a/b?c#d"],
        &[("WASAGA_TOKEN", "t0ken")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: no saga `a/b?c#d` (saga ids are UUIDs) (404 Not Found, not_found)"
    );

    let unreachable = std::process::Command::new(wasaga_binary())
        .args(["saga", "list", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        stderr(&unreachable).starts_with("error: cannot reach the server at http://127.0.0.1:9"),
        "{}",
        stderr(&unreachable)
    );

    // A default wait above the ceiling is refused before anything starts.
    let data = tempfile::tempdir().unwrap();
    let refused = std::process::Command::new(wasaga_binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-wait",
            "8d",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert_eq!(
        stderr(&refused).trim(),
        "error: --max-wait (8days) is above --max-wait-ceiling (7days)"
    );

    // So are more live instances than the system can map: past it, calls
    // fail and a thread the runtime starts may die with tasks queued on it.
    let refused = std::process::Command::new(wasaga_binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allocator",
            "on-demand",
        ])
        .args(["--max-instances", "4000000000", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(
            "--max-instances 4000000000 is more than this system can keep alive with on-demand allocation"
        ) && stderr(&refused).contains("raise vm.max_map_count"),
        "{}",
        stderr(&refused)
    );
}

/// `template put|list|show|delete`, `schedule put|show|...`, `saga start
/// --template`, `resource list`, and a `--retention` too short refused at
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_and_resources_from_the_command_line() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server(&db, None).await;
    for name in ["ledger", "echo"] {
        let out = wasaga(&server, &["plugin", "push", &dist(name)], &[]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let file = db.dir.path().join("vm.json");
    std::fs::write(
        &file,
        r#"{"description": "two VMs", "steps": ["ledger", "echo"],
            "inputs_schema": {"type": "object", "required": ["ledger_prefix"]}}"#,
    )
    .unwrap();
    let file = file.display().to_string();
    let out = wasaga(&server, &["template", "put", "vm", "--file", &file], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "created template vm version 1");
    let out = wasaga(&server, &["template", "put", "vm", "--file", &file], &[]).await;
    assert_eq!(stdout(&out).trim(), "template vm is at version 1");
    let out = wasaga(&server, &["template", "list"], &[]).await;
    assert!(stdout(&out).starts_with("vm "), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("2 steps  two VMs"),
        "{}",
        stdout(&out)
    );
    let out = wasaga(&server, &["template", "show", "vm", "--version", "1"], &[]).await;
    assert!(stdout(&out).contains("step 0: ledger"), "{}", stdout(&out));

    // Inputs failing the schema: the server's message, exit 1.
    let out = wasaga(
        &server,
        &["saga", "start", "--template", "vm", "--wait"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("rule `required`"), "{}", stderr(&out));
    // --step without --kind, --template with --step: usage errors.
    let out = wasaga(&server, &["saga", "start", "--step", "echo"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--kind is needed"),
        "{}",
        stderr(&out)
    );
    let out = wasaga(
        &server,
        &["saga", "start", "--template", "vm", "--step", "echo"],
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses it: {}",
        stderr(&out)
    );

    let inputs = r#"{"ledger_prefix": "cli", "ledger_resources": 2}"#;
    let out = wasaga(
        &server,
        &[
            "saga",
            "start",
            "--template",
            "vm",
            "--inputs",
            inputs,
            "--wait",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = wasaga(
        &server,
        &["saga", "list", "--template", "vm", "--json"],
        &[],
    )
    .await;
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed["sagas"][0]["template_version"], 1);
    let out = wasaga(&server, &["resource", "list", "--state", "present"], &[]).await;
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("vm           cli-vm-0"), "{text}");
    let out = wasaga(
        &server,
        &["resource", "list", "--json", "--limit", "1"],
        &[],
    )
    .await;
    let page: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(page.as_array().unwrap().len(), 1);
    // Schedules of the template: put, show, trigger, pause, resume,
    // delete; a bad one is the server's message, exit 1.
    let schedule = db.dir.path().join("nightly.json");
    std::fs::write(
        &schedule,
        format!(r#"{{"template": "vm", "inputs": {inputs}, "cron": "30 2 * * *", "timezone": "Europe/Rome", "paused": true}}"#),
    )
    .unwrap();
    let schedule = schedule.display().to_string();
    let out = wasaga(
        &server,
        &["schedule", "put", "nightly", "--file", &schedule],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("created schedule nightly\nschedule nightly  template vm  cron `30 2 * * *` Europe/Rome  overlap skip  catch-up 1h  PAUSED"), "{}", stdout(&out));
    let out = wasaga(&server, &["schedule", "resume", "nightly"], &[]).await;
    assert_eq!(
        stdout(&out).matches("  next ").count(),
        5,
        "{}",
        stdout(&out)
    );
    let out = wasaga(&server, &["schedule", "trigger", "nightly", "--json"], &[]).await;
    let fire: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (fire["outcome"].as_str(), fire["manual"].as_bool()),
        (Some("started"), Some(true)),
        "{fire}"
    );
    let out = wasaga(&server, &["schedule", "list"], &[]).await;
    assert!(
        stdout(&out).starts_with("nightly ") && stdout(&out).contains("(by hand)"),
        "{}",
        stdout(&out)
    );
    let out = wasaga(&server, &["schedule", "pause", "nightly"], &[]).await;
    assert!(
        stdout(&out).contains("PAUSED") && !stdout(&out).contains("  next "),
        "{}",
        stdout(&out)
    );
    std::fs::write(
        db.dir.path().join("bad.json"),
        r#"{"template": "vm", "every": "1s", "cron": "* * * * *"}"#,
    )
    .unwrap();
    let bad = db.dir.path().join("bad.json").display().to_string();
    let out = wasaga(&server, &["schedule", "put", "bad", "--file", &bad], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("give either `cron` or `every`, not both"),
        "{}",
        stderr(&out)
    );
    let out = wasaga(&server, &["schedule", "delete", "nightly"], &[]).await;
    assert_eq!(stdout(&out).trim(), "deleted schedule nightly");
    let out = wasaga(&server, &["schedule", "show", "nightly"], &[]).await;
    assert_eq!(
        stderr(&out).trim(),
        "error: no schedule `nightly` (404 Not Found, not_found)"
    );

    let out = wasaga(&server, &["template", "delete", "vm"], &[]).await;
    assert_eq!(stdout(&out).trim(), "deleted template vm");
    let out = wasaga(&server, &["template", "show", "vm"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: no template `vm` (404 Not Found, not_found)"
    );

    let refused = std::process::Command::new(wasaga_binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--retention",
            "30m",
            "--data-dir",
        ])
        .arg(db.dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("--retention (30m) is shorter than 1h"),
        "{}",
        stderr(&refused)
    );
}

/// `plugin run` and `plugin test`: no server, the server's runtime; the
/// check names the bug each broken step has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_run_and_test_need_no_server() {
    let run = |args: &[&str]| {
        std::process::Command::new(wasaga_binary())
            .args(args)
            .output()
            .unwrap()
    };
    let echo = dist("echo");
    let out = run(&[
        "plugin",
        "run",
        &echo,
        "--phase",
        "execute",
        "--inputs",
        r#"{"message": "hi"}"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("echo execute (attempt 1): ok in "),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(r#""echoed_at_step_0": "hi""#),
        "{}",
        stdout(&out)
    );
    let out = run(&[
        "plugin",
        "run",
        &dist("fail"),
        "--phase",
        "execute",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(4), "fatal: {}", stdout(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["outcome"], "fatal");
    assert_eq!(report["error"], "fatal: step_failed:fail");
    let out = run(&["plugin", "run", &dist("flaky"), "--phase", "execute"]);
    assert_eq!(out.status.code(), Some(3), "retryable: {}", stdout(&out));
    let out = run(&[
        "plugin",
        "run",
        &dist("ledger"),
        "--phase",
        "execute",
        "--inputs",
        r#"{"ledger_resources": 1}"#,
    ]);
    assert!(
        stdout(&out).contains("resource vm local-vm-0"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("log info: recording 1 resources"),
        "{}",
        stdout(&out)
    );

    // A step that opens a wait (contract 0.3.0): `wait`, exit 0, and the
    // wait named; with `--received` the call goes on past it (here to an
    // outbound request, which nothing grants locally).
    let asks = r#"{"api": "http://127.0.0.1:9", "name": "db", "approval": {"name": "go-ahead", "timeout_ms": 60000}}"#;
    let observed = dist("observed");
    let out = run(&[
        "plugin", "run", &observed, "--phase", "execute", "--inputs", asks,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("opened wait `go-ahead`: run it again with --received PAYLOAD"),
        "{}",
        stdout(&out)
    );
    let out = run(&[
        "plugin",
        "run",
        &observed,
        "--phase",
        "execute",
        "--inputs",
        asks,
        "--received",
        r#"{"ok": true}"#,
        "--json",
    ]);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_ne!(report["outcome"], "wait", "{report}");
    assert!(
        report["logs"]
            .to_string()
            .contains("http POST http://127.0.0.1:9/v2/resources refused"),
        "it went on to its request: {report}"
    );
    let out = run(&[
        "plugin",
        "run",
        &observed,
        "--phase",
        "execute",
        "--inputs",
        asks,
        "--received",
        "{nope",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--received is not JSON"),
        "{}",
        stderr(&out)
    );

    // Bad input: JSON with its line and column; a file that is not a component.
    let out = run(&[
        "plugin",
        "run",
        &echo,
        "--phase",
        "execute",
        "--inputs",
        "{\"a\": }",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: --inputs is not JSON: expected value at line 1 column 7"
    );
    let readme = repo().join("README.md").display().to_string();
    let out = run(&["plugin", "test", &readme]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a component"), "{}", stderr(&out));

    // A good step passes every check; each broken one fails the right one.
    let broken = dist("broken");
    let out = run(&["plugin", "test", &broken]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with("ok "))
            .count(),
        7,
        "{}",
        stdout(&out)
    );
    for (inputs, check) in [
        (
            r#"{"broken": "compensate-needs-execute"}"#,
            "compensate with no execute before it",
        ),
        (r#"{"broken": "compensate-once"}"#, "compensate twice"),
        (
            r#"{"broken": "unstable-id"}"#,
            "execute twice with one idempotency key",
        ),
    ] {
        let out = run(&["plugin", "test", &broken, "--inputs", inputs, "--json"]);
        assert_eq!(out.status.code(), Some(1), "{inputs}");
        let checks: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let failed: Vec<&str> = checks
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| c["check"].as_str().unwrap())
            .collect();
        assert_eq!(failed, vec![check], "{inputs}: {checks}");
    }
    for (raw, why) in [
        ("[1, 2]", "output must be a JSON object"),
        (r#"{"__x": 1}"#, "reserved for the host"),
    ] {
        let inputs = serde_json::json!({"bloat_raw": raw}).to_string();
        let out = run(&["plugin", "test", &dist("bloat"), "--inputs", &inputs]);
        assert_eq!(out.status.code(), Some(1));
        let line = stdout(&out)
            .lines()
            .find(|l| l.starts_with("FAIL"))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.starts_with("FAIL execute returns a JSON object without reserved keys")
                && line.contains(why),
            "{line}"
        );
    }
}

/// `plugin grant|grants` and `secret set|list|delete`: a secret's value
/// comes from stdin (never an argument) and is never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_secrets_from_the_command_line() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut options = ServeOptions::new(db.dir.path());
    options.database_url = Some(db.url.clone());
    options.secrets_key_file = Some(wasaga_tests::secrets_key_file(db.dir.path()));
    let server = TestServer::start(options).await;

    let out = wasaga(
        &server,
        &[
            "plugin",
            "grant",
            "deployer",
            "--http",
            "https://API.example.com",
            "--http",
            "http://127.0.0.1:9400",
            "--secret",
            "do-token=use",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "deployer may send HTTP to: http://127.0.0.1:9400, https://api.example.com\ndeployer may use secret do-token\n"
    );
    let out = wasaga(&server, &["plugin", "grants", "deployer", "--json"], &[]).await;
    let grants: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(grants["secrets"]["do-token"], "use");
    let out = wasaga(
        &server,
        &[
            "plugin",
            "grant",
            "deployer",
            "--http",
            "https://x.example.com/path",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("`https://x.example.com/path` is not an origin: it has a path"),
        "{}",
        stderr(&out)
    );
    let out = wasaga(
        &server,
        &["plugin", "grant", "deployer", "--secret", "do-token=write"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "a usage error");

    let mut set = std::process::Command::new(wasaga_binary())
        .args([
            "secret",
            "set",
            "do-token",
            "--origin",
            "https://api.digitalocean.com",
            "--server",
            &server.base,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        set.stdin
            .take()
            .unwrap()
            .write_all(b"dop_v1_s3cret\n")
            .unwrap();
    }
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "secret do-token set (origins: https://api.digitalocean.com)\n"
    );
    let out = wasaga(&server, &["secret", "list"], &[]).await;
    assert!(stdout(&out).contains("do-token"), "{}", stdout(&out));
    assert!(stdout(&out).contains("https://api.digitalocean.com"));
    assert!(!stdout(&out).contains("dop_v1_s3cret"));
    let out = wasaga(&server, &["secret", "delete", "do-token"], &[]).await;
    assert_eq!(stdout(&out), "secret do-token deleted\n");
    let out = wasaga(&server, &["secret", "delete", "do-token"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: no secret `do-token` (404 Not Found, not_found)"
    );
    // Nothing on stdin: refused, nothing set.
    let empty = std::process::Command::new(wasaga_binary())
        .args([
            "secret",
            "set",
            "other",
            "--origin",
            "https://a.example.com",
            "--server",
            &server.base,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        stderr(&empty).contains("no value on stdin"),
        "{}",
        stderr(&empty)
    );
}
