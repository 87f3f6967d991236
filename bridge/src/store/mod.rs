//! The bridge's durable state behind one trait, [`StateStore`]: records (apps, tasks, agents,
//! Mesos frameworks and their tasks) by table and key. The core marks what changed as
//! [`Write`]s; the owner commits them, in order, before anything leaves the bridge.
//!
//! Three implementations: [`RedbStore`] (embedded, the default for one bridge), [`ZkStore`]
//! (ZooKeeper, for bridges that share a fleet: `[ha]`) and [`MemoryStore`] (tests; it can be
//! told to refuse commits). A store that holds its writes in
//! bounded transactions (ZooKeeper's `multi`, etcd's `txn`) splits a commit into chunks of at
//! most [`StateStore::max_chunk`] writes, applied in order. A store shared by several bridges
//! checks, with every chunk, that this bridge may still write (the fence); a refusal is
//! [`StoreError::Fenced`], after which the bridge stops acting.

mod redb;
mod zookeeper;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::redb::RedbStore;
pub use self::zookeeper::ZkStore;

/// Which table a record lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Apps by id.
    Apps,
    /// Tasks by id.
    Tasks,
    /// Agents by id.
    Agents,
    /// Mesos frameworks by id (removed ones too, so their ids stay refused).
    Frameworks,
    /// Mesos frameworks' tasks by id.
    FwTasks,
    /// Earlier definitions of apps, `{app id}@{version}` (Marathon's app versions).
    AppVersions,
    /// Groups created through `/v2/groups` (their dependencies; a group also exists while an
    /// app's id is under it).
    Groups,
    /// HTTP callback URLs registered through `/v2/eventSubscriptions`, by URL.
    EventSubscriptions,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 8] = [
        Table::Apps,
        Table::Tasks,
        Table::Agents,
        Table::Frameworks,
        Table::FwTasks,
        Table::AppVersions,
        Table::Groups,
        Table::EventSubscriptions,
    ];

    /// The table's name in a store.
    pub fn name(self) -> &'static str {
        match self {
            Self::Apps => "apps",
            Self::Tasks => "tasks",
            Self::Agents => "agents",
            Self::Frameworks => "frameworks",
            Self::FwTasks => "framework_tasks",
            Self::AppVersions => "app_versions",
            Self::Groups => "groups",
            Self::EventSubscriptions => "event_subscriptions",
        }
    }
}

/// A write to apply: a record's new bytes, or its removal.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The table.
    pub table: Table,
    /// The record's key.
    pub key: String,
    /// New bytes (JSON), or `None` to delete.
    pub value: Option<Vec<u8>>,
}

impl Write {
    /// A put of `value` as JSON.
    pub fn put(table: Table, key: &str, value: &impl Serialize) -> Result<Self, StoreError> {
        Ok(Self {
            table,
            key: key.to_string(),
            value: Some(encode(table, key, value)?),
        })
    }

    /// A delete.
    pub fn delete(table: Table, key: &str) -> Self {
        Self {
            table,
            key: key.to_string(),
            value: None,
        }
    }
}

/// A record's bytes.
pub fn encode(table: Table, key: &str, value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Record {
        table,
        key: key.to_string(),
        error: e.to_string(),
    })
}

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store itself failed (I/O, corruption, disk full).
    #[error("state store: {0}")]
    Db(String),
    /// A stored record did not parse, or a record could not be encoded.
    #[error("state store: record {key:?} in {table:?}: {error}")]
    Record {
        /// Table.
        table: Table,
        /// Key.
        key: String,
        /// The error.
        error: String,
    },
    /// The store refused the commit because this bridge may no longer write (another one
    /// leads): it must stop acting, never retry.
    #[error("state store: this bridge may no longer write: {0}")]
    Fenced(String),
    /// The owner of the core has stopped (the bridge is shutting down).
    #[error("the bridge's core has stopped")]
    Stopped,
}

/// Where the bridge's state is kept.
pub trait StateStore: Send + 'static {
    /// Every record of `table`, as (key, bytes), in key order.
    fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Applies one chunk of writes atomically and durably, or none of it. Checks the fence, if
    /// the store has one.
    fn commit_chunk(&mut self, writes: &[Write]) -> Result<(), StoreError>;

    /// The most writes one chunk may hold (`usize::MAX`: no limit).
    fn max_chunk(&self) -> usize {
        usize::MAX
    }

    /// Applies `writes` in order, in chunks of at most [`StateStore::max_chunk`]. A failed
    /// chunk stops the commit: the chunks before it stay applied (each is a consistent set of
    /// whole records, in the order the core made them).
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let chunk = self.max_chunk().max(1);
        for c in writes.chunks(chunk) {
            self.commit_chunk(c)?;
        }
        Ok(())
    }
}

/// Every record of `table`, decoded.
pub fn load<T: DeserializeOwned>(
    store: &dyn StateStore,
    table: Table,
) -> Result<Vec<T>, StoreError> {
    store
        .load(table)?
        .into_iter()
        .map(|(key, bytes)| {
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Record {
                table,
                key,
                error: e.to_string(),
            })
        })
        .collect()
}

/// The records of a [`MemoryStore`].
type Records = BTreeMap<(Table, String), Vec<u8>>;

/// A store in memory, for tests: shared between clones (a test keeps one to look inside),
/// and told to refuse commits through [`MemoryStore::refuse`].
#[derive(Clone, Default)]
pub struct MemoryStore {
    records: Arc<std::sync::Mutex<Records>>,
    refusing: Arc<AtomicBool>,
    fenced: Arc<AtomicBool>,
    commits: Arc<std::sync::atomic::AtomicU64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on every commit fails as a full disk would (`refuse(false)` heals it).
    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// From now on every commit is refused by the fence (another bridge leads).
    pub fn fence(&self) {
        self.fenced.store(true, Ordering::SeqCst);
    }

    /// How many chunks were committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// The record at `table`/`key`.
    pub fn get(&self, table: Table, key: &str) -> Option<Vec<u8>> {
        self.lock().get(&(table, key.to_string())).cloned()
    }

    /// How many records `table` holds.
    pub fn count(&self, table: Table) -> usize {
        self.lock().keys().filter(|(t, _)| *t == table).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // A test that panicked while holding it leaves the map as it was: still usable.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateStore for MemoryStore {
    fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .filter(|((t, _), _)| *t == table)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit_chunk(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(StoreError::Fenced("the test fenced this store".into()));
        }
        if self.refusing.load(Ordering::SeqCst) {
            return Err(StoreError::Db(
                "No space left on device (the test said so)".into(),
            ));
        }
        let mut records = self.lock();
        for w in writes {
            let key = (w.table, w.key.clone());
            match &w.value {
                Some(v) => records.insert(key, v.clone()),
                None => records.remove(&key),
            };
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_split_into_chunks_in_order() {
        struct Chunked(MemoryStore, Vec<usize>);
        impl StateStore for Chunked {
            fn load(&self, t: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
                self.0.load(t)
            }
            fn commit_chunk(&mut self, w: &[Write]) -> Result<(), StoreError> {
                self.1.push(w.len());
                self.0.commit_chunk(w)
            }
            fn max_chunk(&self) -> usize {
                2
            }
        }
        let mut s = Chunked(MemoryStore::new(), Vec::new());
        let writes = vec![
            Write::put(Table::Apps, "/a", &1).unwrap(),
            Write::put(Table::Apps, "/b", &2).unwrap(),
            Write::put(Table::Apps, "/c", &3).unwrap(),
            Write::delete(Table::Apps, "/a"),
            Write::put(Table::Apps, "/a", &5).unwrap(),
        ];
        s.commit(&writes).unwrap();
        assert_eq!(s.1, vec![2, 2, 1]);
        // Applied in order: the last put of /a wins over its delete.
        assert_eq!(s.0.get(Table::Apps, "/a"), Some(b"5".to_vec()));
        assert_eq!(s.0.count(Table::Apps), 3);
    }

    #[test]
    fn a_refusing_store_applies_nothing() {
        let mut s = MemoryStore::new();
        s.refuse(true);
        let w = [Write::put(Table::Apps, "/a", &1).unwrap()];
        assert!(matches!(s.commit(&w), Err(StoreError::Db(_))));
        assert_eq!(s.count(Table::Apps), 0);
        s.fence();
        assert!(matches!(s.commit(&w), Err(StoreError::Fenced(_))));
    }
}
