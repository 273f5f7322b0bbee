//! HTTP/2 connections whose HPACK tables the collector cannot know from the start or that
//! change under it, against real implementations on loopback: connections opened before the
//! collector started (Node.js over TLS, grpcio), and small tables with size updates and
//! evictions (Python's h2).
mod common;
#[path = "common/h2.rs"]
mod h2;
#[path = "common/tls.rs"]
mod tls_util;

use std::{
    path::Path,
    process::{Command, Stdio},
};

use common::{
    Collector, FAST,
    process::{KillOnDrop, free_port, run_ok},
};
use h2::{NODE_H2_SERVER, assert_counts, drops, grpc_peer, grpc_server, python, quiet, total};

/// Node.js's http2 client kept running (`URL`): each line read, `N PATH`, makes N requests for
/// PATH one after the other on its one connection, then prints `STATUS COUNT` per status.
const NODE_H2_SESSION: &str = r#"
const http2 = require('http2');
const readline = require('readline');
const client = http2.connect(process.argv[2], { rejectUnauthorized: false });
const one = (path) => new Promise((resolve) => {
  const req = client.request({ ':path': path });
  let status = 0;
  req.on('response', (h) => { status = h[':status']; });
  req.resume();
  req.on('end', () => resolve(status));
  req.end();
});
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const [n, path] = line.split(' ');
  const counts = {};
  for (let i = 0; i < Number(n); i++) {
    const s = await one(path);
    counts[s] = (counts[s] || 0) + 1;
  }
  console.log(Object.entries(counts).map(([s, c]) => `${s} ${c}`).join(' '));
});
"#;

/// A client that stays up and answers each line it is sent with one line.
struct Session {
    child: KillOnDrop,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Session {
    fn start(cmd: &mut Command, what: &str) -> Self {
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Self { child: KillOnDrop(child), out }
    }

    fn ask(&mut self, line: &str) -> String {
        use std::io::{BufRead, Write};
        let stdin = self.child.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        self.out.read_line(&mut answer).unwrap();
        answer.trim().to_owned()
    }
}

/// Connections opened before the collector started: followed from a request's or response's
/// HEADERS frame on, their streams counted with the labels that can be known (the static
/// table's and what the connection indexes from then on), and counted as uncertain where a
/// label may be missing. Node.js's http2 over TLS (its `:method` and `:status` come from the
/// static table: exact per status), and grpcio cleartext (C-core indexes nearly every field:
/// most labels unknown).
#[test]
fn connections_open_before_the_collector_started() {
    let dir = tempfile::tempdir().unwrap();
    let cert = tls_util::make_cert(dir.path());
    let server = tls_util::script(dir.path(), "h2_server.js", NODE_H2_SERVER);
    let session = tls_util::script(dir.path(), "h2_session.js", NODE_H2_SESSION);
    let nport = free_port();
    let nsrv = tls_util::spawn_ready(
        Command::new("node").arg(&server).args(["tls", &nport.to_string()]).arg(&cert.cert).arg(&cert.key),
        "node http2 server",
    );
    let node_path = std::fs::read_link(format!("/proc/{}/exe", nsrv.id())).unwrap().display().to_string();
    let mut node = Session::start(Command::new("node").arg(&session).arg(format!("https://127.0.0.1:{nport}")), "node");
    assert_eq!(node.ask("5 /ok"), "200 5");
    let script = grpc_peer();
    let gport = free_port();
    let _gsrv = grpc_server(gport);
    let mut grpc = Session::start(Command::new(python()).arg(&script).args(["session", &gport.to_string()]), "grpc");
    assert_eq!(grpc.ask("5"), "done 5");

    let c = Collector::start(FAST);
    tls_util::wait_attached(&c, &node_path);
    assert_eq!(node.ask("30 /ok"), "200 30");
    assert_eq!(node.ask("10 /nope"), "404 10");
    assert_eq!(grpc.ask("20"), "done 20");
    let m = quiet(&c);
    let why = drops(&m);
    // Node.js: every request, per status, on both sides. The socket (its ports) is learnt from
    // the process's first receive after the start, which the first exchange may precede.
    let mut counted = 0.0;
    let np = nport.to_string();
    for side in ["server", "client"] {
        let name = format!("http_{side}_request_duration_seconds_count");
        for (status, n) in [("200", 30.0), ("404", 10.0)] {
            let mut want = vec![
                ("service_name", "node"),
                ("url_scheme", "https"),
                ("network_protocol_version", "2"),
                ("http_request_method", "GET"),
                ("http_response_status_code", status),
            ];
            assert_eq!(total(&m, &name, &want), n, "node {side} {status};{why}");
            want.push(("server_port", &np));
            let named = total(&m, &name, &want);
            assert!(named >= n - 1.0, "node {side} {status}: {named} with the port;{why}");
            counted += n;
        }
        assert_eq!(total(&m, &name, &[("service_name", "node")]), 40.0, "node {side};{why}");
    }
    // grpcio: C-core sends a request's first field from the dynamic table, so the connection is
    // picked up at the first response's HEADERS frame: the call in flight then is not counted,
    // every later one is. Its `content-type` is an entry never seen, so the calls count as
    // HTTP/2 POSTs with status 200 (both from the static table), uncertain.
    let g = gport.to_string();
    for side in ["server", "client"] {
        let http = total(
            &m,
            &format!("http_{side}_request_duration_seconds_count"),
            &[("server_port", &g), ("http_request_method", "POST"), ("http_response_status_code", "200")],
        );
        let all = total(&m, &format!("http_{side}_request_duration_seconds_count"), &[("server_port", &g)])
            + total(&m, &format!("rpc_{side}_call_duration_seconds_count"), &[("server_port", &g)]);
        assert!((19.0..=20.0).contains(&http) && all == http, "grpc {side}: {http} of {all};{why}");
        counted += http;
    }
    // Each direction of the four sockets was seen from its middle; the streams whose labels may
    // be incomplete are counted (gRPC's at least), and no stream was given up.
    let uncertain = total(&m, "collector_http2_streams_uncertain_total", &[]);
    assert_eq!(total(&m, "collector_http2_dropped_total", &[("reason", "joined_late")]), 8.0, "{why}");
    assert!(uncertain >= 38.0 && uncertain <= counted, "uncertain {uncertain} of {counted}");
    assert_eq!(total(&m, "collector_http2_dropped_total", &[("reason", "abandoned")]), 0.0, "{why}");
}

/// Small HPACK tables on both sides, with real encoders (Python's h2 and hpack): each side
/// announces a 96-byte table, so the other's encoder starts its blocks with a dynamic table
/// size update and evicts an entry for nearly every one it adds; the client quadruples its
/// table halfway (another update). Statuses outside the static table (201, 299, 418, 503) are
/// indexed and referred to. Every status exact on both sides, and no label uncertain.
#[test]
fn hpack_table_size_updates_and_evictions() {
    let c = Collector::start(FAST);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hpack_peer.py");
    let port = free_port();
    let _srv = tls_util::spawn_ready(
        Command::new(python()).arg(&script).args(["serve", &port.to_string(), "96"]),
        "h2 server",
    );
    let out = run_ok(Command::new(python()).arg(&script).args(["call", &port.to_string(), "96", "96"]));
    assert_eq!(out.lines().collect::<Vec<_>>(), ["200 12", "201 12", "299 12", "404 12", "418 24", "503 24"]);
    let m = quiet(&c);
    let why = drops(&m);
    let want = [("200", 12.0), ("201", 12.0), ("299", 12.0), ("404", 12.0), ("418", 24.0), ("503", 24.0)];
    for side in ["server", "client"] {
        assert_counts(&m, side, port, "http", "GET", &want, &why);
    }
    assert_eq!(total(&m, "collector_http2_streams_uncertain_total", &[]), 0.0, "{why}");
    assert_eq!(total(&m, "collector_http2_dropped_total", &[("reason", "decode_errors")]), 0.0, "{why}");
}

/// A server that goes away with requests open (Python's h2): 6 requests at once on one
/// connection, 2 answered, then GOAWAY with the second's id as its last. The 2 are counted on
/// both sides; the 4 the server refused (the client would retry them elsewhere) are neither
/// counted nor given up as abandoned when the connection closes.
#[test]
fn goaway_refused_requests_are_not_counted() {
    let c = Collector::start(FAST);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goaway_peer.py");
    let port = free_port();
    let _srv = tls_util::spawn_ready(
        Command::new(python()).arg(&script).args(["serve", &port.to_string(), "6", "2"]),
        "h2 server",
    );
    let before = quiet(&c);
    for _ in 0..3 {
        let out = run_ok(Command::new(python()).arg(&script).args(["call", &port.to_string(), "6"]));
        assert_eq!(out.trim(), "answered 2 refused 4");
    }
    let m = quiet(&c);
    let why = drops(&m);
    for side in ["server", "client"] {
        assert_counts(&m, side, port, "http", "GET", &[("200", 6.0)], &why);
    }
    let abandoned = |m: &common::Metrics| total(m, "collector_http2_dropped_total", &[("reason", "abandoned")]);
    assert_eq!(abandoned(&m) - abandoned(&before), 0.0, "{why}");
}
