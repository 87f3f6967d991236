//! The embedded default: redb (a transactional key-value store in pure Rust), one table per
//! [`Table`], one record per key, one transaction (one fsync) per commit chunk.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{StateStore, StoreError, Table, Write};

/// The store's page cache.
const CACHE_BYTES: usize = 256 * 1024;

fn def(t: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(t.name())
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// The bridge's database file.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // redb caches up to 1 GiB by default; the core holds every record in memory already,
        // so the store needs only enough cache for a commit's pages.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(db_err)?;
        for t in Table::ALL {
            tx.open_table(def(t)).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(Self { db })
    }
}

impl StateStore for RedbStore {
    fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(def(table)).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn commit_chunk(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        for w in writes {
            let mut table = tx.open_table(def(w.table)).map_err(db_err)?;
            match &w.value {
                Some(v) => {
                    table.insert(w.key.as_str(), v.as_slice()).map_err(db_err)?;
                }
                None => {
                    table.remove(w.key.as_str()).map_err(db_err)?;
                }
            }
        }
        tx.commit().map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_deletes_stick() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.redb");
        {
            let mut s = RedbStore::open(&path).unwrap();
            s.commit(&[
                Write::put(Table::Apps, "/a", &serde_json::json!({"id": "/a"})).unwrap(),
                Write::put(Table::Apps, "/b", &serde_json::json!({"id": "/b"})).unwrap(),
            ])
            .unwrap();
            s.commit(&[Write::delete(Table::Apps, "/a")]).unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        let apps: Vec<serde_json::Value> = super::super::load(&s, Table::Apps).unwrap();
        assert_eq!(apps, vec![serde_json::json!({"id": "/b"})]);
    }
}
