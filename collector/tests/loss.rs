//! HTTP counts on a real network path: a server and a client in two network namespaces joined
//! by a veth pair, with a fault injector on the ingress of both ends (tc, see
//! collector-ebpf/src/bin/fault_injector.rs) that drops, reorders (swaps adjacent) or
//! duplicates every Nth TCP data segment each host receives. TCP recovers (retransmissions);
//! the collector, whose ingress hook sees segments before reassembly, must follow the byte
//! streams through it: every exchange the client completed is counted, per status, on the
//! server and on the client side, in every framing.
mod common;
#[path = "common/http.rs"]
mod http_util;
#[path = "common/netns.rs"]
mod netns;

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use common::{Collector, FAST, Metrics};
use http_util::{Client, TestServer};
use netns::{Fault, Injected, Injector, Link};

/// Exchanges the clients completed, per status.
#[derive(Default)]
struct Sent(Mutex<BTreeMap<u16, u64>>);

impl Sent {
    fn add(&self, status: u16) {
        *self.0.lock().unwrap().entry(status).or_default() += 1;
    }
    fn get(&self) -> BTreeMap<u16, u64> {
        self.0.lock().unwrap().clone()
    }
}

/// Requests one side recorded for a server port, per status.
fn counted(m: &Metrics, side: &str, port: u16) -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    for s in m.find(&format!("http_{side}_request_duration_seconds_count"), &[("server_port", &port.to_string())]) {
        if s.value > 0.0 {
            *out.entry(s.labels["http_response_status_code"].parse().unwrap()).or_default() += s.value as u64;
        }
    }
    out
}

/// Requests one side recorded for a server port between two scrapes, per status. A server
/// port can repeat within a test: each scenario's server binds an ephemeral port, in the IPv4
/// link's namespace and then in the IPv6 link's, and the series (labelled by the port, not by
/// the namespace) keep the earlier server's counts.
fn counted_since(before: &Metrics, m: &Metrics, side: &str, port: u16) -> BTreeMap<u16, u64> {
    let earlier = counted(before, side, port);
    let mut out = counted(m, side, port);
    for (status, n) in earlier {
        let v = out.entry(status).or_default();
        *v = v.saturating_sub(n);
    }
    out.retain(|_, n| *n > 0);
    out
}

/// A server on the server host; clients connect from the client host.
struct Site<'a> {
    link: &'a Link,
    srv: TestServer,
}

impl<'a> Site<'a> {
    /// A server on a port other than the collector's (`c`): the counts are read by server port,
    /// and the test's scrapes of the collector are HTTP exchanges too (the server's namespace
    /// has ports of its own, so the two can coincide).
    fn new(link: &'a Link, c: &Collector) -> Site<'a> {
        let ip = link.server.ip.clone();
        let own: u16 = c.addr.rsplit(':').next().unwrap().parse().unwrap();
        loop {
            let srv = link.server.run(|| TestServer::start(&ip));
            if srv.port != own {
                return Site { link, srv };
            }
        }
    }
    fn addr(&self) -> String {
        self.link.server_addr(self.srv.port)
    }
    fn connect(&self) -> Client {
        let addr = self.addr();
        let mut c = self.link.client.run(|| Client::connect(&addr));
        c.host = "test".into();
        c
    }
}

/// One framing scenario: runs its exchanges, returns what the clients completed.
type Scenario = fn(&Site, &Sent);

fn status_of(i: usize) -> u16 {
    [200, 404, 201, 500][i % 4]
}

/// Keep-alive, bodies framed by Content-Length (64 KiB responses), 4 connections at once.
fn keep_alive_length(site: &Site, sent: &Sent) {
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                let mut c = site.connect();
                for i in 0..40 {
                    let st = status_of(i + t);
                    let x = c.get(&format!("/k?size=65536&status={st}"));
                    assert_eq!((x.status, x.body), (st, 65536));
                    sent.add(st);
                }
            });
        }
    });
}

/// Keep-alive, chunked responses (16 chunks of 4 KiB) and chunked uploads (5 chunks).
fn keep_alive_chunked(site: &Site, sent: &Sent) {
    std::thread::scope(|s| {
        for t in 0..2 {
            s.spawn(move || {
                let mut c = site.connect();
                for i in 0..30 {
                    let st = status_of(i + t);
                    let x = if i % 3 == 2 {
                        c.exchange("POST", &format!("/c?size=3000&chunks=3&status={st}"), &[b'u'; 20_000], 5)
                    } else {
                        c.get(&format!("/c?size=65536&chunks=16&status={st}"))
                    };
                    assert_eq!(x.status, st);
                    sent.add(st);
                }
            });
        }
    });
}

/// 10 MB responses and 10 MB uploads.
fn large_bodies_and_uploads(site: &Site, sent: &Sent) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut c = site.connect();
            for _ in 0..2 {
                let x = c.get("/l?size=10485760");
                assert_eq!((x.status, x.body), (200, 10 << 20));
                sent.add(200);
            }
        });
        s.spawn(|| {
            let mut c = site.connect();
            let body = vec![b'p'; 10 << 20];
            for _ in 0..2 {
                assert_eq!(c.exchange("POST", "/u?size=10&status=201", &body, 0).status, 201);
                sent.add(201);
            }
            for i in 0..30 {
                let st = status_of(i);
                assert_eq!(c.exchange("PUT", &format!("/u?size=100&status={st}"), &[b'q'; 65536], 0).status, st);
                sent.add(st);
            }
        });
    });
}

/// Requests pipelined 8 deep, responses of 4 KiB.
fn pipelining(site: &Site, sent: &Sent) {
    let mut c = site.connect();
    for round in 0..8 {
        let mut bytes = Vec::new();
        for i in 0..8 {
            bytes.extend(c.encode("GET", &format!("/p?size=4096&status={}", status_of(i + round)), b"", 0, "HTTP/1.1"));
        }
        c.send(&bytes);
        for i in 0..8 {
            let (st, body) = c.read_response(false);
            assert_eq!((st, body), (status_of(i + round), 4096));
            sent.add(st);
        }
    }
}

/// A new connection per request, closed by the server (Connection: close), and HTTP/1.0
/// requests whose responses run until the server closes.
fn close_and_http10(site: &Site, sent: &Sent) {
    for i in 0..40 {
        let st = status_of(i);
        let mut c = site.connect();
        if i % 2 == 0 {
            let x = c.get(&format!("/x?close=1&size=20000&status={st}"));
            assert_eq!((x.status, x.body), (st, 20000));
        } else {
            let bytes = c.encode("GET", &format!("/x?size=20000&status={st}"), b"", 0, "HTTP/1.0");
            c.send(&bytes);
            assert_eq!(c.read_response(false), (st, 20000));
        }
        sent.add(st);
    }
}

const SCENARIOS: [(&str, Scenario); 5] = [
    ("keep-alive, Content-Length", keep_alive_length),
    ("keep-alive, chunked", keep_alive_chunked),
    ("10 MB bodies and uploads", large_bodies_and_uploads),
    ("pipelining", pipelining),
    ("Connection: close and HTTP/1.0", close_and_http10),
];

/// Every scenario on one link with `fault` on every Nth data segment both hosts receive
/// (requests on the server, responses on the client), on IPv4 and IPv6: every exchange is
/// counted on both sides, per status, and faults were injected.
fn exact_under(fault: Fault, every: u32) {
    let c = Collector::start(FAST);
    for v6 in [false, true] {
        let link = Link::new(if v6 { "l6" } else { "l4" }, v6);
        let to_server = Injector::attach(&link.server, fault, every);
        let to_client = Injector::attach(&link.client, fault, every);
        let mut failures = Vec::new();
        for (name, scenario) in SCENARIOS {
            let site = Site::new(&link, &c);
            let before = c.scrape();
            let sent = Sent::default();
            scenario(&site, &sent);
            let want = sent.get();
            // Responses are counted on the client when their last byte arrives: give the
            // collector's view a moment to catch up with the client's last read.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let m = loop {
                let m = c.scrape();
                if counted_since(&before, &m, "client", site.srv.port) == want || std::time::Instant::now() > deadline {
                    break m;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            eprintln!(
                "{fault:?} every {every}, {name} ({}): {} exchanges completed by the clients {want:?}, \
                 server side counted {:?}, client side {:?}",
                if v6 { "IPv6" } else { "IPv4" },
                want.values().sum::<u64>(),
                counted_since(&before, &m, "server", site.srv.port),
                counted_since(&before, &m, "client", site.srv.port),
            );
            for side in ["server", "client"] {
                let got = counted_since(&before, &m, side, site.srv.port);
                if got != want {
                    failures.push(format!(
                        "{name} ({}): {side} side counted {got:?}, clients completed {want:?}",
                        if v6 { "IPv6" } else { "IPv4" }
                    ));
                }
            }
        }
        let (s, cl) = (to_server.stats(), to_client.stats());
        eprintln!("{fault:?} every {every} ({}): requests {s:?}, responses {cl:?}", if v6 { "IPv6" } else { "IPv4" });
        let injected = |i: &Injected| match fault {
            Fault::Drop => i.dropped,
            Fault::Duplicate => i.duplicated,
            Fault::Swap => i.swapped,
        };
        assert!(injected(&s) > 0 && injected(&cl) > 0, "no fault was injected: {s:?} {cl:?}");
        let m = c.scrape();
        let drops: Vec<String> = m
            .find("collector_bpf_events_dropped_total", &[])
            .iter()
            .filter(|s| s.value > 0.0)
            .map(|s| format!("{}={}", s.labels["reason"], s.value))
            .collect();
        assert!(failures.is_empty(), "{}\ndrops: {drops:?}", failures.join("\n"));
    }
}

#[test]
fn drop_every_200th_segment() {
    exact_under(Fault::Drop, 200);
}

#[test]
fn drop_every_20th_segment() {
    exact_under(Fault::Drop, 20);
}

#[test]
fn swap_every_200th_segment() {
    exact_under(Fault::Swap, 200);
}

#[test]
fn swap_every_20th_segment() {
    exact_under(Fault::Swap, 20);
}

#[test]
fn duplicate_every_200th_segment() {
    exact_under(Fault::Duplicate, 200);
}

#[test]
fn duplicate_every_20th_segment() {
    exact_under(Fault::Duplicate, 20);
}

/// Durations under loss: with 10 ms server delays and every 20th data segment dropped both
/// ways, the client side's mean agrees with what the client measured under the tests' noise
/// model (`common::assert_agrees`, the null exchanges on the same connection before the drops
/// start): both wait for the retransmissions. The server side's lies between the delay and the
/// client's mean: each exchange's server window lies inside the client's (the server neither
/// waits for a response's retransmission nor sees a request before it arrives), so no slack.
#[test]
fn durations_under_loss() {
    let c = Collector::start(FAST);
    let link = Link::new("d", false);
    let site = Site::new(&link, &c);
    let mut cl = site.connect();
    let null = (0..20).map(|_| cl.get("/d?delay_ms=0&size=1000").latency.as_secs_f64()).sum::<f64>() / 20.0;
    let _a = Injector::attach(&link.server, Fault::Drop, 20);
    let _b = Injector::attach(&link.client, Fault::Drop, 20);
    let before = c.scrape();
    let lat: Vec<f64> =
        (0..100).map(|i| cl.get(&format!("/d?delay_ms=10&size={}", 1000 + 300 * i)).latency.as_secs_f64()).collect();
    let client_mean = lat.iter().sum::<f64>() / lat.len() as f64;
    std::thread::sleep(Duration::from_millis(200));
    let m = c.scrape();
    let port = site.srv.port.to_string();
    let mean = |side: &str| {
        let name = format!("http_{side}_request_duration_seconds");
        common::mean_between(&before, &m, &name, &[("server_port", &port)], 100)
    };
    let (server, client) = (mean("server"), mean("client"));
    eprintln!("client measured {client_mean:.6} s; client side {client:.6} s, server side {server:.6} s");
    common::assert_agrees("client side under loss", client, client_mean, null);
    assert!(server >= 0.010 && server <= client_mean, "server side {server} vs {client_mean}");
}

/// The peer of the benchmark (`cargo xtask bench --peer coroot=PATH` runs this test with
/// `COLLECTOR_PEER_COROOT=PATH`): Coroot's tracer, counting at the system calls.
struct Peer {
    _child: common::process::KillOnDrop,
    url: String,
    conntrack: Option<String>,
}

const CONNTRACK_EVENTS: &str = "/proc/sys/net/netfilter/nf_conntrack_events";

impl Peer {
    fn start(path: &str) -> Peer {
        // The tracer sets nf_conntrack_events; restored on drop.
        let conntrack = std::fs::read_to_string(CONNTRACK_EVENTS).ok();
        let port = common::process::free_port();
        let child = common::process::KillOnDrop(
            std::process::Command::new(path)
                .env("HARNESS_LISTEN", format!("127.0.0.1:{port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting the peer {path}: {e}")),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the peer did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Ready once it counts: wait until a scrape of its own endpoint is among its requests.
        let url = format!("http://127.0.0.1:{port}/metrics");
        loop {
            let text = ureq::get(&url).call().unwrap().into_string().unwrap();
            if text.contains("comm=\"coroot-l7-harne\",direction=\"inbound\"") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the peer counts nothing");
            std::thread::sleep(Duration::from_millis(200));
        }
        Peer { _child: child, url, conntrack }
    }

    /// Requests the peer counted, (inbound, outbound), but for the scrapes of the two agents'
    /// endpoints. The peer names processes by the `comm` of the thread it saw (a test thread's
    /// name here, which its server and client threads inherit), not by the process.
    fn counted(&self) -> (u64, u64) {
        let text = ureq::get(&self.url).call().unwrap().into_string().unwrap();
        let m = Metrics::parse(&text);
        let sum = |direction: &str| -> u64 {
            m.find("coroot_harness_http_requests_total", &[("direction", direction)])
                .iter()
                .filter(|s| !["collector", "coroot-l7-harne"].contains(&s.labels["comm"].as_str()))
                .map(|s| s.value as u64)
                .sum()
        };
        (sum("inbound"), sum("outbound"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(v) = &self.conntrack {
            let _ = std::fs::write(CONNTRACK_EVENTS, v.trim());
        }
    }
}

/// The loss scenarios with the peer running beside the collector: prints both's counts per
/// scenario (`side by side:` lines, which the benchmark collects) and requires the collector's
/// to be exact. Run by `cargo xtask bench --peer …`, not by the test suite (it needs the peer).
#[test]
#[ignore = "needs the benchmark's peer (COLLECTOR_PEER_COROOT=PATH); run by cargo xtask bench --peer"]
fn side_by_side_with_the_peer_under_loss() {
    let path = std::env::var("COLLECTOR_PEER_COROOT").expect("COLLECTOR_PEER_COROOT=PATH of the peer");
    let c = Collector::start(FAST);
    let peer = Peer::start(&path);
    let mut failures = Vec::new();
    for (fault, every) in [(Fault::Drop, 20), (Fault::Swap, 20), (Fault::Duplicate, 20)] {
        let link = Link::new("p4", false);
        let _to_server = Injector::attach(&link.server, fault, every);
        let _to_client = Injector::attach(&link.client, fault, every);
        for (name, scenario) in SCENARIOS {
            let site = Site::new(&link, &c);
            let sent = Sent::default();
            // Before the peer's count, which would count this scrape as outbound.
            let ours_before = c.scrape();
            // The peer counts the previous scenario's last scrape of it a moment later.
            std::thread::sleep(Duration::from_millis(500));
            let before = peer.counted();
            scenario(&site, &sent);
            let want = sent.get();
            let total = want.values().sum::<u64>();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            // This thread's own requests, which the peer counts as outbound: the scrape of the
            // peer that took `before`, and the scrapes of the collector below.
            let mut own = 1;
            let m = loop {
                let m = c.scrape();
                own += 1;
                if counted_since(&ours_before, &m, "client", site.srv.port) == want
                    || std::time::Instant::now() > deadline
                {
                    break m;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            // The peer reads its perf buffers on its own schedule: give it the same moment.
            std::thread::sleep(Duration::from_millis(500));
            let after = peer.counted();
            let ours = |side| counted_since(&ours_before, &m, side, site.srv.port).values().sum::<u64>();
            eprintln!(
                "side by side: {fault:?} every {every}, {name}: completed {total}; collector server {} client {}; \
                 peer server {} client {}",
                ours("server"),
                ours("client"),
                after.0 - before.0,
                (after.1 - before.1).saturating_sub(own)
            );
            for side in ["server", "client"] {
                if counted_since(&ours_before, &m, side, site.srv.port) != want {
                    failures.push(format!("{fault:?} every {every}, {name}: collector {side} side inexact"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
