//! Repository tasks that need more than `cargo build`:
//!
//! - `cargo xtask plugins` builds every Rust plugin in `plugins/` for
//!   `wasm32-unknown-unknown`, turns each core module into a component with
//!   `wit-component`, and writes them, with a manifest of their digests, to
//!   `plugins/dist/`, where they are committed: the host's tests need no Wasm
//!   toolchain.
//! - `cargo xtask plugins --check` rebuilds them into a scratch directory and
//!   fails when the result differs from what is committed, so the committed
//!   components never go stale.
//! - `cargo xtask polyglot` builds the Python (componentize-py) and
//!   JavaScript (componentize-js) examples into `target/polyglot/`; they are
//!   megabytes each, so they are built, not committed. It also installs
//!   what the C route needs beyond clang and wasi-libc (`wit-bindgen`,
//!   `wasm-tools`): the tests build the C example (`plugins/c/echo`) the
//!   way an author builds one, from a `wasaga plugin new --lang c` project.
//! - `cargo xtask test` builds the polyglot examples when they are missing
//!   and runs the whole test suite (whose authoring tests build a project
//!   of each language `plugin new` writes, with the tools in
//!   `target/polyglot`; `PATH` is left alone, since build scripts of
//!   dependencies watch it and would rebuild).
//!
//! Tool versions come from `plugins/toolchain.json`, which `wasaga plugin
//! new` also embeds; `wit-bindgen` and `wasm-tools` are installed with
//! `cargo install` into `target/polyglot/tools` when missing.
//!
//! A machine with a rustup wasm target uses it. Without one (as on machines
//! whose rustup cannot download targets), the Debian route builds `std` from
//! Debian's `rust-web-src` with `-Zbuild-std`, linking with rustup's rust-lld.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod plugins;
mod polyglot;
use plugins::*;
use polyglot::*;

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Bytes of free initial memory each Rust plugin is linked with: more than
/// dlmalloc's first request (64 KiB and a little), which the SDK's allocator
/// then serves without `memory.grow`.
const INITIAL_HEAP: usize = 128 * 1024;
/// The tool versions `plugins/toolchain.json` pins (so that a rebuild gives
/// the same component, and generated projects use what CI checked).
#[derive(Debug, Deserialize)]
struct Toolchain {
    #[serde(rename = "componentize-py")]
    componentize_py: String,
    #[serde(rename = "componentize-js")]
    componentize_js: String,
    #[serde(rename = "wit-bindgen-cli")]
    wit_bindgen: String,
    #[serde(rename = "wasm-tools")]
    wasm_tools: String,
}

impl Toolchain {
    fn load(root: &Path) -> Result<Toolchain> {
        let path = root.join("plugins/toolchain.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let toolchain: Toolchain =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        // The examples' package.json pins componentize-js for npm; it must
        // be the version generated projects get.
        let package: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("plugins/js/package.json"))?)?;
        let examples = &package["devDependencies"]["@bytecodealliance/componentize-js"];
        ensure!(
            examples == toolchain.componentize_js.as_str(),
            "plugins/js/package.json pins componentize-js {examples}, plugins/toolchain.json {}",
            toolchain.componentize_js
        );
        Ok(toolchain)
    }

    fn componentize_py(&self) -> String {
        format!("componentize-py=={}", self.componentize_py)
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root();
    match args.first().map(String::as_str) {
        Some("plugins") => {
            let check = args.iter().any(|a| a == "--check");
            build_plugins(&root, check)
        }
        Some("polyglot") => build_polyglot(&root, true),
        Some("test") => run_tests(&root, &args[1..]),
        Some("bench") => run_benches(&root, args.iter().any(|a| a == "--quick")),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 plugins [--check]  build the Rust plugins into plugins/dist (or check them)\n  \
                 polyglot           build the Python and JavaScript examples, install the C tools (target/polyglot)\n  \
                 test [ARGS..]      build what the tests need, then cargo test --workspace ARGS\n  \
                 bench [--quick]    run every benchmark; write BENCHMARKS.md (not with --quick)"
            );
            std::process::exit(2);
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// Runs the criterion micro-benchmark and the end-to-end bench binary; the
/// full run (release builds) writes BENCHMARKS.md. `--quick` only shows
/// that every benchmark still runs, so it uses the test profile's build
/// (dependencies optimized, wasaga not) rather than building the whole
/// dependency tree a second time in release: in CI that second build was
/// the largest part of a cold run.
fn run_benches(root: &Path, quick: bool) -> Result<()> {
    build_polyglot(root, false)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Quick: every package and target, as `cargo test --workspace` selects
    // them, so that cargo unifies the same features and reuses what the
    // tests built; `-p wasaga -p wasaga-bench` alone would resolve other
    // features and rebuild wasmtime and its dependencies (twice, with the
    // criterion bench), which was most of a cold CI run's bench step.
    let (dir, build, criterion_packages): (&str, &[&str], &[&str]) = if quick {
        (
            "debug",
            &["build", "--profile", "dev", "--workspace", "--all-targets"],
            &["--workspace", "--profile", "dev"],
        )
    } else {
        (
            "release",
            &[
                "build",
                "--profile",
                "release",
                "-p",
                "wasaga",
                "-p",
                "wasaga-bench",
            ],
            &["-p", "wasaga"],
        )
    };
    run(
        Command::new(&cargo).current_dir(root).args(build),
        &format!("cargo {}", build.join(" ")),
    )?;
    let mut criterion = Command::new(&cargo);
    criterion
        .current_dir(root)
        .arg("bench")
        .args(criterion_packages)
        .args(["--bench", "step_overhead", "--"]);
    if quick {
        criterion.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
    }
    run(&mut criterion, "cargo bench --bench step_overhead")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join(dir);
    let mut bench = Command::new(bin.join("wasaga-bench"));
    bench
        .current_dir(root)
        .arg("--wasaga-bin")
        .arg(bin.join("wasaga"));
    if quick {
        bench.arg("--quick");
    } else {
        bench.arg("--out").arg(root.join("BENCHMARKS.md"));
    }
    run(&mut bench, "wasaga-bench")
}

fn run_tests(root: &Path, extra: &[String]) -> Result<()> {
    build_polyglot(root, false)?;
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args(["test", "--workspace"])
        .args(extra);
    run(
        &mut cmd,
        &format!("cargo test --workspace {}", extra.join(" ")),
    )
}
