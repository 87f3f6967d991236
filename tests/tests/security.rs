//! Mutual TLS to the broker with the shipped mosquitto config and ACL (`packaging/mosquitto/`)
//! and certificates from `outpost-bridge issue-certs`: the real bridge and agents connect; an
//! agent without a certificate, with one from another CA, or with an expired one is refused;
//! agent A can neither publish as agent B nor read B's commands.

use std::path::Path;
use std::process::Command as Process;
use std::time::Duration;

use outpost_protocol::*;
use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::bridge_sim::BridgeSim;
use outpost_tests::http::curl_tls;
use outpost_tests::mosquitto::Broker;
use outpost_tests::{bin_path, process, wait};

const LONG: Duration = Duration::from_secs(60);

/// Runs `outpost-bridge issue-certs --dir DIR ARGS...`.
fn issue(dir: &Path, args: &[&str]) {
    let bin = bin_path::path("outpost-bridge").unwrap();
    process::run(
        Process::new(bin)
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
                // The broker stays up in these tests: a lost connection ends the reader.
                Err(_) => return,
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

/// `outpost-bridge signing-key --file F`: makes (or reads) the key, returns its public key.
fn signing_key(file: &Path) -> String {
    let bin = bin_path::path("outpost-bridge").unwrap();
    process::stdout(Process::new(bin).arg("signing-key").arg("--file").arg(file))
        .unwrap()
        .trim()
        .to_string()
}

/// Messages a spy saw: (topic, payload).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A plain MQTT client watching every agent's commands and replies.
struct Spy {
    client: rumqttc::Client,
    seen: Seen,
}

impl Spy {
    fn connect(broker: &Broker) -> Self {
        let options = broker.mqtt_options("spy", "none").unwrap();
        let (client, mut connection) = rumqttc::Client::new(options, 256);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let s = seen.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        s.lock().unwrap().push((p.topic, p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    // The broker stays up in these tests: a lost connection ends the reader.
                    Err(_) => return,
                }
            }
        });
        for kind in [TopicKind::Cmd, TopicKind::Reply] {
            client
                .subscribe(
                    kind.all_agents_filter().to_string(),
                    rumqttc::QoS::AtLeastOnce,
                )
                .unwrap();
        }
        for _ in 0..2 {
            rx.recv_timeout(LONG).expect("a SUBACK");
        }
        Self { client, seen }
    }

    fn commands(&self, agent: &str) -> Vec<(Command, Vec<u8>)> {
        let topic = Topic::new(agent, TopicKind::Cmd).unwrap().to_string();
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t == topic)
            .filter_map(|(_, b)| Some((decode::<Command>(b).ok()?, b.clone())))
            .collect()
    }

    fn reply(&self, command_id: &str) -> Option<CommandReply> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.ends_with("/reply"))
            .filter_map(|(_, b)| decode::<CommandReply>(b).ok())
            .rfind(|r| r.command_id == command_id)
    }

    fn publish(&self, agent: &str, bytes: Vec<u8>) {
        let topic = Topic::new(agent, TopicKind::Cmd).unwrap().to_string();
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, bytes)
            .unwrap();
    }
}

fn rejection(r: &CommandReply) -> (RejectCode, String) {
    match &r.outcome {
        Outcome::Rejected(x) => (x.code, x.message.to_string()),
        Outcome::Accepted => panic!("accepted: {r:?}"),
    }
}

#[test]
fn signed_commands_run_and_forged_replayed_misdirected_ones_are_refused() {
    outpost_tests::image::ensure().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let old = signing_key(&keys.path().join("old.pem"));
    let new = signing_key(&keys.path().join("new.pem"));
    assert_eq!(old.len(), 44, "base64 of 32 bytes: {old}");
    let key_file = keys.path().join("signing.pem");
    std::fs::copy(keys.path().join("old.pem"), &key_file).unwrap();
    let broker = Broker::start().unwrap();
    let spy = Spy::connect(&broker);
    let mut bridge = Bridge::start(
        &broker.url(),
        &format!("command_signing_key = \"{}\"", key_file.display()),
    )
    .unwrap();
    let trust = format!("[commands]\ntrusted_keys = [\"{old}\", \"{new}\"]\n");
    let a = Agent::unique_id("signed-a");
    let b = Agent::unique_id("signed-b");
    let agent_a = Agent::start(
        &a,
        &broker.url(),
        (21600, 21609),
        &format!("{trust}[attributes]\nrole = \"a\"\n"),
    )
    .unwrap();
    let agent_b = Agent::start(&b, &broker.url(), (21610, 21619), &trust).unwrap();
    let app = format!(
        r#"{{"id": "/signed", "instances": 1, "cpus": 0.05, "mem": 16,
            "constraints": [["role", "CLUSTER", "a"]],
            "container": {{"type": "DOCKER", "docker": {{"image": "{}", "network": "BRIDGE"}},
                           "portMappings": [{{"containerPort": 80, "hostPort": 0}}]}}}}"#,
        outpost_tests::image::TEST_IMAGE
    );
    let created = bridge.request("POST", "/v2/apps", Some(&app)).unwrap();
    assert_eq!(created.status, 201, "{}", created.text);
    let running = |bridge: &Bridge, n: u64| {
        wait::until(&format!("{n} running"), LONG, || {
            (bridge.json("/v2/apps/signed")["app"]["tasksRunning"].as_u64()? >= n).then_some(())
        })
        .unwrap()
    };
    running(&bridge, 1);

    // The bridge's launch to A is signed, names A, and ran.
    let (launch, bytes) = spy
        .commands(&a)
        .into_iter()
        .find(|(c, _)| matches!(c.kind, CommandKind::Launch(_)))
        .expect("a launch to A");
    assert!(launch.signature.is_some());
    assert_eq!(
        launch.agent_id.as_ref().map(|x| x.as_str()),
        Some(a.as_str())
    );

    // The same bytes again: a replay, refused with a reason, nothing launched twice.
    spy.publish(&a, bytes.clone());
    let id = launch.command_id.to_string();
    let replay = wait::until("the replay refused", LONG, || {
        spy.reply(&id)
            .filter(|r| matches!(r.outcome, Outcome::Rejected(_)))
    })
    .unwrap();
    let (code, msg) = rejection(&replay);
    assert_eq!(code, RejectCode::Replay, "{msg}");
    assert_eq!(agent_a.containers().unwrap().len(), 1);

    // A's command sent to B: refused by B, it names the other agent.
    spy.publish(&b, bytes);
    let b_reply = Topic::new(&b, TopicKind::Reply).unwrap().to_string();
    let refused = wait::until("B's refusal", LONG, || {
        spy.seen.lock().unwrap().iter().find_map(|(t, p)| {
            let r = decode::<CommandReply>(p).ok()?;
            (t == &b_reply && r.command_id == id.as_str()).then_some(r)
        })
    })
    .unwrap();
    let (code, msg) = rejection(&refused);
    assert_eq!(code, RejectCode::Unauthenticated, "{msg}");
    assert!(msg.contains(&a), "{msg}");
    assert!(agent_b.containers().unwrap().is_empty());

    // A forged, unsigned command: refused, and the agent logs it.
    let forged = Command {
        version: PROTOCOL_VERSION,
        command_id: CommandId::new("forged-1").unwrap(),
        issued_at_ms: 0,
        kind: CommandKind::Drain(Drain {
            policy: DrainPolicy::KillAll,
        }),
        agent_id: Some(AgentId::new(&a).unwrap()),
        signature: None,
        epoch: None,
    };
    spy.publish(&a, codec::encode_to_vec(&forged));
    let r = wait::until("the forged command refused", LONG, || spy.reply("forged-1")).unwrap();
    let (code, msg) = rejection(&r);
    assert_eq!(code, RejectCode::Unauthenticated);
    assert!(msg.contains("not signed"), "{msg}");
    wait::until("the refusal in A's log", LONG, || {
        agent_a.log().contains("command refused").then_some(())
    })
    .unwrap();
    assert_eq!(agent_a.containers().unwrap().len(), 1, "not drained");

    // Key rotation: the bridge now signs with the new key; the agents trust both.
    std::fs::copy(keys.path().join("new.pem"), &key_file).unwrap();
    bridge.restart().unwrap();
    let scaled = bridge
        .request("PUT", "/v2/apps/signed", Some(r#"{"instances": 2}"#))
        .unwrap();
    assert!(scaled.status < 300, "{}", scaled.text);
    running(&bridge, 2);
    assert!(
        bridge.log().contains(&new),
        "the bridge names its new public key"
    );
}

#[test]
fn the_apis_take_users_and_tokens_by_role_over_tls_and_refuse_the_rest() {
    let certs = tempfile::tempdir().unwrap();
    issue(certs.path(), &[]);
    let ca = certs.path().join("ca.pem");
    let broker = Broker::start().unwrap();
    let token = "read-token-0123456789";
    let bridge = Bridge::start_no_wait(
        &broker.url(),
        &format!(
            "[[api_users]]\nusername = \"ops\"\npassword = \"pw-admin\"\nrole = \"admin\"\n\
             [[api_tokens]]\ntoken = \"{token}\"\nrole = \"read\"\n\
             [api_tls]\ncert_file = \"{0}/broker.pem\"\nkey_file = \"{0}/broker.key\"\n",
            certs.path().display()
        ),
    )
    .unwrap();
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", bridge.port());
    let mesos = |path: &str| format!("https://127.0.0.1:{}{path}", bridge.mesos_port());
    // /ping stays open for health checkers; it answers over TLS only.
    wait::until("/ping over TLS", LONG, || {
        (curl_tls(&ca, &[&url("/ping")]).0 == 200).then_some(())
    })
    .unwrap();
    let plain = Process::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{}/v2/apps", bridge.port()))
        .output()
        .unwrap();
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout),
        "200",
        "plain HTTP got in"
    );

    // No credentials, or wrong ones: 401 with WWW-Authenticate.
    let (code, text) = curl_tls(&ca, &[&url("/v2/apps")]);
    assert_eq!(code, 401, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{text}"
    );
    let (code, _) = curl_tls(&ca, &["-u", "ops:wrong", &url("/v2/apps")]);
    assert_eq!(code, 401);
    let (code, _) = curl_tls(&ca, &[&mesos("/master/state")]);
    assert_eq!(code, 401, "the Mesos API too");

    // The read token reads, and may not write.
    let auth = format!("Authorization: token={token}");
    let (code, text) = curl_tls(&ca, &["-H", &auth, &url("/v2/apps")]);
    assert_eq!(code, 200, "{text}");
    let (code, _) = curl_tls(&ca, &["-H", &auth, &mesos("/master/state")]);
    assert_eq!(code, 200);
    let app = r#"{"id": "/authz", "instances": 0, "cpus": 0.1, "mem": 16,
        "container": {"type": "DOCKER", "docker": {"image": "x"}}}"#;
    let post = |who: &[&str]| {
        let mut args: Vec<&str> = who.to_vec();
        args.extend([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            app,
        ]);
        let u = url("/v2/apps");
        args.push(&u);
        curl_tls(&ca, &args)
    };
    let (code, text) = post(&["-H", &auth]);
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("read role"), "{text}");
    // The admin user writes.
    let (code, text) = post(&["-u", "ops:pw-admin"]);
    assert_eq!(code, 201, "{text}");
}

#[test]
fn bad_api_settings_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bin = bin_path::path("outpost-bridge").unwrap();
    for (toml, key) in [
        (
            "[api_tls]\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/nonexistent.key\"\n",
            "api_tls",
        ),
        (
            "[[api_tokens]]\ntoken = \"short\"\nrole = \"read\"\n",
            "api_tokens[0].token",
        ),
        (
            "[[api_users]]\nusername = \"a\"\npassword = \"b\"\nrole = \"root\"\n",
            "role",
        ),
    ] {
        let path = dir.path().join("bridge.toml");
        std::fs::write(&path, toml).unwrap();
        let out = Process::new(&bin)
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{toml}");
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn oversized_requests_and_messages_are_refused_and_nothing_stops() {
    // HTTP: bodies over 1 MiB, too many ids per request.
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    // 8 MiB: far more than the socket buffers hold, so a bridge that answered after reading
    // 1 MiB and closed would reset the connection under the client's writes (seen with 2 MiB
    // under load); the client reads the 413 because the bridge reads the body on.
    let big = format!(
        "{{\"id\": \"/big\", \"labels\": {{\"x\": \"{}\"}}}}",
        "a".repeat(8 << 20)
    );
    for _ in 0..3 {
        let r = bridge.request("POST", "/v2/apps", Some(&big)).unwrap();
        assert_eq!(r.status, 413, "{}", r.text);
        assert!(
            r.text.contains("over the limit of 1048576 bytes"),
            "{}",
            r.text
        );
        let (code, text) =
            outpost_tests::mesos_client::call(bridge.mesos_port(), None, "application/json", &big);
        assert_eq!(code, 413, "{text}");
    }
    // A body declared beyond what the bridge reads on is refused before it is sent.
    {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", bridge.port())).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            tcp,
            "POST /v2/apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            64 << 20
        )
        .unwrap();
        let mut head = [0u8; 512];
        let n = tcp.read(&mut head).unwrap();
        let head = String::from_utf8_lossy(&head[..n]);
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");
        assert!(head.contains("67108864 bytes"), "{head}");
    }
    let ids: Vec<String> = (0..10_001).map(|i| format!("\"t{i}\"")).collect();
    let r = bridge
        .request(
            "POST",
            "/v2/tasks/delete",
            Some(&format!("{{\"ids\": [{}]}}", ids.join(","))),
        )
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("at most 10000"), "{}", r.text);
    assert_eq!(bridge.get("/ping").unwrap().status, 200, "still serving");

    // MQTT: the shipped broker config drops a packet over 129 KiB and disconnects its sender;
    // the agent it was meant for stays connected and takes the next command.
    let certs = tempfile::tempdir().unwrap();
    let a = Agent::unique_id("big-a");
    issue(certs.path(), &["--agent", &a]);
    let tls = Broker::start_tls(certs.path()).unwrap();
    let mut sim = BridgeSim::connect(&tls).unwrap();
    let agent = Agent::start(
        &a,
        &tls.url(),
        (21620, 21629),
        &tls_toml(certs.path(), Some((certs.path(), &format!("agent-{a}")))),
    )
    .unwrap();
    wait::until("A's offer", LONG, || sim.offer(&a)).unwrap();
    let options = tls.mqtt_options("big-sender", "bridge").unwrap();
    let (client, mut connection) = rumqttc::Client::new(options, 8);
    let topic = Topic::new(&a, TopicKind::Cmd).unwrap().to_string();
    client
        .publish(
            topic,
            rumqttc::QoS::AtLeastOnce,
            false,
            vec![0xa5u8; 200 * 1024],
        )
        .unwrap();
    let mut dropped = false;
    for event in connection.iter().take(20) {
        if event.is_err() {
            dropped = true;
            break;
        }
    }
    assert!(
        dropped,
        "the broker disconnects the sender of an oversized packet"
    );
    let reply = sim
        .call(&a, CommandKind::Reconcile(Reconcile::default()))
        .unwrap();
    assert_eq!(reply.outcome, Outcome::Accepted);
    assert_eq!(
        agent.log().matches("connected to the broker host").count(),
        1,
        "the agent never lost its session: {}",
        agent.log()
    );
}
