//! An HTTP server on a loopback port that records the JSON bodies POSTed to it and answers
//! 200: what a Marathon event subscriber (`/v2/eventSubscriptions`) looks like to the bridge.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use serde_json::Value;

/// The server; its thread ends with the test process.
pub struct CallbackServer {
    bodies: Arc<Mutex<Vec<Value>>>,
    port: u16,
}

impl CallbackServer {
    /// Listens on a free loopback port.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(mut tcp) = tcp else { continue };
                let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let Ok(clone) = tcp.try_clone() else { continue };
                let mut reader = BufReader::new(clone);
                let mut length = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&body)
                    && let Ok(mut b) = kept.lock()
                {
                    b.push(v);
                }
                let _ = write!(
                    tcp,
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = tcp.flush();
            }
        });
        Ok(Self { bodies, port })
    }

    /// Its URL, with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The bodies received so far, in order.
    pub fn bodies(&self) -> Vec<Value> {
        match self.bodies.lock() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
