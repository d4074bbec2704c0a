//! OpenTelemetry traces against a real OTLP/HTTP receiver on 127.0.0.1:0
//! that decodes the protobuf the host sends with the protocol's own
//! messages (`opentelemetry-proto`): a saga is one trace (the start's
//! `traceparent`'s, or its own whose id is the saga id), with a span per
//! call (each poll its own) under one saga span sent when it ends; the
//! provider a step calls sees `traceparent` naming the call's span; a saga
//! that moves to another host stays one trace; a malformed `traceparent`
//! is ignored, not refused.

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasaga_tests::{Counter, TestDb, TestServer, on_both, poll_saga};

const WITHIN: Duration = Duration::from_secs(60);

/// A span as the receiver decoded it, with the host that sent it.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    instance: String,
    span: Span,
}

impl Exported {
    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
    fn attribute(&self, key: &str) -> Option<String> {
        attribute(&self.span.attributes, key)
    }
    fn status(&self) -> SpanStatus {
        self.span
            .status
            .as_ref()
            .map_or(SpanStatus::Unset, |s| s.code())
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// The collector: `POST /v1/traces` with `application/x-protobuf`.
#[derive(Clone)]
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Exported>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let shared = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let spans = shared.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut spans = spans.lock().unwrap();
                    for resource in request.resource_spans {
                        let attributes =
                            resource.resource.map(|r| r.attributes).unwrap_or_default();
                        let service = attribute(&attributes, "service.name").unwrap_or_default();
                        let instance =
                            attribute(&attributes, "service.instance.id").unwrap_or_default();
                        for scope in resource.scope_spans {
                            for span in scope.spans {
                                spans.push(Exported {
                                    service: service.clone(),
                                    instance: instance.clone(),
                                    span,
                                });
                            }
                        }
                    }
                    ([("content-type", "application/x-protobuf")], Bytes::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, spans }
    }

    /// The spans of `trace`, once its saga span has arrived.
    async fn trace(&self, trace: &str) -> Vec<Exported> {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let spans: Vec<Exported> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id() == trace)
                .cloned()
                .collect();
            if spans.iter().any(|s| s.span.name.starts_with("saga ")) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no saga span in trace {trace}: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn traced_server(db: &TestDb, receiver: &Receiver, node: &str) -> TestServer {
    let endpoint = receiver.url.parse().unwrap();
    let node = node.to_string();
    TestServer::on(db, |o| {
        o.telemetry.otlp_endpoint = Some(endpoint);
        o.telemetry.export_every = Duration::from_millis(100);
        o.runner.node_id = Some(node);
    })
    .await
}

async fn start(server: &TestServer, traceparent: Option<&str>, body: Value) -> String {
    let mut request = server.http.post(server.url("/v1/sagas")).json(&body);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn ended(server: &TestServer, id: &str) -> Value {
    poll_saga(&server.http, &server.base, id, WITHIN, |s| {
        ["completed", "rolled_back", "failed"].contains(&s["status"].as_str().unwrap_or(""))
    })
    .await
}

fn named<'a>(spans: &'a [Exported], name: &str) -> Vec<&'a Exported> {
    let mut found: Vec<&Exported> = spans.iter().filter(|s| s.span.name == name).collect();
    found.sort_by_key(|s| s.span.start_time_unix_nano);
    found
}

on_both! {
    a_saga_is_one_trace_with_a_span_per_call_and_providers_see_the_call(backend) {
        let db = TestDb::new(backend).await;
        let receiver = Receiver::start().await;
        let counter = Counter::start().await;
        let server = traced_server(&db, &receiver, "host-a").await;
        server.upload("poll").await;
        server.upload("fail").await;
        counter.grant_on_to("poll", &server.http, &server.base).await;

        // Started inside the caller's trace: poll twice, then fail, so the
        // poll step is compensated.
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller_span = "00f067aa0ba902b7";
        let inputs = json!({"counter_url": counter.url(), "polls": 2, "poll_ms": 50});
        let id = start(
            &server,
            Some(&format!("00-{trace}-{caller_span}-01")),
            json!({"kind": "traced", "steps": ["poll", "fail"], "inputs": inputs}),
        )
        .await;
        assert_eq!(ended(&server, &id).await["status"], "rolled_back");
        let spans = receiver.trace(trace).await;

        let saga = named(&spans, "saga traced");
        assert_eq!(saga.len(), 1, "{spans:#?}");
        let saga = saga[0];
        assert_eq!(saga.parent_id(), caller_span, "the saga span's parent is the caller's");
        assert_eq!(saga.attribute("wasaga.saga.id").as_deref(), Some(id.as_str()));
        assert_eq!(saga.attribute("wasaga.saga.status").as_deref(), Some("rolled_back"));
        assert_eq!(saga.status(), SpanStatus::Error);
        assert_eq!(saga.service, "wasaga");
        assert_eq!(saga.instance, "host-a");

        // A span per call, each a child of the saga span: every poll is its
        // own call, so its own span.
        let executes = named(&spans, "execute poll");
        let outcomes: Vec<_> = executes
            .iter()
            .map(|s| s.attribute("wasaga.call.outcome").unwrap())
            .collect();
        assert_eq!(outcomes, ["poll", "poll", "ok"], "{spans:#?}");
        let failed = named(&spans, "execute fail");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].attribute("wasaga.call.outcome").as_deref(), Some("fatal"));
        assert_eq!(failed[0].status(), SpanStatus::Error);
        let compensated = named(&spans, "compensate poll");
        assert_eq!(compensated.len(), 1);
        assert_eq!(compensated[0].status(), SpanStatus::Ok);
        assert_eq!(spans.len(), 1 + 3 + 1 + 1, "nothing else in the trace: {spans:#?}");
        for call in executes.iter().chain(&failed).chain(&compensated) {
            assert_eq!(call.parent_id(), saga.span_id());
            assert_eq!(call.attribute("wasaga.saga.id").as_deref(), Some(id.as_str()));
            assert!(call.span.start_time_unix_nano >= saga.span.start_time_unix_nano);
            assert!(call.span.end_time_unix_nano <= saga.span.end_time_unix_nano);
        }
        assert_eq!(executes[2].attribute("wasaga.step.index").as_deref(), Some("0"));
        assert_eq!(failed[0].attribute("wasaga.step.index").as_deref(), Some("1"));

        // The provider saw each call's own span as the parent of its request.
        let calls = counter.calls_of(&id.parse().unwrap());
        assert_eq!(calls.len(), 4, "3 executes and 1 compensate: {calls:?}");
        let mut seen = Vec::new();
        for call in &calls {
            let traceparent = call.traceparent.clone().expect("a traceparent on every request");
            let parts: Vec<&str> = traceparent.split('-').collect();
            assert_eq!(parts.len(), 4, "{traceparent}");
            assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"));
            let span = spans
                .iter()
                .find(|s| s.span_id() == parts[2])
                .unwrap_or_else(|| panic!("{traceparent} names no exported span"));
            assert_eq!(span.attribute("wasaga.call.phase").as_deref(), Some(call.phase.as_str()));
            seen.push(parts[2].to_string());
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 4, "each call has a span of its own");

        // Without a traceparent (or with a malformed one, which is ignored)
        // the saga is its own trace: its id is the saga id.
        let id = start(
            &server,
            Some("00-not-a-trace-01"),
            json!({"kind": "own", "steps": ["poll"], "inputs": {"counter_url": counter.url()}}),
        )
        .await;
        assert_eq!(ended(&server, &id).await["status"], "completed");
        let own = id.replace('-', "");
        let spans = receiver.trace(&own).await;
        let saga = named(&spans, "saga own");
        assert_eq!(saga.len(), 1);
        assert_eq!(saga[0].parent_id(), "", "a root span");
        assert_eq!(saga[0].status(), SpanStatus::Ok);
        assert_eq!(named(&spans, "execute poll").len(), 1);
        let calls = counter.calls_of(&id.parse().unwrap());
        assert!(calls[0].traceparent.as_deref().unwrap().starts_with(&format!("00-{own}-")));
        server.stop().await.unwrap();
    }

    a_saga_that_moves_to_another_host_stays_one_trace(backend) {
        let db = TestDb::new(backend).await;
        let receiver = Receiver::start().await;
        let counter = Counter::start().await;
        let first = traced_server(&db, &receiver, "host-a").await;
        first.upload("poll").await;
        counter.grant_on_to("poll", &first.http, &first.base).await;
        let inputs = json!({"counter_url": counter.url(), "polls": 2, "poll_ms": 1500});
        let id = start(&first, None, json!({"kind": "moved", "steps": ["poll"], "inputs": inputs})).await;
        let saga_id = id.parse().unwrap();
        let deadline = tokio::time::Instant::now() + WITHIN;
        while counter.calls_of(&saga_id).is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the first call never came");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The first host goes while the saga waits; its span is sent as it
        // shuts down. Another host finishes the saga.
        first.stop().await.unwrap();
        let second = traced_server(&db, &receiver, "host-b").await;
        assert_eq!(ended(&second, &id).await["status"], "completed");
        let spans = receiver.trace(&id.replace('-', "")).await;
        let saga = named(&spans, "saga moved");
        assert_eq!(saga.len(), 1);
        assert_eq!(saga[0].instance, "host-b");
        let calls = named(&spans, "execute poll");
        assert_eq!(calls.len(), 3, "{spans:#?}");
        assert_eq!(calls[0].instance, "host-a");
        assert_eq!(calls[2].instance, "host-b");
        for call in &calls {
            assert_eq!(call.parent_id(), saga[0].span_id(), "one saga span, whoever sends it");
        }
        second.stop().await.unwrap();
    }
}
