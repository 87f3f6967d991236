//! The bridge's HTTP API as the CLI uses it: where it is, how to authenticate, and errors that
//! say what went wrong in words a person at a terminal can act on.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use ureq::http::Response;

/// Where the bridge is and who is asking: from flags, the environment and the config file, in
/// that order.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The bridge's Marathon URL, e.g. `http://127.0.0.1:8080`.
    pub bridge: Option<String>,
    /// An API token (`[[api_tokens]]` of the bridge).
    pub token: Option<String>,
    /// `user:password` for HTTP Basic (`[[api_users]]`).
    pub user: Option<String>,
    /// A PEM file of the CA the bridge's HTTPS certificate is signed by (the fleet CA).
    pub ca: Option<PathBuf>,
}

/// The default config file: `$XDG_CONFIG_HOME/outpost/cli.toml`, else
/// `~/.config/outpost/cli.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("outpost/cli.toml"))
}

impl Settings {
    /// The config file at `path`; a missing file is empty settings, a bad one an error naming
    /// the file and the key.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// `self` with every unset value taken from `other`.
    pub fn or(self, other: Self) -> Self {
        Self {
            bridge: self.bridge.or(other.bridge),
            token: self.token.or(other.token),
            user: self.user.or(other.user),
            ca: self.ca.or(other.ca),
        }
    }
}

/// An answer of the bridge that is not what the command needed, or no answer at all.
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bridge's HTTP API.
pub struct Client {
    base: String,
    auth: Option<String>,
    /// For requests that answer at once.
    quick: ureq::Agent,
    /// For streams (events, logs): no overall timeout.
    streaming: ureq::Agent,
}

/// How long a request that answers at once may take.
const QUICK: Duration = Duration::from_secs(30);

impl Client {
    /// A client of the bridge `settings` name (`http://127.0.0.1:8080` when none does).
    pub fn new(settings: &Settings) -> Result<Self, Failure> {
        let base = settings
            .bridge
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_string())
            .trim_end_matches('/')
            .to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure(format!(
                "--bridge {base:?}: expected an http:// or https:// URL"
            )));
        }
        let auth = match (&settings.token, &settings.user) {
            (Some(t), _) => Some(format!("token={t}")),
            (None, Some(u)) => Some(format!("Basic {}", base64(u.as_bytes()))),
            (None, None) => None,
        };
        let tls = match &settings.ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| Failure(format!("--ca {}: {e}", path.display())))?;
                let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(Failure(format!(
                        "--ca {}: no PEM certificate in it",
                        path.display()
                    )));
                }
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                    .build()
            }
            None => ureq::tls::TlsConfig::default(),
        };
        let agent = |timeout: Option<Duration>| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(timeout)
                .tls_config(tls.clone())
                .build()
                .into()
        };
        Ok(Self {
            base,
            auth,
            quick: agent(Some(QUICK)),
            streaming: agent(None),
        })
    }

    /// The bridge's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: ureq::Error) -> Failure {
        Failure(format!("bridge unreachable at {}: {e}", self.base))
    }

    /// A request; any answer but 2xx is a [`Failure`] naming the bridge's message.
    fn call(
        &self,
        agent: &ureq::Agent,
        method: &str,
        path: &str,
        body: Option<&Value>,
        accept: &str,
    ) -> Result<Response<ureq::Body>, Failure> {
        let url = self.url(path);
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", accept);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let resp = match body {
            Some(b) => agent.run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string())
                    .map_err(|e| Failure(format!("{url}: {e}")))?,
            ),
            None => agent.run(req.body(()).map_err(|e| Failure(format!("{url}: {e}")))?),
        }
        .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let text = read_all(resp);
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let m = v["message"].as_str()?.to_string();
                // Marathon's 422 lists every bad field.
                let details: Vec<String> = v["details"]
                    .as_array()
                    .map(|d| {
                        d.iter()
                            .map(|x| {
                                format!("  {}: {}", x["path"].as_str().unwrap_or("/"), x["errors"])
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Some(if details.is_empty() {
                    m
                } else {
                    format!("{m}\n{}", details.join("\n"))
                })
            })
            .unwrap_or(text);
        Err(Failure(match status {
            401 => format!(
                "{method} {path}: 401 {message}\nthe bridge at {} wants credentials: set OUTPOST_TOKEN to an API token (the bridge's [[api_tokens]]), or --user NAME:PASSWORD, or token = \"...\" in {}",
                self.base,
                default_config_path().map_or_else(
                    || "~/.config/outpost/cli.toml".into(),
                    |p| p.display().to_string()
                )
            ),
            403 => format!("{method} {path}: 403 {message} (this needs the admin role)"),
            _ => format!("{method} {path}: {status} {message}"),
        }))
    }

    /// GET, JSON.
    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        let resp = self.call(&self.quick, "GET", path, None, "application/json")?;
        json_of(path, resp)
    }

    /// A JSON request with a JSON answer (`Value::Null` when the answer is empty), and the
    /// answer's `Marathon-Deployment-Id` header.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Value, Option<String>), Failure> {
        let resp = self.call(&self.quick, method, path, body, "application/json")?;
        let deployment = resp
            .headers()
            .get("Marathon-Deployment-Id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((json_of(path, resp)?, deployment))
    }

    /// A GET whose answer streams (events, logs): its body as a reader.
    pub fn stream(&self, path: &str, accept: &str) -> Result<impl Read + Send + use<>, Failure> {
        let resp = self.call(&self.streaming, "GET", path, None, accept)?;
        Ok(resp.into_body().into_reader())
    }
}

fn read_all(resp: Response<ureq::Body>) -> String {
    let mut s = String::new();
    let _ = resp.into_body().into_reader().read_to_string(&mut s);
    s
}

fn json_of(path: &str, resp: Response<ureq::Body>) -> Result<Value, Failure> {
    let text = read_all(resp);
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| {
        Failure(format!(
            "{path}: the bridge answered something that is not JSON ({e})"
        ))
    })
}

/// Standard base64 (for HTTP Basic).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_standard_base64() {
        assert_eq!(base64(b"admin:s3cret"), "YWRtaW46czNjcmV0");
        assert_eq!(base64(b"a:b"), "YTpi");
        assert_eq!(base64(b"ab:"), "YWI6");
        assert_eq!(base64(b"a:"), "YTo=");
    }

    #[test]
    fn a_bad_config_file_names_the_file_and_the_key() {
        let dir = std::env::temp_dir().join(format!("outpost-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("cli.toml");
        std::fs::write(&f, "bridge = \"http://b:8080\"\ntokn = \"x\"\n").unwrap();
        let e = Settings::load(&f).unwrap_err();
        assert!(e.contains("cli.toml") && e.contains("tokn"), "{e}");
        assert!(
            Settings::load(&dir.join("none.toml"))
                .unwrap()
                .bridge
                .is_none()
        );
        std::fs::write(&f, "bridge = \"http://b:8080\"\n").unwrap();
        let s = Settings::load(&f).unwrap();
        let merged = Settings {
            token: Some("t".into()),
            ..Default::default()
        }
        .or(s);
        assert_eq!(merged.bridge.as_deref(), Some("http://b:8080"));
        assert_eq!(merged.token.as_deref(), Some("t"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
