//! An `outpost-agent` process for end-to-end tests: its config written to a temp dir, its log
//! kept in a file (printed when a test fails), and its containers removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::bin_path;
use crate::docker::docker;
use crate::process::Guarded;

/// A running agent.
pub struct Agent {
    id: String,
    process: Guarded,
    dir: TempDir,
    bin: PathBuf,
}

impl Agent {
    /// A unique agent id for a test (`name` plus the process id).
    pub fn unique_id(name: &str) -> String {
        format!("{name}-{}", std::process::id())
    }

    /// Starts the agent `id` with `extra_toml` appended to a config that points it at
    /// `broker_url` and a port range of its own.
    pub fn start(
        id: &str,
        broker_url: &str,
        port_range: (u16, u16),
        extra_toml: &str,
    ) -> Result<Self> {
        Self::start_with_state_dir(id, broker_url, port_range, extra_toml, None)
    }

    /// As [`Agent::start`], with the state in `state_dir` (e.g. a small tmpfs) instead of the
    /// agent's own temp dir (which keeps its config and log either way).
    pub fn start_with_state_dir(
        id: &str,
        broker_url: &str,
        port_range: (u16, u16),
        extra_toml: &str,
        state_dir: Option<&Path>,
    ) -> Result<Self> {
        let bin = bin_path::path("outpost-agent")?;
        Self::start_binary(&bin, id, broker_url, port_range, extra_toml, state_dir)
    }

    /// As [`Agent::start_with_state_dir`], running the agent binary at `bin` (e.g. the static
    /// release build).
    pub fn start_binary(
        bin: &Path,
        id: &str,
        broker_url: &str,
        port_range: (u16, u16),
        extra_toml: &str,
        state_dir: Option<&Path>,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = format!(
            "agent_id = \"{id}\"\nbrokers = [\"{broker_url}\"]\nstate_dir = \"{}\"\n\
             port_range = \"{}-{}\"\noffer_interval_seconds = 5\n{extra_toml}\n",
            state_dir.unwrap_or(dir.path()).display(),
            port_range.0,
            port_range.1
        );
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, config)?;
        let process = spawn(bin, &path, dir.path(), &[])?;
        Ok(Self {
            id: id.into(),
            process,
            dir,
            bin: bin.to_path_buf(),
        })
    }

    /// The agent's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The agent's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The agent's state directory (its state file lives here).
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGKILLs the agent (its containers stay).
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// Starts the agent again with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.restart_with_env(&[])
    }

    /// Starts the agent again with the same config and these extra environment variables
    /// (e.g. `NOTIFY_SOCKET`, to play systemd).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.process.stop();
        self.process = spawn(
            &self.bin,
            &self.dir.path().join("agent.toml"),
            self.dir.path(),
            env,
        )?;
        Ok(())
    }

    /// Ids of this agent's containers, running or not.
    pub fn containers(&self) -> Result<Vec<String>> {
        let filter = format!("label=outpost.agent-id={}", self.id);
        Ok(docker(&["ps", "-aq", "--filter", &filter])?
            .lines()
            .map(str::to_string)
            .collect())
    }
}

fn spawn(bin: &Path, config: &Path, dir: &Path, env: &[(&str, &str)]) -> Result<Guarded> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .context("opening the agent log")?;
    Guarded::spawn(
        "outpost-agent",
        Command::new(bin)
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log),
    )
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.process.stop();
        if std::thread::panicking() {
            eprintln!("---- log of agent {} ----\n{}", self.id, self.log());
        }
        if let Ok(ids) = self.containers()
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}
