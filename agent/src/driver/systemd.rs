//! systemd: readiness and watchdog through the notify socket (pure Rust, static-friendly), and
//! logs to the journal when systemd started the agent, to stderr otherwise.

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Sends `READY=1` (no-op outside systemd).
pub fn ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Sends `WATCHDOG=1` (no-op outside systemd).
pub fn watchdog() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
}

/// Half the watchdog interval systemd asked for, if it asked.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Logs to journald when `JOURNAL_STREAM` says stderr is the journal, else to stderr.
/// `RUST_LOG`-style filtering is not compiled in; the level is info.
pub fn init_logging() {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    if journal && let Ok(layer) = tracing_journald::layer() {
        let _ = tracing_subscriber::registry()
            .with(layer.with_syslog_identifier("outpost-agent".into()))
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .try_init();
}
