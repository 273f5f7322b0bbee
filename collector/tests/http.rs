//! HTTP/1.x RED metrics against real servers and clients on loopback: counts are exact in every
//! framing scenario, durations agree with what clients measured, and non-HTTP bytes never make
//! a series.
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
    process::{KillOnDrop, free_port, run_ok, wait_port},
};
use http_util::{Client, TestServer};

fn port_s(p: u16) -> String {
    p.to_string()
}

/// Requests one side (`server` or `client`) recorded for `port`, per status ("" = all).
fn count(m: &Metrics, side: &str, port: u16, status: &str) -> f64 {
    let p = port_s(port);
    let mut want = vec![("server_port", p.as_str())];
    if !status.is_empty() {
        want.push(("http_response_status_code", status));
    }
    m.find(&format!("http_{side}_request_duration_seconds_count"), &want).iter().map(|s| s.value).sum()
}

fn server_count(m: &Metrics, port: u16, status: &str) -> f64 {
    count(m, "server", port, status)
}

fn client_count(m: &Metrics, port: u16, status: &str) -> f64 {
    count(m, "client", port, status)
}

fn sum_of(m: &Metrics, name: &str, port: u16) -> f64 {
    m.find(name, &[("server_port", &port_s(port))]).iter().map(|s| s.value).sum()
}

/// The collector's non-zero drop counters, for assertion messages.
fn drops(m: &Metrics) -> String {
    let mut out = String::new();
    for s in m.find("collector_bpf_events_dropped_total", &[]) {
        if s.value != 0.0 {
            out.push_str(&format!(" {}={}", s.labels["reason"], s.value));
        }
    }
    if out.is_empty() { " none".into() } else { out }
}

fn no_drops(m: &Metrics) {
    for reason in
        ["http_map_full", "http_response_unmatched", "http_pipeline_overflow", "http_connection_storage_failed"]
    {
        assert_eq!(m.get("collector_bpf_events_dropped_total", &[("reason", reason)]), 0.0, "{reason}");
    }
}

#[test]
fn keep_alive_counts_every_request_per_status() {
    let c = Collector::start(FAST);
    let srv = TestServer::start("127.0.0.1");
    let mut cl = Client::connect(&srv.addr);
    for i in 0..30 {
        let status = [200, 404, 500][i % 3];
        // Request targets of every length from 19 to ~600 bytes, so the line end falls at every
        // position of the parser's 16-byte window.
        let x = cl.get(&format!("/k?status={status}&size={}&pad={}", i * 10, "p".repeat(i * i % 600)));
        assert_eq!(x.status, status);
    }
    let m = c.scrape();
    for status in ["200", "404", "500"] {
        assert_eq!(server_count(&m, srv.port, status), 10.0, "server {status}");
        assert_eq!(client_count(&m, srv.port, status), 10.0, "client {status}");
    }
    // Response bodies: 0 + 10 + … + 290 bytes.
    assert_eq!(
        sum_of(&m, "http_server_response_body_size_bytes_sum", srv.port),
        (0..30).map(|i| i * 10).sum::<usize>() as f64
    );
    let active = m.find("http_server_active_requests", &[("server_port", &port_s(srv.port))]);
    assert!(active.iter().all(|s| s.value == 0.0), "{active:?}");
    // A request the server holds for a second is active while it waits, and no longer after.
    let addr = srv.addr.clone();
    let slow = std::thread::spawn(move || Client::connect(&addr).get("/k?delay_ms=1000").status);
    std::thread::sleep(Duration::from_millis(400));
    let during = c.scrape();
    let active: f64 =
        during.find("http_server_active_requests", &[("server_port", &port_s(srv.port))]).iter().map(|s| s.value).sum();
    assert_eq!(active, 1.0, "one request in flight");
    assert_eq!(slow.join().unwrap(), 200);
    let after = c.scrape();
    let active: f64 =
        after.find("http_server_active_requests", &[("server_port", &port_s(srv.port))]).iter().map(|s| s.value).sum();
    assert_eq!(active, 0.0, "none in flight after the response");
    no_drops(&m);
    // Client series carry the server's address.
    assert_eq!(
        m.find(
            "http_client_request_duration_seconds_count",
            &[("server_address", "127.0.0.1"), ("server_port", &port_s(srv.port))]
        )
        .len(),
        3
    );
}

#[test]
fn connection_close_and_many_short_connections() {
    let c = Collector::start(FAST);
    let srv = TestServer::start("127.0.0.1");
    for i in 0..300 {
        let mut cl = Client::connect(&srv.addr);
        // Half are closed by the server (Connection: close), half by the client.
        let path = if i % 2 == 0 { "/s?close=1&size=100" } else { "/s?size=100" };
        assert_eq!(cl.get(path).status, 200);
    }
    let m = c.scrape();
    assert_eq!(server_count(&m, srv.port, "200"), 300.0);
    assert_eq!(client_count(&m, srv.port, "200"), 300.0);
    no_drops(&m);
}

#[test]
fn pipelined_requests_are_matched_in_order() {
    let c = Collector::start(FAST);
    let srv = TestServer::start("127.0.0.1");
    let mut cl = Client::connect(&srv.addr);
    for round in 0..5 {
        // Eight requests (the queue depth) in one write, with bodies on some; the server answers
        // each in turn and the responses may share segments.
        let statuses = [200, 201, 404, 200, 500, 204, 200, 302];
        let mut bytes = Vec::new();
        for (i, s) in statuses.iter().enumerate() {
            let body = vec![b'b'; i * 7];
            let method = if i % 2 == 0 { "GET" } else { "POST" };
            bytes.extend(cl.encode(method, &format!("/p?status={s}&size={}", round * 3 + i), &body, 0, "HTTP/1.1"));
        }
        cl.send(&bytes);
        for s in statuses {
            assert_eq!(cl.read_response(false).0, s);
        }
    }
    let m = c.scrape();
    for (s, n) in [("200", 15.0), ("201", 5.0), ("404", 5.0), ("500", 5.0), ("204", 5.0), ("302", 5.0)] {
        assert_eq!(server_count(&m, srv.port, s), n, "server {s}; drops:{}", drops(&m));
        assert_eq!(client_count(&m, srv.port, s), n, "client {s}; drops:{}", drops(&m));
    }
    let p = port_s(srv.port);
    let posts: f64 = m
        .find("http_server_request_duration_seconds_count", &[("server_port", &p), ("http_request_method", "POST")])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(posts, 20.0);
    // Request bodies: per round 7 + 21 + 35 + 49 (odd i, POST) and 0 + 14 + 28 + 42 (even i, GET).
    assert_eq!(
        sum_of(&m, "http_server_request_body_size_bytes_sum", srv.port),
        5.0 * (7 + 14 + 21 + 28 + 35 + 42 + 49) as f64
    );
    no_drops(&m);
}

/// A client that reads a response while the next ones arrive holds its socket: those segments
/// wait in the socket's backlog, so the kernel's in-order point lags behind what passed the
/// hook. The last response of a burst still counts at once, though nothing follows it on the
/// connection (the connections stay open until the scrape).
#[test]
fn the_last_response_of_a_burst_counts_on_an_idle_connection() {
    use std::net::TcpListener;
    let c = Collector::start(FAST);
    const BURST: usize = 8;
    const BODY: usize = 16 * 1024;
    const CONNS: usize = 150;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The server answers each burst with one write per response, back to back.
    let server = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..CONNS {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while got.windows(4).filter(|w| w == b"\r\n\r\n").count() < BURST {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
            resp.resize(resp.len() + BODY, b'r');
            for _ in 0..BURST {
                s.write_all(&resp).unwrap();
            }
            held.push(s);
        }
        held
    });
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").len();
    let mut clients = Vec::new();
    for _ in 0..CONNS {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(&b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n".repeat(BURST)).unwrap();
        let mut left = BURST * (head + BODY);
        let mut buf = vec![0u8; 256 * 1024];
        while left > 0 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            left -= n;
        }
        clients.push(s);
    }
    let _held = server.join().unwrap();
    let m = c.scrape();
    let want = (CONNS * BURST) as f64;
    assert_eq!(server_count(&m, port, "200"), want, "server; drops:{}", drops(&m));
    assert_eq!(client_count(&m, port, "200"), want, "client; drops:{}", drops(&m));
    no_drops(&m);
}

#[test]
fn content_length_and_chunked_bodies_split_across_writes() {
    let c = Collector::start(FAST);
    let srv = TestServer::start("127.0.0.1");
    let mut cl = Client::connect(&srv.addr);
    // Chunked request bodies, chunked responses in many writes, headers written byte by byte.
    assert_eq!(cl.exchange("POST", "/c?chunks=10&size=100000", &vec![b'q'; 5000], 5).status, 200);
    assert_eq!(cl.exchange("PUT", "/c?size=3000&split=1", &vec![b'q'; 1000], 0).status, 200);
    assert_eq!(cl.exchange("POST", "/c?chunks=50&split=1&size=777", &vec![b'q'; 4321], 13).body, 777);
    // A request written one byte per write.
    let bytes = cl.encode("GET", "/c?size=10", b"", 0, "HTTP/1.1");
    for b in &bytes {
        cl.send(&[*b]);
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(cl.read_response(false), (200, 10));
    let m = c.scrape();
    assert_eq!(server_count(&m, srv.port, "200"), 4.0);
    assert_eq!(client_count(&m, srv.port, "200"), 4.0);
    assert_eq!(sum_of(&m, "http_server_request_body_size_bytes_sum", srv.port), (5000 + 1000 + 4321) as f64);
    assert_eq!(sum_of(&m, "http_server_response_body_size_bytes_sum", srv.port), (100000 + 3000 + 777 + 10) as f64);
    assert_eq!(sum_of(&m, "http_client_response_body_size_bytes_sum", srv.port), (100000 + 3000 + 777 + 10) as f64);
    no_drops(&m);
}

#[test]
fn http10_head_204_304_and_interim_responses() {
    let c = Collector::start(FAST);
    let srv = TestServer::start("127.0.0.1");
    // HTTP/1.0: no Content-Length, the body ends when the server closes.
    let mut cl = Client::connect(&srv.addr);
    let req = cl.encode("GET", "/o?size=5000", b"", 0, "HTTP/1.0");
    cl.send(&req);
    assert_eq!(cl.read_response(false), (200, 5000));
    // HEAD announces a length but has no body; the connection then carries on.
    let mut cl = Client::connect(&srv.addr);
    assert_eq!(cl.exchange("HEAD", "/o?size=1000", b"", 0).body, 0);
    assert_eq!(cl.get("/o?status=204").status, 204);
    assert_eq!(cl.get("/o?status=304").status, 304);
    // 100 Continue before the final response is not a response of its own.
    assert_eq!(cl.get("/o?interim=1&size=50").status, 200);
    assert_eq!(cl.get("/o?size=1").status, 200);
    let m = c.scrape();
    assert_eq!(server_count(&m, srv.port, "200"), 4.0);
    assert_eq!(server_count(&m, srv.port, "204"), 1.0);
    assert_eq!(server_count(&m, srv.port, "304"), 1.0);
    assert_eq!(server_count(&m, srv.port, "100"), 0.0);
    assert_eq!(server_count(&m, srv.port, ""), 6.0);
    assert_eq!(client_count(&m, srv.port, ""), 6.0);
    let p = port_s(srv.port);
    assert_eq!(
        m.get("http_server_request_duration_seconds_count", &[("server_port", &p), ("http_request_method", "HEAD")]),
        1.0
    );
    assert_eq!(sum_of(&m, "http_server_response_body_size_bytes_sum", srv.port), (5000 + 50 + 1) as f64);
    no_drops(&m);
}

#[test]
fn ipv6_and_a_hundred_concurrent_connections() {
    let c = Collector::start(FAST);
    let srv6 = TestServer::start("::1");
    let mut cl = Client::connect(&srv6.addr);
    for _ in 0..5 {
        assert_eq!(cl.get("/v6?size=10").status, 200);
    }
    // The server-side series carry no address: the two servers need ports of their own.
    let srv = loop {
        let s = TestServer::start("127.0.0.1");
        if s.port != srv6.port {
            break s;
        }
    };
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let addr = srv.addr.clone();
            std::thread::spawn(move || {
                let mut cl = Client::connect(&addr);
                for _ in 0..10 {
                    assert_eq!(cl.get("/n?size=64").status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let m = c.scrape();
    assert_eq!(server_count(&m, srv6.port, "200"), 5.0);
    assert_eq!(
        m.get(
            "http_client_request_duration_seconds_count",
            &[("server_address", "::1"), ("server_port", &port_s(srv6.port))]
        ),
        5.0
    );
    assert_eq!(server_count(&m, srv.port, "200"), 1000.0);
    assert_eq!(client_count(&m, srv.port, "200"), 1000.0);
    no_drops(&m);
}

/// Bucket index of `v` among the histogram's upper bounds.
fn bucket_of(bounds: &[f64], v: f64) -> usize {
    bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len())
}

/// The histograms' means agree with the client's own under the tests' noise model
/// (`common::assert_agrees`), the null exchanges (no delay) on the same connection first; the
/// median falls in the bucket of the client's median.
#[test]
fn durations_agree_with_client_measurements() {
    let c = Collector::start(FAST);
    for (delay_ms, n) in [(1u64, 100usize), (10, 30), (100, 10)] {
        let srv = TestServer::start("127.0.0.1");
        let mut cl = Client::connect(&srv.addr);
        let mut timed = |delay: u64, n: usize| -> Vec<f64> {
            (0..n).map(|_| cl.get_spinning(&format!("/d?delay_ms={delay}&size=100")).latency.as_secs_f64()).collect()
        };
        let null = timed(0, 20).iter().sum::<f64>() / 20.0;
        let before = c.scrape();
        let mut lat = timed(delay_ms, n);
        let m = c.scrape();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let client_mean = lat.iter().sum::<f64>() / n as f64;
        let client_median = lat[n / 2];
        let port = port_s(srv.port);
        for side in ["server", "client"] {
            let name = format!("http_{side}_request_duration_seconds");
            let want = [("server_port", port.as_str())];
            let mean = common::mean_between(&before, &m, &name, &want, n);
            common::assert_agrees(&format!("{delay_ms} ms, {side} side"), mean, client_mean, null);
            // The median falls in the client median's bucket (the null exchanges taken out).
            let bucket = |m: &Metrics| -> Vec<(f64, f64)> {
                m.find(&format!("{name}_bucket"), &want)
                    .iter()
                    .filter(|b| b.labels["le"] != "+Inf")
                    .map(|b| (b.labels["le"].parse().unwrap(), b.value))
                    .collect()
            };
            let (b0, b1) = (bucket(&before), bucket(&m));
            let bounds: Vec<f64> = b1.iter().map(|(le, _)| *le).collect();
            let cumulative: Vec<f64> =
                b1.iter().map(|(le, v)| v - b0.iter().find(|(l, _)| l == le).map_or(0.0, |(_, v)| *v)).collect();
            let median_bucket = cumulative.iter().position(|c| *c >= n as f64 / 2.0).unwrap_or(bounds.len());
            assert_eq!(median_bucket, bucket_of(&bounds, client_median), "{side} median bucket at {delay_ms} ms");
        }
    }
}

#[test]
fn garbage_tls_and_http2_make_no_series() {
    let c = Collector::start(FAST);
    let srv = TestServer::start("127.0.0.1");
    let tls_client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03, 0x5a, 0x1f, 0x00, 0x01, 0x02, 0x03, 0x04,
        0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16,
        0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00,
    ];
    let h2: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    let mut garbage = vec![0u8; 4096];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).to_le_bytes()[3];
    }
    let shouting: &[u8] = b"HELLO THERE, THIS IS NOT HTTP\r\n\r\n";
    for payload in [tls_client_hello, h2, &garbage[..], shouting] {
        let mut s = TcpStream::connect(&srv.addr).unwrap();
        s.write_all(payload).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let m = c.scrape();
    let p = port_s(srv.port);
    for name in ["http_server_request_duration_seconds_count", "http_client_request_duration_seconds_count"] {
        assert!(m.find(name, &[("server_port", &p)]).is_empty(), "{name} has a series for port {p}");
    }
}

#[test]
fn nginx_sendfile_large_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("big.bin"), vec![7u8; 10 << 20]).unwrap();
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; user root; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_timeout 30;\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            d = dir.path().display(),
            root = root.display()
        ),
    )
    .unwrap();
    run_ok(Command::new("nginx").arg("-t").arg("-c").arg(&conf));
    let c = Collector::start(FAST);
    let _nginx =
        KillOnDrop(Command::new("nginx").arg("-c").arg(&conf).spawn().expect("nginx (Debian package) installed"));
    wait_port(port);
    let mut cl = Client::connect(&format!("127.0.0.1:{port}"));
    let mut total = Duration::ZERO;
    for _ in 0..5 {
        let x = cl.get("/big.bin");
        assert_eq!((x.status, x.body), (200, 10 << 20));
        total += x.latency;
    }
    assert_eq!(cl.get("/missing").status, 404);
    let m = c.scrape();
    assert_eq!(server_count(&m, port, "200"), 5.0);
    assert_eq!(server_count(&m, port, "404"), 1.0);
    let p = port_s(port);
    let resp = m.get(
        "http_server_response_body_size_bytes_sum",
        &[("server_port", &p), ("http_response_status_code", "200"), ("service_name", "nginx")],
    );
    assert_eq!(resp, 5.0 * (10 << 20) as f64);
    // sendfile responses last until their last byte leaves, not until the headers do.
    let sum =
        m.get("http_server_request_duration_seconds_sum", &[("server_port", &p), ("http_response_status_code", "200")]);
    let client = total.as_secs_f64();
    eprintln!("nginx 5 x 10 MiB: server histogram {sum:.6} s, clients measured {client:.6} s");
    assert!(sum >= 0.5 * client && sum <= 1.05 * client, "server {sum} s vs client {client} s");
}

#[test]
fn python_http_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "hello\n").unwrap();
    let port = free_port();
    let c = Collector::start(FAST);
    let _py = KillOnDrop(
        Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    for i in 0..12 {
        let mut cl = Client::connect(&format!("127.0.0.1:{port}"));
        let path = if i % 4 == 3 { "/nope" } else { "/index.html" };
        let x = cl.get(path);
        assert_eq!(x.status, if i % 4 == 3 { 404 } else { 200 });
    }
    let m = c.scrape();
    assert_eq!(server_count(&m, port, "200"), 9.0);
    assert_eq!(server_count(&m, port, "404"), 3.0);
    assert_eq!(client_count(&m, port, ""), 12.0);
    let p = port_s(port);
    assert_eq!(
        m.find("http_server_request_duration_seconds_count", &[("server_port", &p), ("service_name", "python3")]).len(),
        2
    );
}

/// An asyncio server that holds every response until `n` requests have arrived, then answers
/// them all (`HTTP/1.1 200`, body "ok"): every connection has a request waiting at once.
const HOLDING_SERVER: &str = r#"
import asyncio, resource, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
arrived, all_in = 0, asyncio.Event()
async def serve(r, w):
    global arrived
    await r.readuntil(b"\r\n\r\n")
    arrived += 1
    if arrived == n:
        all_in.set()
    await all_in.wait()
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await w.drain()
    await r.read()
async def main():
    srv = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    await srv.serve_forever()
asyncio.run(main())
"#;

/// More connections with a request waiting at once than a fixed connection table of 16384
/// sockets could hold (both ends are on this host: 24000 sockets): connection state lives in
/// each socket's own storage, so none is evicted and every exchange counts on both sides.
#[test]
fn twelve_thousand_connections_waiting_at_once() {
    const N: usize = 12_000;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    assert!(
        lim.rlim_max >= N as u64 + 500,
        "this test needs a hard RLIMIT_NOFILE of {} (have {})",
        N + 500,
        lim.rlim_max
    );
    lim.rlim_cur = lim.rlim_max;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);

    let port = free_port();
    let c = Collector::start(FAST);
    let mut py = Command::new("python3")
        .args(["-c", HOLDING_SERVER, &port.to_string(), &N.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    py.stdout.take().unwrap().read_exact(&mut ready).unwrap();
    let _py = KillOnDrop(py);
    let request = b"GET /held HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(request).unwrap();
        conns.push(s);
    }
    let want = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = [0u8; 40];
        s.read_exact(&mut got[..want.len()]).unwrap();
        assert_eq!(&got[..want.len()], want);
    }
    let m = c.scrape();
    assert_eq!(server_count(&m, port, "200"), N as f64);
    assert_eq!(client_count(&m, port, "200"), N as f64);
    no_drops(&m);
}

/// A server that closes a connection with a request unanswered while the client keeps its end
/// open: the request is abandoned when the server's FIN leaves (no response can follow it),
/// on both sides, and the in-flight gauge does not wait for the client to close.
#[test]
fn a_request_the_server_closes_on_is_abandoned_at_once() {
    let c = Collector::start(FAST);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let request = b"GET /never HTTP/1.1\r\nHost: t\r\n\r\n";
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = vec![0u8; request.len()];
        // Everything read, so the close sends a FIN (unread data would make it a RST).
        s.read_exact(&mut got).unwrap();
    });
    let abandoned = |m: &Metrics| m.get("collector_bpf_events_dropped_total", &[("reason", "http_abandoned")]);
    let before = abandoned(&c.scrape());
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(request).unwrap();
    server.join().unwrap();
    // The client sees the end of the stream and keeps its socket open.
    let mut rest = Vec::new();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
    let m = c.scrape();
    assert_eq!(abandoned(&m) - before, 2.0, "server and client side");
    assert_eq!(server_count(&m, port, ""), 0.0);
    assert_eq!(client_count(&m, port, ""), 0.0);
    let active = m.find("http_server_active_requests", &[("server_port", &port_s(port))]);
    assert!(active.iter().all(|s| s.value == 0.0), "{active:?}");
    drop(client);
}

/// A connection reset after its exchange completed abandons nothing (each side once counted
/// one abandoned request per reset).
#[test]
fn a_reset_after_the_response_abandons_nothing() {
    let c = Collector::start(FAST);
    let srv = TestServer::start("127.0.0.1");
    let abandoned = |m: &Metrics| m.get("collector_bpf_events_dropped_total", &[("reason", "http_abandoned")]);
    let before = abandoned(&c.scrape());
    let mut cl = Client::connect(&srv.addr);
    assert_eq!(cl.get("/k").status, 200);
    cl.close_with_reset();
    std::thread::sleep(Duration::from_millis(200));
    let m = c.scrape();
    assert_eq!(server_count(&m, srv.port, "200"), 1.0);
    assert_eq!(client_count(&m, srv.port, "200"), 1.0);
    assert_eq!(abandoned(&m) - before, 0.0);
}

/// Keep-alive connections busy while the collector starts (as on a host where it restarts):
/// every request that starts once it runs is counted, on both sides, with nothing mistaken —
/// a connection caught between a request and its response is followed from that response on
/// (one unmatched response), not taken for a connection in the other direction.
#[test]
fn keep_alive_traffic_while_the_collector_starts() {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };
    use std::time::Instant;
    let srv = TestServer::start("127.0.0.1");
    let stop = Arc::new(AtomicBool::new(false));
    // The clients stop also when the test fails (they would load the tests after it).
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_on_panic = Stop(stop.clone());
    let starts = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop, starts) = (srv.addr.clone(), stop.clone(), starts.clone());
            std::thread::spawn(move || {
                let mut cl = Client::connect(&addr);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    assert_eq!(cl.get("/busy?size=32").status, 200);
                    starts.lock().unwrap().push((t, Instant::now()));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let spawned = Instant::now();
    let c = Collector::start(FAST);
    let running = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let starts = starts.lock().unwrap();
    // Requests that started once the collector ran must all count; those that ended before it
    // was started cannot.
    let after = starts.iter().filter(|(t, _)| *t > running).count() as f64;
    let possible = starts.iter().filter(|(_, e)| *e > spawned).count() as f64;
    let m = c.scrape();
    for side in ["server", "client"] {
        let n = count(&m, side, srv.port, "200");
        let drops: Vec<_> = m
            .find("collector_bpf_events_dropped_total", &[])
            .iter()
            .map(|s| (s.labels["reason"].clone(), s.value))
            .collect();
        assert!(
            n >= after && n <= possible,
            "{side}: {n} counted, {after} started after the collector ran, {possible} ended after it was started; drops {drops:?}"
        );
    }
    // No connection taken for its opposite: the only server series of this test are the
    // test server's and the collector's own.
    let collector_port = c.addr.rsplit(':').next().unwrap().to_owned();
    for s in m.find("http_server_request_duration_seconds_count", &[]) {
        let port = &s.labels["server_port"];
        assert!(*port == port_s(srv.port) || *port == collector_port, "server series for port {port}: {s:?}");
    }
    for reason in ["http_desync", "http_pipeline_overflow"] {
        assert_eq!(m.get("collector_bpf_events_dropped_total", &[("reason", reason)]), 0.0, "{reason}");
    }
    // A response in flight at that moment is unmatched: at most one per connection and side.
    assert!(m.get("collector_bpf_events_dropped_total", &[("reason", "http_response_unmatched")]) <= 8.0);
}

/// The first request of a new connection may use any method token: it is followed on both
/// sides (as `_OTHER`), which tells the start of a byte stream from a connection seen from its
/// middle (where only known methods and status lines are taken as a message start).
#[test]
fn a_first_request_with_an_unknown_method_counts_on_both_sides() {
    let c = Collector::start(FAST);
    let srv = TestServer::start("127.0.0.1");
    let mut cl = Client::connect(&srv.addr);
    assert_eq!(cl.exchange("BREW", "/pot", b"", 0).status, 200);
    assert_eq!(cl.get("/k").status, 200);
    let m = c.scrape();
    let p = port_s(srv.port);
    for side in ["server", "client"] {
        let name = format!("http_{side}_request_duration_seconds_count");
        assert_eq!(m.get(&name, &[("server_port", &p), ("http_request_method", "_OTHER")]), 1.0, "{side}");
        assert_eq!(m.get(&name, &[("server_port", &p), ("http_request_method", "GET")]), 1.0, "{side}");
    }
    assert_eq!(m.get("collector_bpf_events_dropped_total", &[("reason", "http_response_unmatched")]), 0.0);
}

/// A server socket that closes with a request waiting and neither a FIN nor a RST on the wire
/// (here: closed in TCP repair mode; in production: a retransmission or keepalive timeout) is
/// settled when it reaches TCP_CLOSE (the `http_sock_close` sock_ops program, which asked for
/// state callbacks when the connection was established): the request is abandoned and leaves
/// the in-flight gauge. With the hook turned off it stays in flight.
#[test]
fn a_socket_closing_without_fin_or_rst_leaves_nothing_in_flight() {
    let c = Collector::start(FAST);
    let m0 = c.scrape();
    assert_eq!(m0.get("collector_bpf_program_attached", &[("program", "http_sock_close")]), 1.0);
    let (active, abandoned) = close_in_repair_mode(&c);
    assert_eq!(active, 0.0);
    assert_eq!(abandoned, 1.0, "the server side's request");
    drop(c);

    let args: Vec<&str> = FAST.iter().copied().chain(["--no-collector.http.close-hook"]).collect();
    let c = Collector::start(&args);
    let m0 = c.scrape();
    assert!(m0.find("collector_bpf_program_attached", &[("program", "http_sock_close")]).is_empty());
    assert_eq!(m0.get("collector_bpf_program_attached", &[("program", "http_ingress")]), 1.0);
    assert!(c.log_text().contains("close hook off"), "{}", c.log_text());
    let (active, abandoned) = close_in_repair_mode(&c);
    assert_eq!(active, 1.0, "without the close hook the request stays in flight");
    assert_eq!(abandoned, 0.0);
}

/// Sends a request to a fresh server socket, closes that socket in TCP repair mode (nothing on
/// the wire) and returns the in-flight gauge of its port and the abandoned requests counted
/// meanwhile.
fn close_in_repair_mode(c: &Collector) -> (f64, f64) {
    use std::os::fd::AsRawFd as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let request = b"GET /lost HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    client.write_all(request).unwrap();
    let mut got = vec![0u8; request.len()];
    s.read_exact(&mut got).unwrap();
    let abandoned = |m: &Metrics| m.get("collector_bpf_events_dropped_total", &[("reason", "http_abandoned")]);
    let active = |m: &Metrics| sum_of(m, "http_server_active_requests", port);
    let before = c.scrape();
    assert_eq!(active(&before), 1.0, "the request is in flight");
    // In repair mode close() sends nothing: no FIN, no RST.
    let on: libc::c_int = 1;
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_REPAIR,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "TCP_REPAIR: {}", std::io::Error::last_os_error());
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    let after = c.scrape();
    assert_eq!(server_count(&after, port, ""), 0.0);
    drop(client);
    (active(&after), abandoned(&after) - abandoned(&before))
}
