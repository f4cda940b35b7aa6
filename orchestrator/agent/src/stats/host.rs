//! Node totals read from the host: CPU from /proc/stat, memory from /proc/meminfo, network from
//! /proc/net/dev, filesystem from statvfs of the agent's root.

use std::path::Path;

use crate::runtime::InterfaceStats;

/// Cumulative busy CPU nanoseconds of the whole host (all but idle and iowait).
pub(crate) fn cpu_nanos() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let busy: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse::<u64>().ok())
        .enumerate()
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    // USER_HZ is 100 on Linux.
    busy * 10_000_000
}

/// A /proc/meminfo value in bytes.
pub(crate) fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        * 1024
}

/// Counters of the host's interfaces except loopback.
pub(crate) fn network() -> Vec<InterfaceStats> {
    parse_net_dev(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default())
        .into_iter()
        .filter(|i| i.name != "lo")
        .collect()
}

/// `/proc/net/dev`: two header lines, then `name: rx_bytes rx_packets rx_errs rx_drop fifo frame
/// compressed multicast tx_bytes tx_packets tx_errs tx_drop …`.
pub(crate) fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            (v.len() >= 12).then(|| InterfaceStats {
                name: name.trim().to_owned(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

/// Capacity, available and used bytes of the filesystem holding `path`.
pub(crate) fn filesystem(path: &Path) -> (u64, u64, u64) {
    nix::sys::statvfs::statvfs(path)
        .map(|s| {
            let block = s.fragment_size();
            let capacity = s.blocks() * block;
            let available = s.blocks_available() * block;
            let used = capacity.saturating_sub(s.blocks_free() * block);
            (capacity, available, used)
        })
        .unwrap_or((0, 0, 0))
}

/// Bytes of every file under `dir` (not following links).
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:  100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n  \
 eth0: 5000 40 1 2 0 0 0 0 7000 50 3 4 0 0 0 0\n";
        let v = parse_net_dev(text);
        assert_eq!(v.len(), 2);
        let eth = &v[1];
        assert_eq!(eth.name, "eth0");
        assert_eq!(
            (eth.rx_bytes, eth.rx_packets, eth.rx_errors, eth.rx_dropped),
            (5000, 40, 1, 2)
        );
        assert_eq!(
            (eth.tx_bytes, eth.tx_packets, eth.tx_errors, eth.tx_dropped),
            (7000, 50, 3, 4)
        );
    }

    #[test]
    fn host_reads_are_plausible() {
        assert!(cpu_nanos() > 0);
        assert!(meminfo("MemTotal") > meminfo("MemAvailable"));
        let (capacity, available, used) = filesystem(Path::new("/"));
        assert!(capacity >= available && capacity >= used && capacity > 0);
    }
}
