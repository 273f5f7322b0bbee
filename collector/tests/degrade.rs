//! Degradation: missing hooks, a broken procfs, and missing privileges.
mod common;

use std::process::Command;

use common::Collector;

fn skipped_reason(m: &common::Metrics, collector: &str) -> String {
    let s = m.find("collector_collector_skipped_info", &[("collector", collector)]);
    assert_eq!(s.len(), 1, "{collector} not reported as skipped: {s:?}");
    s[0].labels["reason"].clone()
}

#[test]
fn missing_tracefs_skips_only_the_disk_programs() {
    let c = Collector::start(&["--path.tracefs", "/nonexistent-tracefs"]);
    let m = c.scrape();
    let reason = skipped_reason(&m, "diskbpf");
    assert!(reason.contains("not a tracefs mount"), "{reason}");
    assert_eq!(m.get("collector_collector_enabled", &[("collector", "diskbpf")]), 0.0);
    assert_eq!(m.get("collector_collector_enabled", &[("collector", "netbpf")]), 1.0);
    assert_eq!(m.find("system_disk_io_latency_seconds_count", &[]).len(), 0);
    assert_eq!(m.find("collector_bpf_program_attached", &[("program", "block_rq_issue")]).len(), 0);
    assert_eq!(m.get("collector_scrape_collector_success", &[("collector", "netbpf")]), 1.0);
    assert_eq!(m.get("collector_scrape_collector_success", &[("collector", "diskstats")]), 1.0);
    assert!(c.log_text().contains("collector skipped"), "the skip is logged");
}

#[test]
fn no_cgroup_v2_skips_only_the_network_programs() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&["--path.cgroupfs", dir.path().to_str().unwrap()]);
    let m = c.scrape();
    let reason = skipped_reason(&m, "netbpf");
    assert!(reason.contains("no cgroup v2 hierarchy"), "{reason}");
    assert_eq!(m.get("collector_scrape_collector_success", &[("collector", "diskbpf")]), 1.0);
    assert_eq!(m.find("collector_bpf_program_attached", &[("program", "cgroup_net_ingress")]).len(), 0);
}

#[test]
fn broken_procfs_fails_those_collectors_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("stat"), "garbage\n").unwrap();
    std::fs::write(p.join("meminfo"), "MemTotal: 100").unwrap(); // truncated
    std::fs::write(p.join("loadavg"), "0.50 0.40 0.30 1/100 1234\n").unwrap();
    std::fs::write(p.join("diskstats"), "").unwrap();
    std::fs::create_dir(p.join("pressure")).unwrap();
    std::fs::write(p.join("pressure/cpu"), "some avg10=x").unwrap();
    // net/dev is missing altogether.
    let c =
        Collector::start(&["--path.procfs", p.to_str().unwrap(), "--no-collector.diskbpf", "--no-collector.netbpf"]);
    for _ in 0..2 {
        let m = c.scrape();
        for failed in ["cpu", "meminfo", "pressure", "netdev"] {
            assert_eq!(m.get("collector_scrape_collector_success", &[("collector", failed)]), 0.0, "{failed}");
        }
        // An empty diskstats is a valid file with no devices.
        for ok in ["loadavg", "diskstats"] {
            assert_eq!(m.get("collector_scrape_collector_success", &[("collector", ok)]), 1.0, "{ok}");
        }
        assert_eq!(m.get("system_load_average", &[("period", "1m")]), 0.5);
    }
    let mut child = c;
    assert!(child.child.try_wait().unwrap().is_none(), "collector exited");
    assert!(child.log_text().contains("collector failed"));
    let _ = child.child.kill();
}

#[test]
fn missing_pressure_files_skip_the_pressure_collector() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("loadavg"), "0.50 0.40 0.30 1/100 1234\n").unwrap();
    let c = Collector::start(&[
        "--path.procfs",
        dir.path().to_str().unwrap(),
        "--no-collector.diskbpf",
        "--no-collector.netbpf",
    ]);
    let reason = skipped_reason(&c.scrape(), "pressure");
    assert!(reason.contains("PSI not available"), "{reason}");
}

#[test]
fn without_privileges_it_says_what_is_missing_and_exits() {
    // setpriv (util-linux) drops to nobody; the effective capability set becomes empty.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", common::BIN, "--web.listen-address", "127.0.0.1:0"])
        .output()
        .expect("setpriv");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{stderr}");
    assert!(lines[0].contains("missing capabilities CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"), "{}", lines[0]);
    assert!(lines[0].contains("--no-collector.diskbpf"), "{}", lines[0]);
    assert!(lines[0].contains("--no-collector.http"), "{}", lines[0]);

    // Without the eBPF collectors no privilege is needed: it starts and serves.
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", common::BIN])
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(["--no-collector.diskbpf", "--no-collector.netbpf", "--no-collector.http"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "unprivileged start without eBPF collectors failed");
    let _ = child.kill();
    let _ = child.wait();
}
