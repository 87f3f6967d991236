//! The Mesos operator endpoints of outpost-bridge, as Mesos tooling (mesos-dns, dashboards,
//! scripts) reads them: the real bridge and agent, mosquitto and dockerd.

use std::time::Duration;

use serde_json::{Value, json};

use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::image;
use outpost_tests::mosquitto::Broker;
use outpost_tests::wait;

const LONG: Duration = Duration::from_secs(90);

/// `name@host:port`, the libprocess pid that mesos-dns unmarshals (an invalid one breaks it).
fn valid_pid(pid: &str) -> bool {
    let Some((name, addr)) = pid.split_once('@') else {
        return false;
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    !name.is_empty() && !host.is_empty() && port.parse::<u16>().is_ok()
}

#[test]
fn operator_endpoints_show_agents_frameworks_and_tasks_as_mesos_does() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    let id = Agent::unique_id("mesos");
    let _agent = Agent::start(
        &id,
        &broker.url(),
        (21460, 21469),
        "[attributes]\nrack = \"r7\"",
    )
    .unwrap();
    wait::until("the agent at the bridge", LONG, || {
        bridge.mesos_get("/master/slaves").ok()?.json()["slaves"]
            .as_array()?
            .iter()
            .any(|s| s["id"] == id.as_str())
            .then_some(())
    })
    .unwrap();
    let app = json!({
        "id": "/ops/web", "cpus": 0.05, "mem": 32, "instances": 2, "labels": { "team": "edge" },
        "container": {
            "type": "DOCKER",
            "docker": { "image": image::TEST_IMAGE, "network": "BRIDGE" },
            "portMappings": [{ "containerPort": 80, "hostPort": 0 }]
        }
    });
    let a = bridge
        .request("POST", "/v2/apps", Some(&app.to_string()))
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text);
    let marathon_tasks = wait::until("two running tasks", LONG, || {
        let tasks = bridge.json("/v2/apps/ops/web")["app"]["tasks"]
            .as_array()?
            .clone();
        (tasks.len() == 2 && tasks.iter().all(|t| t["state"] == "TASK_RUNNING")).then_some(tasks)
    })
    .unwrap();

    let state = bridge.mesos_get("/master/state").unwrap();
    assert_eq!(state.status, 200);
    let state = state.json();
    assert_eq!(state["version"], "1.11.0");
    assert!(
        valid_pid(state["leader"].as_str().unwrap()),
        "{}",
        state["leader"]
    );
    assert_eq!(state["leader"], state["pid"]);
    assert_eq!(state["activated_slaves"], 1);
    let slave = &state["slaves"][0];
    assert_eq!(slave["id"], id.as_str());
    // The pid carries the agent's IP (its connection to the loopback broker), the hostname
    // stays the host name: mesos-dns reads the IP from the pid.
    assert_eq!(slave["pid"], "slave(1)@127.0.0.1:5051", "{slave}");
    assert!(valid_pid(slave["pid"].as_str().unwrap()));
    assert_ne!(slave["hostname"], "127.0.0.1");
    assert_eq!(slave["attributes"]["rack"], "r7");
    assert_eq!(slave["resources"]["ports"], "[21460-21469]", "{slave}");
    // Used: exactly the two tasks' host ports, as Mesos flattens them.
    let mut ports: Vec<u64> = marathon_tasks
        .iter()
        .map(|t| t["ports"][0].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    let want = if ports[1] == ports[0] + 1 {
        format!("[{}-{}]", ports[0], ports[1])
    } else {
        format!("[{}-{}, {}-{}]", ports[0], ports[0], ports[1], ports[1])
    };
    assert_eq!(slave["used_resources"]["ports"], want, "{slave}");
    assert!(
        (slave["used_resources"]["cpus"].as_f64().unwrap() - 0.1).abs() < 1e-9,
        "{slave}"
    );
    assert_eq!(slave["used_resources"]["mem"], 64.0, "{slave}");
    let framework = &state["frameworks"][0];
    assert_eq!(framework["name"], "marathon");
    assert!(valid_pid(framework["pid"].as_str().unwrap()));
    let tasks = framework["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for t in tasks {
        let m = marathon_tasks
            .iter()
            .find(|m| m["id"] == t["id"])
            .expect("same task ids as Marathon's");
        let port = m["ports"][0].as_u64().unwrap();
        assert_eq!(t["slave_id"], id.as_str());
        assert_eq!(t["framework_id"], framework["id"]);
        assert_eq!(t["state"], "TASK_RUNNING");
        assert_eq!(t["name"], "ops.web");
        assert_eq!(t["resources"]["ports"], format!("[{port}-{port}]"));
        assert_eq!(t["discovery"]["ports"]["ports"][0]["number"], port);
        assert_eq!(
            t["container"]["docker"]["port_mappings"][0]["host_port"],
            port
        );
        assert_eq!(t["labels"], json!([{ "key": "team", "value": "edge" }]));
        let ip = &t["statuses"][0]["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"];
        assert_eq!(ip, &m["ipAddresses"][0]["ipAddress"]);
    }
    // mesos-dns still asks for the old name.
    let old = bridge.mesos_get("/master/state.json").unwrap().json();
    assert_eq!(old["slaves"], state["slaves"]);

    // Paging and filters.
    let page = |q: &str| {
        bridge
            .mesos_get(&format!("/master/tasks{q}"))
            .unwrap()
            .json()["tasks"]
            .clone()
    };
    assert_eq!(page("").as_array().unwrap().len(), 2);
    assert_eq!(page("?limit=1").as_array().unwrap().len(), 1);
    assert_ne!(
        page("?limit=1")[0]["id"],
        page("?limit=1&order=desc")[0]["id"]
    );
    assert_eq!(
        page("?limit=1&offset=1")[0]["id"],
        page("?limit=1&order=desc")[0]["id"]
    );
    let one = tasks[0]["id"].as_str().unwrap();
    assert_eq!(page(&format!("?task_id={one}"))[0]["id"], one);
    assert_eq!(page("?framework_id=other"), json!([]));
    let bad = bridge.mesos_get("/master/tasks?limit=many").unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("limit"), "{}", bad.text);
    let only: Value = bridge
        .mesos_get(&format!("/master/slaves?slave_id={id}"))
        .unwrap()
        .json();
    assert_eq!(only["slaves"].as_array().unwrap().len(), 1);
    assert_eq!(
        bridge
            .mesos_get("/master/slaves?slave_id=nope")
            .unwrap()
            .json()["slaves"],
        json!([])
    );
    assert_eq!(
        bridge.mesos_get("/master/frameworks").unwrap().json()["frameworks"][0]["id"],
        framework["id"]
    );

    // The small ones.
    let r = bridge.mesos_get("/master/redirect").unwrap();
    assert_eq!(r.status, 307);
    assert!(
        r.header("location").unwrap().starts_with("//"),
        "{:?}",
        r.headers
    );
    assert_eq!(bridge.mesos_get("/master/health").unwrap().status, 200);
    let m = bridge.mesos_get("/metrics/snapshot").unwrap().json();
    assert_eq!(m["master/slaves_active"], 1.0);
    assert_eq!(m["master/tasks_running"], 2.0);
    assert_eq!(m["master/elected"], 1.0);
    assert!(m["master/cpus_used"].as_f64().unwrap() > 0.09, "{m}");
    let v = bridge.mesos_get("/version").unwrap().json();
    // pymesos parses each dot-separated part as an int.
    assert!(
        v["version"]
            .as_str()
            .unwrap()
            .split('.')
            .all(|p| p.parse::<u32>().is_ok())
    );
}
