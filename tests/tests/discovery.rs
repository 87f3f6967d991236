//! Service discovery to a real HAProxy (Debian's): `outpost-bridge lb` follows the real bridge
//! (a real agent, mosquitto, dockerd), and requests through HAProxy reach the app's healthy
//! tasks only; a task that fails its check leaves, a new one joins; a bad template never
//! replaces the config that serves.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::mosquitto::Broker;
use outpost_tests::net::free_port;
use outpost_tests::process::Guarded;
use outpost_tests::{bin_path, http, image, wait};

const LONG: Duration = Duration::from_secs(90);

/// `outpost-bridge lb` against `bridge`, writing `dir/haproxy.cfg`; its log in `dir/lb.log`.
fn lb(bridge: &Bridge, dir: &Path, template: Option<&Path>) -> Guarded {
    let bin = bin_path::path("outpost-bridge").unwrap();
    let log = std::fs::File::create(dir.join("lb.log")).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("lb")
        .arg("--marathon")
        .arg(format!("http://127.0.0.1:{}", bridge.port()))
        .arg("--haproxy-config")
        .arg(dir.join("haproxy.cfg"))
        .args(["--bind", "127.0.0.1", "--http-port"])
        .arg(free_port().unwrap().to_string())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(t) = template {
        cmd.arg("--template").arg(t);
    }
    Guarded::spawn("outpost-bridge lb", &mut cmd).unwrap()
}

/// The tasks that answer through HAProxy on `port` in `n` requests.
fn answering(port: u16, n: usize) -> BTreeSet<String> {
    (0..n)
        .filter_map(|_| http::get(&format!("http://127.0.0.1:{port}/")).ok())
        .filter(|r| r.status == 200)
        .filter_map(|r| r.task)
        .collect()
}

fn app(service_port: u16, instances: u32) -> String {
    format!(
        r#"{{"id": "/disc", "instances": {instances}, "cpus": 0.05, "mem": 16,
            "container": {{"type": "DOCKER", "docker": {{"image": "{}", "network": "BRIDGE"}},
              "portMappings": [{{"containerPort": 80, "hostPort": 0, "servicePort": {service_port}}}]}},
            "healthChecks": [{{"protocol": "HTTP", "path": "/health", "portIndex": 0,
              "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 1,
              "maxConsecutiveFailures": 0}}]}}"#,
        image::TEST_IMAGE
    )
}

#[test]
fn haproxy_sends_requests_to_healthy_tasks_only_and_follows_changes() {
    image::ensure().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    let agent = Agent::start(&Agent::unique_id("disc"), &broker.url(), (21660, 21669), "").unwrap();
    let port = free_port().unwrap();
    let created = bridge
        .request("POST", "/v2/apps", Some(&app(port, 2)))
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text);
    let mut lb = lb(&bridge, dir.path(), None);

    // Both healthy tasks answer through HAProxy.
    let both = wait::until("both tasks behind HAProxy", LONG, || {
        let seen = answering(port, 10);
        (seen.len() == 2).then_some(seen)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            std::fs::read_to_string(dir.path().join("lb.log")).unwrap_or_default()
        )
    });

    // One fails its health check: it leaves the backend.
    let containers = agent.containers().unwrap();
    image::fail_health(&containers[0]).unwrap();
    let left = wait::until("the sick task out of the backend", LONG, || {
        let seen = answering(port, 10);
        (seen.len() == 1).then_some(seen)
    })
    .unwrap();
    assert!(both.is_superset(&left));
    let cfg = std::fs::read_to_string(dir.path().join("haproxy.cfg")).unwrap();
    assert_eq!(cfg.matches("    server ").count(), 1, "{cfg}");

    // Scaled up: the new task joins.
    let scaled = bridge
        .request("PUT", "/v2/apps/disc", Some(r#"{"instances": 3}"#))
        .unwrap();
    assert!(scaled.status < 300, "{}", scaled.text);
    wait::until("the new task behind HAProxy", LONG, || {
        let seen = answering(port, 12);
        (seen.len() == 2 && !seen.is_subset(&both)).then_some(())
    })
    .unwrap();

    // The lb killed outright (SIGKILL: no handler runs): its HAProxy goes with it rather than
    // serving the last config on, orphaned.
    let config = dir.path().join("haproxy.cfg");
    assert!(
        !haproxies(&config).is_empty(),
        "HAProxy runs with {config:?}"
    );
    lb.stop();
    wait::until("HAProxy gone with its lb", Duration::from_secs(15), || {
        haproxies(&config).is_empty().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?} still run", haproxies(&config)));
    assert!(
        http::get(&format!("http://127.0.0.1:{port}/")).is_err(),
        "nothing serves the app's port"
    );
}

/// The pids of the HAProxy processes (master and workers) running with `config`.
fn haproxies(config: &Path) -> Vec<u32> {
    let config = config.to_string_lossy();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // Arguments are NUL-separated; an exited process that is not reaped yet has none.
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<_> = c.split(|&b| b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"haproxy"))
                    && args.iter().any(|a| *a == config.as_bytes())
            })
        })
        .collect()
}

#[test]
fn a_bad_template_or_a_config_haproxy_refuses_never_replaces_the_serving_one() {
    image::ensure().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    let _agent = Agent::start(
        &Agent::unique_id("disc-bad"),
        &broker.url(),
        (21670, 21679),
        "",
    )
    .unwrap();
    let port = free_port().unwrap();
    let template = dir.path().join("haproxy.cfg.j2");
    std::fs::copy(
        bin_path::workspace_root().join("bridge/src/lb/haproxy.cfg.j2"),
        &template,
    )
    .unwrap();
    let created = bridge
        .request("POST", "/v2/apps", Some(&app(port, 1)))
        .unwrap();
    assert_eq!(created.status, 201);
    let _lb = lb(&bridge, dir.path(), Some(&template));
    wait::until("the task behind HAProxy", LONG, || {
        (answering(port, 3).len() == 1).then_some(())
    })
    .unwrap();
    let good = std::fs::read_to_string(dir.path().join("haproxy.cfg")).unwrap();
    let log = || std::fs::read_to_string(dir.path().join("lb.log")).unwrap_or_default();

    // A template that does not parse: the error is logged, the config and HAProxy stay.
    std::fs::write(&template, "{% for s in %}").unwrap();
    let scale = |n: u32| {
        let r = bridge
            .request(
                "PUT",
                "/v2/apps/disc?force=true",
                Some(&format!(r#"{{"instances": {n}}}"#)),
            )
            .unwrap();
        assert!(r.status < 300, "{}", r.text);
    };
    scale(2);
    wait::until("the template error logged", LONG, || {
        log()
            .contains("render failed, the running config is kept: template:")
            .then_some(())
    })
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("haproxy.cfg")).unwrap(),
        good
    );
    assert_eq!(
        answering(port, 3).len(),
        1,
        "HAProxy still serves the old config"
    );

    // A template that renders what HAProxy refuses: `haproxy -c` keeps it out.
    std::fs::write(&template, "global\n    no_such_directive on\n").unwrap();
    scale(3);
    wait::until("haproxy -c's refusal logged", LONG, || {
        log()
            .contains("haproxy -c refused the rendered config")
            .then_some(())
    })
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("haproxy.cfg")).unwrap(),
        good
    );
    assert_eq!(answering(port, 3).len(), 1);
}
