//! The host's resources through sysinfo: CPUs, memory, and free disk of the state directory's
//! filesystem, minus the configured reservation.

use std::path::Path;

use sysinfo::{Disks, MemoryRefreshKind, RefreshKind, System};

use crate::config::Config;
use crate::core::Capacity;

/// Samples what the host can give to tasks.
pub fn sample(config: &Config) -> Capacity {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let sys = System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let mem_mib = sys.map_or(0.0, |s| s.total_memory() as f64 / (1024.0 * 1024.0));
    Capacity {
        cpus: (cpus - config.reserved_cpus).max(0.0),
        mem_mib: (mem_mib - config.reserved_mem_mib).max(0.0).floor(),
        disk_mib: free_disk_mib(&config.state_dir).floor(),
    }
}

/// Free space (MiB) of the filesystem holding `dir` (the mount with the longest matching
/// prefix; the root's when `dir` does not exist yet).
pub fn free_disk_mib(dir: &Path) -> f64 {
    let Ok(disks) = Disks::new_with_refreshed_list() else {
        return 0.0;
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    disks
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map_or(0.0, |d| d.available_space() as f64 / (1024.0 * 1024.0))
}

/// Whether `new` differs from `old` enough to re-offer: any CPU or memory change, or a disk
/// change above 1 % (free space moves all the time).
pub fn changed(old: &Capacity, new: &Capacity) -> bool {
    old.cpus != new.cpus
        || old.mem_mib != new.mem_mib
        || (old.disk_mib - new.disk_mib).abs() > old.disk_mib.max(1.0) * 0.01
}
