//! The plugin runtime against real components: every bundled and test
//! plugin, every validation error, every limit breach (each contained within
//! its bound, with the next call on the same engine working), cancel, the
//! compile cache, and the Python and JavaScript examples.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wasaga::config::{MIB, RuntimeConfig, StepLimits};
use wasaga::model::{Digest, LogLevel};
use wasaga::plugin::{
    LoadedFrom, Plugin, PluginError, PluginHost, Progress, StepCall, StepFailure,
};
use wasaga_tests::{component, polyglot, repo};

fn host() -> PluginHost {
    PluginHost::new(RuntimeConfig {
        max_instances: 16,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn call(step_index: u32, attempt: u32, inputs: serde_json::Value) -> StepCall {
    StepCall {
        saga_id: "saga-1".into(),
        kind: "test".into(),
        step_index,
        attempt,
        idempotency_key: format!("saga-1:{step_index}:execute"),
        inputs: inputs.to_string(),
        context: "{}".into(),
        received: None,
        traceparent: None,
    }
}

/// A call's result, which must be a finished (not waiting) success.
fn done<T: std::fmt::Debug>(result: Result<Progress<T>, StepFailure>) -> T {
    match result {
        Ok(Progress::Done(value)) => value,
        other => panic!("expected a finished success, got {other:?}"),
    }
}

fn limits() -> StepLimits {
    StepLimits::default()
}

async fn prepare(host: &PluginHost, name: &str) -> Arc<Plugin> {
    host.prepare(&component(name))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// After any breach, the same host still runs a plain step.
async fn assert_echo_still_works(host: &PluginHost) {
    let echo = prepare(host, "echo").await;
    let out = host
        .execute(
            &echo,
            call(0, 1, serde_json::json!({"message": "still here"})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(done(out.result)["echoed_at_step_0"], "still here");
}

#[tokio::test]
async fn echo_puts_the_message_into_the_context_and_has_nothing_to_undo() {
    let host = host();
    let echo = prepare(&host, "echo").await;
    assert_eq!(echo.name, "echo");
    assert_eq!(echo.digest, Digest::of(&component("echo")));
    let out = host
        .execute(
            &echo,
            call(2, 1, serde_json::json!({"message": "hello"})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let output = done(out.result);
    assert_eq!(
        serde_json::Value::Object(output),
        serde_json::json!({"echoed_at_step_2": "hello"})
    );
    let undo = host
        .compensate(
            &echo,
            call(2, 1, serde_json::json!({})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    done(undo.result);
}

#[tokio::test]
async fn fail_fails_fatally_with_its_message() {
    let host = host();
    let fail = prepare(&host, "fail").await;
    let out = host
        .execute(
            &fail,
            call(0, 1, serde_json::json!({})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(
        out.result.unwrap_err(),
        StepFailure::Fatal("step_failed:fail".into())
    );
}

#[tokio::test]
async fn flaky_fails_retryably_until_its_attempt() {
    let host = host();
    let flaky = prepare(&host, "flaky").await;
    let inputs = serde_json::json!({"flaky_succeed_on_attempt": 3});
    for attempt in 1..=2 {
        let out = host
            .execute(
                &flaky,
                call(0, attempt, inputs.clone()),
                &limits(),
                CancellationToken::new(),
                Arc::default(),
            )
            .await;
        let failure = out.result.unwrap_err();
        assert!(matches!(failure, StepFailure::Retryable(_)), "{failure:?}");
        assert!(failure.is_retryable());
    }
    let out = host
        .execute(
            &flaky,
            call(0, 3, inputs),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(done(out.result)["flaky_succeeded_on_attempt_0"], 3);
}

#[tokio::test]
async fn a_loop_is_stopped_at_its_deadline() {
    let host = host();
    let spin = prepare(&host, "spin").await;
    let started = Instant::now();
    let limits = StepLimits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let out = host
        .execute(
            &spin,
            call(0, 1, serde_json::json!({})),
            &limits,
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(
        out.result.unwrap_err(),
        StepFailure::LimitExceeded("deadline of 300 ms exceeded".into())
    );
    // Containment, not speed: the loop must not outlive its deadline by much.
    assert!(
        elapsed < Duration::from_secs(5),
        "the loop ran for {elapsed:?}"
    );
    assert_echo_still_works(&host).await;
}

#[tokio::test]
async fn a_cancel_stops_a_call_in_flight() {
    let host = host();
    let spin = prepare(&host, "spin").await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let at = Instant::now();
        trigger.cancel();
        at
    });
    let out = host
        .execute(
            &spin,
            call(0, 1, serde_json::json!({})),
            &limits(),
            cancel,
            Arc::default(),
        )
        .await;
    let stopped = Instant::now();
    let cancelled_at = canceller.await.unwrap();
    assert_eq!(out.result.unwrap_err(), StepFailure::Cancelled);
    let latency = stopped - cancelled_at;
    // The runtime checks the cancel flag at every 10 ms epoch tick; allow a
    // shared machine's scheduling noise on top of the 100 ms promise.
    assert!(latency < Duration::from_secs(2), "cancel took {latency:?}");
    assert_echo_still_works(&host).await;
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit() {
    let host = host();
    let hog = prepare(&host, "hog").await;
    let out = host
        .execute(
            &hog,
            call(0, 1, serde_json::json!({})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let failure = out.result.unwrap_err();
    assert!(
        matches!(&failure, StepFailure::LimitExceeded(m) if m.starts_with("memory limit of 64 MiB exceeded")),
        "{failure:?}"
    );
    assert!(failure.is_retryable());
    let small = StepLimits {
        max_memory_bytes: 8 * MIB,
        ..limits()
    };
    let out = host
        .execute(
            &hog,
            call(0, 1, serde_json::json!({})),
            &small,
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let failure = out.result.unwrap_err().to_string();
    assert!(
        failure.starts_with("memory limit of 8 MiB exceeded"),
        "{failure}"
    );
    assert_echo_still_works(&host).await;
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_overflow_trap() {
    let host = host();
    let recurse = prepare(&host, "recurse").await;
    let out = host
        .execute(
            &recurse,
            call(0, 1, serde_json::json!({})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(
        out.result.unwrap_err(),
        StepFailure::Trap("trap: call stack exhausted (the Wasm stack limit is 512 KiB)".into())
    );
    // Frames with arrays live on Rust's shadow stack in linear memory, which
    // runs out first: the guest then reads outside its memory.
    let out = host
        .execute(
            &recurse,
            call(0, 1, serde_json::json!({"recurse_frame_bytes": 512})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(
        out.result.unwrap_err(),
        StepFailure::Trap("trap: wasm trap: out of bounds memory access".into())
    );
    assert_echo_still_works(&host).await;
}

#[tokio::test]
async fn a_panic_is_a_trap_that_quotes_the_panic() {
    let host = host();
    let panic = prepare(&host, "panic").await;
    let out = host
        .execute(
            &panic,
            call(0, 2, serde_json::json!({})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let failure = out.result.unwrap_err();
    let StepFailure::Trap(message) = &failure else {
        panic!("expected a trap, got {failure:?}");
    };
    assert!(message.contains("unreachable"), "{message}");
    assert!(
        message.contains("the panic plugin panics on attempt 2"),
        "{message}"
    );
    assert!(
        out.logs
            .iter()
            .any(|l| l.level == LogLevel::Error && l.message.contains("panics on attempt 2"))
    );
    assert_echo_still_works(&host).await;
}

#[tokio::test]
async fn a_64_mb_output_is_refused_by_memory_or_output_limit() {
    let host = host();
    let bloat = prepare(&host, "bloat").await;
    // Under the default 64 MiB memory limit, the guest cannot even build it.
    let out = host
        .execute(
            &bloat,
            call(0, 1, serde_json::json!({})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let failure = out.result.unwrap_err().to_string();
    assert!(
        failure.starts_with("memory limit of 64 MiB exceeded"),
        "{failure}"
    );
    // With room to build it, the host refuses the output itself.
    let roomy = StepLimits {
        max_memory_bytes: 512 * MIB,
        ..limits()
    };
    let out = host
        .execute(
            &bloat,
            call(0, 1, serde_json::json!({})),
            &roomy,
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let failure = out.result.unwrap_err();
    assert_eq!(
        failure,
        StepFailure::InvalidOutput("output of 64.0 MiB exceeds the limit of 1 MiB".into())
    );
    assert!(!failure.is_retryable());
    assert_echo_still_works(&host).await;
}

#[tokio::test]
async fn outputs_must_be_json_objects_without_reserved_keys() {
    let host = host();
    let bloat = prepare(&host, "bloat").await;
    let cases = [
        ("[1,2]", "output must be a JSON object, not an array"),
        ("\"text\"", "output must be a JSON object, not a string"),
        ("{not json", "output is not JSON"),
        (
            r#"{"ok":1,"__host":2}"#,
            "output key `__host` starts with `__`",
        ),
    ];
    for (raw, expected) in cases {
        let out = host
            .execute(
                &bloat,
                call(0, 1, serde_json::json!({"bloat_raw": raw})),
                &limits(),
                CancellationToken::new(),
                Arc::default(),
            )
            .await;
        let failure = out.result.unwrap_err();
        assert!(
            matches!(failure, StepFailure::InvalidOutput(_)),
            "{raw}: {failure:?}"
        );
        assert!(failure.to_string().contains(expected), "{raw}: {failure}");
    }
    let out = host
        .execute(
            &bloat,
            call(0, 1, serde_json::json!({"bloat_raw": ""})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert!(
        done(out.result).is_empty(),
        "an empty output counts as {{}}"
    );
}

#[tokio::test]
async fn logs_and_resources_come_back_with_the_call() {
    let host = host();
    let ledger = prepare(&host, "ledger").await;
    let out = host
        .execute(
            &ledger,
            call(1, 1, serde_json::json!({"ledger_resources": 3})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let output = done(out.result);
    assert_eq!(output["vm_ids"].as_array().unwrap().len(), 3);
    let levels: Vec<LogLevel> = out.logs.iter().map(|l| l.level).collect();
    assert_eq!(
        levels,
        [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error
        ]
    );
    assert_eq!(out.logs[2].message, "recording 3 resources");
    assert_eq!(out.resources.len(), 3);
    assert_eq!(out.resources[2].kind, "vm");
    assert_eq!(out.resources[2].external_id, "saga-1-vm-2");
    assert_eq!(
        out.resources[2].spec,
        serde_json::json!({"size": "s-1vcpu-1gb", "ordinal": 2})
    );
}

#[tokio::test]
async fn log_lines_are_bounded_in_count_and_size() {
    let host = host();
    let ledger = prepare(&host, "ledger").await;
    let tight = StepLimits {
        max_log_lines: 3,
        max_log_line_bytes: 10,
        ..limits()
    };
    let out = host
        .execute(
            &ledger,
            call(0, 1, serde_json::json!({})),
            &tight,
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    done(out.result);
    assert_eq!(out.logs.len(), 4, "{:?}", out.logs);
    assert_eq!(out.logs[2].message, "recording … [cut 11 bytes]");
    assert_eq!(
        out.logs[3].message,
        "[host] 2 more log lines dropped: the limit is 3 lines per call"
    );
}

#[tokio::test]
async fn a_resource_spec_that_is_not_json_breaks_the_contract() {
    let host = host();
    let ledger = prepare(&host, "ledger").await;
    let out = host
        .execute(
            &ledger,
            call(0, 1, serde_json::json!({"ledger_raw_spec": "{size: big"})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let failure = out.result.unwrap_err();
    assert!(
        matches!(&failure, StepFailure::ContractViolation(m) if m.starts_with("record-resource: spec of vm \"raw\" is not JSON")),
        "{failure:?}"
    );
    assert!(!failure.is_retryable());
    assert!(out.resources.is_empty());
}

#[tokio::test]
async fn a_failing_compensate_is_reported() {
    let host = host();
    let stubborn = prepare(&host, "stubborn").await;
    let out = host
        .compensate(
            &stubborn,
            call(4, 2, serde_json::json!({})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(
        out.result.unwrap_err(),
        StepFailure::Retryable("stubborn: cannot undo step 4 (attempt 2)".into())
    );
}

#[tokio::test]
async fn outgoing_http_is_refused_without_a_grant() {
    let host = host();
    let counter = prepare(&host, "counter").await;
    let out = host
        .execute(
            &counter,
            call(
                0,
                1,
                serde_json::json!({"counter_url": "http://127.0.0.1:9"}),
            ),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let failure = out.result.unwrap_err();
    assert_eq!(
        failure,
        StepFailure::Fatal(
            "the host refused outgoing HTTP to 127.0.0.1:9: ErrorCode::HttpRequestDenied".into()
        )
    );
    assert!(
        out.logs.iter().any(|l| l.message
            == "[host] http GET http://127.0.0.1:9/count refused: http://127.0.0.1:9 is not granted: \
                this plugin may make no HTTP requests"),
        "{:?}",
        out.logs
    );
}

#[tokio::test]
async fn outgoing_http_reaches_the_plugins_granted_origins_and_is_audited() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0; 4096];
        let n = socket.read(&mut request).await.unwrap();
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await
            .unwrap();
        String::from_utf8_lossy(&request[..n]).into_owned()
    });
    let host = PluginHost::new(RuntimeConfig::default()).unwrap();
    let counter = prepare(&host, "counter").await;
    let access = Arc::new(wasaga::grants::Access {
        http: vec![format!("http://{addr}").parse().unwrap()],
        ..Default::default()
    });
    let out = host
        .execute(
            &counter,
            call(
                3,
                2,
                serde_json::json!({"counter_url": format!("http://{addr}")}),
            ),
            &limits(),
            CancellationToken::new(),
            access,
        )
        .await;
    let audit: Vec<&str> = out
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .filter(|m| m.starts_with("http "))
        .collect();
    assert_eq!(done(out.result)["counted_3"], 2);
    // One line per request: method, origin and path; no query string.
    assert_eq!(audit.len(), 1, "{audit:?}");
    let prefix = format!("http GET http://{addr}/count -> 200 (");
    assert!(
        audit[0].starts_with(&prefix) && audit[0].ends_with(" ms)"),
        "{audit:?}"
    );
    let request = server.await.unwrap();
    assert!(
        request.starts_with(
            "GET /count?saga=saga-1&step=3&phase=execute&attempt=2&key=saga-1:3:execute "
        ),
        "{request}"
    );
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_refused() {
    let host = host();
    let cases: [(&[u8], &str); 3] = [
        (b"", "not a component: the body is empty"),
        (
            b"#!/bin/sh\necho hi\n",
            "not a component: the body does not start with the Wasm magic number",
        ),
        (
            &wat::parse_str("(module)").unwrap(),
            "not a component: this is a core Wasm module",
        ),
    ];
    for (bytes, expected) in cases {
        let err = host.prepare(bytes).await.unwrap_err();
        assert!(matches!(err, PluginError::NotAComponent(_)), "{err:?}");
        assert!(err.to_string().starts_with(expected), "{err}");
    }
    // A component header with garbage after it does not compile.
    let mut broken = component("echo");
    broken.truncate(broken.len() / 2);
    let err = host.prepare(&broken).await.unwrap_err();
    assert!(matches!(err, PluginError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn components_over_the_size_limit_are_refused() {
    let host = PluginHost::new(RuntimeConfig {
        max_component_bytes: 1024,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let err = host.prepare(&component("echo")).await.unwrap_err();
    assert!(
        matches!(err, PluginError::TooLarge { limit: 1024, .. }),
        "{err:?}"
    );
}

/// A component for `world` in `wit` whose functions are all `unreachable`:
/// enough to test what registration says about its shape.
fn dummy_component(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    resolve
        .push_str(
            "step.wit",
            &std::fs::read_to_string(repo().join("wit/step.wit")).unwrap(),
        )
        .unwrap();
    let package = resolve.push_str("test.wit", wit).unwrap();
    let world = resolve.select_world(&[package], Some(world)).unwrap();
    let mut module =
        wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .encode()
        .unwrap()
}

#[tokio::test]
async fn a_component_without_the_step_export_is_the_wrong_world() {
    let host = host();
    let bytes = dummy_component(
        "package test:other; interface greet { hello: func() -> string; } world other { export greet; }",
        "other",
    );
    let err = host.prepare(&bytes).await.unwrap_err();
    assert!(matches!(err, PluginError::WrongWorld(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "wrong world: the component exports none of `wasaga:step/step@0.1.x`, `wasaga:step/step@0.2.x` or `wasaga:step/step@0.3.x`; it exports `test:other/greet`"
    );
}

#[tokio::test]
async fn a_step_export_with_the_wrong_types_is_the_wrong_world() {
    let host = host();
    let bytes = dummy_component(
        "package wasaga:step@0.1.3;
         interface step {
             name: func() -> string;
             execute: func(input: string) -> string;
             compensate: func(input: string);
         }
         world mistyped { export step; }",
        "mistyped",
    );
    let err = host.prepare(&bytes).await.unwrap_err();
    assert!(matches!(err, PluginError::WrongWorld(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("wrong world: `wasaga:step/step@0.1.x` has the wrong function types: "),
        "{err}"
    );
}

#[tokio::test]
async fn imports_the_host_does_not_offer_are_listed() {
    let host = host();
    let bytes = dummy_component(
        "package acme:vault@1.0.0;
         interface secrets { get: func(key: string) -> string; }
         interface audit { write: func(line: string); }
         world greedy {
             import secrets;
             import audit;
             import wasaga:step/host@0.1.0;
             export wasaga:step/step@0.1.0;
         }",
        "greedy",
    );
    let err = host.prepare(&bytes).await.unwrap_err();
    let PluginError::UnsupportedImports { imports, .. } = &err else {
        panic!("expected unsupported imports, got {err:?}");
    };
    assert_eq!(
        imports,
        &["acme:vault/secrets@1.0.0", "acme:vault/audit@1.0.0"]
    );
    let message = err.to_string();
    assert!(
        message
            .starts_with("unsupported imports: acme:vault/secrets@1.0.0, acme:vault/audit@1.0.0"),
        "{message}"
    );
    assert!(message.contains("wasi:http@0.2.x"), "{message}");
}

#[tokio::test]
async fn a_name_that_breaks_the_rule_is_refused() {
    let host = host();
    let err = host.prepare(&component("misnamed")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid plugin name \"Not A Valid_Name!\": 'N' is not a lowercase letter, digit or dash; \
         a name is 1 to 64 lowercase letters, digits and dashes"
    );
}

#[tokio::test]
async fn the_compile_cache_survives_a_restart_and_heals_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let bytes = component("echo");
    let digest = Digest::of(&bytes);

    let first = PluginHost::new(config.clone()).unwrap();
    assert_eq!(
        first.prepare(&bytes).await.unwrap().loaded_from,
        LoadedFrom::Compiled
    );
    drop(first);

    let second = PluginHost::new(config.clone()).unwrap();
    let loaded = second.load(&digest, &bytes, Some("echo")).await.unwrap();
    assert_eq!(loaded.loaded_from, LoadedFrom::Cache);
    let out = second
        .execute(
            &loaded,
            call(0, 1, serde_json::json!({"message": "cached"})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(done(out.result)["echoed_at_step_0"], "cached");
    drop(second);

    // Flip one byte in the middle of the entry: the checksum catches it.
    let entry = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut file = std::fs::read(&entry).unwrap();
    let middle = file.len() / 2;
    file[middle] ^= 0xff;
    std::fs::write(&entry, &file).unwrap();
    let third = PluginHost::new(config).unwrap();
    let healed = third.load(&digest, &bytes, Some("echo")).await.unwrap();
    assert_eq!(healed.loaded_from, LoadedFrom::Compiled);
    let out = third
        .execute(
            &healed,
            call(0, 1, serde_json::json!({"message": "healed"})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(done(out.result)["echoed_at_step_0"], "healed");
    assert_ne!(
        std::fs::read(&entry).unwrap(),
        file,
        "the corrupt entry was rewritten"
    );
}

#[tokio::test]
async fn stored_bytes_must_match_their_digest() {
    let host = host();
    let wrong = Digest::of(b"something else");
    let err = host
        .load(&wrong, &component("echo"), Some("echo"))
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::DigestMismatch(_)), "{err:?}");
}

#[tokio::test]
async fn many_calls_at_once_share_the_pool() {
    let host = PluginHost::new(RuntimeConfig {
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let echo = prepare(&host, "echo").await;
    let calls = (0..64).map(|i| {
        let host = host.clone();
        let echo = echo.clone();
        async move {
            host.execute(
                &echo,
                call(i, 1, serde_json::json!({"message": i})),
                &limits(),
                CancellationToken::new(),
                Arc::default(),
            )
            .await
            .result
        }
    });
    let outputs: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(done)
        .collect();
    for (i, output) in outputs.iter().enumerate() {
        assert_eq!(output[&format!("echoed_at_step_{i}")], i);
    }
}

#[tokio::test]
async fn the_python_example_runs_with_wasi_and_captured_stdout() {
    let host = host();
    let py = host.prepare(&polyglot("python-echo.wasm")).await.unwrap();
    assert_eq!(py.name, "py-echo");
    let out = host
        .execute(
            &py,
            call(1, 1, serde_json::json!({"message": "from python"})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(done(out.result)["py_echoed_at_step_1"], "from python");
    let messages: Vec<&str> = out.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(
        messages.contains(&"[stdout] py-echo running step 1, attempt 1"),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"echoing for saga saga-1"),
        "{messages:?}"
    );
    let out = host
        .execute(
            &py,
            call(1, 1, serde_json::json!({"py_fail": "on purpose"})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(
        out.result.unwrap_err(),
        StepFailure::Fatal("py-echo was asked to fail: on purpose".into())
    );
}

#[tokio::test]
async fn the_javascript_example_runs_with_wasi_and_captured_stdout() {
    let host = host();
    let js = host.prepare(&polyglot("js-echo.wasm")).await.unwrap();
    assert_eq!(js.name, "js-echo");
    let out = host
        .execute(
            &js,
            call(
                0,
                1,
                serde_json::json!({"message": "from js", "js_resource": "hi"}),
            ),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(done(out.result)["js_echoed_at_step_0"], "from js");
    assert_eq!(out.resources.len(), 1);
    assert_eq!(out.resources[0].spec, serde_json::json!({"text": "hi"}));
    let messages: Vec<&str> = out.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(
        messages.contains(&"[stdout] js-echo running step 0, attempt 1"),
        "{messages:?}"
    );
    let out = host
        .execute(
            &js,
            call(0, 1, serde_json::json!({"js_fail": "on purpose"})),
            &limits(),
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert_eq!(
        out.result.unwrap_err(),
        StepFailure::Fatal("js-echo was asked to fail: on purpose".into())
    );
}
