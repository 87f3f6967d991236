//! The logs streams under way: each HTTP request for a task's log (`GET
//! /v2/tasks/{id}/logs`) opens one here before its `read_logs` command goes out, and the MQTT
//! side hands it the agent's reply and the chunks from the request's own topic, without going
//! through the core (they change no state and are not stored).
//!
//! Each stream has a small buffer ([`BUFFER`] chunks); a reader that lets it fill is cut off
//! (its request ends, the agent is told to stop, the cut is counted), so a slow client costs
//! the bridge a bounded amount of memory and never holds up the MQTT side.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use outpost_protocol::{CommandReply, LogChunk, Outcome, RejectCode, decode};

/// Chunks a stream holds for its reader (16 KiB each at most: 1 MiB) before it is cut off.
pub const BUFFER: usize = 64;

/// What arrives for one logs request.
#[derive(Debug)]
pub enum LogEvent {
    /// The agent took the request; chunks follow.
    Accepted,
    /// The agent refused it.
    Rejected {
        /// Why, for machines.
        code: RejectCode,
        /// Why, for people.
        message: String,
    },
    /// A piece of the log (the last carries `end`).
    Chunk(Box<LogChunk>),
}

/// The open logs requests, by request (command) id.
#[derive(Debug, Default)]
pub struct LogStreams {
    open: Mutex<HashMap<String, mpsc::Sender<LogEvent>>>,
    /// Readers cut off because they fell [`BUFFER`] chunks behind.
    pub cut_slow: AtomicU64,
    /// Chunks that arrived for no open request (it ended; the agent had sent on).
    pub orphan_chunks: AtomicU64,
}

impl LogStreams {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<LogEvent>>> {
        // Each insert and remove is one call: a poisoned map still holds whole entries.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens request `request_id`; what arrives for it comes out of the receiver.
    pub fn open(&self, request_id: &str) -> mpsc::Receiver<LogEvent> {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.map().insert(request_id.to_string(), tx);
        rx
    }

    /// Forgets request `request_id` (it ended, or its reader went away).
    pub fn close(&self, request_id: &str) {
        self.map().remove(request_id);
    }

    /// How many requests are open.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn deliver(&self, request_id: &str, event: LogEvent) {
        let mut map = self.map();
        let Some(tx) = map.get(request_id) else {
            self.orphan_chunks.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The reader's stream sees its channel close without an end: cut off.
                map.remove(request_id);
                self.cut_slow.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    request = request_id,
                    "a logs reader fell {BUFFER} chunks behind: its stream is cut"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                map.remove(request_id);
            }
        }
    }

    /// A message on `outpost/v1/agents/{agent}/logs/{request}`.
    pub fn on_chunk(&self, request_id: &str, payload: &[u8]) {
        match decode::<LogChunk>(payload) {
            Ok(chunk) => self.deliver(request_id, LogEvent::Chunk(Box::new(chunk))),
            Err(e) => {
                tracing::warn!(request = request_id, error = %e, "dropping an undecodable logs chunk")
            }
        }
    }

    /// A command reply: taken (`true`) when it answers an open logs request.
    pub fn on_reply(&self, payload: &[u8]) -> bool {
        let Some(id) = outpost_protocol::codec::command_id_of(payload) else {
            return false;
        };
        if !self.map().contains_key(id) {
            return false;
        }
        let Ok(reply) = decode::<CommandReply>(payload) else {
            return false;
        };
        let event = match reply.outcome {
            Outcome::Accepted => LogEvent::Accepted,
            Outcome::Rejected(r) => LogEvent::Rejected {
                code: r.code,
                message: r.message.to_string(),
            },
        };
        self.deliver(reply.command_id.as_str(), event);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::codec::encode_to_vec;
    use outpost_protocol::examples;

    #[test]
    fn chunks_and_the_reply_reach_their_request_and_a_reader_that_falls_behind_is_cut() {
        let streams = LogStreams::default();
        let mut rx = streams.open("l-000107");
        let mut reply = examples::reply_accepted();
        reply.command_id = outpost_protocol::CommandId::new("l-000107").unwrap();
        assert!(streams.on_reply(&encode_to_vec(&reply)));
        // Someone else's reply is left for the core.
        assert!(!streams.on_reply(&encode_to_vec(&examples::reply_rejected())));
        streams.on_chunk("l-000107", &encode_to_vec(&examples::log_chunk()));
        assert!(matches!(rx.try_recv(), Ok(LogEvent::Accepted)));
        let Ok(LogEvent::Chunk(c)) = rx.try_recv() else {
            panic!("no chunk")
        };
        assert_eq!(c.data.0.as_slice(), b"GET / 200\n");
        // Nobody reads: the buffer fills, the next chunk cuts the stream.
        let chunk = encode_to_vec(&examples::log_chunk());
        for _ in 0..=BUFFER {
            streams.on_chunk("l-000107", &chunk);
        }
        assert_eq!(streams.cut_slow.load(Ordering::Relaxed), 1);
        assert!(streams.is_empty());
        let mut got = 0;
        while let Ok(LogEvent::Chunk(_)) = rx.try_recv() {
            got += 1;
        }
        assert_eq!(got, BUFFER);
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        // Later chunks for it are counted, not kept.
        streams.on_chunk("l-000107", &chunk);
        assert_eq!(streams.orphan_chunks.load(Ordering::Relaxed), 1);
    }
}
