//! High availability against a real ZooKeeper ensemble (Debian's `zookeeper`, three servers on
//! loopback): the bridge's ZooKeeper store, its fencing by leadership epoch, and failures of
//! ZooKeeper servers.

use std::time::Duration;

use serde_json::json;

use outpost_bridge::ha::{self, ZkUrl};
use outpost_bridge::store::{StateStore, StoreError, Table, Write, ZkStore};
use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::http::curl_tls;
use outpost_tests::image;
use outpost_tests::mosquitto::Broker;
use outpost_tests::wait;
use outpost_tests::zookeeper::Ensemble;

const LONG: Duration = Duration::from_secs(90);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A session and a store fenced at a freshly taken epoch: what a newly elected bridge has.
fn leader_store(rt: &tokio::runtime::Runtime, url: &ZkUrl) -> (ZkStore, ha::Epoch) {
    let client = rt
        .block_on(ha::connect(url, Duration::from_secs(4)))
        .unwrap();
    let epoch = rt.block_on(ha::take_epoch(&client, url)).unwrap();
    let store = ZkStore::open(client, url.clone(), rt.handle().clone(), epoch).unwrap();
    (store, epoch)
}

/// `n` bytes that do not compress (a linear congruential sequence's high bytes).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

fn put(table: Table, key: &str, bytes: Vec<u8>) -> Write {
    Write {
        table,
        key: key.into(),
        value: Some(bytes),
    }
}

#[test]
fn the_zookeeper_store_keeps_records_and_refuses_a_deposed_leader() {
    let mut zk = Ensemble::start(3).unwrap();
    let url = ZkUrl::parse(&zk.url("/outpost")).unwrap();
    let rt = runtime();
    let (mut first, e1) = leader_store(&rt, &url);
    assert_eq!(e1.number, 1);

    // Records of every kind of key, some big enough that one commit takes several requests
    // (each at most 512 KiB; these do not compress), and 3,000 small ones.
    let mut writes = vec![
        put(Table::Apps, "/web", br#"{"id":"/web"}"#.to_vec()),
        put(Table::Apps, "/ops/db", br#"{"id":"/ops/db"}"#.to_vec()),
    ];
    for i in 0..3 {
        writes.push(put(Table::Apps, &format!("/big/{i}"), noise(400 * 1024, i)));
    }
    for i in 0..3000 {
        writes.push(put(
            Table::Tasks,
            &format!("web.{i:05}"),
            format!(r#"{{"n":{i}}}"#).into_bytes(),
        ));
    }
    first.commit(&writes).unwrap();
    let apps = first.load(Table::Apps).unwrap();
    let keys: Vec<&str> = apps.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["/big/0", "/big/1", "/big/2", "/ops/db", "/web"]);
    assert_eq!(apps[0].1.len(), 400 * 1024);
    assert_eq!(first.load(Table::Tasks).unwrap().len(), 3000);

    // Updates and deletes; a delete of a record that is not there is nothing.
    first
        .commit(&[
            put(Table::Apps, "/web", br#"{"id":"/web","v":2}"#.to_vec()),
            Write::delete(Table::Apps, "/ops/db"),
            Write::delete(Table::Apps, "/never"),
        ])
        .unwrap();
    let apps = first.load(Table::Apps).unwrap();
    assert_eq!(apps.len(), 4);
    assert_eq!(apps[3], ("/web".into(), br#"{"id":"/web","v":2}"#.to_vec()));

    // A big record that compresses (as JSON does) is stored compressed and read back whole.
    let json = format!("{{\"env\":\"{}\"}}", "edge-site-".repeat(200_000)).into_bytes();
    assert!(json.len() > 1 << 20);
    first
        .commit(&[put(Table::Apps, "/json", json.clone())])
        .unwrap();
    let apps = first.load(Table::Apps).unwrap();
    assert_eq!(apps.iter().find(|(k, _)| k == "/json").unwrap().1, json);
    first
        .commit(&[Write::delete(Table::Apps, "/json")])
        .unwrap();

    // A record ZooKeeper cannot hold even compressed is refused by name, and nothing of its
    // commit applied.
    let e = first
        .commit(&[
            put(Table::Apps, "/small", b"{}".to_vec()),
            put(Table::Apps, "/huge", noise(1 << 20, 7)),
        ])
        .unwrap_err();
    assert!(
        e.to_string().contains("/huge") && e.to_string().contains("bytes"),
        "{e}"
    );
    assert!(
        first
            .load(Table::Apps)
            .unwrap()
            .iter()
            .all(|(k, _)| k != "/small")
    );

    // A restarted bridge finds all of it (a new session, the next epoch).
    let (mut second, e2) = leader_store(&rt, &url);
    assert_eq!(e2.number, 2);
    assert_eq!(second.load(Table::Tasks).unwrap().len(), 3000);
    // It knows which records exist: updating one is not a failed create.
    second
        .commit(&[put(Table::Tasks, "web.00001", b"{}".to_vec())])
        .unwrap();

    // The first bridge was deposed by that epoch: its commits are refused, as fenced.
    let refused = first.commit(&[put(Table::Apps, "/web", b"{}".to_vec())]);
    assert!(matches!(refused, Err(StoreError::Fenced(_))), "{refused:?}");
    let apps = second.load(Table::Apps).unwrap();
    assert_eq!(
        apps[3].1,
        br#"{"id":"/web","v":2}"#.to_vec(),
        "nothing of it applied"
    );

    // One ZooKeeper server down (the quorum stands): commits go on. The session may have been
    // on that server and moves to another (ConnectionLoss meanwhile): the owner keeps a failed
    // commit's writes for the next, as this loop does.
    zk.kill(0);
    outpost_tests::wait::until(
        "a commit with one server down",
        Duration::from_secs(20),
        || {
            second
                .commit(&[put(Table::Apps, "/after-kill", b"{}".to_vec())])
                .ok()
        },
    )
    .unwrap();
    zk.start_server(0).unwrap();
    zk.wait_serving(Duration::from_secs(30)).unwrap();
    assert!(
        second
            .load(Table::Apps)
            .unwrap()
            .iter()
            .any(|(k, _)| k == "/after-kill")
    );
}

/// The leading Mesos master as pymesos finds it, through kazoo: `IP:PORT` and the members.
fn python_leader(zk: &Ensemble) -> (String, usize) {
    let script = outpost_tests::bin_path::workspace_root().join("tests/clients/kazoo_leader.py");
    let out = std::process::Command::new(outpost_tests::bin_path::client_python())
        .arg(script)
        .arg(zk.hosts())
        .arg("/mesos")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    (field("leader "), field("members ").parse().unwrap_or(0))
}

/// Runs tests/clients/marathon_failover.py (marathon-python, unchanged) with `args`; its output.
fn marathon_python(args: &[&str]) -> String {
    let script =
        outpost_tests::bin_path::workspace_root().join("tests/clients/marathon_failover.py");
    let out = std::process::Command::new(outpost_tests::bin_path::client_python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "marathon_failover.py {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `outpost-bridge lb` following `urls` in turn, writing `dir/haproxy.cfg` (reloading nothing:
/// the config is what is checked); its log in `dir/lb.log`.
fn lb(urls: &[String], dir: &std::path::Path) -> outpost_tests::process::Guarded {
    let bin = outpost_tests::bin_path::path("outpost-bridge").unwrap();
    let log = std::fs::File::create(dir.join("lb.log")).unwrap();
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("lb")
        .arg("--marathon")
        .arg(urls.join(","))
        .arg("--haproxy-config")
        .arg(dir.join("haproxy.cfg"))
        .args([
            "--reload-command",
            "true",
            "--bind",
            "127.0.0.1",
            "--http-port",
        ])
        .arg(outpost_tests::net::free_port().unwrap().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    outpost_tests::process::Guarded::spawn("outpost-bridge lb", &mut cmd).unwrap()
}

/// The servers in the HAProxy config `lb` wrote to `dir`.
fn lb_servers(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("haproxy.cfg"))
        .unwrap_or_default()
        .matches("    server ")
        .count()
}

/// Every bridge's answer to `GET /v2/leader` (`None` where it has none).
fn leaders(bridges: &[Option<Bridge>]) -> Vec<Option<String>> {
    bridges
        .iter()
        .map(|b| {
            let b = b.as_ref()?;
            let a = b.get("/v2/leader").ok().filter(|a| a.status == 200)?;
            a.json()["leader"].as_str().map(str::to_string)
        })
        .collect()
}

/// The one leader all running bridges agree on, once they do: its index.
fn agreed_leader(bridges: &[Option<Bridge>], deadline: Duration) -> usize {
    let mut seen = Vec::new();
    wait::until("the bridges to agree on a leader", deadline, || {
        seen = leaders(bridges);
        let running: Vec<&Option<String>> = bridges
            .iter()
            .zip(&seen)
            .filter(|(b, _)| b.is_some())
            .map(|(_, l)| l)
            .collect();
        let first = running.first()?.as_ref()?;
        if !running.iter().all(|l| l.as_ref() == Some(first)) {
            return None;
        }
        bridges.iter().position(|b| {
            b.as_ref()
                .is_some_and(|b| *first == format!("127.0.0.1:{}", b.port()))
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {seen:?}"))
}

fn running(b: &Bridge, id: &str) -> u64 {
    b.json(&format!("/v2/apps{id}"))["app"]["tasksRunning"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn three_bridges_elect_one_a_killed_leader_is_replaced_and_no_task_restarts() {
    image::ensure().unwrap();
    let zk = Ensemble::start(3).unwrap();
    let broker = Broker::start().unwrap();
    let group = format!(
        "client_id = \"ha-{}\"\n[ha]\nzk = \"{}\"\nsession_timeout_ms = 2000\n",
        std::process::id(),
        zk.url("/outpost")
    );
    let mut bridges: Vec<Option<Bridge>> = (0..3)
        .map(|_| Some(Bridge::start(&broker.url(), &group).unwrap()))
        .collect();
    let first = agreed_leader(&bridges, LONG);
    let follower = (first + 1) % 3;
    let agent = Agent::start(&Agent::unique_id("ha"), &broker.url(), (21700, 21709), "").unwrap();

    // A deploy through a follower: proxied to the leader, which says who it is.
    let app = json!({
        "id": "/ha-web", "instances": 1, "cpus": 0.05, "mem": 32,
        "container": { "type": "DOCKER",
            "docker": { "image": image::TEST_IMAGE, "network": "BRIDGE" },
            "portMappings": [{ "containerPort": 80, "hostPort": 0 }] },
        "backoffSeconds": 1
    });
    let f = bridges[follower].as_ref().unwrap();
    let a = f
        .request("POST", "/v2/apps", Some(&app.to_string()))
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text);
    let leader_port = bridges[first].as_ref().unwrap().port();
    assert_eq!(
        a.header("x-marathon-leader"),
        Some(format!("http://127.0.0.1:{leader_port}").as_str())
    );
    wait::until("the task RUNNING", LONG, || {
        (running(f, "/ha-web") == 1).then_some(())
    })
    .unwrap();
    let containers = agent.containers().unwrap();
    assert_eq!(containers.len(), 1);

    // The UI's list of bridges, asked of a follower (proxied): the three, the leader first.
    let listed = wait::until("the leader to list the three bridges", LONG, || {
        let v = f.json("/ui/bridges");
        (v["bridges"].as_array()?.len() == 3).then_some(v)
    })
    .unwrap();
    assert_eq!(listed["ha"], true);
    assert_eq!(listed["leader"], format!("127.0.0.1:{leader_port}"));
    assert_eq!(listed["bridges"][0]["marathon"], listed["leader"]);
    assert_eq!(listed["bridges"][0]["leader"], true);
    assert_eq!(listed["bridges"][1]["leader"], false);

    // A follower sends /v2/events to the leader (302), and refuses a request that has been
    // through it already (a proxy loop: 502).
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let events = curl(&[
        "-w",
        "%{http_code} %{redirect_url}",
        &f.url("/v2/events?event_type=status_update_event"),
    ]);
    assert_eq!(
        events,
        format!("302 http://127.0.0.1:{leader_port}/v2/events?event_type=status_update_event")
    );
    let via = format!("X-Marathon-Via: 1.1 127.0.0.1:{}", f.port());
    let looped = curl(&["-w", "%{http_code}", "-H", &via, &f.url("/v2/apps")]);
    assert_eq!(looped, "502");

    // The Mesos endpoints of a follower send clients to the leader, as a Mesos master does.
    let r = f.mesos_get("/master/state?x=1").unwrap();
    assert_eq!(r.status, 307, "{}", r.text);
    let leader_mesos = bridges[first].as_ref().unwrap().mesos_port();
    assert_eq!(
        r.header("location"),
        Some(format!("//127.0.0.1:{leader_mesos}/master/state?x=1").as_str())
    );
    let r = f.mesos_get("/master/redirect").unwrap();
    assert_eq!(r.status, 307, "{}", r.text);
    assert_eq!(
        r.header("location"),
        Some(format!("//127.0.0.1:{leader_mesos}").as_str())
    );

    // A Python client finds the leader as pymesos does (kazoo, the lowest json.info_ node).
    assert_eq!(python_leader(&zk), (format!("127.0.0.1:{leader_mesos}"), 3));

    // marathon-python, through a follower, sees the leader and the task; the load balancer
    // follows the group, the leader first in its list.
    let urls: Vec<String> = bridges
        .iter()
        .map(|b| b.as_ref().unwrap().url(""))
        .collect();
    let before = marathon_python(&["before", "/ha-web", &urls[follower]]);
    assert!(
        before.contains(&format!("leader 127.0.0.1:{leader_port}")),
        "{before}"
    );
    let task = before
        .lines()
        .find_map(|l| l.strip_prefix("task "))
        .unwrap()
        .to_string();
    let lb_dir = tempfile::tempdir().unwrap();
    let _lb = lb(
        &[
            urls[first].clone(),
            urls[follower].clone(),
            urls[(first + 2) % 3].clone(),
        ],
        lb_dir.path(),
    );
    // A second one asks a follower first: its event stream is a redirect to the leader.
    let lb_follower_dir = tempfile::tempdir().unwrap();
    let _lb_follower = lb(&[urls[follower].clone()], lb_follower_dir.path());
    wait::until("the task in both HAProxy configs", LONG, || {
        (lb_servers(lb_dir.path()) == 1 && lb_servers(lb_follower_dir.path()) == 1).then_some(())
    })
    .unwrap();

    // kill -9 of the leader: another is elected within the session timeout and a few seconds,
    // loads the state from ZooKeeper, and the task is neither killed nor started again.
    bridges[first].as_mut().unwrap().kill();
    bridges[first] = None;
    let second = agreed_leader(&bridges, Duration::from_secs(30));
    assert_ne!(second, first);
    let other = (0..3).find(|&i| i != first && i != second).unwrap();
    let new_mesos = bridges[second].as_ref().unwrap().mesos_port();
    wait::until("Python to find the new leader", LONG, || {
        (python_leader(&zk) == (format!("127.0.0.1:{new_mesos}"), 2)).then_some(())
    })
    .unwrap();
    let o = bridges[other].as_ref().unwrap();
    wait::until("the task RUNNING at the new leader", LONG, || {
        (running(o, "/ha-web") == 1).then_some(())
    })
    .unwrap();

    // marathon-python, given the dead leader first, moves on to the other follower: the task
    // is the same, a scale-up lands, the follower's event stream (a redirect) shows it.
    let after = marathon_python(&["after", "/ha-web", &task, &urls[first], &urls[other]]);
    let new_port = bridges[second].as_ref().unwrap().port();
    assert!(
        after.contains(&format!("leader 127.0.0.1:{new_port}")),
        "{after}"
    );
    assert!(after.contains("marathon-python: ok"), "{after}");
    wait::until("two tasks RUNNING", LONG, || {
        (running(o, "/ha-web") == 2).then_some(())
    })
    .unwrap();
    let now = agent.containers().unwrap();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        now.contains(&containers[0]),
        "the first task's container is still there"
    );
    let state = outpost_tests::docker::docker(&[
        "inspect",
        "-f",
        "{{.RestartCount}} {{.State.StartedAt}}",
        &containers[0],
    ])
    .unwrap();
    assert!(state.starts_with("0 "), "{state}");

    // The load balancer moved on from the dead leader and follows the new one.
    wait::until("both tasks in the HAProxy config", LONG, || {
        (lb_servers(lb_dir.path()) == 2).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            std::fs::read_to_string(lb_dir.path().join("lb.log")).unwrap_or_default()
        )
    });
    let log = std::fs::read_to_string(lb_dir.path().join("lb.log")).unwrap();
    assert!(log.contains("following this Marathon API now"), "{log}");
    let log = std::fs::read_to_string(lb_follower_dir.path().join("lb.log")).unwrap();
    assert!(
        !log.contains("/v2/events: HTTP 302"),
        "the redirect to the leader is followed: {log}"
    );
}

#[test]
fn a_leader_cut_from_zookeeper_steps_down_and_its_epoch_is_refused_by_agents() {
    use outpost_protocol::codec::encode_to_vec;
    use outpost_protocol::{
        Command, CommandId, CommandKind, Outcome, PROTOCOL_VERSION, RejectCode,
    };
    use outpost_tests::proxy::TcpProxy;

    image::ensure().unwrap();
    let zk = Ensemble::start(3).unwrap();
    let broker = Broker::start().unwrap();
    let group = |url: String| {
        format!(
            "client_id = \"ha-cut-{}\"\n[ha]\nzk = \"{url}\"\nsession_timeout_ms = 2000\n",
            std::process::id()
        )
    };
    // The first bridge reaches ZooKeeper through proxies the test can cut; it starts alone,
    // so it leads.
    let proxies: Vec<TcpProxy> = (0..zk.len())
        .map(|i| TcpProxy::start(zk.client_port(i)).unwrap())
        .collect();
    let via = proxies
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.port()))
        .collect::<Vec<_>>()
        .join(",");
    let mut bridges: Vec<Option<Bridge>> = vec![Some(
        Bridge::start(&broker.url(), &group(format!("zk://{via}/outpost"))).unwrap(),
    )];
    assert_eq!(agreed_leader(&bridges, LONG), 0);
    for _ in 0..2 {
        bridges.push(Some(
            Bridge::start(&broker.url(), &group(zk.url("/outpost"))).unwrap(),
        ));
    }
    assert_eq!(agreed_leader(&bridges, LONG), 0);
    let agent_id = Agent::unique_id("ha-cut");
    let agent = Agent::start(&agent_id, &broker.url(), (21710, 21719), "").unwrap();
    let app = json!({
        "id": "/cut-web", "instances": 1, "cpus": 0.05, "mem": 32,
        "container": { "type": "DOCKER",
            "docker": { "image": image::TEST_IMAGE, "network": "BRIDGE" },
            "portMappings": [{ "containerPort": 80, "hostPort": 0 }] },
        "backoffSeconds": 1
    });
    let first = bridges[0].take().unwrap();
    let a = first
        .request("POST", "/v2/apps", Some(&app.to_string()))
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text);
    wait::until("the task RUNNING", LONG, || {
        (running(&first, "/cut-web") == 1).then_some(())
    })
    .unwrap();
    let containers = agent.containers().unwrap();

    // Cut from ZooKeeper only (it still reaches the broker): it stops leading at once, and
    // another bridge leads once its session has expired.
    for p in &proxies {
        p.cut();
    }
    wait::until(
        "the cut bridge to stop leading",
        Duration::from_secs(10),
        || {
            let l = first.get("/v2/leader").ok()?;
            (l.status != 200 || l.json()["leader"] != format!("127.0.0.1:{}", first.port()))
                .then_some(())
        },
    )
    .unwrap();
    let second = agreed_leader(&bridges, Duration::from_secs(30));
    assert_ne!(second, 0);
    let leader = bridges[second].as_ref().unwrap();
    wait::until("the task RUNNING at the new leader", LONG, || {
        (running(leader, "/cut-web") == 1).then_some(())
    })
    .unwrap();
    assert_eq!(agent.containers().unwrap(), containers, "no task restarted");

    // The new leader's reconcile carried epoch 2 to the agent: a command of the deposed
    // leader's epoch 1 (as it would send it, had it not stopped) is refused.
    // (A new id each try: a command id the agent has seen is answered as before, not checked
    // again, and the agent may not have had the new leader's reconcile yet.)
    let sim = outpost_tests::bridge_sim::BridgeSim::connect(&broker).unwrap();
    let mut tries = 0;
    let reply = wait::until("the agent to have seen the new epoch", LONG, || {
        tries += 1;
        let id = format!("deposed-{tries}");
        let stale = Command {
            version: PROTOCOL_VERSION,
            command_id: CommandId::new(&id).unwrap(),
            issued_at_ms: 0,
            kind: CommandKind::Reconcile(Default::default()),
            agent_id: None,
            signature: None,
            epoch: Some(1),
        };
        sim.send_raw(&agent_id, encode_to_vec(&stale)).ok()?;
        let r = sim.reply(&id, Duration::from_secs(5)).ok()?;
        matches!(&r.outcome, Outcome::Rejected(x) if x.code == RejectCode::StaleEpoch).then_some(r)
    })
    .unwrap();
    assert!(
        format!("{reply:?}").contains("no longer leads"),
        "{reply:?}"
    );

    // Healed, the first bridge follows: it proxies to the new leader.
    for p in &proxies {
        p.heal();
    }
    wait::until("the healed bridge to follow the new leader", LONG, || {
        let a = first.get("/v2/apps/cut-web").ok()?;
        (a.status == 200
            && a.header("x-marathon-leader")
                == Some(format!("http://127.0.0.1:{}", leader.port()).as_str()))
        .then_some(())
    })
    .unwrap();
}

#[test]
fn without_a_zookeeper_quorum_no_bridge_leads_and_one_leads_again_when_it_returns() {
    let mut zk = Ensemble::start(3).unwrap();
    let broker = Broker::start().unwrap();
    let group = format!(
        "client_id = \"ha-quorum-{}\"\n[ha]\nzk = \"{}\"\nsession_timeout_ms = 2000\n",
        std::process::id(),
        zk.url("/outpost")
    );
    let bridges: Vec<Option<Bridge>> = (0..2)
        .map(|_| Some(Bridge::start(&broker.url(), &group).unwrap()))
        .collect();
    let first = agreed_leader(&bridges, LONG);
    let b = bridges[first].as_ref().unwrap();
    let app = json!({ "id": "/quorum", "instances": 0, "cpus": 0.1, "mem": 16,
        "container": { "type": "DOCKER", "docker": { "image": "busybox" } } });
    let a = b
        .request("POST", "/v2/apps", Some(&app.to_string()))
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text);

    // One server down: the quorum stands, the same bridge leads and takes writes.
    zk.kill(2);
    let a = b
        .request(
            "PUT",
            "/v2/apps/quorum",
            Some(&json!({ "instances": 0, "cpus": 0.2 }).to_string()),
        )
        .unwrap();
    assert!(a.status == 200 || a.status == 503, "{}", a.text);
    assert_eq!(agreed_leader(&bridges, LONG), first);

    // Two down: no quorum, no session is connected, and no bridge leads or takes a write.
    zk.kill(1);
    wait::until("no bridge leading", Duration::from_secs(20), || {
        leaders(&bridges).iter().all(Option::is_none).then_some(())
    })
    .unwrap();
    for b in bridges.iter().flatten() {
        let a = b
            .request(
                "POST",
                "/v2/apps",
                Some(
                    &json!({ "id": "/refused", "cpus": 0.1, "mem": 16,
                "container": { "type": "DOCKER", "docker": { "image": "busybox" } } })
                    .to_string(),
                ),
            )
            .unwrap();
        assert_eq!(a.status, 503, "{}", a.text);
    }

    // One server back: a quorum again; a bridge leads, with the state as it was.
    zk.start_server(1).unwrap();
    let leader = agreed_leader(&bridges, Duration::from_secs(60));
    let b = bridges[leader].as_ref().unwrap();
    let app = b.json("/v2/apps/quorum");
    assert_eq!(app["app"]["id"], "/quorum", "{app}");
    assert_eq!(b.get("/v2/apps/refused").unwrap().status, 404);

    // DELETE /v2/leader (through the follower, proxied): the leader steps down and joins
    // again behind the other, which leads.
    let follower = bridges[1 - leader].as_ref().unwrap();
    let a = follower.request("DELETE", "/v2/leader", None).unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["message"], "Leadership abdicated");
    assert_eq!(agreed_leader(&bridges, LONG), 1 - leader);
}

#[test]
fn an_unreachable_ensemble_is_named_and_retried_and_the_bridge_never_leads_without_it() {
    let broker = Broker::start().unwrap();
    // Nothing listens on this port: the first server's, never started.
    let port = outpost_tests::net::free_port().unwrap();
    let url = format!("zk://127.0.0.1:{port}/outpost");
    let b = Bridge::start(
        &broker.url(),
        &format!("[ha]\nzk = \"{url}\"\nsession_timeout_ms = 2000\n"),
    )
    .unwrap();
    wait::until("two failed tries in the log", LONG, || {
        let log = b.log();
        (log.matches("no ZooKeeper session; retrying").count() >= 2).then_some(())
    })
    .unwrap();
    let log = b.log();
    assert!(log.contains("ha.zk") && log.contains(&url), "{log}");
    let a = b.get("/v2/leader").unwrap();
    assert_eq!(a.status, 404, "{}", a.text);
    assert_eq!(a.json()["message"], "There is no leader");
    let a = b.get("/v2/apps").unwrap();
    assert_eq!(a.status, 503, "{}", a.text);
    let a = b.mesos_get("/master/state").unwrap();
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(b.get("/ping").unwrap().status, 200, "the process serves on");
}

#[test]
fn a_mesos_framework_finds_the_new_leader_in_zookeeper_keeps_its_task_and_loses_no_update() {
    use outpost_tests::mesos_client::{Subscription, framework_call};

    image::ensure().unwrap();
    let zk = Ensemble::start(3).unwrap();
    let broker = Broker::start().unwrap();
    // Long enough that the update made right after the leader's death is made while no bridge
    // leads (a new one is elected only once the dead one's session expires).
    let group = format!(
        "client_id = \"ha-fw-{}\"\n[ha]\nzk = \"{}\"\nsession_timeout_ms = 4000\n",
        std::process::id(),
        zk.url("/outpost")
    );
    let mut bridges: Vec<Option<Bridge>> = (0..2)
        .map(|_| Some(Bridge::start(&broker.url(), &group).unwrap()))
        .collect();
    let first = agreed_leader(&bridges, LONG);
    let agent_id = Agent::unique_id("ha-fw");
    let agent = Agent::start(&agent_id, &broker.url(), (21720, 21729), "").unwrap();

    // The framework finds the master as pymesos does: the lowest json.info_ node.
    let port_of = |leader: &str| leader.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
    let (leader, _) = python_leader(&zk);
    assert_eq!(
        port_of(&leader),
        bridges[first].as_ref().unwrap().mesos_port()
    );
    let info = json!({ "user": "root", "name": "ha-fw", "failover_timeout": 300.0 });
    let mut sub = Subscription::open(port_of(&leader), info.clone(), None);
    let offers = sub.next_event(|e| e["type"] == "OFFERS", LONG);
    let offer = &offers["offers"]["offers"][0];
    let task = |id: &str| {
        json!({
            "name": id, "task_id": { "value": id },
            "agent_id": { "value": agent_id },
            "resources": [
                { "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.05 } },
                { "name": "mem", "type": "SCALAR", "scalar": { "value": 16 } }
            ],
            "container": { "type": "DOCKER", "docker": { "image": image::TEST_IMAGE, "network": "BRIDGE" } }
        })
    };
    let accept = json!({ "type": "ACCEPT", "accept": {
        "offer_ids": [offer["id"]],
        "operations": [{ "type": "LAUNCH", "launch": {
            "task_infos": [task("ha-fw-keep"), task("ha-fw-dies")] } }] } });
    let (code, msg) = framework_call(port_of(&leader), &sub, accept);
    assert_eq!(code, 202, "{msg}");
    // Every update is acknowledged, as a framework does: the agent sends a task's next update
    // once the one before is acknowledged.
    let acknowledge = |port: u16, sub: &Subscription, u: &serde_json::Value| {
        let (code, msg) = framework_call(
            port,
            sub,
            json!({ "type": "ACKNOWLEDGE", "acknowledge": {
                "agent_id": u["agent_id"], "task_id": u["task_id"], "uuid": u["uuid"] } }),
        );
        assert_eq!(code, 202, "{msg}");
    };
    for id in ["ha-fw-keep", "ha-fw-dies"] {
        let running = sub.next_event(
            |e| {
                e["update"]["status"]["task_id"]["value"] == id
                    && e["update"]["status"]["state"] == "TASK_RUNNING"
            },
            LONG,
        );
        acknowledge(port_of(&leader), &sub, &running["update"]["status"]);
    }
    let containers = agent.containers().unwrap();
    assert_eq!(containers.len(), 2);
    let dies = outpost_tests::docker::docker(&[
        "ps",
        "-q",
        "--filter",
        "label=outpost.task-id=ha-fw-dies",
    ])
    .unwrap()
    .trim()
    .to_string();
    assert!(!dies.is_empty(), "the container of ha-fw-dies");
    let fid = sub.framework_id.clone();
    drop(sub);

    // The leader dies, and one task's container with it while no bridge leads: its TASK_FAILED
    // waits (the agent's outbox, the broker's session) for the next leader.
    bridges[first].as_mut().unwrap().kill();
    bridges[first] = None;
    outpost_tests::docker::docker(&["kill", &dies]).unwrap();
    wait::until("the agent to report the death", LONG, || {
        agent
            .log()
            .lines()
            .any(|l| l.contains("ha-fw-dies") && l.contains("TASK_FAILED"))
            .then_some(())
    })
    .unwrap();
    assert_eq!(
        leaders(&bridges),
        leaders(&bridges).iter().map(|_| None).collect::<Vec<_>>(),
        "no bridge leads yet: the update was made between two leaders"
    );

    // The framework looks in ZooKeeper again, re-subscribes with its id to the new leader, and
    // gets the update it missed; its other task runs on, in the same container.
    let second = agreed_leader(&bridges, Duration::from_secs(30));
    let new_mesos = bridges[second].as_ref().unwrap().mesos_port();
    let leader = wait::until("the new leader in ZooKeeper", LONG, || {
        let (l, _) = python_leader(&zk);
        (port_of(&l) == new_mesos).then_some(l)
    })
    .unwrap();
    let mut sub = Subscription::open(port_of(&leader), info, Some(&fid));
    assert_eq!(sub.framework_id, fid);
    let failed = sub.next_event(
        |e| {
            e["update"]["status"]["task_id"]["value"] == "ha-fw-dies"
                && e["update"]["status"]["state"] == "TASK_FAILED"
        },
        LONG,
    );
    assert!(
        failed["update"]["status"]["uuid"].is_string(),
        "an update to acknowledge, not a reconciliation answer: {failed}"
    );
    acknowledge(port_of(&leader), &sub, &failed["update"]["status"]);
    let (code, _) = framework_call(
        port_of(&leader),
        &sub,
        json!({ "type": "RECONCILE", "reconcile": { "tasks": [] } }),
    );
    assert_eq!(code, 202);
    let rec = sub.next_event(
        |e| {
            e["update"]["status"]["task_id"]["value"] == "ha-fw-keep"
                && e["update"]["status"]["reason"] == "REASON_RECONCILIATION"
        },
        LONG,
    );
    assert_eq!(rec["update"]["status"]["state"], "TASK_RUNNING", "{rec}");
    let keep = outpost_tests::docker::docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "label=outpost.task-id=ha-fw-keep",
    ])
    .unwrap();
    assert!(
        containers
            .iter()
            .any(|c| keep.trim().starts_with(c.as_str())),
        "the same container: {keep} in {containers:?}"
    );
}

#[test]
fn with_https_apis_a_follower_proxies_to_the_leader_over_tls() {
    let zk = Ensemble::start(3).unwrap();
    let broker = Broker::start().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let bin = outpost_tests::bin_path::path("outpost-bridge").unwrap();
    outpost_tests::process::run(
        std::process::Command::new(bin)
            .arg("issue-certs")
            .arg("--dir")
            .arg(certs.path()),
    )
    .unwrap();
    let ca = certs.path().join("ca.pem");
    // Both bridges serve the certificate made for 127.0.0.1; the CA verifies the leader's.
    let group = format!(
        "client_id = \"ha-tls-{}\"\n[api_tls]\ncert_file = \"{1}/broker.pem\"\nkey_file = \"{1}/broker.key\"\n\
         [ha]\nzk = \"{2}\"\nsession_timeout_ms = 2000\nca_file = \"{3}\"\n",
        std::process::id(),
        certs.path().display(),
        zk.url("/outpost"),
        ca.display()
    );
    let bridges: Vec<Bridge> = (0..2)
        .map(|_| Bridge::start_no_wait(&broker.url(), &group).unwrap())
        .collect();
    let url = |b: &Bridge, path: &str| format!("https://127.0.0.1:{}{path}", b.port());
    let leader = wait::until("a leader over HTTPS", LONG, || {
        bridges.iter().position(|b| {
            let (code, text) = curl_tls(&ca, &[&url(b, "/v2/leader")]);
            code == 200 && text.contains(&format!("127.0.0.1:{}", b.port()))
        })
    })
    .unwrap();
    let follower = &bridges[1 - leader];
    let (code, text) = wait::until("the follower to proxy", LONG, || {
        let (code, text) = curl_tls(&ca, &[&url(follower, "/v2/apps")]);
        (code == 200).then_some((code, text))
    })
    .unwrap();
    assert_eq!(code, 200);
    let want = format!(
        "x-marathon-leader: https://127.0.0.1:{}",
        bridges[leader].port()
    );
    assert!(text.to_ascii_lowercase().contains(&want), "{text}");
    assert!(text.contains("\"apps\""), "{text}");
}
