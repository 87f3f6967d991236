//! Every message survives encode → decode unchanged, for arbitrary field values.

use heapless::Vec;
use outpost_protocol::codec::encode_to_vec;
use outpost_protocol::*;
use proptest::collection::vec as pvec;
use proptest::prelude::*;

fn text<const N: usize>() -> impl Strategy<Value = Text<N>> {
    // Any Unicode, cut to the limit on a char boundary.
    any::<String>().prop_map(|s| {
        let mut end = s.len().min(N);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Text::new(&s[..end]).unwrap()
    })
}

fn full_text<const N: usize>() -> impl Strategy<Value = Text<N>> {
    // Exactly at the limit: the edge of every bound.
    Just(Text::new(&"x".repeat(N)).unwrap())
}

fn bounded<T: std::fmt::Debug + Clone, const N: usize>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Vec<T, N>> {
    pvec(s, 0..=N).prop_map(|items| Vec::from_slice(&items).unwrap())
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        (0u32..100_000).prop_map(f64::from),
        Just(0.1),
        Just(-0.0),
    ]
}

fn key_value() -> impl Strategy<Value = KeyValue> {
    (text(), text()).prop_map(|(name, value)| KeyValue { name, value })
}

fn resources() -> impl Strategy<Value = Resources> {
    (
        number(),
        number(),
        number(),
        bounded((any::<u16>(), any::<u16>()).prop_map(|(begin, end)| PortRange { begin, end })),
    )
        .prop_map(|(cpus, mem_mib, disk_mib, ports)| Resources {
            cpus,
            mem_mib,
            disk_mib,
            ports,
        })
}

fn health_check() -> impl Strategy<Value = HealthCheck> {
    (
        prop_oneof![
            Just(HealthProtocol::Http),
            Just(HealthProtocol::Https),
            Just(HealthProtocol::Tcp),
            Just(HealthProtocol::Command)
        ],
        proptest::option::of(text()),
        any::<u16>(),
        proptest::option::of(any::<u16>()),
        proptest::option::of(text()),
        any::<[u32; 5]>(),
    )
        .prop_map(
            |(protocol, path, port_index, port, command, n)| HealthCheck {
                protocol,
                path,
                port_index,
                port,
                command,
                grace_period_s: n[0],
                interval_s: n[1],
                timeout_s: n[2],
                max_consecutive_failures: n[3],
                delay_s: n[4],
            },
        )
}

fn task_spec() -> impl Strategy<Value = TaskSpec> {
    let ids = (
        prop_oneof![text(), full_text()],
        proptest::option::of(text()),
        text(),
        any::<bool>(),
        proptest::option::of(text()),
        bounded(text()),
        bounded(key_value()),
        bounded(key_value()),
    );
    let resources = (
        number(),
        number(),
        number(),
        prop_oneof![
            Just(NetworkMode::Bridge),
            Just(NetworkMode::Host),
            Just(NetworkMode::None)
        ],
    );
    let container = (
        bounded(
            (
                any::<u16>(),
                any::<u16>(),
                any::<bool>(),
                proptest::option::of(text()),
            )
                .prop_map(|(c, h, udp, name)| PortMapping {
                    container_port: c,
                    host_port: h,
                    protocol: if udp {
                        PortProtocol::Udp
                    } else {
                        PortProtocol::Tcp
                    },
                    name,
                }),
        ),
        bounded(
            (text(), text(), any::<bool>()).prop_map(|(h, c, rw)| Volume {
                host_path: h,
                container_path: c,
                mode: if rw { VolumeMode::Rw } else { VolumeMode::Ro },
            }),
        ),
        bounded(health_check()),
        any::<u32>(),
        (
            prop_oneof![
                Just(RestartMode::Always),
                Just(RestartMode::OnFailure),
                Just(RestartMode::Never)
            ],
            number(),
            number(),
            number(),
        )
            .prop_map(
                |(mode, backoff_s, backoff_factor, max_delay_s)| RestartPolicy {
                    mode,
                    backoff_s,
                    backoff_factor,
                    max_delay_s,
                },
            ),
    );
    let logs = (
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
    );
    let readiness = proptest::option::of(
        (
            any::<bool>(),
            proptest::option::of(text()),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            bounded(any::<u16>()),
        )
            .prop_map(
                |(tls, path, port_index, interval_s, timeout_s, ready_statuses)| ReadinessCheck {
                    tls,
                    path,
                    port_index,
                    interval_s,
                    timeout_s,
                    ready_statuses,
                },
            ),
    );
    (ids, resources, container, (any::<bool>(), readiness), logs).prop_map(
        |(
            (task_id, app_id, image, force_pull, cmd, args, env, labels),
            (cpus, mem_mib, disk_mib, network),
            (port_mappings, volumes, health_checks, kill_grace_period_s, restart),
            (privileged, readiness),
            (log_max_size_mib, log_max_files),
        )| TaskSpec {
            task_id,
            app_id,
            image,
            force_pull,
            cmd,
            args,
            env,
            labels,
            cpus,
            mem_mib,
            disk_mib,
            network,
            port_mappings,
            volumes,
            health_checks,
            kill_grace_period_s,
            restart,
            privileged,
            log_max_size_mib,
            log_max_files,
            readiness,
        },
    )
}

fn command() -> impl Strategy<Value = Command> {
    let kind = prop_oneof![
        task_spec().prop_map(CommandKind::Launch),
        (text(), proptest::option::of(any::<u32>())).prop_map(|(task_id, grace_period_s)| {
            CommandKind::Kill(KillTask {
                task_id,
                grace_period_s,
            })
        }),
        (text(), any::<bool>())
            .prop_map(|(image, force)| CommandKind::Pull(PullImage { image, force })),
        any::<bool>().prop_map(|kill| CommandKind::Drain(Drain {
            policy: if kill {
                DrainPolicy::KillAll
            } else {
                DrainPolicy::KeepTasks
            }
        })),
        bounded(text()).prop_map(|task_ids| CommandKind::Reconcile(Reconcile { task_ids })),
        (
            text(),
            proptest::sample::select(vec![
                LogStreams::Both,
                LogStreams::Stdout,
                LogStreams::Stderr
            ]),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u64>()),
            any::<u32>(),
        )
            .prop_map(|(task_id, streams, tail, since_ms, follow_s)| {
                CommandKind::ReadLogs(ReadLogs {
                    task_id,
                    streams,
                    tail,
                    since_ms,
                    follow_s,
                })
            }),
        text().prop_map(|request_id| CommandKind::StopLogs(StopLogs { request_id })),
        Just(CommandKind::Undrain),
    ];
    let signature = proptest::option::of(proptest::collection::vec(any::<u8>(), 64))
        .prop_map(|s| s.map(|b| Signature(b.try_into().unwrap())));
    (
        text(),
        any::<u64>(),
        kind,
        proptest::option::of(text()),
        signature,
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(command_id, issued_at_ms, kind, agent_id, signature, epoch)| Command {
                version: PROTOCOL_VERSION,
                command_id,
                issued_at_ms,
                kind,
                agent_id,
                signature,
                epoch,
            },
        )
}

fn reject_code() -> impl Strategy<Value = RejectCode> {
    proptest::sample::select(vec![
        RejectCode::Undecodable,
        RejectCode::StaleEpoch,
        RejectCode::InvalidField,
        RejectCode::FieldTooLong,
        RejectCode::PortUnavailable,
        RejectCode::InsufficientResources,
        RejectCode::UnknownTask,
        RejectCode::DuplicateTask,
        RejectCode::Draining,
        RejectCode::StorageFailure,
        RejectCode::UnsupportedVersion,
        RejectCode::Unauthenticated,
        RejectCode::Replay,
        RejectCode::Busy,
    ])
}

fn reason() -> impl Strategy<Value = Reason> {
    proptest::sample::select(vec![
        Reason::CommandExecutorFailed,
        Reason::ContainerLaunchFailed,
        Reason::ContainerLimitationMemory,
        Reason::HealthCheckStatusUpdated,
        Reason::TaskUnhealthyCheck,
        Reason::Reconciliation,
        Reason::TaskInvalid,
        Reason::TaskKilledDuringLaunch,
        Reason::AgentRestarted,
        Reason::ImagePullFailed,
        Reason::ExecutorTerminated,
    ])
}

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(msg: &M) {
    let bytes = encode_to_vec(msg);
    let back: M = decode(&bytes).unwrap_or_else(|e| panic!("{e}: {msg:?}"));
    assert_eq!(&back, msg);
    // The slice encoder writes the same bytes.
    let mut buf = vec![0u8; bytes.len()];
    assert_eq!(codec::encode(msg, &mut buf), Ok(bytes.len()));
    assert_eq!(buf, bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hello_round_trips(agent_id in text(), hostname in text(), agent_version in text(),
                         attributes in bounded(key_value()), started_at_ms in any::<u64>(),
                         address in proptest::option::of(text())) {
        round_trip(&Hello { version: PROTOCOL_VERSION, agent_id, hostname, agent_version,
                            attributes, started_at_ms, address });
    }

    #[test]
    fn offer_round_trips(agent_id in text(), seq in any::<u64>(), available in resources(),
                         used in resources(), attributes in bounded(key_value())) {
        round_trip(&Offer { version: PROTOCOL_VERSION, agent_id, seq, available, used,
                            attributes });
    }

    #[test]
    fn command_round_trips(cmd in command()) {
        round_trip(&cmd);
    }

    #[test]
    fn command_reply_round_trips(command_id in text(), rejected in proptest::option::of((reject_code(), text()))) {
        let outcome = match rejected {
            None => Outcome::Accepted,
            Some((code, message)) => Outcome::Rejected(Rejection { code, message }),
        };
        round_trip(&CommandReply { version: PROTOCOL_VERSION, command_id, outcome });
    }

    #[test]
    fn task_status_round_trips(agent_id in text(), task_id in text(), uuid in any::<[u8; 16]>(),
                               state in proptest::sample::select(TaskState::ALL.to_vec()),
                               reason in proptest::option::of(reason()),
                               message in proptest::option::of(text()),
                               healthy in proptest::option::of(any::<bool>()),
                               timestamp_ms in any::<u64>(),
                               exit_code in proptest::option::of(any::<i32>()),
                               host_ports in bounded(any::<u16>()),
                               container_ip in proptest::option::of(text()),
                               ready in proptest::option::of(any::<bool>())) {
        round_trip(&TaskStatus { version: PROTOCOL_VERSION, agent_id, task_id, uuid, state,
                                 reason, message, healthy, timestamp_ms, exit_code, host_ports,
                                 container_ip, ready });
    }

    #[test]
    fn status_ack_round_trips(task_id in text(), uuid in any::<[u8; 16]>()) {
        round_trip(&StatusAck { version: PROTOCOL_VERSION, task_id, uuid });
    }

    #[test]
    fn agent_state_round_trips(agent_id in text(), started_at_ms in any::<u64>(),
                               liveness in proptest::sample::select(vec![Liveness::Online, Liveness::Draining, Liveness::Offline])) {
        round_trip(&AgentState { version: PROTOCOL_VERSION, agent_id, liveness, started_at_ms });
    }

    #[test]
    fn log_chunk_round_trips(agent_id in text(), request_id in text(), seq in any::<u32>(),
                             stderr in any::<bool>(),
                             data in pvec(any::<u8>(), 0..=MAX_LOG_CHUNK),
                             end in proptest::option::of(text())) {
        let stream = if stderr { LogStream::Stderr } else { LogStream::Stdout };
        let data = LogBytes(heapless::Vec::from_slice(&data).unwrap());
        round_trip(&LogChunk { version: PROTOCOL_VERSION, agent_id, request_id, seq, stream, data, end });
    }

    #[test]
    fn agent_stats_round_trip(agent_id in text(), timestamp_ms in any::<u64>(), outbox_depth in any::<u32>(),
                              restarts in any::<u32>(), probe_latency_us in any::<u32>(), containers in any::<u32>(),
                              rss_kib in any::<u64>(), dockerd_reachable in any::<bool>()) {
        round_trip(&AgentStats { version: PROTOCOL_VERSION, agent_id, timestamp_ms, outbox_depth, restarts,
                                 probe_latency_us, containers, rss_kib, dockerd_reachable });
    }

    #[test]
    fn pull_progress_round_trips(agent_id in text(), image in text(), app_id in proptest::option::of(text()),
                                 task_id in proptest::option::of(text()), layers_done in any::<u32>(),
                                 layers_total in any::<u32>(), bytes_done in any::<u64>(), bytes_total in any::<u64>(),
                                 done in any::<bool>(), error in proptest::option::of(text())) {
        round_trip(&PullProgress { version: PROTOCOL_VERSION, agent_id, image, app_id, task_id, layers_done,
                                   layers_total, bytes_done, bytes_total, done, error });
    }

    /// Arbitrary bytes never panic the decoder; they decode or fail with an error.
    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in pvec(any::<u8>(), 0..512)) {
        let _ = decode::<Hello>(&bytes);
        let _ = decode::<Offer>(&bytes);
        let _ = decode::<Command>(&bytes);
        let _ = decode::<CommandReply>(&bytes);
        let _ = decode::<TaskStatus>(&bytes);
        let _ = decode::<StatusAck>(&bytes);
        let _ = decode::<AgentState>(&bytes);
        let _ = decode::<LogChunk>(&bytes);
        let _ = decode::<AgentStats>(&bytes);
        let _ = decode::<PullProgress>(&bytes);
    }
}
