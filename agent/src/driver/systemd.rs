//! systemd: readiness, status and watchdog through the notify socket (pure Rust,
//! static-friendly), and logs to the journal when systemd started the agent, to stderr
//! otherwise.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every notification is a no-op.

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Sends `READY=1` with a `STATUS=` line (`systemctl status` shows it).
pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Sends a `STATUS=` line.
pub fn status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

/// Sends `WATCHDOG=1`.
pub fn watchdog() {
    notify(&[sd_notify::NotifyState::Watchdog]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "systemd notify socket");
    }
}

/// Half the watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process if
/// `WATCHDOG_PID` is set), if it asked.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the `device:inode` of the
/// stream it connected to stderr; a child whose stderr was redirected elsewhere inherits the
/// variable but not the stream, so the numbers must match.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    value.to_str() == Some(&format!("{}:{}", meta.dev(), meta.ino()))
}

/// Logs to journald (native protocol: structured fields, priorities) when stderr is the
/// journal and its socket answers; to stderr otherwise. `RUST_LOG`-style filtering is not
/// compiled in; the level is info.
pub fn init_logging() {
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                // syslog's usual levels (info is 6, not the crate's default 5, "notice"), so
                // `journalctl -p info` and `-p notice` mean what operators expect.
                use tracing_journald::{Priority, PriorityMappings};
                let levels = PriorityMappings {
                    info: Priority::Informational,
                    debug: Priority::Debug,
                    ..PriorityMappings::new()
                };
                let layer = layer
                    .with_syslog_identifier("outpost-agent".into())
                    .with_priority_mappings(levels);
                let _ = tracing_subscriber::registry()
                    .with(layer)
                    .with(tracing_subscriber::filter::LevelFilter::INFO)
                    .try_init();
                return;
            }
            Err(e) => eprintln!(
                "outpost-agent: the journal socket does not answer ({e}); logging to stderr"
            ),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .try_init();
}
