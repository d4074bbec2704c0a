//! The plugins' metadata (digest, name, size, upload time, not the bytes),
//! kept in memory so that starting a saga resolves its plugin references
//! without a database read.
//!
//! This is exact only because a SQLite file belongs to one process (the
//! store holds `<file>.lock`): every change to the `plugins` table is made
//! by this store, which calls [`Catalog::changed`] once the change is
//! committed (or failed), on the writing thread, whether or not its caller
//! still waits for the answer. A lookup uses the copy only if no change
//! happened since it was read; otherwise it reads the table again. So a
//! lookup that begins after an upload or delete was acknowledged sees it.

use crate::model::{Digest, PluginInfo};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Every plugin, indexed both ways.
#[derive(Debug, Default)]
pub(super) struct Plugins {
    /// Newest first (upload time, then insertion order), as listed.
    pub(super) newest_first: Vec<PluginInfo>,
    by_digest: HashMap<Digest, usize>,
    /// The current plugin of each name.
    by_name: HashMap<String, usize>,
}

impl Plugins {
    /// From the rows in list order (newest first).
    pub(super) fn new(newest_first: Vec<PluginInfo>) -> Plugins {
        let mut by_digest = HashMap::with_capacity(newest_first.len());
        let mut by_name = HashMap::new();
        for (i, info) in newest_first.iter().enumerate() {
            by_digest.insert(info.digest.clone(), i);
            if info.current {
                by_name.insert(info.name.clone(), i);
            }
        }
        Plugins {
            newest_first,
            by_digest,
            by_name,
        }
    }

    pub(super) fn by_digest(&self, digest: &Digest) -> Option<PluginInfo> {
        self.by_digest
            .get(digest)
            .map(|&i| self.newest_first[i].clone())
    }

    pub(super) fn by_name(&self, name: &str) -> Option<PluginInfo> {
        self.by_name
            .get(name)
            .map(|&i| self.newest_first[i].clone())
    }
}

/// The in-memory copy and the count of changes it is checked against.
#[derive(Debug, Default)]
pub(super) struct Catalog {
    changes: AtomicU64,
    /// The copy, and the change count when its read began.
    copy: RwLock<Option<(u64, Arc<Plugins>)>>,
}

impl Catalog {
    /// The copy, if no change happened since it was read.
    pub(super) fn current(&self) -> Option<Arc<Plugins>> {
        let now = self.changes.load(Ordering::SeqCst);
        match &*self.copy.read().unwrap_or_else(|e| e.into_inner()) {
            Some((read_at, plugins)) if *read_at == now => Some(plugins.clone()),
            _ => None,
        }
    }

    /// Where a fresh read starts: pass it to [`Catalog::keep`].
    pub(super) fn read_begins(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Keeps a copy read since `read_begins` returned `read_at` (it is
    /// stale, and dropped, if a change happened meanwhile).
    pub(super) fn keep(&self, read_at: u64, plugins: Arc<Plugins>) {
        let mut copy = self.copy.write().unwrap_or_else(|e| e.into_inner());
        if self.changes.load(Ordering::SeqCst) == read_at {
            *copy = Some((read_at, plugins));
        }
    }

    /// The table changed (or may have): the copy is stale.
    pub(super) fn changed(&self) {
        let mut copy = self.copy.write().unwrap_or_else(|e| e.into_inner());
        self.changes.fetch_add(1, Ordering::SeqCst);
        *copy = None;
    }
}
