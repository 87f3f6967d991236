//! How the agent and the bridge reach the broker, the same for both: its URL
//! (`mqtt://` or `mqtts://`), credentials, and TLS. With TLS the broker's certificate is
//! verified against a configured CA and the client presents its own certificate (mutual TLS):
//! rustls with the ring provider; PEM files in, a `rustls::ClientConfig` out (handed to rumqttc
//! as `TlsConfiguration::Rustls`, so rumqttc's own PEM path, through the unmaintained
//! rustls-pemfile, is never used).
//!
//! Every error names the configuration key and the value or file.

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A broker to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `mqtts://`: TLS.
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`; the error says what is wrong
    /// (callers add the key and the value).
    pub fn parse(url: &str) -> Result<Self, &'static str> {
        let a = crate::topics::parse_broker_url(url)?;
        Ok(Self {
            host: a.host.into(),
            port: a.port,
            tls: a.tls,
        })
    }
}

impl core::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Username and password for the broker (the `[broker_auth]` table). Its `Debug` hides the
/// password (configurations are printed by `check-config` and logged).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerAuth {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

impl core::fmt::Debug for BrokerAuth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "BrokerAuth {{ username: {:?}, password: \"(hidden)\" }}",
            self.username
        )
    }
}

/// The `brokers` list and `[broker_tls]` table of a configuration, checked together.
#[derive(Debug, Clone)]
pub struct Brokers {
    /// The brokers, in order.
    pub urls: Vec<BrokerUrl>,
    /// TLS for the `mqtts://` ones.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why a `brokers` list or its TLS table cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokersError {
    /// A value that is not allowed: the key, the value, what is expected.
    Invalid(String, String, &'static str),
    /// A TLS file that is missing or wrong.
    Tls(TlsError),
}

impl Brokers {
    /// Parses `urls` (`mqtt://127.0.0.1:1883` when absent) and loads `tls`; an `mqtts://`
    /// broker without TLS files is refused, naming the URL.
    pub fn from_config(
        urls: Option<Vec<String>>,
        tls: Option<&TlsFiles>,
    ) -> Result<Self, BrokersError> {
        let texts = urls.unwrap_or_else(|| alloc::vec!["mqtt://127.0.0.1:1883".into()]);
        if texts.is_empty() {
            return Err(BrokersError::Invalid(
                "brokers".into(),
                "[]".into(),
                "list at least one broker URL",
            ));
        }
        let mut parsed = Vec::with_capacity(texts.len());
        for t in &texts {
            let url = BrokerUrl::parse(t)
                .map_err(|why| BrokersError::Invalid("brokers".into(), t.clone(), why))?;
            if url.tls && tls.is_none() {
                return Err(BrokersError::Invalid(
                    "brokers".into(),
                    t.clone(),
                    "mqtts:// needs a [broker_tls] table with ca_file (and cert_file, key_file)",
                ));
            }
            parsed.push(url);
        }
        let tls = tls
            .map(|f| f.client_config("broker_tls"))
            .transpose()
            .map_err(BrokersError::Tls)?;
        Ok(Self { urls: parsed, tls })
    }
}

/// Where the PEM files are: the CA that signed the broker's certificate, and this client's
/// certificate chain and private key (both or neither). The `[broker_tls]` table of the agent's
/// and the bridge's configuration files.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of the CA certificate(s) the broker's certificate must chain to (`ca_file`).
    pub ca_file: PathBuf,
    /// PEM file of this client's certificate chain (`cert_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of this client's private key (`key_file`).
    pub key_file: Option<PathBuf>,
}

/// A TLS file that is missing, unreadable or not what its key says.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsError {
    /// The configuration key (e.g. `broker_tls.ca_file`).
    pub key: String,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl core::fmt::Display for TlsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} = {:?}: {}", self.key, self.path, self.message)
    }
}

impl std::error::Error for TlsError {}

fn err(prefix: &str, key: &str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError {
        key: format!("{prefix}.{key}"),
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The certificates in a PEM file (at least one).
fn certs(prefix: &str, key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| err(prefix, key, path, e.to_string()))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| err(prefix, key, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(prefix, key, path, "no CERTIFICATE in the PEM file"));
    }
    Ok(certs)
}

/// The ring crypto provider: the one rustls is built with here.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsFiles {
    /// Reads the files and builds the client configuration; `prefix` is the configuration
    /// table the keys live in (`broker_tls`), for the errors.
    pub fn client_config(&self, prefix: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in certs(prefix, "ca_file", &self.ca_file)? {
            roots
                .add(c)
                .map_err(|e| err(prefix, "ca_file", &self.ca_file, e.to_string()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(prefix, "ca_file", &self.ca_file, e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certs(prefix, "cert_file", cert)?;
                let private = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| err(prefix, "key_file", key, e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| err(prefix, "key_file", key, e.to_string()))?
            }
            (Some(cert), None) => {
                return Err(err(
                    prefix,
                    "key_file",
                    cert,
                    "cert_file needs key_file too",
                ));
            }
            (None, Some(key)) => {
                return Err(err(
                    prefix,
                    "cert_file",
                    key,
                    "key_file needs cert_file too",
                ));
            }
        };
        Ok(Arc::new(config))
    }
}
