//! Task specs the end-to-end tests and benchmarks launch.

use outpost_protocol::*;

fn t<const N: usize>(s: &str) -> Text<N> {
    Text::new(s).unwrap()
}

/// A task of the test image: httpd on container port 80, published on host port 0.
pub fn web_task(id: &str, image: &str) -> TaskSpec {
    TaskSpec {
        task_id: t(id),
        image: t(image),
        cpus: 0.1,
        mem_mib: 32.0,
        network: NetworkMode::Bridge,
        port_mappings: heapless::Vec::from_slice(&[PortMapping {
            container_port: 80,
            host_port: 0,
            protocol: PortProtocol::Tcp,
            name: None,
        }])
        .unwrap(),
        kill_grace_period_s: 2,
        restart: RestartPolicy::default(),
        ..Default::default()
    }
}

/// An HTTP check of `/health` every second (1 s timeout, no grace, no delay).
pub fn http_check(max_failures: u32) -> HealthCheck {
    HealthCheck {
        protocol: HealthProtocol::Http,
        path: Some(t("/health")),
        port_index: 0,
        grace_period_s: 0,
        interval_s: 1,
        timeout_s: 1,
        max_consecutive_failures: max_failures,
        delay_s: 0,
        ..Default::default()
    }
}
