//! dockerd: reuse the running one, else start Debian's; and containers that are removed when
//! the test ends.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{process, wait};

/// dockerd's default socket.
pub const SOCKET: &str = "/var/run/docker.sock";

/// The label every container a test starts carries; its value is the owning [`Scope`]'s id.
pub const TEST_LABEL: &str = "outpost.test";

/// Whether dockerd answers `GET /_ping` with `OK` on its unix socket.
pub fn ping() -> bool {
    let Ok(mut s) = UnixStream::connect(SOCKET) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.") && reply.contains(" 200 ") && reply.ends_with("OK")
}

/// Makes sure a dockerd runs: reuses one that answers, else starts `dockerd` (detached, so it
/// outlives the test and the next test reuses it) and polls `/_ping` until it answers.
pub fn ensure_dockerd() -> Result<()> {
    if ping() {
        return Ok(());
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join("outpost-dockerd.log"))
        .context("opening the dockerd log")?;
    Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting dockerd (is Debian's docker.io installed?)")?;
    wait::until("dockerd to answer /_ping", Duration::from_secs(60), || {
        ping().then_some(())
    })
}

/// Runs the docker CLI and returns its trimmed stdout.
pub fn docker(args: &[&str]) -> Result<String> {
    process::stdout(Command::new("docker").args(args))
}

/// A test's share of dockerd: every container it starts carries [`TEST_LABEL`]`=<id>`, and all
/// of them are removed on drop.
#[derive(Debug)]
pub struct Scope {
    id: String,
}

impl Scope {
    /// A new scope with an id unique across parallel tests and test processes.
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        ensure_dockerd()?;
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Self { id })
    }

    /// The scope's id (the value of [`TEST_LABEL`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `--label outpost.test=<id>`, for a `docker run` of this scope.
    pub fn label_arg(&self) -> String {
        format!("{TEST_LABEL}={}", self.id)
    }

    /// `docker run -d` with this scope's label and `args`; returns the container id.
    pub fn run_detached(&self, args: &[&str]) -> Result<String> {
        let label = self.label_arg();
        let mut all = vec!["run", "-d", "--label", &label];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// Ids of the containers (running or not) that carry this scope's label.
    pub fn containers(&self) -> Result<Vec<String>> {
        let filter = format!("label={}", self.label_arg());
        Ok(docker(&["ps", "-aq", "--filter", &filter])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// The host port dockerd published for `container_port/tcp` of `container`.
    pub fn host_port(&self, container: &str, container_port: u16) -> Result<u16> {
        let out = docker(&["port", container, &format!("{container_port}/tcp")])?;
        let first = out.lines().next().unwrap_or_default();
        let port = first.rsplit(':').next().unwrap_or_default();
        port.parse()
            .with_context(|| format!("parsing the host port from `docker port`: {out:?}"))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Ok(ids) = self.containers()
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// A dockerd of a test's own, for tests that stop and restart dockerd without disturbing the
/// tests that share the system one: its own socket, data and exec roots, and its own network
/// namespace (a second dockerd in the host's namespace would fight the first over `docker0` and
/// iptables). Clients reach it through its unix socket.
#[derive(Debug)]
pub struct PrivateDockerd {
    dir: tempfile::TempDir,
    netns: String,
    process: Option<crate::process::Guarded>,
}

impl PrivateDockerd {
    /// Starts it and waits until it answers.
    pub fn start() -> Result<Self> {
        ensure_dockerd()?;
        // Short paths: containerd's sockets live under the exec root and unix socket paths are
        // limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("od").tempdir_in("/tmp")?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let netns = format!(
            "outpost-d{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        crate::process::run(Command::new("ip").args(["netns", "add", &netns]))?;
        let mut d = Self {
            dir,
            netns,
            process: None,
        };
        crate::process::run(
            Command::new("ip").args(["netns", "exec", &d.netns, "ip", "link", "set", "lo", "up"]),
        )?;
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        let p = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.join("dockerd.log"))?;
        // nsenter enters only the network namespace; `ip netns exec` would also remount /sys,
        // hiding the cgroup mounts dockerd needs.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("x"))
            .arg("--pidfile")
            .arg(p.join("docker.pid"))
            .stdout(log.try_clone()?)
            .stderr(log);
        self.process = Some(crate::process::Guarded::spawn("private dockerd", &mut cmd)?);
        wait::until(
            "the private dockerd to answer",
            Duration::from_secs(60),
            || {
                self.cli(&["version", "--format", "{{.Server.Version}}"])
                    .ok()
            },
        )?;
        Ok(())
    }

    /// Its socket.
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// `unix://<socket>`, for an agent's `docker` setting.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Runs the docker CLI against it.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        crate::process::stdout(Command::new("docker").arg("-H").arg(self.url()).args(args))
    }

    /// Copies an image of the system dockerd into this one.
    pub fn load(&self, image: &str) -> Result<()> {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .context("docker save")?;
        let out = save.stdout.take().context("docker save's stdout")?;
        crate::process::run(
            Command::new("docker")
                .arg("-H")
                .arg(self.url())
                .arg("load")
                .stdin(out),
        )?;
        save.wait()?;
        Ok(())
    }

    /// Stops dockerd (SIGTERM, as a service stop does; its containers stop with it) and waits
    /// until it is gone.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            if let Some(pid) = p.pid() {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
            wait::until(
                "the private dockerd to exit",
                Duration::from_secs(60),
                || (!p.is_running()).then_some(()),
            )?;
        }
        Ok(())
    }

    /// Starts it again on the same socket and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if let Ok(ids) = self.cli(&["ps", "-aq"]) {
            for id in ids.lines() {
                let _ = self.cli(&["rm", "-f", id]);
            }
        }
        let _ = self.stop();
        // dockerd leaves mounts under its roots (a netns, overlays): unmount them, deepest
        // first, so the temp dir can go.
        let root = self.dir.path().to_string_lossy().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        points.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in points {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
    }
}

/// dockerd's API on a loopback TCP port, forwarded to its unix socket, for testing clients
/// configured with `tcp://` against the real dockerd (which listens only on its socket here).
#[derive(Debug)]
pub struct TcpDockerProxy {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<AtomicU32>,
}

impl TcpDockerProxy {
    /// Listens on a free loopback port and forwards each connection to [`SOCKET`].
    pub fn start() -> Result<Self> {
        use std::sync::atomic::AtomicBool;
        ensure_dockerd()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let connections = std::sync::Arc::new(AtomicU32::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                counted.fetch_add(1, Ordering::Relaxed);
                let Ok(tcp) = conn else { continue };
                let Ok(unix) = UnixStream::connect(SOCKET) else {
                    continue;
                };
                let (Ok(mut tcp_r), Ok(mut unix_w)) = (tcp.try_clone(), unix.try_clone()) else {
                    continue;
                };
                let (mut tcp_w, mut unix_r) = (tcp, unix);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut tcp_r, &mut unix_w);
                    let _ = unix_w.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut unix_r, &mut tcp_w);
                    let _ = tcp_w.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(Self {
            port,
            stop,
            connections,
        })
    }

    /// How many connections it forwarded.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// `tcp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

impl Drop for TcpDockerProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
