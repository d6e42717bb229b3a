//! The standard process metrics, read from `/proc/self` at each scrape: resident and
//! virtual memory, CPU seconds, open and maximum file descriptors, start time.
//!
//! They keep the names every Prometheus client library gives them (`process_*`, no
//! `tether_` prefix), so stock dashboards and alerts work unchanged. Off Linux, or when
//! `/proc` is not mounted, the collector writes nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::emit;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Snapshot {
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on file descriptors.
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Reads `/proc/self`; `None` where there is none.
pub fn snapshot() -> Option<Snapshot> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let ticks = rustix::param::clock_ticks_per_second();
    let page = rustix::param::page_size() as u64;
    let mut s = parse_stat(&stat, &boot, ticks, page)?;
    // The directory listing itself held one descriptor.
    s.open_fds = open_fds.saturating_sub(1);
    s.max_fds = parse_max_fds(&limits);
    Some(s)
}

/// Parses `/proc/self/stat` (and `btime` of `/proc/stat`) with the given clock ticks per
/// second and page size.
pub fn parse_stat(stat: &str, proc_stat: &str, ticks: u64, page: u64) -> Option<Snapshot> {
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // `after` starts at field 3 (state); utime is field 14, so index 11 here.
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let ticks = ticks.max(1) as f64;
    let utime = num(11)?;
    let stime = num(12)?;
    let start_ticks = num(19)?;
    let vsize = num(20)?;
    let rss_pages = num(21)?;
    let btime = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    Some(Snapshot {
        resident_bytes: rss_pages.saturating_mul(page),
        virtual_bytes: vsize,
        cpu_seconds: (utime + stime) as f64 / ticks,
        open_fds: 0,
        max_fds: None,
        start_time_seconds: btime as f64 + start_ticks as f64 / ticks,
    })
}

/// The soft "Max open files" of `/proc/self/limits`.
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `process_*` metrics; register it on an unprefixed registry.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Some(s) = snapshot() else {
            return Ok(());
        };
        let sat = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        emit::gauge(
            &mut enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            sat(s.resident_bytes),
        )?;
        emit::gauge(
            &mut enc,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            sat(s.virtual_bytes),
        )?;
        // A counter of fractional seconds, as the standard collectors write it.
        let cpu = prometheus_client::metrics::counter::ConstCounter::new(s.cpu_seconds);
        prometheus_client::encoding::EncodeMetric::encode(
            &cpu,
            enc.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?,
        )?;
        emit::gauge(
            &mut enc,
            "process_open_fds",
            "Number of open file descriptors.",
            sat(s.open_fds),
        )?;
        if let Some(max) = s.max_fds {
            emit::gauge(
                &mut enc,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                sat(max),
            )?;
        }
        emit::gauge_f64(
            &mut enc,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            s.start_time_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with spaces and a ')' in it; fields as the kernel writes them.
        let stat = "4242 (tether (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 123456789 2048 18446744073709551615";
        let boot = "cpu 1 2 3\nbtime 1700000000\nprocesses 9\n";
        let s = parse_stat(stat, boot, 100, 4096).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.virtual_bytes, 123_456_789);
        assert_eq!(s.resident_bytes, 2048 * 4096);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!(parse_stat("garbage", boot, 100, 4096), None);
        assert_eq!(parse_stat(stat, "no btime", 100, 4096), None);
    }

    #[test]
    fn max_open_files_is_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(parse_max_fds("nothing"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let before = snapshot().unwrap();
        let _file = tempfile::tempfile().unwrap();
        let after = snapshot().unwrap();
        assert!(before.resident_bytes > 0);
        assert_eq!(after.open_fds, before.open_fds + 1);
        assert!(after.max_fds.unwrap() >= after.open_fds);

        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let scrape = crate::text::parse(&crate::encode(&registry)).unwrap();
        assert!(scrape.value("process_resident_memory_bytes", &[]).unwrap() > 0.0);
        assert!(scrape.value("process_cpu_seconds_total", &[]).is_some());
        assert!(scrape.value("process_open_fds", &[]).unwrap() >= 1.0);
    }
}
