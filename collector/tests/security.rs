//! Privacy of HTTP payloads, and least privilege: capabilities dropped after attach, running
//! with capabilities instead of root, the listening process without any, and the privileged
//! helper. (The endpoint's own security, TLS and timeouts: endpoint.rs.)
mod common;

#[path = "common/http.rs"]
mod http_util;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::Collector;

/// Waits for `needle` in the collector's log (the log reader runs on its own thread).
fn wait_log(c: &Collector, needle: &str) {
    assert!(c.log_appears(needle, Duration::from_secs(5)), "{needle:?} not in the log:\n{}", c.log_text());
}

/// The capability the collector keeps to read its maps, as a mask: kernels before 6.x (5.10
/// here) check CAP_BPF on every bpf() call while `kernel.unprivileged_bpf_disabled` is set, and
/// the collector then keeps that one capability, saying so in its log. 0 elsewhere.
fn kept_for_maps(c: &Collector) -> u64 {
    wait_log(c, "collector started");
    let log = c.log_text();
    let Some(line) = log.lines().find(|l| l.contains("checks capabilities on every bpf() call")) else { return 0 };
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap();
    assert_ne!(disabled.trim(), "0", "a capability kept while unprivileged BPF is allowed: {line}");
    if line.contains("CAP_BPF") {
        1 << 39
    } else {
        assert!(line.contains("CAP_SYS_ADMIN"), "{line}");
        1 << 21
    }
}

/// A wrapper that raises the BPF memory limit, as a service unit with LimitMEMLOCK=infinity
/// does, on kernels that need it: before 5.11 maps are charged to RLIMIT_MEMLOCK, which a
/// process without CAP_SYS_RESOURCE cannot raise itself (README, Security). Elsewhere `env`,
/// which changes nothing.
fn memlock() -> [&'static str; 2] {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (v.next().unwrap(), v.next().unwrap());
    if (major, minor) < (5, 11) { ["prlimit", "--memlock=unlimited:unlimited"] } else { ["env", "--"] }
}

#[test]
fn http_payloads_never_reach_the_metrics() {
    let c = Collector::start(&["--no-collector.diskbpf"]);
    let srv = http_util::TestServer::start("127.0.0.1");
    let secret = format!("Zq{}x{}Secret", std::process::id(), Instant::now().elapsed().as_nanos() % 9973);
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    let body = format!("password={secret}");
    let req = format!(
        "POST /{secret}/login?token={secret} HTTP/1.1\r\nHost: {secret}.example\r\nCookie: session={secret}\r\n\
         Authorization: Bearer {secret}\r\nUser-Agent: {secret}\r\nX-{secret}: {secret}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut exchange = |s: &mut TcpStream, req: &[u8]| {
        s.write_all(req).unwrap();
        let mut buf = [0u8; 4096];
        let before = String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count();
        while String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count() == before {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
    };
    exchange(&mut s, req.as_bytes());
    // A request whose method is the secret too (longer than any known method: over 30 bytes).
    exchange(&mut s, format!("{}-LONG-METHOD-TOKEN / HTTP/1.1\r\nHost: x\r\n\r\n", secret.to_uppercase()).as_bytes());
    let text = c.scrape_text();
    let m = common::Metrics::parse(&text);
    let port = srv.port.to_string();
    let seen: f64 =
        m.find("http_server_request_duration_seconds_count", &[("server_port", &port)]).iter().map(|s| s.value).sum();
    // Both are measured: the POST, and the request with an unknown method as `_OTHER`.
    assert_eq!(seen, 2.0, "requests measured");
    let other = m.find(
        "http_server_request_duration_seconds_count",
        &[("server_port", &port), ("http_request_method", "_OTHER")],
    );
    assert_eq!(other.iter().map(|s| s.value).sum::<f64>(), 1.0, "{other:?}");
    for needle in [secret.as_str(), &secret.to_uppercase(), &secret.to_lowercase(), "login", "password", "Bearer"] {
        assert!(!text.contains(needle), "{needle:?} appears in /metrics");
    }
    assert!(!c.log_text().contains(&secret), "the secret appears in the log");
}

/// `CapEff`, `CapPrm`, `CapInh`, `CapAmb` and `CapBnd` of every thread of `pid`.
fn thread_caps(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        for l in status.lines() {
            if let Some((k, v)) = l.split_once(':')
                && k.starts_with("Cap")
            {
                out.push((
                    format!("{}/{k}", t.file_name().to_string_lossy()),
                    u64::from_str_radix(v.trim(), 16).unwrap(),
                ));
            }
        }
    }
    out
}

/// Whether diskbpf may be skipped: with capabilities only, kernels that keep tracepoint events
/// to CAP_SYS_ADMIN at `kernel.perf_event_paranoid` 3 (Debian 11's 5.10) refuse it, and the
/// collector must then say so in the reason (README, Security).
fn diskbpf_refused(m: &common::Metrics) -> bool {
    let skipped = m.find("collector_collector_skipped_info", &[("collector", "diskbpf")]);
    let Some(s) = skipped.first() else { return false };
    let level = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap();
    assert!(s.labels["reason"].contains("perf_event_paranoid") && level.trim() == "3", "{s:?}");
    true
}

/// Scrapes until the eBPF collectors have all succeeded twice and their counters moved.
fn ebpf_collectors_work(c: &Collector) {
    let before = c.scrape();
    let disk = if diskbpf_refused(&before) { &[][..] } else { &["diskbpf"][..] };
    for name in disk.iter().chain(&["netbpf", "http"]) {
        assert_eq!(before.get("collector_collector_enabled", &[("collector", name)]), 1.0, "{name}: {}", c.log_text());
        assert_eq!(before.get("collector_scrape_collector_success", &[("collector", name)]), 1.0, "{name}");
    }
    // Traffic the programs must see after the privileges are gone.
    let srv = http_util::TestServer::start("127.0.0.1");
    let mut cl = http_util::Client::connect(&srv.addr);
    for _ in 0..3 {
        assert_eq!(cl.get("/x").status, 200);
    }
    let after = c.scrape();
    for name in disk.iter().chain(&["netbpf", "http"]) {
        assert_eq!(after.get("collector_scrape_collector_success", &[("collector", name)]), 1.0, "{name}");
    }
    let port = srv.port.to_string();
    let n: f64 = after
        .find("http_server_request_duration_seconds_count", &[("server_port", &port)])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(n, 3.0);
    let total =
        |m: &common::Metrics| -> f64 { m.find("cgroup_network_bytes_total", &[]).iter().map(|s| s.value).sum() };
    assert!(total(&after) > total(&before));
}

#[test]
fn every_capability_is_dropped_after_attach() {
    // The HTTPS capture keeps what attaching uprobes later needs (see the next tests).
    let c = Collector::start(&["--no-identity.environment", "--no-collector.http.tls"]);
    let kept = kept_for_maps(&c);
    let caps = thread_caps(c.pid());
    assert!(caps.len() >= 5 * 3, "threads: {caps:?}");
    for (what, v) in &caps {
        let want = if what.ends_with("CapAmb") { 0 } else { kept };
        assert_eq!(*v, want, "{what} = {v:#x}");
    }
    if kept == 0 {
        wait_log(&c, "\"capabilities\":\"none\"");
    }
    ebpf_collectors_work(&c);
    // Scrapes ran on the worker threads without capabilities, and still none came back.
    assert!(thread_caps(c.pid()).iter().all(|(_, v)| *v & !kept == 0));
}

#[test]
fn capabilities_keep_keeps_the_named_ones() {
    let c = Collector::start(&[
        "--no-collector.diskbpf",
        "--no-collector.http.tls",
        "--capabilities.keep",
        "cap_net_admin",
    ]);
    let kept = kept_for_maps(&c);
    // CAP_NET_ADMIN as asked, and nothing for the processes' declared service names (identity,
    // on by default): the helper reads them.
    for (what, v) in thread_caps(c.pid()) {
        if what.ends_with("CapEff") || what.ends_with("CapPrm") || what.ends_with("CapBnd") {
            assert_eq!(v, (1 << 12) | kept, "{what} = {v:#x}");
        }
    }
    wait_log(&c, "CAP_NET_ADMIN");
    wait_log(&c, "read by the privileged helper");
}

/// Files the HTTPS capture's uprobes are attached to, by the last scrape.
fn tls_attached(c: &Collector) -> usize {
    c.scrape().find("collector_tls_attached", &[]).iter().filter(|s| s.value == 1.0).count()
}

/// A process that maps OpenSSL (Python's ssl module, asleep), and waits until the capture has
/// attached to a file (the host's libssl at start-up, or this process's at the next scan: in
/// the kernel matrix's chroot the host's library directories are not process 1's).
fn tls_process_attached(c: &Collector) -> common::process::KillOnDrop {
    let p = common::process::KillOnDrop(
        Command::new("python3").args(["-c", "import ssl, time; time.sleep(120)"]).spawn().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while tls_attached(c) == 0 {
        assert!(Instant::now() < deadline, "nothing attached:\n{}", c.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    p
}

/// The helper the collector forked: its pid (the collector's one child).
fn helper_of(c: &Collector) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", c.pid())).unwrap();
    let kids: Vec<u32> = children.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(kids.len(), 1, "children {kids:?}");
    assert_eq!(std::fs::read_to_string(format!("/proc/{}/comm", kids[0])).unwrap().trim(), "collector-help");
    kids[0]
}

/// Checks that the helper is root with exactly the capabilities `caps` (none inheritable or
/// ambient) and no_new_privs; returns what its descriptors are.
fn assert_helper(helper: u32, caps: u64) -> Vec<String> {
    assert_eq!(status_of(helper, "Uid"), "0\t0\t0\t0");
    assert_eq!(status_of(helper, "NoNewPrivs"), "1");
    for (what, v) in thread_caps(helper) {
        let want = if what.ends_with("CapAmb") || what.ends_with("CapInh") { 0 } else { caps };
        assert_eq!(v, want, "helper {what} = {v:#x}");
    }
    std::fs::read_dir(format!("/proc/{helper}/fd"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_link(e.path()).unwrap().display().to_string())
        .collect()
}

/// A line of /proc/<pid>/status, after its key.
fn status_of(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("{key}: {status}"));
    line.split_once(':').unwrap().1.trim().to_owned()
}

/// The process that listens on the network runs as its own user (`--runas.user`) without any
/// capability and with no_new_privs, while every collector works; another user's declared
/// service name still names its series, through the helper forked before the drop: root's, with
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH only, no_new_privs, and no descriptor or eBPF map of
/// the collector's but its socket.
#[test]
fn the_listening_process_runs_as_its_own_user_without_capabilities() {
    let c = Collector::start(&["--runas.user=65532", "--no-collector.http.tls"]);
    let kept = kept_for_maps(&c);
    let pid = c.pid();
    assert_eq!(status_of(pid, "Uid"), "65532\t65532\t65532\t65532");
    assert_eq!(status_of(pid, "Gid"), "65532\t65532\t65532\t65532");
    assert_eq!(status_of(pid, "Groups"), "");
    assert_eq!(status_of(pid, "NoNewPrivs"), "1");
    for (what, v) in thread_caps(pid) {
        let want = if what.ends_with("CapAmb") { 0 } else { kept };
        assert_eq!(v, want, "{what} = {v:#x}");
    }
    if kept == 0 {
        wait_log(&c, "\"capabilities\":\"none\"");
    }
    let helper = helper_of(&c);
    let fds = assert_helper(helper, (1 << 19) | (1 << 2));
    assert_eq!(fds.len(), 4, "{fds:?}");
    assert_eq!(fds.iter().filter(|f| f.starts_with("socket:")).count(), 1, "{fds:?}");
    let maps = std::fs::read_to_string(format!("/proc/{helper}/maps")).unwrap();
    assert!(!maps.contains("bpf"), "the helper maps eBPF objects: {maps}");
    ebpf_collectors_work(&c);
    // Another user's process (uid 65534, not the collector's): its environment is the
    // owner's, behind a ptrace check.
    let port = common::process::free_port();
    let _srv = common::process::KillOnDrop(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "env", "OTEL_SERVICE_NAME=ledger"])
            .args(["python3", "-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory", "/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::process::wait_port(port);
    let mut n = 0.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while n < 3.0 && Instant::now() < deadline {
        let out =
            Command::new("curl").args(["-sf", "-o", "/dev/null"]).arg(format!("http://127.0.0.1:{port}/")).status();
        assert!(out.unwrap().success());
        n = c
            .scrape()
            .find("http_server_request_duration_seconds_count", &[("server_port", &port.to_string())])
            .iter()
            .filter(|s| s.labels["service_name"] == "ledger")
            .map(|s| s.value)
            .sum();
    }
    assert!(
        n >= 3.0,
        "another user's declared name: {:?}",
        c.scrape().find("http_server_request_duration_seconds_count", &[])
    );
    assert_eq!(c.scrape().get("collector_helper_up", &[]), 1.0);
}

/// The helper killed: the collector says so (log and collector_helper_up 0), reaps it, and
/// everything else goes on; the HTTPS capture, whose uprobes were the helper's, says it stopped
/// and reports no file attached any more.
#[test]
fn the_helper_killed_mid_run_is_reported_and_the_rest_goes_on() {
    let mut c = Collector::start(&[]);
    wait_log(&c, "collector started");
    let _tls = tls_process_attached(&c);
    let helper = helper_of(&c);
    assert_eq!(c.scrape().get("collector_helper_up", &[]), 1.0);
    assert!(Command::new("kill").args(["-KILL", &helper.to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.scrape().get("collector_helper_up", &[]) != 0.0 {
        assert!(Instant::now() < deadline, "collector_helper_up still 1");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_log(&c, "the privileged helper is gone");
    wait_log(&c, "tls: the privileged helper is gone, and its uprobes with it");
    assert_eq!(tls_attached(&c), 0);
    // Reaped: no zombie left.
    assert!(!Path::new(&format!("/proc/{helper}")).exists(), "helper {helper} not reaped");
    ebpf_collectors_work(&c);
    assert!(c.child.0.try_wait().is_ok_and(|s| s.is_none()), "the collector exited");
}

/// The HTTPS capture attaches uprobes to libraries found after start-up and reads every
/// process's memory map and files: the helper does it, with CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH
/// and the capability the kernel's uprobe events ask for (CAP_PERFMON, or CAP_SYS_ADMIN on
/// kernels that still want it, which the collector tries and logs), and nothing else. The
/// listening process keeps none of them; the helper holds the uprobe programs, their links and
/// the watches, and no eBPF map.
#[test]
fn the_https_capture_runs_in_the_helper_and_the_listening_process_keeps_nothing() {
    let c = Collector::start(&["--runas.user=65532"]);
    let kept = kept_for_maps(&c);
    let pid = c.pid();
    assert_eq!(status_of(pid, "Uid"), "65532\t65532\t65532\t65532");
    assert_eq!(status_of(pid, "NoNewPrivs"), "1");
    for (what, v) in thread_caps(pid) {
        let want = if what.ends_with("CapAmb") { 0 } else { kept };
        assert_eq!(v, want, "{what} = {v:#x}");
    }
    wait_log(&c, "\"by\":\"the privileged helper\"");
    let admin = c.log_appears("attaches uprobes only with CAP_SYS_ADMIN", Duration::from_secs(1));
    let perf = if admin { 1 << 21 } else { 1 << 38 };
    let _tls = tls_process_attached(&c);
    let helper = helper_of(&c);
    let fds = assert_helper(helper, perf | (1 << 19) | (1 << 2) | kept);
    assert!(
        fds.iter().skip(3).all(|f| f.starts_with("socket:")
            || ["anon_inode:bpf-prog", "anon_inode:bpf_link", "anon_inode:[perf_event]", "anon_inode:inotify"]
                .contains(&f.as_str())),
        "{fds:?}"
    );
    assert_eq!(fds.iter().filter(|f| f.starts_with("socket:")).count(), 1, "{fds:?}");
    assert_eq!(fds.iter().filter(|f| *f == "anon_inode:inotify").count(), 1, "{fds:?}");
    assert!(fds.iter().any(|f| f == "anon_inode:bpf-prog"), "{fds:?}");
    let maps = std::fs::read_to_string(format!("/proc/{helper}/maps")).unwrap();
    assert!(!maps.contains("bpf-map"), "the helper maps eBPF maps: {maps}");
    let line = |pid: u32| {
        ["Uid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs"].map(|k| format!("{k} {}", status_of(pid, k))).join(", ")
    };
    eprintln!("listening process {pid}: {}; helper {helper}: {}", line(pid), line(helper));
    // The probes attached are the helper's links.
    assert!(fds.iter().any(|f| f == "anon_inode:bpf_link" || f == "anon_inode:[perf_event]"), "{fds:?}");
    ebpf_collectors_work(&c);
}

#[test]
fn runs_as_root_with_only_bpf_perfmon_and_net_admin() {
    // uid 0, but the bounding set (and so every other set) holds only the three capabilities.
    let c = Collector::start_wrapped(
        &[memlock()[0], memlock()[1], "setpriv", "--bounding-set=-all,+bpf,+perfmon,+net_admin", "--inh-caps=-all"],
        &[],
    );
    ebpf_collectors_work(&c);
}

#[test]
fn runs_as_nobody_with_ambient_capabilities() {
    // A non-root user: tracefs is root-only (mode 0700), so reading the block tracepoints'
    // format files also needs CAP_DAC_READ_SEARCH.
    let set = "+bpf,+perfmon,+net_admin,+dac_read_search";
    let inh = format!("--inh-caps={set}");
    let amb = format!("--ambient-caps={set}");
    let c = Collector::start_wrapped(
        &[memlock()[0], memlock()[1], "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", &inh, &amb],
        &["--no-collector.http.tls"],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")), "{status}");
    ebpf_collectors_work(&c);
    // Without CAP_SETPCAP the bounding set stays; every set a thread can use is empty (but for
    // the capability map reads need on kernels that check it on every call).
    let kept = kept_for_maps(&c);
    assert!(thread_caps(c.pid()).iter().all(|(k, v)| k.ends_with("CapBnd") || *v & !kept == 0));
}

#[test]
fn netbpf_alone_needs_only_bpf_and_net_admin() {
    let c = Collector::start_wrapped(
        &[memlock()[0], memlock()[1], "setpriv", "--bounding-set=-all,+bpf,+net_admin", "--inh-caps=-all"],
        &["--no-collector.diskbpf", "--no-collector.http"],
    );
    let m = c.scrape();
    assert_eq!(m.get("collector_collector_enabled", &[("collector", "netbpf")]), 1.0, "{}", c.log_text());
    assert_eq!(m.get("collector_scrape_collector_success", &[("collector", "netbpf")]), 1.0);
    // The HTTP parser needs CAP_PERFMON: without it the start-up check names it.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all,+bpf,+net_admin", "--inh-caps=-all", common::BIN])
        .args(["--web.listen-address", "127.0.0.1:0", "--no-collector.diskbpf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing capabilities CAP_PERFMON"));
}
