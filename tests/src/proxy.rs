//! A TCP proxy on loopback that a test can cut and heal: the network partition between an
//! agent and its broker, without touching either. It can also pace what it forwards (a slow
//! link), so a transfer lasts long enough for its progress to be seen.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

/// A proxy from a loopback port of its own to `127.0.0.1:target`.
pub struct TcpProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    /// Starts forwarding to `127.0.0.1:target`.
    pub fn start(target: u16) -> Result<Self> {
        Self::start_paced(target, None)
    }

    /// Starts forwarding to `127.0.0.1:target`, each direction of each connection at most
    /// `bytes_per_s` (none: as fast as it goes).
    pub fn start_paced(target: u16, bytes_per_s: Option<u64>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, l) = (cut.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    // Partitioned: the connection dies at once.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                    l.lock().unwrap().extend([a, b]);
                }
                pipe(client.try_clone(), server.try_clone(), bytes_per_s);
                pipe(server.try_clone(), client.try_clone(), bytes_per_s);
            }
        });
        Ok(Self { port, cut, live })
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT` through the proxy.
    pub fn mqtt_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and refuses new ones until [`TcpProxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pipe(
    from: std::io::Result<TcpStream>,
    to: std::io::Result<TcpStream>,
    bytes_per_s: Option<u64>,
) {
    let (Ok(mut from), Ok(mut to)) = (from, to) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let started = std::time::Instant::now();
        let mut sent = 0u64;
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n as u64;
                    // Paced: not ahead of the rate since the connection began.
                    if let Some(rate) = bytes_per_s.filter(|r| *r > 0) {
                        let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
