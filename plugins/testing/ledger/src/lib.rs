//! `ledger`: logs at every level and records `inputs.ledger_resources`
//! resources (default 2) with JSON specs, so tests can read both back from the
//! saga's ledger. Its compensate logs what it releases. With
//! `inputs.ledger_raw_spec` it first records a resource whose spec is that
//! text, unchecked, to test the host's refusal of a spec that is not JSON.
//! Its ids are `<inputs.ledger_prefix>-vm-<i>` (the prefix defaults to the
//! saga's id), so two sagas given one prefix record the same resources.

use serde_json::json;
use wasaga_step::host::{self, LogLevel};
use wasaga_step::{Output, SagaState, Step, StepResult, export_step};

struct Ledger;

impl Step for Ledger {
    fn name() -> String {
        "ledger".into()
    }

    fn execute(state: &SagaState) -> StepResult<Output> {
        if let Some(raw) = state.input_opt::<String>("ledger_raw_spec")? {
            // Bypass the SDK's serialization to hand the host a spec that may
            // not be JSON: the host must refuse it.
            wasaga_step::__bindings::wasaga::step::host::record_resource("vm", "raw", &raw);
        }
        let count: u32 = state.input_opt("ledger_resources")?.unwrap_or(2);
        host::log(LogLevel::Trace, "trace line");
        host::log(LogLevel::Debug, "debug line");
        host::log(LogLevel::Info, &format!("recording {count} resources"));
        host::log(LogLevel::Warn, "warn line");
        host::log(LogLevel::Error, "error line");
        let prefix: String = state
            .input_opt("ledger_prefix")?
            .unwrap_or_else(|| state.saga_id.clone());
        let mut ids = Vec::new();
        for i in 0..count {
            let id = format!("{prefix}-vm-{i}");
            host::record_resource("vm", &id, &json!({"size": "s-1vcpu-1gb", "ordinal": i}))?;
            ids.push(id);
        }
        Output::new().with("vm_ids", ids)
    }

    fn compensate(state: &SagaState) -> StepResult<()> {
        let ids: Vec<String> = state.context_value("vm_ids")?.unwrap_or_default();
        for id in ids {
            host::info(&format!("released {id}"));
        }
        Ok(())
    }
}

export_step!(Ledger);
