//! What a bridge that does not lead answers, as Mesos masters and Marathon do: the Mesos
//! endpoints redirect to the leader (307, `Location: //host:port/path`; 503 when no leader is
//! known), the Marathon API is proxied to the leader (`X-Marathon-Leader` on the answer,
//! `X-Marathon-Via` on the request, 502 on a loop, 503 when no leader is known, and
//! `/v2/leader` 404 then), `/v2/events` redirects (302) and `/ping` answers here.

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use super::election::LeaderInfo;

/// A Mesos master endpoint on a follower.
pub fn mesos(req: &Request<Body>, leader: Option<&LeaderInfo>) -> Response {
    let Some(leader) = leader else {
        return (StatusCode::SERVICE_UNAVAILABLE, "No leading master\n").into_response();
    };
    // `/master/redirect` points at the leader itself, as on a Mesos master.
    let path = match req.uri().path() {
        "/master/redirect" => String::new(),
        _ => req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
    };
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, format!("//{}{path}", leader.mesos))],
    )
        .into_response()
}

/// A Marathon API request on a follower (`me`: this bridge's Marathon address; `tls`: the
/// bridges' APIs speak HTTPS, and this is how the leader's certificate is verified).
pub async fn marathon(
    req: Request<Body>,
    leader: Option<&LeaderInfo>,
    me: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Response {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if req.uri().path() == "/ping" {
        return "pong".into_response();
    }
    let Some(leader) = leader else {
        if req.uri().path() == "/v2/leader" {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({ "message": "There is no leader" })),
            )
                .into_response();
        }
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "message": "Could not determine the current leader" })),
        )
            .into_response();
    };
    if req.uri().path() == "/v2/events" {
        return (
            StatusCode::FOUND,
            [(
                header::LOCATION,
                format!("{scheme}://{}{path}", leader.marathon),
            )],
        )
            .into_response();
    }
    let via: Vec<String> = req
        .headers()
        .get_all("x-marathon-via")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
        .collect();
    if via.iter().any(|v| v.ends_with(me)) || leader.marathon == me {
        return (
            StatusCode::BAD_GATEWAY,
            axum::Json(serde_json::json!({
                "message": format!("Detected proxying loop: {} (leader {})", via.join(", "), leader.marathon)
            })),
        )
            .into_response();
    }
    match proxy(req, &leader.marathon, me, &path, tls).await {
        Ok(mut r) => {
            if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{}", leader.marathon)) {
                r.headers_mut().insert("x-marathon-leader", v);
            }
            r
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            axum::Json(serde_json::json!({
                "message": format!("the leader {} did not answer: {e}", leader.marathon)
            })),
        )
            .into_response(),
    }
}

/// Sends `req` to `leader` (HTTP/1.1, over TLS with `tls`) and streams its answer back.
async fn proxy(
    req: Request<Body>,
    leader: &str,
    me: &str,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Response, String> {
    let stream = tokio::net::TcpStream::connect(leader)
        .await
        .map_err(|e| e.to_string())?;
    let mut sender = match tls {
        None => handshake(stream).await?,
        Some(config) => {
            let host = leader.rsplit_once(':').map_or(leader, |(h, _)| h);
            let name = rustls_pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("{host}: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS with {leader}: {e}"))?;
            handshake(stream).await?
        }
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = path.parse().map_err(|e| format!("{path}: {e}"))?;
    if let Ok(host) = HeaderValue::from_str(leader) {
        parts.headers.insert(header::HOST, host);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("1.1 {me}")) {
        parts.headers.append("x-marathon-via", v);
    }
    let answer = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = answer.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// An HTTP/1.1 client connection over `io`, driven on its own task.
async fn handshake<T>(io: T) -> Result<hyper::client::conn::http1::SendRequest<Body>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
