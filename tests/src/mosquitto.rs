//! A fresh mosquitto broker per test, on a free loopback port with its own config file; open,
//! or with username/password.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::process::{self, Guarded};
use crate::{net, wait};

/// Username and password of a broker that requires them.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A running mosquitto, stopped on drop.
#[derive(Debug)]
pub struct Broker {
    port: u16,
    config: PathBuf,
    credentials: Option<Credentials>,
    process: Guarded,
    // Last: the config must outlive the process.
    _dir: TempDir,
}

impl Broker {
    /// Starts a broker that accepts anonymous clients.
    pub fn start() -> Result<Self> {
        Self::start_inner(None, "")
    }

    /// Starts an anonymous broker with `extra` appended to its config (benchmarks lift
    /// mosquitto's per-client queue limits this way).
    pub fn start_with_config(extra: &str) -> Result<Self> {
        Self::start_inner(None, extra)
    }

    /// Starts a broker that requires `username`/`password`.
    pub fn start_with_auth(username: &str, password: &str) -> Result<Self> {
        Self::start_inner(
            Some(Credentials {
                username: username.into(),
                password: password.into(),
            }),
            "",
        )
    }

    fn start_inner(credentials: Option<Credentials>, extra: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = net::free_port()?;
        let mut conf = format!(
            "listener {port} 127.0.0.1\npersistence false\nlog_dest stderr\nlog_type error\n\
             log_type warning\n"
        );
        match &credentials {
            None => conf.push_str("allow_anonymous true\n"),
            Some(c) => {
                let pw = dir.path().join("passwd");
                process::run(
                    Command::new("mosquitto_passwd")
                        .arg("-b")
                        .arg("-c")
                        .arg(&pw)
                        .arg(&c.username)
                        .arg(&c.password),
                )?;
                conf.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    pw.display()
                ));
            }
        }
        conf.push_str(extra);
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(&config, conf).context("writing mosquitto.conf")?;
        let process = spawn(&config)?;
        let broker = Self {
            port,
            config,
            credentials,
            process,
            _dir: dir,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&self) -> Result<()> {
        let port = self.port;
        wait::until(
            &format!("mosquitto to listen on 127.0.0.1:{port}"),
            Duration::from_secs(10),
            || net::accepts(port).then_some(()),
        )
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The credentials it requires, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Stops the broker (as a crash would: SIGKILL).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.process.stop();
        self.process = spawn(&self.config)?;
        self.wait_ready()
    }

    /// Arguments for `mosquitto_pub`/`mosquitto_sub` to reach this broker.
    pub fn client_args(&self) -> Vec<String> {
        let mut args = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ];
        if let Some(c) = &self.credentials {
            args.extend([
                "-u".into(),
                c.username.clone(),
                "-P".into(),
                c.password.clone(),
            ]);
        }
        args
    }
}

fn spawn(config: &std::path::Path) -> Result<Guarded> {
    Guarded::spawn(
        "mosquitto",
        Command::new("mosquitto")
            .arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
}
