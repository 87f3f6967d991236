//! Checks a launch before it is accepted. Every refusal names the field and the value.

use std::fmt::Write as _;

use outpost_protocol::{HealthProtocol, NetworkMode, Note, RejectCode, Rejection, TaskSpec, Text};

/// Docker refuses memory limits below 6 MiB.
pub const MIN_MEM_MIB: f64 = 6.0;

/// A rejection with `code` and a formatted message (cut to the message limit).
pub fn reject(code: RejectCode, message: std::fmt::Arguments<'_>) -> Rejection {
    let mut s = String::new();
    let _ = s.write_fmt(message);
    Rejection {
        code,
        message: note(&s),
    }
}

/// `s` as a wire message, cut at a character boundary to the message limit.
pub fn note(s: &str) -> Note {
    let mut end = s.len().min(Note::LIMIT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Text::new(&s[..end]).unwrap_or_default()
}

/// What this host lets tasks do (the agent's `[policy]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Privileged containers (`--privileged`): off by default.
    pub allow_privileged: bool,
    /// The host's network namespace: on by default (Marathon apps use HOST networking).
    pub allow_host_network: bool,
    /// Host paths (and what is below them) tasks may mount; `None`: any path but `/`.
    pub volume_paths: Option<Vec<String>>,
    /// The most MiB per container log file a task may ask for (`[logs] app_max_size_mib`).
    pub max_log_size_mib: u32,
    /// The most container log files a task may ask for (`[logs] app_max_files`).
    pub max_log_files: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow_privileged: false,
            allow_host_network: true,
            volume_paths: None,
            max_log_size_mib: 100,
            max_log_files: 10,
        }
    }
}

/// Whether `path` is `root` or below it (by whole path components).
fn under(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    root.is_empty() || path == root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
}

/// Checks a spec against the host's policy; every refusal names the field, the value and the
/// setting that would allow it.
pub fn policy(spec: &TaskSpec, policy: &Policy) -> Result<(), Rejection> {
    let refuse = |m: std::fmt::Arguments<'_>| Err(reject(RejectCode::InvalidField, m));
    if spec.privileged && !policy.allow_privileged {
        return refuse(format_args!(
            "privileged: true is refused by this agent's policy ([policy] allow_privileged)"
        ));
    }
    if spec.network == NetworkMode::Host && !policy.allow_host_network {
        return refuse(format_args!(
            "network: HOST is refused by this agent's policy ([policy] allow_host_network)"
        ));
    }
    if let Some(mib) = spec
        .log_max_size_mib
        .filter(|&m| m > policy.max_log_size_mib)
    {
        return refuse(format_args!(
            "log_max_size_mib: {mib} is above this agent's maximum of {} ([logs] app_max_size_mib)",
            policy.max_log_size_mib
        ));
    }
    if let Some(n) = spec.log_max_files.filter(|&n| n > policy.max_log_files) {
        return refuse(format_args!(
            "log_max_files: {n} is above this agent's maximum of {} ([logs] app_max_files)",
            policy.max_log_files
        ));
    }
    if spec.log_max_size_mib == Some(0) || spec.log_max_files == Some(0) {
        return refuse(format_args!(
            "log_max_size_mib {:?}, log_max_files {:?}: a log limit must be at least 1",
            spec.log_max_size_mib, spec.log_max_files
        ));
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        let path = v.host_path.as_str();
        if path.split('/').any(|c| c == "..") {
            return refuse(format_args!(
                "volumes[{i}].host_path: {path:?} may not contain \"..\""
            ));
        }
        let allowed = match &policy.volume_paths {
            None => !path.trim_end_matches('/').is_empty(),
            Some(roots) => roots.iter().any(|r| under(path, r)),
        };
        if !allowed {
            return refuse(format_args!(
                "volumes[{i}].host_path: {path:?} is outside what this agent's policy lets tasks mount ([policy] volume_paths)"
            ));
        }
    }
    Ok(())
}

/// Checks what a spec says on its own (not whether the host has room for it).
pub fn spec(spec: &TaskSpec) -> Result<(), Rejection> {
    let invalid = |m: std::fmt::Arguments<'_>| Err(reject(RejectCode::InvalidField, m));
    if spec.task_id.is_empty() {
        return invalid(format_args!("task_id: must not be empty"));
    }
    if let Err(why) = image_reference(&spec.image) {
        return invalid(format_args!(
            "image: {:?} is not an image reference: {why}",
            spec.image.as_str()
        ));
    }
    // The decoder refuses NaN and infinities, so plain comparisons suffice.
    if spec.cpus <= 0.0 {
        return invalid(format_args!("cpus: {} must be greater than 0", spec.cpus));
    }
    if spec.mem_mib < MIN_MEM_MIB {
        return invalid(format_args!(
            "mem: {} MiB is below Docker's minimum of {MIN_MEM_MIB} MiB",
            spec.mem_mib
        ));
    }
    if spec.disk_mib < 0.0 {
        return invalid(format_args!("disk: {} must not be negative", spec.disk_mib));
    }
    for (i, m) in spec.port_mappings.iter().enumerate() {
        if spec.network == NetworkMode::Bridge && m.container_port == 0 {
            return invalid(format_args!(
                "port_mappings[{i}].container_port: 0 is not a port (BRIDGE needs the container's port)"
            ));
        }
    }
    if spec.network == NetworkMode::None && !spec.port_mappings.is_empty() {
        return invalid(format_args!(
            "port_mappings: a task on network NONE cannot publish ports"
        ));
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        if !v.host_path.starts_with('/') {
            return invalid(format_args!(
                "volumes[{i}].host_path: {:?} must be an absolute path",
                v.host_path.as_str()
            ));
        }
        if !v.container_path.starts_with('/') {
            return invalid(format_args!(
                "volumes[{i}].container_path: {:?} must be an absolute path",
                v.container_path.as_str()
            ));
        }
    }
    for (i, hc) in spec.health_checks.iter().enumerate() {
        match hc.protocol {
            HealthProtocol::Http | HealthProtocol::Https | HealthProtocol::Tcp => {
                if hc.port.is_none() && usize::from(hc.port_index) >= spec.port_mappings.len() {
                    return invalid(format_args!(
                        "health_checks[{i}].port_index: {} but the task has {} port mappings",
                        hc.port_index,
                        spec.port_mappings.len()
                    ));
                }
                if let Some(path) = &hc.path
                    && !path.starts_with('/')
                {
                    return invalid(format_args!(
                        "health_checks[{i}].path: {:?} must start with /",
                        path.as_str()
                    ));
                }
            }
            HealthProtocol::Command => {
                if hc.command.as_ref().is_none_or(|c| c.trim().is_empty()) {
                    return invalid(format_args!(
                        "health_checks[{i}].command: a COMMAND check needs a command"
                    ));
                }
            }
        }
        if hc.timeout_s == 0 || hc.interval_s == 0 {
            return invalid(format_args!(
                "health_checks[{i}]: interval ({}) and timeout ({}) must be at least 1 second",
                hc.interval_s, hc.timeout_s
            ));
        }
    }
    let r = &spec.restart;
    if r.backoff_s < 0.0 || r.backoff_factor < 1.0 || r.max_delay_s < 0.0 {
        return invalid(format_args!(
            "restart: backoff {} s, factor {}, max {} s (need backoff >= 0, factor >= 1, max >= 0)",
            r.backoff_s, r.backoff_factor, r.max_delay_s
        ));
    }
    Ok(())
}

/// Checks Docker's image reference grammar: `[host[:port]/]path[:tag][@digest]`.
pub fn image_reference(image: &str) -> Result<(), &'static str> {
    if image.is_empty() {
        return Err("it is empty");
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace");
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or("the digest lacks `algorithm:`")?;
        if algo.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the digest is not `algorithm:hex`");
        }
    }
    // A tag is a `:` after the last `/`.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err("the tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -");
        }
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    // The first part is a registry host when it has a `.` or `:`, or is `localhost`.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (h, port) = match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        };
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        {
            return Err("the registry host is not a host name");
        }
        if port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err("the registry port is not a number");
        }
    }
    for part in parts {
        let ok = !part.is_empty()
            && part.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && part
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && part
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err("a path component must be lowercase [a-z0-9] joined by . _ or -");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    fn volume(path: &str) -> outpost_protocol::Volume {
        outpost_protocol::Volume {
            host_path: Text::new(path).unwrap(),
            container_path: Text::new("/data").unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn the_policy_refuses_privileged_root_mounts_and_paths_outside_its_list() {
        let base = TaskSpec {
            task_id: Text::new("t").unwrap(),
            image: Text::new("busybox").unwrap(),
            cpus: 0.1,
            mem_mib: 32.0,
            ..Default::default()
        };
        let default = Policy::default();
        let why = |s: &TaskSpec, p: &Policy| policy(s, p).unwrap_err().message.to_string();
        // Defaults: no privileged, no "/" mount; HOST networking and other paths allowed.
        let mut s = base.clone();
        s.privileged = true;
        assert!(why(&s, &default).contains("allow_privileged"));
        let allowing = Policy {
            allow_privileged: true,
            ..Policy::default()
        };
        assert!(policy(&s, &allowing).is_ok());
        let mut s = base.clone();
        s.volumes.push(volume("/")).unwrap();
        assert!(why(&s, &default).contains("\"/\""));
        let mut s = base.clone();
        s.volumes.push(volume("/srv/../etc")).unwrap();
        assert!(why(&s, &default).contains(".."));
        let mut s = base.clone();
        s.volumes.push(volume("/srv/data")).unwrap();
        assert!(policy(&s, &default).is_ok());
        let mut s = base.clone();
        s.network = NetworkMode::Host;
        assert!(policy(&s, &default).is_ok());
        let strict = Policy {
            allow_host_network: false,
            volume_paths: Some(vec!["/srv".into()]),
            ..Policy::default()
        };
        assert!(why(&s, &strict).contains("allow_host_network"));
        // Log limits up to the host's maximum (100 MiB x 10 by default).
        let mut s = base.clone();
        (s.log_max_size_mib, s.log_max_files) = (Some(100), Some(10));
        assert!(policy(&s, &default).is_ok());
        s.log_max_size_mib = Some(101);
        assert_eq!(
            why(&s, &default),
            "log_max_size_mib: 101 is above this agent's maximum of 100 ([logs] app_max_size_mib)"
        );
        (s.log_max_size_mib, s.log_max_files) = (Some(1), Some(11));
        assert!(why(&s, &default).contains("log_max_files: 11 is above"));
        s.log_max_files = Some(0);
        assert!(why(&s, &default).contains("at least 1"));
        // volume_paths matches whole components: /srv and below, not /srvx.
        for (path, ok) in [
            ("/srv", true),
            ("/srv/a", true),
            ("/srvx", false),
            ("/var", false),
        ] {
            let mut s = base.clone();
            s.volumes.push(volume(path)).unwrap();
            assert_eq!(policy(&s, &strict).is_ok(), ok, "{path}");
        }
    }

    use super::*;

    #[test]
    fn docker_image_references_are_accepted() {
        for ok in [
            "nginx",
            "nginx:latest",
            "library/nginx:1.25-alpine",
            "127.0.0.1:5000/outpost/web:1",
            "localhost/app",
            "registry.example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(image_reference(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn an_https_health_check_on_a_mapped_port_is_accepted() {
        let mut s = TaskSpec {
            task_id: Text::new("t").unwrap(),
            image: Text::new("web").unwrap(),
            cpus: 0.1,
            mem_mib: 32.0,
            ..Default::default()
        };
        s.port_mappings
            .push(outpost_protocol::PortMapping {
                container_port: 80,
                ..Default::default()
            })
            .unwrap();
        s.health_checks
            .push(outpost_protocol::HealthCheck {
                protocol: HealthProtocol::Https,
                interval_s: 1,
                timeout_s: 1,
                ..Default::default()
            })
            .unwrap();
        spec(&s).unwrap();
    }

    #[test]
    fn malformed_image_references_are_refused_with_a_reason() {
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a b",
            "web//x",
            "host:port/x",
            "x@sha256:zz",
        ] {
            assert!(image_reference(bad).is_err(), "{bad}");
        }
    }
}
