//! The host's resources: CPUs, memory (sysinfo) minus the configured reservation, and the
//! disk of the filesystem dockerd keeps images on (`[images] path`) that tasks may fill before
//! image garbage collection would start.

use sysinfo::{MemoryRefreshKind, RefreshKind, System};

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
        disk_mib: offered_disk_mib(&config.images).floor(),
    }
}

/// What (MiB) of the images' filesystem tasks may fill: what is available less what must stay
/// free for it to stay at or below `gc_high_percent` (so a task that takes the whole offer
/// does not set the image collection off). 0 when it cannot be read.
pub fn offered_disk_mib(gc: &crate::config::ImageGc) -> f64 {
    let Some((_, total, available)) = super::images::usage(&gc.path) else {
        return 0.0;
    };
    let keep_free = total as f64 * f64::from(100 - gc.high_percent) / 100.0;
    ((available as f64 - keep_free) / (1024.0 * 1024.0)).max(0.0)
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

/// This process's resident memory in KiB (`/proc/self/statm`, pages of 4 KiB as on every
/// Linux target the agent ships for); 0 when it cannot be read.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
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
