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

/// The TCP ports something on the host listens on (`/proc/net/tcp` and `tcp6`, state LISTEN),
/// sorted; an unreadable file counts as none.
pub fn listening_ports() -> Vec<u16> {
    let mut ports: Vec<u16> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| parse_listening(&text))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The LISTEN ports of one `/proc/net/tcp`-style table: `sl local_address rem_address st ...`
/// with the address as `HEXIP:HEXPORT` and state `0A` for LISTEN.
fn parse_listening(text: &str) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            if state != "0A" {
                return None;
            }
            let port = local.rsplit_once(':')?.1;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod listening_tests {
    use super::*;

    #[test]
    fn listeners_are_read_from_the_kernel_s_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:7918 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 3 1 0 100 0 0 10 0
";
        // 0x7918 = 31000 and 0x50 = 80 listen; 0x1F90 is an established connection.
        assert_eq!(parse_listening(table), vec![31000, 80]);
        // And this machine's own table parses (whatever is listening here).
        let _ = listening_ports();
    }
}
