//! dockerd through bollard: images, containers, the events stream and exec for COMMAND checks.
//! Always negotiates the API version (Debian's dockerd 20.10 speaks 1.41).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, PortBinding};

use crate::config::LogLimits;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions,
    ListImagesOptions, RemoveContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;

use outpost_protocol::{NetworkMode, PortProtocol, TaskSpec, VolumeMode};

use super::{Jitter, backoff};
use crate::config::{Config, DockerEndpoint};
use crate::core::{Event, ObservedContainer};

/// Label: the container belongs to Outpost's agent with this id.
pub const LABEL_AGENT: &str = "outpost.agent-id";
/// Label: the task the container runs.
pub const LABEL_TASK: &str = "outpost.task-id";
/// Label: a hash of the task spec, telling apart containers of a changed spec.
pub const LABEL_SPEC_HASH: &str = "outpost.spec-hash";

/// Connects to dockerd and negotiates the API version.
pub async fn connect(endpoint: &DockerEndpoint) -> Result<Docker, bollard::errors::Error> {
    let docker = match endpoint {
        DockerEndpoint::Unix(path) => {
            Docker::connect_with_unix(&path.to_string_lossy(), 120, bollard::API_DEFAULT_VERSION)?
        }
        DockerEndpoint::Tcp(addr) => {
            Docker::connect_with_http(addr, 120, bollard::API_DEFAULT_VERSION)?
        }
    };
    docker.negotiate_version().await
}

/// How far a pull has come, from dockerd's progress messages: one entry per layer.
#[derive(Debug, Default)]
pub struct PullTracker {
    /// Layer id -> (bytes downloaded, bytes in all (0: not known yet), done).
    layers: std::collections::BTreeMap<String, (u64, u64, bool)>,
}

/// What a [`PullTracker`] says: layers done and seen, bytes done and known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PullFigures {
    /// Layers downloaded and extracted, or already present.
    pub layers_done: u32,
    /// Layers seen.
    pub layers_total: u32,
    /// Bytes downloaded of layers whose size is known.
    pub bytes_done: u64,
    /// Bytes of the layers whose size is known.
    pub bytes_total: u64,
}

impl PullTracker {
    /// Takes one progress message of dockerd's pull stream.
    pub fn update(&mut self, info: &bollard::models::CreateImageInfo) {
        let (Some(id), Some(status)) = (&info.id, &info.status) else {
            return;
        };
        // The first line names the tag being pulled (`Pulling from team/web`, id `1`), the
        // last ones the digest: not layers.
        if status.starts_with("Pulling from") || status.starts_with("Digest") {
            return;
        }
        let layer = self.layers.entry(id.clone()).or_default();
        match status.as_str() {
            "Pull complete" | "Already exists" => layer.2 = true,
            "Downloading" => {
                if let Some(d) = &info.progress_detail {
                    layer.0 = d
                        .current
                        .and_then(|c| u64::try_from(c).ok())
                        .unwrap_or(layer.0);
                    layer.1 = d
                        .total
                        .and_then(|t| u64::try_from(t).ok())
                        .unwrap_or(layer.1);
                }
            }
            // Downloaded whole: what is known of its size is all there is.
            "Download complete" | "Verifying Checksum" => layer.0 = layer.0.max(layer.1),
            _ => {}
        }
    }

    /// The figures now.
    pub fn figures(&self) -> PullFigures {
        let mut f = PullFigures::default();
        for (current, total, done) in self.layers.values() {
            f.layers_total += 1;
            f.layers_done += u32::from(*done);
            if *total > 0 {
                f.bytes_total += total;
                f.bytes_done += if *done {
                    *total
                } else {
                    (*current).min(*total)
                };
            }
        }
        f
    }
}

/// How often pull progress goes out at most.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Makes sure `image` is present, pulling it when missing or when `force` is set; a pull
/// reports how far it is through `progress` (at most every [`PROGRESS_EVERY`], and once at the
/// end, successful or not).
pub async fn ensure_image(
    docker: &Docker,
    config: &Config,
    image: &str,
    force: bool,
    progress: impl Fn(PullFigures, bool, Option<&str>),
) -> Result<(), String> {
    if !force && image_present(docker, image).await {
        return Ok(());
    }
    let mut tracker = PullTracker::default();
    let mut last = std::time::Instant::now();
    let result = pull(docker, config, image, &mut |info| {
        tracker.update(info);
        if last.elapsed() >= PROGRESS_EVERY {
            last = std::time::Instant::now();
            progress(tracker.figures(), false, None);
        }
    })
    .await;
    progress(
        tracker.figures(),
        true,
        result.as_ref().err().map(String::as_str),
    );
    result
}

async fn pull(
    docker: &Docker,
    config: &Config,
    image: &str,
    seen: &mut impl FnMut(&bollard::models::CreateImageInfo),
) -> Result<(), String> {
    let credentials = config.registry_auth(image).map(|r| DockerCredentials {
        username: Some(r.username.clone()),
        password: Some(r.password.clone()),
        serveraddress: Some(r.host.clone()),
        ..Default::default()
    });
    let (from_image, tag) = split_tag(image);
    let options = CreateImageOptions {
        from_image: Some(from_image.to_string()),
        tag: Some(tag.to_string()),
        ..Default::default()
    };
    let mut pull = docker.create_image(Some(options), None, credentials);
    while let Some(progress) = pull.next().await {
        match progress {
            Ok(info) => {
                seen(&info);
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(format!("pull {image}: {detail}"));
                }
            }
            Err(e) => return Err(format!("pull {image}: {}", docker_message(&e))),
        }
    }
    Ok(())
}

/// Whether dockerd has `image` (untagged means `:latest`, as Docker pulls it). Lists images
/// by reference rather than inspecting one: the summary is much smaller to decode, which keeps
/// the static binary small.
async fn image_present(docker: &Docker, image: &str) -> bool {
    let (repo, tag) = split_tag(image);
    let reference = if tag.is_empty() {
        repo.to_string()
    } else {
        format!("{repo}:{tag}")
    };
    let mut filters = HashMap::new();
    filters.insert("reference".to_string(), vec![reference]);
    let options = ListImagesOptions {
        filters: Some(filters),
        ..Default::default()
    };
    docker
        .list_images(Some(options))
        .await
        .is_ok_and(|images| !images.is_empty())
}

#[cfg(test)]
mod pull_tests {
    use super::*;
    use bollard::models::{CreateImageInfo, ProgressDetail};

    fn info(id: &str, status: &str, current: Option<i64>, total: Option<i64>) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail { current, total }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pull_is_counted_by_layer_and_by_byte_as_dockerd_reports_it() {
        let mut t = PullTracker::default();
        for i in [
            info("1", "Pulling from outpost/web", None, None),
            info("aaa", "Already exists", None, None),
            info("bbb", "Pulling fs layer", None, None),
            info("ccc", "Waiting", None, None),
            info("bbb", "Downloading", Some(1000), Some(4000)),
        ] {
            t.update(&i);
        }
        let f = t.figures();
        assert_eq!((f.layers_done, f.layers_total), (1, 3));
        assert_eq!((f.bytes_done, f.bytes_total), (1000, 4000));
        t.update(&info("bbb", "Download complete", None, None));
        t.update(&info("ccc", "Downloading", Some(10), Some(100)));
        t.update(&info("bbb", "Pull complete", None, None));
        let f = t.figures();
        assert_eq!((f.layers_done, f.layers_total), (2, 3));
        assert_eq!((f.bytes_done, f.bytes_total), (4010, 4100));
        t.update(&info("ccc", "Pull complete", None, None));
        t.update(&info("1", "Digest: sha256:0123", None, None));
        let f = t.figures();
        assert_eq!((f.layers_done, f.layers_total, f.bytes_done), (3, 3, 4100));
    }
}

/// One container's summary (state, status line, networks), found by id.
async fn summary(
    docker: &Docker,
    container_id: &str,
) -> Result<Option<bollard::models::ContainerSummary>, bollard::errors::Error> {
    let mut filters = HashMap::new();
    filters.insert("id".to_string(), vec![container_id.to_string()]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    Ok(docker
        .list_containers(Some(options))
        .await?
        .into_iter()
        .next())
}

/// The exit code in a status line such as `Exited (3) 2 seconds ago`.
fn exit_code_of(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split(')').next()?.parse().ok()
}

/// `repo[:tag]` → (`repo`, `tag`), with `latest` when no tag is given; a digest stays whole.
fn split_tag(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// The message of a bollard error, without its Rust type noise.
fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A stable hash of the spec (FNV-1a over its CBOR), for the spec-hash label.
fn spec_hash(spec: &TaskSpec) -> String {
    let cmd = outpost_protocol::Command {
        kind: outpost_protocol::CommandKind::Launch(spec.clone()),
        ..Default::default()
    };
    let bytes = outpost_protocol::codec::encode_to_vec(&cmd);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Creates the task's container: labels, networking with port NAT, volumes, env, limits.
/// Docker's own restart policy stays off: the agent supervises.
pub async fn create(
    docker: &Docker,
    agent_id: &str,
    spec: &TaskSpec,
    host_ports: &[u16],
    logs: LogLimits,
) -> Result<String, String> {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|kv| (kv.name.to_string(), kv.value.to_string()))
        .collect();
    labels.insert(LABEL_AGENT.into(), agent_id.into());
    labels.insert(LABEL_TASK.into(), spec.task_id.to_string());
    labels.insert(LABEL_SPEC_HASH.into(), spec_hash(spec));

    // Marathon's environment: PORT0.., PORT_<containerPort>, PORTS, HOST.
    let mut env: Vec<String> = spec
        .env
        .iter()
        .map(|kv| format!("{}={}", kv.name, kv.value))
        .collect();
    for (i, (m, hp)) in spec.port_mappings.iter().zip(host_ports).enumerate() {
        env.push(format!("PORT{i}={hp}"));
        env.push(format!("PORT_{}={hp}", m.container_port));
    }
    if !host_ports.is_empty() {
        let ports: Vec<String> = host_ports.iter().map(u16::to_string).collect();
        env.push(format!("PORTS={}", ports.join(",")));
        env.push(format!("PORT={}", host_ports[0]));
    }
    env.push(format!("HOST={}", crate::config::hostname()));

    let mut exposed: Vec<String> = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    if spec.network == NetworkMode::Bridge {
        for (m, hp) in spec.port_mappings.iter().zip(host_ports) {
            let proto = match m.protocol {
                PortProtocol::Tcp => "tcp",
                PortProtocol::Udp => "udp",
            };
            let key = format!("{}/{proto}", m.container_port);
            exposed.push(key.clone());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(hp.to_string()),
                }]),
            );
        }
    }
    let binds: Vec<String> = spec
        .volumes
        .iter()
        .map(|v| {
            let mode = match v.mode {
                VolumeMode::Ro => "ro",
                VolumeMode::Rw => "rw",
            };
            format!("{}:{}:{mode}", v.host_path, v.container_path)
        })
        .collect();
    let (entrypoint, cmd) = match (&spec.cmd, spec.args.is_empty()) {
        // Marathon `cmd` runs through a shell, replacing the image's entrypoint.
        (Some(cmd), _) => (
            Some(vec!["/bin/sh".to_string(), "-c".to_string()]),
            Some(vec![cmd.to_string()]),
        ),
        (None, false) => (
            None,
            Some(spec.args.iter().map(|a| a.to_string()).collect()),
        ),
        (None, true) => (None, None),
    };
    let size_mib = spec.log_max_size_mib.map_or(logs.max_size_mib, u64::from);
    let files = spec.log_max_files.unwrap_or(logs.max_files);
    let network_mode = match spec.network {
        NetworkMode::Bridge => "bridge",
        NetworkMode::Host => "host",
        NetworkMode::None => "none",
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.to_string()),
        entrypoint,
        cmd,
        env: Some(env),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            network_mode: Some(network_mode.into()),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            binds: (!binds.is_empty()).then_some(binds),
            // As Mesos's Docker containerizer by default: CPU shares (a weight under
            // contention, 1024 per CPU), no CFS quota, which would throttle even the start of a
            // 0.01-CPU task; memory is a hard limit. Whole numbers well inside i64.
            cpu_shares: Some(((spec.cpus * 1024.0) as i64).max(2)),
            memory: Some((spec.mem_mib * 1024.0 * 1024.0) as i64),
            // Only when asked for and allowed (core/validate.rs `policy`).
            privileged: spec.privileged.then_some(true),
            // Rotated, whatever dockerd's default is: a chatty task must not fill the disk. The
            // task's own limits were checked against the host's maximum (core/validate.rs).
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), format!("{}m", size_mib)),
                    ("max-file".to_string(), files.to_string()),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .map(|r| r.id)
        .map_err(|e| {
            format!(
                "create container for {}: {}",
                spec.task_id,
                docker_message(&e)
            )
        })
}

/// Starts a created container and returns its IP on its network.
pub async fn start(docker: &Docker, container_id: &str) -> Result<Option<String>, String> {
    docker
        .start_container(container_id, None)
        .await
        .map_err(|e| format!("start container {container_id}: {}", docker_message(&e)))?;
    let found = summary(docker, container_id)
        .await
        .map_err(|e| format!("list container {container_id}: {}", docker_message(&e)))?;
    let ip = found.and_then(|c| c.network_settings).and_then(|n| {
        n.networks
            .into_iter()
            .flat_map(|m| m.into_values())
            .filter_map(|e| e.ip_address)
            .find(|ip| !ip.is_empty())
    });
    Ok(ip)
}

/// SIGTERM, then SIGKILL after `grace_s`.
pub async fn stop(docker: &Docker, container_id: &str, grace_s: u32) -> Result<(), String> {
    let options = StopContainerOptions {
        t: Some(i32::try_from(grace_s).unwrap_or(i32::MAX)),
        signal: None,
    };
    docker
        .stop_container(container_id, Some(options))
        .await
        .map_err(|e| format!("stop container {container_id}: {}", docker_message(&e)))
}

/// Removes a container (forced) with its anonymous volumes.
pub async fn remove(docker: &Docker, container_id: &str) -> Result<(), String> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    match docker.remove_container(container_id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(format!(
            "remove container {container_id}: {}",
            docker_message(&e)
        )),
    }
}

/// This agent's labelled containers, running or not.
pub async fn list(docker: &Docker, agent_id: &str) -> Result<Vec<ObservedContainer>, String> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("{LABEL_AGENT}={agent_id}")],
    );
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let summaries = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("list containers: {}", docker_message(&e)))?;
    let mut out = Vec::new();
    for s in summaries {
        let Some(id) = s.id else { continue };
        let task_id = s
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_TASK).cloned())
            .unwrap_or_default();
        let running = s
            .state
            .map(|st| st.to_string() == "running")
            .unwrap_or(false);
        let exit_code = if running {
            0
        } else {
            s.status.as_deref().and_then(exit_code_of).unwrap_or(-1)
        };
        let host_ports = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.public_port)
            .collect();
        out.push(ObservedContainer {
            container_id: id,
            task_id,
            running,
            exit_code,
            host_ports,
        });
    }
    Ok(out)
}

/// Runs `sh -c command` in the container; whether it exited 0 before `timeout`.
pub async fn exec_ok(
    docker: &Docker,
    container_id: &str,
    command: &str,
    timeout: Duration,
) -> bool {
    use bollard::exec::{CreateExecOptions, StartExecOptions};
    let create = CreateExecOptions {
        cmd: Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            command.to_string(),
        ]),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        ..Default::default()
    };
    let Ok(exec) = docker.create_exec(container_id, create).await else {
        return false;
    };
    let detached = StartExecOptions {
        detach: true,
        ..Default::default()
    };
    if docker.start_exec(&exec.id, Some(detached)).await.is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        match docker.inspect_exec(&exec.id).await {
            Ok(i) if i.running == Some(false) => return i.exit_code == Some(0),
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => return false,
        }
    }
    false
}

/// Follows dockerd's events for this agent's containers (`die`, `oom`) and turns them into
/// [`Event::ContainerExited`]. When the stream breaks (dockerd restarted), waits for dockerd
/// with backoff and sends [`Event::DockerConnected`] so the core re-lists its containers.
pub async fn follow_events(docker: Docker, agent_id: String, events: UnboundedSender<Event>) {
    let mut jitter = Jitter::new();
    let mut failures = 0u32;
    let mut oom: std::collections::HashSet<String> = Default::default();
    loop {
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert(
            "event".to_string(),
            vec!["die".to_string(), "oom".to_string()],
        );
        filters.insert(
            "label".to_string(),
            vec![format!("{LABEL_AGENT}={agent_id}")],
        );
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let mut stream = docker.events(Some(options));
        // Anything that died while the stream was down is found by re-listing.
        if events.send(Event::DockerConnected).is_err() {
            return;
        }
        while let Some(item) = stream.next().await {
            let msg = match item {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "docker events stream failed");
                    break;
                }
            };
            failures = 0;
            let actor = msg.actor.unwrap_or_default();
            let Some(id) = actor.id else { continue };
            match msg.action.as_deref() {
                Some("oom") => {
                    oom.insert(id);
                }
                Some("die") => {
                    let exit_code = actor
                        .attributes
                        .as_ref()
                        .and_then(|a| a.get("exitCode"))
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(-1);
                    let oom_killed = oom.remove(&id);
                    if events
                        .send(Event::ContainerExited {
                            container_id: id,
                            exit_code,
                            oom_killed,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                _ => {}
            }
        }
        // The stream ended: dockerd went away. Wait until it answers again.
        loop {
            tokio::time::sleep(backoff(failures, 500, 10_000, &mut jitter)).await;
            failures = failures.saturating_add(1);
            if docker.ping().await.is_ok() {
                tracing::info!("dockerd answers again");
                break;
            }
            if failures % 10 == 1 {
                tracing::warn!("dockerd does not answer; still trying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_without_a_tag_pulls_latest() {
        assert_eq!(split_tag("nginx"), ("nginx", "latest"));
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b:1"),
            ("127.0.0.1:5000/a/b", "1")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", "latest")
        );
    }
}
