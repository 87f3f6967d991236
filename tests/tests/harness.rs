//! Each harness helper, proven against the real service it starts.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use outpost_tests::docker::{self, Scope, docker};
use outpost_tests::image::{self, INDEX_BODY};
use outpost_tests::mosquitto::Broker;
use outpost_tests::process::Guarded;
use outpost_tests::registry::Registry;
use outpost_tests::{http, net, wait};

/// Subscribes with `mosquitto_sub` and publishes with `mosquitto_pub` until the subscriber has
/// the message (a publish before the subscription is live would be lost, so it repeats);
/// returns what the subscriber printed, or the publisher's error.
fn publish_and_receive(
    broker: &Broker,
    pub_args: &[String],
    topic: &str,
) -> anyhow::Result<String> {
    let mut sub = Command::new("mosquitto_sub");
    sub.args(broker.client_args())
        .args(["-C", "1", "-W", "20", "-q", "1", "-t", topic])
        .stdout(Stdio::piped());
    let mut sub = Guarded::spawn("mosquitto_sub", &mut sub)?;
    let mut stdout = sub_stdout(&mut sub)?;
    wait::until(
        "the subscriber to get the message",
        Duration::from_secs(15),
        || {
            let published = Command::new("mosquitto_pub")
                .args(pub_args)
                .args(["-q", "1", "-t", topic, "-m", "hello outpost"])
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            (published && !sub.is_running()).then_some(())
        },
    )?;
    let mut got = String::new();
    stdout.read_to_string(&mut got)?;
    Ok(got)
}

fn sub_stdout(sub: &mut Guarded) -> anyhow::Result<std::process::ChildStdout> {
    sub.take_stdout()
        .ok_or_else(|| anyhow::anyhow!("mosquitto_sub has no stdout"))
}

#[test]
fn dockerd_answers_and_a_scope_removes_its_labelled_containers() {
    docker::ensure_dockerd().unwrap();
    assert!(docker::ping());
    let img = image::ensure().unwrap();
    let id;
    {
        let scope = Scope::new().unwrap();
        id = scope.run_detached(&[img, "sleep", "600"]).unwrap();
        assert_eq!(scope.containers().unwrap().len(), 1);
        let label = docker(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"outpost.test\"}}",
            &id,
        ])
        .unwrap();
        assert_eq!(label, scope.id());
    }
    assert!(
        docker(&["inspect", &id]).is_err(),
        "the container outlived its scope"
    );
}

#[test]
fn mosquitto_delivers_a_published_message_to_a_subscriber() {
    let broker = Broker::start().unwrap();
    let got = publish_and_receive(&broker, &broker.client_args(), "outpost/test/a").unwrap();
    assert_eq!(got.trim(), "hello outpost");
}

#[test]
fn mosquitto_with_auth_refuses_anonymous_clients_and_accepts_its_credentials() {
    let broker = Broker::start_with_auth("agent", "s3cret").unwrap();
    let anonymous = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", "outpost/test/b", "-m", "x"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("not authori"),
        "{}",
        String::from_utf8_lossy(&anonymous.stderr)
    );
    let got = publish_and_receive(&broker, &broker.client_args(), "outpost/test/b").unwrap();
    assert_eq!(got.trim(), "hello outpost");
}

#[test]
fn a_stopped_broker_refuses_and_restarts_on_the_same_port() {
    let mut broker = Broker::start().unwrap();
    let port = broker.port();
    broker.stop();
    wait::until(
        "the broker to stop listening",
        Duration::from_secs(5),
        || (!net::accepts(port)).then_some(()),
    )
    .unwrap();
    broker.restart().unwrap();
    assert_eq!(broker.port(), port);
    let got = publish_and_receive(&broker, &broker.client_args(), "outpost/test/c").unwrap();
    assert_eq!(got.trim(), "hello outpost");
}

#[test]
fn an_open_registry_takes_a_push_and_serves_a_pull() {
    let img = image::ensure().unwrap();
    let mut registry = Registry::start().unwrap();
    let remote = registry.push(img, "outpost/web:1").unwrap();
    let catalog = http::get(&format!("http://{}/v2/_catalog", registry.host())).unwrap();
    assert_eq!(catalog.status, 200);
    assert!(catalog.body.contains("outpost/web"), "{}", catalog.body);
    docker(&["rmi", &remote]).unwrap();
    registry.docker_cli(&["pull", &remote]).unwrap();
    docker(&["image", "inspect", &remote]).unwrap();
}

#[test]
fn an_auth_registry_refuses_anonymous_pulls_and_serves_its_user() {
    let img = image::ensure().unwrap();
    let mut registry = Registry::start_with_auth("puller", "pa55word").unwrap();
    let v2 = http::get(&format!("http://{}/v2/", registry.host())).unwrap();
    assert_eq!(v2.status, 401);
    let remote = registry.push(img, "outpost/private:1").unwrap();
    docker(&["rmi", &remote]).unwrap();
    // No login: refused.
    let anonymous_home = tempfile::tempdir().unwrap();
    let refused = Command::new("docker")
        .arg("--config")
        .arg(anonymous_home.path())
        .args(["pull", &remote])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no basic auth credentials") || err.contains("unauthorized"),
        "{err}"
    );
    // Logged in: served.
    registry.docker_cli(&["pull", &remote]).unwrap();
    docker(&["image", "inspect", &remote]).unwrap();
}

#[test]
fn the_test_image_serves_its_page_through_a_nat_port_and_its_health_can_be_failed() {
    let img = image::ensure().unwrap();
    let scope = Scope::new().unwrap();
    let id = scope.run_detached(&["-p", "127.0.0.1::80", img]).unwrap();
    let port = scope.host_port(&id, 80).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let page = wait::until(
        "the page through the NAT port",
        Duration::from_secs(15),
        || {
            http::get(&format!("{base}/"))
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .unwrap();
    assert_eq!(page.body, INDEX_BODY);
    assert_eq!(http::get(&format!("{base}/health")).unwrap().status, 200);
    image::fail_health(&id).unwrap();
    assert_eq!(http::get(&format!("{base}/health")).unwrap().status, 404);
    image::heal(&id).unwrap();
    assert_eq!(http::get(&format!("{base}/health")).unwrap().status, 200);
}
