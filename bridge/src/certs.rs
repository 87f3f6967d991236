//! `outpost-bridge issue-certs`: a CA and the certificates a small fleet needs for mutual TLS
//! with the broker, made with rcgen (ECDSA P-256), not hand-written ASN.1:
//!
//! - `ca.pem`, `ca.key`: the fleet's CA (made once; an existing pair in the directory is reused,
//!   so agents can be added later);
//! - `broker.pem`, `broker.key`: the broker's server certificate (its host names and addresses
//!   as subject alternative names);
//! - `bridge.pem`, `bridge.key`: the bridge's client certificate (CN `outpost-bridge`);
//! - `agent-<id>.pem`, `agent-<id>.key`: one client certificate per agent, CN = the agent id,
//!   which mosquitto's `use_identity_as_username` turns into the username its ACL checks.
//!
//! Private keys are written mode 0600.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use outpost_protocol::topics::valid_agent_id;

/// The CN of the bridge's certificate, which the example ACL names.
pub const BRIDGE_NAME: &str = "outpost-bridge";

/// What to issue.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where the files go (created if missing).
    pub dir: PathBuf,
    /// One client certificate per agent id.
    pub agents: Vec<String>,
    /// Host names and IP addresses the broker is reached by.
    pub broker_hosts: Vec<String>,
    /// Whether to issue the broker's and the bridge's certificates too.
    pub servers: bool,
    /// Valid from.
    pub not_before: OffsetDateTime,
    /// Valid until.
    pub not_after: OffsetDateTime,
}

impl Request {
    /// Certificates valid from an hour ago (clock skew) for `days` days.
    pub fn valid_for_days(
        dir: PathBuf,
        agents: Vec<String>,
        broker_hosts: Vec<String>,
        days: u32,
    ) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            dir,
            agents,
            broker_hosts,
            servers: true,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// Why nothing (or not everything) was issued.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// An agent id that cannot be a certificate's CN and an MQTT topic level.
    #[error(
        "--agent {0:?}: agent ids are 1-64 characters of [A-Za-z0-9._-], and not {BRIDGE_NAME:?}"
    )]
    AgentId(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// rcgen refused.
    #[error("{what}: {source}")]
    Rcgen {
        /// What was being made.
        what: String,
        /// Why.
        source: rcgen::Error,
    },
}

fn rc(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Rcgen {
        what: what.to_string(),
        source,
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Outpost fleet");
    dn.push(DnType::CommonName, cn);
    dn
}

/// The CA in `dir`, made (and written) if it is not there yet.
fn ca(req: &Request) -> Result<Issuer<'static, KeyPair>, CertError> {
    let (cert_path, key_path) = (req.dir.join("ca.pem"), req.dir.join("ca.key"));
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CertError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    if cert_path.exists() && key_path.exists() {
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(rc("ca.key"))?;
        return Issuer::from_ca_cert_pem(&read(&cert_path)?, key).map_err(rc("ca.pem"));
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc("the CA"))?;
    params.distinguished_name = name("Outpost fleet CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = req.not_before;
    params.not_after = req.not_before + Duration::days(3650);
    let key = KeyPair::generate().map_err(rc("the CA's key"))?;
    let cert = params.self_signed(&key).map_err(rc("the CA"))?;
    write(&cert_path, &cert.pem(), 0o644)?;
    write(&key_path, &key.serialize_pem(), 0o600)?;
    Ok(Issuer::new(params, key))
}

/// One leaf certificate and key, `base.pem` and `base.key`.
fn leaf(
    req: &Request,
    issuer: &Issuer<'_, KeyPair>,
    base: &str,
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<PathBuf, CertError> {
    let mut params = CertificateParams::new(sans).map_err(rc(base))?;
    params.distinguished_name = name(cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.not_before = req.not_before;
    params.not_after = req.not_after;
    let key = KeyPair::generate().map_err(rc(base))?;
    let cert = params.signed_by(&key, issuer).map_err(rc(base))?;
    let path = req.dir.join(format!("{base}.pem"));
    write(&path, &cert.pem(), 0o644)?;
    write(
        &req.dir.join(format!("{base}.key")),
        &key.serialize_pem(),
        0o600,
    )?;
    Ok(path)
}

/// Issues what `req` asks for; returns the certificate files written (keys beside them).
pub fn issue(req: &Request) -> Result<Vec<PathBuf>, CertError> {
    if let Some(bad) = req
        .agents
        .iter()
        .find(|a| !valid_agent_id(a) || a.as_str() == BRIDGE_NAME)
    {
        return Err(CertError::AgentId(bad.clone()));
    }
    std::fs::create_dir_all(&req.dir).map_err(|source| CertError::Io {
        path: req.dir.clone(),
        source,
    })?;
    let issuer = ca(req)?;
    let mut written = vec![req.dir.join("ca.pem")];
    if req.servers {
        written.push(leaf(
            req,
            &issuer,
            "broker",
            "outpost-broker",
            req.broker_hosts.clone(),
            ExtendedKeyUsagePurpose::ServerAuth,
        )?);
        written.push(leaf(
            req,
            &issuer,
            "bridge",
            BRIDGE_NAME,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?);
    }
    for a in &req.agents {
        written.push(leaf(
            req,
            &issuer,
            &format!("agent-{a}"),
            a,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_s_certificates_chain_to_one_ca_that_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let req = Request::valid_for_days(
            dir.path().into(),
            vec!["edge-1".into()],
            vec!["localhost".into(), "127.0.0.1".into()],
            30,
        );
        let files = issue(&req).unwrap();
        assert_eq!(files.len(), 4);
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        // A second run adds an agent under the same CA.
        let more = Request {
            agents: vec!["edge-2".into()],
            servers: false,
            ..req.clone()
        };
        issue(&more).unwrap();
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        assert!(dir.path().join("agent-edge-2.pem").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("agent-edge-2.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The files load as the agent's and the bridge's TLS configuration.
        let files = outpost_protocol::broker::TlsFiles {
            ca_file: dir.path().join("ca.pem"),
            cert_file: Some(dir.path().join("agent-edge-2.pem")),
            key_file: Some(dir.path().join("agent-edge-2.key")),
        };
        files.client_config("broker_tls").unwrap();
    }

    #[test]
    fn agent_ids_that_cannot_be_a_username_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["a/b", "", BRIDGE_NAME, "x+y"] {
            let req = Request::valid_for_days(dir.path().into(), vec![bad.into()], Vec::new(), 1);
            let e = issue(&req).unwrap_err().to_string();
            assert!(e.contains("--agent") && e.contains(bad), "{e}");
        }
    }
}
