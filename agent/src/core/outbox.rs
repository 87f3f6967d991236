//! Status updates waiting for the bridge's acknowledgement: re-sent with backoff while the
//! broker is reachable, kept while it is not, in the order they were produced.
//!
//! Bounded: when full, the oldest intermediate (non-terminal) update of a task that has a newer
//! update queued is dropped ("coalesced", and counted); terminal updates are never dropped.
//! Entries are plain `TaskStatus` values so the durable store can persist the queue as is.

use std::collections::VecDeque;

use outpost_protocol::TaskStatus;

use super::Millis;

/// First re-send delay.
const FIRST_RESEND_MS: u64 = 1_000;
/// Longest re-send delay.
const MAX_RESEND_MS: u64 = 30_000;

#[derive(Debug, Clone)]
struct Pending {
    status: TaskStatus,
    /// When to (re)send; `None` until the first send while connected.
    next_send: Option<Millis>,
    resend_ms: u64,
}

/// The unacknowledged status updates.
#[derive(Debug, Clone)]
pub struct Outbox {
    queue: VecDeque<Pending>,
    capacity: usize,
    coalesced: u64,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` updates (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            coalesced: 0,
        }
    }

    /// Queues `status` to be sent at the next [`Outbox::due`].
    pub fn push(&mut self, status: TaskStatus) {
        if self.queue.len() >= self.capacity {
            self.coalesce_one();
        }
        self.queue.push_back(Pending {
            status,
            next_send: None,
            resend_ms: FIRST_RESEND_MS,
        });
    }

    /// Drops the oldest non-terminal update that a newer update of the same task supersedes.
    /// If there is none the queue grows past its capacity rather than lose a terminal state.
    fn coalesce_one(&mut self) {
        let victim = self.queue.iter().enumerate().position(|(i, p)| {
            !p.status.state.is_terminal()
                && self
                    .queue
                    .iter()
                    .skip(i + 1)
                    .any(|later| later.status.task_id == p.status.task_id)
        });
        if let Some(i) = victim {
            self.queue.remove(i);
            self.coalesced += 1;
        }
    }

    /// Removes the update with `uuid`; whether it was queued.
    pub fn ack(&mut self, uuid: &[u8; 16]) -> bool {
        let before = self.queue.len();
        self.queue.retain(|p| &p.status.uuid != uuid);
        before != self.queue.len()
    }

    /// After a (re)connect: everything is due now, with the backoff reset.
    pub fn reset_backoff(&mut self) {
        for p in &mut self.queue {
            p.next_send = None;
            p.resend_ms = FIRST_RESEND_MS;
        }
    }

    /// The updates to send at `now`, oldest first; each is then scheduled for a re-send.
    pub fn due(&mut self, now: Millis) -> Vec<TaskStatus> {
        let mut out = Vec::new();
        for p in &mut self.queue {
            if p.next_send.is_none_or(|t| t <= now) {
                out.push(p.status.clone());
                p.next_send = Some(now + p.resend_ms);
                p.resend_ms = (p.resend_ms * 2).min(MAX_RESEND_MS);
            }
        }
        out
    }

    /// The earliest re-send time, if any update waits.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.queue.iter().map(|p| p.next_send.unwrap_or(0)).min()
    }

    /// The queued updates, oldest first.
    pub fn statuses(&self) -> impl Iterator<Item = &TaskStatus> {
        self.queue.iter().map(|p| &p.status)
    }

    /// Number of queued updates.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// How many intermediate updates were coalesced away since start.
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::{TaskId, TaskState};

    fn status(task: &str, n: u8, state: TaskState) -> TaskStatus {
        TaskStatus {
            task_id: TaskId::new(task).unwrap(),
            uuid: [n; 16],
            state,
            ..Default::default()
        }
    }

    #[test]
    fn updates_are_resent_with_growing_backoff_until_acknowledged() {
        let mut o = Outbox::new(10);
        o.push(status("a", 1, TaskState::Running));
        assert_eq!(o.due(0).len(), 1);
        assert!(o.due(999).is_empty());
        assert_eq!(o.due(1_000).len(), 1);
        assert!(o.due(2_999).is_empty());
        assert_eq!(o.due(3_000).len(), 1);
        assert!(o.ack(&[1; 16]));
        assert!(o.is_empty());
        assert!(!o.ack(&[1; 16]));
    }

    #[test]
    fn a_full_outbox_coalesces_superseded_intermediate_states_but_keeps_terminal_ones() {
        let mut o = Outbox::new(3);
        o.push(status("a", 1, TaskState::Starting));
        o.push(status("a", 2, TaskState::Running));
        o.push(status("a", 3, TaskState::Failed));
        o.push(status("a", 4, TaskState::Starting));
        assert_eq!(o.coalesced(), 1);
        let sent: Vec<u8> = o.due(0).iter().map(|s| s.uuid[0]).collect();
        assert_eq!(sent, vec![2, 3, 4]);
        // Only terminal states left to drop: the queue grows instead.
        let mut o = Outbox::new(1);
        o.push(status("a", 1, TaskState::Failed));
        o.push(status("b", 2, TaskState::Killed));
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn a_reconnect_makes_everything_due_at_once_in_order() {
        let mut o = Outbox::new(10);
        o.push(status("a", 1, TaskState::Running));
        o.push(status("b", 2, TaskState::Running));
        o.due(0);
        o.due(1_000);
        o.reset_backoff();
        let sent: Vec<u8> = o.due(1_001).iter().map(|s| s.uuid[0]).collect();
        assert_eq!(sent, vec![1, 2]);
    }
}
