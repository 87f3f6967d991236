//! The optional local metrics listener (`metrics_listen`, off by default): `GET /metrics` in
//! Prometheus's text format, the same figures the agent sends the bridge as `AgentStats` at its
//! offer interval (the bridge's `/metrics/prometheus` shows every agent's; this is for a host
//! scraped where it stands).
//!
//! One request per connection (`Connection: close`), read up to its blank line (at most
//! 8 KiB) with a timeout, and the text written here. hyper's server half did the same for
//! 58 KB more of static binary (measured, docs/BENCHMARKS.md); a scrape needs no more HTTP
//! than this, so the bytes went.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::AgentStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The latest stats, as the main loop last made them.
pub type Latest = Arc<Mutex<Option<AgentStats>>>;

/// The most of a request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Serves `GET /metrics` on `addr` until the process ends; each connection its own task. A
/// listener that cannot bind is logged and left out (the agent runs on without it).
pub async fn serve(addr: SocketAddr, latest: Latest) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "metrics_listen: cannot listen; no local metrics");
            return;
        }
    };
    tracing::info!(%addr, "serving metrics at /metrics");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let latest = latest.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &latest)).await;
        });
    }
}

/// Reads one request head and writes the answer.
async fn answer(mut stream: tokio::net::TcpStream, latest: &Latest) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let path = path.map(|p| p.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, body) =
        if method == Some(b"GET".as_slice()) && path == Some(b"/metrics".as_slice()) {
            let stats = match latest.lock() {
                Ok(s) => s.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            ("200 OK", text(stats.as_ref()))
        } else {
            ("404 Not Found", "only GET /metrics is served\n".to_string())
        };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// The exposition text of `stats` (none yet: only `outpost_agent_up`).
pub fn text(stats: Option<&AgentStats>) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    gauge("outpost_agent_up", "1 while the agent runs.", 1);
    if let Some(s) = stats {
        gauge(
            "outpost_agent_outbox_depth",
            "Status updates held unacknowledged.",
            u64::from(s.outbox_depth),
        );
        gauge(
            "outpost_agent_restarts",
            "Containers started again since the agent started.",
            u64::from(s.restarts),
        );
        gauge(
            "outpost_agent_probe_latency_microseconds",
            "Mean health probe time over the last interval (0: no probe ran).",
            u64::from(s.probe_latency_us),
        );
        gauge(
            "outpost_agent_containers",
            "Containers the agent supervises.",
            u64::from(s.containers),
        );
        gauge(
            "outpost_agent_rss_bytes",
            "The agent process's resident memory.",
            s.rss_kib * 1024,
        );
        gauge(
            "outpost_agent_dockerd_reachable",
            "1 when dockerd answered a ping at the last sample.",
            u64::from(s.dockerd_reachable),
        );
        gauge(
            "outpost_agent_stats_timestamp_seconds",
            "When the figures were taken.",
            s.timestamp_ms / 1000,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_text_has_every_gauge_once_with_its_help_and_type() {
        let stats = outpost_protocol::AgentStats {
            outbox_depth: 3,
            rss_kib: 2,
            dockerd_reachable: true,
            ..Default::default()
        };
        let t = super::text(Some(&stats));
        assert!(t.contains("outpost_agent_outbox_depth 3\n"), "{t}");
        assert!(t.contains("outpost_agent_rss_bytes 2048\n"), "{t}");
        assert!(t.contains("outpost_agent_dockerd_reachable 1\n"), "{t}");
        assert_eq!(t.matches("# TYPE ").count(), 8, "{t}");
        assert_eq!(super::text(None).matches("# TYPE ").count(), 1);
    }
}
