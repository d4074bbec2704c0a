//! wasaga: a WebAssembly saga step host.
//!
//! Operators upload step plugins (Wasm components implementing
//! `wasaga:step/step@0.1.0`) and start sagas (ordered step lists); the host
//! runs each step in a sandbox, persists every result, retries transient
//! failures, and compensates completed steps in reverse order when a step
//! fails for good or the saga is cancelled.
//!
//! One module per seam: [`plugin`] (the Wasm runtime), [`store`]
//! (persistence), [`runner`] (the saga state machine), [`api`] (HTTP),
//! [`cli`] (the command line), [`model`] (the domain's nouns), [`plan`]
//! (what a start request must be), [`local`] (a plugin called on this
//! machine: `plugin run` and `plugin test`), [`scaffold`] (`plugin new`:
//! a step project in Rust, Python, JavaScript or C), [`events`] (live changes for
//! subscribers), [`webhooks`] (signed deliveries of saga events to
//! subscribed endpoints), [`metrics`] (what Prometheus scrapes), [`console`]
//! (the web UI) and [`config`] (every tunable and its default).

pub mod api;
pub mod cli;
pub mod config;
pub mod console;
pub mod events;
pub mod grants;
pub mod local;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod plugin;
pub mod runner;
pub mod scaffold;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod webhooks;

/// The global allocator of the `wasaga` binary, for every binary that runs
/// a host (the bench declares it too, to measure what the server runs).
/// mimalloc rather than glibc's malloc: a saga's path (HTTP, JSON, the Wasm
/// call's strings, the store's rows) allocates small blocks on one thread
/// and frees many of them on another, which glibc's arenas handle slowly
/// (measured: about 17 % more steps/s at concurrency 64). Built without
/// transparent huge pages (`no_thp`): with them an idle server held 88 MiB
/// instead of 36 MiB, for no measured gain.
pub use mimalloc::MiMalloc as Allocator;
