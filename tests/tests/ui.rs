//! The web UI in a real browser: headless Chromium (Debian's) loads the bridge's page, with a
//! real agent, mosquitto and dockerd behind it. The test drives the browser through the
//! DevTools protocol: it waits until the page has rendered and follows the event stream, reads
//! the rendered DOM, scales the app and watches the page update itself, and saves a screenshot
//! (`target/test-artifacts/ui.png`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use outpost_tests::agent::Agent;
use outpost_tests::bin_path::workspace_root;
use outpost_tests::bridge::Bridge;
use outpost_tests::mosquitto::Broker;
use outpost_tests::net::free_port;
use outpost_tests::process::Guarded;
use outpost_tests::{image, wait};

const LONG: Duration = Duration::from_secs(90);

/// A headless Chromium with a fresh profile, none of its background traffic, and its DevTools
/// endpoint on a loopback port.
struct Browser {
    _process: Guarded,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Browser {
    fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let process = Guarded::spawn(
            "chromium",
            Command::new("chromium")
                .args([
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
                    "--remote-allow-origins=*",
                ])
                .arg(format!("--remote-debugging-port={port}"))
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("chromium (Debian package chromium) runs");
        wait::until("Chromium's DevTools endpoint", LONG, || {
            outpost_tests::http::get(&format!("http://127.0.0.1:{port}/json/version"))
                .ok()
                .filter(|r| r.status == 200)
        })
        .unwrap();
        Self {
            _process: process,
            _profile: profile,
            port,
        }
    }

    /// A new tab on `url`, driven over its DevTools WebSocket.
    fn open(&self, url: &str) -> Tab {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let target: Value = serde_json::from_str(
            &agent
                .put(&format!("http://127.0.0.1:{}/json/new?{url}", self.port))
                .send_empty()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap(),
        )
        .unwrap();
        let ws = target["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let (socket, _) = tungstenite::connect(ws).unwrap();
        Tab { socket, next: 0 }
    }
}

/// One page's DevTools session.
struct Tab {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next: u64,
}

impl Tab {
    /// Calls `method`; returns its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket
            .send(tungstenite::Message::Text(msg.into()))
            .unwrap();
        loop {
            let msg = self.socket.read().unwrap();
            let Ok(text) = msg.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }
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
fn the_ui_shows_agents_apps_and_tasks_and_follows_changes_in_a_real_browser() {
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

    let browser = Browser::start();
    let mut tab = browser.open(&format!("http://127.0.0.1:{}/", bridge.port()));
    wait::until("the page rendered and live", LONG, || {
        (tab.eval(
            "document.body.dataset.loaded === 'true' \
             && document.getElementById('live').classList.contains('on') \
             && document.getElementById('tasks-healthy').textContent === '2'",
        ) == true)
            .then_some(())
    })
    .unwrap();
    let dom = tab.eval("document.documentElement.outerHTML");
    let dom = dom.as_str().unwrap();
    // The header names the leader: this bridge, alone.
    let leader = tab.eval("document.getElementById('bridges').textContent");
    assert_eq!(
        leader.as_str().unwrap().trim(),
        format!("leader 127.0.0.1:{}", bridge.port())
    );
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

    // Scaled through the API: the open page shows the third task by itself (event stream).
    let scaled = bridge
        .request("PUT", "/v2/apps/shop/web", Some(r#"{"instances": 3}"#))
        .unwrap();
    assert!(scaled.status < 300, "{}", scaled.text);
    wait::until("the page to show three healthy tasks", LONG, || {
        (tab.eval(
            "document.querySelectorAll('#tasks tbody tr[data-task]').length === 3 \
             && document.getElementById('tasks-healthy').textContent === '3'",
        ) == true)
            .then_some(())
    })
    .unwrap();

    let shot = tab.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(png.len() > 10_000, "a screenshot with content");
    std::fs::write(artifacts().join("ui.png"), png).unwrap();
}

impl Tab {
    /// Waits until `condition` (a JavaScript expression) is true in the page.
    fn until(&mut self, what: &str, condition: &str) {
        wait::until(what, LONG, || (self.eval(condition) == true).then_some(())).unwrap_or_else(
            |e| {
                let body = self.eval("document.body.innerText");
                panic!("{e}; the page says:\n{}", body.as_str().unwrap_or(""))
            },
        );
    }

    /// Clicks the element `selector` names (it must exist).
    fn click(&mut self, selector: &str) {
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); if (!e) return false; e.click(); return true; }})()"
        ));
        assert_eq!(found, true, "nothing to click at {selector}");
    }

    fn screenshot(&mut self, name: &str) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(artifacts().join(name), png).unwrap();
    }
}

#[test]
fn the_ui_deploys_scales_reads_logs_and_destroys_an_app_with_clicks() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    let agent_id = Agent::unique_id("ui-act");
    let _agent = Agent::start(&agent_id, &broker.url(), (21690, 21699), "").unwrap();
    let browser = Browser::start();
    let mut tab = browser.open(&format!("http://127.0.0.1:{}/ui/", bridge.port()));
    tab.until(
        "the page live with the agent",
        "document.body.dataset.loaded === 'true' && document.getElementById('agents-online').textContent === '1'",
    );

    // Deploy through the form: an invalid definition first, its errors shown by field.
    tab.click("#deploy-open");
    let bad = json!({ "id": "/ui/hello", "cpus": -1, "mem": 32, "instances": 1,
                      "container": { "type": "DOCKER", "docker": { "image": image::TEST_IMAGE } } });
    tab.eval(&format!(
        "document.getElementById('deploy-json').value = {:?}",
        bad.to_string()
    ));
    tab.click("#deploy-submit");
    tab.until(
        "the error of /cpus next to the form",
        "!!document.querySelector('#deploy-errors li[data-path=\"/cpus\"]')",
    );
    assert_eq!(tab.eval("document.getElementById('deploy').open"), true);
    let good = json!({
        "id": "/ui/hello", "cpus": 0.05, "mem": 32, "instances": 1,
        "cmd": "echo ui-hello-line; exec httpd -f -p 80 -h /www",
        "container": { "type": "DOCKER",
                       "docker": { "image": image::TEST_IMAGE, "network": "BRIDGE" },
                       "portMappings": [{ "containerPort": 80, "hostPort": 0 }] },
        "healthChecks": [{ "protocol": "HTTP", "path": "/health", "portIndex": 0,
                           "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 1 }],
        "taskKillGracePeriodSeconds": 1
    });
    tab.eval(&format!(
        "document.getElementById('deploy-json').value = {:?}",
        good.to_string()
    ));
    tab.click("#deploy-submit");
    tab.until("the form closed", "!document.getElementById('deploy').open");
    let healthy = |n: u32| {
        format!(
            "(() => {{ const r = document.querySelector('#apps tr[data-app=\"/ui/hello\"]'); \
             return !!r && r.children[3].textContent.trim() === '{n} / {n}'; }})()"
        )
    };
    tab.until("the app healthy on the page", &healthy(1));
    assert_eq!(
        bridge.json("/v2/apps/ui/hello")["app"]["cmd"],
        good["cmd"],
        "the bridge has the app as the form sent it"
    );

    // Scale it with the row's button and the page's own dialog.
    tab.click("#apps tr[data-app=\"/ui/hello\"] button[data-action=scale]");
    tab.until("the scale dialog", "document.getElementById('ask').open");
    tab.eval("document.getElementById('ask-number').value = '2'");
    tab.click("#ask-ok");
    tab.until("two healthy instances", &healthy(2));
    tab.screenshot("ui-actions.png");

    // A task's logs: the line its container printed.
    tab.click("#tasks tr[data-task] button[data-action=logs]");
    tab.until(
        "the known line in the logs panel",
        "document.getElementById('logs').open && document.getElementById('logs-text').textContent.includes('ui-hello-line')",
    );
    tab.until(
        "the read to end",
        "document.getElementById('logs-status').textContent === 'end of log'",
    );
    tab.screenshot("ui-logs.png");
    tab.click("#logs-close");

    // The agent's page lists its tasks.
    tab.click(&format!("#agents tr[data-agent=\"{agent_id}\"] b"));
    tab.until(
        "the agent panel with its two tasks",
        "document.getElementById('agent').open && document.querySelectorAll('#agent-body code').length >= 2",
    );
    tab.click("#agent-close");

    // Drain from the agent's page (asked first): its tasks are moved (nowhere else to go
    // here, so the app waits), then undrain: they come back.
    tab.click(&format!("#agents tr[data-agent=\"{agent_id}\"] b"));
    tab.click("#agent-body button[data-action=drain]");
    tab.until("the confirmation", "document.getElementById('ask').open");
    tab.click("#ask-ok");
    tab.until(
        "the notice of the drain and the agent draining",
        &format!(
            "document.getElementById('notice').textContent.includes('draining; moving 2 task(s)') \
             && document.querySelector('#agents tr[data-agent=\"{agent_id}\"]').textContent.includes('draining')"
        ),
    );
    tab.click(&format!("#agents tr[data-agent=\"{agent_id}\"] b"));
    tab.click("#agent-body button[data-action=undrain]");
    tab.until("two healthy instances again", &healthy(2));

    // Destroy asks first; cancelled, nothing happens; confirmed, the app goes.
    tab.click("#apps tr[data-app=\"/ui/hello\"] button[data-action=destroy]");
    tab.until("the confirmation", "document.getElementById('ask').open");
    tab.click("#ask-cancel");
    assert_eq!(bridge.get("/v2/apps/ui/hello").unwrap().status, 200);
    tab.click("#apps tr[data-app=\"/ui/hello\"] button[data-action=destroy]");
    tab.until("the confirmation", "document.getElementById('ask').open");
    tab.click("#ask-ok");
    tab.until(
        "the app gone from the page",
        "!document.querySelector('#apps tr[data-app=\"/ui/hello\"]')",
    );
    wait::until("the app gone at the bridge", LONG, || {
        (bridge.get("/v2/apps/ui/hello").unwrap().status == 404).then_some(())
    })
    .unwrap();
    tab.screenshot("ui-destroyed.png");
}

/// `method url` with HTTP Basic credentials `user:password` (a POST with `body`); the status
/// and the body as JSON (`null` when it is not).
fn with_auth(method: &str, url: &str, user: &str, body: Option<&Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user)
    );
    let r = match (method, body) {
        ("GET", _) => agent.get(url).header("Authorization", &auth).call(),
        (_, Some(b)) => agent
            .post(url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        _ => panic!("{method} without a body"),
    };
    let mut r = r.unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn a_read_only_user_sees_each_action_refused_naming_the_admin_role() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start_no_wait(
        &broker.url(),
        "[[api_users]]\nusername = \"ops\"\npassword = \"pw-admin-1\"\nrole = \"admin\"\n\
         [[api_users]]\nusername = \"viewer\"\npassword = \"pw-viewer-1\"\nrole = \"read\"\n",
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{}", bridge.port());
    wait::until("the bridge answering", LONG, || {
        outpost_tests::http::get(&format!("{base}/ping"))
            .ok()
            .filter(|r| r.status == 200)
    })
    .unwrap();
    let agent_id = Agent::unique_id("ui-ro");
    let _agent = Agent::start(&agent_id, &broker.url(), (21820, 21829), "").unwrap();
    let app = json!({
        "id": "/ui/ro", "cpus": 0.05, "mem": 32, "instances": 1,
        "container": { "type": "DOCKER", "docker": { "image": image::TEST_IMAGE, "network": "BRIDGE" },
                       "portMappings": [{ "containerPort": 80, "hostPort": 0 }] },
        "taskKillGracePeriodSeconds": 1
    });
    assert_eq!(
        with_auth(
            "POST",
            &format!("{base}/v2/apps"),
            "ops:pw-admin-1",
            Some(&app)
        )
        .0,
        201
    );
    // The page as the read-only user: every request of the page carries its credentials.
    let browser = Browser::start();
    let mut tab = browser.open("about:blank");
    tab.call("Network.enable", json!({}));
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("viewer:pw-viewer-1")
    );
    tab.call(
        "Network.setExtraHTTPHeaders",
        json!({ "headers": { "Authorization": auth } }),
    );
    tab.call("Page.navigate", json!({ "url": format!("{base}/ui/") }));
    tab.until(
        "the page live with the agent and the app",
        "document.body.dataset.loaded === 'true' && document.getElementById('agents-online').textContent === '1' \
         && !!document.querySelector('#apps tr[data-app=\"/ui/ro\"]')",
    );
    let refused = |tab: &mut Tab, what: &str| {
        tab.until(
            &format!("{what} refused in the notice"),
            &format!(
                "(() => {{ const n = document.getElementById('notice'); return !n.hidden \
                 && n.textContent.startsWith({what:?}) && n.textContent.includes('needs the admin role'); }})()"
            ),
        );
        tab.eval("document.getElementById('notice').textContent = ''");
    };
    // Scale: asked, then refused; the app keeps its one instance.
    tab.click("#apps tr[data-app=\"/ui/ro\"] button[data-action=scale]");
    tab.until("the scale dialog", "document.getElementById('ask').open");
    tab.eval("document.getElementById('ask-number').value = '3'");
    tab.click("#ask-ok");
    refused(&mut tab, "scale /ui/ro");
    tab.click("#apps tr[data-app=\"/ui/ro\"] button[data-action=restart]");
    refused(&mut tab, "restart /ui/ro");
    tab.click("#apps tr[data-app=\"/ui/ro\"] button[data-action=destroy]");
    tab.until("the confirmation", "document.getElementById('ask').open");
    tab.click("#ask-ok");
    refused(&mut tab, "destroy /ui/ro");
    tab.until(
        "the app's task on the page",
        "!!document.querySelector('#tasks tr[data-task] button[data-action=kill]')",
    );
    tab.click("#tasks tr[data-task] button[data-action=kill]");
    tab.until("the confirmation", "document.getElementById('ask').open");
    tab.click("#ask-ok");
    refused(&mut tab, "kill ");
    // The agent's drain.
    tab.click(&format!("#agents tr[data-agent=\"{agent_id}\"] b"));
    tab.click("#agent-body button[data-action=drain]");
    tab.until("the confirmation", "document.getElementById('ask').open");
    tab.click("#ask-ok");
    refused(&mut tab, &format!("drain {agent_id}"));
    tab.eval("document.getElementById('agent').close()");
    // Deploy from the form: the refusal under the form, which stays open.
    tab.click("#deploy-open");
    let other = json!({ "id": "/ui/other", "cpus": 0.05, "mem": 32, "instances": 1,
                        "container": { "type": "DOCKER", "docker": { "image": image::TEST_IMAGE } } });
    tab.eval(&format!(
        "document.getElementById('deploy-json').value = {:?}",
        other.to_string()
    ));
    tab.click("#deploy-submit");
    tab.until(
        "the deploy refused under the form",
        "document.getElementById('deploy-errors').textContent.includes('needs the admin role') \
         && document.getElementById('deploy').open",
    );
    tab.screenshot("ui-read-only.png");
    // Nothing changed at the bridge: one instance, its task not killed.
    let admin_get =
        |path: &str| with_auth("GET", &format!("{base}{path}"), "ops:pw-admin-1", None).1;
    let apps = admin_get("/v2/apps");
    let list = apps["apps"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{apps}");
    assert_eq!(list[0]["instances"], json!(1), "{apps}");
    let tasks = admin_get("/v2/tasks");
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1, "{tasks}");
}
