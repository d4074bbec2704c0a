//! Checks an upload must pass before it becomes a plugin, each with a
//! message the uploader can act on.
//!
//! The order matters: cheap checks on the bytes first (is it Wasm at all, a
//! component or a core module), then the component's declared imports
//! against what this host offers, then its exports against the step
//! contract. The final word on linking belongs to `instantiate_pre` (run by
//! the caller), so that anything these checks miss still fails at upload and
//! never at run time.

use super::{Contract, PluginError};
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;

/// The interface every plugin exports.
pub(super) const STEP_EXPORT: &str = "wasaga:step/step";
/// The versions of it this host runs, as messages name them.
const STEP_0_1: &str = "`wasaga:step/step@0.1.x`";
const STEP_0_2: &str = "`wasaga:step/step@0.2.x`";
const STEP_0_3: &str = "`wasaga:step/step@0.3.x`";
/// The optional interface a 0.3.0 plugin may export beside the step.
pub(super) const OBSERVE_EXPORT: &str = "wasaga:step/observe";
const STEP_FUNCS: [&str; 3] = ["name", "execute", "compensate"];

/// What the host links: (namespace:package, major, minor) families, any
/// interface and any patch within them. WASI 0.2 is offered whole (with
/// nothing granted), because components made by componentize-py and
/// componentize-js import it even when the step never touches a file.
const OFFERED: &[(&str, u64, u64)] = &[
    ("wasaga:step", 0, 1),
    ("wasaga:step", 0, 2),
    ("wasaga:step", 0, 3),
    ("wasi:cli", 0, 2),
    ("wasi:io", 0, 2),
    ("wasi:clocks", 0, 2),
    ("wasi:random", 0, 2),
    ("wasi:filesystem", 0, 2),
    ("wasi:sockets", 0, 2),
    ("wasi:http", 0, 2),
];

/// Rejects what is not a component before anything is compiled.
pub(super) fn component_bytes(bytes: &[u8]) -> Result<(), PluginError> {
    if wasmparser::Parser::is_component(bytes) {
        return Ok(());
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(PluginError::NotAComponent(
            "this is a core Wasm module; wrap it into a component first \
             (`wasm-tools component new module.wasm -o step.wasm`, or `cargo xtask plugins` for Rust)"
                .into(),
        ));
    }
    if bytes.is_empty() {
        return Err(PluginError::NotAComponent("the body is empty".into()));
    }
    Err(PluginError::NotAComponent(
        "the body does not start with the Wasm magic number `\\0asm`".into(),
    ))
}

/// A `ns:pkg/iface@1.2.3` name split into its family and version.
struct InterfaceName<'a> {
    package: &'a str,
    version: Option<(u64, u64)>,
}

fn parse_interface(name: &str) -> Option<InterfaceName<'_>> {
    let (path, version) = match name.split_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    };
    let (package, _interface) = path.split_once('/')?;
    let version = match version {
        Some(v) => {
            let mut parts = v.split(['.', '-', '+']);
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            Some((major, minor))
        }
        None => None,
    };
    Some(InterfaceName { package, version })
}

fn offered(name: &str) -> bool {
    let Some(iface) = parse_interface(name) else {
        return false;
    };
    OFFERED.iter().any(|&(package, major, minor)| {
        iface.package == package && iface.version == Some((major, minor))
    })
}

/// Every import must belong to an interface family the host offers.
pub(super) fn imports(
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> Result<(), PluginError> {
    let ty = component.component_type();
    let unsupported: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !offered(name))
        .map(str::to_string)
        .collect();
    if unsupported.is_empty() {
        return Ok(());
    }
    Err(PluginError::UnsupportedImports {
        imports: unsupported,
        detail: format!(
            "this host offers only {}",
            OFFERED
                .iter()
                .map(|(p, major, minor)| format!("{p}@{major}.{minor}.x"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The component must export `wasaga:step/step`, version 0.1.x or 0.2.x
/// and only one of them, with its three functions; the version is the
/// contract it is called by. (The functions' exact types are checked by the
/// bindings when the instance is pre-linked.)
pub(super) fn exports(
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> Result<Contract, PluginError> {
    let ty = component.component_type();
    let exported: Vec<(&str, ComponentItem)> =
        ty.exports(engine).map(|(name, e)| (name, e.ty)).collect();
    let steps: Vec<&(&str, ComponentItem)> = exported
        .iter()
        .filter(|(name, _)| {
            name.split_once('@').map(|(path, _)| path).unwrap_or(name) == STEP_EXPORT
        })
        .collect();
    let quoted = |names: &mut dyn Iterator<Item = &str>| {
        names
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (name, item) = match steps.as_slice() {
        [] => {
            let names = quoted(&mut exported.iter().map(|(name, _)| *name));
            return Err(PluginError::WrongWorld(format!(
                "the component exports none of {STEP_0_1}, {STEP_0_2} or {STEP_0_3}; it exports {}",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names
                }
            )));
        }
        [one] => one,
        several => {
            return Err(PluginError::WrongWorld(format!(
                "the component exports {}: a plugin implements exactly one version of the step contract",
                quoted(&mut several.iter().map(|(name, _)| *name))
            )));
        }
    };
    let contract = match parse_interface(name).and_then(|i| i.version) {
        Some((0, 1)) => Contract::V0_1,
        Some((0, 2)) => Contract::V0_2,
        Some((0, 3)) => Contract::V0_3,
        _ => {
            return Err(PluginError::WrongWorld(format!(
                "the component exports `{name}`, but this host implements {STEP_0_1}, {STEP_0_2} and {STEP_0_3}"
            )));
        }
    };
    let ComponentItem::ComponentInstance(instance) = item else {
        return Err(PluginError::WrongWorld(format!(
            "`{name}` is exported, but not as an interface instance"
        )));
    };
    let missing: Vec<&str> = STEP_FUNCS
        .iter()
        .copied()
        .filter(|func| {
            !matches!(
                instance.get_export(engine, func).map(|e| e.ty),
                Some(ComponentItem::ComponentFunc(_))
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(PluginError::WrongWorld(format!(
            "`{name}` lacks the function{} {}",
            if missing.len() == 1 { "" } else { "s" },
            missing
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(contract)
}

/// Whether the component exports `observe`: only a 0.3.x step may, in the
/// same version as its step, with the function `observe`.
pub(super) fn observes(
    engine: &Engine,
    component: &wasmtime::component::Component,
    contract: Contract,
) -> Result<bool, PluginError> {
    let ty = component.component_type();
    let Some((name, item)) = ty.exports(engine).find(|(name, _)| {
        name.split_once('@').map(|(path, _)| path).unwrap_or(name) == OBSERVE_EXPORT
    }) else {
        return Ok(false);
    };
    let version = parse_interface(name).and_then(|i| i.version);
    if contract != Contract::V0_3 || version != Some((0, 3)) {
        return Err(PluginError::WrongWorld(format!(
            "the component exports `{name}` with `wasaga:step/step@{}`; observe is part of \
             contract 0.3.x and goes with {STEP_0_3}",
            contract.as_str()
        )));
    }
    let ComponentItem::ComponentInstance(instance) = item.ty else {
        return Err(PluginError::WrongWorld(format!(
            "`{name}` is exported, but not as an interface instance"
        )));
    };
    if !matches!(
        instance.get_export(engine, "observe").map(|e| e.ty),
        Some(ComponentItem::ComponentFunc(_))
    ) {
        return Err(PluginError::WrongWorld(format!(
            "`{name}` lacks the function `observe`"
        )));
    }
    Ok(true)
}

/// A plugin's name: 1 to 64 lowercase letters, digits and dashes.
pub fn plugin_name(name: &str) -> Result<(), PluginError> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > 64 {
        Some(format!(
            "it is {} characters long; the limit is 64",
            name.chars().count()
        ))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
            .map(|c| format!("{c:?} is not a lowercase letter, digit or dash"))
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(PluginError::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_interfaces_match_by_family_and_minor_version() {
        for ok in [
            "wasaga:step/host@0.1.0",
            "wasaga:step/types@0.1.7",
            "wasi:io/streams@0.2.9",
            "wasi:http/outgoing-handler@0.2.12",
            "wasi:sockets/tcp@0.2.0-rc-2023-11-10",
        ] {
            assert!(offered(ok), "{ok} should be offered");
        }
        assert!(offered("wasaga:step/secrets@0.2.0"));
        for refused in [
            "wasaga:step/host@0.4.0",
            "wasi:io/streams@0.3.0",
            "wasi:nn/graph@0.2.0",
            "acme:vault/secrets@1.0.0",
            "wasi:io/streams",
            "plain-function",
        ] {
            assert!(!offered(refused), "{refused} should be refused");
        }
    }

    #[test]
    fn plugin_names_are_lowercase_digits_and_dashes() {
        for ok in ["echo", "create-droplet", "step-2", &"a".repeat(64)] {
            plugin_name(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("Echo", "'E' is not"),
            ("under_score", "'_' is not"),
            ("with space", "' ' is not"),
            (&"a".repeat(65), "65 characters"),
        ] {
            let err = plugin_name(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
