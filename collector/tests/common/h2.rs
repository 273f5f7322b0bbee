//! Helpers of the HTTP/2 tests (http2.rs, http2_tables.rs): what the collector counted (once
//! the daemon caught up with the kernel's frames), the peers' scripts and the Python that runs
//! them.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use super::common::{
    Collector, Metrics,
    process::{KillOnDrop, wait_port},
};

/// Samples of `name` whose labels include `want`, summed.
pub fn total(m: &Metrics, name: &str, want: &[(&str, &str)]) -> f64 {
    m.find(name, want).iter().map(|s| s.value).sum()
}

/// The collector's non-zero drop counters (kernel and HTTP/2 assembler), for messages.
pub fn drops(m: &Metrics) -> String {
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

/// A scrape once the daemon has caught up with the kernel's frames: the exchanges counted
/// (HTTP/2 and RPC histograms, streams given up) no longer change between two scrapes 300 ms
/// apart (the frames are decoded on a thread of the daemon, a little after the load ends; up
/// to 20 s under emulation).
pub fn quiet(c: &Collector) -> Metrics {
    let total = |m: &Metrics| -> f64 {
        m.samples
            .iter()
            // HTTP/2 and RPC series only: the scrapes themselves are HTTP/1.1 exchanges.
            .filter(|s| {
                (s.name.ends_with("_duration_seconds_count")
                    && (s.name.starts_with("rpc_")
                        || s.labels.get("network_protocol_version").is_some_and(|v| v == "2")))
                    || s.name == "collector_http2_dropped_total"
            })
            .map(|s| s.value)
            .sum()
    };
    let mut last = -1.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = c.scrape();
        let t = total(&m);
        if (t == last && t > 0.0) || std::time::Instant::now() > deadline {
            return m;
        }
        last = t;
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Asserts one side's HTTP/2 exchanges for `port` per status (`want`), with `scheme` and
/// `method` when not empty; `why` (the drop counters) goes into the message.
pub fn assert_counts(m: &Metrics, side: &str, port: u16, scheme: &str, method: &str, want: &[(&str, f64)], why: &str) {
    let p = port.to_string();
    for (status, n) in want {
        let mut labels = vec![
            ("server_port", p.as_str()),
            ("network_protocol_version", "2"),
            ("http_response_status_code", *status),
        ];
        if !scheme.is_empty() {
            labels.push(("url_scheme", scheme));
        }
        if !method.is_empty() {
            labels.push(("http_request_method", method));
        }
        let name = format!("http_{side}_request_duration_seconds_count");
        let got = total(m, &name, &labels);
        // On a mismatch, every HTTP/2 series of both sides (counted under other labels, a port
        // not known yet, or not at all; the other side tells a connection not followed from a
        // daemon behind) and the connections the daemon follows.
        let all: Vec<String> = ["server", "client"]
            .iter()
            .flat_map(|s| {
                m.find(&format!("http_{s}_request_duration_seconds_count"), &[("network_protocol_version", "2")])
            })
            .chain(m.find("collector_http2_connections", &[]))
            .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
            .collect();
        assert_eq!(got, *n, "{side} {method} {status};{why}\n{}", all.join("\n"));
    }
}

/// The gRPC peer (`tests/grpc_peer.py`): a grpcio server and a client that prints each call's
/// status and duration by its own clock.
pub fn grpc_peer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_peer.py")
}

/// The Python with grpcio and h2: the test tools' venv (`DEPLOY_TOOLS`, or where `cargo xtask
/// test` makes it: the kernel matrix's guests get no environment), else the system's.
pub fn python() -> PathBuf {
    let venv = match std::env::var_os("DEPLOY_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/deploy-tools"),
    };
    let p = venv.join("bin/python");
    if p.exists() { p } else { PathBuf::from("python3") }
}

/// Node.js's http2 server (`MODE PORT CERT KEY`, MODE `tls` or `plain`): /ok, /delay (10 ms),
/// else 404. Prints `ready` once it listens.
pub const NODE_H2_SERVER: &str = r#"
const http2 = require('http2');
const fs = require('fs');
const [mode, port, cert, key] = process.argv.slice(2);
const handle = (req, res) => {
  const send = (status, body) => { res.writeHead(status, { 'content-type': 'text/plain' }); res.end(body); };
  if (req.url === '/ok') send(200, 'ok');
  else if (req.url === '/delay') setTimeout(() => send(200, 'delayed'), 10);
  else send(404, 'not found');
};
const server = mode === 'tls'
  ? http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, handle)
  : http2.createServer(handle);
server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
"#;

/// The gRPC peer's server on `port` (`tests/grpc_peer.py serve`), listening.
pub fn grpc_server(port: u16) -> KillOnDrop {
    let srv = KillOnDrop(
        Command::new(python())
            .arg(grpc_peer())
            .args(["serve", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("python with grpcio"),
    );
    wait_port(port);
    srv
}
