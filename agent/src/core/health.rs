//! One health check's state, with Marathon's semantics: an initial delay, probes every
//! interval, failures ignored during the grace period until the first success, and a kill after
//! `max_consecutive_failures` (0: never).

use outpost_protocol::HealthCheck;

use super::Millis;

/// What a probe result changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing a status update needs to say.
    Unchanged,
    /// The check's health flipped to this value.
    Changed(bool),
    /// Too many consecutive failures: kill the task.
    Kill,
}

/// The running state of one check of one container.
#[derive(Debug, Clone)]
pub struct CheckState {
    /// When the next probe is due.
    pub next_probe_at: Millis,
    /// A probe is out; no other is sent until it reports (its timeout bounds the wait).
    pub in_flight: bool,
    /// Consecutive counted failures.
    pub consecutive_failures: u32,
    /// Whether any probe of this container succeeded.
    pub ever_succeeded: bool,
    /// The last known health (`None` until the first counted result).
    pub healthy: Option<bool>,
    grace_until: Millis,
}

impl CheckState {
    /// A check of a container that started at `started`.
    pub fn new(check: &HealthCheck, started: Millis) -> Self {
        Self {
            next_probe_at: started + u64::from(check.delay_s) * 1000,
            in_flight: false,
            consecutive_failures: 0,
            ever_succeeded: false,
            healthy: None,
            grace_until: started + u64::from(check.grace_period_s) * 1000,
        }
    }

    /// Whether a probe should be sent at `now`.
    pub fn due(&self, now: Millis) -> bool {
        !self.in_flight && self.next_probe_at <= now
    }

    /// Records that a probe was sent.
    pub fn sent(&mut self) {
        self.in_flight = true;
    }

    /// Applies a probe result that arrived at `now`.
    pub fn result(&mut self, check: &HealthCheck, now: Millis, ok: bool) -> Verdict {
        self.in_flight = false;
        self.next_probe_at = now + u64::from(check.interval_s.max(1)) * 1000;
        if ok {
            self.ever_succeeded = true;
            self.consecutive_failures = 0;
            return self.set(true);
        }
        if !self.ever_succeeded && now < self.grace_until {
            return Verdict::Unchanged;
        }
        self.consecutive_failures += 1;
        if check.max_consecutive_failures > 0
            && self.consecutive_failures >= check.max_consecutive_failures
        {
            self.healthy = Some(false);
            return Verdict::Kill;
        }
        self.set(false)
    }

    fn set(&mut self, healthy: bool) -> Verdict {
        if self.healthy == Some(healthy) {
            Verdict::Unchanged
        } else {
            self.healthy = Some(healthy);
            Verdict::Changed(healthy)
        }
    }
}

/// A task's health from its checks: unhealthy if any is, healthy if all are, else unknown.
pub fn overall(checks: &[CheckState]) -> Option<bool> {
    if checks.iter().any(|c| c.healthy == Some(false)) {
        Some(false)
    } else if !checks.is_empty() && checks.iter().all(|c| c.healthy == Some(true)) {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::HealthProtocol;

    fn check(grace: u32, interval: u32, max: u32) -> HealthCheck {
        HealthCheck {
            protocol: HealthProtocol::Tcp,
            grace_period_s: grace,
            interval_s: interval,
            timeout_s: 1,
            max_consecutive_failures: max,
            delay_s: 0,
            ..Default::default()
        }
    }

    #[test]
    fn failures_in_the_grace_period_are_ignored_until_the_first_success() {
        let c = check(10, 1, 1);
        let mut s = CheckState::new(&c, 0);
        assert_eq!(s.result(&c, 5_000, false), Verdict::Unchanged);
        assert_eq!(s.result(&c, 6_000, true), Verdict::Changed(true));
        // After a success, a failure counts even inside the grace period.
        assert_eq!(s.result(&c, 7_000, false), Verdict::Kill);
    }

    #[test]
    fn after_the_grace_period_failures_count_up_to_the_kill() {
        let c = check(2, 1, 3);
        let mut s = CheckState::new(&c, 0);
        assert_eq!(s.result(&c, 3_000, false), Verdict::Changed(false));
        assert_eq!(s.result(&c, 4_000, false), Verdict::Unchanged);
        assert_eq!(s.result(&c, 5_000, false), Verdict::Kill);
    }

    #[test]
    fn zero_max_failures_never_kills() {
        let c = check(0, 1, 0);
        let mut s = CheckState::new(&c, 0);
        for t in 1..100 {
            assert_ne!(s.result(&c, t * 1000, false), Verdict::Kill);
        }
    }

    #[test]
    fn a_probe_in_flight_blocks_the_next_until_it_reports() {
        let c = check(0, 5, 3);
        let mut s = CheckState::new(&c, 0);
        assert!(s.due(0));
        s.sent();
        assert!(!s.due(100_000));
        s.result(&c, 1_000, true);
        assert!(!s.due(5_999));
        assert!(s.due(6_000));
    }
}
