//! What one plugin call sees and leaves behind: the per-call store data.
//!
//! Every call gets a fresh [`CallState`]: WASI with nothing granted (no
//! preopened directories, no environment or arguments, no sockets or name
//! lookup; clocks and random allowed), stdout and stderr captured line by line
//! into the call's log, `wasi:http` whose every request is checked against
//! the plugin's grants (none unless an admin grants origins), and the
//! two host imports of the step world: `log` and `record-resource`. All of it
//! is bounded by the call's [`StepLimits`]: a guest cannot grow the host's
//! memory by logging, printing or recording without end. Breaches of the
//! step contract by the guest (a resource spec that is not JSON) are kept
//! apart from traps, so the runner can fail the step for good instead of
//! retrying a bug.

use super::bindings::{v0_1, v0_2, v0_3};
use super::outbound::Outbound;
use crate::config::StepLimits;
use crate::grants::SecretMode;
use crate::grants::{Access, Origin};
use crate::model::{LogLevel, LogLine, RecordedResource};
use crate::secrets::Redactor;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The store data of one plugin call.
pub(crate) struct CallState {
    /// Built on the guest's first WASI call: components written in Rust
    /// against the step world import no WASI, and building a context (clocks,
    /// seeded random generators) is a measurable part of a short call.
    wasi: Option<WasiCtx>,
    http: WasiHttpCtx,
    http_policy: HttpPolicy,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log: Arc<Mutex<CallLog>>,
    resources: Vec<RecordedResource>,
    limits: StepLimits,
}

/// A guest broke the step contract in a host import call (for example, a
/// resource spec that is not JSON). The call traps with this error, and the
/// runner fails the step for good: retrying a bug does not fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ContractViolation(pub String);

impl CallState {
    pub(crate) fn new(
        plugin: &str,
        limits: &StepLimits,
        access: Arc<Access>,
        http: HttpLimits,
        outbound: Arc<Outbound>,
        deadline: Instant,
        traceparent: Option<String>,
    ) -> CallState {
        let log = Arc::new(Mutex::new(CallLog::new(limits, access.redactor.clone())));
        CallState {
            wasi: None,
            http: WasiHttpCtx::new(),
            http_policy: HttpPolicy {
                plugin: plugin.into(),
                access,
                log: log.clone(),
                limits: http,
                outbound,
                deadline,
                sent: 0,
                traceparent: traceparent.and_then(|t| http::HeaderValue::from_str(&t).ok()),
            },
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.max_memory_bytes),
            log,
            resources: Vec::new(),
            limits: limits.clone(),
        }
    }

    /// Ends the call: flushes partial stdio lines and hands over the log and
    /// the recorded resources.
    pub(crate) fn finish(self) -> (Vec<LogLine>, Vec<RecordedResource>) {
        let log = std::mem::replace(
            &mut *self.log.lock().expect("call log lock"),
            CallLog::empty(),
        );
        (log.into_lines(), self.resources)
    }
}

/// WASI with nothing granted: no preopened directories, environment,
/// arguments, sockets or name lookup; clocks and random as the host's;
/// stdout and stderr into the call's log.
fn sandboxed_wasi(log: &Arc<Mutex<CallLog>>) -> WasiCtx {
    let mut wasi = WasiCtx::builder();
    wasi.stdout(CapturedStdio {
        log: log.clone(),
        stream: StdStream::Stdout,
    })
    .stderr(CapturedStdio {
        log: log.clone(),
        stream: StdStream::Stderr,
    })
    .allow_tcp(false)
    .allow_udp(false)
    .allow_ip_name_lookup(false);
    wasi.build()
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let log = &self.log;
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| sandboxed_wasi(log)),
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

impl v0_1::wasaga::step::types::Host for CallState {}
impl v0_2::wasaga::step::types::Host for CallState {}
impl v0_3::wasaga::step::types::Host for CallState {}

/// `wasaga:step/host`, the same in both versions: each version's call
/// lands in [`CallState::log_line`] and [`CallState::record_resource`].
macro_rules! step_host {
    ($($version:ident),*) => {$(
        impl $version::wasaga::step::host::Host for CallState {
            fn log(&mut self, level: $version::wasaga::step::host::LogLevel, message: String) {
                use $version::wasaga::step::host::LogLevel as Wit;
                let level = match level {
                    Wit::Trace => LogLevel::Trace,
                    Wit::Debug => LogLevel::Debug,
                    Wit::Info => LogLevel::Info,
                    Wit::Warn => LogLevel::Warn,
                    Wit::Error => LogLevel::Error,
                };
                self.log_line(level, &message);
            }

            fn record_resource(
                &mut self,
                kind: String,
                external_id: String,
                spec: String,
            ) -> wasmtime::Result<()> {
                CallState::record_resource(self, kind, external_id, spec)
            }
        }
    )*};
}
step_host!(v0_1, v0_2, v0_3);

impl v0_3::wasaga::step::secrets::Host for CallState {
    /// As in 0.2.0.
    fn get(&mut self, name: String) -> Option<String> {
        v0_2::wasaga::step::secrets::Host::get(self, name)
    }
}

impl v0_2::wasaga::step::secrets::Host for CallState {
    /// A secret's value under a `read` grant; none otherwise. Every call
    /// leaves a line in the step's log, naming the secret, never its value.
    fn get(&mut self, name: String) -> Option<String> {
        let granted = self.http_policy.access.secrets.get(&name);
        let (value, how) = match granted {
            Some(secret) if secret.mode == SecretMode::Read => {
                (Some(secret.value.to_string()), "read")
            }
            Some(_) => (None, "none: granted `use` only, not `read`"),
            None if self.http_policy.access.missing.contains(&name) => {
                (None, "none: granted but not set")
            }
            None => (None, "none: not granted to this plugin"),
        };
        let shown: String = name.chars().take(64).collect();
        self.log_line(
            LogLevel::Info,
            &format!("[host] secrets.get {shown:?} -> {how}"),
        );
        value
    }
}

impl CallState {
    fn log_line(&mut self, level: LogLevel, message: &str) {
        self.log.lock().expect("call log lock").push(level, message);
    }

    fn record_resource(
        &mut self,
        kind: String,
        external_id: String,
        spec: String,
    ) -> wasmtime::Result<()> {
        let violation = |why: String| {
            Err(wasmtime::Error::new(ContractViolation(format!(
                "record-resource: {why}"
            ))))
        };
        if self.resources.len() >= self.limits.max_resources {
            return violation(format!(
                "more than {} resources recorded in one call",
                self.limits.max_resources
            ));
        }
        if kind.is_empty() || kind.len() > 128 {
            return violation(format!("kind must be 1 to 128 bytes, got {}", kind.len()));
        }
        if external_id.is_empty() || external_id.len() > 1024 {
            return violation(format!(
                "external id must be 1 to 1024 bytes, got {}",
                external_id.len()
            ));
        }
        if spec.len() > self.limits.max_resource_spec_bytes {
            return violation(format!(
                "spec of {} bytes exceeds the limit of {} bytes",
                spec.len(),
                self.limits.max_resource_spec_bytes
            ));
        }
        let spec: serde_json::Value = match serde_json::from_str(&spec) {
            Ok(value) => value,
            Err(e) => return violation(format!("spec of {kind} {external_id:?} is not JSON: {e}")),
        };
        self.resources.push(RecordedResource {
            kind,
            external_id,
            spec,
        });
        Ok(())
    }
}

/// The bounded log of one call: host `log` lines and captured stdio, in the
/// order they happened. Each line is redacted whole before it is cut to
/// its limit, so a secret that straddles the cut cannot leave its prefix.
pub(crate) struct CallLog {
    lines: Vec<LogLine>,
    dropped: usize,
    max_lines: usize,
    max_line_bytes: usize,
    /// Bytes of a stdout/stderr line not yet ended by a newline.
    partial: [Vec<u8>; 2],
    redactor: Arc<Redactor>,
}

impl CallLog {
    fn new(limits: &StepLimits, redactor: Arc<Redactor>) -> CallLog {
        CallLog {
            lines: Vec::new(),
            dropped: 0,
            max_lines: limits.max_log_lines,
            max_line_bytes: limits.max_log_line_bytes,
            partial: [Vec::new(), Vec::new()],
            redactor,
        }
    }

    fn empty() -> CallLog {
        CallLog::new(
            &StepLimits {
                max_log_lines: 0,
                max_log_line_bytes: 0,
                ..StepLimits::default()
            },
            Arc::default(),
        )
    }

    pub(crate) fn push(&mut self, level: LogLevel, message: &str) {
        if self.lines.len() >= self.max_lines {
            self.dropped += 1;
            return;
        }
        let message = self.redactor.redact(message);
        let message = if message.len() > self.max_line_bytes {
            let mut cut = self.max_line_bytes;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}… [cut {} bytes]", &message[..cut], message.len() - cut)
        } else {
            message.to_string()
        };
        self.lines.push(LogLine { level, message });
    }

    fn write_stdio(&mut self, stream: StdStream, mut bytes: &[u8]) {
        let index = stream as usize;
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(newline);
            let mut full = std::mem::take(&mut self.partial[index]);
            full.extend_from_slice(line);
            self.push_stdio_line(stream, &full);
            bytes = &rest[1..];
        }
        // Keep at most one line's worth of an unterminated line (and room
        // for a secret that straddles its end, which is redacted whole);
        // the rest would be cut anyway.
        let keep_at_most = self.max_line_bytes + 1 + self.redactor.longest();
        let room = keep_at_most.saturating_sub(self.partial[index].len());
        let keep = bytes.len().min(room);
        self.partial[index].extend_from_slice(&bytes[..keep]);
    }

    fn push_stdio_line(&mut self, stream: StdStream, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let level = match stream {
            StdStream::Stdout => LogLevel::Info,
            StdStream::Stderr => LogLevel::Warn,
        };
        self.push(level, &format!("[{}] {text}", stream.name()));
    }

    fn into_lines(mut self) -> Vec<LogLine> {
        for stream in [StdStream::Stdout, StdStream::Stderr] {
            let rest = std::mem::take(&mut self.partial[stream as usize]);
            if !rest.is_empty() {
                self.push_stdio_line(stream, &rest);
            }
        }
        if self.dropped > 0 {
            self.lines.push(LogLine {
                level: LogLevel::Warn,
                message: format!(
                    "[host] {} more log lines dropped: the limit is {} lines per call",
                    self.dropped, self.max_lines
                ),
            });
        }
        self.lines
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StdStream {
    Stdout = 0,
    Stderr = 1,
}

impl StdStream {
    fn name(self) -> &'static str {
        match self {
            StdStream::Stdout => "stdout",
            StdStream::Stderr => "stderr",
        }
    }
}

/// A guest's stdout or stderr: every write goes, line by line, into the
/// call's bounded log. Writes never fail (a print must not crash a guest);
/// what is beyond the log's limits is counted and dropped.
#[derive(Clone)]
struct CapturedStdio {
    log: Arc<Mutex<CallLog>>,
    stream: StdStream,
}

impl CapturedStdio {
    fn write_bytes(&self, bytes: &[u8]) {
        self.log
            .lock()
            .expect("call log lock")
            .write_stdio(self.stream, bytes);
    }
}

impl IsTerminal for CapturedStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStdio {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// How much a guest may write in one go; it only paces the guest's loop.
const STDIO_WRITE_BUDGET: usize = 64 * 1024;

#[async_trait::async_trait]
impl Pollable for CapturedStdio {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedStdio {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDIO_WRITE_BUDGET)
    }
}

impl AsyncWrite for CapturedStdio {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Caps linear memory per instance at the call's `max_memory_bytes`, and
/// says so: a refused growth traps at once with [`MemoryLimitExceeded`]
/// rather than letting the guest see a failed `memory.grow` and abort with
/// a vaguer message.
pub(crate) struct MemoryLimiter {
    max_bytes: u64,
}

/// A guest tried to grow its memory past the call's limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {} exceeded (the guest asked for {desired} bytes)", format_bytes(*.limit))]
pub(crate) struct MemoryLimitExceeded {
    pub limit: u64,
    pub desired: usize,
}

impl MemoryLimiter {
    fn new(max_bytes: u64) -> MemoryLimiter {
        MemoryLimiter { max_bytes }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max_bytes {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.max_bytes,
                desired,
            }));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million of them is far beyond
        // any real plugin and bounds the host memory they take.
        Ok(desired <= 1_000_000 && maximum.is_none_or(|max| desired <= max))
    }
}

/// "64 MiB", "1.5 GiB", "512 KiB", "100 bytes".
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            return if bytes.is_multiple_of(size) {
                format!("{} {unit}", bytes / size)
            } else {
                format!("{:.1} {unit}", bytes as f64 / size as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

/// Outgoing `wasi:http` requests, as the plugin's grants allow them: to a
/// granted origin (scheme, host, port), with `{{secret:NAME}}` in header
/// values replaced by a granted secret whose origins include the request's,
/// at most `max_requests` per call, each bounded by the call's remaining
/// deadline, each response body by `max_response_bytes`. Every request is
/// one line of the call's log (method, origin and path: no query, headers
/// or body); a refusal says which rule, never a secret's value.
pub(crate) struct HttpPolicy {
    /// The plugin's name (the metrics' label).
    plugin: Arc<str>,
    access: Arc<Access>,
    log: Arc<Mutex<CallLog>>,
    limits: HttpLimits,
    /// Where admitted requests go out: this host's pools.
    outbound: Arc<Outbound>,
    deadline: Instant,
    sent: usize,
    /// Put on every request, replacing any the guest set: the call's span
    /// is the parent of what the provider does (`crate::telemetry`).
    traceparent: Option<http::HeaderValue>,
}

/// The bounds of a call's outbound HTTP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    pub max_requests: usize,
    pub max_response_bytes: u64,
}

/// `{{secret:NAME}}`, as written in a header value.
const SECRET_OPEN: &str = "{{secret:";
const SECRET_CLOSE: &str = "}}";

impl HttpPolicy {
    fn note(&self, level: LogLevel, message: &str) {
        self.log.lock().expect("call log lock").push(level, message);
    }

    /// `value` with its `{{secret:NAME}}`s replaced, or why it may not be
    /// sent to `origin`. The reason names the secret and the rule, never a
    /// value.
    fn substitute(&self, value: &str, origin: &Origin) -> Result<Option<String>, String> {
        if !value.contains(SECRET_OPEN) {
            return Ok(None);
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(at) = rest.find(SECRET_OPEN) {
            out.push_str(&rest[..at]);
            let after = &rest[at + SECRET_OPEN.len()..];
            let Some(end) = after.find(SECRET_CLOSE) else {
                return Err("a `{{secret:` has no closing `}}`".into());
            };
            let name = &after[..end];
            let secret = match self.access.secrets.get(name) {
                Some(secret) => secret,
                None if self.access.missing.iter().any(|m| m == name) => {
                    return Err(format!(
                        "secret `{name}` is granted to this plugin but not set (or this host has no secrets key)"
                    ));
                }
                None => return Err(format!("secret `{name}` is not granted to this plugin")),
            };
            if !secret.origins.iter().any(|o| o.allows(origin)) {
                return Err(format!(
                    "secret `{name}` may not be sent to {origin} (its origins: {})",
                    list(&secret.origins)
                ));
            }
            out.push_str(&secret.value);
            rest = &after[end + SECRET_CLOSE.len()..];
        }
        out.push_str(rest);
        Ok(Some(out))
    }

    /// The request as it may go out, or why not.
    fn admit(
        &mut self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
    ) -> Result<(http::Request<wasmtime_wasi_http::WasiBody>, Origin), String> {
        self.sent += 1;
        if self.sent > self.limits.max_requests {
            return Err(format!(
                "this call already made {} requests, the limit per call (--max-http-requests)",
                self.limits.max_requests
            ));
        }
        let origin = Origin::of(request.uri())
            .ok_or_else(|| "the request has no http(s) origin".to_string())?;
        if !self.access.allows(&origin) {
            return Err(if self.access.http.is_empty() {
                format!("{origin} is not granted: this plugin may make no HTTP requests")
            } else {
                format!(
                    "{origin} is not granted to this plugin (its grants: {})",
                    list(&self.access.http)
                )
            });
        }
        for value in request.headers_mut().values_mut() {
            let Ok(text) = value.to_str() else {
                continue;
            };
            let replaced = self
                .substitute(text, &origin)
                .map_err(|why| format!("a header uses a secret: {why}"))?;
            if let Some(replaced) = replaced {
                let mut header = http::HeaderValue::from_str(&replaced)
                    .map_err(|_| "a secret's value is not allowed in a header".to_string())?;
                header.set_sensitive(true);
                *value = header;
            }
        }
        Ok((request, origin))
    }
}

fn list(origins: &[Origin]) -> String {
    if origins.is_empty() {
        return "none".into();
    }
    origins
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

type HttpResponseFuture = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl wasmtime_wasi_http::WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> HttpResponseFuture {
        _ = fut;
        let method = request.method().clone();
        let target = format!(
            "{}{}",
            Origin::of(request.uri()).map_or_else(|| "?".to_string(), |o| o.to_string()),
            request.uri().path()
        );
        let (mut request, origin) = match self.admit(request) {
            Ok(admitted) => admitted,
            Err(why) => {
                self.note(
                    LogLevel::Warn,
                    &format!("[host] http {method} {target} refused: {why}"),
                );
                crate::metrics::global().http(&self.plugin, "refused");
                return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
            }
        };
        if let Some(traceparent) = &self.traceparent {
            request
                .headers_mut()
                .insert("traceparent", traceparent.clone());
        }
        // Every wait of the request ends at the call's deadline at the
        // latest (the call itself is cut there too): the response head
        // within the connect bound (when a new connection is needed) and
        // the first-byte bound, each piece of the body within the
        // between-bytes bound.
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let asked = |a: Option<Duration>| a.map_or(remaining, |a| a.min(remaining));
        let connect = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(self.outbound.connect_timeout());
        let head = connect
            .saturating_add(asked(options.and_then(|o| o.first_byte_timeout)))
            .min(remaining);
        let between_bytes = asked(options.and_then(|o| o.between_bytes_timeout));
        let log = self.log.clone();
        let plugin = self.plugin.clone();
        let outbound = self.outbound.clone();
        let max_body = self.limits.max_response_bytes;
        let deadline = self.deadline;
        Box::new(async move {
            use http_body_util::BodyExt;
            let started = Instant::now();
            let gate = outbound.budgets();
            let budget = match &gate {
                Some(gate) => gate.covering(&origin).await,
                None => None,
            };
            let sent = match (&gate, &budget) {
                (Some(gate), Some(budget)) => {
                    super::budgeted::Budgeted {
                        outbound: &outbound,
                        gate: gate.as_ref(),
                        budget,
                        plugin: &plugin,
                        log: &log,
                        deadline,
                        head,
                        between_bytes,
                    }
                    .send(request, &format!("{method} {target}"))
                    .await
                }
                _ => outbound.send(&plugin, request, head, between_bytes).await,
            };
            let ms = started.elapsed().as_millis();
            let note = |line: String| {
                log.lock()
                    .expect("call log lock")
                    .push(LogLevel::Info, &line)
            };
            match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    note(format!("http {method} {target} -> {status} ({ms} ms)"));
                    crate::metrics::global().http(&plugin, &format!("{}xx", status / 100));
                    let (parts, body) = response.into_parts();
                    let limited = LimitedBody {
                        inner: body.boxed_unsync(),
                        left: max_body,
                        limit: max_body,
                        log: log.clone(),
                    };
                    Ok((
                        http::Response::from_parts(parts, limited.boxed_unsync()),
                        // The pool drives the connection itself.
                        Box::new(async { Ok(()) })
                            as Box<dyn std::future::Future<Output = _> + Send>,
                    ))
                }
                Err(e) => {
                    note(format!("http {method} {target} -> error: {e} ({ms} ms)"));
                    crate::metrics::global().http(&plugin, "error");
                    Err(e)
                }
            }
        })
    }
}

/// A response body that fails once it passes its limit: a step cannot make
/// the host buffer an unbounded answer for it.
struct LimitedBody {
    inner: wasmtime_wasi_http::WasiBody,
    left: u64,
    limit: u64,
    log: Arc<Mutex<CallLog>>,
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let len = data.len() as u64;
            if len > self.left {
                let limit = self.limit;
                self.left = 0;
                self.log.lock().expect("call log lock").push(
                    LogLevel::Warn,
                    &format!(
                        "[host] a response body passed {} (--max-http-response): the rest is refused",
                        format_bytes(limit)
                    ),
                );
                return std::task::Poll::Ready(Some(Err(
                    wasmtime_wasi_http::Error::HttpResponseBodySize(Some(limit)),
                )));
            }
            self.left -= len;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max_line_bytes: usize, secret: &str) -> CallLog {
        CallLog::new(
            &StepLimits {
                max_log_line_bytes: max_line_bytes,
                ..StepLimits::default()
            },
            Arc::new(Redactor::new([("tok", secret)])),
        )
    }

    /// A secret that straddles a line's cut leaves no prefix: lines are
    /// redacted whole, then cut (and a stdio line is buffered past its cut
    /// by as much as the longest secret form).
    #[test]
    fn a_secret_across_the_cut_leaves_no_prefix() {
        let secret = "S3cr3tTok-0123456789";
        for pad in 0..24 {
            let line = format!("{}Bearer {secret} tail", "x".repeat(pad));
            let mut host_log = log(16, secret);
            host_log.push(LogLevel::Info, &line);
            let mut stdio = log(16, secret);
            stdio.write_stdio(StdStream::Stdout, line.as_bytes());
            stdio.write_stdio(StdStream::Stdout, b"\n");
            for kept in host_log.into_lines().into_iter().chain(stdio.into_lines()) {
                for n in 4..=secret.len() {
                    assert!(
                        !kept.message.contains(&secret[..n]),
                        "pad {pad}: {:?} keeps `{}`",
                        kept.message,
                        &secret[..n]
                    );
                }
            }
        }
    }
}
