//! A Docker registry per test (Debian's `docker-registry serve CONFIG`) on a free loopback port:
//! open, or with htpasswd (bcrypt) auth. Debian's default config requires auth, so each
//! registry gets its own config. dockerd treats 127.0.0.0/8 as an insecure registry, so plain
//! HTTP works.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::docker::docker;
use crate::mosquitto::Credentials;
use crate::process::{self, Guarded};
use crate::{http, net, wait};

/// A running registry, stopped (and its pushed tags removed from dockerd) on drop.
#[derive(Debug)]
pub struct Registry {
    port: u16,
    credentials: Option<Credentials>,
    /// A docker CLI config dir holding this registry's login, so parallel tests never share
    /// credentials through `~/.docker/config.json`.
    docker_config: PathBuf,
    pushed: Vec<String>,
    process: Guarded,
    _dir: TempDir,
}

impl Registry {
    /// Starts a registry that needs no credentials.
    pub fn start() -> Result<Self> {
        Self::start_inner(None)
    }

    /// Starts a registry that requires `username`/`password` (htpasswd, bcrypt).
    pub fn start_with_auth(username: &str, password: &str) -> Result<Self> {
        Self::start_inner(Some(Credentials {
            username: username.into(),
            password: password.into(),
        }))
    }

    fn start_inner(credentials: Option<Credentials>) -> Result<Self> {
        crate::docker::ensure_dockerd()?;
        let dir = tempfile::tempdir()?;
        let port = net::free_port()?;
        let data = dir.path().join("data");
        let mut conf = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: outpost-test-{port}\n",
            data.display()
        );
        if let Some(c) = &credentials {
            let htpasswd = dir.path().join("htpasswd");
            process::run(
                Command::new("htpasswd")
                    .args(["-B", "-b", "-c"])
                    .arg(&htpasswd)
                    .arg(&c.username)
                    .arg(&c.password)
                    .stderr(Stdio::null()),
            )
            .context("writing htpasswd (is apache2-utils installed?)")?;
            conf.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: outpost-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, conf).context("writing the registry config")?;
        let process = Guarded::spawn(
            "docker-registry",
            Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )?;
        let docker_config = dir.path().join("docker-config");
        std::fs::create_dir_all(&docker_config)?;
        let registry = Self {
            port,
            credentials,
            docker_config,
            pushed: Vec::new(),
            process,
            _dir: dir,
        };
        let url = format!("http://127.0.0.1:{port}/v2/");
        // /v2/ answers 200 when open and 401 when auth is on: either means it serves.
        wait::until(
            &format!("the registry to answer {url}"),
            Duration::from_secs(15),
            || {
                http::get(&url)
                    .ok()
                    .filter(|r| r.status == 200 || r.status == 401)
            },
        )?;
        if let Some(c) = &registry.credentials {
            let mut login = Command::new("docker");
            login
                .arg("--config")
                .arg(&registry.docker_config)
                .args(["login", "-u", &c.username, "-p", &c.password])
                .arg(registry.host())
                .stderr(Stdio::null());
            process::run(&mut login).context("docker login to the test registry")?;
        }
        Ok(registry)
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The credentials it requires, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// The docker CLI config dir that holds this registry's login.
    pub fn docker_config(&self) -> &std::path::Path {
        &self.docker_config
    }

    /// Tags the local image `local` as `<host>/<repo>` and pushes it (logged in when the
    /// registry needs it); returns the pushed reference.
    pub fn push(&mut self, local: &str, repo: &str) -> Result<String> {
        let remote = format!("{}/{repo}", self.host());
        docker(&["tag", local, &remote])?;
        self.pushed.push(remote.clone());
        self.docker_cli(&["push", &remote])?;
        Ok(remote)
    }

    /// Runs the docker CLI with this registry's login.
    pub fn docker_cli(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("docker");
        cmd.arg("--config").arg(&self.docker_config).args(args);
        process::stdout(&mut cmd)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.process.stop();
        for tag in &self.pushed {
            let _ = docker(&["rmi", "--no-prune", tag]);
        }
    }
}
