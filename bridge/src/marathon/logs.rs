//! `GET /v2/tasks/{id}/logs`: a task's container log from whichever agent runs it (an Outpost
//! extension; Marathon has none, Mesos serves sandbox files from each agent). Plain text, or
//! server-sent events with `Accept: text/event-stream`.
//!
//! The request opens a stream in [`crate::logs::LogStreams`], sends the agent `read_logs`, and
//! waits for the agent's first answer before it answers itself, so a refusal gets its own
//! status (404 no such task or container, 503 busy or unreachable, 504 no answer). A stream
//! whose client goes away, or falls too far behind, tells the agent to stop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use outpost_protocol::{LogStream, LogStreams, MAX_FOLLOW_S, ReadLogs, RejectCode};

use super::{Params, error, sse, stored};
use crate::core::logs::LogsTarget;
use crate::handle::Shared;
use crate::logs::LogEvent;

/// How long the agent has to take (or refuse) a request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// The query of a logs request, checked: each bad value is a 400 naming it.
fn request(p: &Params) -> Result<ReadLogs, Response> {
    let bad = |key: &str, value: &str, want: &str| {
        error(
            400,
            json!({ "message": format!("query parameter {key}={value:?}: {want}") }),
        )
    };
    let streams = match p.get("stream").unwrap_or("both") {
        "both" | "" => LogStreams::Both,
        "stdout" => LogStreams::Stdout,
        "stderr" => LogStreams::Stderr,
        other => return Err(bad("stream", other, "expected stdout, stderr or both")),
    };
    let tail = match p.get("tail") {
        None | Some("all") | Some("") => None,
        Some(n) => Some(
            n.parse::<u32>()
                .map_err(|_| bad("tail", n, "expected a number of lines or all"))?,
        ),
    };
    let since_ms = match p.get("since") {
        None | Some("") => None,
        Some(t) => Some(match t.parse::<u64>() {
            Ok(ms) => ms,
            Err(_) => humantime::parse_rfc3339_weak(t)
                .ok()
                .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .ok_or_else(|| {
                    bad(
                        "since",
                        t,
                        "expected an RFC 3339 time (2026-12-02T10:00:00Z) or milliseconds since the epoch",
                    )
                })?,
        }),
    };
    // `follow=true` follows for the longest an agent allows; `follow=N` for N seconds.
    let follow_s = match p.get("follow").map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") => 0,
        Some("true") | Some("") => MAX_FOLLOW_S,
        Some(n) => match n.parse::<u32>() {
            Ok(s) if s <= MAX_FOLLOW_S => s,
            _ => {
                return Err(bad(
                    "follow",
                    n,
                    &format!("expected true, false or a number of seconds up to {MAX_FOLLOW_S}"),
                ));
            }
        },
    };
    Ok(ReadLogs {
        task_id: Default::default(),
        streams,
        tail,
        since_ms,
        follow_s,
    })
}

/// Ends the agent's stream when the response is dropped before the log ended (the client went
/// away or was cut off).
struct StopOnDrop {
    shared: Arc<Shared>,
    target: LogsTarget,
    ended: bool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.shared.logs.close(&self.target.request_id);
        if !self.ended {
            let target = self.target.clone();
            self.shared
                .detach(move |o, now| o.core.stop_logs(now, &target));
        }
    }
}

/// What the response streams out, one piece per chunk.
enum Piece {
    Data(LogStream, Bytes),
    /// Chunks `seq` numbers say were lost.
    Gap(u32),
    /// The last piece: why the log ended; `normal` when nothing went wrong.
    End {
        why: String,
        normal: bool,
    },
}

/// The pieces of a stream, from the first event on, until it ends.
fn pieces(
    first: LogEvent,
    rx: mpsc::Receiver<LogEvent>,
    guard: StopOnDrop,
) -> impl futures_util::Stream<Item = Piece> + Send {
    struct St {
        pending: Option<LogEvent>,
        rx: mpsc::Receiver<LogEvent>,
        guard: StopOnDrop,
        next_seq: u32,
        queued: std::collections::VecDeque<Piece>,
        done: bool,
    }
    let st = St {
        pending: Some(first),
        rx,
        guard,
        next_seq: 0,
        queued: Default::default(),
        done: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(p) = st.queued.pop_front() {
                return Some((p, st));
            }
            if st.done {
                return None;
            }
            let event = match st.pending.take() {
                Some(e) => Some(e),
                None => st.rx.recv().await,
            };
            match event {
                Some(LogEvent::Accepted) => {}
                Some(LogEvent::Rejected { message, .. }) => {
                    st.guard.ended = true;
                    st.done = true;
                    st.queued.push_back(Piece::End {
                        why: format!("refused by the agent: {message}"),
                        normal: false,
                    });
                }
                Some(LogEvent::Chunk(c)) => {
                    if c.seq > st.next_seq {
                        st.queued.push_back(Piece::Gap(c.seq - st.next_seq));
                    }
                    st.next_seq = c.seq.saturating_add(1);
                    if !c.data.0.is_empty() {
                        let bytes = Bytes::copy_from_slice(&c.data.0);
                        st.queued.push_back(Piece::Data(c.stream, bytes));
                    }
                    if let Some(why) = &c.end {
                        st.guard.ended = true;
                        st.done = true;
                        let normal = matches!(
                            why.as_str(),
                            "end of log" | "container stopped" | "follow time over"
                        );
                        st.queued.push_back(Piece::End {
                            why: why.to_string(),
                            normal,
                        });
                    }
                }
                None => {
                    // Cut off by the MQTT side: this reader fell behind.
                    st.done = true;
                    st.queued.push_back(Piece::End {
                        why: format!(
                            "this reader fell {} chunks behind the agent; stream cut",
                            crate::logs::BUFFER
                        ),
                        normal: false,
                    });
                }
            }
        }
    })
}

/// `GET /v2/tasks/{id}/logs?stream=&tail=&since=&follow=`.
pub async fn task_logs(
    State(s): State<Arc<Shared>>,
    Path(task_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let request = match request(&Params::new(q)) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let as_events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let request_id = format!("logs-{}", uuid::Uuid::new_v4().simple());
    let mut rx = s.logs.open(&request_id);
    let rid = request_id.clone();
    let tid = task_id.clone();
    let target = match s
        .apply(move |core, now| core.read_logs(now, &tid, request, rid))
        .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(api)) => {
            s.logs.close(&request_id);
            return api.into_response();
        }
        Err(e) => {
            s.logs.close(&request_id);
            return stored(e);
        }
    };
    let mut guard = StopOnDrop {
        shared: s.clone(),
        target,
        ended: false,
    };
    let agent = guard.target.agent_id.clone();
    let first = match tokio::time::timeout(ANSWER_TIMEOUT, rx.recv()).await {
        Ok(Some(LogEvent::Rejected { code, message })) => {
            guard.ended = true;
            let status = match code {
                RejectCode::UnknownTask => 404,
                RejectCode::Busy => 503,
                RejectCode::InvalidField | RejectCode::FieldTooLong => 400,
                _ => 502,
            };
            return error(
                status,
                json!({ "message": format!("agent {agent}: {message}"), "agentId": agent }),
            );
        }
        Ok(Some(first)) => first,
        Ok(None) => {
            return error(
                503,
                json!({ "message": format!("the logs stream from agent {agent} was cut before it began"), "agentId": agent }),
            );
        }
        Err(_) => {
            return error(
                504,
                json!({ "message": format!("agent {agent} did not answer the logs request within {} s", ANSWER_TIMEOUT.as_secs()), "agentId": agent }),
            );
        }
    };
    let pieces = pieces(first, rx, guard);
    if as_events {
        let events = pieces.map(|p| {
            Ok::<_, Infallible>(match p {
                Piece::Data(stream, bytes) => SseEvent::default()
                    .event(match stream {
                        LogStream::Stdout => "stdout",
                        LogStream::Stderr => "stderr",
                    })
                    .data(String::from_utf8_lossy(&bytes).trim_end_matches('\n')),
                Piece::Gap(n) => SseEvent::default()
                    .event("gap")
                    .data(format!("{n} chunk(s) lost")),
                Piece::End { why, .. } => SseEvent::default().event("end").data(why),
            })
        });
        return sse(events);
    }
    // Plain text: the output as the container wrote it; only a lost piece or an abnormal end
    // adds a line of its own.
    let body = pieces.filter_map(|p| async move {
        match p {
            Piece::Data(_, bytes) => Some(bytes),
            Piece::Gap(n) => Some(Bytes::from(format!("[outpost: {n} chunk(s) lost]\n"))),
            Piece::End { normal: true, .. } => None,
            Piece::End { why, .. } => Some(Bytes::from(format!("[outpost: {why}]\n"))),
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body.map(Ok::<_, Infallible>)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Params {
        Params::new(Some(s.to_string()))
    }

    #[tokio::test]
    async fn the_query_is_read_as_documented_and_a_bad_value_is_named() {
        let r = request(&q(
            "stream=stderr&tail=20&since=2026-12-02T10:00:00Z&follow=30",
        ))
        .unwrap();
        assert_eq!(r.streams, LogStreams::Stderr);
        assert_eq!(r.tail, Some(20));
        assert_eq!(r.since_ms, Some(1_796_205_600_000));
        assert_eq!(r.follow_s, 30);
        let r = request(&q("follow=true&since=1000")).unwrap();
        assert_eq!(
            (r.follow_s, r.since_ms, r.tail),
            (MAX_FOLLOW_S, Some(1000), None)
        );
        assert_eq!(request(&q("")).unwrap().streams, LogStreams::Both);
        for (query, named) in [
            ("stream=both2", "stream=\"both2\""),
            ("tail=-1", "tail=\"-1\""),
            ("since=yesterday", "since=\"yesterday\""),
            ("follow=99999", "follow=\"99999\""),
        ] {
            let r = request(&q(query)).unwrap_err();
            assert_eq!(r.status(), 400, "{query}");
            let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.contains(&named.replace('"', "\\\"")),
                "{query}: {text}"
            );
        }
    }
}
