//! Time as the bridge's core sees it: milliseconds since the Unix epoch, passed in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// The wall clock now (the runtime's only clock read).
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-11-25T08:00:00.123Z`, as Marathon writes times.
pub fn rfc3339(ms: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_utc_with_milliseconds_and_z() {
        assert_eq!(
            super::rfc3339(1_764_057_600_123),
            "2025-11-25T08:00:00.123Z"
        );
    }
}
