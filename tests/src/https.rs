//! A small HTTPS server on a loopback port, with a self-signed certificate (rcgen) and an answer
//! status a test can change: what a task's HTTPS health check talks to.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};

use anyhow::Result;

/// A TLS server configuration with a new self-signed certificate for `names`, and that
/// certificate as PEM (for a client to trust).
pub fn self_signed(names: &[&str]) -> Result<(Arc<rustls::ServerConfig>, String)> {
    let key = rcgen::generate_simple_self_signed(
        names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
    )?;
    let pem = key.cert.pem();
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![key.cert.der().clone()], private)?;
    Ok((Arc::new(config), pem))
}

/// The server; stops accepting when dropped.
pub struct HttpsServer {
    status: Arc<AtomicU16>,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl HttpsServer {
    /// Listens on `127.0.0.1:port`, answering every GET with 200 until told otherwise.
    pub fn start(port: u16) -> Result<Self> {
        let (config, _) = self_signed(&["localhost"])?;
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let status = Arc::new(AtomicU16::new(200));
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sv, sp) = (status.clone(), served.clone(), stop.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if sp.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(tcp) = tcp else {
                    continue;
                };
                let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                // Read the request head; any TLS failure just drops the connection.
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                let mut ok = false;
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        ok = true;
                        break;
                    }
                    line.clear();
                }
                if !ok {
                    continue;
                }
                let code = st.load(Ordering::Relaxed);
                let _ = write!(
                    tls,
                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
                sv.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Self {
            status,
            served,
            stop,
            port,
        })
    }

    /// The status every answer has from now on.
    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }

    /// Requests answered over TLS so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept so the thread sees the flag and ends.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
