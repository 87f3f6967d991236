//! [`ZkStore`]: the bridge's records in ZooKeeper, one node per record, for bridges that share
//! a fleet ([`crate::ha`]).
//!
//! A record lives at `<root>/state/<table>/<bucket>/<key>`, its key escaped so that any key is
//! one node name (`/web` becomes `%2Fweb`), in one of [`BUCKETS`] buckets by a hash of the key
//! (a listing of one node's children is one answer, and 30,000 task names in one would pass
//! `jute.maxbuffer`). A record above 64 KiB is stored gzip-compressed, as Marathon does. A commit becomes `multi` requests of at most
//! [`CHUNK_BYTES`] (ZooKeeper refuses a request above `jute.maxbuffer`, 1 MiB by default) and
//! [`CHUNK_WRITES`] writes, applied in order; each starts with a check of the epoch node's
//! version when the store is fenced ([`ZkStore::fence`]), so a bridge that another has deposed
//! (it took the next epoch) cannot commit: that is [`StoreError::Fenced`].
//!
//! The store's calls are blocking (the owner's thread calls them); each runs its requests on
//! the runtime it was given, many in flight at once where they are independent (a load).

use std::collections::HashSet;

use zookeeper_client as zk;

use super::{StateStore, StoreError, Table, Write};
use crate::ha::{ZkUrl, acls, epoch_path, mkdirs};

/// Bytes of record data in one `multi` request at most (well below `jute.maxbuffer`).
pub const CHUNK_BYTES: usize = 512 * 1024;
/// Writes in one `multi` request at most.
pub const CHUNK_WRITES: usize = 1000;
/// The largest record this store keeps, as stored (compressed above [`COMPRESS_ABOVE`]; a
/// node's data, below `jute.maxbuffer`): a bigger one is refused with its table, key and
/// size, and the commit with it.
pub const MAX_RECORD: usize = 900 * 1024;
/// Records bigger than this are stored gzip-compressed (Marathon's `zk_compression_threshold`,
/// 64 KiB by default): a record's JSON never starts with gzip's magic bytes, so a reader tells
/// the two apart.
pub const COMPRESS_ABOVE: usize = 64 * 1024;
/// gzip's first two bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A record's bytes as stored: compressed above [`COMPRESS_ABOVE`].
fn stored_form(w: &Write) -> Result<Option<std::borrow::Cow<'_, [u8]>>, StoreError> {
    use std::io::Write as _;
    let Some(v) = &w.value else {
        return Ok(None);
    };
    let form = if v.len() > COMPRESS_ABOVE {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(v)
            .and_then(|_| z.finish())
            .map(std::borrow::Cow::Owned)
            .map_err(|e| StoreError::Record {
                table: w.table,
                key: w.key.clone(),
                error: format!("compressing: {e}"),
            })?
    } else {
        std::borrow::Cow::Borrowed(v.as_slice())
    };
    if form.len() > MAX_RECORD {
        return Err(StoreError::Record {
            table: w.table,
            key: w.key.clone(),
            error: format!(
                "{} bytes ({} stored): ZooKeeper keeps records of at most {MAX_RECORD} bytes",
                v.len(),
                form.len()
            ),
        });
    }
    Ok(Some(form))
}

/// A record's bytes from what a node holds (decompressed if it was stored compressed).
fn record_form(data: Vec<u8>) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    if !data.starts_with(&GZIP_MAGIC) {
        return Ok(data);
    }
    let mut out = Vec::with_capacity(data.len() * 4);
    flate2::read::GzDecoder::new(data.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| format!("decompressing: {e}"))?;
    Ok(out)
}
/// Reads in flight at once while loading.
const LOAD_WINDOW: usize = 512;
/// Buckets per table (names `00` to `ff`).
pub const BUCKETS: usize = 256;

/// The bucket of `key`: FNV-1a's low byte, as two hex digits (the same on every bridge).
pub fn bucket(key: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{:02x}", (h as usize) % BUCKETS)
}

/// Records in ZooKeeper.
pub struct ZkStore {
    client: zk::Client,
    url: ZkUrl,
    runtime: tokio::runtime::Handle,
    /// The epoch node's version every commit checks: this bridge's leadership.
    fence: i32,
    /// The records that exist (a write of one is a `setData`, of another a `create`).
    present: HashSet<(Table, String)>,
}

/// `key` as one node name: bytes other than ASCII letters, digits, `-`, `_` and `.` as `%XX`
/// (and a name of only dots escaped, since `.` and `..` are not node names).
pub fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    let only_dots = !key.is_empty() && key.bytes().all(|b| b == b'.');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && !only_dots) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The key of node name `name` ([`escape`] undone); `None` if `name` was not made by it.
pub fn unescape(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn db(path: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(format!("ZooKeeper {path}: {e}"))
}

impl ZkStore {
    /// A store over `client` (a session with the ensemble of `url`) for the leadership that
    /// took `epoch`: every commit applies only while the epoch node still has its version
    /// ([`crate::ha::take_epoch`]). Makes the table and bucket nodes where missing and learns
    /// which records exist.
    pub fn open(
        client: zk::Client,
        url: ZkUrl,
        runtime: tokio::runtime::Handle,
        epoch: crate::ha::Epoch,
    ) -> Result<Self, StoreError> {
        let mut store = Self {
            client,
            url,
            runtime,
            fence: epoch.version,
            present: HashSet::new(),
        };
        let buckets = store.buckets();
        store.runtime.block_on(async {
            for table in Table::ALL {
                mkdirs(&store.client, &store.table_path(table), &store.url)
                    .await
                    .map_err(|e| StoreError::Db(e.to_string()))?;
            }
            let options = zk::CreateMode::Persistent.with_acls(acls(&store.url));
            for window in buckets.chunks(LOAD_WINDOW) {
                let made = window
                    .iter()
                    .map(|(_, p)| store.client.create(p, b"", &options));
                for ((_, p), r) in window
                    .iter()
                    .zip(futures_util::future::join_all(made).await)
                {
                    match r {
                        Ok(_) | Err(zk::Error::NodeExists) => {}
                        Err(e) => return Err(db(p, e)),
                    }
                }
            }
            Ok(())
        })?;
        let listed = store.list(&buckets)?;
        for (table, _, name) in listed {
            match unescape(&name) {
                Some(k) => {
                    store.present.insert((table, k));
                }
                None => tracing::warn!(
                    table = table.name(),
                    node = name,
                    "a node in the state that is not a record's is left alone"
                ),
            }
        }
        Ok(store)
    }

    /// Every bucket node, with its table.
    fn buckets(&self) -> Vec<(Table, String)> {
        Table::ALL
            .iter()
            .flat_map(|&t| {
                let dir = self.table_path(t);
                (0..BUCKETS).map(move |b| (t, format!("{dir}/{b:02x}")))
            })
            .collect()
    }

    /// The children of `buckets`: (table, bucket path, node name).
    fn list(
        &self,
        buckets: &[(Table, String)],
    ) -> Result<Vec<(Table, String, String)>, StoreError> {
        self.runtime.block_on(async {
            let mut out = Vec::new();
            for window in buckets.chunks(LOAD_WINDOW) {
                let lists = window.iter().map(|(_, p)| self.client.list_children(p));
                for ((t, p), r) in window
                    .iter()
                    .zip(futures_util::future::join_all(lists).await)
                {
                    let names = r.map_err(|e| db(p, e))?;
                    out.extend(names.into_iter().map(|n| (*t, p.clone(), n)));
                }
            }
            Ok(out)
        })
    }

    fn table_path(&self, table: Table) -> String {
        format!("{}/state/{}", self.url.path, table.name())
    }

    fn record_path(&self, table: Table, key: &str) -> String {
        format!("{}/{}/{}", self.table_path(table), bucket(key), escape(key))
    }

    /// One `multi` of `writes` (already bounded), after the fence check.
    fn commit_multi(
        &mut self,
        writes: &[Write],
        stored: &[Option<std::borrow::Cow<'_, [u8]>>],
    ) -> Result<(), StoreError> {
        let options = zk::CreateMode::Persistent.with_acls(acls(&self.url));
        let epoch = epoch_path(&self.url);
        let paths: Vec<String> = writes
            .iter()
            .map(|w| self.record_path(w.table, &w.key))
            .collect();
        let result = self.runtime.block_on(async {
            let mut ops = self
                .client
                .new_check_writer(&epoch, Some(self.fence))
                .map_err(|e| db(&epoch, e))?;
            for ((w, path), value) in writes.iter().zip(&paths).zip(stored) {
                let present = self.present.contains(&(w.table, w.key.clone()));
                let added = match (value, present) {
                    (Some(v), true) => ops.add_set_data(path, v, None),
                    (Some(v), false) => ops.add_create(path, v, &options),
                    (None, true) => ops.add_delete(path, None),
                    (None, false) => Ok(()),
                };
                added.map_err(|e| db(path, e))?;
            }
            ops.commit().await.map_err(|e| match e {
                zk::CheckWriteError::CheckFailed { source } => StoreError::Fenced(format!(
                    "the leadership epoch moved on ({epoch}: {source}): another bridge leads"
                )),
                zk::CheckWriteError::RequestFailed {
                    source: zk::Error::SessionExpired,
                } => StoreError::Fenced("the ZooKeeper session expired".into()),
                other => db(&self.url.path, other),
            })?;
            Ok::<(), StoreError>(())
        });
        match result {
            Ok(()) => {
                for w in writes {
                    let k = (w.table, w.key.clone());
                    if w.value.is_some() {
                        self.present.insert(k);
                    } else {
                        self.present.remove(&k);
                    }
                }
                Ok(())
            }
            Err(StoreError::Fenced(why)) => Err(StoreError::Fenced(why)),
            Err(e) => {
                // A write may have found the node in another state than believed (a request
                // applied although its answer was lost): look again before the next commit.
                self.refresh(writes, &paths);
                Err(e)
            }
        }
    }

    /// Re-reads whether the records of `writes` exist.
    fn refresh(&mut self, writes: &[Write], paths: &[String]) {
        let found = self.runtime.block_on(async {
            let checks = paths.iter().map(|p| self.client.check_stat(p));
            futures_util::future::join_all(checks).await
        });
        for (w, f) in writes.iter().zip(found) {
            let k = (w.table, w.key.clone());
            match f {
                Ok(Some(_)) => {
                    self.present.insert(k);
                }
                Ok(None) => {
                    self.present.remove(&k);
                }
                Err(_) => {}
            }
        }
    }
}

impl StateStore for ZkStore {
    /// Reads the records the store knows of (listed at [`ZkStore::open`], kept by every commit
    /// since): only the leader of the epoch the store was opened for writes, so listing the
    /// buckets again would find the same names.
    fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let keys: Vec<&String> = self
            .present
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, k)| k)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for window in keys.chunks(LOAD_WINDOW) {
            let reads = window.iter().map(|key| {
                let path = self.record_path(table, key);
                async move {
                    let r = self.client.get_data(&path).await;
                    (*key, path, r)
                }
            });
            let got = self.runtime.block_on(futures_util::future::join_all(reads));
            for (key, path, r) in got {
                match r {
                    Ok((data, _)) => {
                        let key = key.clone();
                        let data = record_form(data).map_err(|error| StoreError::Record {
                            table,
                            key: key.clone(),
                            error,
                        })?;
                        out.push((key, data));
                    }
                    // Removed since the store was opened, by hand: no other bridge commits.
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(db(&path, e)),
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn commit_chunk(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let stored = writes
            .iter()
            .map(stored_form)
            .collect::<Result<Vec<_>, _>>()?;
        self.commit_multi(writes, &stored)
    }

    fn max_chunk(&self) -> usize {
        CHUNK_WRITES
    }

    /// In `multi` requests bounded by bytes as well as by count. Refused, even with nothing to
    /// write, while the session is not connected: the owner sends nothing after a refused
    /// commit, so a leader that lost ZooKeeper stops acting at once (and keeps its writes for
    /// when the session is back).
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let state = self.client.state();
        if state != zk::SessionState::SyncConnected {
            return Err(StoreError::Db(format!(
                "the ZooKeeper session is {state:?}: nothing is stored or sent until it is connected again"
            )));
        }
        // Every record in its stored form first: one that is too big refuses the whole commit.
        let stored = writes
            .iter()
            .map(stored_form)
            .collect::<Result<Vec<_>, _>>()?;
        let mut start = 0;
        let mut bytes = 0;
        for (i, (w, v)) in writes.iter().zip(&stored).enumerate() {
            let size = v.as_ref().map_or(0, |v| v.len()) + w.key.len() + 64;
            if i > start && (bytes + size > CHUNK_BYTES || i - start >= CHUNK_WRITES) {
                self.commit_multi(&writes[start..i], &stored[start..i])?;
                start = i;
                bytes = 0;
            }
            bytes += size;
        }
        if start < writes.len() {
            self.commit_multi(&writes[start..], &stored[start..])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_key_is_one_node_name_and_comes_back() {
        for key in ["/web", "/a/b.c", "web.0b1f-uuid", ".", "..", "x%y", "naïve"] {
            let name = escape(key);
            assert!(!name.contains('/'), "{key}: {name}");
            assert!(name != "." && name != "..", "{key}: {name}");
            assert_eq!(unescape(&name).as_deref(), Some(key), "{name}");
        }
        assert_eq!(escape("/web"), "%2Fweb");
        assert_eq!(unescape("%zz"), None);
    }

    #[test]
    fn big_records_are_stored_compressed_and_read_back_whole() {
        let small = Write {
            table: Table::Apps,
            key: "/s".into(),
            value: Some(br#"{"id":"/s"}"#.to_vec()),
        };
        let form = stored_form(&small).unwrap().unwrap();
        assert_eq!(&*form, small.value.as_deref().unwrap(), "small: as it is");
        let json = format!("{{\"env\":\"{}\"}}", "abc".repeat(200_000)).into_bytes();
        let big = Write {
            table: Table::Apps,
            key: "/b".into(),
            value: Some(json.clone()),
        };
        let form = stored_form(&big).unwrap().unwrap().into_owned();
        assert!(form.starts_with(&GZIP_MAGIC) && form.len() < json.len() / 10);
        assert_eq!(record_form(form).unwrap(), json);
        assert_eq!(record_form(b"{}".to_vec()).unwrap(), b"{}");
        assert!(record_form(vec![0x1f, 0x8b, 0]).is_err());
    }

    #[test]
    fn keys_spread_over_the_buckets_the_same_way_everywhere() {
        assert_eq!(bucket("/web"), bucket("/web"));
        let used: HashSet<String> = (0..10_000).map(|i| bucket(&format!("web.{i}"))).collect();
        assert_eq!(used.len(), BUCKETS);
        assert!(used.iter().all(|b| b.len() == 2));
    }
}
