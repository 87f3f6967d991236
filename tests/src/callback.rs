//! An HTTP (or HTTPS, with a self-signed certificate) server on a loopback port that records
//! the JSON bodies POSTed to it and answers 200: what a Marathon event subscriber
//! (`/v2/eventSubscriptions`) looks like to the bridge.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use serde_json::Value;

/// The server; its thread ends with the test process.
pub struct CallbackServer {
    bodies: Arc<Mutex<Vec<Value>>>,
    port: u16,
    tls: bool,
    cert_pem: String,
}

impl CallbackServer {
    /// Listens on a free loopback port, plain HTTP.
    pub fn start() -> Result<Self> {
        Self::listen(None)
    }

    /// Listens on a free loopback port, HTTPS with a new self-signed certificate for
    /// `127.0.0.1` and `localhost` ([`CallbackServer::cert_pem`]).
    pub fn start_tls() -> Result<Self> {
        let (config, pem) = crate::https::self_signed(&["127.0.0.1", "localhost"])?;
        let mut s = Self::listen(Some(config))?;
        s.cert_pem = pem;
        Ok(s)
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let is_tls = tls.is_some();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let body = match &tls {
                    None => serve(tcp),
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                            continue;
                        };
                        serve(rustls::StreamOwned::new(conn, tcp))
                    }
                };
                if let Some(v) = body
                    && let Ok(mut b) = kept.lock()
                {
                    b.push(v);
                }
            }
        });
        Ok(Self {
            bodies,
            port,
            tls: is_tls,
            cert_pem: String::new(),
        })
    }

    /// Its URL, with `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// The HTTPS server's certificate (PEM), for a client to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The bodies received so far, in order.
    pub fn bodies(&self) -> Vec<Value> {
        match self.bodies.lock() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Reads one request (head and `Content-Length` body) and answers 200; the body as JSON.
fn serve<S: Read + Write>(mut stream: S) -> Option<Value> {
    let mut reader = BufReader::new(&mut stream);
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.flush();
    serde_json::from_slice(&body).ok()
}
