//! Task logs: the commands that ask an agent for a task's container log and stop the stream.
//! The answers (chunks on the request's own topic) bypass the core: `crate::logs` hands them
//! to the HTTP request that waits for them.

use super::{ApiError, Core};
use crate::time::Millis;
use outpost_protocol::{self as wire, CommandKind, ReadLogs, StopLogs};

/// Where a logs request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsTarget {
    /// The agent that holds the task's container.
    pub agent_id: String,
    /// The command id: the level of the topic the answers come on.
    pub request_id: String,
}

impl Core {
    /// Sends the agent of `task_id` (a Marathon or a framework task) the `read_logs` command
    /// `request_id` (the caller opened the stream under it first, so no chunk can come
    /// before it is listened for).
    /// 404 for an unknown task; 503 naming the agent and since when, when it is not
    /// connected (its logs stay on the host and can be read once it is back).
    pub fn read_logs(
        &mut self,
        now: Millis,
        task_id: &str,
        mut request: ReadLogs,
        request_id: String,
    ) -> Result<LogsTarget, ApiError> {
        let agent_id = match (self.task(task_id), self.fw_tasks.get(task_id)) {
            (Some(t), _) => t.agent_id.to_string(),
            (None, Some(t)) => t.agent_id.clone(),
            (None, None) => return Err(ApiError::not_found(&format!("Task '{task_id}'"))),
        };
        self.reachable_agent(
            &agent_id,
            &format!(
                "task {task_id}'s logs stay on the host, bounded by its log limits, and can be read once it is back"
            ),
        )?;
        request.task_id = wire::TaskId::new(task_id)
            .map_err(|_| ApiError::not_found(&format!("Task '{task_id}'")))?;
        self.command(now, &agent_id, &request_id, CommandKind::ReadLogs(request));
        Ok(LogsTarget {
            agent_id,
            request_id,
        })
    }

    /// Tells the agent to end the logs stream of `target` (its reader went away or fell
    /// behind).
    pub fn stop_logs(&mut self, now: Millis, target: &LogsTarget) {
        let Ok(request_id) = wire::CommandId::new(&target.request_id) else {
            return;
        };
        let cid = format!("s-{}", self.ids.uuid().simple());
        self.command(
            now,
            &target.agent_id,
            &cid,
            CommandKind::StopLogs(StopLogs { request_id }),
        );
    }
}
