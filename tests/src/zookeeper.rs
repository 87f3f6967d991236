//! A real Apache ZooKeeper ensemble per test (Debian's `zookeeper` package), on loopback ports
//! of its own with its own data directories, removed on drop. Any server can be killed
//! (SIGKILL) and started again. How and why: `../shared/docs/zookeeper.md`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::process::Guarded;
use crate::wait;

/// The server's class path: ZooKeeper's jar (its manifest pulls in the rest) and a logger,
/// without which it logs nothing.
const CLASS_PATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

/// Where test ensembles take their ports: below the ephemeral range (32768), above the host
/// ports the tests' agents hand out (21000-22999).
const PORTS: std::ops::Range<u16> = 24000..32000;

/// One server of an [`Ensemble`].
#[derive(Debug)]
struct Server {
    id: usize,
    client_port: u16,
    dir: PathBuf,
    process: Option<Guarded>,
}

/// A running ensemble; every server is killed and its data removed on drop.
#[derive(Debug)]
pub struct Ensemble {
    servers: Vec<Server>,
    // Last: the data must outlive the processes.
    _dir: TempDir,
}

/// A server's answer to the `srvr` command: `leader`, `follower` or `standalone`, if it serves.
pub fn mode(port: u16) -> Option<String> {
    let text = four_letter(port, "srvr").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(|m| m.trim().to_string())
}

/// Sends a four-letter command and reads the whole answer.
fn four_letter(port: u16, cmd: &str) -> Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(cmd.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Three ports per server (client, quorum, election), all free a moment ago.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let span = PORTS.end - PORTS.start;
    // Different tests (processes) start from different places; within one, try the next.
    let seed = std::process::id() as u64 * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    let want = (3 * n) as u16;
    for attempt in 0..200u64 {
        let base = PORTS.start + ((seed + attempt * 97) % (span - want) as u64) as u16;
        let ports: Vec<u16> = (base..base + want).collect();
        let free = ports
            .iter()
            .all(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return Ok(ports);
        }
    }
    bail!("no {want} free ports in {PORTS:?}")
}

impl Ensemble {
    /// Starts `n` servers (3 or 5 for a quorum that survives failures; 1 for a standalone
    /// server) and waits until every one of them serves.
    pub fn start(n: usize) -> Result<Self> {
        Self::start_with_tick(n, 200)
    }

    /// [`Ensemble::start`] with another `tickTime` (ms): the servers grant sessions of 2 to 20
    /// ticks, so a 10 s session timeout needs 500.
    pub fn start_with_tick(n: usize, tick_ms: u64) -> Result<Self> {
        anyhow::ensure!(n >= 1, "an ensemble needs a server");
        let dir = tempfile::tempdir()?;
        let ports = free_ports(n)?;
        let mut servers_line = String::new();
        if n > 1 {
            for i in 0..n {
                servers_line.push_str(&format!(
                    "server.{}=127.0.0.1:{}:{}\n",
                    i + 1,
                    ports[3 * i + 1],
                    ports[3 * i + 2]
                ));
            }
        }
        let mut servers = Vec::new();
        for i in 0..n {
            let id = i + 1;
            let sdir = dir.path().join(format!("zk{id}"));
            std::fs::create_dir_all(sdir.join("data"))?;
            std::fs::write(sdir.join("data/myid"), format!("{id}\n"))?;
            let client_port = ports[3 * i];
            let cfg = format!(
                "tickTime={tick_ms}\ninitLimit=20\nsyncLimit=10\ndataDir={}\nclientPort={client_port}\n\
                 clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=ruok,srvr,stat,mntr,conf,cons\nforceSync=no\n\
                 preAllocSize=4096\n{servers_line}",
                sdir.join("data").display()
            );
            std::fs::write(sdir.join("zoo.cfg"), cfg)?;
            servers.push(Server {
                id,
                client_port,
                dir: sdir,
                process: None,
            });
        }
        let mut e = Self { servers, _dir: dir };
        for i in 0..n {
            e.start_server(i)?;
        }
        e.wait_serving(Duration::from_secs(30))?;
        Ok(e)
    }

    /// Starts server `i` (0-based) again after [`Ensemble::kill`]; does not wait for it.
    pub fn start_server(&mut self, i: usize) -> Result<()> {
        let s = &mut self.servers[i];
        anyhow::ensure!(s.process.is_none(), "ZooKeeper server {} runs", s.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.dir.join("server.log"))?;
        let mut cmd = Command::new("java");
        cmd.args([
            "-Xms32m",
            "-Xmx128m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
        ])
        .arg("-cp")
        .arg(CLASS_PATH)
        .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        .arg(s.dir.join("zoo.cfg"))
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
        s.process = Some(
            Guarded::spawn(&format!("zookeeper {}", s.id), &mut cmd)
                .context("java (is the zookeeper package installed?)")?,
        );
        Ok(())
    }

    /// Kills server `i` (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.servers[i].process.take() {
            p.stop();
        }
    }

    /// Waits until every started server answers `srvr` with a mode (it serves clients).
    pub fn wait_serving(&self, deadline: Duration) -> Result<()> {
        let started: Vec<&Server> = self
            .servers
            .iter()
            .filter(|s| s.process.is_some())
            .collect();
        wait::until("every ZooKeeper server serving", deadline, || {
            started
                .iter()
                .all(|s| mode(s.client_port).is_some())
                .then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))
    }

    /// The servers' modes, in order (`None`: not serving).
    pub fn modes(&self) -> Vec<Option<String>> {
        self.servers.iter().map(|s| mode(s.client_port)).collect()
    }

    /// Server `i`'s client port.
    pub fn client_port(&self, i: usize) -> u16 {
        self.servers[i].client_port
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the ensemble has no server (never: [`Ensemble::start`] needs one).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,...`: the servers as a client's connect string.
    pub fn hosts(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `zk://127.0.0.1:p1,.../path`, as Mesos and Marathon take it.
    pub fn url(&self, path: &str) -> String {
        format!("zk://{}{path}", self.hosts())
    }

    /// The last lines of every server's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for s in &self.servers {
            let text = std::fs::read_to_string(s.dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("---- ZooKeeper server {} ----\n", s.id));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}
