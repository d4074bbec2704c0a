//! `observe` (contract 0.3.0, docs/recovery.md): before undoing a step
//! whose `execute` did not finish, the host asks the step's plugin whether
//! it took effect, so that compensation undoes what is there and only
//! that. The `observed` test plugin asks the test cloud (a real HTTP server
//! standing in for a provider) for the resource made under the call's
//! idempotency key; the cloud counts creates and deletes.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wasaga_tests::{Cloud, TestDb, TestServer, on_both, poll_saga, secrets_key_file};

const TOKEN: &str = "observe-t0ken";

async fn server_with_cloud(db: &TestDb, cloud: &Cloud) -> TestServer {
    server_with(db, cloud, |_| {}).await
}

/// A server with `observed` and `http-resource` uploaded and granted the
/// cloud and its token.
async fn server_with(
    db: &TestDb,
    cloud: &Cloud,
    adjust: impl FnOnce(&mut wasaga::server::ServeOptions),
) -> TestServer {
    let key = secrets_key_file(db.dir.path());
    let server = TestServer::on(db, |o| {
        o.secrets_key_file = Some(key);
        adjust(o);
    })
    .await;
    for plugin in ["observed", "http-resource"] {
        server.upload(plugin).await;
        server.grant_cloud(cloud, TOKEN, plugin).await;
    }
    server
}

/// Runs a saga of one step of `plugin` creating the resource `name`, to
/// its end; answers the resource's id.
async fn provision(server: &TestServer, cloud: &Cloud, plugin: &str, name: &str) -> String {
    let (status, saga) = server
        .post_json(
            "/v1/sagas",
            &json!({"kind": "provision", "steps": [plugin], "inputs": {"api": cloud.origin(), "name": name}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{saga}");
    let saga = poll_saga(
        &server.http,
        &server.base,
        saga["id"].as_str().unwrap(),
        Duration::from_secs(60),
        |s| ["rolled_back", "failed", "completed"].contains(&s["status"].as_str().unwrap_or("")),
    )
    .await;
    assert_eq!(saga["status"], "completed", "{saga}");
    saga["context"]["resource_id"].as_str().unwrap().to_string()
}

async fn drifted(server: &TestServer, drift: &str) -> Vec<Value> {
    let list = server
        .get_json(&format!("/v1/resources?drift={drift}"))
        .await;
    list["resources"].as_array().unwrap().clone()
}

/// Starts a saga of one `observed` step, waits until its create reached
/// the cloud, cancels it, and answers the saga once it ended.
async fn cancel_mid_create(server: &TestServer, cloud: &Cloud) -> Value {
    let (status, saga) = server
        .post_json(
            "/v1/sagas",
            &json!({"kind": "provision", "steps": ["observed"], "inputs": {"api": cloud.origin(), "name": "db-1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{saga}");
    let id = saga["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cloud.counts().0 == 0 {
        assert!(Instant::now() < deadline, "the step never called the cloud");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = server
        .post_json(&format!("/v1/sagas/{id}/cancel"), &json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    poll_saga(
        &server.http,
        &server.base,
        &id,
        Duration::from_secs(60),
        |s| ["rolled_back", "failed", "completed"].contains(&s["status"].as_str().unwrap_or("")),
    )
    .await
}

fn outcomes(row: &Value) -> Vec<String> {
    row["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}:{}",
                c["phase"].as_str().unwrap(),
                c["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

on_both! {
    undoing_a_call_that_did_not_finish_asks_observe_first(backend) {
        // Applied: the cloud made the resource, then held its answer past
        // the cancel. Observe finds it, and compensate (seeing its id)
        // deletes it.
        let db = TestDb::new(backend).await;
        let cloud = Cloud::start(TOKEN).await;
        cloud.on_create(|| tokio::time::sleep(Duration::from_secs(3)));
        let server = server_with_cloud(&db, &cloud).await;
        let saga = cancel_mid_create(&server, &cloud).await;
        assert_eq!(saga["status"], "rolled_back", "{saga}");
        let row = &saga["steps"][0];
        assert_eq!(
            outcomes(row),
            ["execute:interrupted", "execute:observe:applied", "compensate:ok"],
            "{row}"
        );
        assert_eq!(row["status"], "compensated", "{row}");
        assert!(cloud.resources().is_empty(), "{:?}", cloud.resources());
        assert_eq!(cloud.counts().1, 1, "one delete");
        server.stop().await.unwrap();

        // Not applied: the cloud held the create, then refused it having
        // made nothing. Observe finds nothing: no compensate call.
        let db = TestDb::new(backend).await;
        let cloud = Cloud::start(TOKEN).await;
        cloud.hold_first_create(Duration::from_secs(3));
        let server = server_with_cloud(&db, &cloud).await;
        let saga = cancel_mid_create(&server, &cloud).await;
        assert_eq!(saga["status"], "rolled_back", "{saga}");
        let row = &saga["steps"][0];
        assert_eq!(outcomes(row), ["execute:interrupted", "execute:observe:not-applied"], "{row}");
        assert_eq!(row["status"], "compensated", "{row}");
        let logs: Vec<&str> = row["logs"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap()).collect();
        assert!(logs.iter().any(|l| l.contains("observe before undoing a call that did not finish: not-applied")), "{logs:?}");
        assert_eq!(cloud.counts().1, 0, "nothing to delete, no delete");
        server.stop().await.unwrap();
    }
}

on_both! {
    a_drift_scan_marks_resources_changed_missing_or_unknown(backend) {
        let db = TestDb::new(backend).await;
        let cloud = Cloud::start(TOKEN).await;
        let server = server_with_cloud(&db, &cloud).await;
        let kept = provision(&server, &cloud, "observed", "db-1").await;
        let renamed = provision(&server, &cloud, "observed", "db-2").await;
        let deleted = provision(&server, &cloud, "observed", "db-3").await;
        // A 0.2.0 step has no observe: its resource's drift is unknown.
        provision(&server, &cloud, "http-resource", "db-4").await;
        assert!(cloud.change(&renamed, "name", json!("db-2-renamed")));
        assert!(cloud.remove(&deleted));

        let (status, report) = server.post_json("/v1/resources/scan", &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(
            (report["scanned"].as_u64(), report["none"].as_u64(), report["changed"].as_u64(), report["missing"].as_u64(), report["unknown"].as_u64()),
            (Some(4), Some(1), Some(1), Some(1), Some(1)),
            "{report}"
        );
        assert_eq!(report["observe_calls"], 3, "{report}");
        assert_eq!(report["drifted"].as_array().unwrap().len(), 2, "{report}");

        let changed = drifted(&server, "changed").await;
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(changed[0]["external_id"], renamed.as_str());
        assert_eq!(changed[0]["diff"], json!([{"op": "replace", "path": "/name", "value": "db-2-renamed"}]));
        assert!(changed[0]["observed_at"].is_string(), "{}", changed[0]);
        let missing = drifted(&server, "missing").await;
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0]["external_id"], deleted.as_str());
        let none = drifted(&server, "none").await;
        assert_eq!(none.len(), 1);
        assert_eq!(none[0]["external_id"], kept.as_str());
        assert_eq!(drifted(&server, "unknown").await.len(), 1);

        // A narrower scan, and bad input: a clear 400, nothing changed.
        let (status, report) = server.post_json("/v1/resources/scan", &json!({"kind": "no-such-kind"})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(report["scanned"], 0, "{report}");
        let (status, body) = server.post_json("/v1/resources/scan", &json!({"knd": "x"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("knd"), "{body}");
        let r = server.http.get(server.url("/v1/resources?drift=sideways")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(drifted(&server, "changed").await.len(), 1);

        // The console marks what drifted.
        let page = server.http.get(server.url("/ui/resources?drift=changed")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("s-changed") && page.contains("db-2-renamed"), "{page}");
        server.stop().await.unwrap();
    }

    the_periodic_drift_scan_runs_without_being_asked(backend) {
        let db = TestDb::new(backend).await;
        let cloud = Cloud::start(TOKEN).await;
        let server = server_with(&db, &cloud, |o| o.runner.drift_scan_every = Some(Duration::from_millis(500))).await;
        let id = provision(&server, &cloud, "observed", "db-1").await;
        assert!(cloud.remove(&id));
        let deadline = Instant::now() + Duration::from_secs(60);
        while drifted(&server, "missing").await.is_empty() {
            assert!(Instant::now() < deadline, "no periodic scan found the resource missing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.stop().await.unwrap();
    }
}
