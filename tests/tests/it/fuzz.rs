//! The request space, fuzzed: random methods, paths (real routes with
//! random segments, and junk), headers (content types a JSON route does
//! not take, foreign `Origin`, `Host` and `Sec-Fetch-Site` as a hostile
//! page would send them), JSON shapes with numbers at their edges, and
//! component bytes, against one real server. Every answer must
//! be one the OpenAPI document allows (the test client checks each), none
//! may be a 5xx, and the server must still be healthy and still run a
//! saga at the end.
//!
//! `WASAGA_FUZZ_CASES` sets the number of cases (default 1000); the seed is
//! fixed unless `WASAGA_FUZZ_SEED` is `random` or a number.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use std::time::Duration;
use wasaga_tests::{Backend, TestDb, TestServer, component};

/// JSON values of every shape, numbers at their edges included.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(i64::MAX)),
            Just(json!(i64::MIN)),
            Just(json!(u64::MAX)),
            Just(json!(1e308)),
            Just(json!(-0.0)),
            Just(json!(0.5)),
            any::<i64>().prop_map(|n| json!(n)),
        ],
        ".{0,40}".prop_map(Value::String),
        Just(json!("echo")),
        Just(json!(
            "sha256:0000000000000000000000000000000000000000000000000000000000000000"
        )),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Object keys: the API's own field names, and anything.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "kind", "steps", "inputs", "plugin", "max_attempts", "timeout_ms", "max_memory_bytes",
            "max_output_bytes", "max_wait_ms", "deployment_id", "triggered_by", "template", "note",
        ])
        .prop_map(String::from),
        1 => ".{0,12}",
    ]
}

/// A start request that is nearly right: the real fields, random values.
fn start_request() -> impl Strategy<Value = Value> {
    let step = prop_oneof![
        Just(json!("echo")),
        Just(json!("fail")),
        ".{0,20}".prop_map(Value::String),
        (
            prop_oneof![Just(json!("echo")), any_json()],
            any_json(),
            any_json(),
            any_json(),
            any_json()
        )
            .prop_map(|(plugin, a, t, m, o)| json!({
                "plugin": plugin, "max_attempts": a, "timeout_ms": t,
                "max_memory_bytes": m, "max_output_bytes": o,
            })),
        any_json(),
    ];
    (
        prop_oneof![Just(json!("fuzz")), any_json()],
        prop::collection::vec(step, 0..5),
        prop_oneof![Just(json!({"message": "m"})), any_json()],
        any_json(),
    )
        .prop_map(|(kind, steps, inputs, extra)| {
            let mut body = json!({"kind": kind, "steps": steps, "inputs": inputs});
            if let Value::Object(extra) = extra {
                for (k, v) in extra.into_iter().take(2) {
                    body[k] = v;
                }
            }
            body
        })
}

/// Path segments that stress a router: ids, digests, traversal, encodings.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("019ac4f2-6b1e-7c3a-9d2e-5f1a2b3c4d5e".to_string()),
        Just("sha256:0000000000000000000000000000000000000000000000000000000000000000".to_string()),
        Just("echo".to_string()),
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just("%00".to_string()),
        Just("a".repeat(3000)),
        "[a-zA-Z0-9_~:@!$&'()*+,;=.-]{0,24}",
        "[\\PC]{0,8}".prop_map(|s| url_escape(&s)),
    ]
}

fn url_escape(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/v1/plugins".to_string()),
        Just("/v1/sagas".to_string()),
        segment().prop_map(|s| format!("/v1/plugins/{s}")),
        segment().prop_map(|s| format!("/v1/sagas/{s}")),
        (
            segment(),
            prop::sample::select(vec!["cancel", "pause", "resume", "retry", "events", "x"])
        )
            .prop_map(|(s, action)| format!("/v1/sagas/{s}/{action}")),
        (
            prop::sample::select(vec![
                "status",
                "kind",
                "limit",
                "cursor",
                "deployment_id",
                "template"
            ]),
            segment()
        )
            .prop_map(|(k, v)| format!("/v1/sagas?{k}={v}")),
        "/[a-z0-9/._-]{0,30}",
        Just("/v1/openapi.json".to_string()),
        Just("/healthz".to_string()),
    ]
}

/// What a case sends.
#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

fn body() -> impl Strategy<Value = Body> {
    let echo = component("echo");
    prop_oneof![
        1 => Just(Body::None),
        3 => start_request().prop_map(Body::Json),
        2 => any_json().prop_map(Body::Json),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Body::Bytes),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|tail| {
            let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
            bytes.extend(tail);
            Body::Bytes(bytes)
        }),
        1 => (0..echo.len(), any::<u8>()).prop_map(move |(at, byte)| {
            let mut bytes = echo.clone();
            bytes[at] ^= byte | 1;
            Body::Bytes(bytes)
        }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    method: reqwest::Method,
    path: String,
    body: Body,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    authorization: Option<String>,
    /// `Origin`: none, this server, another site, or `null`.
    origin: Option<&'static str>,
    /// `Host`: as sent, or a name that is not this server's.
    foreign_host: bool,
    /// `Sec-Fetch-Site`, as browsers send it.
    fetch_site: Option<&'static str>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
        ]),
        path(),
        body(),
        prop::option::of(prop::sample::select(vec![
            "application/json",
            "application/wasm",
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin1",
            "application/merge-patch+json",
        ])),
        prop::option::of("[ -~]{0,300}"),
        prop::option::of(prop_oneof![Just("Bearer ".to_string()), "[ -~]{0,40}"]),
        (
            prop::option::of(prop::sample::select(vec![
                "self",
                "http://localhost:1",
                "https://attacker.example",
                "null",
            ])),
            prop::bool::weighted(0.1),
            prop::option::of(prop::sample::select(vec![
                "same-origin",
                "same-site",
                "cross-site",
                "none",
            ])),
        ),
    )
        .prop_map(
            |(
                method,
                path,
                body,
                content_type,
                idempotency_key,
                authorization,
                (origin, foreign_host, fetch_site),
            )| Case {
                method: method.parse().unwrap(),
                path,
                body,
                content_type: content_type.map(String::from),
                idempotency_key,
                authorization,
                origin,
                foreign_host,
                fetch_site,
            },
        )
}

/// A seed from the clock, for exploring beyond the fixed one.
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

#[test]
fn no_request_makes_the_server_fail() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(TestDb::new(Backend::Sqlite));
    let server = rt.block_on(TestServer::on(&db, |o| {
        o.runtime.max_component_bytes = 1 << 20;
    }));
    let cases: u32 = std::env::var("WASAGA_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let seed = std::env::var("WASAGA_FUZZ_SEED").ok();
    let rng = match seed.as_deref() {
        Some(n) => {
            let n: u64 = match n {
                "random" => rand_seed(),
                n => n.parse().expect("WASAGA_FUZZ_SEED is a number or `random`"),
            };
            eprintln!("fuzz seed: {n}");
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&n.to_le_bytes());
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
        }
        None => TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    };
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&case(), |case| {
        rt.block_on(async {
            let url = format!("{}{}", server.base, case.path);
            let mut request = server.http.request(case.method.clone(), &url);
            if let Some(ct) = &case.content_type {
                request = request.header("content-type", ct);
            }
            if let Some(key) = &case.idempotency_key {
                request = request.header("idempotency-key", key);
            }
            if let Some(auth) = &case.authorization {
                request = request.header("authorization", auth);
            }
            match case.origin {
                Some("self") => request = request.header("origin", &server.base),
                Some(other) => request = request.header("origin", other),
                None => {}
            }
            if case.foreign_host {
                request = request.header("host", "rebind.attacker.example");
            }
            if let Some(site) = case.fetch_site {
                request = request.header("sec-fetch-site", site);
            }
            request = match &case.body {
                Body::None => request,
                Body::Json(v) => request.body(serde_json::to_vec(v).unwrap()),
                Body::Bytes(b) => request.body(b.clone()),
            };
            // The client checks the answer against the OpenAPI document.
            let response = request
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("no answer: {e:?}")))?;
            let status = response.status();
            let changes = !matches!(case.method.as_str(), "GET" | "HEAD" | "OPTIONS");
            if case.foreign_host {
                prop_assert_eq!(status.as_u16(), 421, "a foreign Host is never answered");
            } else if changes
                && (matches!(case.origin, Some(o) if o != "self")
                    || (case.origin.is_none()
                        && matches!(case.fetch_site, Some("cross-site" | "same-site"))))
            {
                prop_assert_eq!(
                    status.as_u16(),
                    403,
                    "a state change from another origin is refused"
                );
            }
            prop_assert!(
                !status.is_server_error(),
                "{} {}: {status}: {}",
                case.method,
                case.path,
                response.text().await.unwrap_or_default()
            );
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(async {
        assert!(wasaga_tests::healthy(&server.http, &server.base).await);
        // By digest: a fuzzed upload may have taken the name `echo` over
        // (a bit-flipped echo can be a valid component that traps).
        let echo = wasaga::model::Digest::of(&component("echo"));
        let saga: Value = server
            .http
            .post(server.url("/v1/sagas"))
            .json(&json!({"kind": "after-fuzz", "steps": [echo.as_str()], "inputs": {"message": "still"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let done = wasaga_tests::poll_saga(
            &server.http,
            &server.base,
            saga["id"].as_str().unwrap(),
            Duration::from_secs(60),
            |s| s["status"] == "completed",
        )
        .await;
        assert_eq!(done["context"]["echoed_at_step_0"], "still");
    });
    eprintln!("fuzz: {cases} cases, no 5xx, the server healthy after");
}
