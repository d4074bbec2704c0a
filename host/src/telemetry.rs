//! OpenTelemetry traces of sagas (`--otlp-endpoint`): one trace per saga,
//! a span per plugin call (each execute, each poll, each compensate) and
//! one for the saga when it ends, sent over OTLP/HTTP (protobuf) by the
//! SDK's batch processor; and the W3C `traceparent` the host puts on every
//! outbound request a step makes, so a provider's own traces join the
//! saga's.
//!
//! Spans are records made when their work ends (start and end known), never
//! objects held open: a saga waits for hours between calls, moves between
//! hosts, and the host that ends it may not be the one that started it. So
//! every id is derived, not remembered: the trace id is the saga id's 16
//! bytes (or the trace id of the `traceparent` its start carried, the one
//! thing stored), the saga span's id is derived from the saga id, and every
//! call span is its child. Any host can add to any saga's trace.
//!
//! Exporting never slows the runner: a finished span goes into the batch
//! processor's bounded queue (dropped when it is full) and the SDK's own
//! thread sends batches, through this host's HTTP client.

use crate::config::TelemetryConfig;
use crate::model::{SagaId, SagaRun, SagaStatus, Timestamp};
use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanExporter as _, SpanLinks,
    SpanProcessor,
};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::time::{Duration, SystemTime};

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("--otlp-endpoint {0}: {1}")]
    Endpoint(String, String),
}

/// This host's tracing: off (no spans, no `traceparent`), or exporting.
#[derive(Debug, Default)]
pub struct Telemetry {
    export: Option<Export>,
}

struct Export {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").finish_non_exhaustive()
    }
}

/// Where a saga's spans go: its trace, the saga span every call span is a
/// child of, and the saga span's own parent (the start's `traceparent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaTrace {
    pub trace_id: TraceId,
    pub saga_span: SpanId,
    pub parent: Option<SpanId>,
}

impl SagaTrace {
    pub fn of(saga: &SagaRun) -> SagaTrace {
        let remote = saga.trace_parent.as_deref().and_then(remote_context);
        SagaTrace {
            trace_id: remote.as_ref().map_or_else(
                || TraceId::from_bytes(*saga.id.0.as_bytes()),
                SpanContext::trace_id,
            ),
            saga_span: saga_span_id(&saga.id),
            parent: remote.as_ref().map(SpanContext::span_id),
        }
    }
}

/// The saga span's id: the first 8 bytes of a hash of the saga id (never
/// all zero, which would be invalid).
fn saga_span_id(id: &SagaId) -> SpanId {
    let digest = Sha256::new()
        .chain_update(b"wasaga saga span ")
        .chain_update(id.0.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    if bytes == [0; 8] {
        bytes[7] = 1;
    }
    SpanId::from_bytes(bytes)
}

/// The span context a W3C `traceparent` value carries, when it is valid.
fn remote_context(traceparent: &str) -> Option<SpanContext> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        http::HeaderValue::from_str(traceparent).ok()?,
    );
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.clone())
}

/// A start's `traceparent` header, as stored with the saga: `None` when
/// absent or not valid (which the W3C spec says to ignore, not refuse).
pub fn traceparent_of(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let context = remote_context(value)?;
    Some(traceparent(context.trace_id(), context.span_id()))
}

/// A `traceparent` header value: version 00, sampled.
fn traceparent(trace_id: TraceId, span_id: SpanId) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

/// A plugin call under way: its span is made when it ends.
#[derive(Debug)]
pub struct CallSpan {
    trace: SagaTrace,
    span_id: SpanId,
    name: String,
    started: SystemTime,
    attributes: Vec<KeyValue>,
}

impl CallSpan {
    /// The `traceparent` of requests made in this call: this span is their
    /// parent.
    pub fn traceparent(&self) -> String {
        traceparent(self.trace.trace_id, self.span_id)
    }
}

/// What a call span says about its call.
pub struct CallInfo<'a> {
    pub phase: &'a str,
    pub step_index: u32,
    pub plugin: &'a str,
    pub attempt: u32,
}

impl Telemetry {
    /// Exporting to `config.otlp_endpoint` when there is one; the batches
    /// are sent on `runtime`. `node` names this host in the resource.
    pub fn new(
        config: &TelemetryConfig,
        node: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Telemetry, TelemetryError> {
        let Some(base) = &config.otlp_endpoint else {
            return Ok(Telemetry::default());
        };
        let endpoint = traces_url(base)?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.export_timeout)
            .build()
            .map_err(|e| TelemetryError::Endpoint(base.to_string(), e.to_string()))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(OtlpClient { client, runtime })
            .with_endpoint(endpoint.as_str())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| TelemetryError::Endpoint(base.to_string(), e.to_string()))?;
        exporter.set_resource(
            &Resource::builder()
                .with_service_name("wasaga")
                .with_attribute(KeyValue::new("service.instance.id", node.to_string()))
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let processor = BatchSpanProcessor::new(
            exporter,
            BatchConfigBuilder::default()
                .with_scheduled_delay(config.export_every)
                .with_max_queue_size(config.max_queued_spans)
                .build(),
        );
        tracing::info!(endpoint = %endpoint, "exporting traces over OTLP");
        Ok(Telemetry {
            export: Some(Export {
                processor,
                scope: InstrumentationScope::builder("wasaga")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
            }),
        })
    }

    /// A call of `saga`'s step begins (`None` when tracing is off).
    pub fn call(&self, saga: &SagaRun, info: CallInfo<'_>) -> Option<CallSpan> {
        self.export.as_ref()?;
        let mut span_id = [0u8; 8];
        while span_id == [0; 8] {
            rand::fill(&mut span_id);
        }
        Some(CallSpan {
            trace: SagaTrace::of(saga),
            span_id: SpanId::from_bytes(span_id),
            name: format!("{} {}", info.phase, info.plugin),
            started: SystemTime::now(),
            attributes: vec![
                KeyValue::new("wasaga.saga.id", saga.id.to_string()),
                KeyValue::new("wasaga.saga.kind", saga.kind.clone()),
                KeyValue::new("wasaga.step.index", i64::from(info.step_index)),
                KeyValue::new("wasaga.step.plugin", info.plugin.to_string()),
                KeyValue::new("wasaga.call.phase", info.phase.to_string()),
                KeyValue::new("wasaga.call.attempt", i64::from(info.attempt)),
            ],
        })
    }

    /// The call ended with `outcome` (`ok`, `poll`, `retryable`, `fatal`,
    /// `interrupted`) and, when it failed, `error` (already redacted).
    pub fn call_ended(&self, span: CallSpan, outcome: &str, error: Option<&str>) {
        let Some(export) = &self.export else {
            return;
        };
        let mut attributes = span.attributes;
        attributes.push(KeyValue::new("wasaga.call.outcome", outcome.to_string()));
        let status = match error {
            Some(error) => Status::error(error.to_string()),
            None => Status::Ok,
        };
        export.end(Finished {
            trace_id: span.trace.trace_id,
            span_id: span.span_id,
            parent: Some(span.trace.saga_span),
            remote_parent: false,
            name: span.name,
            start: span.started,
            end: SystemTime::now(),
            attributes,
            status,
        });
    }

    /// `saga` reached the final `status`, committed just now: its span, from
    /// its creation to now. (Not to the transition's time: that is in
    /// whole milliseconds, and would end the span before a call that
    /// ended within the same millisecond.)
    pub fn saga_ended(&self, saga: &SagaRun, status: SagaStatus) {
        let Some(export) = &self.export else {
            return;
        };
        let trace = SagaTrace::of(saga);
        let mut attributes = vec![
            KeyValue::new("wasaga.saga.id", saga.id.to_string()),
            KeyValue::new("wasaga.saga.kind", saga.kind.clone()),
            KeyValue::new("wasaga.saga.status", status.as_str()),
            KeyValue::new("wasaga.saga.steps", saga.plan.len() as i64),
        ];
        if let Some(template) = &saga.template {
            attributes.push(KeyValue::new("wasaga.saga.template", template.clone()));
        }
        if let Some(deployment) = &saga.deployment_id {
            attributes.push(KeyValue::new("wasaga.deployment.id", deployment.clone()));
        }
        let status = match (status, &saga.error) {
            (SagaStatus::Completed, _) => Status::Ok,
            (_, Some(error)) => Status::error(error.message.clone()),
            (status, None) => Status::error(status.as_str()),
        };
        export.end(Finished {
            trace_id: trace.trace_id,
            span_id: trace.saga_span,
            parent: trace.parent,
            remote_parent: trace.parent.is_some(),
            name: format!("saga {}", saga.kind),
            start: system_time(saga.created_at),
            end: SystemTime::now(),
            attributes,
            status,
        });
    }

    /// Sends what is queued and stops the exporter (a blocking wait for its
    /// thread: call it off the async threads).
    pub fn shutdown(&self) {
        if let Some(export) = &self.export
            && let Err(e) = export.processor.shutdown()
        {
            tracing::warn!(error = %e, "the trace exporter did not shut down cleanly");
        }
    }
}

/// A span whose work is over, as this module makes them.
struct Finished {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    remote_parent: bool,
    name: String,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    status: Status,
}

impl Export {
    /// Queues `span` for the next batch (dropped when the queue is full).
    fn end(&self, span: Finished) {
        self.processor.on_end(SpanData {
            span_context: SpanContext::new(
                span.trace_id,
                span.span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: span.parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: span.remote_parent,
            span_kind: SpanKind::Internal,
            name: Cow::Owned(span.name),
            start_time: span.start,
            end_time: span.end,
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: span.status,
            instrumentation_scope: self.scope.clone(),
        });
    }
}

fn system_time(at: Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(at.millis().max(0) as u64)
}

/// `{base}/v1/traces`, or `base` itself when it names a path.
fn traces_url(base: &url::Url) -> Result<url::Url, TelemetryError> {
    if !matches!(base.scheme(), "http" | "https") {
        return Err(TelemetryError::Endpoint(
            base.to_string(),
            "the URL must be http or https".into(),
        ));
    }
    if base.path() != "/" && !base.path().is_empty() {
        return Ok(base.clone());
    }
    base.join("v1/traces")
        .map_err(|e| TelemetryError::Endpoint(base.to_string(), e.to_string()))
}

/// The exporter's HTTP client: this host's reqwest client, run on the
/// host's runtime (the SDK's export thread has none of its own).
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let (status, body) = self
            .runtime
            .spawn(async move {
                let response = client.execute(request).await?;
                let status = response.status();
                Ok::<_, reqwest::Error>((status, response.bytes().await?))
            })
            .await??;
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saga() -> SagaRun {
        SagaRun::pending(
            "k",
            Vec::new(),
            serde_json::json!({}),
            None,
            None,
            Timestamp(0),
        )
    }

    #[test]
    fn a_saga_without_traceparent_is_its_own_trace() {
        let saga = saga();
        let trace = SagaTrace::of(&saga);
        assert_eq!(trace.trace_id.to_string(), saga.id.0.simple().to_string());
        assert_eq!(trace.parent, None);
        assert_eq!(trace.saga_span, saga_span_id(&saga.id));
        assert_ne!(trace.saga_span, SpanId::INVALID);
    }

    #[test]
    fn a_start_traceparent_is_kept_and_a_bad_one_ignored() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let kept = traceparent_of(&headers).unwrap();
        assert_eq!(
            kept,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let mut saga = saga();
        saga.trace_parent = Some(kept);
        let trace = SagaTrace::of(&saga);
        assert_eq!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace.parent.unwrap().to_string(), "00f067aa0ba902b7");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "not a traceparent",
        ] {
            headers.insert("traceparent", bad.parse().unwrap());
            assert_eq!(traceparent_of(&headers), None, "{bad}");
        }
    }

    #[test]
    fn the_traces_path_is_added_to_a_base_url_only() {
        let url = |s: &str| traces_url(&s.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(
            url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            url("https://otel.example/custom/path").unwrap(),
            "https://otel.example/custom/path"
        );
        assert!(url("ftp://otel.example").is_err());
    }
}
