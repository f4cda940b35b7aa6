//! Resource limits and usage for process-runtime containers, through cgroups: v2 when the
//! unified hierarchy has the memory and cpu controllers, else the v1 memory, cpu and cpuacct
//! hierarchies, else nothing (limits are then not enforced, and the agent says so once).

use std::path::{Path, PathBuf};

use crate::runtime::ContainerStats;

const ROOT: &str = "/sys/fs/cgroup";
const GROUP: &str = "skiff";

/// Which cgroup layout is usable on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cgroups {
    /// Unified hierarchy at this path.
    V2(PathBuf),
    /// Legacy hierarchies.
    V1,
    /// None writable.
    Unavailable,
}

fn writable_dir(path: &Path) -> bool {
    let probe = path.join(format!("{GROUP}-probe-{}", std::process::id()));
    let ok = std::fs::create_dir_all(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    ok
}

impl Cgroups {
    /// Detect what this host offers.
    pub(crate) fn detect() -> Self {
        let v2 = Path::new(ROOT);
        if let Ok(controllers) = std::fs::read_to_string(v2.join("cgroup.controllers"))
            && controllers.contains("memory")
            && controllers.contains("cpu")
            && writable_dir(v2)
        {
            return Cgroups::V2(v2.to_owned());
        }
        if writable_dir(&v2.join("memory")) && writable_dir(&v2.join("cpu")) {
            return Cgroups::V1;
        }
        Cgroups::Unavailable
    }

    /// A short description for logs and node info.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Cgroups::V2(_) => "cgroup v2",
            Cgroups::V1 => "cgroup v1",
            Cgroups::Unavailable => "no writable cgroups",
        }
    }

    fn v1(controller: &str, id: &str) -> PathBuf {
        Path::new(ROOT).join(controller).join(GROUP).join(id)
    }

    /// Create the container's group with its limits; returns the `cgroup.procs` files a process
    /// must join.
    pub(crate) fn create(
        &self,
        id: &str,
        cpu_limit_milli: i64,
        memory_limit_bytes: i64,
    ) -> std::io::Result<Vec<PathBuf>> {
        let period = 100_000i64;
        match self {
            Cgroups::V2(root) => {
                let parent = root.join(GROUP);
                std::fs::create_dir_all(&parent)?;
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu +memory");
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory");
                let dir = parent.join(id);
                std::fs::create_dir_all(&dir)?;
                if memory_limit_bytes > 0 {
                    std::fs::write(dir.join("memory.max"), memory_limit_bytes.to_string())?;
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                }
                if cpu_limit_milli > 0 {
                    std::fs::write(
                        dir.join("cpu.max"),
                        format!("{} {period}", cpu_limit_milli * period / 1000),
                    )?;
                }
                Ok(vec![dir.join("cgroup.procs")])
            }
            Cgroups::V1 => {
                let mut procs = Vec::new();
                for controller in ["memory", "cpu", "cpuacct"] {
                    let dir = Self::v1(controller, id);
                    if std::fs::create_dir_all(&dir).is_err() {
                        continue;
                    }
                    if controller == "memory" && memory_limit_bytes > 0 {
                        std::fs::write(
                            dir.join("memory.limit_in_bytes"),
                            memory_limit_bytes.to_string(),
                        )?;
                        let _ = std::fs::write(
                            dir.join("memory.memsw.limit_in_bytes"),
                            memory_limit_bytes.to_string(),
                        );
                    }
                    if controller == "cpu" && cpu_limit_milli > 0 {
                        std::fs::write(dir.join("cpu.cfs_period_us"), period.to_string())?;
                        std::fs::write(
                            dir.join("cpu.cfs_quota_us"),
                            (cpu_limit_milli * period / 1000).to_string(),
                        )?;
                    }
                    procs.push(dir.join("cgroup.procs"));
                }
                Ok(procs)
            }
            Cgroups::Unavailable => Ok(Vec::new()),
        }
    }

    /// Whether the container's memory limit killed something.
    pub(crate) fn oom_killed(&self, id: &str) -> bool {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let count = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        match self {
            Cgroups::V2(root) => count(&read(root.join(GROUP).join(id).join("memory.events"))) > 0,
            Cgroups::V1 => count(&read(Self::v1("memory", id).join("memory.oom_control"))) > 0,
            Cgroups::Unavailable => false,
        }
    }

    /// Usage of the container's group, or `None` when it has none.
    pub(crate) fn usage(&self, id: &str) -> Option<ContainerStats> {
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        let num = |p: PathBuf| read(p).and_then(|t| t.trim().parse::<u64>().ok());
        match self {
            Cgroups::V2(root) => {
                let dir = root.join(GROUP).join(id);
                let cpu = read(dir.join("cpu.stat"))?;
                let usage = num(dir.join("memory.current"))?;
                let mem = read(dir.join("memory.stat")).unwrap_or_default();
                Some(ContainerStats {
                    cpu_usage_nanos: stat_value(&cpu, "usage_usec") * 1000,
                    cpu_user_nanos: stat_value(&cpu, "user_usec") * 1000,
                    cpu_system_nanos: stat_value(&cpu, "system_usec") * 1000,
                    cpu_periods: stat_value(&cpu, "nr_periods"),
                    cpu_throttled_periods: stat_value(&cpu, "nr_throttled"),
                    cpu_throttled_nanos: stat_value(&cpu, "throttled_usec") * 1000,
                    memory_usage_bytes: usage,
                    memory_working_set_bytes: usage
                        .saturating_sub(stat_value(&mem, "inactive_file")),
                    memory_rss_bytes: stat_value(&mem, "anon"),
                    memory_cache_bytes: stat_value(&mem, "file"),
                    memory_swap_bytes: num(dir.join("memory.swap.current")).unwrap_or(0),
                })
            }
            Cgroups::V1 => {
                let cpu = num(Self::v1("cpuacct", id).join("cpuacct.usage"))?;
                // cpuacct.stat is in USER_HZ (100 per second on Linux).
                let split = read(Self::v1("cpuacct", id).join("cpuacct.stat")).unwrap_or_default();
                let throttling = read(Self::v1("cpu", id).join("cpu.stat")).unwrap_or_default();
                let usage = num(Self::v1("memory", id).join("memory.usage_in_bytes"))?;
                let mem = read(Self::v1("memory", id).join("memory.stat")).unwrap_or_default();
                Some(ContainerStats {
                    cpu_usage_nanos: cpu,
                    cpu_user_nanos: stat_value(&split, "user") * 10_000_000,
                    cpu_system_nanos: stat_value(&split, "system") * 10_000_000,
                    cpu_periods: stat_value(&throttling, "nr_periods"),
                    cpu_throttled_periods: stat_value(&throttling, "nr_throttled"),
                    cpu_throttled_nanos: stat_value(&throttling, "throttled_time"),
                    memory_usage_bytes: usage,
                    memory_working_set_bytes: usage
                        .saturating_sub(stat_value(&mem, "total_inactive_file")),
                    memory_rss_bytes: stat_value(&mem, "total_rss"),
                    memory_cache_bytes: stat_value(&mem, "total_cache"),
                    memory_swap_bytes: stat_value(&mem, "total_swap"),
                })
            }
            Cgroups::Unavailable => None,
        }
    }

    /// Remove the container's group (it must have no processes left).
    pub(crate) fn remove(&self, id: &str) {
        match self {
            Cgroups::V2(root) => {
                let _ = std::fs::remove_dir(root.join(GROUP).join(id));
            }
            Cgroups::V1 => {
                for c in ["memory", "cpu", "cpuacct"] {
                    let _ = std::fs::remove_dir(Self::v1(c, id));
                }
            }
            Cgroups::Unavailable => {}
        }
    }
}

/// The value of `key` in a `key value` per line file (`cpu.stat`, `memory.stat`), 0 if absent.
fn stat_value(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keyed_values_exactly() {
        let text = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\n";
        assert_eq!(stat_value(text, "usage_usec"), 1500);
        assert_eq!(stat_value(text, "user_usec"), 1000);
        assert_eq!(stat_value(text, "nr_periods"), 7);
        assert_eq!(stat_value(text, "nr_throttled"), 0);
        // A key that is a prefix of another is not confused with it.
        assert_eq!(
            stat_value("total_rss_huge 5\ntotal_rss 9\n", "total_rss"),
            9
        );
    }
}
