//! The `outpost` CLI against a real bridge, agent, mosquitto and dockerd: each subcommand's
//! output and exit status, a deploy that succeeds and one that fails with the pull error, task
//! logs (tail, and a follow that ends when the task does), the event stream, errors that say
//! what was wrong (unknown app, bridge unreachable, 401 with how to log in), and the progress
//! display: a bar under a pseudo-terminal (its final frame), plain lines on a pipe.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use outpost_tests::agent::Agent;
use outpost_tests::bridge::Bridge;
use outpost_tests::mosquitto::Broker;
use outpost_tests::{bin_path, image, wait};

const LONG: Duration = Duration::from_secs(90);

/// What one run of the CLI did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn outpost_bin() -> std::path::PathBuf {
    bin_path::binary("outpost-cli", "outpost").unwrap()
}

/// Runs `outpost --bridge URL args...` with no config file and no token in its environment.
fn outpost(bridge: &str, args: &[&str]) -> Run {
    let out = Command::new(outpost_bin())
        .arg("--bridge")
        .arg(bridge)
        .args(args)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("OUTPOST_TOKEN")
        .env_remove("OUTPOST_BRIDGE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn ok(bridge: &str, args: &[&str]) -> String {
    let r = outpost(bridge, args);
    assert_eq!(r.code, 0, "outpost {args:?}: {r:?}");
    r.stdout
}

fn app_def(id: &str, image: &str, instances: u32, cmd: Option<&str>) -> Value {
    let mut app = json!({
        "id": id,
        "cpus": 0.05, "mem": 32, "instances": instances,
        "container": {
            "type": "DOCKER",
            "docker": { "image": image, "network": "BRIDGE" },
            "portMappings": [{ "containerPort": 80, "hostPort": 0 }]
        },
        "healthChecks": [{ "protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
                           "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 2 }],
        "backoffSeconds": 1, "taskKillGracePeriodSeconds": 1
    });
    if let Some(c) = cmd {
        app["cmd"] = json!(c);
        app["healthChecks"] = json!([]);
    }
    app
}

fn write_def(dir: &std::path::Path, name: &str, def: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, def.to_string()).unwrap();
    p.display().to_string()
}

/// The text a terminal would show last: the output after the final carriage return of its
/// last line, escape sequences removed.
fn final_frame(raw: &str) -> String {
    let mut plain = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    let last = plain
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    last.rsplit('\r').next().unwrap_or("").trim().to_string()
}

#[test]
fn the_cli_lists_deploys_follows_reads_logs_and_says_what_went_wrong() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    let url = bridge.url("");
    let url = url.trim_end_matches('/');
    let id = Agent::unique_id("cli");
    let _agent = Agent::start(&id, &broker.url(), (21440, 21459), "").unwrap();
    wait::until("the agent online", LONG, || {
        ok(url, &["agents"]).contains("online").then_some(())
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Agents: a table with a header, and JSON for scripts.
    let agents = ok(url, &["agents"]);
    let header = agents.lines().next().unwrap();
    assert!(header.starts_with("ID") && header.contains("STATE") && header.contains("TASKS"));
    assert!(
        agents
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("online")),
        "{agents}"
    );
    let v: Value = serde_json::from_str(&ok(url, &["--json", "agents"])).unwrap();
    assert_eq!(v["agents"][0]["id"], id.as_str());

    // A deploy on a pipe: plain progress lines, then done; exit 0.
    let web = write_def(
        dir.path(),
        "web.json",
        &app_def("/cli/web", image::TEST_IMAGE, 2, None),
    );
    let out = ok(url, &["deploy", &web]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with("deploy /cli/web: ")),
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"deploy /cli/web: done"), "{out}");
    assert!(
        out.contains("0 staged, 2 running, 2 healthy of 2"),
        "the last counts before done: {out}"
    );
    assert!(
        !out.contains('\r') && !out.contains('\u{1b}'),
        "no terminal codes on a pipe"
    );
    let apps = ok(url, &["apps"]);
    assert!(
        apps.lines()
            .any(|l| l.starts_with("/cli/web") && l.contains(image::TEST_IMAGE)),
        "{apps}"
    );
    let app = ok(url, &["app", "cli/web"]);
    assert!(
        app.contains("instances:   2 (0 staged, 2 running, 2 healthy)"),
        "{app}"
    );
    let tasks = ok(url, &["tasks", "--app", "/cli/web"]);
    assert_eq!(
        tasks.lines().filter(|l| l.contains("TASK_RUNNING")).count(),
        2,
        "{tasks}"
    );
    assert!(tasks.contains("healthy"), "{tasks}");
    let agent = ok(url, &["agent", &id]);
    assert!(agent.contains("tasks:       2"), "{agent}");

    // Scale on a pseudo-terminal: a progress bar whose last frame is complete.
    let pty = Command::new("script")
        .args(["-qfec"])
        .arg(format!(
            "{} --bridge {url} scale /cli/web 3 --per-host",
            outpost_bin().display()
        ))
        .arg("/dev/null")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&pty.stdout).to_string();
    assert!(pty.status.success(), "{raw}");
    assert!(
        raw.contains('\r') || raw.contains('\u{1b}'),
        "drawn as a bar: {raw:?}"
    );
    let frame = final_frame(&raw);
    assert!(
        frame.starts_with("scale /cli/web [="),
        "{frame:?} of {raw:?}"
    );
    assert!(
        frame.contains("3/3") && frame.ends_with("done"),
        "{frame:?}"
    );
    assert!(
        frame.contains(": running,running,running]"),
        "per host: {frame:?}"
    );

    // An event stream that a change shows up on.
    let mut events = Command::new(outpost_bin())
        .args(["--bridge", url, "events", "--type", "event_stream_attached"])
        .args(["--type", "deployment_success"])
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let events_out = events.stdout.take().unwrap();
    let mut events_out = std::io::BufReader::new(events_out);
    let mut line = String::new();
    // Attached first: what happens from now on is on the stream.
    std::io::BufRead::read_line(&mut events_out, &mut line).unwrap();
    assert!(line.contains(" event_stream_attached "), "{line}");
    let detached = ok(url, &["scale", "/cli/web", "2", "--detach"]);
    assert!(
        detached.starts_with("scale /cli/web: deployment "),
        "{detached}"
    );
    line.clear();
    std::io::BufRead::read_line(&mut events_out, &mut line).unwrap();
    assert!(line.contains(" deployment_success "), "{line}");
    events.kill().unwrap();
    events.wait().unwrap();

    // Logs: a task that prints known lines, its tail; a follow that ends with its container.
    let chatty = write_def(
        dir.path(),
        "chatty.json",
        &app_def(
            "/cli/chatty",
            image::TEST_IMAGE,
            1,
            Some("echo hello-1; echo oops-1 >&2; echo hello-2; sleep 4; echo bye"),
        ),
    );
    ok(url, &["deploy", &chatty]);
    let task: Value =
        serde_json::from_str(&ok(url, &["--json", "tasks", "--app", "cli/chatty"])).unwrap();
    let task_id = task["tasks"][0]["id"].as_str().unwrap().to_string();
    let both = wait::until("the known lines in the log", LONG, || {
        let r = outpost(url, &["logs", &task_id]);
        (r.code == 0 && r.stdout.contains("hello-2")).then_some(r.stdout)
    })
    .unwrap();
    assert!(
        both.contains("hello-1") && both.contains("oops-1"),
        "{both}"
    );
    let err = ok(url, &["logs", &task_id, "--stderr"]);
    assert_eq!(err.lines().next(), Some("oops-1"), "{err}");
    let followed = wait::until("a follow that ends with the container", LONG, || {
        let r = outpost(url, &["logs", &task_id, "-f", "--stdout"]);
        (r.code == 0 && r.stdout.ends_with("bye\n")).then_some(r.stdout)
    })
    .unwrap();
    assert!(followed.starts_with("hello-1\n"), "{followed}");

    // A deploy that cannot pull: non-zero, and the pull error said.
    let bad = write_def(
        dir.path(),
        "bad.json",
        &app_def("/cli/bad", "127.0.0.1:1/outpost/none:1", 1, None),
    );
    let r = outpost(url, &["deploy", &bad, "--timeout", "60"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("TASK_FAILED"), "{r:?}");
    assert!(
        r.stderr.contains("127.0.0.1:1/outpost/none:1"),
        "the image named: {r:?}"
    );
    assert!(
        r.stdout.trim_end().ends_with("deploy /cli/bad: failed"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("outpost destroy --force /cli/bad"),
        "{r:?}"
    );
    for app in ["/cli/bad", "/cli/chatty"] {
        // The bad app's deployment is still under way: it takes --force.
        let out = ok(url, &["destroy", "--force", app]);
        assert!(
            out.trim_end().ends_with(&format!("destroy {app}: done")),
            "{out}"
        );
    }
    assert!(!ok(url, &["apps"]).contains("/cli/bad"));

    // Errors name what was wrong.
    let r = outpost(url, &["app", "/cli/nope"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("/cli/nope") && r.stderr.contains("does not exist"),
        "{r:?}"
    );
    let r = outpost("http://127.0.0.1:1", &["apps"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("bridge unreachable at http://127.0.0.1:1"),
        "{r:?}"
    );
    let r = outpost("ftp://x", &["apps"]);
    assert!(r.stderr.contains("--bridge \"ftp://x\""), "{r:?}");
    let r = outpost(url, &["scale", "/cli/web", "many"]);
    assert_eq!(r.code, 2, "a usage error: {r:?}");
    assert!(r.stderr.contains("'many'"), "{r:?}");

    // --help on every subcommand; completions.
    for sub in [
        "agents",
        "agent",
        "apps",
        "app",
        "tasks",
        "deploy",
        "scale",
        "restart",
        "destroy",
        "logs",
        "events",
        "completions",
    ] {
        let help = ok(url, &[sub, "--help"]);
        assert!(help.contains("Usage: outpost"), "{sub}: {help}");
    }
    assert!(ok(url, &["deploy", "--help"]).contains("--detach"));
    assert!(ok(url, &["completions", "bash"]).contains("_outpost"));
}

#[test]
fn a_bridge_that_wants_credentials_gets_a_401_with_how_to_log_in_and_the_token_works_over_https() {
    let certs = tempfile::tempdir().unwrap();
    outpost_tests::process::run(
        Command::new(bin_path::path("outpost-bridge").unwrap())
            .arg("issue-certs")
            .arg("--dir")
            .arg(certs.path()),
    )
    .unwrap();
    let ca = certs.path().join("ca.pem");
    let broker = Broker::start().unwrap();
    let token = "cli-token-0123456789";
    let bridge = Bridge::start_no_wait(
        &broker.url(),
        &format!(
            "[[api_tokens]]\ntoken = \"{token}\"\nrole = \"read\"\n\
             [api_tls]\ncert_file = \"{0}/broker.pem\"\nkey_file = \"{0}/broker.key\"\n",
            certs.path().display()
        ),
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{}", bridge.port());
    wait::until("the bridge up over TLS", LONG, || {
        (outpost_tests::http::curl_tls(&ca, &[&format!("{url}/ping")]).0 == 200).then_some(())
    })
    .unwrap();
    // Without the fleet CA the bridge's certificate is not trusted; with it, on to the 401.
    let r = outpost(&url, &["apps"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!("bridge unreachable at {url}")),
        "{r:?}"
    );
    let ca_arg = ca.display().to_string();
    let r = outpost(&url, &["--ca", &ca_arg, "apps"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("401"), "{r:?}");
    assert!(r.stderr.contains("OUTPOST_TOKEN"), "how to log in: {r:?}");
    // The token from the environment, then from the config file.
    let out = Command::new(outpost_bin())
        .args(["--bridge", &url, "--ca", &ca_arg, "apps"])
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("OUTPOST_TOKEN", token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ID"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("outpost")).unwrap();
    std::fs::write(
        dir.path().join("outpost/cli.toml"),
        format!("bridge = \"{url}\"\ntoken = \"{token}\"\nca = \"{ca_arg}\"\n"),
    )
    .unwrap();
    let out = Command::new(outpost_bin())
        .args(["apps"])
        .env("XDG_CONFIG_HOME", dir.path())
        .env_remove("OUTPOST_TOKEN")
        .env_remove("OUTPOST_BRIDGE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A read token may not change anything: 403 saying so.
    let def = dir.path().join("a.json");
    std::fs::write(&def, app_def("/x", image::TEST_IMAGE, 1, None).to_string()).unwrap();
    let out = Command::new(outpost_bin())
        .args(["deploy", def.to_str().unwrap(), "--detach"])
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403") && err.contains("admin"), "{err}");
}

#[test]
fn outpost_pull_follows_a_real_pull_to_its_end_and_a_failed_one_to_its_error() {
    // An image of its own (2 MiB of random bytes: a layer no other image shares), so the agent
    // downloads a real layer.
    let root = tempfile::tempdir().unwrap();
    let mut noise = vec![0u8; 2 << 20];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut noise,
    )
    .unwrap();
    std::fs::write(root.path().join("noise"), &noise).unwrap();
    let local = format!("outpost-test/cli-pull:{}", std::process::id());
    let tar = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | docker import - {local}",
            root.path().display()
        ))
        .output()
        .unwrap();
    assert!(tar.status.success(), "{tar:?}");
    let mut registry = outpost_tests::registry::Registry::start().unwrap();
    let remote = registry.push(&local, "outpost/cli-pull:1").unwrap();
    outpost_tests::docker::docker(&["rmi", &local]).unwrap();
    // The agent must pull it: the pushed tag must not be present locally.
    outpost_tests::docker::docker(&["rmi", &remote]).unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    let url = bridge.url("");
    let url = url.trim_end_matches('/');
    let id = Agent::unique_id("cli-pull");
    let _agent = Agent::start(&id, &broker.url(), (21460, 21469), "").unwrap();
    wait::until("the agent online", LONG, || {
        ok(url, &["agents"]).contains("online").then_some(())
    })
    .unwrap();

    let out = ok(url, &["pull", &id, &remote]);
    let label = format!("pull {remote} on {id}: ");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with(&label)), "{out}");
    assert_eq!(lines.last().copied(), Some(format!("{label}done").as_str()));
    // The last report before done: every layer in, every byte.
    let figures = lines[lines.len() - 2].trim_start_matches(&label);
    let (layers, bytes) = figures.split_once(" layers, ").unwrap();
    let (done, total) = layers.split_once('/').unwrap();
    assert_eq!(done, total, "{figures}");
    assert_eq!(total, "1", "{figures}");
    let (b_done, b_total) = bytes.trim_end_matches(" MiB").split_once('/').unwrap();
    assert_eq!(b_done, b_total, "{figures}");
    // The layer's compressed size: random bytes do not compress.
    let mib: f64 = b_total.parse().unwrap();
    assert!((1.9..2.2).contains(&mib), "{figures}");
    assert!(
        outpost_tests::docker::docker(&["image", "inspect", &remote]).is_ok(),
        "the agent's dockerd has it"
    );

    // A Marathon client's stream (no event_type filter) gets none of Outpost's own event types:
    // marathon-python refuses types it does not know.
    let mut plain = Command::new("curl")
        .args(["-sS", "-N", "-H", "Accept: text/event-stream"])
        .arg(bridge.url("/v2/events"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut plain_out = std::io::BufReader::new(plain.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut plain_out, &mut first).unwrap();
    assert!(first.contains("event_stream_attached"), "{first}");
    let r = outpost(url, &["pull", &id, "127.0.0.1:1/outpost/none:1"]);
    assert_eq!(r.code, 1, "{r:?}");
    // A change after the pull: once its event is on the plain stream, so would the pull's be.
    ok(
        url,
        &["deploy", "--detach", &{
            let p = root.path().join("after.json");
            std::fs::write(
                &p,
                json!({ "id": "/cli/after", "cpus": 0.01, "mem": 8, "instances": 0,
            "container": { "type": "DOCKER", "docker": { "image": image::TEST_IMAGE } } })
                .to_string(),
            )
            .unwrap();
            p.display().to_string()
        }],
    );
    let mut seen = String::new();
    while !seen.contains("api_post_event") && !seen.contains("deployment_info") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut plain_out, &mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
    }
    plain.kill().unwrap();
    plain.wait().unwrap();
    assert!(
        seen.contains("deployment_info") || seen.contains("api_post_event"),
        "{seen}"
    );
    assert!(!seen.contains("outpost_"), "{seen}");
    assert!(
        r.stderr.contains("pull 127.0.0.1:1/outpost/none:1 on") && r.stderr.contains("failed: "),
        "{r:?}"
    );
    let r = outpost(url, &["pull", "no-such-agent", &remote]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Agent 'no-such-agent' does not exist"),
        "{r:?}"
    );

    // A launch's pull shows in `outpost deploy`'s lines: an image of its own that runs
    // (busybox and 2 MiB of other random bytes), not on the agent's dockerd.
    let run_root = tempfile::tempdir().unwrap();
    let bin = run_root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut noise,
    )
    .unwrap();
    std::fs::write(run_root.path().join("noise"), &noise).unwrap();
    let local_run = format!("outpost-test/cli-run:{}", std::process::id());
    let tar = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | docker import -c 'CMD [\"/bin/sleep\", \"3600\"]' - {local_run}",
            run_root.path().display()
        ))
        .output()
        .unwrap();
    assert!(tar.status.success(), "{tar:?}");
    let pushed = registry.push(&local_run, "outpost/cli-run:1").unwrap();
    outpost_tests::docker::docker(&["rmi", &local_run]).unwrap();
    outpost_tests::docker::docker(&["rmi", &pushed]).unwrap();
    // Pulled through a link paced to 1 MiB/s (loopback is too fast for a pull to last until
    // its first report, every 250 ms): about 3 s for its 3 MiB.
    let (_, name) = pushed.split_once('/').unwrap();
    let registry_port: u16 = pushed
        .split_once('/')
        .and_then(|(host, _)| host.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap();
    let slow = outpost_tests::proxy::TcpProxy::start_paced(registry_port, Some(1 << 20)).unwrap();
    let remote_run = format!("127.0.0.1:{}/{name}", slow.port());
    let def = app_def("/cli/pulled", &remote_run, 1, Some("exec sleep 3600"));
    let file = write_def(root.path(), "pulled.json", &def);
    let r = outpost(url, &["deploy", &file]);
    assert_eq!(r.code, 0, "{r:?}");
    let both = format!("{}{}", r.stdout, r.stderr);
    assert!(
        both.contains(&format!("pulling {remote_run} on {id}: ")),
        "the pull's progress in the deploy's lines: {r:?}"
    );
    ok(url, &["destroy", "/cli/pulled"]);
}

#[test]
fn outpost_drain_moves_an_agent_s_tasks_elsewhere_and_undrain_takes_launches_again() {
    image::ensure().unwrap();
    let broker = Broker::start().unwrap();
    let bridge = Bridge::start(&broker.url(), "").unwrap();
    let url = bridge.url("");
    let url = url.trim_end_matches('/');
    let a = Agent::unique_id("drain-a");
    let b = Agent::unique_id("drain-b");
    // Both run on this host: a rack attribute tells them apart for the constraint.
    let rack = |r: &str| format!("[attributes]\nrack = \"{r}\"\n");
    let _agent_a = Agent::start(&a, &broker.url(), (21470, 21479), &rack("a")).unwrap();
    let _agent_b = Agent::start(&b, &broker.url(), (21480, 21489), &rack("b")).unwrap();
    wait::until("both agents online", LONG, || {
        (ok(url, &["agents"]).matches("online").count() == 2).then_some(())
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // At most one instance per agent (the constraint), then the drain of one of them.
    let mut def = app_def("/cli/spread", image::TEST_IMAGE, 2, None);
    def["constraints"] = json!([["rack", "UNIQUE"]]);
    def["instances"] = json!(1);
    let spread = write_def(dir.path(), "spread.json", &def);
    ok(url, &["deploy", &spread]);
    let tasks: Value =
        serde_json::from_str(&ok(url, &["--json", "tasks", "--app", "/cli/spread"])).unwrap();
    let first = tasks["tasks"][0].clone();
    let (from, to) = if first["slaveId"] == a.as_str() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let out = ok(url, &["drain", from]);
    let moved = first["id"].as_str().unwrap();
    assert!(
        out.contains(&format!("drain {from}: moving 1 task(s)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("drain {from}: moving {moved}")),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(&format!("drain {from}: done")),
        "{out}"
    );
    let tasks: Value =
        serde_json::from_str(&ok(url, &["--json", "tasks", "--app", "/cli/spread"])).unwrap();
    let now = &tasks["tasks"].as_array().unwrap();
    assert_eq!(now.len(), 1, "{tasks}");
    assert_eq!(now[0]["slaveId"], to.as_str(), "moved to the other agent");
    assert_eq!(now[0]["state"], "TASK_RUNNING");
    let agent = ok(url, &["agent", from]);
    assert!(agent.contains("state:       draining"), "{agent}");
    assert!(agent.contains("tasks:       0"), "{agent}");
    // Drained, it takes nothing: a second instance (UNIQUE rack) has nowhere to go...
    let r = outpost(url, &["scale", "/cli/spread", "2", "--timeout", "5"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("still under way"), "{r:?}");
    // ...until the agent is undrained.
    assert_eq!(
        ok(url, &["undrain", from]).trim(),
        format!("undrain {from}: taking launches again")
    );
    wait::until("the second instance on the undrained agent", LONG, || {
        let v: Value =
            serde_json::from_str(&ok(url, &["--json", "tasks", "--app", "/cli/spread"])).ok()?;
        v["tasks"]
            .as_array()?
            .iter()
            .any(|t| t["slaveId"] == from.as_str() && t["state"] == "TASK_RUNNING")
            .then_some(())
    })
    .unwrap();
    assert!(ok(url, &["agent", from]).contains("state:       online"));
    let r = outpost(url, &["drain", "no-such-agent"]);
    assert!(
        r.stderr.contains("Agent 'no-such-agent' does not exist"),
        "{r:?}"
    );
}
