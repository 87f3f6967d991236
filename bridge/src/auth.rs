//! Who may use the bridge's HTTP APIs (Marathon and Mesos): optional HTTP Basic users and
//! bearer tokens (`Authorization: token=...`, as Marathon clients send it, or `Bearer ...`),
//! each with a role: `read` (GET and HEAD) or `admin` (everything). With none configured the
//! APIs are open (and listen on loopback by default). `/ping` and `/master/health` stay open for
//! health checkers. Also TLS for both listeners (rustls).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;

/// What a user or token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// GET and HEAD only.
    Read,
    /// Everything.
    Admin,
}

/// One `[[api_users]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
    /// Role.
    pub role: Role,
}

/// One `[[api_tokens]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The token.
    pub token: String,
    /// Role.
    pub role: Role,
}

// Secrets never reach logs or `check-config`'s output.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "User {{ username: {:?}, password: \"(hidden)\", role: {:?} }}",
            self.username, self.role
        )
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token {{ token: \"(hidden)\", role: {:?} }}", self.role)
    }
}

/// The `[api_tls]` table: the listeners' certificate chain and key (PEM).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

/// The credentials the APIs take.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Basic users.
    pub users: Vec<User>,
    /// Tokens.
    pub tokens: Vec<Token>,
}

/// Equal in time independent of where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Whether any credential is configured (then every request needs one).
    pub fn enabled(&self) -> bool {
        !self.users.is_empty() || !self.tokens.is_empty()
    }

    /// The role and name an `Authorization` header grants, if any.
    fn check(&self, value: &str) -> Option<(Role, String)> {
        let value = value.trim();
        if let Some(b64) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            return self
                .users
                .iter()
                .find(|u| {
                    same(u.username.as_bytes(), user.as_bytes())
                        && same(u.password.as_bytes(), password.as_bytes())
                })
                .map(|u| (u.role, u.username.clone()));
        }
        let token = value
            .strip_prefix("token=")
            .or_else(|| value.strip_prefix("Bearer "))?
            .trim();
        self.tokens
            .iter()
            .find(|t| same(t.token.as_bytes(), token.as_bytes()))
            .map(|t| (t.role, "token".to_string()))
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"outpost\""),
        );
    }
    r
}

/// Largest request body either API reads (an app definition is a few KiB): 413 beyond.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a handler may take to produce its response head (streams then run as long as
/// they run): 503 beyond.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Bounds every request: the body size (through axum's limit, set in the runtime) and the time
/// to the response head.
pub async fn bounded(req: Request, next: Next) -> Response {
    bounded_by(REQUEST_TIMEOUT, req, next).await
}

async fn bounded_by(limit: Duration, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{path}: no answer within {} ms", limit.as_millis()),
        ),
    }
}

/// How much of an oversized body is still read (and dropped) before the 413 goes out. A
/// server that closes a connection with unread data in its socket resets it, and a client still
/// sending then gets the reset instead of the answer; reading on lets it read the 413. A body
/// declared (or found) larger than this is refused without reading it.
pub const DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// Reads every request body before anything else looks at the request: up to
/// [`MAX_BODY_BYTES`] is kept for the handler, more is read on and dropped up to
/// [`DRAIN_BYTES`] and answered 413 naming both sizes. Runs inside [`bounded`], so a client
/// that sends slowly is cut off at [`REQUEST_TIMEOUT`].
pub async fn read_body(req: Request, next: Next) -> Response {
    use http_body_util::BodyExt;
    let too_large = |size: String| {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body of {size} bytes is over the limit of {MAX_BODY_BYTES} bytes"),
        )
    };
    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > DRAIN_BYTES as u64) {
        return too_large(n.to_string());
    }
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                return refuse(StatusCode::BAD_REQUEST, &format!("request body: {e}"));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        } else if total > DRAIN_BYTES {
            return too_large(format!("more than {DRAIN_BYTES}"));
        }
    }
    if total > MAX_BODY_BYTES {
        return too_large(total.to_string());
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(kept)))
        .await
}

/// The middleware both routers run behind.
pub async fn require(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if !auth.enabled() || matches!(req.uri().path(), "/ping" | "/master/health") {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "authentication required: HTTP Basic, or Authorization: token=...",
        );
    };
    let Some((role, who)) = auth.check(header) else {
        return refuse(StatusCode::UNAUTHORIZED, "invalid credentials");
    };
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    if role == Role::Read && !reading {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "{who} has the read role: {} {} needs admin",
                req.method(),
                req.uri().path()
            ),
        );
    }
    next.run(req).await
}

/// A TLS listener for `axum::serve`: handshakes run on their own tasks (under a timeout), so a
/// slow or silent client holds up nobody.
pub struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
}

impl TlsListener {
    /// Accepts on `tcp`, completing TLS handshakes with `config`.
    pub fn new(
        tcp: tokio::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, say: do not spin on it.
                        tracing::warn!(error = %e, "accepting a TLS connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(tls)) = handshake.await {
                        let _ = tx.send((tls, addr)).await;
                    }
                });
            }
        });
        Ok(Self { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A TLS client's address (the connect info of a [`TlsListener`] connection).
#[derive(Debug, Clone, Copy)]
pub struct TlsPeer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Gives handlers behind a [`TlsListener`] the `ConnectInfo<SocketAddr>` they read.
pub async fn peer_address(mut req: Request, next: Next) -> Response {
    use axum::extract::ConnectInfo;
    if let Some(ConnectInfo(TlsPeer(addr))) =
        req.extensions().get::<ConnectInfo<TlsPeer>>().copied()
    {
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    next.run(req).await
}

/// The listeners' rustls configuration from `[api_tls]`; errors name the key and the file.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|i| i.collect())
        .map_err(|e| format!("api_tls.cert_file = {:?}: {e}", files.cert_file))?;
    if chain.is_empty() {
        return Err(format!(
            "api_tls.cert_file = {:?}: no CERTIFICATE in the PEM file",
            files.cert_file
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| format!("api_tls.key_file = {:?}: {e}", files.key_file))?;
    rustls::ServerConfig::builder_with_provider(outpost_protocol::broker::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map(Arc::new)
        .map_err(|e| format!("api_tls.key_file = {:?}: {e}", files.key_file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handler_that_takes_too_long_is_answered_503_naming_the_path() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/fast", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(|req, next| {
                bounded_by(Duration::from_millis(50), req, next)
            }));
        let get = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let slow = app.clone().oneshot(get("/slow")).await.unwrap();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(slow.into_body(), 1024).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("/slow"));
        let fast = app.oneshot(get("/fast")).await.unwrap();
        assert_eq!(fast.status(), StatusCode::OK);
    }

    #[test]
    fn basic_users_and_tokens_map_to_their_roles() {
        let auth = Auth {
            users: vec![User {
                username: "ops".into(),
                password: "s3cret:x".into(),
                role: Role::Admin,
            }],
            tokens: vec![Token {
                token: "t0k".into(),
                role: Role::Read,
            }],
        };
        let basic = |u: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(u)
            )
        };
        assert_eq!(
            auth.check(&basic("ops:s3cret:x")).map(|x| x.0),
            Some(Role::Admin)
        );
        assert_eq!(auth.check(&basic("ops:wrong")), None);
        assert_eq!(auth.check("token=t0k").map(|x| x.0), Some(Role::Read));
        assert_eq!(auth.check("Bearer t0k").map(|x| x.0), Some(Role::Read));
        assert_eq!(auth.check("token=t0"), None);
        assert_eq!(auth.check("Digest x"), None);
        assert!(!Auth::default().enabled());
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0k"),
            "{shown}"
        );
    }
}
