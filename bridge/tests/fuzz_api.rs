//! Fuzzing the bridge's JSON inputs with proptest: Marathon app definitions (arbitrary bytes,
//! arbitrary JSON, mutations of the README example) and Mesos scheduler calls (arbitrary JSON
//! as SUBSCRIBE and as every call of a subscribed framework). Nothing may panic; what is refused
//! is refused with a message. Cases: `OUTPOST_FUZZ_CASES` (default 5,000).

use outpost_bridge::app::AppDefinition;
use outpost_bridge::core::Core;
use outpost_bridge::core::calls::Call;
use proptest::prelude::*;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("OUTPOST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

const EXAMPLE: &str = include_str!("../../docs/examples/nginx.json");

/// Any JSON value, a few levels deep, with the field names the APIs read mixed in.
fn json_value() -> impl Strategy<Value = Value> {
    let names = proptest::sample::select(vec![
        "id",
        "type",
        "instances",
        "cpus",
        "mem",
        "container",
        "docker",
        "image",
        "portMappings",
        "containerPort",
        "hostPort",
        "healthChecks",
        "protocol",
        "constraints",
        "framework_id",
        "value",
        "subscribe",
        "framework_info",
        "accept",
        "offer_ids",
        "operations",
        "launch",
        "task_infos",
        "resources",
        "scalar",
        "ranges",
        "range",
        "begin",
        "end",
        "decline",
        "filters",
        "refuse_seconds",
        "kill",
        "task_id",
        "agent_id",
        "acknowledge",
        "uuid",
        "reconcile",
        "tasks",
        "message",
        "shutdown",
        "executor_id",
        "health_check",
        "http",
        "ACCEPT",
        "DECLINE",
        "KILL",
        "RECONCILE",
        "ACKNOWLEDGE",
        "LAUNCH",
        "LAUNCH_GROUP",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-zA-Z0-9_ :/.-]{0,12}".prop_map(Value::String),
        names.clone().prop_map(|n| Value::String(n.to_string())),
    ];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((names.clone(), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn parse_app(bytes: &[u8]) {
    if let Ok(app) = AppDefinition::parse(bytes, None) {
        let _ = app.task_spec("fuzz.1");
    }
}

/// A core with one agent's offer and one subscribed framework; returns it and the framework id.
fn core_with_framework() -> (Core, String) {
    let mut core = Core::default();
    let sub = json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": {
        "user": "root", "name": "fuzz" } } });
    let id = core
        .subscribe(
            1_000,
            &Call::parse(sub.to_string().as_bytes()).unwrap(),
            "s",
        )
        .unwrap();
    core.offer_now(1_000);
    (core, id)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_app_parser(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        parse_app(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics_the_app_parser(v in json_value()) {
        parse_app(v.to_string().as_bytes());
    }

    #[test]
    fn a_mutated_readme_app_never_panics_the_parser(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        parse_app(&bytes);
    }

    #[test]
    fn arbitrary_scheduler_calls_never_panic_the_core(v in json_value(), kind in proptest::sample::select(vec![
        "ACCEPT", "DECLINE", "REVIVE", "SUPPRESS", "KILL", "SHUTDOWN", "ACKNOWLEDGE",
        "RECONCILE", "MESSAGE", "REQUEST", "TEARDOWN", "BOGUS",
    ])) {
        let (mut core, id) = core_with_framework();
        // As SUBSCRIBE: parsed as the HTTP edge parses it, then (if it parses) subscribed.
        let mut sub = v.clone();
        if let Value::Object(m) = &mut sub {
            m.insert("type".into(), json!("SUBSCRIBE"));
        }
        match Call::parse(sub.to_string().as_bytes()) {
            Ok(c) => { let _ = core.subscribe(2_000, &c, "s2"); }
            Err(e) => prop_assert!(!e.message.is_empty()),
        }
        let mut call = v.clone();
        if let Value::Object(m) = &mut call {
            m.insert("type".into(), json!(kind));
            m.insert("framework_id".into(), json!({ "value": id }));
        }
        let call = match Call::parse(call.to_string().as_bytes()) {
            Ok(c) => c,
            Err(e) => {
                prop_assert!(!e.message.is_empty());
                return Ok(());
            }
        };
        if let Err(e) = core.call(2_000, Some("s"), &call) {
            prop_assert!(!e.message.is_empty());
        }
        // The same call again: after a TEARDOWN (or a re-subscription) the framework or its
        // stream is gone, which is an answer, never a panic.
        if let Err(e) = core.call(2_001, Some("s"), &call) {
            prop_assert!(!e.message.is_empty());
        }
    }
}
