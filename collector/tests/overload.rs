//! Exact under overload: a server whose accept queue overflows under a burst of connections,
//! and TCP Fast Open (a request in the SYN). In both, a request's first segment reaches the
//! host before the connection's socket exists: it passes the ingress hook with the listening
//! socket, and the kernel queues it to the connection created later. Every exchange must still
//! count on both sides. Also segments that reach the hooks while the program holding their
//! connection is suspended under them on the same CPU.
mod common;

#[path = "common/http.rs"]
mod http_util;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use common::{
    Collector, FAST, Metrics,
    process::{KillOnDrop, free_port},
};
use http_util::{Client, TestServer};

const PYTHON: &str = "/usr/bin/python3";

/// A server on `PORT` with a listen backlog of `BACKLOG` that does not accept for `HOLD`
/// seconds (busy), then accepts and answers each connection's request `200 ok` and closes it.
/// With `fastopen`, the listening socket takes TCP Fast Open requests (TCP_FASTOPEN). Prints
/// `ready` once it listens.
const SERVER: &str = r#"
import socket, sys, threading, time
port, backlog, hold, fastopen = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if fastopen:
    ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 64)
ls.bind(("127.0.0.1", port))
ls.listen(backlog)
print("ready", flush=True)
time.sleep(hold)
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d:
            return
        buf += d
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn server(port: u16, backlog: u32, hold: f64, fastopen: bool) -> KillOnDrop {
    let dir = std::env::temp_dir().join(format!("overload-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("server.py");
    std::fs::write(&script, SERVER).unwrap();
    let mut child = Command::new(PYTHON)
        .arg(&script)
        .args([port.to_string(), backlog.to_string(), hold.to_string(), (fastopen as u8).to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    KillOnDrop(child)
}

/// `TcpExtListenOverflows` and `TcpExtTCPFastOpenPassive` (/proc/net/netstat).
fn tcp_ext(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (names, values) = (lines[0], lines[1]);
    let i = names.split_whitespace().position(|n| n == name).unwrap_or_else(|| panic!("no {name}"));
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Exchanges counted on `side` for `port` with status `status`.
fn count(m: &Metrics, side: &str, port: u16, status: &str) -> f64 {
    let p = port.to_string();
    m.find(
        &format!("http_{side}_request_duration_seconds_count"),
        &[("server_port", p.as_str()), ("http_response_status_code", status)],
    )
    .iter()
    .map(|s| s.value)
    .sum()
}

fn dropped(m: &Metrics, reason: &str) -> f64 {
    m.get_or_zero("collector_bpf_events_dropped_total", &[("reason", reason)])
}

/// A burst of 64 clients, one request each, against a server with a backlog of 2 that is busy
/// for 1.5 s: the accept queue overflows (counted by the kernel), the handshakes' last ACKs are
/// dropped, and the clients' requests reach the host before their sockets exist. Every
/// exchange counts on both sides, none unmatched.
#[test]
fn a_burst_into_a_full_accept_queue_counts_every_request() {
    let c = Collector::start(FAST);
    let port = free_port();
    let _srv = server(port, 16, 0.5, false);
    let overflows = tcp_ext("ListenOverflows");
    let before = c.scrape();
    const N: usize = 64;
    let clients: Vec<_> = (0..N)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                s.write_all(format!("GET /burst HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).unwrap();
                assert!(
                    out.starts_with(b"HTTP/1.1 200 OK") && out.ends_with(b"ok"),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
            })
        })
        .collect();
    for t in clients {
        t.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let m = c.scrape();
    let overflowed = tcp_ext("ListenOverflows") - overflows;
    eprintln!(
        "accept queue overflows during the burst: {overflowed}; server side {}, client side {}",
        count(&m, "server", port, "200"),
        count(&m, "client", port, "200")
    );
    assert!(overflowed > 0, "the burst did not overflow the accept queue: the test does not test");
    assert_eq!(count(&m, "server", port, "200"), N as f64);
    assert_eq!(count(&m, "client", port, "200"), N as f64);
    for reason in ["http_response_unmatched", "http_abandoned", "http_out_of_order", "http_busy"] {
        assert_eq!(dropped(&m, reason), dropped(&before, reason), "{reason}");
    }
}

/// `net.ipv4.tcp_fastopen`, put back when dropped.
struct FastOpen(String);

impl FastOpen {
    /// Client and server on, data in the SYN without a cookie on both sides (0x1 | 0x2 | 0x4 |
    /// 0x200), so that the first connection already carries its request in the SYN.
    fn on() -> FastOpen {
        let path = "/proc/sys/net/ipv4/tcp_fastopen";
        let old = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, "519").unwrap();
        FastOpen(old)
    }
}

impl Drop for FastOpen {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/net/ipv4/tcp_fastopen", self.0.trim());
    }
}

/// TCP Fast Open: curl sends each request in its SYN, the server takes it (the kernel counts
/// `TCPFastOpenPassive`) and the request reaches the host before the connection's socket
/// exists. Every exchange counts on both sides.
#[test]
fn tcp_fast_open_requests_count_on_both_sides() {
    let _fo = FastOpen::on();
    let c = Collector::start(FAST);
    let port = free_port();
    let _srv = server(port, 128, 0.0, true);
    let passive = tcp_ext("TCPFastOpenPassive");
    let before = c.scrape();
    const N: usize = 10;
    for _ in 0..N {
        let out = common::process::run_ok(
            Command::new("curl")
                .args(["-sS", "--tcp-fastopen", "--http1.1", "-o", "-", "-w", " %{http_code}"])
                .arg(format!("http://127.0.0.1:{port}/fastopen")),
        );
        assert_eq!(out.trim(), "ok 200", "curl output");
    }
    std::thread::sleep(Duration::from_millis(300));
    let m = c.scrape();
    let fast = tcp_ext("TCPFastOpenPassive") - passive;
    eprintln!(
        "requests taken in the SYN: {fast} of {N}; server side {}, client side {}",
        count(&m, "server", port, "200"),
        count(&m, "client", port, "200")
    );
    assert_eq!(fast, N as u64, "the requests did not travel in the SYN: the test does not test");
    assert_eq!(count(&m, "server", port, "200"), N as f64);
    assert_eq!(count(&m, "client", port, "200"), N as f64);
    assert_eq!(dropped(&m, "http_response_unmatched"), dropped(&before, "http_response_unmatched"));
}

/// A segment that reaches the ingress hook while the program holding its connection runs on
/// the same CPU (a softirq interrupting a process-context egress run of the same socket, as a
/// network card's interrupt can) cannot wait for it: it is left in the stash for the holder,
/// which follows it before it lets go. Loopback never brings this about (the receiving softirq
/// runs after the sending program), so the collector runs with `COLLECTOR_TEST_HTTP_DEFER`,
/// which sends every received segment that way, its FIN or RST too. Keep-alive and new
/// connections, bodies with Content-Length and chunked in many writes both ways, HTTP/1.0
/// responses that end with the connection, a reset, pipelined requests, a 10 MB response:
/// every exchange counts exactly on both sides, with the right sizes, none given up, and the
/// durations agree with the client's under the tests' noise model.
#[test]
fn segments_left_by_a_nested_program_are_followed_by_the_holder() {
    let mut cmd = Command::new(common::BIN);
    cmd.args(["--web.listen-address", "127.0.0.1:0", "--log.format", "json"]).args(FAST);
    cmd.env("COLLECTOR_TEST_HTTP_DEFER", "1");
    let c = Collector::spawn(cmd);
    assert!(c.log_appears("COLLECTOR_TEST_HTTP_DEFER", Duration::from_secs(5)), "{}", c.log_text());
    let srv = TestServer::start("127.0.0.1");
    let before = c.scrape();
    let mut cl = Client::connect(&srv.addr);
    let mut n = 0;
    for size in [0usize, 100, 5000, 70_000] {
        for chunks in [0usize, 7] {
            let e = cl.exchange("POST", &format!("/x?size={size}&chunks={chunks}"), &vec![b'q'; size], chunks);
            assert_eq!((e.status, e.body), (200, size));
            n += 1;
        }
    }
    assert_eq!(cl.get("/big?size=10000000").body, 10_000_000);
    n += 1;
    for _ in 0..5 {
        assert_eq!(Client::connect(&srv.addr).get("/new?size=10").status, 200);
        n += 1;
    }
    // HTTP/1.0 responses without a length: each ends with the server's FIN, which the client
    // side's exchange waits for, left by the nested program as its bytes are.
    for _ in 0..3 {
        let mut old = Client::connect(&srv.addr);
        let req = old.encode("GET", "/ten?size=300", b"", 0, "HTTP/1.0");
        old.send(&req);
        assert_eq!(old.read_response(false), (200, 300));
        n += 1;
    }
    // A connection that ends with a reset after its exchange (nothing waits: nothing given up).
    let mut reset = Client::connect(&srv.addr);
    assert_eq!(reset.get("/reset?size=10").status, 200);
    n += 1;
    reset.close_with_reset();
    // Pipelined: four requests in one write, then their responses.
    let mut pl = Client::connect(&srv.addr);
    let mut burst = Vec::new();
    for i in 0..4 {
        burst.extend(pl.encode("GET", &format!("/p{i}?size=50"), b"", 0, "HTTP/1.1"));
    }
    pl.send(&burst);
    for _ in 0..4 {
        assert_eq!(pl.read_response(false), (200, 50));
        n += 1;
    }
    // Durations: 10 ms server delays, against the client's clock.
    let null = (0..20).map(|_| cl.get_spinning("/d?delay_ms=0&size=100").latency.as_secs_f64()).sum::<f64>() / 20.0;
    n += 20;
    let mid = c.scrape();
    let lat: Vec<f64> = (0..20).map(|_| cl.get_spinning("/d?delay_ms=10&size=100").latency.as_secs_f64()).collect();
    n += 20;
    std::thread::sleep(Duration::from_millis(200));
    let m = c.scrape();
    let port = srv.port.to_string();
    for side in ["server", "client"] {
        let name = format!("http_{side}_request_duration_seconds");
        let (c0, _) = common::histogram_totals(&before, &name, &[("server_port", &port)]);
        let (c1, _) = common::histogram_totals(&m, &name, &[("server_port", &port)]);
        assert_eq!(c1 - c0, n as f64, "{side} exchanges");
        let mean = common::mean_between(&mid, &m, &name, &[("server_port", &port)], 20);
        common::assert_agrees(
            &format!("{side} side, every received segment left"),
            mean,
            lat.iter().sum::<f64>() / 20.0,
            null,
        );
    }
    let bodies = |side: &str, which: &str| {
        common::histogram_totals(&m, &format!("http_{side}_{which}_body_size_bytes"), &[("server_port", &port)]).1
    };
    let sent: f64 = [0.0, 100.0, 5000.0, 70_000.0].iter().sum::<f64>() * 2.0;
    for side in ["server", "client"] {
        assert_eq!(bodies(side, "request"), sent, "{side} request bodies");
    }
    // Every response body, those that end with the server's FIN (HTTP/1.0) included: the
    // POSTs echo their sizes, then the 10 MB, the new connections, HTTP/1.0, the reset's,
    // the pipelined ones and the timed ones.
    let answered = sent + 10_000_000.0 + 5.0 * 10.0 + 3.0 * 300.0 + 10.0 + 4.0 * 50.0 + 40.0 * 100.0;
    for side in ["server", "client"] {
        assert_eq!(bodies(side, "response"), answered, "{side} response bodies");
    }
    for reason in ["http_busy", "http_abandoned", "http_out_of_order", "http_response_unmatched", "http_desync"] {
        assert_eq!(dropped(&m, reason), dropped(&before, reason), "{reason}");
    }
}
