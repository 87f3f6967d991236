//! Host ports of the offered range: which are free, which task holds which.

use std::collections::{BTreeMap, BTreeSet};

use outpost_protocol::{MAX_PORT_RANGES, PortRange, TaskId};

/// The agent's host port range and who holds each allocated port.
#[derive(Debug, Clone)]
pub struct Ports {
    range: PortRange,
    held: BTreeMap<u16, TaskId>,
    /// Ports of the range another process on the host listens on (the driver reads them):
    /// never handed out or offered while no task holds them.
    taken: BTreeSet<u16>,
    /// Host ports of containers the agent is removing that no task owns (left by an earlier
    /// life of the agent): dockerd holds them until the container is gone.
    removing: BTreeMap<u16, String>,
    /// Where the search for the next free port starts: ports are handed out round-robin, so a
    /// port just freed is not given again while dockerd may still be releasing it.
    cursor: u16,
}

/// A fixed host port that cannot be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    /// Outside the agent's range.
    OutOfRange(u16),
    /// Held by another task.
    InUse(u16, TaskId),
    /// Another process on the host listens on it.
    Taken(u16),
    /// A container the agent is removing still holds it (the container's id).
    Removing(u16, String),
    /// The range has no free port left.
    Exhausted,
}

impl Ports {
    /// All of `range` free.
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            held: BTreeMap::new(),
            taken: BTreeSet::new(),
            removing: BTreeMap::new(),
            cursor: range.begin,
        }
    }

    /// The configured range.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// The task holding `port`, if any.
    pub fn holder(&self, port: u16) -> Option<&TaskId> {
        self.held.get(&port)
    }

    /// Checks that every fixed port in `wanted` (0 = any) could be given, and that the range has
    /// room for the rest; gives nothing.
    pub fn check(&self, wanted: &[u16]) -> Result<(), PortError> {
        let mut any = 0usize;
        for (i, &p) in wanted.iter().enumerate() {
            if p == 0 {
                any += 1;
                continue;
            }
            if p < self.range.begin || p > self.range.end {
                return Err(PortError::OutOfRange(p));
            }
            if let Some(holder) = self.held.get(&p) {
                return Err(PortError::InUse(p, holder.clone()));
            }
            if self.taken.contains(&p) {
                return Err(PortError::Taken(p));
            }
            if let Some(container) = self.removing.get(&p) {
                return Err(PortError::Removing(p, container.clone()));
            }
            if wanted[..i].contains(&p) {
                return Err(PortError::InUse(p, TaskId::default()));
            }
        }
        let fixed_free = wanted.iter().filter(|&&p| p != 0).count();
        let free = self.free_count().saturating_sub(fixed_free);
        if any > free {
            return Err(PortError::Exhausted);
        }
        Ok(())
    }

    /// Gives `task` the ports it asks for (0 = the next free port after the last one given,
    /// wrapping around the range), in order.
    pub fn allocate(&mut self, task: &TaskId, wanted: &[u16]) -> Result<Vec<u16>, PortError> {
        self.check(wanted)?;
        let mut given = Vec::with_capacity(wanted.len());
        for &p in wanted.iter().filter(|&&p| p != 0) {
            self.held.insert(p, task.clone());
        }
        for &p in wanted {
            let port = if p == 0 {
                let free = (self.cursor..=self.range.end)
                    .chain(self.range.begin..self.cursor)
                    .find(|q| self.is_free(*q))
                    .ok_or(PortError::Exhausted)?;
                self.held.insert(free, task.clone());
                self.cursor = if free >= self.range.end {
                    self.range.begin
                } else {
                    free + 1
                };
                free
            } else {
                p
            };
            given.push(port);
        }
        Ok(given)
    }

    /// Frees one port.
    pub fn release_port(&mut self, port: u16) {
        self.held.remove(&port);
    }

    /// Frees every port `task` holds.
    pub fn release(&mut self, task: &TaskId) {
        self.held.retain(|_, holder| holder != task);
    }

    /// Records the ports of the range other processes on the host listen on (a task's own
    /// ports show there too, through Docker's proxy: those stay the task's). Returns whether
    /// that changed what is free.
    pub fn set_taken(&mut self, listening: impl IntoIterator<Item = u16>) -> bool {
        let taken: BTreeSet<u16> = listening
            .into_iter()
            .filter(|p| (self.range.begin..=self.range.end).contains(p))
            .collect();
        let changed = taken != self.taken;
        self.taken = taken;
        changed
    }

    /// Holds the in-range `ports` of a container being removed until [`removed`](Self::removed)
    /// says it is gone.
    pub fn hold_for_removal(&mut self, container_id: &str, ports: &[u16]) {
        for &p in ports {
            if (self.range.begin..=self.range.end).contains(&p) {
                self.removing.insert(p, container_id.to_string());
            }
        }
    }

    /// Frees the ports of containers that are gone: those `exists` says no to. Returns whether
    /// that changed what is free.
    pub fn removed(&mut self, exists: impl Fn(&str) -> bool) -> bool {
        let before = self.removing.len();
        self.removing.retain(|_, c| exists(c));
        before != self.removing.len()
    }

    /// Neither held by a task, nor taken by another process, nor by a container being removed.
    fn is_free(&self, port: u16) -> bool {
        !self.held.contains_key(&port)
            && !self.taken.contains(&port)
            && !self.removing.contains_key(&port)
    }

    /// Number of free ports.
    pub fn free_count(&self) -> usize {
        let blocked: BTreeSet<&u16> = self.taken.iter().chain(self.removing.keys()).collect();
        let blocked_only = blocked
            .into_iter()
            .filter(|p| !self.held.contains_key(p))
            .count();
        usize::from(self.range.end - self.range.begin) + 1 - self.held.len() - blocked_only
    }

    /// The free ports as ranges (at most [`MAX_PORT_RANGES`]; a very fragmented range reports
    /// its lowest runs), for the offer: neither held nor taken by another process.
    pub fn free_ranges(&self) -> heapless::Vec<PortRange, MAX_PORT_RANGES> {
        self.runs(|p| self.is_free(p))
    }

    /// The held ports as ranges, for the offer's `used`.
    pub fn used_ranges(&self) -> heapless::Vec<PortRange, MAX_PORT_RANGES> {
        self.runs(|p| self.held.contains_key(&p))
    }

    fn runs(&self, keep: impl Fn(u16) -> bool) -> heapless::Vec<PortRange, MAX_PORT_RANGES> {
        let mut out = heapless::Vec::new();
        let mut start: Option<u16> = None;
        for p in self.range.begin..=self.range.end {
            match (keep(p), start) {
                (true, None) => start = Some(p),
                (false, Some(s)) => {
                    if out
                        .push(PortRange {
                            begin: s,
                            end: p - 1,
                        })
                        .is_err()
                    {
                        return out;
                    }
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            let _ = out.push(PortRange {
                begin: s,
                end: self.range.end,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }

    #[test]
    fn port_zero_goes_round_robin_so_a_freed_port_is_not_reused_at_once() {
        let mut p = Ports::new(PortRange {
            begin: 31000,
            end: 31003,
        });
        assert_eq!(p.allocate(&id("a"), &[0, 0]).unwrap(), vec![31000, 31001]);
        assert_eq!(p.allocate(&id("b"), &[0]).unwrap(), vec![31002]);
        assert_eq!(
            p.free_ranges().as_slice(),
            [PortRange {
                begin: 31003,
                end: 31003
            }]
        );
        p.release(&id("a"));
        assert_eq!(p.free_count(), 3);
        assert_eq!(p.allocate(&id("c"), &[0]).unwrap(), vec![31003]);
        // Then it wraps around to the ports freed first.
        assert_eq!(p.allocate(&id("d"), &[0]).unwrap(), vec![31000]);
    }

    #[test]
    fn a_fixed_port_must_be_in_range_and_free() {
        let mut p = Ports::new(PortRange {
            begin: 31000,
            end: 31010,
        });
        p.allocate(&id("a"), &[31005]).unwrap();
        assert_eq!(p.check(&[31005]), Err(PortError::InUse(31005, id("a"))));
        assert_eq!(p.check(&[80]), Err(PortError::OutOfRange(80)));
        assert_eq!(
            p.used_ranges().as_slice(),
            [PortRange {
                begin: 31005,
                end: 31005
            }]
        );
    }

    #[test]
    fn an_exhausted_range_refuses_without_giving_anything() {
        let mut p = Ports::new(PortRange {
            begin: 31000,
            end: 31001,
        });
        p.allocate(&id("a"), &[0]).unwrap();
        assert_eq!(p.allocate(&id("b"), &[0, 0]), Err(PortError::Exhausted));
        assert_eq!(p.free_count(), 1);
    }

    #[test]
    fn a_port_another_process_listens_on_is_neither_given_nor_offered() {
        let mut p = Ports::new(PortRange {
            begin: 31000,
            end: 31003,
        });
        assert!(p.set_taken([31000, 8080]), "only the range counts");
        assert!(!p.set_taken([31000]), "unchanged");
        assert_eq!(p.allocate(&id("a"), &[0]).unwrap(), vec![31001]);
        assert_eq!(p.check(&[31000]), Err(PortError::Taken(31000)));
        assert_eq!(p.free_count(), 2);
        assert_eq!(
            p.free_ranges().as_slice(),
            [PortRange {
                begin: 31002,
                end: 31003
            }]
        );
        // A task's own port shows as listening too (Docker's proxy): still the task's.
        p.set_taken([31000, 31001]);
        assert_eq!(p.free_count(), 2);
        assert_eq!(p.holder(31001), Some(&id("a")));
        // Once the other process is gone the port is free again.
        p.set_taken([31001]);
        assert_eq!(p.free_count(), 3);
        assert_eq!(p.allocate(&id("b"), &[31000]).unwrap(), vec![31000]);
    }
}
