//! How a deployment runs the binary: `wasaga migrate` as a step of its own
//! (a Kubernetes job), hosts that may not migrate (`--migrations require`)
//! and refuse an old schema, `/readyz` (database reachable and schema
//! current), and SIGTERM draining to a clean exit. Both databases, through
//! the built binary.

use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::Duration;
use wasaga_tests::{Backend, Http, ServerProcess, TestDb, on_both, poll_saga};

const BIN: &str = env!("CARGO_BIN_EXE_wasaga");

/// Runs `wasaga ARGS` off the async threads; a host that cannot start
/// exits, so this returns.
async fn wasaga(args: Vec<String>) -> Output {
    let mut command = Command::new(BIN);
    command.args(&args).env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || command.output().expect("running wasaga"))
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `migrate` with this database: `--database URL --data-dir DIR [EXTRA]`.
fn migrate_args(db: &TestDb, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "migrate".to_string(),
        "--database".into(),
        db.url.clone(),
        "--data-dir".into(),
        db.dir.path().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs SQL on the test database, as an operator (or a newer release's
/// migrations job) would.
async fn execute(db: &TestDb, sql: &str) {
    match db.backend {
        Backend::Sqlite => {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let url = db.url.split('?').next().unwrap();
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
    }
}

async fn readyz(http: &Http, base: &str) -> (u16, Value) {
    let response = http.get(format!("{base}/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

on_both! {
    migrations_run_as_a_job_and_hosts_that_require_them_wait_for_it(backend) {
        let db = TestDb::new(backend).await;

        // A new database: the check says what is missing and changes nothing.
        let check = wasaga(migrate_args(&db, &["--check"])).await;
        assert_eq!(check.status.code(), Some(1), "{check:?}");
        let said = text(&check.stdout);
        assert!(said.contains("not applied (0001 initial"), "{said}");
        assert!(said.contains("run `wasaga migrate`"), "{said}");

        // A host that may not migrate refuses the old schema, saying what
        // to run, and exits.
        let host_args = |extra: &[&str]| {
            let mut args = vec![
                "serve".to_string(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--database".into(),
                db.url.clone(),
                "--data-dir".into(),
                db.dir.path().join("host").display().to_string(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        };
        let refused = wasaga(host_args(&["--migrations", "require"])).await;
        assert!(!refused.status.success(), "{refused:?}");
        let why = text(&refused.stderr);
        assert!(why.contains("the database's schema is not current"), "{why}");
        assert!(why.contains("run `wasaga migrate`"), "{why}");
        let still = wasaga(migrate_args(&db, &["--check"])).await;
        assert_eq!(still.status.code(), Some(1), "the refused host changed the schema");

        // The job.
        let migrated = wasaga(migrate_args(&db, &[])).await;
        assert!(migrated.status.success(), "{migrated:?}");
        let said = text(&migrated.stdout);
        assert!(said.starts_with("schema: current ("), "{said}");
        let again = wasaga(migrate_args(&db, &[])).await;
        assert_eq!(text(&again.stdout), said, "a second run changes nothing");
        let check = wasaga(migrate_args(&db, &["--check"])).await;
        assert!(check.status.success(), "{check:?}");

        // Now the host starts, is ready, and runs a saga.
        let args = host_args(&["--migrations", "require", "--poll-interval", "100ms"]);
        let mut host = ServerProcess::start(BIN, &args[3..], db.dir.path().join("host.log"))
            .await
            .unwrap();
        let http = Http::new();
        let (status, body) = readyz(&http, &host.base).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ready");
        assert!(body["schema"].as_str().unwrap().starts_with("current ("), "{body}");
        let started: Value = http
            .post(format!("{}/v1/sagas", host.base))
            .json(&json!({"kind": "deploy-check", "steps": ["echo", "echo"], "inputs": {"n": 1}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = started["id"].as_str().unwrap_or_else(|| panic!("{started}")).to_string();
        poll_saga(&http, &host.base, &id, Duration::from_secs(30), |s| s["status"] == "completed").await;

        // A newer release's migrations job ran first (a rolling upgrade):
        // this host stays ready.
        let newer = match backend {
            Backend::Sqlite => "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (99990101000000, 'from a later release', 1, x'00', 0)",
            Backend::Postgres => "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (99990101000000, 'from a later release', true, '\\x00', 0)",
        };
        execute(&db, newer).await;
        let (status, body) = readyz(&http, &host.base).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["schema"].as_str().unwrap().contains("1 newer migration"), "{body}");

        // A schema that lost one of this binary's migrations: not ready,
        // saying which; the host itself keeps running.
        execute(&db, "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations WHERE version < 99990101000000)").await;
        let (status, body) = readyz(&http, &host.base).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["status"], "schema_not_current");
        assert!(body["message"].as_str().unwrap().contains("1 migration(s) not applied"), "{body}");
        let health = http.get(format!("{}/healthz", host.base)).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 200, "liveness does not ask the schema");

        // SIGTERM drains and exits cleanly.
        let exit = host.terminate();
        assert!(exit.success(), "{exit:?}: {}", std::fs::read_to_string(&host.log).unwrap());
    }
}
