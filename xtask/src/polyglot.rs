//! `cargo xtask polyglot`: the Python (componentize-py) and JavaScript
//! (componentize-js) examples built into `target/polyglot/`, each rebuilt
//! only when its sources change (a stamp of their hash), and the tools the
//! C route needs (`wit-bindgen`, `wasm-tools`) installed beside them at the
//! versions `plugins/toolchain.json` pins.

use super::*;

/// Where the polyglot components go: `$CARGO_TARGET_DIR/polyglot`, or
/// `target/polyglot` in the repository. Tests look in the same place.
pub(crate) fn polyglot_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("polyglot")
}

/// Builds the Python and JavaScript examples, and installs the C route's
/// tools. Without `always`, an output is rebuilt only when its sources (or
/// the WIT, or the pinned tool) changed since it was built: a stamp beside
/// it records their hash.
pub(crate) fn build_polyglot(root: &Path, always: bool) -> Result<()> {
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
pub(crate) fn install_tools(toolchain: &Toolchain, out: &Path) -> Result<()> {
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

pub(crate) fn sources_hash(sources: &[Vec<u8>]) -> String {
    let mut hasher = Sha256::new();
    for source in sources {
        hasher.update((source.len() as u64).to_le_bytes());
        hasher.update(source);
    }
    hex::encode(hasher.finalize())
}

pub(crate) fn stamp_path(output: &Path) -> PathBuf {
    output.with_extension("stamp")
}

pub(crate) fn fresh(output: &Path, sources: &[Vec<u8>]) -> bool {
    output.exists()
        && std::fs::read_to_string(stamp_path(output))
            .is_ok_and(|s| s.trim() == sources_hash(sources))
}

pub(crate) fn stamp(output: &Path, sources: &[Vec<u8>]) -> Result<()> {
    Ok(std::fs::write(
        stamp_path(output),
        sources_hash(sources) + "\n",
    )?)
}

pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<()> {
    eprintln!("+ {what}");
    let status = cmd.status().with_context(|| format!("starting: {what}"))?;
    ensure!(status.success(), "failed: {what}");
    Ok(())
}

/// The venv with the pinned componentize-py (`target/polyglot/venv-py`),
/// made when missing or holding another version; its `bin` directory.
pub(crate) fn python_venv(toolchain: &Toolchain, out: &Path) -> Result<PathBuf> {
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

pub(crate) fn build_python(
    root: &Path,
    venv_bin: &Path,
    app: &str,
    wit: &Path,
    target: &Path,
) -> Result<()> {
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

pub(crate) fn build_js(root: &Path, source: &str, wit: &Path, target: &Path) -> Result<()> {
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
