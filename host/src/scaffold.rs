//! `wasaga plugin new`: a new step project in Rust, Python, JavaScript or
//! C, written from templates embedded in this binary (`host/templates/`).
//!
//! Each project holds the newest step contract (`wit/step.wit`), a step
//! skeleton that builds as generated and passes `wasaga plugin test`, a
//! build script (or, for JavaScript, `npm run build`) and a README saying
//! what the toolchain needs. The tool versions a project pins come from
//! `plugins/toolchain.json`, the same pins the repository's own examples
//! and CI build with, so what CI checks is what an author gets.
//!
//! Writing never overwrites: a target directory that exists and is not
//! empty is refused before anything is written.

use crate::plugin::{PluginError, plugin_name};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The languages a project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0}")]
    Name(#[from] PluginError),
    #[error(
        "{name:?} cannot name a Rust package: it starts with a digit (Cargo refuses that); pick another name or language"
    )]
    RustName { name: String },
    #[error("{dir} exists and is not empty; nothing was written (pick a new --dir)")]
    NotEmpty { dir: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What `plugin new` wrote.
#[derive(Debug)]
pub struct Project {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// The commands that build the project and check the result, for the
    /// author to run next.
    pub next: Vec<String>,
}

/// The step contract a new project is written against: the newest.
pub const CONTRACT: &str = "0.3.0";
const STEP_WIT: &str = include_str!("../../wit/0.3.0/step.wit");

/// The tool versions `plugins/toolchain.json` pins.
#[derive(Debug, Deserialize)]
struct Toolchain {
    #[serde(rename = "componentize-py")]
    componentize_py: String,
    #[serde(rename = "componentize-js")]
    componentize_js: String,
    #[serde(rename = "wit-bindgen-cli")]
    wit_bindgen: String,
}

static TOOLCHAIN: LazyLock<Toolchain> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../plugins/toolchain.json"))
        .expect("plugins/toolchain.json names every pinned tool")
});

/// The wasmtime whose WASI preview 1 adapter C projects get; it matches
/// the host's own wasmtime (the adapter crate is versioned with it).
const WASMTIME: &str = "48";

/// Where the Rust SDK is when this binary was built from a checkout.
const REPO_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

/// One file of a template: its path in the project, its text (with
/// `{{placeholders}}`), and whether it is a script to run.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> TemplateFile {
    TemplateFile {
        path,
        text,
        executable: false,
    }
}

const fn script(path: &'static str, text: &'static str) -> TemplateFile {
    TemplateFile {
        path,
        text,
        executable: true,
    }
}

const RUST: &[TemplateFile] = &[
    file("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    file(
        ".cargo/config.toml",
        include_str!("../templates/rust/.cargo/config.toml"),
    ),
    file("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    script("build.sh", include_str!("../templates/rust/build.sh")),
    file("README.md", include_str!("../templates/rust/README.md")),
    file(".gitignore", include_str!("../templates/rust/.gitignore")),
];

const PYTHON: &[TemplateFile] = &[
    file("app.py", include_str!("../templates/python/app.py")),
    script("build.sh", include_str!("../templates/python/build.sh")),
    file("README.md", include_str!("../templates/python/README.md")),
    file(".gitignore", include_str!("../templates/python/.gitignore")),
];

const JS: &[TemplateFile] = &[
    file("step.js", include_str!("../templates/js/step.js")),
    file("build.mjs", include_str!("../templates/js/build.mjs")),
    file("package.json", include_str!("../templates/js/package.json")),
    file("README.md", include_str!("../templates/js/README.md")),
    file(".gitignore", include_str!("../templates/js/.gitignore")),
];

const C: &[TemplateFile] = &[
    file("src/step.c", include_str!("../templates/c/src/step.c")),
    script("build.sh", include_str!("../templates/c/build.sh")),
    file("README.md", include_str!("../templates/c/README.md")),
    file(".gitignore", include_str!("../templates/c/.gitignore")),
];

impl Lang {
    fn template(self) -> &'static [TemplateFile] {
        match self {
            Lang::Rust => RUST,
            Lang::Python => PYTHON,
            Lang::Js => JS,
            Lang::C => C,
        }
    }

    fn build_command(self) -> &'static str {
        match self {
            Lang::Js => "npm install && npm run build",
            Lang::Rust | Lang::Python | Lang::C => "./build.sh",
        }
    }
}

/// Writes a new project for the step `name` in `lang` into `dir` (by
/// default `./NAME`).
pub fn new_project(name: &str, lang: Lang, dir: Option<&Path>) -> Result<Project, ScaffoldError> {
    plugin_name(name)?;
    if lang == Lang::Rust && name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(ScaffoldError::RustName {
            name: name.to_string(),
        });
    }
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    refuse_non_empty(&dir)?;
    let vars = placeholders(name);
    let mut files = Vec::new();
    for template in lang.template() {
        let path = dir.join(template.path);
        write(
            &path,
            fill(template.text, &vars).as_bytes(),
            template.executable,
        )?;
        files.push(path);
    }
    let wit = dir.join("wit/step.wit");
    write(&wit, STEP_WIT.as_bytes(), false)?;
    files.push(wit);
    if lang == Lang::C {
        let adapter = dir.join("wasi_snapshot_preview1.reactor.wasm");
        write(
            &adapter,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            false,
        )?;
        files.push(adapter);
    }
    let next = vec![
        format!("cd {}", dir.display()),
        lang.build_command().to_string(),
        format!("wasaga plugin test {name}.wasm --inputs '{{\"message\":\"hi\"}}'"),
    ];
    Ok(Project { dir, files, next })
}

fn refuse_non_empty(dir: &Path) -> Result<(), ScaffoldError> {
    let not_empty = || ScaffoldError::NotEmpty {
        dir: dir.display().to_string(),
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(not_empty()),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // A file, or a directory this user cannot read: not ours to write into.
        Err(_) => Err(not_empty()),
    }
}

fn write(path: &Path, bytes: &[u8], executable: bool) -> Result<(), ScaffoldError> {
    let failed = |source| ScaffoldError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::write(path, bytes).map_err(failed)?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(failed)?;
    }
    Ok(())
}

/// The values of a template's `{{placeholders}}` for the step `name`.
fn placeholders(name: &str) -> Vec<(&'static str, String)> {
    let ident = name.replace('-', "_");
    let type_name: String = name
        .split('-')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    let (sdk, sdk_origin) = rust_sdk();
    vec![
        ("name", name.to_string()),
        ("ident", ident),
        ("type_name", type_name),
        ("contract", CONTRACT.to_string()),
        ("sdk", sdk),
        ("sdk_origin", sdk_origin),
        (
            "componentize_py",
            format!("componentize-py=={}", TOOLCHAIN.componentize_py),
        ),
        ("componentize_js", TOOLCHAIN.componentize_js.clone()),
        ("wit_bindgen", TOOLCHAIN.wit_bindgen.clone()),
        ("wasmtime", WASMTIME.to_string()),
    ]
}

/// The `wasaga-step` dependency line, and what README says of it: a path
/// into the checkout this binary was built from when it is still there;
/// otherwise the crates.io version (the SDK is published with the host).
fn rust_sdk() -> (String, String) {
    let version = env!("CARGO_PKG_VERSION");
    match std::fs::canonicalize(REPO_SDK) {
        Ok(path) if path.join("Cargo.toml").exists() => {
            let path = path.display().to_string().replace('\\', "/");
            (
                format!("wasaga-step = {{ path = {path:?}, features = [\"contract-0-3\"] }}"),
                format!(
                    "taken from the wasaga checkout at `{path}`. Once the SDK is on crates.io, \
                     write `wasaga-step = \"{version}\"` instead."
                ),
            )
        }
        _ => (
            format!("wasaga-step = {{ version = \"{version}\", features = [\"contract-0-3\"] }}"),
            format!(
                "`wasaga-step = \"{version}\"` from crates.io. To build against a wasaga \
                 checkout instead, write `wasaga-step = {{ path = \"<checkout>/plugins/sdk\" }}`."
            ),
        ),
    }
}

fn fill(text: &str, vars: &[(&'static str, String)]) -> String {
    vars.iter().fold(text.to_string(), |text, (key, value)| {
        text.replace(&format!("{{{{{key}}}}}"), value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_in_every_template_is_filled() {
        let vars = placeholders("make-droplet");
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
            for template in lang.template() {
                let filled = fill(template.text, &vars);
                assert!(!filled.contains("{{"), "{lang} {}: {filled}", template.path);
            }
        }
        let lib = fill(RUST[2].text, &vars);
        assert!(lib.contains("struct MakeDroplet;"), "{lib}");
        assert!(lib.contains("\"make_droplet_id\""), "{lib}");
    }

    #[test]
    fn a_project_is_never_written_over_anything() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let err = new_project("demo", Lang::Python, Some(dir.path())).unwrap_err();
        assert!(matches!(err, ScaffoldError::NotEmpty { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "mine"
        );

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let project = new_project("demo", Lang::C, Some(&empty)).unwrap();
        assert!(project.files.iter().all(|f| f.exists()));
        assert!(empty.join("wasi_snapshot_preview1.reactor.wasm").exists());

        let err = new_project("Demo", Lang::Js, Some(&dir.path().join("x"))).unwrap_err();
        assert!(err.to_string().contains("lowercase letter"), "{err}");
        assert!(!dir.path().join("x").exists());
        let err = new_project("1demo", Lang::Rust, Some(&dir.path().join("y"))).unwrap_err();
        assert!(err.to_string().contains("starts with a digit"), "{err}");
    }
}
