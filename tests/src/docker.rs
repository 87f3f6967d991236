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
