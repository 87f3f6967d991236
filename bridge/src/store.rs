//! The bridge's durable state: apps, tasks and agents in redb (an embedded, transactional
//! key-value store in pure Rust), one JSON document per record. The core marks what changed;
//! [`Store::commit`] writes all of it in one transaction before anything is sent.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which table a record lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
}

impl Table {
    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Self::Apps => TableDefinition::new("apps"),
            Self::Tasks => TableDefinition::new("tasks"),
            Self::Agents => TableDefinition::new("agents"),
            Self::Frameworks => TableDefinition::new("frameworks"),
            Self::FwTasks => TableDefinition::new("framework_tasks"),
        }
    }
}

/// A write to apply: a record's new JSON, or its removal.
#[derive(Debug)]
pub struct Write {
    /// The table.
    pub table: Table,
    /// The record's key.
    pub key: String,
    /// New JSON, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

impl Write {
    /// A put of `value` as JSON.
    pub fn put(table: Table, key: &str, value: &impl Serialize) -> Self {
        Self {
            table,
            key: key.to_string(),
            value: Some(serde_json::to_vec(value).expect("records serialise")),
        }
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

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (I/O, corruption, disk full).
    #[error("state store: {0}")]
    Db(String),
    /// A stored record did not parse.
    #[error("state store: record {key:?} in {table:?} does not parse: {error}")]
    Record {
        /// Table.
        table: Table,
        /// Key.
        key: String,
        /// Parse error.
        error: String,
    },
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// The bridge's database.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
        Self::init(db)
    }

    /// A database in memory, for tests of the core.
    pub fn in_memory() -> Self {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("in-memory redb");
        Self::init(db).expect("in-memory tables")
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let tx = db.begin_write().map_err(db_err)?;
        for t in [
            Table::Apps,
            Table::Tasks,
            Table::Agents,
            Table::Frameworks,
            Table::FwTasks,
        ] {
            tx.open_table(t.def()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    /// Applies `writes` in one transaction: all or nothing, durable when this returns.
    pub fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            for w in writes {
                let mut table = tx.open_table(w.table.def()).map_err(db_err)?;
                match &w.value {
                    Some(v) => {
                        table.insert(w.key.as_str(), v.as_slice()).map_err(db_err)?;
                    }
                    None => {
                        table.remove(w.key.as_str()).map_err(db_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Every record of `table`.
    pub fn load<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table.def()).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let record = serde_json::from_slice(v.value()).map_err(|e| StoreError::Record {
                table,
                key: k.value().to_string(),
                error: e.to_string(),
            })?;
            out.push(record);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_deletes_stick() {
        let dir = std::env::temp_dir().join(format!("outpost-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bridge.redb");
        let _ = std::fs::remove_file(&path);
        {
            let s = Store::open(&path).unwrap();
            s.commit(&[
                Write::put(Table::Apps, "/a", &serde_json::json!({"id": "/a"})),
                Write::put(Table::Apps, "/b", &serde_json::json!({"id": "/b"})),
            ])
            .unwrap();
            s.commit(&[Write::delete(Table::Apps, "/a")]).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let apps: Vec<serde_json::Value> = s.load(Table::Apps).unwrap();
        assert_eq!(apps, vec![serde_json::json!({"id": "/b"})]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
