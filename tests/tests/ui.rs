//! The web UI in a real browser: headless Chromium (Debian's) loads the bridge's page, with a
//! real agent, mosquitto and dockerd behind it, runs its JavaScript, and the test reads the
//! rendered DOM; a screenshot is saved as an artifact (`target/test-artifacts/ui.png`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use outpost_tests::agent::Agent;
use outpost_tests::bin_path::workspace_root;
use outpost_tests::bridge::Bridge;
use outpost_tests::mosquitto::Broker;
use outpost_tests::{image, wait};

const LONG: Duration = Duration::from_secs(90);

/// Chromium, headless, with a fresh profile and none of its background traffic; `extra` says
/// what to do with `url` (`--dump-dom`, `--screenshot=...`). Returns stdout.
fn chromium(profile: &Path, url: &str, extra: &[&str]) -> String {
    // `timeout`: a browser that hangs fails the test instead of holding it.
    let out = Command::new("timeout")
        .args([
            "60",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            // Stop loading after 5 s (the event stream never ends) and act on the page as is.
            "--timeout=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("timeout and chromium (Debian package chromium) run");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_ui_shows_agents_apps_and_tasks_in_a_real_browser() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    let agent_id = Agent::unique_id("ui-agent");
    let _agent = Agent::start(
        &agent_id,
        &broker.url(),
        (21680, 21689),
        "[attributes]\nzone = \"north\"\n",
    )
    .unwrap();
    let app = format!(
        r#"{{"id": "/shop/web", "instances": 2, "cpus": 0.05, "mem": 16,
            "container": {{"type": "DOCKER", "docker": {{"image": "{}", "network": "BRIDGE"}},
              "portMappings": [{{"containerPort": 80, "hostPort": 0}}]}},
            "healthChecks": [{{"protocol": "HTTP", "path": "/health", "portIndex": 0,
              "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 1}}]}}"#,
        image::TEST_IMAGE
    );
    let created = bridge.request("POST", "/v2/apps", Some(&app)).unwrap();
    assert_eq!(created.status, 201, "{}", created.text);
    let tasks = wait::until("two healthy tasks", LONG, || {
        let v = bridge.json("/v2/apps/shop/web?embed=app.tasks");
        (v["app"]["tasksHealthy"].as_u64()? == 2).then(|| {
            v["app"]["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    })
    .unwrap();

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/", bridge.port());
    // The DOM after the page's scripts ran against the live APIs.
    let dom = wait::until("the rendered page", LONG, || {
        let dom = chromium(profile.path(), &url, &["--dump-dom"]);
        dom.contains("data-loaded=\"true\"").then_some(dom)
    })
    .unwrap();
    for needle in [
        agent_id.as_str(),
        "zone=north",
        "online",
        "/shop/web",
        "2 / 2",
        "healthy",
        "RUNNING",
    ] {
        assert!(dom.contains(needle), "{needle} not on the page:\n{dom}");
    }
    for t in &tasks {
        assert!(dom.contains(t.as_str()), "task {t} not on the page");
    }
    assert!(
        dom.contains("id=\"tasks-healthy\">2<"),
        "the summary counts two healthy tasks"
    );
    assert!(
        dom.contains("class=\"live on\""),
        "the page follows /v2/events"
    );

    let shot = artifacts().join("ui.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        profile.path(),
        &url,
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        png.len() > 10_000,
        "a screenshot with content: {} bytes",
        png.len()
    );
}
