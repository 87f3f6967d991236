//! Health probes: HTTP GET and TCP connect on loopback, COMMAND through docker exec. Each probe
//! runs as its own task under its own timeout, so a hung endpoint never delays another probe.

use std::time::Duration;

use bollard::Docker;
use http_body_util::Empty;
use hyper::body::Bytes;
use tokio::net::TcpStream;

use crate::core::ProbeTarget;

/// Whether the target passes within `timeout`.
pub async fn run(docker: &Docker, target: &ProbeTarget, timeout: Duration) -> bool {
    match target {
        ProbeTarget::Http {
            tls: false,
            port,
            path,
        } => tokio::time::timeout(timeout, http_get(*port, path))
            .await
            .unwrap_or(false),
        // Refused at launch (validate.rs) until the agent carries TLS.
        ProbeTarget::Http { tls: true, .. } => false,
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

/// `GET path` on 127.0.0.1:`port`; passes on a 200-399 answer.
async fn http_get(port: u16, path: &str) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
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
        Ok(resp) => (200..400).contains(&resp.status().as_u16()),
        Err(_) => false,
    }
}
