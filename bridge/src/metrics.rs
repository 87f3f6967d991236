//! `GET /metrics/prometheus`: the bridge in Prometheus's text format (prometheus-client), for a
//! fleet watched from one scrape target. Marathon's own `/metrics` (Dropwizard JSON) stays as
//! it is.
//!
//! Two kinds of figures: what is counted as it happens ([`Metrics`]: histograms of commit and
//! launch latencies, MQTT connections, kept for the life of the process), and what is read off
//! the core's state at each scrape (agents by liveness, tasks by state, deployments, the core's
//! counters in [`crate::core::Stats`], the latest stats each agent reported).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::core::Latency;

/// Label pairs of one series.
type Labels = Vec<(&'static str, String)>;

/// Latency buckets from 1 ms to about 65 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

/// The figures counted as they happen; shared by the owner, the MQTT loop and the endpoint.
#[derive(Debug)]
pub struct Metrics {
    /// One store commit (a group of jobs), seconds.
    pub commit_seconds: Histogram,
    /// From an offer made to a framework to its ACCEPT, seconds.
    pub offer_to_accept_seconds: Histogram,
    /// From a launch to the task's first TASK_RUNNING, seconds, by `kind` (marathon,
    /// framework).
    pub launch_to_running_seconds: Family<Labels, Histogram>,
    /// CONNACKs from the broker after the first: reconnections.
    pub mqtt_reconnects: AtomicU64,
    /// CONNACKs in all.
    mqtt_connects: AtomicU64,
    /// The latest stats message of each agent, by agent id.
    pub agent_stats: Mutex<HashMap<String, outpost_protocol::AgentStats>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            commit_seconds: Histogram::new(latency_buckets()),
            offer_to_accept_seconds: Histogram::new(latency_buckets()),
            launch_to_running_seconds: Family::new_with_constructor(|| {
                Histogram::new(latency_buckets())
            }),
            mqtt_reconnects: AtomicU64::new(0),
            mqtt_connects: AtomicU64::new(0),
            agent_stats: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Feeds the core's latency observations to their histograms.
    pub fn observe(&self, observations: Vec<(Latency, f64)>) {
        for (what, seconds) in observations {
            match what {
                Latency::OfferToAccept => self.offer_to_accept_seconds.observe(seconds),
                Latency::LaunchToRunning { framework } => {
                    let kind = if framework { "framework" } else { "marathon" };
                    self.launch_to_running_seconds
                        .get_or_create(&vec![("kind", kind.to_string())])
                        .observe(seconds);
                }
            }
        }
    }

    /// The broker accepted a connection (every one after the first is a reconnection).
    pub fn connected(&self) {
        if self.mqtt_connects.fetch_add(1, Ordering::Relaxed) > 0 {
            self.mqtt_reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keeps an agent's latest stats message.
    pub fn agent_reported(&self, stats: outpost_protocol::AgentStats) {
        let mut map = self
            .agent_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(stats.agent_id.to_string(), stats);
    }
}

/// What a scrape reads off the core (on the owner's reader, away from it).
#[derive(Debug, Default, Clone)]
pub struct CoreFigures {
    /// Agents by liveness name.
    pub agents: Vec<(&'static str, u64)>,
    /// Marathon's tasks by Mesos state name.
    pub tasks: Vec<(&'static str, u64)>,
    /// Frameworks' tasks by Mesos state name.
    pub framework_tasks: Vec<(&'static str, u64)>,
    /// Apps.
    pub apps: u64,
    /// Deployments under way.
    pub deployments: u64,
    /// Status updates received.
    pub statuses_received: u64,
    /// The core's counters.
    pub stats: crate::core::Stats,
}

/// Everything else the scrape shows, from the shared handle.
#[derive(Debug, Default, Clone, Copy)]
pub struct EdgeFigures {
    /// `/v2/events` subscribers now.
    pub sse_subscribers: u64,
    /// Subscribers cut off for falling behind.
    pub sse_dropped: u64,
    /// Logs streams open now.
    pub log_streams: u64,
    /// Logs readers cut off for falling behind.
    pub log_readers_cut: u64,
    /// Seconds since the bridge started.
    pub uptime_s: u64,
    /// Events HTTP callbacks took.
    pub callbacks_delivered: u64,
    /// Events HTTP callbacks did not take after every try.
    pub callbacks_failed: u64,
    /// Events dropped for a callback (its queue full).
    pub callback_events_dropped: u64,
    /// Callbacks unsubscribed after failing too often.
    pub callback_subscribers_dropped: u64,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    registry.register(name, help, c);
}

fn gauges_by(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (String, i64)>,
) {
    let family = Family::<Labels, Gauge>::default();
    for (l, v) in values {
        family.get_or_create(&vec![(label, l)]).set(v);
    }
    registry.register(name, help, family);
}

fn counters_by(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (String, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (l, v) in values {
        family.get_or_create(&vec![(label, l)]).inc_by(v);
    }
    registry.register(name, help, family);
}

/// The Prometheus text of one scrape.
pub fn render(metrics: &Metrics, core: &CoreFigures, edge: EdgeFigures) -> String {
    let mut r = Registry::with_prefix("outpost");
    let agents = core.agents.iter().map(|(l, v)| (l.to_string(), *v as i64));
    gauges_by(&mut r, "agents", "Agents by liveness.", "liveness", agents);
    let tasks = core.tasks.iter().map(|(l, v)| (l.to_string(), *v as i64));
    gauges_by(
        &mut r,
        "tasks",
        "Marathon's tasks by Mesos state.",
        "state",
        tasks,
    );
    let fw = core
        .framework_tasks
        .iter()
        .map(|(l, v)| (l.to_string(), *v as i64));
    gauges_by(
        &mut r,
        "framework_tasks",
        "Mesos frameworks' tasks by state.",
        "state",
        fw,
    );
    gauge(&mut r, "apps", "Marathon apps.", core.apps as i64);
    gauge(
        &mut r,
        "deployments",
        "Deployments under way.",
        core.deployments as i64,
    );
    counter(
        &mut r,
        "status_updates_received",
        "Status updates received from agents.",
        core.statuses_received,
    );
    counter(
        &mut r,
        "status_updates_acknowledged",
        "Status updates acknowledged to agents (stored first).",
        core.stats.statuses_acknowledged,
    );
    counter(
        &mut r,
        "status_updates_duplicate",
        "Status updates received again (same uuid) and dropped.",
        core.stats.statuses_duplicate,
    );
    let sent = core
        .stats
        .commands_sent
        .iter()
        .map(|(k, v)| (k.to_string(), *v));
    counters_by(
        &mut r,
        "commands_sent",
        "Commands sent to agents.",
        "kind",
        sent,
    );
    let refused = core
        .stats
        .commands_refused
        .iter()
        .map(|(k, v)| (k.to_string(), *v));
    counters_by(
        &mut r,
        "commands_refused",
        "Commands agents refused, by reason.",
        "reason",
        refused,
    );
    r.register(
        "store_commit_seconds",
        "Time to store one group commit.",
        metrics.commit_seconds.clone(),
    );
    r.register(
        "offer_to_accept_seconds",
        "From an offer made to a framework to its ACCEPT.",
        metrics.offer_to_accept_seconds.clone(),
    );
    r.register(
        "launch_to_running_seconds",
        "From a launch to the task's first TASK_RUNNING.",
        metrics.launch_to_running_seconds.clone(),
    );
    counter(
        &mut r,
        "mqtt_reconnects",
        "Broker connections made again after the first.",
        metrics.mqtt_reconnects.load(Ordering::Relaxed),
    );
    gauge(
        &mut r,
        "event_subscribers",
        "Open /v2/events streams.",
        edge.sse_subscribers as i64,
    );
    counter(
        &mut r,
        "event_subscribers_dropped",
        "/v2/events subscribers cut off for falling behind.",
        edge.sse_dropped,
    );
    gauge(
        &mut r,
        "log_streams",
        "Task logs streams open.",
        edge.log_streams as i64,
    );
    counter(
        &mut r,
        "log_readers_cut",
        "Task logs readers cut off for falling behind.",
        edge.log_readers_cut,
    );
    counter(
        &mut r,
        "event_callbacks_delivered",
        "Events an HTTP callback (/v2/eventSubscriptions) answered with 2xx.",
        edge.callbacks_delivered,
    );
    counter(
        &mut r,
        "event_callbacks_failed",
        "Events an HTTP callback did not take after every try.",
        edge.callbacks_failed,
    );
    counter(
        &mut r,
        "event_callback_events_dropped",
        "Events dropped for an HTTP callback whose queue was full.",
        edge.callback_events_dropped,
    );
    counter(
        &mut r,
        "event_callbacks_dropped",
        "HTTP callbacks unsubscribed after failing too many events in a row.",
        edge.callback_subscribers_dropped,
    );
    gauge(
        &mut r,
        "uptime_seconds",
        "Seconds since the bridge started.",
        edge.uptime_s as i64,
    );
    agent_gauges(&mut r, metrics);
    let mut out = String::new();
    // Writing to a String does not fail.
    let _ = prometheus_text::encode(&mut out, &r);
    out
}

/// The gauges each agent reports in its stats message, labelled by agent id.
fn agent_gauges(r: &mut Registry, metrics: &Metrics) {
    let stats = metrics
        .agent_stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let each = |f: fn(&outpost_protocol::AgentStats) -> i64| {
        stats
            .iter()
            .map(move |(id, s)| (id.clone(), f(s)))
            .collect::<Vec<_>>()
    };
    type Read = fn(&outpost_protocol::AgentStats) -> i64;
    let series: [(&str, &str, Read); 7] = [
        (
            "agent_outbox_depth",
            "Status updates an agent holds unacknowledged.",
            |s| i64::from(s.outbox_depth),
        ),
        (
            "agent_restarts",
            "Container restarts an agent made since it started.",
            |s| i64::from(s.restarts),
        ),
        (
            "agent_probe_latency_microseconds",
            "Mean health probe time at an agent over its last interval.",
            |s| i64::from(s.probe_latency_us),
        ),
        ("agent_containers", "Containers an agent supervises.", |s| {
            i64::from(s.containers)
        }),
        (
            "agent_rss_bytes",
            "An agent process's resident memory.",
            |s| i64::try_from(s.rss_kib.saturating_mul(1024)).unwrap_or(i64::MAX),
        ),
        (
            "agent_dockerd_reachable",
            "1 when the agent's dockerd answered its last call, else 0.",
            |s| i64::from(s.dockerd_reachable),
        ),
        (
            "agent_stats_timestamp_seconds",
            "When the agent sent its latest stats (its clock).",
            |s| i64::try_from(s.timestamp_ms / 1000).unwrap_or(i64::MAX),
        ),
    ];
    for (name, help, f) in series {
        gauges_by(r, name, help, "agent_id", each(f));
    }
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_shows_state_counters_and_histograms_in_prometheus_text() {
        let m = Metrics::default();
        m.connected();
        m.connected();
        m.observe(vec![
            (Latency::LaunchToRunning { framework: false }, 1.5),
            (Latency::OfferToAccept, 0.02),
        ]);
        let mut stats = crate::core::Stats::default();
        stats.commands_sent.insert("launch", 3);
        let core = CoreFigures {
            agents: vec![("online", 2), ("offline", 1)],
            tasks: vec![("TASK_RUNNING", 4)],
            statuses_received: 9,
            stats,
            ..Default::default()
        };
        let text = render(&m, &core, EdgeFigures::default());
        for line in [
            "outpost_agents{liveness=\"online\"} 2",
            "outpost_tasks{state=\"TASK_RUNNING\"} 4",
            "outpost_status_updates_received_total 9",
            "outpost_commands_sent_total{kind=\"launch\"} 3",
            "outpost_mqtt_reconnects_total 1",
            "outpost_launch_to_running_seconds_count{kind=\"marathon\"} 1",
            "outpost_launch_to_running_seconds_sum{kind=\"marathon\"} 1.5",
            "outpost_offer_to_accept_seconds_count 1",
            "# TYPE outpost_store_commit_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
