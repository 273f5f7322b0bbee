//! Network: bytes over loopback TCP from a process in a known cgroup, and /proc/net/dev.
mod common;

use std::{io::Read as _, net::TcpListener};

use common::{Collector, Metrics, TestCgroup};

/// (rx bytes, rx packets, tx bytes, tx packets) of `dev` in /proc/net/dev.
fn netdev(dev: &str) -> [f64; 4] {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap();
    let line = text.lines().find(|l| l.trim_start().starts_with(&format!("{dev}:"))).unwrap();
    let f: Vec<f64> = line.split_once(':').unwrap().1.split_whitespace().map(|v| v.parse().unwrap()).collect();
    [f[0], f[1], f[8], f[9]]
}

fn lo(m: &Metrics) -> [f64; 4] {
    [
        m.get("system_network_bytes_total", &[("device", "lo"), ("direction", "receive")]),
        m.get("system_network_packets_total", &[("device", "lo"), ("direction", "receive")]),
        m.get("system_network_bytes_total", &[("device", "lo"), ("direction", "transmit")]),
        m.get("system_network_packets_total", &[("device", "lo"), ("direction", "transmit")]),
    ]
}

const N: usize = 8 << 20;

/// With the HTTP collector on, its programs count the packets (one program per packet).
#[test]
fn cgroup_bytes_cover_what_was_sent_and_loopback_matches_proc() {
    cgroup_bytes(&[], "http_ingress");
}

/// Without it, netbpf attaches its own pair.
#[test]
fn cgroup_bytes_without_the_http_collector() {
    cgroup_bytes(&["--no-collector.http"], "cgroup_net_ingress");
}

fn cgroup_bytes(args: &[&str], counting_program: &str) {
    let c = Collector::start(args);
    let cg = TestCgroup::new("net");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        buf.len()
    });

    let before = netdev("lo");
    let m0 = c.scrape();
    let after = netdev("lo");
    assert_eq!(m0.get("collector_bpf_program_attached", &[("program", counting_program)]), 1.0);
    // The netdev collector reports what /proc/net/dev said during the scrape.
    for (i, v) in lo(&m0).iter().enumerate() {
        assert!(before[i] <= *v && *v <= after[i], "lo[{i}]: {} <= {v} <= {}", before[i], after[i]);
    }

    // bash opens the socket after moving itself into the cgroup, so the socket is the cgroup's.
    cg.run_bash(&format!("exec 3<>/dev/tcp/127.0.0.1/{port} && head -c {N} /dev/zero >&3 && exec 3>&-"));
    assert_eq!(receiver.join().unwrap(), N);
    let m1 = c.scrape();

    let labels = |dir: &'static str| [("cgroup", cg.rel.as_str()), ("direction", dir)];
    let tx = m1.get_or_zero("cgroup_network_bytes_total", &labels("transmit"));
    let tx_packets = m1.get_or_zero("cgroup_network_packets_total", &labels("transmit"));
    eprintln!("cgroup {}: transmit +{tx} bytes in {tx_packets} packets for {N} payload bytes", cg.rel);
    // Counted bytes include IP and TCP headers, so at least N.
    assert!(tx >= N as f64, "cgroup {} transmitted {tx} bytes, sent {N}", cg.rel);
    // …and not wildly more: headers are under 10% for full-sized loopback segments.
    assert!(tx <= N as f64 * 1.1, "cgroup {} transmitted {tx} bytes for {N}", cg.rel);
    assert!(tx_packets >= 1.0);
    // The ACKs the socket received count as the cgroup's receive traffic.
    assert!(m1.get_or_zero("cgroup_network_packets_total", &labels("receive")) >= 1.0);

    // Loopback carried the payload both ways (out of one socket, into the other).
    let (l0, l1) = (lo(&m0), lo(&m1));
    assert!(l1[0] - l0[0] >= N as f64 && l1[2] - l0[2] >= N as f64, "lo {l0:?} -> {l1:?}");
    assert_eq!(m1.get("collector_bpf_events_dropped_total", &[("reason", "cgroup_network_map_full")]), 0.0);
}
