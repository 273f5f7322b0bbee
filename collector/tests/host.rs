//! Host metrics against /proc read at the same moment, and the exposition against promtool.
mod common;

use std::process::Command;

use common::{Collector, process::run_ok, promtool_check};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn meminfo(field: &str) -> f64 {
    let text = read("/proc/meminfo");
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() * 1024.0
}

/// (cpu, mode) → seconds, from /proc/stat.
fn cpu_times() -> Vec<(String, &'static str, f64)> {
    const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
    let mut out = Vec::new();
    for line in read("/proc/stat").lines() {
        let mut w = line.split_whitespace();
        let Some(cpu) = w.next().and_then(|c| c.strip_prefix("cpu")).filter(|c| !c.is_empty()) else { continue };
        for (mode, v) in MODES.iter().zip(w) {
            out.push((cpu.to_owned(), *mode, v.parse::<f64>().unwrap() / 100.0));
        }
    }
    out
}

#[test]
fn cpu_memory_and_load_agree_with_proc() {
    let c = Collector::start(&["--no-collector.diskbpf", "--no-collector.netbpf"]);
    let cpu_before = cpu_times();
    let total_before = meminfo("MemTotal");
    let used_before = total_before - meminfo("MemAvailable");
    let load_before = read("/proc/loadavg");
    let m = c.scrape();
    let cpu_after = cpu_times();
    let used_after = meminfo("MemTotal") - meminfo("MemAvailable");
    let load_after = read("/proc/loadavg");

    // CPU time per cpu and mode lies between the two readings (USER_HZ is 100 here; 0.011 s
    // of slack covers float formatting).
    assert!(!cpu_before.is_empty());
    for ((cpu, mode, lo), (_, _, hi)) in cpu_before.iter().zip(&cpu_after) {
        let v = m.get("system_cpu_time_seconds_total", &[("cpu", cpu), ("mode", mode)]);
        assert!(*lo - 0.011 <= v && v <= *hi + 0.011, "cpu{cpu} {mode}: {lo} <= {v} <= {hi}");
    }
    assert_eq!(m.get("system_cpus", &[]) as usize, cpu_before.len() / 8);

    // MemTotal never changes; used memory moves, so it must lie within 1% of total of the
    // readings taken around the scrape.
    assert_eq!(m.get("system_memory_total_bytes", &[]), total_before);
    let used = m.get("system_memory_used_bytes", &[]);
    let slack = total_before * 0.01;
    assert!(
        used_before.min(used_after) - slack <= used && used <= used_before.max(used_after) + slack,
        "used {used} vs /proc {used_before}..{used_after}"
    );
    assert!(m.get("system_memory_available_bytes", &[]) > 0.0);

    // The kernel updates load averages every 5 s: the value is one of the two readings.
    for (i, period) in ["1m", "5m", "15m"].iter().enumerate() {
        let v = m.get("system_load_average", &[("period", period)]);
        let candidates: Vec<f64> =
            [&load_before, &load_after].iter().map(|l| l.split_whitespace().nth(i).unwrap().parse().unwrap()).collect();
        assert!(candidates.iter().any(|c| (c - v).abs() < 0.006), "load {period} {v} not in {candidates:?}");
    }
}

#[test]
fn cpu_usage_ratio_sees_a_busy_core() {
    let c = Collector::start(&["--no-collector.diskbpf", "--no-collector.netbpf"]);
    // The ratio is measured between samples at least 1 s apart: burn one core for 1.5 s.
    let _ = c.scrape();
    let stop = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    let mut x = 0u64;
    while std::time::Instant::now() < stop {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(x);
    let ratio = c.scrape().get("system_cpu_usage_ratio", &[]);
    let cpus = c.scrape().get("system_cpus", &[]);
    // One busy core out of `cpus`, minus scheduling noise; never above 1.
    assert!(ratio >= 0.6 / cpus && ratio <= 1.0, "ratio {ratio} with {cpus} cpus");
}

#[test]
fn exposition_passes_promtool_and_has_every_metric() {
    let c = Collector::start(&[]);
    // Disk traffic so every family has samples: fsync submits the write (and a flush) to the
    // device from this process. The scrapes themselves are loopback network traffic.
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(format!("{}/promtool-probe", env!("CARGO_TARGET_TMPDIR"))).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.sync_all().unwrap();
    }
    let _ = c.scrape_text();
    let text = c.scrape_text();
    let problems = promtool_check(&text);
    assert!(problems.is_empty(), "promtool check metrics:\n{problems}");
    let m = common::Metrics::parse(&text);
    for name in [
        "system_cpu_usage_ratio",
        "system_cpu_time_seconds_total",
        "system_memory_total_bytes",
        "system_memory_used_bytes",
        "system_memory_available_bytes",
        "system_memory_cached_bytes",
        "system_memory_buffers_bytes",
        "system_memory_swap_total_bytes",
        "system_memory_swap_used_bytes",
        "system_load_average",
        "system_disk_io_operations_total",
        "system_disk_io_bytes_total",
        "system_disk_io_time_seconds_total",
        "system_network_bytes_total",
        "system_network_packets_total",
        "system_network_errors_total",
        "system_network_dropped_total",
        "system_pressure_stalled_seconds_total",
        "system_filesystem_size_bytes",
        "system_filesystem_free_bytes",
        "system_filesystem_avail_bytes",
        "system_filesystem_files",
        "system_filesystem_files_free",
        "system_filesystem_readonly",
        "system_filesystem_device_error",
        "system_filefd_allocated",
        "system_filefd_maximum",
        "system_boot_time_seconds",
        "system_time_seconds",
        "system_timex_offset_seconds",
        "system_timex_sync_status",
        "system_disk_io_latency_seconds",
        "cgroup_network_bytes_total",
        "cgroup_disk_io_bytes_total",
        "collector_build_info",
        "collector_scrape_collector_success",
        "collector_scrape_collector_duration_seconds",
        "collector_bpf_program_attached",
        "collector_bpf_events_dropped_total",
        // The test's own scrapes are HTTP exchanges on loopback, seen from both ends.
        "http_server_request_duration_seconds",
        "http_server_request_body_size_bytes",
        "http_server_response_body_size_bytes",
        "http_server_active_requests",
        "http_client_request_duration_seconds",
        "http_client_request_body_size_bytes",
        "http_client_response_body_size_bytes",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(m.types.contains_key(name), "{name} missing from /metrics");
        assert!(m.help.get(name).is_some_and(|h| !h.is_empty()), "{name} has no HELP");
    }
    assert_eq!(m.types["system_disk_io_latency_seconds"], "histogram");
    // Every collector ran and succeeded, every program is attached.
    for s in m.find("collector_scrape_collector_success", &[]) {
        assert_eq!(s.value, 1.0, "{:?}", s.labels);
    }
    // Three block tracepoints, the HTTP pair (which also counts netbpf's packets), the HTTP
    // close hook, the socket owner hook and the two process-name tracepoints; and the HTTPS
    // capture's twelve (eleven uprobe programs, loaded and attached per library, and its
    // receive tracepoint).
    let attached = m.find("collector_bpf_program_attached", &[]);
    assert_eq!(attached.len(), 21, "{attached:?}");
    assert!(attached.iter().all(|s| s.value == 1.0), "{attached:?}");
}

/// `stat -f` of a path (coreutils, apart from the collector's own statvfs): block size, blocks,
/// free, available, inodes, free inodes.
fn stat_f(path: &str) -> [f64; 6] {
    let out = run_ok(Command::new("stat").args(["-f", "-c", "%S %b %f %a %c %d", path]));
    let v: Vec<f64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
    [v[0], v[1], v[2], v[3], v[4], v[5]]
}

/// A mount the test makes, unmounted (and its loop device freed) on drop.
struct Mounted(String);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Filesystem space and inodes of a tmpfs and of a loop-mounted ext4 the test makes, against
/// `stat -f` of them, empty, filled and emptied again; file handles against
/// /proc/sys/fs/file-nr; connection tracking against /proc/sys/net/netfilter (or skipped with
/// the reason where the module is not loaded); the clock against /proc/stat and this process's.
#[test]
fn filesystem_file_handles_conntrack_and_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().display().to_string();
    let tmpfs = format!("{base}/tmpfs");
    let ext4 = format!("{base}/ext4");
    let image = format!("{base}/ext4.img");
    std::fs::create_dir(&tmpfs).unwrap();
    std::fs::create_dir(&ext4).unwrap();
    run_ok(Command::new("mount").args(["-t", "tmpfs", "-o", "size=8m,nr_inodes=1000", "tmpfs", &tmpfs]));
    let _t = Mounted(tmpfs.clone());
    run_ok(Command::new("truncate").args(["-s", "32M", &image]));
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", &image]));
    run_ok(Command::new("mount").args(["-o", "loop", &image, &ext4]));
    let _e = Mounted(ext4.clone());
    let c = Collector::start(&["--no-collector.diskbpf", "--no-collector.netbpf", "--no-collector.http"]);
    let check = |what: &str| {
        let m = c.scrape();
        for (path, fstype) in [(&tmpfs, "tmpfs"), (&ext4, "ext4")] {
            let [bsize, blocks, free, avail, files, ffree] = stat_f(path);
            let l = [("mountpoint", path.as_str()), ("fstype", fstype)];
            assert_eq!(m.get("system_filesystem_size_bytes", &l), blocks * bsize, "{what} {path}");
            assert_eq!(m.get("system_filesystem_free_bytes", &l), free * bsize, "{what} {path}");
            assert_eq!(m.get("system_filesystem_avail_bytes", &l), avail * bsize, "{what} {path}");
            assert_eq!(m.get("system_filesystem_files", &l), files, "{what} {path}");
            assert_eq!(m.get("system_filesystem_files_free", &l), ffree, "{what} {path}");
            assert_eq!(m.get("system_filesystem_readonly", &l), 0.0);
            assert_eq!(m.get("system_filesystem_device_error", &l), 0.0);
        }
        m
    };
    let empty = check("empty");
    for dir in [&tmpfs, &ext4] {
        std::fs::write(format!("{dir}/fill"), vec![7u8; 3 << 20]).unwrap();
        for i in 0..20 {
            std::fs::write(format!("{dir}/f{i}"), b"x").unwrap();
        }
    }
    run_ok(&mut Command::new("sync"));
    let full = check("filled");
    let l = [("mountpoint", tmpfs.as_str())];
    let used = empty.get("system_filesystem_free_bytes", &l) - full.get("system_filesystem_free_bytes", &l);
    assert!(used >= (3 << 20) as f64, "tmpfs: {used} bytes used by a 3 MiB file");
    assert_eq!(empty.get("system_filesystem_files_free", &l) - full.get("system_filesystem_files_free", &l), 21.0);
    for dir in [&tmpfs, &ext4] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
    run_ok(&mut Command::new("sync"));
    let after = check("emptied");
    assert_eq!(after.get("system_filesystem_free_bytes", &l), empty.get("system_filesystem_free_bytes", &l));
    // Pseudo filesystems are left out.
    assert!(after.find("system_filesystem_size_bytes", &[("mountpoint", "/proc")]).is_empty());
    assert!(after.find("system_filesystem_size_bytes", &[("fstype", "sysfs")]).is_empty());

    // File handles: the maximum exactly, the allocated count as the kernel's moves.
    let nr: Vec<f64> = read("/proc/sys/fs/file-nr").split_whitespace().map(|w| w.parse().unwrap()).collect();
    assert_eq!(after.get("system_filefd_maximum", &[]), nr[2]);
    let allocated = after.get("system_filefd_allocated", &[]);
    assert!((allocated - nr[0]).abs() <= 50.0 + nr[0] * 0.1, "file handles {allocated} against {}", nr[0]);

    // Connection tracking, where the module is loaded.
    let count = "/proc/sys/net/netfilter/nf_conntrack_count";
    if std::path::Path::new(count).exists() {
        let max: f64 = read("/proc/sys/net/netfilter/nf_conntrack_max").trim().parse().unwrap();
        assert_eq!(after.get("system_conntrack_entries_limit", &[]), max);
        let now: f64 = read(count).trim().parse().unwrap();
        let entries = after.get("system_conntrack_entries", &[]);
        assert!((entries - now).abs() <= 50.0 + now * 0.1, "conntrack {entries} against {now}");
    } else {
        assert!(after.find("system_conntrack_entries", &[]).is_empty());
        let log = c.log_text();
        assert!(log.contains("nf_conntrack module is not loaded"), "no skip reason for conntrack: {log}");
    }

    // The clock.
    let btime: f64 = read("/proc/stat").lines().find_map(|l| l.strip_prefix("btime ")).unwrap().trim().parse().unwrap();
    assert_eq!(after.get("system_boot_time_seconds", &[]), btime);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((after.get("system_time_seconds", &[]) - now).abs() < 5.0);
    assert!([0.0, 1.0].contains(&after.get("system_timex_sync_status", &[])));
}
