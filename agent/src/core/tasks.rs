//! The supervisor's tasks with an index of their deadlines.
//!
//! Every event ends by asking which tasks have something due and when the next thing is due
//! ([`Task::next_deadline`]). Asking each task costs a walk of them all per event: at a
//! thousand tasks probed every second that walk cost more than the probes. So the tasks are
//! kept with an index ordered by deadline, and every way to change a task goes through
//! [`Tasks`]: a task lent out mutably is marked, and [`Tasks::settle`] (called at the end of
//! every event) reads the marked tasks' deadlines again. Reading needs no mark ([`Tasks`]
//! dereferences to the map), so a change cannot bypass the index: `Tasks` gives out no
//! `&mut Task` without marking it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use outpost_protocol::TaskId;

use super::{Millis, Task};

/// Tasks by id, with their deadlines indexed (see the module docs).
#[derive(Debug, Default)]
pub struct Tasks {
    map: BTreeMap<TaskId, Task>,
    /// (deadline, task) for every task that has one, as of the last [`Tasks::settle`].
    by_deadline: BTreeSet<(Millis, TaskId)>,
    /// Each indexed task's deadline, to find its entry in `by_deadline`.
    indexed: BTreeMap<TaskId, Millis>,
    /// Tasks lent out mutably (or inserted or removed) since the last settle.
    marked: Vec<TaskId>,
}

impl Deref for Tasks {
    type Target = BTreeMap<TaskId, Task>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Tasks {
    /// The task `id`, marked for the index.
    pub fn get_mut(&mut self, id: &TaskId) -> Option<&mut Task> {
        let task = self.map.get_mut(id)?;
        self.marked.push(id.clone());
        Some(task)
    }

    /// The first task for which `pred` holds, marked for the index.
    pub fn find_mut(&mut self, pred: impl Fn(&Task) -> bool) -> Option<(TaskId, &mut Task)> {
        let id = self.map.iter().find(|(_, t)| pred(t))?.0.clone();
        let task = self.map.get_mut(&id)?;
        self.marked.push(id.clone());
        Some((id, task))
    }

    /// Adds or replaces task `id`.
    pub fn insert(&mut self, id: TaskId, task: Task) {
        self.marked.push(id.clone());
        self.map.insert(id, task);
    }

    /// Removes task `id`.
    pub fn remove(&mut self, id: &TaskId) -> Option<Task> {
        self.marked.push(id.clone());
        self.map.remove(id)
    }

    /// Reads the marked tasks' deadlines into the index.
    pub fn settle(&mut self) {
        for id in std::mem::take(&mut self.marked) {
            if let Some(old) = self.indexed.remove(&id) {
                self.by_deadline.remove(&(old, id.clone()));
            }
            if let Some(at) = self.map.get(&id).and_then(Task::next_deadline) {
                self.by_deadline.insert((at, id.clone()));
                self.indexed.insert(id, at);
            }
        }
    }

    /// The earliest deadline of any task, as of the last settle.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// The tasks with a deadline at or before `now`, as of the last settle, in id order (the
    /// order a walk of the map gives, so actions come out in the same order on every run).
    pub fn due(&self, now: Millis) -> Vec<TaskId> {
        let mut due: Vec<TaskId> = self
            .by_deadline
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect();
        due.sort_unstable();
        due
    }

    /// Whether the index holds exactly each task's deadline (every core test checks this after
    /// every event).
    pub fn index_is_exact(&self) -> bool {
        let expected: BTreeSet<(Millis, TaskId)> = self
            .map
            .iter()
            .filter_map(|(id, t)| t.next_deadline().map(|at| (at, id.clone())))
            .collect();
        self.marked.is_empty()
            && expected == self.by_deadline
            && self.indexed.len() == expected.len()
    }
}
