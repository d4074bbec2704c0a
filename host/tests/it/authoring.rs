//! The authoring kit end to end: `wasaga plugin new` writes a project in
//! each language, which is built with its own command and the pinned
//! toolchains (`wit-bindgen`, `wasm-tools` and `componentize-py`, which
//! `cargo xtask test` installs under `target/polyglot`), then checked with
//! `plugin test` and called
//! with `plugin run`; the C example (`plugins/c/echo`), built the same way,
//! runs in a saga beside Rust, Python and JavaScript steps; and `plugin
//! new` refuses what it must, writing nothing.

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use wasaga::server::ServeOptions;
use wasaga_tests::{Backend, TestDb, TestServer, poll_saga, polyglot, polyglot_dir, repo};

fn wasaga(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasaga"))
        .args(args)
        .output()
        .expect("running wasaga")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a project's build command in `dir`; panics with its output, and a
/// hint about the toolchain, when it fails.
fn build(dir: &Path, command: &[&str], env: &[(&str, &Path)]) {
    let tools = polyglot_dir();
    let path = std::env::join_paths(
        [tools.join("tools/bin"), tools.join("venv-py/bin")]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .unwrap();
    let mut cmd = Command::new(command[0]);
    cmd.args(&command[1..])
        .current_dir(dir)
        .env("PATH", path)
        // A test binary's build flags are not the plugin's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {command:?} in {}: {e}", dir.display()));
    assert!(
        out.status.success(),
        "{command:?} in {} failed (run the tests with `cargo xtask test`, which installs the \
         plugin toolchains under {}):\n{}\n{}",
        dir.display(),
        tools.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A new project for `lang`, built with `command`, passes `plugin test`,
/// and `plugin run` calls it.
fn a_new_project_builds_and_passes(lang: &str, command: &[&str], env: &[(&str, &Path)]) {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("demo-{lang}");
    let dir = tmp.path().join(&name);
    let started = Instant::now();
    let out = wasaga(&[
        "plugin",
        "new",
        &name,
        "--lang",
        lang,
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("created {name} ({lang}) in ")),
        "{}",
        text(&out.stdout)
    );
    assert!(dir.join("README.md").exists() && dir.join("wit/step.wit").exists());
    build(&dir, command, env);
    let component = dir.join(format!("{name}.wasm"));
    let file = component.to_str().unwrap();

    let out = wasaga(&["plugin", "test", file, "--inputs", r#"{"message":"hi"}"#]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    // The skeletons that export observe (saying `unknown`; not C): one
    // more line.
    let checks = if lang == "c" { 7 } else { 8 };
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok ")).count(),
        checks,
        "{report}"
    );
    assert!(
        report.contains(&format!("{name}: all {checks} checks pass")),
        "{report}"
    );
    // What an author reports: the time from `plugin new` to a passing
    // `plugin test`, and the component's size (printed, never asserted).
    eprintln!(
        "{lang}: plugin new -> passing plugin test in {:.1} s; {name}.wasm is {} bytes",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&component).unwrap().len()
    );

    let key = format!("demo_{lang}_id");
    let out = wasaga(&[
        "plugin",
        "run",
        file,
        "--phase",
        "execute",
        "--inputs",
        r#"{"message":"hi"}"#,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["outcome"], "ok", "{run}");
    let id = run["output"][&key]
        .as_str()
        .unwrap_or_else(|| panic!("{run}"));
    assert!(id.starts_with(&format!("{name}-")), "{run}");
    assert_eq!(run["resources"][0]["kind"], name.as_str(), "{run}");
    assert_eq!(run["resources"][0]["external_id"], id, "{run}");
    assert!(
        run["logs"][0]["message"]
            .as_str()
            .unwrap()
            .contains("created"),
        "{run}"
    );
    let context = json!({ key: id }).to_string();
    let out = wasaga(&[
        "plugin",
        "run",
        file,
        "--phase",
        "compensate",
        "--context",
        &context,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains(&format!("log info: {name}: deleted ")),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn plugin_new_in_rust_builds_and_passes_plugin_test() {
    // Std for wasm is built from source on this route; keep it between runs.
    let target = polyglot_dir().join("kit-target");
    a_new_project_builds_and_passes("rust", &["./build.sh"], &[("CARGO_TARGET_DIR", &target)]);
}

#[test]
fn plugin_new_in_python_builds_and_passes_plugin_test() {
    a_new_project_builds_and_passes("python", &["./build.sh"], &[]);
}

#[test]
fn plugin_new_in_javascript_builds_and_passes_plugin_test() {
    // `npm install && npm run build`, as the README says, in one shell.
    a_new_project_builds_and_passes(
        "js",
        &[
            "sh",
            "-c",
            "npm install --no-audit --no-fund --prefer-offline --loglevel=error && npm run build",
        ],
        &[],
    );
}

#[test]
fn plugin_new_in_c_builds_and_passes_plugin_test() {
    a_new_project_builds_and_passes("c", &["./build.sh"], &[]);
}

#[test]
fn plugin_new_refuses_bad_input_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("taken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let path = dir.to_str().unwrap();

    let out = wasaga(&["plugin", "new", "demo", "--lang", "go", "--dir", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("[possible values: rust, python, js, c]"),
        "{}",
        text(&out.stderr)
    );

    let out = wasaga(&["plugin", "new", "demo", "--lang", "c", "--dir", path]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("error: {path} exists and is not empty; nothing was written (pick a new --dir)")
    );
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );

    let fresh = tmp.path().join("fresh");
    let out = wasaga(&[
        "plugin",
        "new",
        "Make_VM",
        "--lang",
        "python",
        "--dir",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "invalid plugin name \"Make_VM\": 'M' is not a lowercase letter, digit or dash"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(!fresh.exists());
}

/// The C example, built from source as an author would, in one saga with
/// steps in Rust, Python and JavaScript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_step_runs_in_a_saga_beside_rust_python_and_javascript() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c-echo");
    let out = wasaga(&[
        "plugin",
        "new",
        "c-echo",
        "--lang",
        "c",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::copy(repo().join("plugins/c/echo/echo.c"), dir.join("src/step.c")).unwrap();
    build(&dir, &["./build.sh"], &[]);
    let c_echo = std::fs::read(dir.join("c-echo.wasm")).unwrap();

    let db = TestDb::new(Backend::Sqlite).await;
    let mut options = ServeOptions::new(db.dir.path());
    options.database_url = Some(db.url.clone());
    options.runner.poll_every = Duration::from_millis(50);
    let server = TestServer::start(options).await;
    let plugin = server.upload_bytes(c_echo).await;
    assert_eq!(plugin["contract"], "0.3.0", "{plugin}");
    server.upload_bytes(polyglot("python-echo.wasm")).await;
    server.upload_bytes(polyglot("js-echo.wasm")).await;
    server.upload("echo").await;
    let r = server
        .http
        .post(server.url("/v1/sagas"))
        .json(&json!({
            "kind": "polyglot",
            "steps": ["echo", "py-echo", "c-echo", "js-echo"],
            "inputs": {"message": "hi"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = poll_saga(
        &server.http,
        &server.base,
        &id,
        Duration::from_secs(120),
        |s| ["completed", "rolled_back", "failed"].contains(&s["status"].as_str().unwrap_or("")),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    let context = &done["context"];
    assert_eq!(context["echoed_at_step_0"], "hi", "{context}");
    assert_eq!(context["py_echoed_at_step_1"], "hi", "{context}");
    assert_eq!(
        context["c_echoed_at_step_2"],
        json!({"message": "hi"}),
        "{context}"
    );
    assert_eq!(context["js_echoed_at_step_3"], "hi", "{context}");
    let logs: Vec<&str> = done["steps"][2]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        logs.contains(&"[stdout] c-echo running step 2, attempt 1"),
        "{logs:?}"
    );
    assert!(
        logs.contains(&format!("echoing for saga {id}").as_str()),
        "{logs:?}"
    );
}
