//! Logs streams: a task's container log read from dockerd (`docker logs`, through bollard) and
//! sent as numbered [`LogChunk`]s on the request's own topic, the last one saying why it ended.
//!
//! A stream shares the broker connection with the status updates, on what may be a thin
//! uplink: it is paced ([`BYTES_PER_SECOND`]) and bounded ([`MAX_STREAM_BYTES`]), and the core
//! allows only a few at once. It ends when the log ends (or, following, when the container
//! stops or the follow time is over), when the bridge stops it, or when the broker connection
//! drops (the core stops every stream then: its reader is on the far side).

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::sync::oneshot;

use outpost_protocol::codec::encode_to_vec;
use outpost_protocol::{
    AgentId, CommandId, LogBytes, LogChunk, LogStream, LogStreams, MAX_LOG_CHUNK, Note,
    PROTOCOL_VERSION, ReadLogs,
};

/// The pace of one stream: a 128-line tail goes out at once, a whole 10 MiB log in 20 s
/// instead of a burst that would queue every status update behind it.
pub const BYTES_PER_SECOND: u64 = 512 * 1024;
/// The most one request sends; the rest is left out (the last chunk says so).
pub const MAX_STREAM_BYTES: u64 = 16 * 1024 * 1024;
/// How long output waits for more before it goes out as a chunk of its own.
const FLUSH_AFTER: Duration = Duration::from_millis(100);

/// Cuts container output into [`LogChunk`]s: one stream per chunk, at most
/// [`MAX_LOG_CHUNK`] bytes, numbered from 0.
#[derive(Debug)]
pub struct Chunker {
    agent_id: AgentId,
    request_id: CommandId,
    seq: u32,
    stream: LogStream,
    buf: Vec<u8>,
    /// Output bytes handed out so far.
    pub sent: u64,
}

impl Chunker {
    /// A chunker for the answers to `request_id`.
    pub fn new(agent_id: &str, request_id: &str) -> Self {
        Self {
            agent_id: AgentId::new(agent_id).unwrap_or_default(),
            request_id: CommandId::new(request_id).unwrap_or_default(),
            seq: 0,
            stream: LogStream::Stdout,
            buf: Vec::new(),
            sent: 0,
        }
    }

    /// Adds output of `stream`; returns the chunks that are full (or of the other stream).
    pub fn push(&mut self, stream: LogStream, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if stream != self.stream {
            out.extend(self.flush());
            self.stream = stream;
        }
        while !bytes.is_empty() {
            let room = MAX_LOG_CHUNK - self.buf.len();
            let take = room.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == MAX_LOG_CHUNK {
                out.extend(self.flush());
            }
        }
        out
    }

    /// The output held so far as a chunk, if there is any.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            return None;
        }
        Some(self.chunk(None))
    }

    /// Whether output is held, waiting for more.
    pub fn holding(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The last chunk: what is held, and why the stream ends.
    pub fn end(&mut self, why: &str) -> Vec<u8> {
        self.chunk(Some(
            Note::new(truncate(why, Note::LIMIT)).unwrap_or_default(),
        ))
    }

    fn chunk(&mut self, end: Option<Note>) -> Vec<u8> {
        let data = std::mem::take(&mut self.buf);
        self.sent += data.len() as u64;
        let chunk = LogChunk {
            version: PROTOCOL_VERSION,
            agent_id: self.agent_id.clone(),
            request_id: self.request_id.clone(),
            seq: self.seq,
            stream: self.stream,
            // At most MAX_LOG_CHUNK by construction.
            data: LogBytes(heapless::Vec::from_slice(&data).unwrap_or_default()),
            end,
        };
        self.seq += 1;
        encode_to_vec(&chunk)
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// dockerd's query for `r`: `since` in whole seconds (the Docker API's unit, rounded down,
/// so a line of the same second is not lost), the tail as a count or `all`.
pub fn options(r: &ReadLogs) -> bollard::query_parameters::LogsOptions {
    bollard::query_parameters::LogsOptions {
        follow: r.follow_s > 0,
        stdout: r.streams != LogStreams::Stderr,
        stderr: r.streams != LogStreams::Stdout,
        since: r
            .since_ms
            .map_or(0, |ms| i32::try_from(ms / 1000).unwrap_or(i32::MAX)),
        until: 0,
        timestamps: false,
        tail: r.tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
    }
}

/// Sends the log of `container_id` as `r` asks, each encoded chunk through `publish`, until
/// the log ends, `stop` fires or the follow time is over; the last chunk says which.
pub async fn stream(
    docker: &Docker,
    agent_id: &str,
    request_id: &str,
    container_id: &str,
    r: &ReadLogs,
    mut stop: oneshot::Receiver<()>,
    publish: impl Fn(Vec<u8>),
) {
    let mut chunker = Chunker::new(agent_id, request_id);
    let mut output = docker.logs(container_id, Some(options(r)));
    let follow = r.follow_s > 0;
    let follow_over = tokio::time::sleep(Duration::from_secs(u64::from(r.follow_s)));
    tokio::pin!(follow_over);
    let started = tokio::time::Instant::now();
    let paced = |chunks: Vec<Vec<u8>>, sent: u64| {
        let n = chunks.len();
        for c in chunks {
            publish(c);
        }
        // How far ahead of the pace the stream is, to be slept off before reading on.
        let due = Duration::from_secs_f64(sent as f64 / BYTES_PER_SECOND as f64);
        (n > 0).then(|| due.saturating_sub(started.elapsed()))
    };
    let why: String = loop {
        if chunker.sent >= MAX_STREAM_BYTES {
            break format!(
                "{} MiB sent, the most one request sends: the rest was left out (ask with tail or since)",
                MAX_STREAM_BYTES >> 20
            );
        }
        let flush_soon = chunker.holding();
        tokio::select! {
            _ = &mut stop => break "stopped by the bridge".to_string(),
            () = &mut follow_over, if follow => break "follow time over".to_string(),
            () = tokio::time::sleep(FLUSH_AFTER), if flush_soon => {
                let chunks: Vec<_> = chunker.flush().into_iter().collect();
                if let Some(wait) = paced(chunks, chunker.sent) {
                    tokio::time::sleep(wait).await;
                }
            }
            item = output.next() => match item {
                None if follow => break "container stopped".to_string(),
                None => break "end of log".to_string(),
                Some(Err(e)) => break format!("dockerd: {e}"),
                Some(Ok(out)) => {
                    let (stream, bytes) = match out {
                        LogOutput::StdErr { message } => (LogStream::Stderr, message),
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            (LogStream::Stdout, message)
                        }
                        LogOutput::StdIn { .. } => continue,
                    };
                    let chunks = chunker.push(stream, &bytes);
                    if let Some(wait) = paced(chunks, chunker.sent) {
                        tokio::time::sleep(wait).await;
                    }
                }
            },
        }
    };
    publish(chunker.end(&why));
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::decode;

    fn chunks(encoded: &[Vec<u8>]) -> Vec<LogChunk> {
        encoded
            .iter()
            .map(|b| decode::<LogChunk>(b).unwrap())
            .collect()
    }

    #[test]
    fn output_is_cut_at_the_chunk_limit_and_at_each_change_of_stream() {
        let mut c = Chunker::new("edge-07", "l-1");
        let big = vec![b'a'; MAX_LOG_CHUNK + 10];
        let full = chunks(&c.push(LogStream::Stdout, &big));
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].data.0.len(), MAX_LOG_CHUNK);
        // The 10 bytes left wait; stderr output flushes them first.
        let switched = chunks(&c.push(LogStream::Stderr, b"oops\n"));
        assert_eq!(switched.len(), 1);
        assert_eq!(switched[0].stream, LogStream::Stdout);
        assert_eq!(switched[0].data.0.as_slice(), &[b'a'; 10]);
        let last = decode::<LogChunk>(&c.end("end of log")).unwrap();
        assert_eq!(last.stream, LogStream::Stderr);
        assert_eq!(last.data.0.as_slice(), b"oops\n");
        assert_eq!(last.end.as_deref(), Some("end of log"));
        // Numbered in order, and every byte counted once.
        assert_eq!(
            [full[0].seq, switched[0].seq, last.seq],
            [0, 1, 2],
            "sequence numbers"
        );
        assert_eq!(c.sent, big.len() as u64 + 5);
    }

    #[test]
    fn every_chunk_fits_far_under_the_broker_packet_limit() {
        let mut c = Chunker::new(&"a".repeat(64), &"r".repeat(64));
        let encoded = c.push(LogStream::Stdout, &vec![0xff; MAX_LOG_CHUNK]);
        let why = "é".repeat(400);
        let last = c.end(&why);
        assert!(
            encoded[0].len() < MAX_LOG_CHUNK + 256,
            "{}",
            encoded[0].len()
        );
        // A reason longer than a note is cut on a character boundary, not refused.
        let end = decode::<LogChunk>(&last).unwrap().end.unwrap();
        assert!(end.len() <= Note::LIMIT && end.starts_with('é'));
    }

    #[test]
    fn the_docker_query_follows_the_request() {
        let r = ReadLogs {
            task_id: outpost_protocol::TaskId::new("t").unwrap(),
            streams: LogStreams::Stderr,
            tail: Some(5),
            since_ms: Some(1_764_000_000_999),
            follow_s: 30,
        };
        let o = options(&r);
        assert!(o.follow && o.stderr && !o.stdout);
        assert_eq!((o.since, o.tail.as_str()), (1_764_000_000, "5"));
        let all = options(&ReadLogs::default());
        assert!(!all.follow && all.stdout && all.stderr);
        assert_eq!((all.since, all.tail.as_str()), (0, "all"));
    }
}
