//! Handing freed memory back to the operating system after a burst.
//!
//! glibc's allocator keeps the pages of freed blocks inside its heaps for reuse: after a deploy
//! of thousands of instances (encoded launches waiting for the broker, a commit's encoded
//! records, maps doubling) the bridge's resident size stays at the burst's peak although much
//! of it is free. `malloc_trim(0)` returns every whole free page of every heap (`madvise`), so
//! the resident size comes back to what the state holds. The owner calls [`release`] when a
//! burst is over ([`Trim`]): nothing waits in its queue and it ran many jobs since the last
//! release. With [`few_heaps`] and the discovery layer's `die_with_this_process`, these are
//! the only `unsafe` calls in the workspace (ARCHITECTURE.md).

/// Heaps (glibc "arenas") the allocator may keep: [`few_heaps`].
pub const HEAPS: i32 = 2;

/// Caps the allocator's heaps at [`HEAPS`]; whether it took the setting. By default glibc gives
/// threads up to eight heaps per core, and a block freed by another thread goes back to the
/// heap it came from: the owner, the HTTP workers and the readers' threads each keep a heap
/// with its own free space. Two heaps keep the bridge's resident size close to what its state
/// holds (10,000 agents: about 0.2 KiB less per agent; docs/BENCHMARKS.md); each thread still
/// allocates small blocks from its own cache without a lock. Call it first in `main`, before
/// threads start.
#[allow(unsafe_code)]
pub fn few_heaps() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes no pointer; it only sets a limit the allocator reads when a
        // thread first allocates.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, HEAPS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Returns the free pages of the allocator's heaps to the system; whether any were.
#[allow(unsafe_code)]
pub fn release() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer and locks each heap itself while it works, so
        // it may run while other threads allocate and free.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The resident set size of this process, in KiB (`VmRSS`; 0 where `/proc` does not say).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// When the owner releases memory: once it has run [`TRIM_AFTER_JOBS`] jobs since the last
/// release and nothing waits (a burst is over), never in the middle of one.
#[derive(Debug, Default)]
pub struct Trim {
    jobs: usize,
}

/// Jobs after which an idle owner releases. A job is an API call, a tick or a batch of up to
/// 1,024 MQTT messages ([`crate::handle::GROUP`]): a deploy of 10,000 is a few hundred, and an
/// idle bridge (a tick a second) releases every few minutes, a walk over free lists.
pub const TRIM_AFTER_JOBS: usize = 256;

impl Trim {
    /// Counts `n` jobs run.
    pub fn ran(&mut self, n: usize) {
        self.jobs = self.jobs.saturating_add(n);
    }

    /// Whether to release now, `idle` saying that no job waits; counts afresh if so.
    pub fn due(&mut self, idle: bool) -> bool {
        if idle && self.jobs >= TRIM_AFTER_JOBS {
            self.jobs = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn the_allocator_takes_the_heap_limit() {
        assert!(few_heaps());
    }

    #[test]
    fn a_release_is_due_only_when_idle_after_enough_jobs() {
        let mut t = Trim::default();
        t.ran(TRIM_AFTER_JOBS - 1);
        assert!(!t.due(true), "too few jobs");
        t.ran(1);
        assert!(!t.due(false), "jobs are waiting");
        assert!(t.due(true));
        assert!(!t.due(true), "counted afresh after a release");
    }

    #[test]
    fn freed_fragmented_memory_goes_back_to_the_system() {
        // 64 MiB in 256-byte blocks, then all but every 64th freed: the survivors pin the heap,
        // so the allocator cannot shrink it from the top and the free pages stay resident.
        let blocks: Vec<Box<[u8; 256]>> =
            (0..256 * 1024).map(|i| Box::new([i as u8; 256])).collect();
        let full = rss_kib();
        let kept: Vec<Box<[u8; 256]>> = blocks.into_iter().step_by(64).collect();
        let freed = rss_kib();
        assert!(
            freed > full / 2,
            "the allocator kept the free pages ({freed} KiB of {full} KiB)"
        );
        assert!(release());
        let after = rss_kib();
        assert!(
            after + 32 * 1024 < freed,
            "at least 32 MiB returned: {freed} KiB -> {after} KiB"
        );
        assert_eq!(kept.len(), 4096);
        assert!(kept.iter().enumerate().all(|(i, b)| b[0] == (i * 64) as u8));
    }
}
