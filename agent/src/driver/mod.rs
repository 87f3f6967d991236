//! Thin drivers around the core: each turns one part of the world into [`crate::core::Event`]s
//! and carries out the [`crate::core::Action`]s of its kind.

pub mod docker;
pub mod host;
pub mod images;
pub mod logs;
pub mod metrics;
pub mod mqtt;
pub mod probe;
pub mod state;
pub mod systemd;

/// A small xorshift generator for jitter; drivers only (the core takes no randomness).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock and the process id.
    pub fn new() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 { 0 } else { self.0 % n }
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

/// Exponential backoff with jitter: `base * 2^failures`, at most `max`, plus up to 50 %.
pub fn backoff(
    failures: u32,
    base_ms: u64,
    max_ms: u64,
    jitter: &mut Jitter,
) -> std::time::Duration {
    let exp = base_ms.saturating_mul(1u64 << failures.min(16)).min(max_ms);
    std::time::Duration::from_millis(exp + jitter.below(exp / 2 + 1))
}
