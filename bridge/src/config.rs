//! The bridge's configuration: TOML, unknown keys refused, every value checked here once.
//! Errors name the key and the value. Every key has a default, so an empty file (or none,
//! with `--config` left out) runs a bridge on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use serde::Deserialize;

pub use outpost_protocol::broker::{BrokerAuth, BrokerUrl};
use outpost_protocol::broker::{Brokers, BrokersError, TlsError, TlsFiles};

/// The ZooKeeper session timeout a bridge asks for without `ha.session_timeout_ms`. Mesos and
/// Marathon use 10 s; a failover takes the session timeout and about 0.8 s more, and 8 s keeps
/// it within the 10 s that docs/BENCHMARKS.md measures (p50 8.8 s, max 9.1 s).
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 8_000;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    mesos_listen: Option<String>,
    brokers: Option<Vec<String>>,
    broker_auth: Option<BrokerAuth>,
    broker_tls: Option<TlsFiles>,
    command_signing_key: Option<PathBuf>,
    api_users: Option<Vec<crate::auth::User>>,
    api_tokens: Option<Vec<crate::auth::Token>>,
    api_tls: Option<crate::auth::TlsFiles>,
    state_dir: Option<PathBuf>,
    client_id: Option<String>,
    advertised_host: Option<String>,
    task_launch_timeout: Option<u64>,
    http_callbacks: Option<bool>,
    callback_tls: Option<TlsFiles>,
    max_versions: Option<usize>,
    scheduler_heartbeat_seconds: Option<u64>,
    ha: Option<HaFile>,
}

/// `[ha]`: several bridges over one ZooKeeper ensemble (docs/ha.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HaFile {
    /// `zk://[user:password@]h1:2181,h2:2181/outpost`.
    zk: String,
    mesos_path: Option<String>,
    session_timeout_ms: Option<u64>,
    marathon_address: Option<String>,
    mesos_address: Option<String>,
    /// With `api_tls`: the CA that signed the bridges' API certificates.
    ca_file: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the Marathon API listens (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Where the Mesos APIs listen: operator endpoints (and the scheduler API) (default
    /// `127.0.0.1:5050`).
    pub mesos_listen: SocketAddr,
    /// Brokers, tried in order.
    pub brokers: Vec<BrokerUrl>,
    /// Broker credentials.
    pub broker_auth: Option<BrokerAuth>,
    /// TLS for `mqtts://` brokers: the CA to verify them with, and the bridge's certificate.
    pub broker_tls: Option<Arc<rustls::ClientConfig>>,
    /// The Ed25519 key every command is signed with, if set.
    pub signer: Option<crate::signing::Signer>,
    /// Who may use the HTTP APIs (open when empty).
    pub auth: crate::auth::Auth,
    /// TLS for both HTTP listeners, if set.
    pub api_tls: Option<Arc<rustls::ServerConfig>>,
    /// Where the state database lives (default `/var/lib/outpost-bridge`).
    pub state_dir: PathBuf,
    /// The MQTT client id (default `outpost-bridge`).
    pub client_id: String,
    /// The host name the bridge names itself by in `/v2/leader` and `/v2/info`.
    pub advertised_host: String,
    /// A Marathon task not RUNNING this long after its launch is killed and replaced
    /// (Marathon's `--task_launch_timeout`, in milliseconds; default 300,000).
    pub task_launch_timeout_ms: u64,
    /// Between two HEARTBEAT events on a Mesos framework's stream (default 15 s, as a Mesos
    /// master sends them).
    pub scheduler_heartbeat: std::time::Duration,
    /// Several bridges over ZooKeeper (`[ha]`); `None`: one bridge with its embedded store.
    pub ha: Option<crate::ha::HaConfig>,
    /// Whether `/v2/eventSubscriptions` registers HTTP callbacks the bridge POSTs every event
    /// to (Marathon's `--event_subscriber http_callback`; default on).
    pub http_callbacks: bool,
    /// The TLS client of `https://` callbacks: `[callback_tls]`'s CA (and client certificate),
    /// else the system's trusted CAs (`/etc/ssl/certs/ca-certificates.crt`), else none (https
    /// callbacks are then refused).
    pub callback_tls: Option<Arc<rustls::ClientConfig>>,
    /// App definitions kept per app (Marathon's `--max_versions`; default 50).
    pub max_versions: usize,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// TOML's message (it names the key and the line).
        message: String,
    },
    /// A TLS file that is missing, unreadable, or not a certificate or key.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A value that is not allowed.
    #[error("{key} = {value:?}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What is expected.
        reason: String,
    },
}

/// Debian's bundle of the CAs the system trusts (package ca-certificates).
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A TLS client trusting the CAs of the PEM bundle at `path` (those that parse), if it has any.
fn system_tls(path: &Path) -> Option<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .ok()?
        .filter_map(Result::ok)
        .collect();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return None;
    }
    let config = rustls::ClientConfig::builder_with_provider(outpost_protocol::broker::provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(Arc::new(config))
}

fn invalid(key: &str, value: impl std::fmt::Display, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl Config {
    /// What the configuration means, one `key = value` line each, secrets left out (what
    /// `check-config` prints).
    pub fn summary(&self) -> String {
        let brokers: Vec<String> = self.brokers.iter().map(ToString::to_string).collect();
        let mut lines =
            vec![
                format!("listen = {}", self.listen),
                format!("mesos_listen = {}", self.mesos_listen),
                format!("brokers = [{}]", brokers.join(", ")),
                format!(
                    "broker_auth = {}",
                    self.broker_auth
                        .as_ref()
                        .map_or("none".to_string(), |a| format!("user {:?}", a.username))
                ),
                format!(
                    "broker_tls = {}",
                    if self.broker_tls.is_some() {
                        "loaded"
                    } else {
                        "none"
                    }
                ),
                format!(
                    "command_signing_key = {}",
                    self.signer.as_ref().map_or(
                        "none (commands unsigned)".to_string(),
                        |s| format!("public key {}", s.public_base64())
                    )
                ),
                format!(
                    "api auth = {} user(s), {} token(s){}",
                    self.auth.users.len(),
                    self.auth.tokens.len(),
                    if self.auth.enabled() { "" } else { " (open)" }
                ),
                format!(
                    "api_tls = {}",
                    if self.api_tls.is_some() {
                        "loaded"
                    } else {
                        "none"
                    }
                ),
                format!("state_dir = {}", self.state_dir.display()),
                format!("client_id = {}", self.client_id),
                format!("advertised_host = {}", self.advertised_host),
                format!("task_launch_timeout = {} ms", self.task_launch_timeout_ms),
                format!("http_callbacks = {}", self.http_callbacks),
                format!("max_versions = {}", self.max_versions),
                format!(
                    "scheduler_heartbeat_seconds = {}",
                    self.scheduler_heartbeat.as_secs()
                ),
            ];
        match &self.ha {
            None => lines.push("ha = none (one bridge, embedded store)".into()),
            Some(h) => {
                lines.push(format!("ha.zk = {}", h.zk));
                lines.push(format!("ha.mesos_path = {}", h.mesos_path));
                lines.push(format!(
                    "ha.session_timeout_ms = {}",
                    h.session_timeout.as_millis()
                ));
                lines.push(format!("ha.marathon_address = {}", h.marathon_address));
                lines.push(format!("ha.mesos_address = {}", h.mesos_address));
            }
        }
        lines.push(String::new());
        lines.join("\n")
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates TOML `text` (`path` is only for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let listen_text = file.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "listen",
                &listen_text,
                "expected ADDRESS:PORT, e.g. 127.0.0.1:8080",
            )
        })?;
        let mesos_text = file.mesos_listen.unwrap_or_else(|| "127.0.0.1:5050".into());
        let mesos_listen: SocketAddr = mesos_text.parse().map_err(|_| {
            invalid(
                "mesos_listen",
                &mesos_text,
                "expected ADDRESS:PORT, e.g. 127.0.0.1:5050",
            )
        })?;
        if mesos_listen == listen {
            return Err(invalid(
                "mesos_listen",
                &mesos_text,
                "must differ from listen (the Marathon API's address)",
            ));
        }
        let brokers =
            Brokers::from_config(file.brokers, file.broker_tls.as_ref()).map_err(|e| match e {
                BrokersError::Invalid(key, value, reason) => invalid(&key, value, reason),
                BrokersError::Tls(e) => ConfigError::Tls(e),
            })?;
        let (brokers, broker_tls) = (brokers.urls, brokers.tls);
        let signer = match &file.command_signing_key {
            Some(path) => Some(
                crate::signing::Signer::load(path)
                    .map_err(|e| invalid("command_signing_key", path.display(), &e))?,
            ),
            None => None,
        };
        let auth = crate::auth::Auth {
            users: file.api_users.unwrap_or_default(),
            tokens: file.api_tokens.unwrap_or_default(),
        };
        for (i, u) in auth.users.iter().enumerate() {
            if u.username.is_empty() || u.username.contains(':') || u.password.is_empty() {
                return Err(invalid(
                    &format!("api_users[{i}].username"),
                    &u.username,
                    "needs a username without ':' and a non-empty password",
                ));
            }
        }
        for (i, t) in auth.tokens.iter().enumerate() {
            if t.token.len() < 16 {
                return Err(invalid(
                    &format!("api_tokens[{i}].token"),
                    "(hidden)",
                    "must be at least 16 characters",
                ));
            }
        }
        let api_tls = match &file.api_tls {
            Some(files) => Some(
                crate::auth::server_config(files)
                    .map_err(|e| invalid("api_tls", files.cert_file.display(), &e))?,
            ),
            None => None,
        };
        let client_id = file.client_id.unwrap_or_else(|| "outpost-bridge".into());
        if client_id.is_empty() || client_id.len() > 64 {
            return Err(invalid("client_id", &client_id, "must be 1-64 bytes"));
        }
        let advertised_host = file.advertised_host.unwrap_or_else(|| {
            if listen.ip().is_unspecified() {
                "127.0.0.1".into()
            } else {
                listen.ip().to_string()
            }
        });
        let task_launch_timeout_ms = file.task_launch_timeout.unwrap_or(300_000);
        if task_launch_timeout_ms < 1_000 {
            return Err(invalid(
                "task_launch_timeout",
                task_launch_timeout_ms,
                "milliseconds, at least 1000 (Marathon's default is 300000)",
            ));
        }
        let heartbeat = file.scheduler_heartbeat_seconds.unwrap_or(15);
        if !(1..=3600).contains(&heartbeat) {
            return Err(invalid(
                "scheduler_heartbeat_seconds",
                heartbeat,
                "seconds, 1 to 3600",
            ));
        }
        let ha = match file.ha {
            None => None,
            Some(h) => Some(ha_config(
                h,
                &advertised_host,
                listen,
                mesos_listen,
                api_tls.is_some(),
            )?),
        };
        let max_versions = file
            .max_versions
            .unwrap_or(crate::core::DEFAULT_MAX_VERSIONS);
        if !(1..=10_000).contains(&max_versions) {
            return Err(invalid("max_versions", max_versions, "1 to 10000"));
        }
        Ok(Self {
            ha,
            http_callbacks: file.http_callbacks.unwrap_or(true),
            callback_tls: match &file.callback_tls {
                Some(f) => Some(f.client_config("callback_tls")?),
                None => system_tls(Path::new(SYSTEM_CAS)),
            },
            max_versions,
            task_launch_timeout_ms,
            scheduler_heartbeat: std::time::Duration::from_secs(heartbeat),
            listen,
            mesos_listen,
            brokers,
            broker_auth: file.broker_auth,
            broker_tls,
            signer,
            auth,
            api_tls,
            state_dir: file
                .state_dir
                .unwrap_or_else(|| "/var/lib/outpost-bridge".into()),
            client_id,
            advertised_host,
        })
    }
}

/// `[ha]` checked: the URL parsed, the addresses `host:port`, the session timeout bounded.
fn ha_config(
    h: HaFile,
    advertised_host: &str,
    listen: SocketAddr,
    mesos_listen: SocketAddr,
    api_tls: bool,
) -> Result<crate::ha::HaConfig, ConfigError> {
    let zk = crate::ha::ZkUrl::parse(&h.zk).map_err(|e| {
        // The value without its credentials.
        let shown = match h.zk.rsplit_once('@') {
            Some((_, rest)) => format!("zk://***@{rest}"),
            None => h.zk.clone(),
        };
        invalid("ha.zk", shown, &e)
    })?;
    let mesos_path = h.mesos_path.unwrap_or_else(|| "/mesos".into());
    let probe = format!("zk://h{mesos_path}");
    match crate::ha::ZkUrl::parse(&probe) {
        Ok(u) if u.path == mesos_path => {}
        _ => {
            return Err(invalid(
                "ha.mesos_path",
                &mesos_path,
                "expected an absolute ZooKeeper path such as /mesos",
            ));
        }
    }
    if mesos_path == zk.path || mesos_path.starts_with(&format!("{}/", zk.path)) {
        return Err(invalid(
            "ha.mesos_path",
            &mesos_path,
            "must lie outside ha.zk's path (clients list every child of it)",
        ));
    }
    let timeout = h.session_timeout_ms.unwrap_or(DEFAULT_SESSION_TIMEOUT_MS);
    if !(400..=60_000).contains(&timeout) {
        return Err(invalid(
            "ha.session_timeout_ms",
            timeout,
            "milliseconds, 400 to 60000 (default 8000; Mesos and Marathon use 10000)",
        ));
    }
    let address = |key: &str, value: Option<String>, port: u16| {
        let v = value.unwrap_or_else(|| format!("{advertised_host}:{port}"));
        match v.rsplit_once(':') {
            Some((host, p)) if !host.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(v),
            _ => Err(invalid(key, &v, "expected HOST:PORT")),
        }
    };
    let leader_tls = match (&h.ca_file, api_tls) {
        (Some(ca), _) => Some(
            TlsFiles {
                ca_file: ca.clone(),
                cert_file: None,
                key_file: None,
            }
            .client_config("ha")?,
        ),
        (None, true) => {
            return Err(invalid(
                "ha.ca_file",
                "(not set)",
                "needed with api_tls: the CA that signed the bridges' API certificates \
                 (a follower proxies Marathon requests to the leader over HTTPS)",
            ));
        }
        (None, false) => None,
    };
    Ok(crate::ha::HaConfig {
        leader_tls,
        marathon_address: address("ha.marathon_address", h.marathon_address, listen.port())?,
        mesos_address: address("ha.mesos_address", h.mesos_address, mesos_listen.port())?,
        zk,
        mesos_path,
        session_timeout: std::time::Duration::from_millis(timeout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("bridge.toml"))
    }

    #[test]
    fn the_summary_names_every_setting_and_no_secret() {
        let c = parse(
            "brokers = [\"mqtt://b1:1884\"]\n[broker_auth]\nusername = \"br\"\npassword = \"pw-secret\"\n\
             [[api_tokens]]\ntoken = \"tok-secret-0123456789\"\nrole = \"read\"\n",
        )
        .unwrap();
        let s = c.summary();
        for k in [
            "listen = ",
            "brokers = [mqtt://b1:1884]",
            "user \"br\"",
            "1 token(s)",
        ] {
            assert!(s.contains(k), "{k}: {s}");
        }
        assert!(!s.contains("pw-secret") && !s.contains("tok-secret"), "{s}");
    }

    #[test]
    fn an_empty_file_is_a_loopback_bridge() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.mesos_listen.to_string(), "127.0.0.1:5050");
        assert_eq!(
            c.brokers,
            vec![BrokerUrl {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false
            }]
        );
        assert_eq!(c.advertised_host, "127.0.0.1");
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        let e = parse("listen = \"nowhere\"").unwrap_err().to_string();
        assert!(e.contains("listen") && e.contains("nowhere"), "{e}");
        let e = parse("brokers = [\"http://x\"]").unwrap_err().to_string();
        assert!(e.contains("brokers") && e.contains("http://x"), "{e}");
        let e = parse("colour = 1").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let e = parse("task_launch_timeout = 5").unwrap_err().to_string();
        assert!(e.contains("task_launch_timeout") && e.contains('5'), "{e}");
        let e = parse("scheduler_heartbeat_seconds = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scheduler_heartbeat_seconds"), "{e}");
    }

    #[test]
    fn the_ha_section_takes_a_zk_url_and_names_what_is_wrong() {
        let c = parse(
            "listen = \"10.0.0.5:8080\"\n[ha]\nzk = \"zk://ops:pw-secret@z1:2181,z2:2181,z3/outpost\"\n",
        )
        .unwrap();
        let h = c.ha.as_ref().unwrap();
        assert_eq!(h.zk.hosts, "z1:2181,z2:2181,z3:2181");
        assert_eq!(h.zk.path, "/outpost");
        assert_eq!(h.mesos_path, "/mesos");
        assert_eq!(h.session_timeout.as_millis(), 8_000);
        assert_eq!(h.marathon_address, "10.0.0.5:8080");
        assert_eq!(h.mesos_address, "10.0.0.5:5050");
        let s = c.summary();
        assert!(s.contains("ha.zk = zk://ops:***@z1:2181"), "{s}");
        assert!(!s.contains("pw-secret"), "{s}");
        assert!(parse("").unwrap().summary().contains("ha = none"));
        for (toml, key, value) in [
            ("[ha]\nzk = \"zk://z1:2181\"", "ha.zk", "zk://z1:2181"),
            (
                "[ha]\nzk = \"zk://u:pw-secret@z1:0/x\"",
                "ha.zk",
                "zk://***@z1:0/x",
            ),
            (
                "[ha]\nzk = \"zk://z1/x\"\nmesos_path = \"mesos\"",
                "ha.mesos_path",
                "mesos",
            ),
            (
                "[ha]\nzk = \"zk://z1/x\"\nmesos_path = \"/x/mesos\"",
                "ha.mesos_path",
                "/x/mesos",
            ),
            (
                "[ha]\nzk = \"zk://z1/x\"\nsession_timeout_ms = 5",
                "ha.session_timeout_ms",
                "5",
            ),
            (
                "[ha]\nzk = \"zk://z1/x\"\nmesos_address = \"nohost\"",
                "ha.mesos_address",
                "nohost",
            ),
        ] {
            let e = parse(toml).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(value), "{toml}: {e}");
            assert!(!e.contains("pw-secret"), "{e}");
        }
        let e = parse("[ha]\nzookeeper = \"zk://z1/x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zookeeper"), "{e}");
        let e = parse("[ha]\nzk = \"zk://z1/x\"\nca_file = \"/nonexistent-ca.pem\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ha.ca_file") && e.contains("nonexistent-ca.pem"),
            "{e}"
        );
    }
}
