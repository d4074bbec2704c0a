//! Criterion micro-benchmark of one step call: instantiate from the
//! pre-linked instance, `execute(echo)`, drop; with the pooling allocator,
//! with on-demand allocation, and the native echo step as the baseline.
//! (`cargo xtask bench` also reports p50 and p99 from its own sampling.)

use criterion::{Criterion, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;
use wasaga::config::{Allocator, RuntimeConfig, StepLimits};
use wasaga::plugin::{PluginHost, StepCall, parse_output};

fn call() -> StepCall {
    StepCall {
        saga_id: "0190c0de-0000-7000-8000-000000000000".into(),
        kind: "bench".into(),
        step_index: 1,
        attempt: 1,
        idempotency_key: "bench:1:execute".into(),
        inputs: r#"{"message":"hello"}"#.into(),
        context: "{}".into(),
        received: None,
        traceparent: None,
    }
}

fn step_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let echo = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/dist/echo.wasm"
    ))
    .unwrap();
    let limits = StepLimits::default();
    let mut group = c.benchmark_group("step_overhead");
    for (name, allocator) in [
        ("pooling", Allocator::Pooling),
        ("on_demand", Allocator::OnDemand),
    ] {
        let host = PluginHost::new(RuntimeConfig {
            allocator,
            wasm_threads: 0,
            max_instances: 16,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let plugin = rt.block_on(host.prepare(&echo)).unwrap();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let out = host
                    .execute(
                        &plugin,
                        call(),
                        &limits,
                        CancellationToken::new(),
                        std::sync::Arc::default(),
                    )
                    .await;
                out.result.unwrap()
            })
        });
    }
    group.bench_function("native_baseline", |b| {
        b.iter(|| {
            let call = call();
            let inputs: serde_json::Value = serde_json::from_str(&call.inputs).unwrap();
            let text = serde_json::json!({ format!("echoed_at_step_{}", call.step_index): inputs["message"] }).to_string();
            parse_output(&text, limits.max_output_bytes).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, step_overhead);
criterion_main!(benches);
