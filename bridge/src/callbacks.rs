//! Marathon's HTTP callbacks: every Marathon event (not Outpost's own `outpost_*` ones) POSTed
//! as JSON to each URL registered through `/v2/eventSubscriptions` (docs/bridge.md, "Event
//! subscriptions"; docs/security.md says what letting the bridge call out means).
//!
//! One dispatcher reads the event broadcast (only while a callback is registered, so the core
//! builds no event for nobody) and hands each event to one worker per URL through a bounded
//! queue ([`QUEUE`]; a full queue drops the event, counted). A worker POSTs one event at a time
//! with a timeout, retrying [`ATTEMPTS`] times with a doubling pause; a callback that fails
//! [`MAX_FAILED_EVENTS`] events in a row is unsubscribed (an `unsubscribe_event`), counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use serde_json::Value;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::handle::Shared;

/// Events waiting per callback; more are dropped (and counted).
pub const QUEUE: usize = 1024;
/// Tries per event.
pub const ATTEMPTS: u32 = 3;
/// The pause after the first failed try (doubled after each).
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// One try's limit (connect, send, answer).
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Events in a row a callback may fail (each after its tries) before it is unsubscribed.
pub const MAX_FAILED_EVENTS: u32 = 3;

/// What the callbacks did, for `/metrics/prometheus`; and the nudge that a URL came or went.
#[derive(Debug, Default)]
pub struct Callbacks {
    /// Poked when a subscription changes (the dispatcher reads the list again).
    pub changed: Notify,
    /// Events a callback answered with 2xx.
    pub delivered: AtomicU64,
    /// Events a callback did not take after every try.
    pub failed: AtomicU64,
    /// Events dropped because a callback's queue was full or the dispatcher fell behind.
    pub dropped_events: AtomicU64,
    /// Callbacks unsubscribed after failing too many events in a row.
    pub dropped_subscribers: AtomicU64,
    /// Whether the dispatcher holds a receiver of the event broadcast (it is not an SSE
    /// subscriber: the metrics leave it out).
    pub listening: AtomicBool,
}

/// Checks a callback URL as given in `?callbackUrl=`: an `http://` or `https://` URL with a
/// host (`https://` only when the bridge has a TLS client for callbacks). The error names the
/// value.
pub fn check_url(url: &str, tls: bool) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("callbackUrl {url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if tls => {}
        Some("https") => {
            return Err(format!(
                "callbackUrl {url:?}: this bridge trusts no CA for https callbacks (set [callback_tls] ca_file)"
            ));
        }
        _ => {
            return Err(format!(
                "callbackUrl {url:?} must be an http:// or https:// URL"
            ));
        }
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(format!("callbackUrl {url:?} has no host"));
    }
    Ok(uri)
}

/// The dispatcher: runs for the term (until the event broadcast closes).
pub async fn run(shared: Arc<Shared>) {
    let mut workers: HashMap<String, mpsc::Sender<Arc<Value>>> = HashMap::new();
    let mut rx: Option<broadcast::Receiver<Value>> = None;
    let mut refresh = tokio::time::interval(Duration::from_secs(5));
    loop {
        let event = tokio::select! {
            _ = refresh.tick() => None,
            _ = shared.callbacks.changed.notified() => None,
            r = recv(&mut rx) => Some(r),
        };
        match event {
            None => {
                let Ok(urls) = shared.read(|c| c.callback_urls()).await else {
                    continue;
                };
                workers.retain(|url, _| urls.contains(url));
                for url in urls {
                    if workers.contains_key(&url) {
                        continue;
                    }
                    let Ok(uri) = check_url(&url, shared.config.callback_tls.is_some()) else {
                        tracing::warn!(%url, "a stored callback URL is not usable; skipped");
                        continue;
                    };
                    let (tx, queue) = mpsc::channel(QUEUE);
                    let tls = shared.config.callback_tls.clone();
                    tokio::spawn(deliver(shared.clone(), url.clone(), uri, tls, queue));
                    workers.insert(url, tx);
                }
                if workers.is_empty() {
                    rx = None;
                } else if rx.is_none() {
                    rx = Some(shared.events.subscribe());
                }
                shared
                    .callbacks
                    .listening
                    .store(rx.is_some(), Ordering::Relaxed);
            }
            Some(Ok(v)) => {
                let kind = v["eventType"].as_str().unwrap_or_default();
                if kind.starts_with("outpost_") {
                    continue;
                }
                let v = Arc::new(v);
                for tx in workers.values() {
                    if tx.try_send(v.clone()).is_err() {
                        shared
                            .callbacks
                            .dropped_events
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some(Err(broadcast::error::RecvError::Lagged(n))) => {
                tracing::warn!(
                    events = n,
                    "the event callbacks fell behind; events dropped"
                );
                shared
                    .callbacks
                    .dropped_events
                    .fetch_add(n * workers.len() as u64, Ordering::Relaxed);
            }
            Some(Err(broadcast::error::RecvError::Closed)) => return,
        }
    }
}

async fn recv(
    rx: &mut Option<broadcast::Receiver<Value>>,
) -> Result<Value, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One callback's worker: its events in order, each tried [`ATTEMPTS`] times; after
/// [`MAX_FAILED_EVENTS`] failed in a row the callback is unsubscribed. Ends when the
/// dispatcher lets go of its queue (unsubscribed) or after dropping it.
async fn deliver(
    shared: Arc<Shared>,
    url: String,
    uri: Uri,
    tls: Option<Arc<rustls::ClientConfig>>,
    mut queue: mpsc::Receiver<Arc<Value>>,
) {
    let mut failed_in_a_row = 0;
    while let Some(event) = queue.recv().await {
        let body = Bytes::from(event.to_string());
        let mut last_error = String::new();
        let mut pause = FIRST_RETRY;
        let mut ok = false;
        for attempt in 1..=ATTEMPTS {
            match tokio::time::timeout(TIMEOUT, post(&uri, tls.as_ref(), body.clone())).await {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    ok = true;
                    break;
                }
                Ok(Ok(status)) => last_error = format!("HTTP {status}"),
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = format!("no answer within {TIMEOUT:?}"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        if ok {
            failed_in_a_row = 0;
            shared.callbacks.delivered.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        failed_in_a_row += 1;
        shared.callbacks.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%url, error = %last_error, failed_in_a_row, "an event callback failed");
        if failed_in_a_row >= MAX_FAILED_EVENTS {
            tracing::warn!(%url, "event callback unsubscribed after {MAX_FAILED_EVENTS} failed events in a row");
            let reason = format!(
                "outpost-bridge: {MAX_FAILED_EVENTS} events in a row failed ({last_error})"
            );
            let gone = url.clone();
            let _ = shared
                .apply(move |c, now| c.unsubscribe_callback(now, &gone, &reason))
                .await;
            shared
                .callbacks
                .dropped_subscribers
                .fetch_add(1, Ordering::Relaxed);
            shared.callbacks.changed.notify_one();
            return;
        }
    }
}

/// POSTs `body` as JSON to `uri` over a new HTTP/1.1 connection (TLS with `tls` for
/// `https://`, the server's certificate verified for the URL's host); the answer's status.
async fn post(
    uri: &Uri,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: Bytes,
) -> Result<u16, String> {
    let Some(authority) = uri.authority() else {
        return Err("no host".into());
    };
    let https = uri.scheme_str() == Some("https");
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if !https {
        return send(stream, uri, body).await;
    }
    let Some(tls) = tls else {
        return Err("no TLS client for https callbacks".into());
    };
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    send(stream, uri, body).await
}

/// The request of [`post`] over an open connection.
async fn send<S>(stream: S, uri: &Uri, body: Bytes) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some(authority) = uri.authority() else {
        return Err("no host".into());
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}
