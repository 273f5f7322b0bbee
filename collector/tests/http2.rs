//! HTTP/2 and gRPC against real implementations on loopback: nghttpd with h2load (100
//! concurrent streams per connection) and curl with prior knowledge, Python's grpcio server and
//! client (unary, server streaming, client streaming, bidirectional; statuses set by the
//! server); counts exact per status on both sides, durations against the clients' own clocks.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    Collector, FAST, Metrics,
    process::{KillOnDrop, free_port, run_ok, wait_port},
};

/// Samples of `name` whose labels include `want`, summed.
fn total(m: &Metrics, name: &str, want: &[(&str, &str)]) -> f64 {
    m.find(name, want).iter().map(|s| s.value).sum()
}

/// The collector's non-zero drop counters (kernel and HTTP/2 assembler), for messages.
fn drops(m: &Metrics) -> String {
    let mut out = String::new();
    for name in ["collector_bpf_events_dropped_total", "collector_http2_dropped_total"] {
        for s in m.find(name, &[]) {
            if s.value != 0.0 {
                out.push_str(&format!(" {}={}", s.labels["reason"], s.value));
            }
        }
    }
    out
}

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
    std::thread::sleep(Duration::from_millis(300));
    let m = c.scrape();
    let why = drops(&m);
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
    std::thread::sleep(Duration::from_millis(300));
    let m = c.scrape();
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

/// The gRPC peer: a grpcio server (`serve PORT`) with generic handlers for `test.Echo`, whose
/// requests say what to do ("delay_ms status count"), and a client (`call PORT ...`) that makes
/// the calls and prints each one's duration by its own clock.
const GRPC_PEER: &str = r#"
import sys, time, grpc
from concurrent import futures

def parse(b):
    d, s, n = b.decode().split()
    return int(d), s, int(n)

def finish(ctx, status):
    if status != "OK":
        ctx.abort(getattr(grpc.StatusCode, status), "as asked")

def unary(req, ctx):
    d, s, n = parse(req)
    time.sleep(d / 1000)
    finish(ctx, s)
    return b"r" * n

def server_stream(req, ctx):
    d, s, n = parse(req)
    for i in range(n):
        time.sleep(d / 1000)
        yield b"m" * 100
    finish(ctx, s)

def client_stream(reqs, ctx):
    last = None
    k = 0
    for r in reqs:
        last = parse(r)
        k += 1
    time.sleep(last[0] / 1000)
    finish(ctx, last[1])
    return str(k).encode()

def bidi(reqs, ctx):
    for r in reqs:
        d, s, n = parse(r)
        time.sleep(d / 1000)
        yield b"e" * n

ident = lambda b: b
if sys.argv[1] == "serve":
    h = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
    })
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    s.add_generic_rpc_handlers((h,))
    s.add_insecure_port("127.0.0.1:" + sys.argv[2])
    s.start()
    print("ready", flush=True)
    s.wait_for_termination()
else:
    ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[2])
    kind, d, status, n, reps = sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
    req = f"{d} {status} {n}".encode()
    for _ in range(reps):
        t = time.monotonic()
        try:
            if kind == "Unary":
                ch.unary_unary("/test.Echo/Unary", ident, ident)(req)
            elif kind == "ServerStream":
                for _ in ch.unary_stream("/test.Echo/ServerStream", ident, ident)(req):
                    pass
            elif kind == "ClientStream":
                ch.stream_unary("/test.Echo/ClientStream", ident, ident)(iter([req] * 5))
            else:
                for _ in ch.stream_stream("/test.Echo/Bidi", ident, ident)(iter([req] * 5)):
                    pass
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
        print(code, time.monotonic() - t, flush=True)
"#;

/// The Python with grpcio (the test tools' venv, `DEPLOY_TOOLS`, or the system's).
fn python() -> PathBuf {
    match std::env::var_os("DEPLOY_TOOLS") {
        Some(d) => Path::new(&d).join("bin/python"),
        None => PathBuf::from("python3"),
    }
}

/// Runs `reps` calls of `kind`; the client's own durations (s), each checked to end in `status`.
fn grpc_calls(script: &Path, port: u16, kind: &str, delay_ms: u32, status: &str, reps: u32) -> Vec<f64> {
    let out = run_ok(Command::new(python()).arg(script).args([
        "call",
        &port.to_string(),
        kind,
        &delay_ms.to_string(),
        status,
        "64",
        &reps.to_string(),
    ]));
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
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("grpc_peer.py");
    std::fs::write(&script, GRPC_PEER).unwrap();
    let port = free_port();
    let _srv = KillOnDrop(
        Command::new(python())
            .arg(&script)
            .args(["serve", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("python with grpcio"),
    );
    wait_port(port);
    // The client's own mean for a call with nothing to wait for (its share of the noise model).
    let nulls = grpc_calls(&script, port, "Unary", 0, "OK", 10);
    let null = nulls.iter().sum::<f64>() / nulls.len() as f64;
    let before = c.scrape();
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
    std::thread::sleep(Duration::from_millis(300));
    let m = c.scrape();
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
    let stream_mean = mean(&m, "server", &stream);
    let streamed_client = streamed.iter().sum::<f64>() / streamed.len() as f64;
    assert!(
        stream_mean >= 0.100 && stream_mean <= streamed_client,
        "streamed {stream_mean} client's clock {streamed_client}"
    );
}
