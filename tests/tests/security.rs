//! Mutual TLS to the broker with the shipped mosquitto config and ACL (`packaging/mosquitto/`)
//! and certificates from `outpost-bridge issue-certs`: the real bridge and agents connect; an
//! agent without a certificate, with one from another CA, or with an expired one is refused;
//! agent A can neither publish as agent B nor read B's commands.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use outpost_protocol::*;
use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::bridge_sim::BridgeSim;
use outpost_tests::mosquitto::Broker;
use outpost_tests::{bin_path, process, wait};

const LONG: Duration = Duration::from_secs(60);

/// Runs `outpost-bridge issue-certs --dir DIR ARGS...`.
fn issue(dir: &Path, args: &[&str]) {
    let bin = bin_path::path("outpost-bridge").unwrap();
    process::run(
        Command::new(bin)
            .arg("issue-certs")
            .arg("--dir")
            .arg(dir)
            .args(args),
    )
    .unwrap();
}

/// The `[broker_tls]` table for the CA in `ca_dir` and the identity `cert` (base name of the
/// .pem and .key in `cert_dir`), or no client certificate.
fn tls_toml(ca_dir: &Path, cert: Option<(&Path, &str)>) -> String {
    let mut t = format!(
        "[broker_tls]\nca_file = \"{}\"\n",
        ca_dir.join("ca.pem").display()
    );
    if let Some((dir, name)) = cert {
        t.push_str(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.join(format!("{name}.pem")).display(),
            dir.join(format!("{name}.key")).display()
        ));
    }
    t
}

fn listed(bridge: &Bridge, id: &str) -> bool {
    bridge
        .mesos_get("/master/slaves")
        .ok()
        .and_then(|a| {
            a.json()["slaves"]
                .as_array()
                .map(|s| s.iter().any(|s| s["id"] == id))
        })
        .unwrap_or(false)
}

#[test]
fn only_agents_with_a_valid_certificate_of_the_fleet_ca_get_in() {
    let certs = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let good = Agent::unique_id("tls-good");
    let old = Agent::unique_id("tls-old");
    let rogue = Agent::unique_id("tls-rogue");
    issue(certs.path(), &["--agent", &good]);
    issue(
        certs.path(),
        &["--agents-only", "--agent", &old, "--days", "0"],
    );
    issue(other.path(), &["--agent", &rogue]);
    let broker = Broker::start_tls(certs.path()).unwrap();
    assert!(broker.url().starts_with("mqtts://"));
    let bridge = Bridge::start(
        &broker.url(),
        &tls_toml(certs.path(), Some((certs.path(), "bridge"))),
    )
    .unwrap();
    let agent = Agent::start(
        &good,
        &broker.url(),
        (21560, 21569),
        &tls_toml(certs.path(), Some((certs.path(), &format!("agent-{good}")))),
    )
    .unwrap();
    wait::until(
        "the agent with a valid certificate at the bridge",
        LONG,
        || listed(&bridge, &good).then_some(()),
    )
    .unwrap();
    assert!(agent.log().contains("connected to the broker"));

    // Refused: no certificate, a certificate of another CA, an expired certificate.
    let cases = [
        ("tls-nocert", tls_toml(certs.path(), None)),
        (
            rogue.as_str(),
            tls_toml(
                certs.path(),
                Some((other.path(), &format!("agent-{rogue}"))),
            ),
        ),
        (
            old.as_str(),
            tls_toml(certs.path(), Some((certs.path(), &format!("agent-{old}")))),
        ),
    ];
    for (i, (name, toml)) in cases.iter().enumerate() {
        let id = if name.starts_with("tls-nocert") {
            Agent::unique_id(name)
        } else {
            name.to_string()
        };
        let base = 21570 + 10 * i as u16;
        let bad = Agent::start(&id, &broker.url(), (base, base + 9), toml).unwrap();
        wait::until(&format!("{name}: two refused connections"), LONG, || {
            (bad.log().matches("broker connection failed").count() >= 2).then_some(())
        })
        .unwrap();
        assert!(
            !bad.log().contains("connected to the broker host"),
            "{}",
            bad.log()
        );
        assert!(!listed(&bridge, &id), "{name} got in");
    }
}

#[test]
fn an_agent_can_neither_publish_as_another_nor_read_its_commands() {
    let certs = tempfile::tempdir().unwrap();
    let a = Agent::unique_id("acl-a");
    let b = Agent::unique_id("acl-b");
    issue(certs.path(), &["--agent", &a, "--agent", &b]);
    let broker = Broker::start_tls(certs.path()).unwrap();
    let mut bridge = BridgeSim::connect(&broker).unwrap();

    // A client holding A's certificate.
    let options = broker
        .mqtt_options(&format!("outpost-agent-{a}"), &format!("agent-{a}"))
        .unwrap();
    let (client, mut connection) = rumqttc::Client::new(options, 64);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(e) => {
                    if tx.send(e).is_err() {
                        return;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    let cmd = |id: &str| Topic::new(id, TopicKind::Cmd).unwrap().to_string();
    let offer_topic = |id: &str| Topic::new(id, TopicKind::Offer).unwrap().to_string();
    client
        .subscribe(cmd(&b), rumqttc::QoS::AtLeastOnce)
        .unwrap();
    client
        .subscribe(cmd(&a), rumqttc::QoS::AtLeastOnce)
        .unwrap();
    // mosquitto (MQTT 3.1.1) grants both in the SUBACK and filters at delivery, below.
    let mut subacks = 0;
    wait::until("both SUBACKs", LONG, || {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) =
            rx.recv_timeout(Duration::from_millis(200))
        {
            subacks += 1;
        }
        (subacks >= 2).then_some(())
    })
    .unwrap();

    // A publishes an offer as B, then its own, on one connection (so in this order).
    let offer = encode_to_vec_offer(&a);
    client
        .publish(
            offer_topic(&b),
            rumqttc::QoS::AtLeastOnce,
            true,
            offer.clone(),
        )
        .unwrap();
    client
        .publish(offer_topic(&a), rumqttc::QoS::AtLeastOnce, true, offer)
        .unwrap();
    wait::until("A's own offer at the bridge", LONG, || bridge.offer(&a)).unwrap();
    assert!(bridge.offer(&b).is_none(), "A published as B");

    // The bridge commands B, then A: A's client gets only A's.
    bridge
        .send(&b, CommandKind::Reconcile(Reconcile::default()))
        .unwrap();
    bridge
        .send(&a, CommandKind::Reconcile(Reconcile::default()))
        .unwrap();
    let mut got = Vec::new();
    wait::until("A's command", LONG, || {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) =
            rx.recv_timeout(Duration::from_millis(200))
        {
            got.push(p.topic);
        }
        got.contains(&cmd(&a)).then_some(())
    })
    .unwrap();
    assert_eq!(got, vec![cmd(&a)], "A read B's command");
}

/// An offer from agent `id` as CBOR.
fn encode_to_vec_offer(id: &str) -> Vec<u8> {
    let mut offer = outpost_protocol::examples::offer();
    offer.agent_id = AgentId::new(id).unwrap();
    codec::encode_to_vec(&offer)
}
