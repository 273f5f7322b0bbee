//! Faults and bad input: SIGTERM and SIGKILL leave nothing loaded in the kernel, no BTF,
//! corrupt procfs files (every file, empty / truncated / garbage), and a flood of distinct HTTP
//! methods and status codes that fills the HTTP map.
mod common;

#[path = "common/http.rs"]
mod http_util;

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::Collector;

/// Ids of the BPF objects (`prog`, `map`, `link`) that process `pid` holds fds of, from
/// /proc/<pid>/fdinfo (`prog_id:`, `map_id:`, `link_id:`).
fn owned(kind: &str, pid: u32) -> BTreeSet<u64> {
    let key = format!("{kind}_id:");
    let mut ids = BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        // A link's fdinfo names its program too (prog_id): count only the object itself.
        let own = match kind {
            "prog" => text.contains("prog_type:") && !text.contains("link_type:"),
            "map" => text.contains("map_type:"),
            _ => text.contains("link_type:"),
        };
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix(key.as_str())).filter(|_| own) {
            ids.insert(id.trim().parse().unwrap());
        }
    }
    ids
}

/// Ids of `kind` that exist right now.
fn existing(kind: &str) -> BTreeSet<u64> {
    let out = Command::new("bpftool").args([kind, "show", "-j"]).output().expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect()
}

/// The programs, maps and links a running collector holds.
fn holdings(c: &Collector) -> [(&'static str, BTreeSet<u64>); 3] {
    let pid = c.pid();
    let h = [("prog", owned("prog", pid)), ("map", owned("map", pid)), ("link", owned("link", pid))];
    // Every collector enabled: 3 tracepoint programs, the HTTP cgroup_skb pair (which also
    // counts netbpf's packets) and the HTTP sock_ops close hook; the links of the last three
    // (cgroup attachments), the maps.
    assert!(h[0].1.len() >= 6, "programs held: {:?}", h[0].1);
    assert!(h[1].1.len() >= 5, "maps held: {:?}", h[1].1);
    assert!(h[2].1.len() >= 3, "links held: {:?}", h[2].1);
    h
}

/// Waits until none of the ids exists any more (the kernel frees them once the last fd is
/// closed; programs after an RCU grace period).
fn assert_released(held: &[(&'static str, BTreeSet<u64>); 3]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for (kind, ids) in held {
        loop {
            let left: Vec<u64> = existing(kind).intersection(ids).copied().collect();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{kind} still loaded after exit: {left:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn sigterm_detaches_everything_and_exits_within_2s() {
    // Without the HTTPS capture: the kernel waits for an RCU grace period per uprobe it removes
    // (about 0.1 s each here, one after the other), so its probes lengthen the exit by that
    // (docs/metrics.md); this bounds everything else.
    let mut c = Collector::start(&["--no-collector.http.tls"]);
    let held = holdings(&c);
    // A scrape in flight and an idle keep-alive connection must not hold up the exit.
    let mut ka = TcpStream::connect(&c.addr).unwrap();
    ka.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let _ = c.scrape();
    let t = Instant::now();
    assert_eq!(unsafe { libc::kill(c.pid() as i32, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(s) = c.child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "still running 2 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("exited {:?} after SIGTERM", t.elapsed());
    assert!(status.success(), "{status:?}");
    assert_released(&held);
    assert!(
        c.log_appears("detaching eBPF programs", Duration::from_secs(5)),
        "no shutdown line in the log:\n{}",
        c.log_text()
    );
}

#[test]
fn after_sigkill_nothing_is_leaked_and_a_new_start_works() {
    let mut c = Collector::start(&[]);
    let held = holdings(&c);
    let _ = c.scrape();
    c.child.kill().unwrap(); // SIGKILL
    c.child.wait().unwrap();
    assert_released(&held);
    // A new instance loads and attaches everything again and counts traffic.
    let c2 = Collector::start(&[]);
    let _ = holdings(&c2);
    let m = c2.scrape();
    for name in ["diskbpf", "netbpf", "http"] {
        assert_eq!(m.get("collector_scrape_collector_success", &[("collector", name)]), 1.0, "{name}");
    }
    assert!(m.find("collector_bpf_program_attached", &[]).iter().all(|s| s.value == 1.0));
}

#[test]
fn without_kernel_btf_every_collector_still_runs() {
    // The programs use no CO-RE relocations (tracepoint offsets come from tracefs) and no BTF
    // hooks (the HTTP close hook is sock_ops): hiding /sys/kernel/btf in a private mount
    // namespace must change nothing.
    let c = Collector::start_wrapped(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs none /sys/kernel/btf && exec \"$0\" \"$@\"",
        ],
        &[],
    );
    // The wrapper execs the collector: it runs in the namespace where /sys/kernel/btf is empty.
    let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", c.pid())).unwrap();
    assert_ne!(ns, std::fs::read_link("/proc/self/ns/mnt").unwrap(), "not in its own mount namespace");
    let m = c.scrape();
    for name in ["diskbpf", "netbpf", "http"] {
        assert_eq!(m.get("collector_collector_enabled", &[("collector", name)]), 1.0, "{name}: {}", c.log_text());
        assert_eq!(m.get("collector_scrape_collector_success", &[("collector", name)]), 1.0, "{name}");
    }
    // Nothing is skipped for want of BTF. The conntrack collector is skipped, for its own reason,
    // where nf_conntrack is not loaded (the kernel matrix's guests).
    let conntrack_loaded = std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_count").exists();
    let skipped: Vec<_> = m
        .find("collector_collector_skipped_info", &[])
        .into_iter()
        .filter(|s| conntrack_loaded || s.labels.get("collector").map(String::as_str) != Some("conntrack"))
        .collect();
    assert!(skipped.is_empty(), "{skipped:?}\n{}", c.log_text());
    let attached = m.find("collector_bpf_program_attached", &[]);
    // Nine, and the HTTPS capture's twelve (see host.rs).
    assert!(attached.len() == 21 && attached.iter().all(|s| s.value == 1.0), "{attached:?}");
    assert!(!c.log_text().contains("close without a FIN or RST"), "{}", c.log_text());
}

/// procfs files the collectors read, with the collector that reads each.
const PROCFS_FILES: [(&str, &str); 8] = [
    ("stat", "cpu"),
    ("meminfo", "meminfo"),
    ("loadavg", "loadavg"),
    ("pressure/cpu", "pressure"),
    ("pressure/memory", "pressure"),
    ("pressure/io", "pressure"),
    ("diskstats", "diskstats"),
    ("net/dev", "netdev"),
];

fn copy_procfs(to: &Path) {
    for (f, _) in PROCFS_FILES {
        let text = std::fs::read(Path::new("/proc").join(f)).unwrap();
        std::fs::create_dir_all(to.join(f).parent().unwrap()).unwrap();
        std::fs::write(to.join(f), text).unwrap();
    }
}

#[test]
fn corrupt_procfs_files_fail_only_their_collector() {
    let procfs_collectors = ["cpu", "meminfo", "loadavg", "pressure", "diskstats", "netdev"];
    let mut garbage = vec![0u8; 3000];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).to_le_bytes()[3];
    }
    for (file, owner) in PROCFS_FILES {
        let real = std::fs::read(Path::new("/proc").join(file)).unwrap();
        // Cut in the middle of the second line (of the only line, for one-line files).
        let nl = real.iter().position(|b| *b == b'\n').unwrap_or(real.len());
        let cut = match real[(nl + 1).min(real.len())..].iter().position(|b| *b == b'\n') {
            Some(second) => nl + 1 + second / 2,
            None => nl / 2,
        };
        // A field name ending in a multi-byte character: found by the procfs_files fuzz target
        // (procfs-core 0.17's meminfo parser panics on it).
        let multibyte = "MemTotal:       24684096 kB\n\u{15c} 1\n".as_bytes().to_vec();
        let cases: [(&str, Vec<u8>); 5] = [
            ("multibyte", multibyte),
            ("empty", Vec::new()),
            ("truncated", real[..cut].to_vec()),
            ("garbage", garbage.clone()),
            ("words", b"some total=abc\nfull avg10=\nMemTotal: x kB\ncpu a b c\n".to_vec()),
        ];
        for (case, bytes) in cases {
            let dir = tempfile::tempdir().unwrap();
            copy_procfs(dir.path());
            std::fs::write(dir.path().join(file), &bytes).unwrap();
            let c = Collector::start(&[
                "--path.procfs",
                dir.path().to_str().unwrap(),
                "--no-collector.diskbpf",
                "--no-collector.netbpf",
                "--no-collector.http",
            ]);
            let m = c.scrape();
            let mut skipped = false;
            for name in procfs_collectors {
                if name == owner && m.find("collector_scrape_collector_success", &[("collector", name)]).is_empty() {
                    // Unreadable at start-up (pressure checks that PSI exists): skipped, with
                    // the reason exported.
                    let s = m.find("collector_collector_skipped_info", &[("collector", name)]);
                    assert_eq!(s.len(), 1, "{file} {case}: {name} neither ran nor was skipped");
                    eprintln!("{file} {case}: {name} skipped: {}", s[0].labels["reason"]);
                    skipped = true;
                    continue;
                }
                let ok = m.get("collector_scrape_collector_success", &[("collector", name)]);
                if name != owner {
                    assert_eq!(ok, 1.0, "{file} {case}: {name} failed too");
                } else if owner == "diskstats" && case == "empty" {
                    // A machine without block devices has an empty diskstats.
                    assert_eq!(ok, 1.0, "{file} {case}");
                } else {
                    assert_eq!(ok, 0.0, "{file} {case}: {name} reported success on a corrupt file");
                }
            }
            if !(owner == "diskstats" && case == "empty") && !skipped {
                let logged = c.log_appears("collector failed", Duration::from_secs(5));
                assert!(logged, "{file} {case}: failure not logged");
            }
            // Still serving.
            assert_eq!(ureq::get(&c.url("/-/healthy")).call().unwrap().status(), 200);
        }
    }
}

/// The HTTP map holds 8192 (cgroup, process, method, status, port[, peer]) entries. The kernel
/// folds unknown methods into one and status codes above 599 into one, so 8 methods × 401
/// statuses × 2 server ports × (server and client side) is 12832 distinct keys.
#[test]
fn a_flood_of_methods_and_status_codes_stays_bounded_and_counted() {
    let c = Collector::start(&["--no-collector.diskbpf", "--no-collector.netbpf"]);
    let servers = [http_util::TestServer::start("127.0.0.1"), http_util::TestServer::start("127.0.0.1")];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "X-CUSTOM"];
    let mut sent = 0u64;
    let mut threads = Vec::new();
    for (chunk, srv) in methods.chunks(3).flat_map(|c| servers.iter().map(move |s| (c, s))) {
        let addr = srv.addr.clone();
        let chunk: Vec<&'static str> = chunk.to_vec();
        threads.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_nodelay(true).unwrap();
            let mut n = 0u64;
            let mut buf = vec![0u8; 4096];
            for m in &chunk {
                for status in 200..1000 {
                    let req = format!("{m} /flood?status={status} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
                    s.write_all(req.as_bytes()).unwrap();
                    // Read up to the end of the (empty-bodied) response head.
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let k = s.read(&mut buf).unwrap();
                        assert!(k > 0);
                        got.extend_from_slice(&buf[..k]);
                    }
                    n += 1;
                }
            }
            n
        }));
    }
    for t in threads {
        sent += t.join().unwrap();
    }
    let t = Instant::now();
    let mut text = String::new();
    ureq::get(&c.url("/metrics")).call().unwrap().into_reader().read_to_string(&mut text).unwrap();
    let took = t.elapsed();
    let m = common::Metrics::parse(&text);
    let ports = [servers[0].port.to_string(), servers[1].port.to_string()];
    let series = m.find("http_server_request_duration_seconds_count", &[]);
    let labelled: f64 = series.iter().filter(|s| ports.contains(&s.labels["server_port"])).map(|s| s.value).sum();
    let overflow = m.find("http_server_request_duration_seconds_count", &[("service_name", "_overflow")]);
    let overflowed: f64 = overflow.iter().map(|s| s.value).sum();
    eprintln!(
        "sent {sent}; server series {}; counted in series {labelled}; in the overflow series {overflowed}; \
         scrape {took:?}, {} bytes; drops {:?}",
        series.len(),
        text.len(),
        m.find("collector_bpf_events_dropped_total", &[("reason", "http_map_full")])
    );
    assert!(series.len() <= 8192, "{} server series", series.len());
    assert!(overflowed > 0.0, "the map filled up but nothing went to the overflow series");
    // Every request is counted, in its own series or in the overflow one (which may also hold
    // other traffic on this host).
    assert!(labelled < sent as f64 && labelled + overflowed >= sent as f64);
    assert!(m.get("collector_bpf_events_dropped_total", &[("reason", "http_map_full")]) > 0.0);
    // Unknown methods fold into _OTHER, not into series of their own.
    assert!(series.iter().all(|s| !["FOO", "X-CUSTOM"].contains(&s.labels["http_request_method"].as_str())));
    // The collector's own memory stays bounded: the map is bounded, the exposition with it.
    let rss_kb = c.rss_kb();
    eprintln!("collector RSS {} MiB", rss_kb / 1024);
    assert!(rss_kb < 256 * 1024, "RSS {rss_kb} kB");
}

/// The id of the map named `name` that process `pid` holds.
fn map_id(pid: u32, name: &str) -> u64 {
    for id in owned("map", pid) {
        let out = Command::new("bpftool").args(["map", "show", "id", &id.to_string(), "-j"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["name"] == name {
            return id;
        }
    }
    panic!("no map {name} held by {pid}");
}

/// Whether the u64-keyed map `id` has an entry for `key`.
fn has_key(id: u64, key: u64) -> bool {
    let mut args = vec!["map".to_owned(), "lookup".into(), "id".into(), id.to_string(), "key".into()];
    args.extend(key.to_le_bytes().iter().map(|b| b.to_string()));
    Command::new("bpftool").args(&args).output().unwrap().status.success()
}

#[test]
fn series_of_a_removed_cgroup_expire_after_the_ttl() {
    use std::os::unix::fs::MetadataExt as _;
    let c = Collector::start(&["--collector.cgroup.ttl", "3s"]);
    let srv = http_util::TestServer::start("127.0.0.1");
    let port = srv.port.to_string();
    let cg = common::TestCgroup::new("ttl");
    let id = std::fs::metadata(&cg.dir).unwrap().ino();
    let rel = cg.rel.clone();
    // Network traffic, an HTTP request (bash as the client) and direct disk writes, all from
    // processes in the cgroup.
    let file = format!("/var/tmp/collector-ttl-{}", std::process::id());
    cg.run_bash(&format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET /ttl?close=1 HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3 \
         && cat <&3 >/dev/null && dd if=/dev/zero of={file} bs=1M count=4 oflag=direct status=none && rm -f {file}"
    ));
    let has_series = |m: &common::Metrics| {
        (
            !m.find("cgroup_network_bytes_total", &[("cgroup", &rel)]).is_empty(),
            !m.find("cgroup_disk_io_bytes_total", &[("cgroup", &rel)]).is_empty(),
            !m.find("http_client_request_duration_seconds_count", &[("server_port", &port)]).is_empty(),
        )
    };
    let m = c.scrape();
    assert_eq!(has_series(&m), (true, true, true), "the cgroup's series before removal");
    let net = map_id(c.pid(), "CGROUP_NET");
    assert!(has_key(net, id));

    drop(cg); // rmdir
    // Removed, but within the TTL: the series stay (their last values are still true).
    let t = Instant::now();
    let m = c.scrape();
    assert_eq!(has_series(&m), (true, true, true), "series vanished before the TTL");
    // After the TTL without new data: gone from the exposition and from the kernel map.
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let m = c.scrape();
        match has_series(&m) {
            (false, false, false) => break,
            s => assert!(t.elapsed() < Duration::from_secs(10), "still {s:?} {:?} after removal", t.elapsed()),
        }
    }
    assert!(t.elapsed() >= Duration::from_secs(3), "expired after {:?}, before the TTL", t.elapsed());
    assert!(!has_key(net, id), "the CGROUP_NET entry of the removed cgroup is still there");
    let m = c.scrape();
    for name in ["diskbpf", "netbpf", "http"] {
        assert_eq!(m.get("collector_scrape_collector_success", &[("collector", name)]), 1.0, "{name}");
    }
}
