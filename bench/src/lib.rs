//! What the benchmarks share: percentiles and how they print durations.

#![forbid(unsafe_code)]

use std::time::Duration;

/// The `p` quantile (0..=1) of `v`, nearest rank; zero for no samples.
pub fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// `12.3 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(v.clone(), 0.5), Duration::from_millis(50));
        assert_eq!(percentile(v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(Vec::new(), 0.5), Duration::ZERO);
        assert_eq!(ms(Duration::from_micros(12_340)), "12.3 ms");
    }
}
