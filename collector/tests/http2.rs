//! HTTP/2 and gRPC against real implementations on loopback: nghttpd with h2load (100
//! concurrent streams per connection) and curl with prior knowledge, Python's grpcio server and
//! client (unary, server streaming, client streaming, bidirectional; statuses set by the
//! server); counts exact per status on both sides, durations against the clients' own clocks.
mod common;
#[path = "common/h2.rs"]
mod h2;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/tls_peers.rs"]
mod tls_peers;
#[path = "common/tls.rs"]
mod tls_util;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    Collector, FAST, Metrics,
    process::{KillOnDrop, free_port, run_ok, wait_port},
};
use h2::{NODE_H2_SERVER, assert_counts, drops, grpc_peer, grpc_server, python, quiet, total};

/// nghttpd serving `dir` over cleartext HTTP/2 (prior knowledge) on a free port.
fn nghttpd(dir: &Path) -> (KillOnDrop, u16) {
    let port = free_port();
    let child = Command::new("nghttpd")
        .args(["--no-tls", "-d"])
        .arg(dir)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nghttpd (Debian nghttp2-server)");
    wait_port(port);
    (KillOnDrop(child), port)
}

/// nghttpd serving `dir` over TLS (ALPN h2) on a free port.
fn nghttpd_tls(dir: &Path, cert: &tls_util::Cert) -> (KillOnDrop, u16) {
    let port = free_port();
    let child = Command::new("nghttpd")
        .arg("-d")
        .arg(dir)
        .arg(port.to_string())
        .arg(&cert.key)
        .arg(&cert.cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nghttpd (Debian nghttp2-server)");
    wait_port(port);
    (KillOnDrop(child), port)
}

/// A document root with a 25-byte and a 20 KiB file.
fn docroot() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("small"), "hello from nghttpd, h2c\n\n").unwrap();
    std::fs::write(dir.path().join("big"), vec![b'x'; 20 << 10]).unwrap();
    dir
}

/// Requests of one side for `port` over HTTP/2, per status ("" = all).
fn count(m: &Metrics, side: &str, port: u16, status: &str) -> f64 {
    let p = port.to_string();
    let mut want = vec![("server_port", p.as_str()), ("network_protocol_version", "2")];
    if !status.is_empty() {
        want.push(("http_response_status_code", status));
    }
    total(m, &format!("http_{side}_request_duration_seconds_count"), &want)
}

/// h2load: `n` requests over `c` connections, `m` concurrent streams each; panics unless all
/// succeeded (its summary line).
fn h2load(url: &str, n: u32, c: u32, m: u32) {
    let out =
        run_ok(Command::new("h2load").args(["-n", &n.to_string(), "-c", &c.to_string(), "-m", &m.to_string(), url]));
    let want = format!("requests: {n} total, {n} started, {n} done");
    assert!(out.contains(&want), "h2load: {out}");
}

#[test]
fn h2load_with_100_concurrent_streams_counts_every_request() {
    let c = Collector::start(FAST);
    let root = docroot();
    let (_srv, port) = nghttpd(root.path());
    // 100 streams in flight on each connection, 2,000 requests over 2 connections, and 300
    // requests for a file that does not exist (404).
    h2load(&format!("http://127.0.0.1:{port}/small"), 2000, 2, 100);
    h2load(&format!("http://127.0.0.1:{port}/missing"), 300, 1, 100);
    h2load(&format!("http://127.0.0.1:{port}/big"), 200, 1, 50);
    let m = quiet(&c);
    let why = format!(
        "{}\n{}",
        drops(&m),
        c.scrape_text()
            .lines()
            .filter(|l| l.contains("http2") || l.contains(&format!("\"{port}\"")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(count(&m, "server", port, "200"), 2200.0, "server 200;{why}");
    assert_eq!(count(&m, "server", port, "404"), 300.0, "server 404;{why}");
    assert_eq!(count(&m, "client", port, "200"), 2200.0, "client 200;{why}");
    assert_eq!(count(&m, "client", port, "404"), 300.0, "client 404;{why}");
    let p = port.to_string();
    let get = [("server_port", p.as_str()), ("http_request_method", "GET"), ("network_protocol_version", "2")];
    assert_eq!(total(&m, "http_server_request_duration_seconds_count", &get), 2500.0);
    // Response bodies from DATA frames: 2,000 × 25 + 200 × 20 KiB (+ nghttpd's 404 page).
    let resp = total(
        &m,
        "http_server_response_body_size_bytes_sum",
        &[("server_port", &p), ("http_response_status_code", "200")],
    );
    assert_eq!(resp, 2000.0 * 25.0 + 200.0 * 20480.0);
    // Nothing else was taken for HTTP/1.x.
    assert_eq!(
        total(
            &m,
            "http_server_request_duration_seconds_count",
            &[("server_port", &p), ("network_protocol_version", "1.1")]
        ),
        0.0
    );
    assert_eq!(total(&m, "collector_bpf_events_dropped_total", &[("reason", "http2_events_lost")]), 0.0);
    for s in m.find("collector_http2_dropped_total", &[]) {
        assert_eq!(s.value, 0.0, "{:?}", s.labels);
    }
}

#[test]
fn curl_prior_knowledge_methods_bodies_and_durations() {
    let c = Collector::start(FAST);
    let root = docroot();
    let (_srv, port) = nghttpd(root.path());
    let url = format!("http://127.0.0.1:{port}/small");
    // Each curl process opens its own connection (its preface, its SETTINGS): 10 GETs and 5
    // HEADs, and 5 POSTs of 1000 bytes (nghttpd answers a POST to a file with the file).
    let mut client_ms = Vec::new();
    for i in 0..20 {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "--http2-prior-knowledge", "-w", "%{http_code} %{time_total}\n"]);
        match i % 4 {
            0 => {
                cmd.arg("-I");
            }
            1 => {
                cmd.args(["--data-binary", &"y".repeat(1000)]);
            }
            _ => {}
        }
        let out = run_ok(cmd.arg(&url));
        let mut w = out.split_whitespace();
        assert_eq!(w.next(), Some("200"), "{out}");
        client_ms.push(w.next().unwrap().parse::<f64>().unwrap());
    }
    let m = quiet(&c);
    let why = drops(&m);
    let p = port.to_string();
    for (side, method, n) in [
        ("server", "GET", 10.0),
        ("server", "HEAD", 5.0),
        ("server", "POST", 5.0),
        ("client", "GET", 10.0),
        ("client", "HEAD", 5.0),
        ("client", "POST", 5.0),
    ] {
        let want = [("server_port", p.as_str()), ("http_request_method", method), ("network_protocol_version", "2")];
        assert_eq!(
            total(&m, &format!("http_{side}_request_duration_seconds_count"), &want),
            n,
            "{side} {method};{why}"
        );
    }
    let post = [("server_port", p.as_str()), ("http_request_method", "POST")];
    assert_eq!(total(&m, "http_server_request_body_size_bytes_sum", &post), 5000.0);
    assert_eq!(total(&m, "http_client_request_body_size_bytes_sum", &post), 5000.0);
    // Every exchange is shorter than the client's whole run (connect, preface, request).
    let server_sum = total(&m, "http_server_request_duration_seconds_sum", &[("server_port", &p)]);
    let client_total: f64 = client_ms.iter().sum();
    assert!(server_sum > 0.0 && server_sum < client_total, "server {server_sum} s against curl's {client_total} s");
}

/// Runs `reps` calls of `kind`; the client's own durations (s), each checked to end in `status`.
fn grpc_calls(script: &Path, port: u16, kind: &str, delay_ms: u32, status: &str, reps: u32) -> Vec<f64> {
    grpc_calls_by(script, port, kind, delay_ms, status, reps, None)
}

/// As `grpc_calls`, with the client's deadline (`timeout` seconds) when given: the status the
/// client reports is `status` for every call.
fn grpc_calls_by(
    script: &Path,
    port: u16,
    kind: &str,
    delay_ms: u32,
    status: &str,
    reps: u32,
    timeout: Option<f64>,
) -> Vec<f64> {
    let asked = if timeout.is_some() { "OK" } else { status };
    let out = run_ok(
        Command::new(python())
            .arg(script)
            .args(["call", &port.to_string(), kind, &delay_ms.to_string(), asked, "64", &reps.to_string()])
            .args(timeout.map(|t| t.to_string())),
    );
    out.lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            assert_eq!(w.next(), Some(status), "{kind}: {out}");
            w.next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn grpc_calls_every_kind_and_status_on_both_sides() {
    let c = Collector::start(FAST);
    let script = grpc_peer();
    let port = free_port();
    let _srv = grpc_server(port);
    // The client's own mean for a call with nothing to wait for (its share of the noise model).
    let nulls = grpc_calls(&script, port, "Unary", 0, "OK", 10);
    let null = nulls.iter().sum::<f64>() / nulls.len() as f64;
    let before = quiet(&c);
    // Unary calls with a 10 ms handler: every status the server may set.
    let mut client = Vec::new();
    for status in ["OK", "NOT_FOUND", "INTERNAL", "DEADLINE_EXCEEDED"] {
        client.extend(grpc_calls(&script, port, "Unary", 10, status, 10));
    }
    // Streams: 5 messages 20 ms apart (a call of about 100 ms), 5 messages up, 5 both ways.
    let streamed = grpc_calls(&script, port, "ServerStream", 20, "OK", 4);
    grpc_calls(&script, port, "ClientStream", 1, "OK", 4);
    grpc_calls(&script, port, "ClientStream", 1, "NOT_FOUND", 2);
    grpc_calls(&script, port, "Bidi", 1, "OK", 4);
    // The client's own deadline (100 ms) expires while the server waits 300 ms: no status on
    // the wire from the client, which resets the stream; both sides say DEADLINE_EXCEEDED, as
    // the client's library and the server's do.
    grpc_calls_by(&script, port, "ClientStream", 300, "DEADLINE_EXCEEDED", 3, Some(0.1));
    let m = quiet(&c);
    let why = drops(&m);
    let p = port.to_string();
    for side in ["server", "client"] {
        let name = format!("rpc_{side}_call_duration_seconds_count");
        for (method, code, n) in [
            ("test.Echo/Unary", "OK", 20.0), // with the null calls
            ("test.Echo/Unary", "NOT_FOUND", 10.0),
            ("test.Echo/Unary", "INTERNAL", 10.0),
            ("test.Echo/Unary", "DEADLINE_EXCEEDED", 10.0),
            ("test.Echo/ServerStream", "OK", 4.0),
            ("test.Echo/ClientStream", "OK", 4.0),
            ("test.Echo/ClientStream", "NOT_FOUND", 2.0),
            ("test.Echo/ClientStream", "DEADLINE_EXCEEDED", 3.0),
            ("test.Echo/Bidi", "OK", 4.0),
        ] {
            let want = [
                ("server_port", p.as_str()),
                ("rpc_system_name", "grpc"),
                ("rpc_method", method),
                ("rpc_response_status_code", code),
            ];
            assert_eq!(total(&m, &name, &want), n, "{side} {method} {code};{why}");
        }
        // gRPC calls are not counted again as HTTP requests.
        assert_eq!(total(&m, &format!("http_{side}_request_duration_seconds_count"), &[("server_port", &p)]), 0.0);
    }
    // Durations under the tests' noise model (`common::assert_agrees`): the unary calls' means
    // (10 ms handlers) on both sides against the client's own clock, with the client's own mean
    // for null calls (no delay) as the absolute slack; a streamed call lasts its whole stream
    // (5 × 20 ms), not until its first message.
    let unary = [("server_port", p.as_str()), ("rpc_method", "test.Echo/Unary")];
    let mean = |m: &Metrics, side: &str, want: &[(&str, &str)]| {
        let sum = total(m, &format!("rpc_{side}_call_duration_seconds_sum"), want)
            - total(&before, &format!("rpc_{side}_call_duration_seconds_sum"), want);
        let n = total(m, &format!("rpc_{side}_call_duration_seconds_count"), want)
            - total(&before, &format!("rpc_{side}_call_duration_seconds_count"), want);
        sum / n
    };
    let client_mean = client.iter().sum::<f64>() / client.len() as f64;
    common::assert_agrees("gRPC unary, server side", mean(&m, "server", &unary), client_mean, null);
    common::assert_agrees("gRPC unary, client side", mean(&m, "client", &unary), client_mean, null);
    let stream = [("server_port", p.as_str()), ("rpc_method", "test.Echo/ServerStream")];
    let streamed_client = streamed.iter().sum::<f64>() / streamed.len() as f64;
    for side in ["server", "client"] {
        let stream_mean = mean(&m, side, &stream);
        assert!(
            stream_mean >= 0.100 && stream_mean <= streamed_client,
            "{side}: streamed {stream_mean} client's clock {streamed_client}"
        );
    }
}

/// HTTP/2 over TLS, read at the TLS library (the host's libssl, attached at start-up): nghttpd
/// with h2load (50 concurrent streams) and curl, both negotiating h2 by ALPN.
#[test]
fn h2_over_tls_counts_every_request() {
    let c = Collector::start(FAST);
    let root = docroot();
    let cert = tls_util::make_cert(root.path());
    let (_srv, port) = nghttpd_tls(root.path(), &cert);
    h2load(&format!("https://127.0.0.1:{port}/small"), 500, 2, 50);
    h2load(&format!("https://127.0.0.1:{port}/missing"), 100, 1, 50);
    for _ in 0..5 {
        let out = run_ok(
            Command::new("curl")
                .args(["-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
                .arg(format!("https://127.0.0.1:{port}/big")),
        );
        assert_eq!(out.trim(), "2 200", "curl");
    }
    let m = quiet(&c);
    let why = drops(&m);
    let p = port.to_string();
    for side in ["server", "client"] {
        assert_counts(&m, side, port, "https", "", &[("200", 505.0), ("404", 100.0)], &why);
    }
    let big = [("server_port", p.as_str()), ("url_scheme", "https"), ("http_response_status_code", "200")];
    assert_eq!(total(&m, "http_client_response_body_size_bytes_sum", &big), 500.0 * 25.0 + 5.0 * 20480.0);
}

/// Node.js's http2 client: `URL N PATH...`, N requests on one connection, all in flight at
/// once, the paths in turn; prints `STATUS COUNT` per status.
const NODE_H2_CLIENT: &str = r#"
const http2 = require('http2');
const [url, n, ...paths] = process.argv.slice(2);
const client = http2.connect(url, { rejectUnauthorized: false });
const counts = {};
let done = 0;
for (let i = 0; i < Number(n); i++) {
  const req = client.request({ ':path': paths[i % paths.length] });
  let status = 0;
  req.on('response', (h) => { status = h[':status']; });
  req.resume();
  req.on('end', () => {
    counts[status] = (counts[status] || 0) + 1;
    if (++done === Number(n)) {
      for (const [s, c] of Object.entries(counts)) console.log(s, c);
      client.close();
    }
  });
  req.end();
}
"#;

/// Node.js's http2 server and client, over TLS (OpenSSL linked into the node binary) and
/// cleartext: 60 requests in flight on one connection, counted per status on both sides.
#[test]
fn node_http2_server_and_client_tls_and_cleartext() {
    let c = Collector::start(FAST);
    let dir = tempfile::tempdir().unwrap();
    let cert = tls_util::make_cert(dir.path());
    let server = tls_util::script(dir.path(), "h2_server.js", NODE_H2_SERVER);
    let client = tls_util::script(dir.path(), "h2_client.js", NODE_H2_CLIENT);
    for (mode, scheme) in [("tls", "https"), ("plain", "http")] {
        let port = free_port();
        let srv = tls_util::spawn_ready(
            Command::new("node").arg(&server).args([mode, &port.to_string()]).arg(&cert.cert).arg(&cert.key),
            "node http2 server",
        );
        let node = std::fs::read_link(format!("/proc/{}/exe", srv.id())).unwrap().display().to_string();
        tls_util::wait_attached(&c, &node);
        let out = run_ok(
            Command::new("node")
                .arg(&client)
                .arg(format!("{scheme}://127.0.0.1:{port}"))
                .args(["60", "/ok", "/delay", "/nope"]),
        );
        let mut got: Vec<&str> = out.lines().collect();
        got.sort();
        assert_eq!(got, ["200 40", "404 20"], "node client");
        let m = quiet(&c);
        let why = drops(&m);
        for side in ["server", "client"] {
            assert_counts(&m, side, port, scheme, "", &[("200", 40.0), ("404", 20.0)], &format!("{mode}{why}"));
        }
    }
}

/// Go's net/http over TLS, HTTP/2 by default (crypto/tls read by the Go uprobes): both sides
/// counted exactly.
#[test]
fn go_net_http_h2_over_tls() {
    let c = Collector::start(FAST);
    let dir = tempfile::tempdir().unwrap();
    let cert = tls_util::make_cert(dir.path());
    let bin = tls_peers::go_binary(dir.path());
    let port = free_port();
    let _srv = tls_util::spawn_ready(
        Command::new(&bin).args(["server-h2", &port.to_string()]).arg(&cert.cert).arg(&cert.key),
        "Go server",
    );
    let bin_s = bin.display().to_string();
    tls_util::wait_attached_as(&c, "go", &bin_s);
    let paths: Vec<&str> = (0..30).map(|i| ["/ok", "/delay", "/nope"][i % 3]).collect();
    let out = run_ok(Command::new(&bin).arg("client-h2").arg(format!("https://127.0.0.1:{port}")).args(&paths));
    assert!(out.lines().all(|l| l.ends_with("HTTP/2.0")), "Go client: {out}");
    let m = quiet(&c);
    let why = drops(&m);
    // Both sides exact. Go's server writes its SETTINGS before a read of the connection is
    // seen, and the kernel learns the socket (its ports) from a read: the exchanges take the
    // socket named later (in 2 of 8 runs they had server_port 0 before that was so).
    for side in ["server", "client"] {
        assert_counts(&m, side, port, "https", "", &[("200", 20.0), ("404", 10.0)], &format!("{side}{why}"));
    }
}

/// `curl --http2` over cleartext: an HTTP/1.1 request with `Upgrade: h2c`, answered 101 by a
/// server built on Python's h2 library (`tests/h2c_upgrade_server.py`; nghttpd takes prior
/// knowledge only), then HTTP/2 on the same connection (the request's response on stream 1).
/// Counted as HTTP/2 exchanges on both sides, none as an HTTP/1 101.
#[test]
fn h2c_upgrade_from_http1() {
    let c = Collector::start(FAST);
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h2c_upgrade_server.py");
    let _srv = tls_util::spawn_ready(Command::new(python()).arg(&script).arg(port.to_string()), "h2c upgrade server");
    for path in ["small", "small", "big", "missing", "small"] {
        let out = run_ok(
            Command::new("curl")
                .args(["-s", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
                .arg(format!("http://127.0.0.1:{port}/{path}")),
        );
        let want = if path == "missing" { "2 404" } else { "2 200" };
        assert_eq!(out.trim(), want, "curl --http2 {path}");
    }
    let m = quiet(&c);
    let why = drops(&m);
    let p = port.to_string();
    for side in ["server", "client"] {
        assert_counts(&m, side, port, "", "GET", &[("200", 4.0), ("404", 1.0)], &why);
        let http1 = [("server_port", p.as_str()), ("http_response_status_code", "101")];
        assert_eq!(
            total(&m, &format!("http_{side}_request_duration_seconds_count"), &http1),
            0.0,
            "{side}: a 101 counted"
        );
    }
    let ok = [("server_port", p.as_str()), ("http_response_status_code", "200")];
    assert_eq!(total(&m, "http_server_response_body_size_bytes_sum", &ok), 3.0 * 24.0 + 20480.0);
    let active: f64 = m.find("http_server_active_requests", &[("server_port", &p)]).iter().map(|s| s.value).sum();
    assert_eq!(active, 0.0, "the upgraded requests left the in-flight gauge");
}

/// nginx serving HTTP/2 over TLS (`listen ... ssl http2`, sendfile on) to h2load (50 streams
/// per connection) and to curl: counted per status on both sides, with the 20 KiB body's size.
#[test]
fn nginx_http2_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = tls_util::make_cert(d);
    let root = d.join("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("big"), vec![b'x'; 20 << 10]).unwrap();
    let port = free_port();
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; default_type text/plain; sendfile on; keepalive_requests 100000;\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen 127.0.0.1:{port} ssl http2; root {root};\n\
                 ssl_certificate {cert}; ssl_certificate_key {key};\n\
                 location = /ok {{ return 200 \"ok\"; }}\n\
                 location = /missing {{ return 404; }}\n\
                 location / {{ }} }} }}\n",
            d = d.display(),
            root = root.display(),
            cert = cert.cert.display(),
            key = cert.key.display(),
        ),
    )
    .unwrap();
    run_ok(Command::new(tls_util::NGINX).arg("-t").arg("-c").arg(&conf));
    let c = Collector::start(FAST);
    let nginx = KillOnDrop(
        Command::new(tls_util::NGINX).arg("-c").arg(&conf).spawn().expect("nginx (Debian package) installed"),
    );
    wait_port(port);
    tls_util::wait_attached(&c, &tls_util::mapped_file(nginx.id(), "libssl.so.3"));
    h2load(&format!("https://127.0.0.1:{port}/ok"), 400, 2, 50);
    h2load(&format!("https://127.0.0.1:{port}/missing"), 100, 1, 50);
    for _ in 0..4 {
        let out = run_ok(
            Command::new("curl")
                .args(["-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
                .arg(format!("https://127.0.0.1:{port}/big")),
        );
        assert_eq!(out.trim(), "2 200", "curl");
    }
    let m = quiet(&c);
    let why = drops(&m);
    let p = port.to_string();
    for side in ["server", "client"] {
        assert_counts(&m, side, port, "https", "", &[("200", 404.0), ("404", 100.0)], &why);
    }
    let ok = [("server_port", p.as_str()), ("http_response_status_code", "200")];
    assert_eq!(total(&m, "http_client_response_body_size_bytes_sum", &ok), 400.0 * 2.0 + 4.0 * 20480.0);
}

/// The loss harness (`common/netns.rs`): nghttpd and h2load in two network namespaces joined by
/// a veth, with every 20th data segment each host receives dropped, swapped with the next, or
/// duplicated. h2load (8 streams of 20 KiB bodies, 50 of 25-byte ones in flight) completes
/// every request; both sides count every one, per status: HTTP/2's frames are followed through
/// the gaps (payloads skipped by position, frame headers beyond a gap kept in the reorder stash
/// until the retransmission comes).
#[test]
fn h2load_exact_under_loss_reordering_and_duplication() {
    let c = Collector::start(FAST);
    let root = docroot();
    for fault in [netns::Fault::Drop, netns::Fault::Swap, netns::Fault::Duplicate] {
        let link = netns::Link::new("h2", false);
        let to_server = netns::Injector::attach(&link.server, fault, 20);
        let to_client = netns::Injector::attach(&link.client, fault, 20);
        let port = free_port();
        let _srv = KillOnDrop(
            link.server
                .command("nghttpd")
                .args(["--no-tls", "-a", &link.server.ip, "-d"])
                .arg(root.path())
                .arg(port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nghttpd"),
        );
        std::thread::sleep(Duration::from_millis(500));
        let base = format!("http://{}", link.server_addr(port));
        // 20 KiB bodies 8 at a time: at most 160 KiB in flight per connection, within what the
        // reorder stash keeps beyond a gap (256 KiB; docs/metrics.md).
        for (path, n, m) in [("big", 200, 8), ("small", 1000, 50), ("missing", 100, 20)] {
            let out = run_ok(link.client.command("h2load").args([
                "-n",
                &n.to_string(),
                "-c",
                "2",
                "-m",
                &m.to_string(),
                &format!("{base}/{path}"),
            ]));
            assert!(out.contains(&format!("requests: {n} total, {n} started, {n} done")), "h2load: {out}");
        }
        let m = quiet(&c);
        let why = drops(&m);
        let (s, cl) = (to_server.stats(), to_client.stats());
        eprintln!("{fault:?} every 20th: to the server {s:?}, to the client {cl:?};{why}");
        assert!(s.faults() > 0 && cl.faults() > 0, "no fault injected: {s:?} {cl:?}");
        for side in ["server", "client"] {
            assert_counts(&m, side, port, "http", "", &[("200", 1200.0), ("404", 100.0)], &format!("{fault:?}{why}"));
        }
    }
}

/// What a user's headers carry (authorization, cookies, paths, custom headers) is decoded in
/// the daemon and dropped at once: none of it reaches the metrics or the log (at its most
/// verbose level), while the exchanges are counted.
#[test]
fn http2_header_values_never_reach_the_metrics_or_the_log() {
    let c = Collector::start(&[FAST, &["--log.level=debug"]].concat());
    let root = docroot();
    let (_srv, port) = nghttpd(root.path());
    let secret = format!("Zq{}x{}H2secret", std::process::id(), port);
    for _ in 0..3 {
        let out = run_ok(
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "--http2-prior-knowledge", "-w", "%{http_code}"])
                .args(["-H", &format!("authorization: Bearer {secret}")])
                .args(["-H", &format!("cookie: session={secret}")])
                .args(["-H", &format!("x-{secret}: {secret}")])
                .args(["-A", &secret])
                .arg(format!("http://127.0.0.1:{port}/{secret}/login?token={secret}")),
        );
        assert_eq!(out, "404");
    }
    let m = quiet(&c);
    assert_eq!(count(&m, "server", port, "404"), 3.0, "{}", drops(&m));
    assert_eq!(count(&m, "client", port, "404"), 3.0, "{}", drops(&m));
    let text = c.scrape_text();
    let log = c.log_text();
    for needle in [secret.as_str(), &secret.to_lowercase(), "login", "Bearer", "session="] {
        assert!(!text.contains(needle), "{needle:?} appears in /metrics");
        assert!(!log.contains(needle), "{needle:?} appears in the log");
    }
}

/// Connections that are not HTTP/2 — HTTP/1.0 and 1.1 requests, and a TCP stream of other
/// bytes — add nothing to the HTTP/2 capture: no series of version 2, no gRPC series, nothing
/// counted by it; the HTTP/1 series carry their own version.
#[test]
fn http1_and_other_traffic_add_nothing_to_http2() {
    let c = Collector::start(FAST);
    let port = free_port();
    let _srv = KillOnDrop(
        Command::new(python())
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory", "/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    for version in ["--http1.0", "--http1.0", "--http1.1", "--http1.1", "--http1.1"] {
        run_ok(Command::new("curl").args(["-sf", "-o", "/dev/null", version]).arg(format!("http://127.0.0.1:{port}/")));
    }
    // Other bytes both ways on a connection of its own (an echo in this process).
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = echo.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let (mut s, _) = echo.accept().unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        for i in 0..50u32 {
            let msg: Vec<u8> = (0..200u32).map(|j| (i * 7 + j * 13) as u8).collect();
            s.write_all(&msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).unwrap();
        }
    }
    t.join().unwrap();
    let m = quiet(&c);
    let p = port.to_string();
    for (version, n) in [("1.0", 2.0), ("1.1", 3.0)] {
        for side in ["server", "client"] {
            let want = [("server_port", p.as_str()), ("network_protocol_version", version)];
            assert_eq!(total(&m, &format!("http_{side}_request_duration_seconds_count"), &want), n, "{side} {version}");
        }
    }
    // The HTTP/2 capture runs (its gauge is there), and took none of it.
    assert_eq!(m.find("collector_http2_connections", &[]).len(), 1);
    let text = c.scrape_text();
    assert!(!text.contains("network_protocol_version=\"2\""), "HTTP/2 series:\n{text}");
    assert!(!text.lines().any(|l| l.starts_with("rpc_")), "gRPC series:\n{text}");
    for name in
        ["collector_http2_dropped_total", "collector_http2_streams_uncertain_total", "collector_http2_connections"]
    {
        assert_eq!(total(&m, name, &[]), 0.0, "{name}");
    }
}

/// `--no-collector.http.grpc-method`: calls are counted per status with an empty `rpc_method`.
#[test]
fn the_grpc_method_label_can_be_turned_off() {
    let c = Collector::start(&[FAST, &["--no-collector.http.grpc-method"]].concat());
    let script = grpc_peer();
    let port = free_port();
    let _srv = grpc_server(port);
    grpc_calls(&script, port, "Unary", 0, "OK", 3);
    grpc_calls(&script, port, "ClientStream", 0, "NOT_FOUND", 2);
    let m = quiet(&c);
    let p = port.to_string();
    for side in ["server", "client"] {
        let name = format!("rpc_{side}_call_duration_seconds_count");
        for (code, n) in [("OK", 3.0), ("NOT_FOUND", 2.0)] {
            let want = [("server_port", p.as_str()), ("rpc_method", ""), ("rpc_response_status_code", code)];
            assert_eq!(total(&m, &name, &want), n, "{side} {code}");
        }
        assert!(m.find(&name, &[]).iter().all(|s| s.labels["rpc_method"].is_empty()), "{side}");
    }
}
