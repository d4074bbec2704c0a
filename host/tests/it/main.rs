//! Tests of the `wasaga` package that need its built binary (the CLI, the
//! SIGKILL crash test, several hosts) or its runtime alone, in one test
//! binary.

mod authoring;
mod cli;
mod crash;
mod deploy;
mod multihost;
mod plugin_runtime;
mod soak;
