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
//! [`cli`] (the command line), [`model`] (the domain's nouns) and
//! [`config`] (every tunable and its default).

pub mod api;
pub mod cli;
pub mod config;
pub mod model;
pub mod plugin;
pub mod runner;
pub mod server;
pub mod store;
