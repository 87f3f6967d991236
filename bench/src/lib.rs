//! What the benchmarks share: percentiles, how they print durations, and an agent joining a
//! core in process.

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

/// Agent `id` online in `core`: its hello, the fleet simulator's offer, its liveness.
pub fn join(core: &mut outpost_bridge::core::Core, now: u64, id: &str) {
    use outpost_protocol::{AgentId, AgentState, Hello, Liveness, Text};
    let Ok(agent_id) = AgentId::new(id) else {
        return;
    };
    core.on_hello(
        now,
        &Hello {
            version: 1,
            agent_id: agent_id.clone(),
            hostname: Text::new(id).unwrap_or_default(),
            ..Default::default()
        },
    );
    core.on_offer(now, &outpost_tests::fleet_sim::Fleet::offer(id));
    core.on_state(
        now,
        &AgentState {
            version: 1,
            agent_id,
            liveness: Liveness::Online,
            started_at_ms: 1,
        },
    );
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
