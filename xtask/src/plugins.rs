//! `cargo xtask plugins [--check]`: every Rust plugin in `plugins/` built
//! for `wasm32-unknown-unknown` (rustup's target, or Debian's `std` source
//! with `-Zbuild-std`), made a component, and written with a manifest of
//! digests to `plugins/dist/`; `--check` rebuilds into a scratch directory
//! and fails when anything differs from what is committed.

use super::*;

/// How this machine compiles Rust to `wasm32-unknown-unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `rustup target add wasm32-unknown-unknown` was done: plain cargo.
    Rustup,
    /// Debian's rustc-web and rust-web-src: build std from source.
    DebianBuildStd,
}

impl Route {
    pub(crate) fn detect() -> Result<Route> {
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

    pub(crate) fn cargo(self) -> &'static str {
        match self {
            Route::Rustup => "cargo",
            Route::DebianBuildStd => "/usr/bin/cargo",
        }
    }

    pub(crate) fn rustc(self) -> &'static str {
        match self {
            Route::Rustup => "rustc",
            Route::DebianBuildStd => "/usr/bin/rustc",
        }
    }

    pub(crate) fn std_src(self) -> Result<PathBuf> {
        match self {
            Route::Rustup => Ok(rustup_sysroot()?.join("lib/rustlib/src/rust")),
            Route::DebianBuildStd => Ok(PathBuf::from(DEBIAN_STD_SRC)),
        }
    }
}

pub(crate) const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust";

pub(crate) fn rustup_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    ensure!(out.status.success(), "rustc --print sysroot failed");
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

pub(crate) fn toolchain_id(route: Route) -> Result<String> {
    let out = Command::new(route.rustc())
        .arg("--version")
        .env("PATH", debian_first_path(route))
        .output()
        .with_context(|| format!("running {} --version", route.rustc()))?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Debian's cargo must find Debian's rustc, which rustup's shims would shadow.
pub(crate) fn debian_first_path(route: Route) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    match route {
        Route::Rustup => path,
        Route::DebianBuildStd => format!("/usr/bin:{path}"),
    }
}

/// The plugin crates: every package under plugins/examples and plugins/testing.
pub(crate) fn plugin_crates(root: &Path) -> Result<Vec<String>> {
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
pub(crate) struct Manifest {
    /// The compiler that made these bytes: a rebuild with another compiler
    /// gives other bytes, so the check then compares worlds instead.
    pub(crate) toolchain: String,
    pub(crate) components: BTreeMap<String, ComponentEntry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ComponentEntry {
    sha256: String,
    pub(crate) bytes: usize,
    /// The component's imports and exports, as WIT names.
    pub(crate) world: Vec<String>,
}

pub(crate) fn build_plugins(root: &Path, check: bool) -> Result<()> {
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
    // SDK on another contract than its default (its `contract-0-1` or
    // `contract-0-3` feature) are built apart from the rest, one build per
    // contract.
    let mut apart: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for name in plugin_crates(root)? {
        let manifest = ["examples", "testing"]
            .iter()
            .map(|group| plugins_dir.join(group).join(&name).join("Cargo.toml"))
            .find(|path| path.exists())
            .context("a plugin crate's Cargo.toml")?;
        let text = std::fs::read_to_string(&manifest)?;
        if let Some(feature) = ["contract-0-1", "contract-0-3"]
            .into_iter()
            .find(|f| text.contains(&format!("\"{f}\"")))
        {
            apart.entry(feature).or_default().push(name);
        }
    }
    let mut default: Vec<String> = vec!["--workspace".into()];
    for name in apart.values().flatten() {
        default.extend(["--exclude".into(), name.clone()]);
    }
    let others = apart.values().map(|names| {
        names
            .iter()
            .flat_map(|name| ["-p".to_string(), name.clone()])
            .collect::<Vec<String>>()
    });
    let selections: Vec<Vec<String>> = std::iter::once(default).chain(others).collect();
    for selection in selections.into_iter().filter(|s| !s.is_empty()) {
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

pub(crate) fn check_against_committed(dist: &Path, rebuilt: &Manifest) -> Result<()> {
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
pub(crate) fn world_of(component: &[u8]) -> Result<Vec<String>> {
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

pub(crate) trait PackageWorld {
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
