//! The `process_*` series Prometheus client libraries export, read from `/proc/self`
//! at each scrape (Linux; elsewhere they stay 0).

use super::metrics::Metrics;

/// Registers `process_start_time_seconds`, `process_resident_memory_bytes` and `process_open_fds`.
pub fn register(m: &Metrics) {
    let start = m.gauge("process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.");
    start.set(start_time().unwrap_or(0.0));
    m.gauge_fn("process_resident_memory_bytes", "Resident memory size in bytes.", || resident_bytes().unwrap_or(0.0) as i64);
    m.gauge_fn("process_open_fds", "Number of open file descriptors.", || open_fds().unwrap_or(0.0) as i64);
}

/// Page size in bytes.
fn page_size() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as f64
    } else {
        4096.0
    }
}

/// `/proc/self/statm`'s second field (resident pages), in bytes.
fn resident_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// Entries in `/proc/self/fd` (less the one reading it).
fn open_fds() -> Option<f64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(n.saturating_sub(1) as f64)
}

/// Boot time (`/proc/stat` btime) plus the process's start in clock ticks (`/proc/self/stat` field 22).
fn start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let btime: f64 = std::fs::read_to_string("/proc/stat").ok()?.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + ticks / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_self() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = start_time().unwrap();
        assert!(start > now - 3600.0 && start <= now + 1.0, "{start} vs {now}");
        assert!(resident_bytes().unwrap() > 1e5);
        assert!(open_fds().unwrap() >= 3.0);
    }
}
