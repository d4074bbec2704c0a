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

/// How this machine compiles Rust to `wasm32-unknown-unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `rustup target add wasm32-unknown-unknown` was done: plain cargo.
    Rustup,
    /// Debian's rustc-web and rust-web-src: build std from source.
    DebianBuildStd,
}

impl Route {
    fn detect() -> Result<Route> {
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(WASM_TARGET))
            .unwrap_or(false);
        if installed {
            return Ok(Route::Rustup);
        }
        if Path::new("/usr/bin/cargo").exists() && Path::new(DEBIAN_STD_SRC).exists() {
            return Ok(Route::DebianBuildStd);
        }
        bail!(
            "no Rust toolchain for {WASM_TARGET} here.\n\
             Install one with `rustup target add {WASM_TARGET}`, or on Debian with\n\
             `apt-get install -y rustc-web cargo-web rust-web-src`."
        )
    }

    fn cargo(self) -> &'static str {
        match self {
            Route::Rustup => "cargo",
            Route::DebianBuildStd => "/usr/bin/cargo",
        }
    }

    fn rustc(self) -> &'static str {
        match self {
            Route::Rustup => "rustc",
            Route::DebianBuildStd => "/usr/bin/rustc",
        }
    }

    fn std_src(self) -> Result<PathBuf> {
        match self {
            Route::Rustup => Ok(rustup_sysroot()?.join("lib/rustlib/src/rust")),
            Route::DebianBuildStd => Ok(PathBuf::from(DEBIAN_STD_SRC)),
        }
    }
}

const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust";

fn rustup_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    ensure!(out.status.success(), "rustc --print sysroot failed");
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn toolchain_id(route: Route) -> Result<String> {
    let out = Command::new(route.rustc())
        .arg("--version")
        .env("PATH", debian_first_path(route))
        .output()
        .with_context(|| format!("running {} --version", route.rustc()))?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Debian's cargo must find Debian's rustc, which rustup's shims would shadow.
fn debian_first_path(route: Route) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    match route {
        Route::Rustup => path,
        Route::DebianBuildStd => format!("/usr/bin:{path}"),
    }
}

/// The plugin crates: every package under plugins/examples and plugins/testing.
fn plugin_crates(root: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for group in ["examples", "testing"] {
        let dir = root.join("plugins").join(group);
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.join("Cargo.toml").exists() {
                names.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    /// The compiler that made these bytes: a rebuild with another compiler
    /// gives other bytes, so the check then compares worlds instead.
    toolchain: String,
    components: BTreeMap<String, ComponentEntry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ComponentEntry {
    sha256: String,
    bytes: usize,
    /// The component's imports and exports, as WIT names.
    world: Vec<String>,
}

fn build_plugins(root: &Path, check: bool) -> Result<()> {
    let route = Route::detect()?;
    let toolchain = toolchain_id(route)?;
    let plugins_dir = root.join("plugins");
    // CI keeps this outside the clone (WASAGA_PLUGINS_TARGET_DIR) so that
    // std, built from source on the Debian route, is built once.
    let plugin_target = std::env::var_os("WASAGA_PLUGINS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| plugins_dir.join("target"));
    eprintln!("building plugins with {toolchain} ({route:?})");
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    // Paths end up in panic messages; map them to fixed names so the bytes
    // do not depend on where the repository or the cargo home is.
    // Room for a heap in the initial memory, so that a call to a step built
    // on the SDK allocates without growing its memory (plugins/sdk/src/heap.rs
    // says why that matters to the host).
    let rustflags = [
        format!("-Clink-arg=--initial-heap={INITIAL_HEAP}"),
        format!("--remap-path-prefix={}=/wasaga", root.display()),
        format!("--remap-path-prefix={}=/cargo", home.display()),
        format!(
            "--remap-path-prefix={}=/rust-src",
            route.std_src()?.display()
        ),
    ]
    .join(" ");
    // Cargo unifies features within one build, so the crates that build the
    // SDK on contract 0.1.0 (its `contract-0-1` feature) are built apart
    // from the rest, which get the newest contract.
    let mut old_contract = Vec::new();
    for name in plugin_crates(root)? {
        let manifest = ["examples", "testing"]
            .iter()
            .map(|group| plugins_dir.join(group).join(&name).join("Cargo.toml"))
            .find(|path| path.exists())
            .context("a plugin crate's Cargo.toml")?;
        if std::fs::read_to_string(&manifest)?.contains("\"contract-0-1\"") {
            old_contract.push(name);
        }
    }
    let mut newest: Vec<String> = vec!["--workspace".into()];
    for name in &old_contract {
        newest.extend(["--exclude".into(), name.clone()]);
    }
    let old: Vec<String> = old_contract
        .iter()
        .flat_map(|name| ["-p".to_string(), name.clone()])
        .collect();
    for selection in [newest, old].into_iter().filter(|s| !s.is_empty()) {
        let mut cmd = Command::new(route.cargo());
        cmd.current_dir(&plugins_dir)
            .env("PATH", debian_first_path(route))
            .env("CARGO_ENCODED_RUSTFLAGS", rustflags.replace(' ', "\x1f"))
            .env_remove("RUSTFLAGS")
            .args(["build", "--release", "--locked", "--target", WASM_TARGET])
            .args(&selection)
            .arg("--target-dir")
            .arg(&plugin_target);
        if route == Route::DebianBuildStd {
            let lld = rustup_sysroot()?.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
            ensure!(lld.exists(), "rust-lld not found at {}", lld.display());
            cmd.env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", lld)
                .arg("-Zbuild-std=std,panic_abort");
        }
        let status = cmd.status().context("running cargo for the plugins")?;
        ensure!(status.success(), "building the plugins failed");
    }

    let release = plugin_target.join(WASM_TARGET).join("release");
    let mut manifest = Manifest {
        toolchain,
        components: BTreeMap::new(),
    };
    let mut built = BTreeMap::new();
    for name in plugin_crates(root)? {
        let core_path = release.join(format!("{}.wasm", name.replace('-', "_")));
        let core = std::fs::read(&core_path)
            .with_context(|| format!("reading {}", core_path.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&core)
            .with_context(|| format!("{name}: reading the component type from the core module"))?
            .validate(true)
            .encode()
            .with_context(|| format!("{name}: encoding the component"))?;
        let file = format!("{name}.wasm");
        manifest.components.insert(
            file.clone(),
            ComponentEntry {
                sha256: hex::encode(Sha256::digest(&component)),
                bytes: component.len(),
                world: world_of(&component)
                    .with_context(|| format!("{name}: decoding its world"))?,
            },
        );
        built.insert(file, component);
    }

    let dist = plugins_dir.join("dist");
    if check {
        return check_against_committed(&dist, &manifest);
    }
    std::fs::create_dir_all(&dist)?;
    for (file, bytes) in &built {
        std::fs::write(dist.join(file), bytes)?;
        eprintln!("  {file:<16} {:>7} bytes", bytes.len());
    }
    std::fs::write(
        dist.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    eprintln!("wrote {} components to {}", built.len(), dist.display());
    Ok(())
}

fn check_against_committed(dist: &Path, rebuilt: &Manifest) -> Result<()> {
    let text = std::fs::read_to_string(dist.join("manifest.json"))
        .context("reading plugins/dist/manifest.json")?;
    let committed: Manifest = serde_json::from_str(&text)?;
    let mut problems = Vec::new();
    for (file, entry) in &rebuilt.components {
        let Some(old) = committed.components.get(file) else {
            problems.push(format!("{file}: built, but not committed"));
            continue;
        };
        let on_disk =
            std::fs::read(dist.join(file)).with_context(|| format!("reading dist/{file}"))?;
        if hex::encode(Sha256::digest(&on_disk)) != old.sha256 {
            problems.push(format!(
                "{file}: the committed bytes do not match the manifest"
            ));
        }
        if committed.toolchain == rebuilt.toolchain {
            if entry.sha256 != old.sha256 {
                problems.push(format!(
                    "{file}: rebuilt bytes differ from the committed ones ({} vs {})",
                    &entry.sha256[..12],
                    &old.sha256[..12]
                ));
            }
        } else if entry.world != old.world {
            problems.push(format!(
                "{file}: its imports or exports changed: {:?} vs {:?}",
                entry.world, old.world
            ));
        }
    }
    for file in committed.components.keys() {
        if !rebuilt.components.contains_key(file) {
            problems.push(format!("{file}: committed, but no plugin crate builds it"));
        }
    }
    if committed.toolchain != rebuilt.toolchain {
        eprintln!(
            "note: committed components were built with `{}`, this machine has `{}`: compared worlds, not bytes",
            committed.toolchain, rebuilt.toolchain
        );
    }
    if !problems.is_empty() {
        bail!(
            "plugins/dist is stale; run `cargo xtask plugins` and commit the result:\n  {}",
            problems.join("\n  ")
        );
    }
    eprintln!(
        "plugins/dist matches its sources ({} components)",
        rebuilt.components.len()
    );
    Ok(())
}

/// The component's imports and exports as sorted WIT names, e.g.
/// `export wasaga:step/step@0.1.0`.
fn world_of(component: &[u8]) -> Result<Vec<String>> {
    let decoded = wit_component::decode(component)?;
    let resolve = decoded.resolve();
    let world = &resolve.worlds[decoded.package_world()?];
    let mut names: Vec<String> = world
        .imports
        .keys()
        .map(|k| format!("import {}", resolve.name_world_key(k)))
        .chain(
            world
                .exports
                .keys()
                .map(|k| format!("export {}", resolve.name_world_key(k))),
        )
        .collect();
    names.sort();
    Ok(names)
}

trait PackageWorld {
    fn package_world(&self) -> Result<wit_parser::WorldId>;
}

impl PackageWorld for wit_component::DecodedWasm {
    fn package_world(&self) -> Result<wit_parser::WorldId> {
        match self {
            wit_component::DecodedWasm::Component(_, world) => Ok(*world),
            wit_component::DecodedWasm::WitPackage(..) => bail!("a WIT package, not a component"),
        }
    }
}

/// Where the polyglot components go: `$CARGO_TARGET_DIR/polyglot`, or
/// `target/polyglot` in the repository. Tests look in the same place.
fn polyglot_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("polyglot")
}

/// Builds the Python and JavaScript examples, and installs the C route's
/// tools. Without `always`, an output is rebuilt only when its sources (or
/// the WIT, or the pinned tool) changed since it was built: a stamp beside
/// it records their hash.
fn build_polyglot(root: &Path, always: bool) -> Result<()> {
    let toolchain = Toolchain::load(root)?;
    let out = polyglot_dir(root);
    std::fs::create_dir_all(&out)?;
    // Each example names the contract it is written against: the echo
    // examples stay on 0.1.0 (so a 0.1.0 component in each language stays
    // in the test set), the wait examples use 0.2.0's `poll-after`.
    let (v0_1, v0_2) = (root.join("wit"), root.join("wit/0.2.0"));
    // The tests build Python projects too: the venv is always made.
    let venv_bin = python_venv(&toolchain, &out)?;
    for (app, wit, output) in [
        ("echo", &v0_1, "python-echo.wasm"),
        ("wait", &v0_2, "python-wait.wasm"),
    ] {
        let python = out.join(output);
        let sources = [
            std::fs::read(wit.join("step.wit"))?,
            std::fs::read(root.join("plugins/python").join(app).join("app.py"))?,
            toolchain.componentize_py().into_bytes(),
        ];
        if always || !fresh(&python, &sources) {
            build_python(root, &venv_bin, app, wit, &python)?;
            stamp(&python, &sources)?;
        }
    }
    for (source, wit, output) in [
        ("echo.js", &v0_1, "js-echo.wasm"),
        ("http-resource.js", &v0_1, "js-http-resource.wasm"),
        ("wait.js", &v0_2, "js-wait.wasm"),
    ] {
        let js = out.join(output);
        let js_sources = [
            std::fs::read(wit.join("step.wit"))?,
            std::fs::read(root.join("plugins/js").join(source))?,
            std::fs::read(root.join("plugins/js/build.mjs"))?,
            std::fs::read(root.join("plugins/js/package-lock.json"))?,
        ];
        if always || !fresh(&js, &js_sources) {
            build_js(root, source, wit, &js)?;
            stamp(&js, &js_sources)?;
        }
    }
    // The C toolchain's two cargo-installed tools: the tests build C
    // projects (plugins/c/echo among them) from source.
    install_tools(&toolchain, &out)?;
    Ok(())
}

/// Installs the pinned `wit-bindgen` and `wasm-tools` into
/// `target/polyglot/tools` unless they are there (only the features the C
/// route uses: about 2 minutes on 2 cores, once).
fn install_tools(toolchain: &Toolchain, out: &Path) -> Result<()> {
    let tools = out.join("tools");
    for (krate, bin, version, features) in [
        (
            "wit-bindgen-cli",
            "wit-bindgen",
            &toolchain.wit_bindgen,
            "c",
        ),
        (
            "wasm-tools",
            "wasm-tools",
            &toolchain.wasm_tools,
            "component",
        ),
    ] {
        let installed = Command::new(tools.join("bin").join(bin))
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version.as_str()));
        if installed {
            continue;
        }
        // `--debug`: they handle files of kilobytes, and a debug build
        // takes 1 min 53 s here against 5 min 13 s optimized.
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["install", "--locked", "--quiet", "--debug", "--root"])
                .arg(&tools)
                .arg("--target-dir")
                .arg(tools.join("build"))
                .arg(format!("{krate}@{version}"))
                .args(["--no-default-features", "--features", features]),
            &format!("cargo install {krate}@{version} (into target/polyglot/tools)"),
        )?;
    }
    Ok(())
}

fn sources_hash(sources: &[Vec<u8>]) -> String {
    let mut hasher = Sha256::new();
    for source in sources {
        hasher.update((source.len() as u64).to_le_bytes());
        hasher.update(source);
    }
    hex::encode(hasher.finalize())
}

fn stamp_path(output: &Path) -> PathBuf {
    output.with_extension("stamp")
}

fn fresh(output: &Path, sources: &[Vec<u8>]) -> bool {
    output.exists()
        && std::fs::read_to_string(stamp_path(output))
            .is_ok_and(|s| s.trim() == sources_hash(sources))
}

fn stamp(output: &Path, sources: &[Vec<u8>]) -> Result<()> {
    Ok(std::fs::write(
        stamp_path(output),
        sources_hash(sources) + "\n",
    )?)
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    eprintln!("+ {what}");
    let status = cmd.status().with_context(|| format!("starting: {what}"))?;
    ensure!(status.success(), "failed: {what}");
    Ok(())
}

/// The venv with the pinned componentize-py (`target/polyglot/venv-py`),
/// made when missing or holding another version; its `bin` directory.
fn python_venv(toolchain: &Toolchain, out: &Path) -> Result<PathBuf> {
    let venv = out.join("venv-py");
    let bin = venv.join("bin");
    let installed = Command::new(bin.join("componentize-py"))
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&toolchain.componentize_py));
    if !installed {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv target/polyglot/venv-py",
        )?;
        run(
            Command::new(bin.join("pip")).args([
                "install",
                "--quiet",
                &toolchain.componentize_py(),
            ]),
            &format!("pip install {}", toolchain.componentize_py()),
        )?;
    }
    Ok(bin)
}

fn build_python(root: &Path, venv_bin: &Path, app: &str, wit: &Path, target: &Path) -> Result<()> {
    run(
        Command::new(venv_bin.join("componentize-py"))
            .current_dir(root.join("plugins").join("python").join(app))
            .arg("-d")
            .arg(wit)
            .args(["-w", "plugin", "componentize", "app", "-o"])
            .arg(target),
        &format!(
            "componentize-py -d {} -w plugin componentize app (plugins/python/{app})",
            wit.display()
        ),
    )
}

fn build_js(root: &Path, source: &str, wit: &Path, target: &Path) -> Result<()> {
    let dir = root.join("plugins").join("js");
    if !dir
        .join("node_modules")
        .join("@bytecodealliance")
        .join("componentize-js")
        .exists()
    {
        run(
            Command::new("npm")
                .current_dir(&dir)
                .args(["ci", "--no-audit", "--no-fund"]),
            "npm ci (plugins/js)",
        )?;
    }
    run(
        Command::new("node")
            .current_dir(&dir)
            .arg("build.mjs")
            .arg(wit)
            .arg(source)
            .arg(target),
        &format!("node build.mjs {source} (plugins/js)"),
    )
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
