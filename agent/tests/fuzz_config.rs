//! Fuzzing the agent's configuration parser with proptest: arbitrary text and mutations of the
//! shipped default config. It must answer Ok or an error naming something, never panic.
//! Cases: `OUTPOST_FUZZ_CASES` (default 5,000; see protocol/tests/fuzz.rs).

use std::path::Path;

use outpost_agent::config::Config;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("OUTPOST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

const SHIPPED: &str = include_str!("../../packaging/etc/agent.toml");

fn parse(text: &str) {
    if let Err(e) = Config::parse(text, Path::new("agent.toml")) {
        assert!(!e.to_string().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_config_parser(text in ".{0,300}") {
        parse(&text);
    }

    #[test]
    fn a_mutated_shipped_config_never_panics_the_parser(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>()), 1..6),
    ) {
        let mut chars: Vec<char> = SHIPPED.chars().collect();
        for (at, c) in edits {
            let i = at.index(chars.len());
            chars[i] = c;
        }
        parse(&chars.into_iter().collect::<String>());
    }

    #[test]
    fn any_value_of_any_key_is_accepted_or_named(
        key in proptest::sample::select(vec![
            "agent_id", "brokers", "state_dir", "docker", "port_range", "offer_interval_seconds",
            "outbox_capacity",
        ]),
        value in prop_oneof![
            "\"[^\"\\\\]{0,80}\"".prop_map(|s| s),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            "\\[\"[a-z:/0-9.]{0,30}\"\\]".prop_map(|s| s),
        ],
    ) {
        let text = format!("{key} = {value}\n");
        if let Err(e) = Config::parse(&text, Path::new("agent.toml")) {
            let shown = e.to_string();
            prop_assert!(shown.contains(key) || shown.contains("line"), "{text}: {shown}");
        }
    }
}
