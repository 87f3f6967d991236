//! A blocking HTTP GET for tests that returns any status instead of failing on 4xx/5xx, and
//! `curl` over TLS.

use std::time::Duration;

use anyhow::{Context, Result};

/// Status and body of a GET.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body as text.
    pub body: String,
    /// The `X-Outpost-Task` header (which task HAProxy sent the request to), if any.
    pub task: Option<String>,
}

/// GETs `url` with a 5 s timeout.
pub fn get(url: &str) -> Result<Reply> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let task = resp
        .headers()
        .get("x-outpost-task")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the body of GET {url}"))?;
    Ok(Reply { status, body, task })
}

/// `curl ARGS` over TLS, verifying the server against `ca`: (status, headers and body as
/// text; status 0 when curl got no answer).
pub fn curl_tls(ca: &std::path::Path, args: &[&str]) -> (u16, String) {
    let Ok(out) = std::process::Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
    else {
        return (0, String::new());
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
