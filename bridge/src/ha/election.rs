//! The election, on the nodes Mesos masters use: every bridge creates an ephemeral sequential
//! `json.info_<10 digits>` node under the Mesos path (default `/mesos`) holding the MasterInfo
//! JSON a Mesos master writes, and the lowest sequence leads. So the member list and the
//! leader that pymesos, mesos-dns and the bridges themselves read are the same nodes: no
//! second election can disagree with what clients see.

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

use serde_json::json;
use zookeeper_client as zk;

use super::{HaConfig, HaError, acls, mkdirs};

/// The prefix of the members' nodes (Mesos's, since 0.24).
pub const INFO_PREFIX: &str = "json.info_";

/// A member of the election as its node says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The node's sequence number (the lowest leads).
    pub seq: u64,
    /// `host:port` of its Mesos endpoints.
    pub mesos: String,
    /// `host:port` of its Marathon API.
    pub marathon: String,
}

/// This bridge's node in the election.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its sequence number.
    pub seq: u64,
    /// Its path.
    pub path: String,
}

/// The IPv4 address of `host` (itself, or what it resolves to).
fn ipv4(host: &str) -> Option<Ipv4Addr> {
    if let Ok(IpAddr::V4(ip)) = host.parse() {
        return Some(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .find_map(|a| match a.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
}

/// The MasterInfo JSON a Mesos master writes for itself (`ip` is the address's network-order
/// bytes read as a little-endian number, as Mesos encodes it), with this bridge's Marathon
/// address beside it (`outpost.marathon`; Mesos clients ignore what they do not know).
pub fn master_info(id: &str, ha: &HaConfig) -> Result<Vec<u8>, String> {
    let (host, port) = ha.mesos_address.rsplit_once(':').ok_or_else(|| {
        format!(
            "ha.mesos_address = {:?}: expected HOST:PORT",
            ha.mesos_address
        )
    })?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("ha.mesos_address = {:?}: bad port", ha.mesos_address))?;
    let ip = ipv4(host).ok_or_else(|| {
        format!(
            "ha.mesos_address = {:?}: {host} has no IPv4 address",
            ha.mesos_address
        )
    })?;
    let v = json!({
        "address": { "hostname": host, "ip": ip.to_string(), "port": port },
        "hostname": host,
        "id": id,
        "ip": u32::from_le_bytes(ip.octets()),
        "pid": format!("master@{ip}:{port}"),
        "port": port,
        "version": crate::mesos::MESOS_VERSION,
        "outpost": { "marathon": ha.marathon_address },
    });
    Ok(v.to_string().into_bytes())
}

/// Joins the election: this bridge's node, made with `info` ([`master_info`]).
pub async fn join(client: &zk::Client, ha: &HaConfig, info: &[u8]) -> Result<Member, HaError> {
    mkdirs(client, &ha.mesos_path, &ha.zk).await?;
    let prefix = format!("{}/{INFO_PREFIX}", ha.mesos_path);
    let options = zk::CreateMode::EphemeralSequential.with_acls(acls(&ha.zk));
    let (_, seq) = client
        .create(&prefix, info, &options)
        .await
        .map_err(|e| HaError::Request {
            path: prefix.clone(),
            error: e.to_string(),
        })?;
    let seq = seq.into_i64() as u64;
    Ok(Member {
        seq,
        path: format!("{prefix}{seq:010}"),
    })
}

/// The sequence number of a member node's name, if it is one.
pub fn sequence(name: &str) -> Option<u64> {
    name.strip_prefix(INFO_PREFIX)?.parse().ok()
}

/// The members, lowest sequence (the leader) first, and a watch that fires when they change.
pub async fn members(
    client: &zk::Client,
    ha: &HaConfig,
) -> Result<(Vec<LeaderInfo>, zk::OneshotWatcher), HaError> {
    let fail = |e: zk::Error| HaError::Request {
        path: ha.mesos_path.clone(),
        error: e.to_string(),
    };
    let (names, _, watcher) = client
        .get_and_watch_children(&ha.mesos_path)
        .await
        .map_err(fail)?;
    let mut seqs: Vec<(u64, String)> = names
        .into_iter()
        .filter_map(|n| Some((sequence(&n)?, n)))
        .collect();
    seqs.sort();
    let mut out = Vec::new();
    for (seq, name) in seqs {
        let path = format!("{}/{name}", ha.mesos_path);
        let data = match client.get_data(&path).await {
            Ok((data, _)) => data,
            // Gone since the listing: the watch fires for it.
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(fail(e)),
        };
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
        let mesos = match (
            v["address"]["hostname"].as_str(),
            v["address"]["port"].as_u64(),
        ) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            _ => continue,
        };
        let marathon = v["outpost"]["marathon"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.push(LeaderInfo {
            seq,
            mesos,
            marathon,
        });
    }
    Ok((out, watcher))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_info_is_what_a_mesos_master_writes() {
        let ha = HaConfig {
            zk: super::super::ZkUrl::parse("zk://z/outpost").unwrap(),
            mesos_path: "/mesos".into(),
            session_timeout: std::time::Duration::from_secs(10),
            marathon_address: "127.0.1.1:8080".into(),
            mesos_address: "127.0.1.1:5050".into(),
            leader_tls: None,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&master_info("b1", &ha).unwrap()).unwrap();
        // Mesos's own example: 127.0.1.1 is 16842879.
        assert_eq!(v["ip"], 16842879);
        assert_eq!(v["pid"], "master@127.0.1.1:5050");
        assert_eq!(
            v["address"],
            json!({ "hostname": "127.0.1.1", "ip": "127.0.1.1", "port": 5050 })
        );
        assert_eq!(v["port"], 5050);
        assert_eq!(v["outpost"]["marathon"], "127.0.1.1:8080");
        assert_eq!(sequence("json.info_0000000042"), Some(42));
        assert_eq!(sequence("log_replicas"), None);
    }
}
