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
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
        ProbeTarget::Tcp { port } => tokio::time::timeout(timeout, connect(*port))
            .await
            .is_ok_and(|r| r.is_ok()),
        ProbeTarget::Command {
            container_id,
            command,
        } => super::docker::exec_ok(docker, container_id, command, timeout).await,
    }
}

/// A new connection to 127.0.0.1:`port` that is reset when dropped (`SO_LINGER` 0, as
/// EaseProbe's probes do; kubelet's set a 1 s linger for the same reason). A normal close
/// leaves a socket in TIME_WAIT for 60 s and an entry in dockerd's connection tracking for
/// 120 s: at 1,000 checks a second that is 120,000 entries, past the 65,536 a 1 GiB host's
/// kernel allows by default, and a full table drops packets of every container. A reset
/// leaves no TIME_WAIT and a tracking entry of 10 s. A check has read what it needs when it
/// drops the connection, and closing one with the rest of an answer unread resets it anyway.
async fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_zero_linger()?;
    Ok(stream)
}

/// `GET path` on 127.0.0.1:`port`, over TLS if `tls`; passes on an answer of `ok` (empty:
/// any of 200-399).
async fn http_probe(tls: bool, port: u16, path: &str, ok: &[u16]) -> bool {
    // The path is sent as the request target: no spaces or control bytes may split the line.
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return false;
    }
    let Ok(stream) = connect(port).await else {
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

/// `GET path` over `stream`; passes on an answer of `ok` (empty: any of 200-399).
///
/// A check asks only for the status, so only the status line is read (parsed by httparse) and
/// the connection is closed: a new connection per check, as Marathon's and Mesos's checks do.
/// What the task sent after the status line is left unread, so the close may be a reset, as
/// with HAProxy's checks; the task has written its answer by then.
/// Written against the stream rather than through hyper's client, which spent a spawned
/// connection task, a request builder and its header map on every check: at a thousand checks
/// a second that was most of the probe's cost (docs/BENCHMARKS.md).
async fn http_get<S>(mut stream: S, port: u16, path: &str, ok: &[u16]) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: outpost-agent health check\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() || stream.flush().await.is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => len += n,
        }
        // No room for headers: the status line is all a check reads (httparse sets the code
        // and the reason before it looks at headers, whatever it says of them).
        let mut response = httparse::Response::new(&mut []);
        let parsed = response.parse(&buf[..len]);
        if let (Some(status), Some(_)) = (response.code, response.reason) {
            return if ok.is_empty() {
                (200..400).contains(&status)
            } else {
                ok.contains(&status)
            };
        }
        if parsed.is_err() {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A loopback listener that answers one connection with `chunks` written one by one, and
    /// hands back the request it read (up to its blank line).
    async fn answer(chunks: Vec<&'static [u8]>) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let request = read_request(&mut s).await;
            for c in chunks {
                if s.write_all(c).await.is_err() {
                    break;
                }
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            request
        });
        (port, server)
    }

    /// Reads a request from `s` up to its blank line, however the reads split it.
    async fn read_request(s: &mut tokio::net::TcpStream) -> String {
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && s.read(&mut byte).await.unwrap() == 1 {
            request.push(byte[0]);
        }
        String::from_utf8(request).unwrap()
    }

    async fn check(chunks: Vec<&'static [u8]>, path: &str, ok: &[u16]) -> (bool, String) {
        let (port, server) = answer(chunks).await;
        let passed = http_probe(false, port, path, ok).await;
        (passed, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_2xx_or_3xx_status_passes_and_the_request_names_the_path_and_closes() {
        let (passed, request) = check(vec![b"HTTP/1.1 200 OK\r\n\r\n"], "/health?x=1", &[]).await;
        assert!(passed);
        assert!(
            request.starts_with("GET /health?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
        assert!(request.contains("\r\nHost: 127.0.0.1:"), "{request}");
        let (passed, _) = check(vec![b"HTTP/1.0 302 Found\r\nLocation: /\r\n\r\n"], "/", &[]).await;
        assert!(passed);
    }

    #[tokio::test]
    async fn a_4xx_or_5xx_status_fails_unless_it_is_one_of_the_ready_statuses() {
        let (passed, _) = check(vec![b"HTTP/1.1 503 Service Unavailable\r\n\r\n"], "/", &[]).await;
        assert!(!passed);
        let (passed, _) = check(vec![b"HTTP/1.1 404 Not Found\r\n\r\n"], "/", &[]).await;
        assert!(!passed);
        // Readiness checks name their statuses: only those pass.
        let (passed, _) = check(vec![b"HTTP/1.1 503 Busy\r\n\r\n"], "/", &[200, 503]).await;
        assert!(passed);
        let (passed, _) = check(vec![b"HTTP/1.1 201 Created\r\n\r\n"], "/", &[200]).await;
        assert!(!passed);
    }

    #[tokio::test]
    async fn a_status_line_split_across_reads_is_put_together_and_headers_are_not_needed() {
        // One chunk per read (tokio-test's scripted stream: a socket would coalesce them).
        let stream = tokio_test::io::Builder::new()
            .write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\nUser-Agent: outpost-agent health check\r\nConnection: close\r\n\r\n")
            .read(b"HT")
            .read(b"TP/1.1 2")
            .read(b"04")
            .read(b" No Content\r")
            .read(b"\nX-A: b\r\n")
            .build();
        assert!(http_get(stream, 80, "/", &[]).await);
    }

    #[tokio::test]
    async fn anything_but_an_http_status_line_fails() {
        let (passed, _) = check(vec![b"SSH-2.0-OpenSSH_9.2\r\n"], "/", &[]).await;
        assert!(!passed);
        // Closed before the status line ended.
        let (passed, _) = check(vec![b"HTTP/1.1 200"], "/", &[]).await;
        assert!(!passed);
        // A status line longer than the probe reads.
        let long: &'static [u8] = Box::leak(
            format!("HTTP/1.1 200 {}\r\n\r\n", "x".repeat(600))
                .into_bytes()
                .into_boxed_slice(),
        );
        let (passed, _) = check(vec![long], "/", &[]).await;
        assert!(!passed);
    }

    /// What the server of a check's connection reads after it has answered (`answer`, if any):
    /// how the check closed.
    async fn close_seen_by_the_server(
        answer: &'static [u8],
        target: impl FnOnce(u16) -> ProbeTarget,
    ) -> std::io::Result<usize> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let target = target(listener.local_addr().unwrap().port());
        // HTTP and TCP checks never call dockerd (bollard only asks that the path exist).
        let docker =
            Docker::connect_with_unix("/dev/null", 1, bollard::API_DEFAULT_VERSION).unwrap();
        let check =
            tokio::spawn(async move { run(&docker, &target, Duration::from_secs(5)).await });
        let (mut s, _) = listener.accept().await.unwrap();
        if !answer.is_empty() {
            read_request(&mut s).await;
            s.write_all(answer).await.unwrap();
        }
        assert!(check.await.unwrap(), "the check passes");
        s.read(&mut [0u8; 512]).await
    }

    #[tokio::test]
    async fn a_check_resets_its_connection_so_it_leaves_no_time_wait_behind() {
        // A normal close would read as the end of the stream (Ok(0)) and leave TIME_WAIT.
        let http = |port| ProbeTarget::Http {
            tls: false,
            port,
            path: "/".into(),
            ready_statuses: Vec::new(),
        };
        let seen = close_seen_by_the_server(b"HTTP/1.1 200 OK\r\n\r\n", http).await;
        assert!(
            seen.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "HTTP: {seen:?}"
        );
        let seen = close_seen_by_the_server(b"", |port| ProbeTarget::Tcp { port }).await;
        assert!(
            seen.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "TCP: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_path_that_would_split_the_request_line_fails_without_connecting() {
        for path in ["/a b", "/a\r\nX-Evil: 1", "health", ""] {
            let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            assert!(!http_probe(false, port, path, &[]).await, "{path:?}");
            // A connection would wait in the backlog, accepted or not.
            let accepted = listener.accept();
            assert!(
                accepted
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
                "{path:?}: {accepted:?}"
            );
        }
    }
}
