//! The agent's configuration: TOML, unknown keys refused, every value checked once here and
//! turned into [`Config`]. Errors name the key and the value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use outpost_protocol::broker::{BrokerAuth, BrokerUrl};
use outpost_protocol::broker::{Brokers, BrokersError, TlsError, TlsFiles};
use outpost_protocol::topics::valid_agent_id;
use outpost_protocol::{PortRange, Value};

/// The file as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    agent_id: Option<String>,
    advertise_ip: Option<String>,
    metrics_listen: Option<String>,
    brokers: Option<Vec<String>>,
    broker_auth: Option<BrokerAuth>,
    broker_tls: Option<TlsFiles>,
    commands: Option<CommandsFile>,
    policy: Option<PolicyFile>,
    state_dir: Option<PathBuf>,
    docker: Option<String>,
    port_range: Option<String>,
    offer_interval_seconds: Option<u64>,
    outbox_capacity: Option<usize>,
    reserved: Option<Reserved>,
    attributes: Option<BTreeMap<String, String>>,
    registries: Option<Vec<RegistryFile>>,
    logs: Option<LogsFile>,
    images: Option<ImagesFile>,
}

/// The `[images]` table: image garbage collection.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ImagesFile {
    path: Option<PathBuf>,
    gc_high_percent: Option<u8>,
    gc_low_percent: Option<u8>,
    gc_interval_seconds: Option<u64>,
}

/// Image garbage collection (driver/images.rs): above `high_percent` used, the filesystem
/// holding `path` gets the agent's unused images removed until it is below `low_percent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageGc {
    /// A directory on the filesystem dockerd keeps images on (`/var/lib/docker` when it
    /// exists, else the state directory); the offer's disk is that filesystem's too.
    pub path: PathBuf,
    /// Per cent used above which a collection runs (100: never).
    pub high_percent: u8,
    /// Per cent used a collection brings the filesystem below, if it can.
    pub low_percent: u8,
    /// Seconds between checks.
    pub interval_s: u64,
}

/// The `[logs]` table: how much of each container's output dockerd keeps.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogsFile {
    max_size_mib: Option<u64>,
    max_files: Option<u32>,
    app_max_size_mib: Option<u32>,
    app_max_files: Option<u32>,
}

/// How much of each container's output dockerd keeps: the json-file driver rotates its log at
/// `max_size_mib` and keeps `max_files` files, so a chatty task cannot fill a small disk. These
/// are the defaults; a task may ask for others (Docker's `log-opt` parameters) up to the
/// policy's `max_log_size_mib` and `max_log_files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// MiB per log file (`max-size`).
    pub max_size_mib: u64,
    /// Files kept, the current one included (`max-file`).
    pub max_files: u32,
}

impl Default for LogLimits {
    /// 10 MiB × 3 per container.
    fn default() -> Self {
        Self {
            max_size_mib: 10,
            max_files: 3,
        }
    }
}

/// The `[policy]` table: what tasks may do on this host.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    allow_privileged: Option<bool>,
    allow_host_network: Option<bool>,
    volume_paths: Option<Vec<String>>,
}

/// The `[commands]` table: who may command this agent.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommandsFile {
    trusted_keys: Option<Vec<String>>,
    replay_window_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reserved {
    cpus: Option<f64>,
    mem_mib: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    host: String,
    username: Option<String>,
    password: Option<String>,
    docker_config: Option<PathBuf>,
}

/// Where dockerd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// `tcp://host:port` (plain HTTP).
    Tcp(String),
}

/// Credentials for one registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// `host[:port]` as it appears in image references.
    pub host: String,
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This agent's id.
    pub agent_id: String,
    /// The IP address the agent tells the bridge (Mesos pids, mesos-dns); `None`: the local
    /// address of its connection to the broker.
    pub advertise_ip: Option<std::net::IpAddr>,
    /// Where the optional local metrics listener serves `GET /metrics` (Prometheus text);
    /// `None` (the default): the agent listens on no port.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Brokers, tried in order.
    pub brokers: Vec<BrokerUrl>,
    /// Broker credentials.
    pub broker_auth: Option<BrokerAuth>,
    /// TLS for `mqtts://` brokers: the CA to verify them with, and the agent's certificate.
    pub broker_tls: Option<Arc<rustls::ClientConfig>>,
    /// The bridge's Ed25519 public keys: with any, only commands signed by one are taken.
    pub trusted_keys: Vec<[u8; 32]>,
    /// How old (or how far ahead) a signed command may be, in seconds.
    pub replay_window_s: u64,
    /// What tasks may do on this host.
    pub policy: crate::core::Policy,
    /// Where the agent keeps its state (and whose filesystem's free space is offered as disk).
    pub state_dir: PathBuf,
    /// dockerd.
    pub docker: DockerEndpoint,
    /// Host ports for tasks.
    pub port_range: PortRange,
    /// Seconds between unchanged offers.
    pub offer_interval_s: u64,
    /// Most unacknowledged status updates kept.
    pub outbox_capacity: usize,
    /// CPUs kept for the host.
    pub reserved_cpus: f64,
    /// Memory (MiB) kept for the host.
    pub reserved_mem_mib: f64,
    /// Attributes for placement.
    pub attributes: Vec<(String, String)>,
    /// Registry credentials.
    pub registries: Vec<RegistryAuth>,
    /// Log rotation for every container the agent creates.
    pub logs: LogLimits,
    /// Image garbage collection.
    pub images: ImageGc,
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
    /// Not TOML, or a key that does not exist, or a value of the wrong type.
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

/// Whether `value` is in `range`: else an error naming `key`, the value and the range.
fn within<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    let reason = format!("must be {}-{}", range.start(), range.end());
    Err(invalid(key, value, &reason))
}

fn invalid(key: &str, value: impl std::fmt::Display, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl Config {
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
        let file: File = basic_toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        Self::validate(file)
    }

    fn validate(f: File) -> Result<Self, ConfigError> {
        let agent_id = match f.agent_id {
            Some(id) => id,
            None => default_agent_id(),
        };
        if !valid_agent_id(&agent_id) {
            return Err(invalid(
                "agent_id",
                &agent_id,
                "must be 1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        let brokers =
            Brokers::from_config(f.brokers, f.broker_tls.as_ref()).map_err(|e| match e {
                BrokersError::Invalid(key, value, reason) => invalid(&key, value, reason),
                BrokersError::Tls(e) => ConfigError::Tls(e),
            })?;
        let (brokers, broker_tls) = (brokers.urls, brokers.tls);
        let commands = f.commands.unwrap_or_default();
        let trusted_keys = commands
            .trusted_keys
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, k)| parse_public_key(i, k))
            .collect::<Result<Vec<_>, _>>()?;
        let replay_window_s = commands.replay_window_seconds.unwrap_or(24 * 3600);
        if replay_window_s == 0 {
            return Err(invalid(
                "commands.replay_window_seconds",
                0,
                "must be at least 1",
            ));
        }
        let p = f.policy.unwrap_or_default();
        if let Some(paths) = &p.volume_paths {
            for (i, path) in paths.iter().enumerate() {
                if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                    return Err(invalid(
                        &format!("policy.volume_paths[{i}]"),
                        path,
                        "must be an absolute path without \"..\"",
                    ));
                }
            }
        }
        let l = f.logs.unwrap_or_default();
        let base = crate::core::Policy::default();
        let policy = crate::core::Policy {
            allow_privileged: p.allow_privileged.unwrap_or(false),
            allow_host_network: p.allow_host_network.unwrap_or(true),
            volume_paths: p.volume_paths,
            max_log_size_mib: l.app_max_size_mib.unwrap_or(base.max_log_size_mib),
            max_log_files: l.app_max_files.unwrap_or(base.max_log_files),
        };
        within("logs.app_max_size_mib", policy.max_log_size_mib, 1..=10240)?;
        within("logs.app_max_files", policy.max_log_files, 1..=100)?;
        let docker = parse_docker(f.docker.as_deref().unwrap_or("unix:///var/run/docker.sock"))?;
        let port_range = parse_port_range(f.port_range.as_deref().unwrap_or("31000-32000"))?;
        let offer_interval_s = f.offer_interval_seconds.unwrap_or(30);
        if offer_interval_s == 0 {
            return Err(invalid("offer_interval_seconds", 0, "must be at least 1"));
        }
        // A week of one status a minute for ~16 tasks by default.
        let outbox_capacity = f.outbox_capacity.unwrap_or(7 * 24 * 60 * 16);
        if outbox_capacity == 0 {
            return Err(invalid("outbox_capacity", 0, "must be at least 1"));
        }
        let reserved = f.reserved.unwrap_or_default();
        let reserved_cpus = reserved.cpus.unwrap_or(0.0);
        let reserved_mem_mib = reserved.mem_mib.unwrap_or(0.0);
        if !(reserved_cpus >= 0.0 && reserved_cpus.is_finite()) {
            return Err(invalid("reserved.cpus", reserved_cpus, "must be 0 or more"));
        }
        if !(reserved_mem_mib >= 0.0 && reserved_mem_mib.is_finite()) {
            return Err(invalid(
                "reserved.mem_mib",
                reserved_mem_mib,
                "must be 0 or more",
            ));
        }
        let attributes: Vec<(String, String)> =
            f.attributes.unwrap_or_default().into_iter().collect();
        if attributes.len() > outpost_protocol::MAX_ATTRIBUTES {
            return Err(invalid(
                "attributes",
                attributes.len(),
                &format!("at most {} attributes", outpost_protocol::MAX_ATTRIBUTES),
            ));
        }
        for (k, v) in &attributes {
            if k.is_empty() || k.len() > outpost_protocol::Name::LIMIT {
                return Err(invalid(
                    &format!("attributes.{k}"),
                    k,
                    "names are 1-64 bytes",
                ));
            }
            if v.len() > Value::LIMIT {
                return Err(invalid(
                    &format!("attributes.{k}"),
                    v,
                    "values are at most 256 bytes",
                ));
            }
        }
        let registries = f
            .registries
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, r)| registry_auth(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let advertise_ip = match &f.advertise_ip {
            Some(text) => Some(text.parse::<std::net::IpAddr>().map_err(|_| {
                invalid(
                    "advertise_ip",
                    text,
                    "expected an IPv4 or IPv6 address, e.g. 10.0.0.7",
                )
            })?),
            None => None,
        };
        let metrics_listen = match &f.metrics_listen {
            Some(text) => Some(text.parse::<std::net::SocketAddr>().map_err(|_| {
                invalid(
                    "metrics_listen",
                    text,
                    "expected an address and port, e.g. 127.0.0.1:9101",
                )
            })?),
            None => None,
        };
        let defaults = LogLimits::default();
        let logs = LogLimits {
            max_size_mib: l.max_size_mib.unwrap_or(defaults.max_size_mib),
            max_files: l.max_files.unwrap_or(defaults.max_files),
        };
        within("logs.max_size_mib", logs.max_size_mib, 1..=1024)?;
        within("logs.max_files", logs.max_files, 1..=100)?;
        let state_dir: PathBuf = f.state_dir.unwrap_or_else(|| "/var/lib/outpost".into());
        let i = f.images.unwrap_or_default();
        let docker_root = Path::new("/var/lib/docker");
        let images = ImageGc {
            path: i.path.unwrap_or_else(|| {
                if docker_root.is_dir() {
                    docker_root.into()
                } else {
                    state_dir.clone()
                }
            }),
            high_percent: i.gc_high_percent.unwrap_or(85),
            low_percent: i.gc_low_percent.unwrap_or(80),
            interval_s: i.gc_interval_seconds.unwrap_or(60),
        };
        within("images.gc_high_percent", images.high_percent, 1..=100)?;
        if images.low_percent >= images.high_percent {
            return Err(invalid(
                "images.gc_low_percent",
                images.low_percent,
                &format!("must be below gc_high_percent ({})", images.high_percent),
            ));
        }
        if images.interval_s == 0 {
            return Err(invalid(
                "images.gc_interval_seconds",
                0,
                "must be at least 1",
            ));
        }
        Ok(Self {
            logs,
            images,
            advertise_ip,
            metrics_listen,
            agent_id,
            brokers,
            broker_auth: f.broker_auth,
            broker_tls,
            trusted_keys,
            replay_window_s,
            policy,
            state_dir,
            docker,
            port_range,
            offer_interval_s,
            outbox_capacity,
            reserved_cpus,
            reserved_mem_mib,
            attributes,
            registries,
        })
    }

    /// The credentials for the registry of `image`, if configured.
    pub fn registry_auth(&self, image: &str) -> Option<&RegistryAuth> {
        let first = image.split('/').next()?;
        let is_host = image.contains('/') && (first.contains(['.', ':']) || first == "localhost");
        let host = if is_host { first } else { "docker.io" };
        self.registries.iter().find(|r| r.host == host)
    }
}

/// An Ed25519 public key as base64 of its 32 bytes (what `outpost-bridge signing-key` prints).
fn parse_public_key(i: usize, text: &str) -> Result<[u8; 32], ConfigError> {
    use base64::Engine;
    let key = format!("commands.trusted_keys[{i}]");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| invalid(&key, text, &format!("not base64: {e}")))?;
    bytes.as_slice().try_into().map_err(|_| {
        invalid(
            &key,
            text,
            &format!("an Ed25519 public key is 32 bytes, this is {}", bytes.len()),
        )
    })
}

fn parse_docker(s: &str) -> Result<DockerEndpoint, ConfigError> {
    if let Some(p) = s.strip_prefix("unix://") {
        if p.starts_with('/') {
            return Ok(DockerEndpoint::Unix(p.into()));
        }
    } else if let Some(h) = s.strip_prefix("tcp://")
        && h.contains(':')
    {
        return Ok(DockerEndpoint::Tcp(h.into()));
    }
    Err(invalid(
        "docker",
        s,
        "expected unix:///path/to/docker.sock or tcp://host:port",
    ))
}

fn parse_port_range(s: &str) -> Result<PortRange, ConfigError> {
    let bad = || {
        invalid(
            "port_range",
            s,
            "expected BEGIN-END with 1 <= BEGIN <= END <= 65535",
        )
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let begin: u16 = a.trim().parse().map_err(|_| bad())?;
    let end: u16 = b.trim().parse().map_err(|_| bad())?;
    if begin == 0 || begin > end {
        return Err(bad());
    }
    Ok(PortRange { begin, end })
}

fn registry_auth(i: usize, r: RegistryFile) -> Result<RegistryAuth, ConfigError> {
    let key = |k: &str| format!("registries[{i}].{k}");
    if r.host.is_empty() || r.host.contains('/') {
        return Err(invalid(
            &key("host"),
            &r.host,
            "a registry host such as 127.0.0.1:5000",
        ));
    }
    match (r.username, r.password, r.docker_config) {
        (Some(username), Some(password), None) => Ok(RegistryAuth {
            host: r.host,
            username,
            password,
        }),
        (None, None, Some(path)) => {
            let (username, password) = from_docker_config(&path, &r.host)
                .map_err(|reason| invalid(&key("docker_config"), path.display(), &reason))?;
            Ok(RegistryAuth {
                host: r.host,
                username,
                password,
            })
        }
        _ => Err(invalid(
            &key("host"),
            &r.host,
            "give either username and password, or docker_config",
        )),
    }
}

/// The `user:password` of `host` in a Docker `config.json` (`auths.<host>.auth`, base64).
fn from_docker_config(path: &Path, host: &str) -> Result<(String, String), String> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let auth = json["auths"][host]["auth"]
        .as_str()
        .ok_or_else(|| format!("has no auths.{host:?}.auth"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .map_err(|e| format!("auths.{host:?}.auth is not base64: {e}"))?;
    let pair = String::from_utf8(raw).map_err(|_| "the auth is not UTF-8".to_string())?;
    let (u, p) = pair
        .split_once(':')
        .ok_or_else(|| "the auth is not user:password".to_string())?;
    Ok((u.into(), p.into()))
}

/// `/etc/machine-id` (first 32 characters), else the host name.
fn default_agent_id() -> String {
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        let id = id.trim();
        if valid_agent_id(id) {
            return id.into();
        }
    }
    hostname()
}

/// The host's name (kernel node name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("agent.toml"))
    }

    #[test]
    fn a_full_config_is_read() {
        let c = parse(
            r#"
            agent_id = "edge-7"
            brokers = ["mqtt://10.0.0.1:1884", "mqtt://broker2"]
            state_dir = "/srv/outpost"
            docker = "tcp://127.0.0.1:2375"
            port_range = "20000-20100"
            [broker_auth]
            username = "a"
            password = "b"
            [reserved]
            cpus = 0.5
            mem_mib = 256
            [attributes]
            rack = "r1"
            [[registries]]
            host = "127.0.0.1:5000"
            username = "u"
            password = "p"
            "#,
        )
        .unwrap();
        assert_eq!(c.agent_id, "edge-7");
        assert_eq!(
            c.brokers[1],
            BrokerUrl {
                host: "broker2".into(),
                port: 1883,
                tls: false,
            }
        );
        assert_eq!(
            c.port_range,
            PortRange {
                begin: 20000,
                end: 20100
            }
        );
        assert_eq!(c.docker, DockerEndpoint::Tcp("127.0.0.1:2375".into()));
        assert_eq!(
            c.registry_auth("127.0.0.1:5000/x/y:1").unwrap().username,
            "u"
        );
        assert!(c.registry_auth("nginx:latest").is_none());
    }

    #[test]
    fn an_empty_file_takes_every_default() {
        let c = parse("").unwrap();
        assert_eq!(
            c.brokers,
            vec![BrokerUrl {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false,
            }]
        );
        assert_eq!(
            c.port_range,
            PortRange {
                begin: 31000,
                end: 32000
            }
        );
        assert_eq!(
            c.docker,
            DockerEndpoint::Unix("/var/run/docker.sock".into())
        );
        assert!(valid_agent_id(&c.agent_id));
        assert_eq!(
            c.logs,
            LogLimits {
                max_size_mib: 10,
                max_files: 3
            }
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let e = parse("agent_idd = \"x\"").unwrap_err().to_string();
        assert!(e.contains("unknown field `agent_idd`"), "{e}");
    }

    #[test]
    fn the_shipped_config_parses_as_it_is_and_with_every_example_uncommented() {
        let shipped = include_str!("../../packaging/etc/agent.toml");
        let as_is = parse(shipped).unwrap();
        assert_eq!(as_is.port_range.begin, 31000);
        // `# key = value` and `# [table]` lines are the examples; the rest is prose.
        let example = |l: &str| {
            l.starts_with('[')
                || l.split_once(" = ")
                    .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        };
        let uncommented: Vec<&str> = shipped
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if example(rest) => rest,
                _ => l,
            })
            .collect();
        let all = parse(&uncommented.join("\n")).unwrap();
        assert_eq!(all.agent_id, "edge-07");
        assert_eq!(all.offer_interval_s, 30);
        assert_eq!(all.registries.len(), 1, "{:?}", all.registries);
        assert_eq!(all.attributes.len(), 1);
    }

    #[test]
    fn a_value_of_the_wrong_type_or_broken_toml_is_refused_naming_the_key_and_the_line() {
        let e = parse("agent_id = \"a\"\n\n[logs]\nmax_size_mib = \"big\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("logs.max_size_mib"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        let e = parse("agent_id = \"a\"\nbrokers = [\"mqtt://x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_naming_key_and_value() {
        for (text, want) in [
            (
                "port_range = \"32000-31000\"",
                "port_range = \"32000-31000\": expected BEGIN-END",
            ),
            (
                "brokers = [\"http://x\"]",
                "brokers = \"http://x\": must start with mqtt://",
            ),
            (
                "agent_id = \"a/b\"",
                "agent_id = \"a/b\": must be 1-64 characters",
            ),
            (
                "advertise_ip = \"edge-7\"",
                "advertise_ip = \"edge-7\": expected an IPv4 or IPv6 address",
            ),
            (
                "metrics_listen = \"9101\"",
                "metrics_listen = \"9101\": expected an address and port",
            ),
            (
                "docker = \"/var/run/docker.sock\"",
                "docker = \"/var/run/docker.sock\": expected unix://",
            ),
            (
                "[reserved]\ncpus = -1",
                "reserved.cpus = \"-1\": must be 0 or more",
            ),
            (
                "[[registries]]\nhost = \"r:5000\"\nusername = \"u\"",
                "registries[0].host = \"r:5000\": give either",
            ),
            (
                "[logs]\nmax_size_mib = 0",
                "logs.max_size_mib = \"0\": must be 1-1024",
            ),
            (
                "[logs]\nmax_files = 1000",
                "logs.max_files = \"1000\": must be 1-100",
            ),
            (
                "[images]\ngc_high_percent = 80\ngc_low_percent = 90",
                "images.gc_low_percent = \"90\": must be below gc_high_percent (80)",
            ),
            (
                "[images]\ngc_high_percent = 101",
                "images.gc_high_percent = \"101\": must be 1-100",
            ),
            (
                "[logs]\napp_max_size_mib = 0",
                "logs.app_max_size_mib = \"0\": must be 1-10240",
            ),
            (
                "[logs]\napp_max_files = 101",
                "logs.app_max_files = \"101\": must be 1-100",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
        let e = parse("port_range = 5").unwrap_err().to_string();
        assert!(e.contains("port_range"), "{e}");
    }

    #[test]
    fn registry_credentials_come_from_a_docker_config_json() {
        let dir = std::env::temp_dir().join(format!("outpost-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        // base64("puller:pa55")
        std::fs::write(
            &path,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"cHVsbGVyOnBhNTU="}}}"#,
        )
        .unwrap();
        let c = parse(&format!(
            "[[registries]]\nhost = \"127.0.0.1:5000\"\ndocker_config = \"{}\"",
            path.display()
        ))
        .unwrap();
        assert_eq!(c.registries[0].username, "puller");
        assert_eq!(c.registries[0].password, "pa55");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tls_settings_are_checked_at_load_naming_the_key_and_file() {
        let e = parse("brokers = [\"mqtts://b.example\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("brokers") && e.contains("[broker_tls]"), "{e}");
        let e = parse(
            "brokers = [\"mqtts://b.example\"]\n[broker_tls]\nca_file = \"/nonexistent/ca.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("broker_tls.ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        // A file that holds no certificate.
        let dir = std::env::temp_dir().join(format!("outpost-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let text = format!(
            "brokers = [\"mqtts://b.example\"]\n[broker_tls]\nca_file = \"{}\"\n",
            not_pem.display()
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE"), "{e}");
        // A certificate without its key.
        let text = format!(
            "[broker_tls]\nca_file = \"{0}\"\ncert_file = \"{0}\"\n",
            not_pem.display()
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("broker_tls."), "{e}");
        let e = parse("[broker_tls]\nca = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("ca"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
