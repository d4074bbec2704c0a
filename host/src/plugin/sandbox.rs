//! What one plugin call sees and leaves behind: the per-call store data.
//!
//! Every call gets a fresh [`CallState`]: WASI with nothing granted (no
//! preopened directories, no environment or arguments, no sockets or name
//! lookup; clocks and random allowed), stdout and stderr captured line by line
//! into the call's log, `wasi:http` whose every request is checked against
//! the plugin's allowlist (empty unless the operator grants hosts), and the
//! two host imports of the step world: `log` and `record-resource`. All of it
//! is bounded by the call's [`StepLimits`]: a guest cannot grow the host's
//! memory by logging, printing or recording without end. Breaches of the
//! step contract by the guest (a resource spec that is not JSON) are kept
//! apart from traps, so the runner can fail the step for good instead of
//! retrying a bug.

use super::bindings::wasaga::step::{host, types};
use crate::config::StepLimits;
use crate::model::{LogLevel, LogLine, RecordedResource};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
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
    pub(crate) fn new(limits: &StepLimits, http_allow: Arc<[String]>) -> CallState {
        let log = Arc::new(Mutex::new(CallLog::new(limits)));
        CallState {
            wasi: None,
            http: WasiHttpCtx::new(),
            http_policy: HttpPolicy {
                allow: http_allow,
                log: log.clone(),
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

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        let level = match level {
            host::LogLevel::Trace => LogLevel::Trace,
            host::LogLevel::Debug => LogLevel::Debug,
            host::LogLevel::Info => LogLevel::Info,
            host::LogLevel::Warn => LogLevel::Warn,
            host::LogLevel::Error => LogLevel::Error,
        };
        self.log
            .lock()
            .expect("call log lock")
            .push(level, &message);
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
/// order they happened.
pub(crate) struct CallLog {
    lines: Vec<LogLine>,
    dropped: usize,
    max_lines: usize,
    max_line_bytes: usize,
    /// Bytes of a stdout/stderr line not yet ended by a newline.
    partial: [Vec<u8>; 2],
}

impl CallLog {
    fn new(limits: &StepLimits) -> CallLog {
        CallLog {
            lines: Vec::new(),
            dropped: 0,
            max_lines: limits.max_log_lines,
            max_line_bytes: limits.max_log_line_bytes,
            partial: [Vec::new(), Vec::new()],
        }
    }

    fn empty() -> CallLog {
        CallLog {
            lines: Vec::new(),
            dropped: 0,
            max_lines: 0,
            max_line_bytes: 0,
            partial: [Vec::new(), Vec::new()],
        }
    }

    pub(crate) fn push(&mut self, level: LogLevel, message: &str) {
        if self.lines.len() >= self.max_lines {
            self.dropped += 1;
            return;
        }
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
        // Keep at most one line's worth of an unterminated line; the rest
        // would be cut anyway.
        let room = (self.max_line_bytes + 1).saturating_sub(self.partial[index].len());
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

/// Outgoing `wasi:http` requests: allowed only to the authorities
/// (`host[:port]`) granted to this plugin; everything else is refused with
/// `HTTP-request-denied`, and the refusal is written to the call's log.
struct HttpPolicy {
    allow: Arc<[String]>,
    log: Arc<Mutex<CallLog>>,
}

impl HttpPolicy {
    fn allows(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return false;
        };
        self.allow.iter().any(|allowed| {
            allowed.eq_ignore_ascii_case(authority.as_str())
                || (!allowed.contains(':') && allowed.eq_ignore_ascii_case(authority.host()))
        })
    }
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
        if !self.allows(request.uri()) {
            let message = if self.allow.is_empty() {
                format!(
                    "[host] outgoing HTTP to {} refused: this plugin may make no HTTP requests (see --allow-http)",
                    request.uri().authority().map(|a| a.as_str()).unwrap_or("?")
                )
            } else {
                format!(
                    "[host] outgoing HTTP to {} refused: not in this plugin's allowlist ({})",
                    request.uri().authority().map(|a| a.as_str()).unwrap_or("?"),
                    self.allow.join(", ")
                )
            };
            self.log
                .lock()
                .expect("call log lock")
                .push(LogLevel::Warn, &message);
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}
