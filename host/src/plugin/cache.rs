//! The compile cache: compiled components, serialized to files keyed by the
//! plugin's digest and the engine's compatibility hash.
//!
//! Compiling a plugin costs tens of milliseconds for a Rust component and
//! seconds for a Python or JavaScript one; loading a compiled artifact costs
//! a file read and an mmap. So a restart, or a second host that sees a plugin
//! another host uploaded, loads from here instead of compiling.
//!
//! Why deserializing is safe here: `Component::deserialize` trusts its input
//! to be what `Engine::precompile`/`serialize` produced, because the bytes are
//! native code. This directory is the host's own: it holds only what this
//! host's engine serialized, written atomically (temporary file, then
//! rename), and each file carries a SHA-256 of its payload that is checked
//! before the payload reaches wasmtime. A torn write or a flipped bit is
//! caught by the checksum; a file from another wasmtime version or other
//! engine settings has another compatibility hash in its name (and wasmtime
//! refuses it too). Either way the entry is dropped and rebuilt. Whoever can
//! write this directory can already replace the host's binary, so it grants
//! no new power; never point it at a directory others can write.

use crate::model::Digest;
use sha2::{Digest as _, Sha256};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of every cache file, then the 32-byte SHA-256 of the payload.
const MAGIC: &[u8; 8] = b"WSGCWM1\n";

/// How a component came to be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedFrom {
    /// Compiled from the component's bytes (and written to the cache).
    Compiled,
    /// Deserialized from a valid cache entry.
    Cache,
}

pub(super) struct CompileCache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash: settings and wasmtime version.
    engine_key: String,
}

impl CompileCache {
    pub(super) fn open(dir: &Path, engine: &Engine) -> std::io::Result<CompileCache> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            engine_key,
        })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", digest.hex(), self.engine_key))
    }

    /// The cached component for `digest`, if a valid entry exists. A corrupt
    /// or incompatible entry is removed (and `None` returned) so that the
    /// caller compiles and stores a fresh one.
    pub(super) fn load(&self, engine: &Engine, digest: &Digest) -> Option<Component> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path).ok()?;
        let payload = match verified_payload(&bytes) {
            Some(payload) => payload,
            None => {
                tracing::warn!(path = %path.display(), "compile cache entry is corrupt; recompiling");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        // SAFETY: the payload was written by this host's engine (see the
        // module docs) and its checksum matches.
        match unsafe { Component::deserialize(engine, payload) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry is unusable; recompiling");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled component. Failure to write only costs a later
    /// recompile, so it is logged, not returned.
    pub(super) fn store(&self, digest: &Digest, component: &Component) {
        let payload = match component.serialize() {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cannot serialize a compiled component");
                return;
            }
        };
        let path = self.path(digest);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&Sha256::digest(&payload));
        file.extend_from_slice(&payload);
        let written = std::fs::write(&tmp, &file).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn verified_payload(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (checksum, payload) = rest.split_at(32);
    (Sha256::digest(payload).as_slice() == checksum).then_some(payload)
}

/// Feeds `Hash` output into SHA-256, so the cache key is stable across
/// processes (std's `DefaultHasher` is only stable within one).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
}
