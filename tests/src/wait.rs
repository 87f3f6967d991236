//! Polling with a deadline: the only way tests wait.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often [`until`] re-checks its condition.
const POLL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub fn until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Checks that `check` holds on every poll for `period` (an invariant over a window, such as
/// "the old task stays while the new one is not ready"); fails naming `what` at the first poll
/// where it does not.
pub fn holds(what: &str, period: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + period;
    while Instant::now() < end {
        if !check() {
            bail!("{what} stopped holding");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}
