//! High availability through Apache ZooKeeper: the `[ha]` settings (the ensemble as Mesos and
//! Marathon write it, `zk://h1:2181,h2:2181/outpost`), the session, and leadership epochs.
//!
//! Layout under the configured root (docs/ha.md): `state/<table>/<bucket>/<key>` one node per
//! record ([`crate::store::ZkStore`]), `epoch` the leadership epoch (its number in the data;
//! its version is what every commit of the leader checks). The election runs on the Mesos
//! path's `json.info_` nodes ([`election`]); a bridge that does not lead answers as a Mesos
//! or Marathon follower does ([`follower`]).

pub mod election;
pub mod follower;

use std::time::Duration;

use zookeeper_client as zk;

/// `zk://[user:password@]host[:port][,host[:port]...]/path`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkUrl {
    /// `host:port,host:port` (port 2181 where left out).
    pub hosts: String,
    /// The root path, absolute, without a trailing `/` (e.g. `/outpost`).
    pub path: String,
    /// Digest credentials `user:password`, if given.
    pub digest: Option<String>,
}

impl ZkUrl {
    /// Parses a `zk://` URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("zk://")
            .ok_or("expected zk://HOST:PORT[,HOST:PORT...]/PATH")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err("no path: expected zk://HOST:PORT/PATH, e.g. /outpost".into()),
        };
        let (digest, hosts) = match authority.rsplit_once('@') {
            Some((creds, hosts)) => {
                let (user, password) = creds
                    .split_once(':')
                    .ok_or("credentials must be USER:PASSWORD@")?;
                if user.is_empty() || password.is_empty() {
                    return Err("credentials must be USER:PASSWORD@, both non-empty".into());
                }
                (Some(creds.to_string()), hosts)
            }
            None => (None, authority),
        };
        if hosts.is_empty() {
            return Err("no host: expected zk://HOST:PORT/PATH".into());
        }
        let mut list = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| format!("bad port in {h:?}"))?,
                ),
                None => (h, 2181),
            };
            if host.is_empty() || host.contains(['/', '@', ' ']) {
                return Err(format!("bad host {h:?}"));
            }
            list.push(format!("{host}:{port}"));
        }
        let path = path.trim_end_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .skip(1)
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!(
                "bad path {path:?}: expected an absolute path such as /outpost"
            ));
        }
        Ok(Self {
            hosts: list.join(","),
            path: path.to_string(),
            digest,
        })
    }
}

impl std::fmt::Display for ZkUrl {
    /// The URL with its password hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self
            .digest
            .as_deref()
            .and_then(|d| d.split_once(':'))
            .map(|(u, _)| format!("{u}:***@"))
            .unwrap_or_default();
        write!(f, "zk://{user}{}{}", self.hosts, self.path)
    }
}

/// The `[ha]` settings.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// Where the bridges' state and election live.
    pub zk: ZkUrl,
    /// Where this bridge publishes itself as a Mesos master (`json.info_` nodes; default
    /// `/mesos`, the path `zk://.../mesos` clients are given), in the same ensemble.
    pub mesos_path: String,
    /// The session timeout this bridge asks for (the servers clamp it to 2-20 ticks).
    pub session_timeout: Duration,
    /// `host:port` where the other bridges and clients reach this bridge's Marathon API.
    pub marathon_address: String,
    /// `host:port` where they reach its Mesos endpoints (what its `json.info_` node names).
    pub mesos_address: String,
    /// With `api_tls`: how a follower verifies the leader's API certificate when it proxies a
    /// Marathon request there over HTTPS (`ha.ca_file`, the CA that signed the bridges'
    /// certificates).
    pub leader_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Why ZooKeeper could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HaError {
    /// No session with the ensemble.
    #[error("ZooKeeper {url}: {error}")]
    Connect {
        /// The ensemble (password hidden).
        url: String,
        /// Why.
        error: String,
    },
    /// A request failed.
    #[error("ZooKeeper {path}: {error}")]
    Request {
        /// The node.
        path: String,
        /// Why.
        error: String,
    },
}

fn request(path: &str, e: impl std::fmt::Display) -> HaError {
    HaError::Request {
        path: path.to_string(),
        error: e.to_string(),
    }
}

/// The ACL of every node this bridge creates: readable and writable by anyone, or, with
/// digest credentials, by their holder only (ZooKeeper's `creator_all`).
pub fn acls(zk: &ZkUrl) -> zk::Acls<'static> {
    if zk.digest.is_some() {
        zk::Acls::creator_all()
    } else {
        zk::Acls::anyone_all()
    }
}

/// A session with the ensemble (credentials added), with `zk.path` created if missing.
pub async fn connect(zk: &ZkUrl, session_timeout: Duration) -> Result<zk::Client, HaError> {
    let mut connector = zk::Client::connector()
        .with_session_timeout(session_timeout)
        .with_connection_timeout(Duration::from_secs(5));
    if let Some(d) = &zk.digest {
        connector = connector.with_auth("digest", d.as_bytes());
    }
    let client = connector
        .connect(&zk.hosts)
        .await
        .map_err(|e| HaError::Connect {
            url: zk.to_string(),
            error: e.to_string(),
        })?;
    mkdirs(&client, &zk.path, zk).await?;
    Ok(client)
}

/// Creates `path` and its ancestors where missing (persistent, [`acls`]).
pub async fn mkdirs(client: &zk::Client, path: &str, url: &ZkUrl) -> Result<(), HaError> {
    let options = zk::CreateMode::Persistent.with_acls(acls(url));
    let mut at = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        at.push('/');
        at.push_str(c);
        match client.create(&at, b"", &options).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(request(&at, e)),
        }
    }
    Ok(())
}

/// A leadership epoch: its number (only grows) and the version of the epoch node that
/// proves it (what the leader's commits check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    /// The number, carried by the leader's commands.
    pub number: u64,
    /// The epoch node's version after this leadership took it.
    pub version: i32,
}

/// The epoch node under the root.
pub fn epoch_path(zk: &ZkUrl) -> String {
    format!("{}/epoch", zk.path)
}

/// Takes the next epoch: the number after the stored one, written only if nobody wrote
/// between the read and the write (the node's version); a race with another bridge is an
/// error, never two bridges with the same epoch.
pub async fn take_epoch(client: &zk::Client, zk: &ZkUrl) -> Result<Epoch, HaError> {
    let path = epoch_path(zk);
    let options = zk::CreateMode::Persistent.with_acls(acls(zk));
    match client.create(&path, b"0", &options).await {
        Ok(_) | Err(zk::Error::NodeExists) => {}
        Err(e) => return Err(request(&path, e)),
    }
    let (data, stat) = client
        .get_data(&path)
        .await
        .map_err(|e| request(&path, e))?;
    let current: u64 = std::str::from_utf8(&data)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| request(&path, format!("not an epoch number: {data:?}")))?;
    let number = current + 1;
    let stat = client
        .set_data(&path, number.to_string().as_bytes(), Some(stat.version))
        .await
        .map_err(|e| request(&path, e))?;
    Ok(Epoch {
        number,
        version: stat.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zk_urls_parse_as_mesos_and_marathon_write_them() {
        let u = ZkUrl::parse("zk://h1:2181,h2:2182,h3/outpost").unwrap();
        assert_eq!(u.hosts, "h1:2181,h2:2182,h3:2181");
        assert_eq!(u.path, "/outpost");
        assert_eq!(u.digest, None);
        let u = ZkUrl::parse("zk://ops:s3cret@10.0.0.1:2181/a/b/").unwrap();
        assert_eq!(u.path, "/a/b");
        assert_eq!(u.digest.as_deref(), Some("ops:s3cret"));
        assert_eq!(u.to_string(), "zk://ops:***@10.0.0.1:2181/a/b");
        for (bad, says) in [
            ("http://h:2181/x", "zk://"),
            ("zk://h:2181", "no path"),
            ("zk://h:2181/", "bad path"),
            ("zk://h:99999/x", "bad port"),
            ("zk://h:2181,/x", "bad host"),
            ("zk:///x", "no host"),
            ("zk://user@h/x", "USER:PASSWORD"),
            ("zk://h/a//b", "bad path"),
        ] {
            let e = ZkUrl::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
