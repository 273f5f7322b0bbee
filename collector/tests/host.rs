//! Host metrics against /proc read at the same moment, and the exposition against promtool.
mod common;

use common::{Collector, promtool_check};

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
