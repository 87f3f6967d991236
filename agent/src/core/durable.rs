//! What of the core survives a restart: the snapshot the runtime writes to the state file
//! before it carries out any action, and the recovery that re-adopts containers after a load.
//!
//! Kept: every accepted task (its spec in wire form, host ports, restarts, where it was),
//! the unacknowledged status updates in order, the command ids seen with their replies, the
//! drain flag and the offer sequence. Not kept: health counters (checks start afresh on the
//! re-adopted container) and timers other than a backoff's end.

use std::hash::{Hash, Hasher};

use minicbor::{Decode, Encode};

use outpost_protocol::codec::{decode_part_into, encode_to_vec};
use outpost_protocol::{TaskId, TaskSpec, TaskState, TaskStatus, decode};

use super::{Action, AfterKill, Millis, ObservedContainer, Phase, Settings, Supervisor, Task};

/// The snapshot's format version.
const VERSION: u32 = 1;

/// Where a task was, as stored.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
enum PhaseSnap {
    /// Pulling or creating: no container known.
    #[n(0)]
    Launching,
    /// A container exists (starting or running).
    #[n(1)]
    Container {
        #[n(0)]
        container_id: String,
    },
    /// Being killed; `forget`: by a kill command (not a health restart).
    #[n(2)]
    Killing {
        #[n(0)]
        container_id: String,
        #[n(1)]
        forget: bool,
    },
    /// Waiting for its next attempt, until a wall-clock time (snapshots of older agents only:
    /// read, never written).
    #[n(3)]
    Backoff {
        #[n(0)]
        until: Millis,
    },
    /// Waiting for its next attempt, this much longer (a duration: it means the same after a
    /// reboot or a step of the wall clock).
    #[n(4)]
    BackoffFor {
        #[n(0)]
        left_ms: Millis,
    },
}

#[derive(Debug, Clone, Encode, Decode)]
struct TaskSnap {
    /// The spec's CBOR.
    #[cbor(n(0), with = "minicbor::bytes")]
    spec: Vec<u8>,
    #[n(1)]
    host_ports: Vec<u16>,
    #[n(2)]
    restarts: u32,
    #[n(3)]
    attempt: u32,
    #[n(4)]
    last_state: u8,
    #[n(5)]
    phase: PhaseSnap,
}

#[derive(Debug, Clone, Encode, Decode)]
struct SeenCommand {
    #[n(0)]
    id: String,
    /// The reply's CBOR.
    #[cbor(n(1), with = "minicbor::bytes")]
    reply: Vec<u8>,
    /// When the bridge issued it (absent in snapshots from before signed commands).
    #[n(2)]
    issued_at_ms: Option<u64>,
}

/// One unacknowledged status update (its CBOR).
#[derive(Debug, Clone, Encode, Decode)]
#[cbor(transparent)]
struct Wire(#[cbor(n(0), with = "minicbor::bytes")] Vec<u8>);

/// Everything of the core that must survive a restart (stored as CBOR).
#[derive(Debug, Clone, Encode, Decode)]
pub struct Snapshot {
    #[n(0)]
    version: u32,
    #[n(1)]
    offer_seq: u64,
    #[n(2)]
    draining: bool,
    #[n(3)]
    tasks: Vec<TaskSnap>,
    /// Unacknowledged status updates, oldest first.
    #[n(4)]
    outbox: Vec<Wire>,
    /// Command ids seen, oldest first, with their reply.
    #[n(5)]
    seen_commands: Vec<SeenCommand>,
    /// Signed commands issued at or before this are replays (the replay window's floor).
    #[n(6)]
    replay_floor_ms: Option<u64>,
    /// The newest leadership epoch a command carried (absent in older snapshots).
    #[n(7)]
    leader_epoch: Option<u64>,
}

/// Why a stored snapshot was not usable.
#[derive(Debug, thiserror::Error)]
#[error("state snapshot: {0}")]
pub struct SnapshotError(String);

/// What a restored task waits for until dockerd's containers are listed.
#[derive(Debug, Clone)]
pub(super) struct Recovering {
    /// The container it had, if known.
    container_id: Option<String>,
    /// It was being killed by a kill command.
    forget: bool,
    /// What was left of its backoff (resumed after recovery).
    backoff_left: Option<Millis>,
}

impl Snapshot {
    /// The snapshot as bytes (CBOR).
    pub fn to_bytes(&self) -> Vec<u8> {
        minicbor::to_vec(self).expect("encoding into a Vec cannot fail")
    }

    /// A snapshot from bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let s: Snapshot = minicbor::decode(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        if s.version != VERSION {
            return Err(SnapshotError(format!(
                "version {} is not {VERSION}",
                s.version
            )));
        }
        Ok(s)
    }

    /// How many tasks it holds.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }
}

impl Supervisor {
    /// The durable part of the state.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_parts(true)
    }

    /// The snapshot; unless `full`, without its two logs (the outbox, the seen commands) and
    /// with each task's spec as its digest (for [`Supervisor::durable_fingerprint`]).
    fn snapshot_parts(&self, full: bool) -> Snapshot {
        let logs = full;
        let tasks =
            self.tasks
                .values()
                .map(|t| {
                    let phase = match self.recovering.get(&t.task_id) {
                        // Still waiting for recovery: store what was loaded.
                        Some(r) => match (&r.container_id, r.forget, r.backoff_left) {
                            (Some(c), true, _) => PhaseSnap::Killing {
                                container_id: c.clone(),
                                forget: true,
                            },
                            (Some(c), false, _) => PhaseSnap::Container {
                                container_id: c.clone(),
                            },
                            (None, _, Some(left_ms)) => PhaseSnap::BackoffFor { left_ms },
                            (None, _, None) => PhaseSnap::Launching,
                        },
                        None => match &t.phase {
                            Phase::Pulling | Phase::Creating => PhaseSnap::Launching,
                            Phase::Starting { container_id }
                            | Phase::Running { container_id, .. } => PhaseSnap::Container {
                                container_id: container_id.clone(),
                            },
                            Phase::Killing {
                                container_id, then, ..
                            } => PhaseSnap::Killing {
                                container_id: container_id.clone(),
                                forget: *then == AfterKill::Forget,
                            },
                            // What is left, on the monotonic clock. The fingerprint takes
                            // the deadline itself: it does not move while time passes, so a
                            // waiting backoff causes no save at every event.
                            Phase::Backoff { until } => PhaseSnap::BackoffFor {
                                left_ms: if full {
                                    until.saturating_sub(self.mono_ms)
                                } else {
                                    *until
                                },
                            },
                        },
                    };
                    TaskSnap {
                        spec: if full {
                            t.wire().to_vec()
                        } else {
                            t.spec_digest.to_le_bytes().to_vec()
                        },
                        host_ports: t.host_ports.iter().copied().collect(),
                        restarts: t.restarts,
                        attempt: t.attempt,
                        last_state: t.last_state.mesos_number(),
                        phase,
                    }
                })
                .collect();
        Snapshot {
            version: VERSION,
            offer_seq: self.offer_seq,
            draining: self.draining,
            tasks,
            outbox: self
                .outbox
                .statuses()
                .filter(|_| logs)
                .map(|s| Wire(encode_to_vec(s)))
                .collect(),
            seen_commands: self
                .seen_order
                .iter()
                .filter(|_| logs)
                .filter_map(|id| {
                    self.seen_commands.get(id).map(|(r, issued)| SeenCommand {
                        id: id.clone(),
                        reply: r.clone(),
                        issued_at_ms: Some(*issued),
                    })
                })
                .collect(),
            replay_floor_ms: Some(self.replay_floor_ms),
            leader_epoch: (self.leader_epoch > 0).then_some(self.leader_epoch),
        }
    }

    /// A digest of the durable state: the runtime saves a snapshot when it changes. Everything
    /// but the two logs is hashed from the snapshot's own encoding (each task's spec, which
    /// never changes, by its digest), so a field added to the snapshot is in the digest
    /// without anyone remembering to add it. The logs (the outbox,
    /// the seen commands) change only at their ends (appended at the back, dropped at the
    /// front): their lengths and end items show every change without encoding them per event
    /// (a week offline is a long outbox).
    pub fn durable_fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.snapshot_parts(false).to_bytes().hash(&mut h);
        self.outbox.len().hash(&mut h);
        for s in self
            .outbox
            .statuses()
            .take(1)
            .chain(self.outbox.statuses().last())
        {
            s.uuid.hash(&mut h);
        }
        self.seen_order.len().hash(&mut h);
        self.seen_order.front().hash(&mut h);
        self.seen_order.back().hash(&mut h);
        h.finish()
    }

    /// A supervisor with the state of `snap`. Its tasks wait until dockerd's containers are
    /// listed ([`super::Event::ContainersListed`]), then each is re-adopted, restarted or
    /// forgotten; nothing is launched twice.
    pub fn restore(settings: Settings, snap: &Snapshot) -> Result<Self, SnapshotError> {
        let mut sup = Supervisor::new(settings);
        sup.offer_seq = snap.offer_seq;
        sup.draining = snap.draining;
        for ts in &snap.tasks {
            let mut spec = Box::<TaskSpec>::default();
            decode_part_into(&ts.spec, spec.as_mut())
                .map_err(|e| SnapshotError(format!("task spec: {e}")))?;
            let id = spec.task_id.clone();
            let ports = sup.ports.allocate(&id, &ts.host_ports).map_err(|e| {
                SnapshotError(format!(
                    "task {}: host ports {:?}: {e:?}",
                    id.as_str(),
                    ts.host_ports
                ))
            })?;
            let mut t = Task::new(&spec, ports);
            t.restarts = ts.restarts;
            t.attempt = ts.attempt;
            t.last_state =
                TaskState::from_mesos_number(ts.last_state).unwrap_or(TaskState::Unknown);
            // Parked until the containers are listed.
            t.phase = Phase::Backoff { until: Millis::MAX };
            let r = match &ts.phase {
                PhaseSnap::Launching => Recovering {
                    container_id: None,
                    forget: false,
                    backoff_left: None,
                },
                PhaseSnap::Container { container_id } => Recovering {
                    container_id: Some(container_id.clone()),
                    forget: false,
                    backoff_left: None,
                },
                PhaseSnap::Killing {
                    container_id,
                    forget,
                } => Recovering {
                    container_id: Some(container_id.clone()),
                    forget: *forget,
                    backoff_left: None,
                },
                // An older agent's wall-clock deadline: what was left of it at this start.
                PhaseSnap::Backoff { until } => Recovering {
                    container_id: None,
                    forget: false,
                    backoff_left: Some(until.saturating_sub(sup.settings.started_at_ms)),
                },
                PhaseSnap::BackoffFor { left_ms } => Recovering {
                    container_id: None,
                    forget: false,
                    backoff_left: Some(*left_ms),
                },
            };
            sup.recovering.insert(id.clone(), r);
            sup.tasks.insert(id, t);
        }
        for s in &snap.outbox {
            let status =
                decode::<TaskStatus>(&s.0).map_err(|e| SnapshotError(format!("outbox: {e}")))?;
            sup.outbox.push(status);
        }
        for c in &snap.seen_commands {
            sup.remember(c.id.clone(), c.reply.clone(), c.issued_at_ms.unwrap_or(0));
        }
        sup.replay_floor_ms = sup.replay_floor_ms.max(snap.replay_floor_ms.unwrap_or(0));
        sup.leader_epoch = snap.leader_epoch.unwrap_or(0);
        sup.awaiting_list = true;
        sup.tasks.settle();
        Ok(sup)
    }

    /// After a restore, the first listing of dockerd's containers: each restored task takes
    /// back its running container (found by its Outpost labels), or is restarted, or (if a
    /// kill command was under way) is finished off. Other labelled containers are removed.
    pub(super) fn recover(&mut self, now: Millis, observed: &[ObservedContainer]) {
        // In task id order: the same actions and status uuids on every run.
        let mut recovering: Vec<(TaskId, Recovering)> =
            std::mem::take(&mut self.recovering).into_iter().collect();
        recovering.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut claimed: Vec<String> = Vec::new();
        for (id, r) in recovering {
            let mine: Vec<&ObservedContainer> = observed
                .iter()
                .filter(|o| o.task_id == id.as_str())
                .collect();
            // The stored container if it runs, else any running one of this task (created
            // by an attempt whose id was not stored yet).
            let running = mine
                .iter()
                .find(|o| o.running && Some(&o.container_id) == r.container_id.as_ref())
                .or_else(|| mine.iter().find(|o| o.running));
            if r.forget {
                for o in &mine {
                    self.actions.push(Action::Remove {
                        container_id: o.container_id.clone(),
                    });
                    claimed.push(o.container_id.clone());
                }
                self.status(&id, TaskState::Killed, None, None);
                self.forget(now, &id);
                continue;
            }
            let Some(t) = self.tasks.get_mut(&id) else {
                continue;
            };
            match running {
                Some(o) => {
                    tracing::info!(task = %id.as_str(), container = %o.container_id, "re-adopted its running container");
                    t.phase = Phase::Running {
                        container_id: o.container_id.clone(),
                        since: now,
                    };
                    t.start_checks(now);
                    claimed.push(o.container_id.clone());
                    for other in mine.iter().filter(|x| x.container_id != o.container_id) {
                        self.actions.push(Action::Remove {
                            container_id: other.container_id.clone(),
                        });
                        claimed.push(other.container_id.clone());
                    }
                    if t.last_state != TaskState::Running {
                        self.status(
                            &id,
                            TaskState::Running,
                            None,
                            Some("re-adopted after an agent restart"),
                        );
                    }
                }
                None => {
                    // Dead or never started: clear what is left and start again (after the
                    // stored backoff, if one was running).
                    for o in &mine {
                        self.actions.push(Action::Remove {
                            container_id: o.container_id.clone(),
                        });
                        claimed.push(o.container_id.clone());
                    }
                    let until = now + r.backoff_left.unwrap_or(0);
                    tracing::info!(task = %id.as_str(), "no running container after the restart; starting it again");
                    t.phase = Phase::Backoff { until };
                    if r.container_id.is_some() && t.last_state == TaskState::Running {
                        self.status(
                            &id,
                            TaskState::Failed,
                            Some(outpost_protocol::Reason::AgentRestarted),
                            Some("the container ended while the agent was down"),
                        );
                    }
                }
            }
        }
        for o in observed {
            if !claimed.contains(&o.container_id) && !self.owns(&o.container_id) {
                self.remove_unowned(o);
            }
        }
        self.awaiting_list = false;
        // A call the killed process had sent to dockerd may still land after this listing (a
        // create under load): list once more a little later, and remove what no task owns.
        self.list_retry_at = Some(now + super::RELIST_AFTER_RECOVERY_MS);
        // Recovered: now report (hello, liveness, offer, the queued updates in order).
        if self.broker_up {
            self.on_connected(now);
        }
    }

    fn owns(&self, container_id: &str) -> bool {
        self.tasks
            .values()
            .any(|t| t.phase.container() == Some(container_id))
    }
}
