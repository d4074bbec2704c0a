//! Redrive by filter (docs/recovery.md) at scale, on `wasaga serve`:
//! `sagas` sagas of three `counter` steps whose step 1 fails for good
//! (they end rolled back), then one dry run of `POST /v1/sagas/redrive`
//! and the redrive itself with the failure patched out of the inputs. Every
//! saga must complete, and no step may execute that the dry run did not
//! list: the ledger says which rows executed after the redrive.

use super::*;
use std::collections::HashSet;

/// The steps each saga's plan says are executed, by (saga id, index).
fn listed(plans: &serde_json::Value) -> Result<HashSet<(String, i64)>> {
    let mut listed = HashSet::new();
    for plan in plans.as_array().context("plans")? {
        let id = plan["saga_id"].as_str().context("a saga id")?;
        for step in plan["steps"].as_array().context("steps")? {
            if step["does"] != "keep" {
                listed.insert((id.to_string(), step["index"].as_i64().context("an index")?));
            }
        }
    }
    Ok(listed)
}

/// `--only redrive`.
pub(crate) async fn redrive(report: &mut Report, quick: bool, bin: &Path) -> Result<()> {
    report.measured_by(format!("{BENCH} --only redrive {WITH_SERVER}"));
    let sagas: usize = if quick { 200 } else { 1_000 };
    let host = ServedHost::start(bin, "").await?;
    host.install("counter", &[]).await?;
    let step = json!({"plugin": "counter", "max_attempts": 1});
    host.start_sagas(sagas, || {
        json!({"kind": "fleet-update", "steps": [step, step, step], "inputs": {"counter_fail_at": [1]}})
    })
    .await?;
    let db = host.dir.path().join("wasaga.db");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}?mode=ro",
        db.display()
    ))
    .await?;
    let ended = "SELECT count(*) FROM saga_runs WHERE status = 'rolled_back'";
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (n,): (i64,) = sqlx::query_as(ended).fetch_one(&mut conn).await?;
        if n as usize == sagas {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{n} of {sagas} rolled back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let url = format!("{}/v1/sagas/redrive", host.server.base);
    let body = |dry_run: bool| {
        json!({
            "filter": {"kind": "fleet-update", "status": "rolled_back", "error_contains": "fails on purpose"},
            "mode": "resume", "inputs_patch": {"counter_fail_at": null}, "note": "bench", "dry_run": dry_run,
        })
    };
    let started = Instant::now();
    let dry: serde_json::Value = host
        .http
        .post(&url)
        .json(&body(true))
        .send()
        .await?
        .json()
        .await?;
    let dry_took = started.elapsed();
    let listed = listed(&dry["plans"])?;
    anyhow::ensure!(
        dry["redriven"].as_array().map_or(0, Vec::len) == sagas,
        "the dry run found {} of {sagas}",
        dry["redriven"]
    );

    let redriven_at = epoch_ms() as i64;
    let started = Instant::now();
    let done: serde_json::Value = host
        .http
        .post(&url)
        .json(&body(false))
        .send()
        .await?
        .json()
        .await?;
    let redrive_took = started.elapsed();
    anyhow::ensure!(
        done["redriven"].as_array().map_or(0, Vec::len) == sagas,
        "redrove {} of {sagas}: {}",
        done["redriven"].as_array().map_or(0, Vec::len),
        done["refused"]
    );
    host.wait_completed(sagas).await?;
    let (last,): (i64,) = sqlx::query_as("SELECT max(updated_at) FROM saga_runs")
        .fetch_one(&mut conn)
        .await?;
    // Rows that executed after the redrive: begun (again) since.
    let executed: Vec<(String, i64)> =
        sqlx::query_as("SELECT saga_id, step_index FROM saga_step_results WHERE started_at >= ?")
            .bind(redriven_at)
            .fetch_all(&mut conn)
            .await?;
    let unlisted = executed.iter().filter(|e| !listed.contains(e)).count();
    let peak = host.peak_rss()?;
    host.stop();

    report.notes.push(format!(
        "Redrive by filter: `wasaga serve` with default flags on SQLite; {sagas} sagas of three `counter` steps \
         whose step 1 fails for good (each ends rolled back), then `POST /v1/sagas/redrive` with a filter \
         (kind, status, error text) and `inputs_patch` removing the failure: first a dry run, then the \
         redrive. One run. \"Unlisted\" counts ledger rows begun after the redrive that the dry run did not \
         list as executed."
    ));
    report.add(
        "Redrive",
        format!("{sagas} rolled-back sagas: the dry run's answer"),
        ms(dry_took),
        String::new(),
        String::new(),
        "",
    );
    report.add(
        "Redrive",
        format!("{sagas} rolled-back sagas: the redrive's answer"),
        ms(redrive_took),
        String::new(),
        String::new(),
        "",
    );
    report.add(
        "Redrive",
        format!("{sagas} redriven sagas: from the redrive's request to the last completion"),
        ms(Duration::from_millis((last - redriven_at).max(0) as u64)),
        format!("{sagas} of {sagas} completed"),
        String::new(),
        "all complete",
    );
    report.add(
        "Redrive",
        format!("{sagas} redriven sagas: steps executed that the dry run did not list"),
        unlisted.to_string(),
        format!("{} executed", executed.len()),
        String::new(),
        "0",
    );
    report.add(
        "Redrive",
        format!("{sagas} sagas failed and redriven: peak RSS of wasaga serve"),
        mib(peak),
        String::new(),
        String::new(),
        "",
    );
    Ok(())
}
