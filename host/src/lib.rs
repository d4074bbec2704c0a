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
//! (the web UI), [`telemetry`] (OpenTelemetry traces of sagas) and
//! [`config`] (every tunable and its default).
//!
//! The modules form layers with no import cycle (a test holds it): `model`
//! (values) below `config`, then `store`, `secrets` and `grants`, `plugin`,
//! `events` and `telemetry`, `runner` and `webhooks`, `plan`, then `api`
//! and `console`, which `server` puts together, and `cli` on top.

pub mod api;
pub mod budgets;
pub mod callbacks;
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

#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Each top-level module and the top-level modules its code (not its
    /// comments or tests) names through `crate::`.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut files = vec![src.clone()];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap();
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let named = graph.entry(module.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let rest = &line[at + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        named.insert(name);
                    }
                }
            }
        }
        graph
    }

    #[test]
    fn the_modules_import_each_other_without_a_cycle() {
        let graph = imports();
        assert!(graph.contains_key("runner") && graph["runner"].contains("store"));
        // Depth-first search; a module met again on the current path
        // closes a cycle.
        fn visit(
            module: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) {
            if let Some(at) = path.iter().position(|m| m == module) {
                panic!("an import cycle: {} -> {module}", path[at..].join(" -> "));
            }
            if !done.insert(module.to_string()) {
                return;
            }
            path.push(module.to_string());
            for next in graph.get(module).into_iter().flatten() {
                visit(next, graph, path, done);
            }
            path.pop();
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            visit(module, &graph, &mut Vec::new(), &mut done);
        }
    }
}
