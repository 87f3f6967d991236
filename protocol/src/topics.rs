//! The MQTT topic scheme: `outpost/v1/agents/{agent_id}/{kind}`.
//!
//! Each kind has one direction, QoS and retain flag (see [`TopicKind`]); `docs/protocol.md`
//! has the same table for people.

use core::fmt::{self, Write as _};

use crate::messages::AgentId;
use crate::text::Text;

/// The prefix every Outpost topic starts with.
pub const PREFIX: &str = "outpost/v1/agents/";

/// The longest topic: prefix, a 64-byte agent id, `/` and the longest kind.
pub type TopicName = Text<96>;

/// What travels on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// Agent → bridge: [`crate::Hello`]. Retained, so a restarted bridge knows every agent.
    Hello,
    /// Agent → bridge: [`crate::Offer`]. Retained: the latest offer is the agent's capacity.
    Offer,
    /// Agent (and broker, as the last will) → bridge: [`crate::AgentState`]. Retained.
    State,
    /// Agent → bridge: [`crate::TaskStatus`], re-sent until acknowledged.
    Status,
    /// Bridge → agent: [`crate::Command`].
    Cmd,
    /// Agent → bridge: [`crate::CommandReply`].
    Reply,
    /// Bridge → agent: [`crate::StatusAck`].
    Ack,
    /// Agent → bridge: [`crate::AgentStats`], at the offer interval.
    Stats,
    /// Agent → bridge: [`crate::PullProgress`] while an image is pulled.
    Progress,
}

impl TopicKind {
    /// Every kind.
    pub const ALL: [TopicKind; 9] = [
        Self::Hello,
        Self::Offer,
        Self::State,
        Self::Status,
        Self::Cmd,
        Self::Reply,
        Self::Ack,
        Self::Stats,
        Self::Progress,
    ];

    /// The last topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Offer => "offer",
            Self::State => "state",
            Self::Status => "status",
            Self::Cmd => "cmd",
            Self::Reply => "reply",
            Self::Ack => "ack",
            Self::Stats => "stats",
            Self::Progress => "progress",
        }
    }

    /// The MQTT QoS to publish and subscribe with. Everything is QoS 1 (at least once):
    /// receivers drop duplicates by command id or status uuid, and QoS 2's extra round trip
    /// buys nothing on top of that.
    pub fn qos(self) -> u8 {
        1
    }

    /// Whether messages are published retained: the agent's latest hello, offer and liveness
    /// are state, the rest are events.
    pub fn retain(self) -> bool {
        matches!(self, Self::Hello | Self::Offer | Self::State)
    }

    /// Whether the agent publishes on it (otherwise the bridge does).
    pub fn from_agent(self) -> bool {
        !matches!(self, Self::Cmd | Self::Ack)
    }

    /// The wildcard filter for this kind across all agents: `outpost/v1/agents/+/offer`.
    pub fn all_agents_filter(self) -> TopicName {
        let mut s: heapless::String<96> = heapless::String::new();
        // Fits: the prefix, `+/` and a kind are far below the limit.
        let _ = write!(s, "{PREFIX}+/{}", self.as_str());
        Text::new(&s).unwrap_or_default()
    }
}

/// A concrete topic: one agent, one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// The agent.
    pub agent_id: AgentId,
    /// The kind.
    pub kind: TopicKind,
}

/// A topic that is not one of Outpost's, or an agent id unfit for a topic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// The topic does not start with [`PREFIX`].
    NotOutpost,
    /// The last level is not a known kind.
    UnknownKind,
    /// The agent id is empty, too long, or contains a character outside `[A-Za-z0-9._-]`.
    BadAgentId,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOutpost => "topic does not start with outpost/v1/agents/",
            Self::UnknownKind => {
                "unknown topic kind (expected hello, offer, state, status, cmd, reply, ack, stats or progress)"
            }
            Self::BadAgentId => "agent id must be 1-64 bytes of [A-Za-z0-9._-]",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TopicError {}

/// Whether `id` can be an agent id: 1-64 bytes of `[A-Za-z0-9._-]`, so it is one topic level
/// with no wildcard.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= AgentId::LIMIT
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Topic {
    /// The topic of `kind` for `agent_id`.
    pub fn new(agent_id: &str, kind: TopicKind) -> Result<Self, TopicError> {
        if !valid_agent_id(agent_id) {
            return Err(TopicError::BadAgentId);
        }
        let agent_id = AgentId::new(agent_id).map_err(|_| TopicError::BadAgentId)?;
        Ok(Self { agent_id, kind })
    }

    /// Parses `outpost/v1/agents/{agent_id}/{kind}`.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let rest = topic.strip_prefix(PREFIX).ok_or(TopicError::NotOutpost)?;
        let (agent, kind) = rest.split_once('/').ok_or(TopicError::UnknownKind)?;
        let kind = TopicKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or(TopicError::UnknownKind)?;
        Self::new(agent, kind)
    }

    /// The topic name.
    pub fn name(&self) -> TopicName {
        let mut s: heapless::String<96> = heapless::String::new();
        // Fits: 18 + 64 + 1 + 6 < 96.
        let _ = write!(s, "{PREFIX}{}/{}", self.agent_id, self.kind.as_str());
        Text::new(&s).unwrap_or_default()
    }
}

/// The level after an agent's id on which it answers logs requests:
/// `outpost/v1/agents/{agent_id}/logs/{request_id}`, one topic per request.
pub const LOGS: &str = "logs";

/// What the bridge subscribes to for every agent's logs answers.
pub const LOGS_FILTER: &str = "outpost/v1/agents/+/logs/+";

/// The longest logs topic: prefix, agent id, `/logs/` and a 64-byte request id.
pub type LogsTopicName = Text<152>;

/// The topic on which `agent_id` answers the logs request `request_id` (both must be topic
/// levels: 1-64 bytes of `[A-Za-z0-9._-]`, as the bridge's `l-{uuid}` ids are).
pub fn logs_topic(agent_id: &str, request_id: &str) -> Result<LogsTopicName, TopicError> {
    if !valid_agent_id(agent_id) || !valid_agent_id(request_id) {
        return Err(TopicError::BadAgentId);
    }
    let mut s: heapless::String<152> = heapless::String::new();
    // Fits: 18 + 64 + 6 + 64 = 152.
    let _ = write!(s, "{PREFIX}{agent_id}/{LOGS}/{request_id}");
    Text::new(&s).map_err(|_| TopicError::BadAgentId)
}

/// Parses `outpost/v1/agents/{agent_id}/logs/{request_id}` into its agent and request ids.
pub fn parse_logs_topic(topic: &str) -> Result<(&str, &str), TopicError> {
    let rest = topic.strip_prefix(PREFIX).ok_or(TopicError::NotOutpost)?;
    let mut levels = rest.split('/');
    let (Some(agent), Some(LOGS), Some(request), None) =
        (levels.next(), levels.next(), levels.next(), levels.next())
    else {
        return Err(TopicError::UnknownKind);
    };
    if !valid_agent_id(agent) || !valid_agent_id(request) {
        return Err(TopicError::BadAgentId);
    }
    Ok((agent, request))
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/{}", self.agent_id, self.kind.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_name_parses_back_to_its_agent_and_kind() {
        for kind in TopicKind::ALL {
            let t = Topic::new("edge-01.rack_2", kind).unwrap();
            assert_eq!(Topic::parse(&t.name()).unwrap(), t);
        }
        assert_eq!(
            Topic::new("a", TopicKind::Offer).unwrap().name(),
            "outpost/v1/agents/a/offer"
        );
    }

    #[test]
    fn agent_ids_that_would_break_the_topic_are_refused() {
        for bad in ["", "a/b", "+", "#", "a b", &"x".repeat(65)] {
            assert_eq!(
                Topic::new(bad, TopicKind::Cmd),
                Err(TopicError::BadAgentId),
                "{bad}"
            );
        }
        assert_eq!(
            Topic::parse("other/v1/agents/a/cmd"),
            Err(TopicError::NotOutpost)
        );
        assert_eq!(
            Topic::parse("outpost/v1/agents/a/bogus"),
            Err(TopicError::UnknownKind)
        );
    }

    #[test]
    fn a_logs_topic_names_its_agent_and_request_and_parses_back() {
        let t = logs_topic("edge-07", "l-6f1c2a4e").unwrap();
        assert_eq!(t, "outpost/v1/agents/edge-07/logs/l-6f1c2a4e");
        assert_eq!(parse_logs_topic(&t), Ok(("edge-07", "l-6f1c2a4e")));
        let longest = logs_topic(&"a".repeat(64), &"r".repeat(64)).unwrap();
        assert_eq!(longest.len(), LogsTopicName::LIMIT);
        assert_eq!(logs_topic("edge-07", "a/b"), Err(TopicError::BadAgentId));
        assert_eq!(logs_topic("edge-07", "+"), Err(TopicError::BadAgentId));
        assert_eq!(
            parse_logs_topic("outpost/v1/agents/edge-07/logs"),
            Err(TopicError::UnknownKind)
        );
        assert_eq!(
            parse_logs_topic("outpost/v1/agents/edge-07/logs/x/y"),
            Err(TopicError::UnknownKind)
        );
        // The ordinary parser does not mistake it for one of the fixed kinds.
        assert!(Topic::parse(&t).is_err());
    }

    #[test]
    fn only_state_like_topics_are_retained() {
        let retained: heapless::Vec<&str, 9> = TopicKind::ALL
            .into_iter()
            .filter(|k| k.retain())
            .map(|k| k.as_str())
            .collect();
        assert_eq!(retained.as_slice(), ["hello", "offer", "state"]);
        assert_eq!(
            TopicKind::Status.all_agents_filter(),
            "outpost/v1/agents/+/status"
        );
    }
}

/// A broker address from an `mqtt://host[:port]` or `mqtts://host[:port]` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerAddr<'a> {
    /// Host name or address (IPv6 without its brackets).
    pub host: &'a str,
    /// Port: 1883 for `mqtt://`, 8883 for `mqtts://` when absent.
    pub port: u16,
    /// `mqtts://`: TLS.
    pub tls: bool,
}

/// Parses a broker URL (IPv6 hosts in brackets). The error says what is wrong; callers add the
/// key and the value.
pub fn parse_broker_url(url: &str) -> Result<BrokerAddr<'_>, &'static str> {
    let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false, 1883)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true, 8883)
    } else {
        return Err("must start with mqtt:// or mqtts://");
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':').filter(|(h, _)| !h.ends_with(':')) {
        Some((h, p)) if !rest.ends_with(']') => (
            h,
            p.parse::<u16>()
                .map_err(|_| "the port is not a number 1-65535")?,
        ),
        _ => (rest, default_port),
    };
    if host.is_empty() || port == 0 {
        return Err("needs a host (and a port other than 0)");
    }
    Ok(BrokerAddr {
        host: host.trim_start_matches('[').trim_end_matches(']'),
        port,
        tls,
    })
}

#[cfg(test)]
mod broker_url_tests {
    use super::parse_broker_url;

    #[test]
    fn broker_urls_parse_with_a_default_port_and_clear_errors() {
        let addr = |host, port, tls| Ok(super::BrokerAddr { host, port, tls });
        assert_eq!(
            parse_broker_url("mqtt://10.0.0.5"),
            addr("10.0.0.5", 1883, false)
        );
        assert_eq!(
            parse_broker_url("mqtt://[::1]:1884/"),
            addr("::1", 1884, false)
        );
        assert_eq!(parse_broker_url("mqtt://[::1]"), addr("::1", 1883, false));
        assert_eq!(
            parse_broker_url("mqtts://b.example"),
            addr("b.example", 8883, true)
        );
        assert_eq!(parse_broker_url("mqtts://b:18883"), addr("b", 18883, true));
        assert!(
            parse_broker_url("http://x")
                .unwrap_err()
                .contains("mqtt://")
        );
        assert!(parse_broker_url("mqtt://x:0").is_err());
        assert!(
            parse_broker_url("mqtt://x:port")
                .unwrap_err()
                .contains("port")
        );
    }
}
