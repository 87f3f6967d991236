//! Health probes: HTTP and HTTPS GET and TCP connect on loopback, COMMAND through docker exec.
//! Each probe runs as its own task under its own timeout, so a hung endpoint never delays
//! another probe.
//!
//! HTTPS checks do not verify the task's certificate, as Marathon's and Mesos's do not: a task
//! serves whatever certificate it has (often self-signed), and the check asks whether it
//! answers. The TLS handshake itself (signatures included) must succeed.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bollard::Docker;
use http_body_util::Empty;
use hyper::body::Bytes;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::core::ProbeTarget;

/// Whether the target passes within `timeout`.
pub async fn run(docker: &Docker, target: &ProbeTarget, timeout: Duration) -> bool {
    match target {
        ProbeTarget::Http {
            tls,
            port,
            path,
            ready_statuses,
        } => tokio::time::timeout(timeout, http_probe(*tls, *port, path, ready_statuses))
            .await
            .unwrap_or(false),
        ProbeTarget::Tcp { port } => {
            tokio::time::timeout(timeout, TcpStream::connect(("127.0.0.1", *port)))
                .await
                .is_ok_and(|r| r.is_ok())
        }
        ProbeTarget::Command {
            container_id,
            command,
        } => super::docker::exec_ok(docker, container_id, command, timeout).await,
    }
}

/// `GET path` on 127.0.0.1:`port`, over TLS if `tls`; passes on an answer of `ok` (empty:
/// any of 200-399).
async fn http_probe(tls: bool, port: u16, path: &str, ok: &[u16]) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if !tls {
        return http_get(stream, port, path, ok).await;
    }
    let connector = tokio_rustls::TlsConnector::from(unverified_tls());
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    match connector.connect(name, stream).await {
        Ok(stream) => http_get(stream, port, path, ok).await,
        Err(_) => false,
    }
}

/// The TLS client of HTTPS checks (made once): no certificate verification, the handshake's
/// signatures checked with ring's algorithms.
fn unverified_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = outpost_protocol::broker::provider();
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts any server certificate (see the module docs); verifies the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `GET path` over `stream`; passes on a 200-399 answer.
async fn http_get<S>(stream: S, port: u16, path: &str, ok: &[u16]) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
        return false;
    };
    // The connection task ends with the probe (dropped with the sender).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header(hyper::header::USER_AGENT, "outpost-agent health check")
        .body(Empty::<Bytes>::new());
    let Ok(request) = request else {
        return false;
    };
    match sender.send_request(request).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            if ok.is_empty() {
                (200..400).contains(&status)
            } else {
                ok.contains(&status)
            }
        }
        Err(_) => false,
    }
}
