//! An `outpost-bridge` process for end-to-end tests: its own loopback port, MQTT client id and
//! state directory (kept across [`Bridge::restart`]), its log in a file printed when a test
//! fails (at debug level for the bridge unless [`Bridge::start_logging`] says otherwise), and a
//! small JSON client for its Marathon API.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tempfile::TempDir;

use crate::bin_path;
use crate::net::free_port;
use crate::process::Guarded;
use crate::wait;

/// A running bridge.
pub struct Bridge {
    port: u16,
    mesos_port: u16,
    process: Guarded,
    dir: TempDir,
    log_filter: String,
}

/// An HTTP answer: status, headers, body (JSON when it parses).
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Bridge {
    /// Starts a bridge connected to `broker_url`, with `extra_toml` appended to its config;
    /// returns once `/ping` answers.
    pub fn start(broker_url: &str, extra_toml: &str) -> Result<Self> {
        Self::start_logging(broker_url, extra_toml, TEST_LOG)
    }

    /// As [`Bridge::start`], logging with `log_filter` (`OUTPOST_LOG`): a benchmark's bridge
    /// logs as in production (`info`).
    pub fn start_logging(broker_url: &str, extra_toml: &str, log_filter: &str) -> Result<Self> {
        let b = Self::spawn_with(broker_url, extra_toml, log_filter)?;
        b.wait_ready()?;
        Ok(b)
    }

    /// As [`Bridge::start`], without waiting for plain-HTTP `/ping` (a bridge whose APIs
    /// speak TLS; the test waits its own way).
    pub fn start_no_wait(broker_url: &str, extra_toml: &str) -> Result<Self> {
        Self::spawn_with(broker_url, extra_toml, TEST_LOG)
    }

    fn spawn_with(broker_url: &str, extra_toml: &str, log_filter: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mesos_port = free_port()?;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Bridges of one group (`[ha]`) share the client id their test gives them.
        let client_id = if extra_toml.contains("client_id") {
            String::new()
        } else {
            format!("client_id = \"bridge-{}-{n}\"\n", std::process::id())
        };
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\nmesos_listen = \"127.0.0.1:{mesos_port}\"\nbrokers = [\"{broker_url}\"]\nstate_dir = \"{}\"\n\
             {client_id}{extra_toml}\n",
            dir.path().display(),
        );
        std::fs::write(dir.path().join("bridge.toml"), config)?;
        let process = spawn(dir.path(), log_filter)?;
        Ok(Self {
            port,
            mesos_port,
            process,
            dir,
            log_filter: log_filter.to_string(),
        })
    }

    fn wait_ready(&self) -> Result<()> {
        wait::until("the bridge's /ping", Duration::from_secs(20), || {
            self.get("/ping").ok().filter(|a| a.status == 200)
        })
        .map(|_| ())
    }

    /// SIGKILLs the bridge and starts it again on the same port, config and state.
    pub fn restart(&mut self) -> Result<()> {
        self.process.stop();
        self.process = spawn(self.dir.path(), &self.log_filter)?;
        self.wait_ready()
    }

    /// SIGKILLs the bridge.
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The API's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Mesos endpoints' port.
    pub fn mesos_port(&self) -> u16 {
        self.mesos_port
    }

    /// `http://127.0.0.1:MESOS_PORT{path}`: the Mesos endpoints.
    pub fn mesos_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.mesos_port)
    }

    /// GETs a Mesos endpoint; its status and body.
    pub fn mesos_get(&self, path: &str) -> Result<Answer> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let url = self.mesos_url(path);
        let resp = agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        Ok(answer(resp))
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The bridge's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bridge.log")).unwrap_or_default()
    }

    /// The bridge's own directory (its config, state and log), for files a test gives it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends a request with JSON headers as Marathon clients do.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<Answer> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let url = self.url(path);
        let result = match (method, body) {
            ("GET", _) => agent.get(&url).header("Accept", "application/json").call(),
            ("DELETE", _) => agent
                .delete(&url)
                .header("Accept", "application/json")
                .call(),
            ("POST", b) => agent
                .post(&url)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .send(b.unwrap_or("")),
            ("PUT", b) => agent
                .put(&url)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .send(b.unwrap_or("")),
            ("PATCH", b) => agent
                .patch(&url)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .send(b.unwrap_or("")),
            (m, _) => anyhow::bail!("unsupported method {m}"),
        };
        let resp = result.with_context(|| format!("{method} {url}"))?;
        Ok(answer(resp))
    }

    /// GET.
    pub fn get(&self, path: &str) -> Result<Answer> {
        self.request("GET", path, None)
    }

    /// GET, JSON body of a 200 (`Null` otherwise).
    pub fn json(&self, path: &str) -> Value {
        self.get(path)
            .ok()
            .filter(|a| a.status == 200)
            .map(|a| a.json())
            .unwrap_or(Value::Null)
    }
}

/// A response as an [`Answer`] (any status; an unreadable body is empty).
fn answer(mut resp: ureq::http::Response<ureq::Body>) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    // ureq stops at 10 MB by default; a big fleet's /master/state is larger.
    let text = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap_or_default();
    Answer {
        status,
        headers,
        text,
    }
}

/// The log filter of a test's bridge.
const TEST_LOG: &str = "info,outpost_bridge=debug";

fn spawn(dir: &Path, log_filter: &str) -> Result<Guarded> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("bridge.log"))
        .context("opening the bridge log")?;
    let bin: PathBuf = bin_path::path("outpost-bridge")?;
    Guarded::spawn(
        "outpost-bridge",
        Command::new(bin)
            .arg("--config")
            .arg(dir.join("bridge.toml"))
            .env("OUTPOST_LOG", log_filter)
            .stdout(Stdio::null())
            .stderr(log),
    )
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.process.stop();
        if std::thread::panicking() {
            eprintln!("---- log of the bridge ----\n{}", self.log());
        }
    }
}
