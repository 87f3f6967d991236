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

/// The time [`rfc3339`] wrote, back in milliseconds (`None` for anything else).
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let t = humantime::parse_rfc3339(s).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_utc_with_milliseconds_and_z() {
        assert_eq!(
            super::rfc3339(1_764_057_600_123),
            "2025-11-25T08:00:00.123Z"
        );
        assert_eq!(
            super::parse_rfc3339("2025-11-25T08:00:00.123Z"),
            Some(1_764_057_600_123)
        );
        assert_eq!(super::parse_rfc3339("yesterday"), None);
    }
}
