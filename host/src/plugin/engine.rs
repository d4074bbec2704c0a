//! The one wasmtime `Engine` of the process, and the clock that interrupts it.
//!
//! Each setting below is here for a reason a reader should not have to
//! guess; see the comment beside it.

use crate::config::{Allocator, RuntimeConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A call's deadline and cancel flag are
/// checked at every tick, so this is the resolution of both: a cancel stops
/// a call in flight within about two ticks.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Per component, the most core instances, memories and tables the pool
/// provides. A Rust step uses 1 memory and 2 to 4 core instances; components
/// made by componentize-py and componentize-js, which embed an interpreter and
/// WASI adapters, use a few memories and a dozen or so core instances.
const CORE_INSTANCES_PER_COMPONENT: u32 = 50;
const MEMORIES_PER_COMPONENT: u32 = 8;
const TABLES_PER_COMPONENT: u32 = 16;

/// Memory kept resident per pooled slot, and the decommit batch: see the
/// pooling settings in `build`.
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;
const KEEP_RESIDENT_STACK: usize = 256 << 10;
const DECOMMIT_BATCH: usize = 32;

pub(super) fn build(config: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let mut c = Config::new();
    // Plugins are components: the WIT contract is the only interface.
    c.wasm_component_model(true);
    // Deadlines and cancels without instrumenting every loop with fuel: the
    // ticker thread bumps the epoch, and each call's store checks it at
    // function entries and loop back-edges for a few cycles.
    c.epoch_interruption(true);
    // Fuel (an instruction budget) is exact but slows every call; only on
    // when the operator wants per-step fuel limits.
    c.consume_fuel(config.fuel);
    // Guest recursion must end in a clean "call stack exhausted" trap, well
    // before the host's own stack is at risk.
    c.max_wasm_stack(config.max_wasm_stack);
    // Calls run on fibers (async), so a guest that loops yields its thread
    // back to the executor at every epoch tick; the fiber stack must hold the
    // Wasm stack plus the host functions it calls.
    c.async_stack_size(config.max_wasm_stack + 1024 * 1024);
    // Each call gets a fresh instance, so instantiation is on the hot path:
    // the pooling allocator preallocates slots and reuses them warm
    // (copy-on-write memory images, no mmap per call).
    if config.allocator == Allocator::Pooling {
        let mut pool = PoolingAllocationConfig::default();
        let instances = config.max_instances.max(1);
        pool.total_component_instances(instances)
            .total_core_instances(instances * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(instances * MEMORIES_PER_COMPONENT)
            .total_tables(instances * TABLES_PER_COMPONENT)
            .total_stacks(instances)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            // Interpreters' tables hold many function references.
            .table_elements(100_000)
            // No slot may outgrow the largest memory a step may ask for; the
            // per-call limit (the store's limiter) is usually lower.
            .max_memory_size(config.max_memory_ceiling as usize)
            // Interpreter-based components carry big instance states.
            .max_component_instance_size(4 << 20)
            .max_core_instance_size(4 << 20)
            // Reusing a slot must not cost page faults and TLB shootdowns on
            // every call (measured: they were most of a short call's time).
            // Keep the first MiBs of each memory, and tables and fiber
            // stacks, resident; where the kernel has PAGEMAP_SCAN (Linux
            // 6.7+), reset only the pages the guest dirtied, by memset;
            // decommit the rest in batches rather than one madvise per call.
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            .async_stack_keep_resident(KEEP_RESIDENT_STACK)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .decommit_batch_size(DECOMMIT_BATCH);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&c)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own,
/// until dropped. A thread, not a tokio task, so a busy runtime cannot delay
/// the interruption of a busy guest.
pub(super) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub(super) fn start(engine: &Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasaga-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
