//! A fresh mosquitto broker per test, on a free loopback port with its own config file; open,
//! with username/password, or with the shipped mutual-TLS config and ACL
//! (`packaging/mosquitto/`).

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
    /// The certificates directory of a mutual-TLS broker.
    tls: Option<PathBuf>,
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
            tls: None,
            process,
            _dir: dir,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    /// Starts a broker with the shipped mutual-TLS config and ACL (`packaging/mosquitto/`), its
    /// paths pointed at `certs` (which holds what `outpost-bridge issue-certs` wrote) and its
    /// listener at a free loopback port.
    pub fn start_tls(certs: &std::path::Path) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = net::free_port()?;
        let shipped = crate::bin_path::workspace_root().join("packaging/mosquitto");
        let read = |f: &str| {
            std::fs::read_to_string(shipped.join(f)).with_context(|| format!("reading {f}"))
        };
        let certs_prefix = format!("{}/", certs.display());
        let conf = read("outpost.conf")?
            .replace("/etc/mosquitto/outpost/", &certs_prefix)
            .replace("listener 8883", &format!("listener {port} 127.0.0.1"));
        anyhow::ensure!(
            conf.contains(&certs_prefix),
            "outpost.conf names no cert paths"
        );
        std::fs::write(certs.join("outpost.acl"), read("outpost.acl")?)?;
        let config = dir.path().join("mosquitto.conf");
        // `user root`: the test's certificates sit in its private temp dir, which the
        // `mosquitto` user mosquitto would switch to cannot read (an installed broker reads
        // /etc/mosquitto/outpost/, its key owned by mosquitto; docs/security.md).
        std::fs::write(
            &config,
            format!("user root\npersistence false\nlog_dest stderr\nlog_type error\n{conf}"),
        )?;
        let process = spawn(&config)?;
        let broker = Self {
            port,
            config,
            credentials: None,
            tls: Some(certs.to_path_buf()),
            process,
            _dir: dir,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    /// MQTT options for a client of this broker; with TLS, presenting the certificate
    /// `identity` (`bridge`, `agent-ID`: the base name of its .pem and .key).
    pub fn mqtt_options(&self, client_id: &str, identity: &str) -> Result<rumqttc::MqttOptions> {
        let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", self.port);
        if let Some(c) = &self.credentials {
            o.set_credentials(c.username.clone(), c.password.clone());
        }
        if let Some(certs) = &self.tls {
            let files = outpost_protocol::broker::TlsFiles {
                ca_file: certs.join("ca.pem"),
                cert_file: Some(certs.join(format!("{identity}.pem"))),
                key_file: Some(certs.join(format!("{identity}.key"))),
            };
            let config = files.client_config("test")?;
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(config),
            ));
        }
        Ok(o)
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

    /// `mqtt://127.0.0.1:<port>` (`mqtts://` for a TLS broker).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
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
