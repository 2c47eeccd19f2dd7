//! What /proc tells about the daemon (found through `SO_PEERCRED`) and about
//! this process: resident memory and CPU time per thread, so a report can
//! say which of the daemon's threads bounds throughput.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

/// The pid of the process at the other end of a connected Unix socket.
/// tokio's `peer_cred` is `getsockopt(SO_PEERCRED)` (std's is unstable).
pub fn peer_pid(stream: &tokio::net::UnixStream) -> std::io::Result<Option<u32>> {
    let cred = stream.peer_cred()?;
    Ok(cred.pid().and_then(|p| u32::try_from(p).ok()))
}

/// Resident set size now and its peak, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rss {
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

impl Rss {
    pub fn describe(&self) -> String {
        format!(
            "VmRSS {:.1} MB, VmHWM (peak) {:.1} MB",
            self.rss_kb as f64 / 1024.0,
            self.hwm_kb as f64 / 1024.0
        )
    }
}

pub fn rss(pid: u32) -> Option<Rss> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Rss {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
    })
}

/// `RssAnon`, `RssFile` and `RssShmem` of /proc/<pid>/status in kB: what
/// the resident memory is made of (heap and stacks; mapped files, such as
/// a memory-mapped database; shared memory).
pub fn rss_parts(pid: u32) -> Option<[(&'static str, u64); 3]> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some([
        ("anon", field("RssAnon:")?),
        ("file", field("RssFile:")?),
        ("shmem", field("RssShmem:")?),
    ])
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// `(comm, utime + stime)` of one /proc/.../stat file.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // Fields after the comm start at field 3 (state); utime is 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU ticks of every thread of a process at one instant.
pub struct CpuSnapshot {
    at: Instant,
    pid: u32,
    threads: HashMap<u32, (String, u64)>,
}

/// CPU used between two snapshots, in cores (1.0 = one core busy).
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub cores: f64,
    /// Thread name → cores, threads of the same name summed, busiest first.
    pub threads: Vec<(String, f64)>,
}

impl CpuUse {
    pub fn describe(&self, top: usize) -> String {
        let parts: Vec<String> = self
            .threads
            .iter()
            .take(top)
            .filter(|(_, c)| *c >= 0.01)
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect();
        format!("{:.2} cores ({})", self.cores, parts.join(", "))
    }
}

impl CpuSnapshot {
    pub fn take(pid: u32) -> CpuSnapshot {
        let mut threads = HashMap::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                if let Ok(text) = std::fs::read_to_string(entry.path().join("stat"))
                    && let Some(v) = parse_stat(&text)
                {
                    threads.insert(tid, v);
                }
            }
        }
        CpuSnapshot {
            at: Instant::now(),
            pid,
            threads,
        }
    }

    pub fn own() -> CpuSnapshot {
        CpuSnapshot::take(std::process::id())
    }

    /// CPU used since `self` (threads that started since count from zero).
    pub fn used_since(&self) -> CpuUse {
        let now = CpuSnapshot::take(self.pid);
        let secs = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let hz = clock_ticks_per_sec();
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        let mut total = 0.0;
        for (tid, (name, ticks)) in &now.threads {
            let before = self.threads.get(tid).map_or(0, |(_, t)| *t);
            let cores = ticks.saturating_sub(before) as f64 / hz / secs;
            total += cores;
            *by_name.entry(name.clone()).or_default() += cores;
        }
        let mut threads: Vec<(String, f64)> = by_name.into_iter().collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        CpuUse {
            cores: total,
            threads,
        }
    }
}

/// Busy CPU of the whole machine (all processes), from /proc/stat: shows
/// how much of the two cores went to processes other than vaultd and the
/// bench (e.g. a build running beside the benchmark).
pub struct SystemCpu {
    at: Instant,
    busy: u64,
}

fn system_busy_ticks() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

impl SystemCpu {
    pub fn take() -> SystemCpu {
        SystemCpu {
            at: Instant::now(),
            busy: system_busy_ticks(),
        }
    }

    /// Busy cores since `self`.
    pub fn cores_since(&self) -> f64 {
        let secs = self.at.elapsed().as_secs_f64().max(1e-9);
        system_busy_ticks().saturating_sub(self.busy) as f64 / clock_ticks_per_sec() / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "1234 (tokio (rt) w) S 1 1234 1234 0 -1 4194368 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_stat(line), Some(("tokio (rt) w".to_owned(), 300)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_visible() {
        let me = rss(std::process::id()).expect("own status");
        assert!(me.rss_kb > 0 && me.hwm_kb >= me.rss_kb);
        let snap = CpuSnapshot::own();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = snap.used_since();
        assert!(!used.threads.is_empty());
        assert!(used.cores >= 0.0);
    }
}
