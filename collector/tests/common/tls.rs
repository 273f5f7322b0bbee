//! Helpers of the HTTPS tests (tls.rs, tls_timing.rs, tls_files.rs): certificates, servers
//! started until they say `ready`, what the collector reports of the TLS capture, counts per
//! status and side, the Python HTTPS server and clients, and the timing comparisons' means.
#![allow(dead_code)]

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::common::{
    self, Collector, Metrics,
    process::{KillOnDrop, free_port, run_ok},
};

pub const PYTHON: &str = "/usr/bin/python3";

pub const CURL: &str = "/usr/bin/curl";

pub const NGINX: &str = "/usr/sbin/nginx";

/// The large response of every server: 10 MiB.
pub const BIG: usize = 10 << 20;

/// A self-signed certificate and its key, made with the openssl command line tool.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_cert(dir: &Path) -> Cert {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    Cert { cert, key }
}

/// Starts `cmd` with its stdout piped and waits up to 60 s for its first line, which must be
/// `ready` (the servers print it once they listen); killed on drop. Generous for the kernel
/// matrix: in its software-emulated guests Node.js once took over 10 s to listen.
pub fn spawn_ready(cmd: &mut Command, what: &str) -> KillOnDrop {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let out = child.stdout.take().unwrap();
    let child = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(out).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        // Keep draining, so that the process never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(l) if l.trim() == "ready" => child,
        other => panic!("{what} did not start: {other:?}"),
    }
}

/// Writes `text` to `dir/name`; its path.
pub fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The path of the file named `file_name` that process `pid` maps, as the process sees it.
pub fn mapped_file(pid: u32, file_name: &str) -> String {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| Path::new(p).file_name().and_then(|n| n.to_str()) == Some(file_name))
        .unwrap_or_else(|| panic!("process {pid} maps no {file_name}:\n{maps}"))
        .to_owned()
}

/// The files the OpenSSL uprobes are attached to.
pub fn attached(m: &Metrics) -> Vec<String> {
    attached_as(m, "openssl")
}

/// The files the uprobes of `library` (`openssl`, `go`) are attached to.
pub fn attached_as(m: &Metrics, library: &str) -> Vec<String> {
    m.find("collector_tls_attached", &[("library", library)])
        .iter()
        .filter(|s| s.value == 1.0)
        .map(|s| s.labels["path"].clone())
        .collect()
}

/// Waits up to 15 s until the collector reports the OpenSSL uprobes attached to `path`.
pub fn wait_attached(c: &Collector, path: &str) {
    wait_attached_as(c, "openssl", path)
}

/// Waits up to 15 s until the collector reports the uprobes of `library` attached to `path`.
pub fn wait_attached_as(c: &Collector, library: &str, path: &str) {
    let start = Instant::now();
    loop {
        let m = c.scrape();
        let now = attached_as(&m, library);
        if now.iter().any(|p| p == path) {
            eprintln!("{path} attached after {:?} (attached: {now:?})", start.elapsed());
            return;
        }
        if start.elapsed() > Duration::from_secs(15) {
            panic!("{path} not attached within 15 s; attached: {now:?}; log:\n{}", c.log_text());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Labels selecting one side's series of a server port and scheme (client series also by the
/// server's address), optionally one status code.
pub fn labels<'a>(side: &str, port: &'a str, scheme: &'a str, status: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut want = vec![("server_port", port), ("url_scheme", scheme)];
    if side == "client" {
        want.push(("server_address", "127.0.0.1"));
    }
    if !status.is_empty() {
        want.push(("http_response_status_code", status));
    }
    want
}

/// The sum over the series of `http_{side}_{family}` for a port, scheme and status ("" = all).
pub fn total(m: &Metrics, side: &str, family: &str, port: u16, scheme: &str, status: &str) -> f64 {
    let p = port.to_string();
    m.find(&format!("http_{side}_{family}"), &labels(side, &p, scheme, status)).iter().fold(0.0, |a, s| a + s.value)
}

/// Requests `side` counted for a port over TLS, per status ("" = all).
pub fn https_count(m: &Metrics, side: &str, port: u16, status: &str) -> f64 {
    total(m, side, "request_duration_seconds_count", port, "https", status)
}

/// Requests of a port on `side` whatever their scheme.
pub fn any_count(m: &Metrics, side: &str, port: u16) -> f64 {
    let p = port.to_string();
    m.find(&format!("http_{side}_request_duration_seconds_count"), &[("server_port", &p)])
        .iter()
        .fold(0.0, |a, s| a + s.value)
}

/// Exact counts per status on the given sides, all with `url_scheme="https"` (none counted
/// twice, none under another scheme or another status).
pub fn assert_https_counts(m: &Metrics, port: u16, want: &[(&str, f64)], sides: &[&str], what: &str) {
    for side in sides {
        for (status, n) in want {
            assert_eq!(https_count(m, side, port, status), *n, "{what}: {side} side, status {status}");
        }
        let all = want.iter().fold(0.0, |a, (_, n)| a + n);
        assert_eq!(any_count(m, side, port), all, "{what}: {side} side, all statuses and schemes");
    }
}

/// Nothing in flight on a port once every exchange completed.
pub fn assert_none_active(m: &Metrics, port: u16) {
    let active = m.find("http_server_active_requests", &[("server_port", &port.to_string())]);
    assert!(active.iter().all(|s| s.value == 0.0), "{active:?}");
}

/// Observations of a body size histogram above the largest bucket bound below `size`.
pub fn observations_above(m: &Metrics, name: &str, want: &[(&str, &str)], size: usize) -> f64 {
    let buckets = m.find(&format!("{name}_bucket"), want);
    let bound = |s: &common::Sample| s.labels["le"].parse::<f64>().unwrap();
    let below = buckets.iter().map(|s| bound(s)).filter(|b| *b < size as f64).fold(f64::NAN, f64::max);
    assert!(!below.is_nan(), "no {name} bucket below {size}: {buckets:?}");
    let at = |le: f64| buckets.iter().filter(|s| bound(s) == le).fold(0.0, |a, s| a + s.value);
    at(f64::INFINITY) - at(below)
}

/// No series of any HTTP family for a port, on either side, in any scheme.
pub fn assert_no_http_series(m: &Metrics, port: u16, what: &str) {
    let p = port.to_string();
    let found: Vec<_> =
        m.samples.iter().filter(|s| s.name.starts_with("http_") && s.labels.get("server_port") == Some(&p)).collect();
    assert!(found.is_empty(), "{what}: HTTP series for port {p}: {found:?}");
}

/// Parses the clients' output, one `status body-length [...]` line per request.
pub fn exchanges(out: &str) -> Vec<(u16, usize)> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            let status = f.next().unwrap().parse().unwrap_or_else(|_| panic!("bad client line {l:?} in:\n{out}"));
            let len = f.next().unwrap().parse().unwrap_or_else(|_| panic!("bad client line {l:?} in:\n{out}"));
            (status, len)
        })
        .collect()
}

/// The status a path gets from the Python and Node servers.
pub fn status_of(path: &str) -> u16 {
    if path == "/missing" { 404 } else { 200 }
}

/// Counts per status ("200", "404") of the paths.
pub fn expected(paths: &[&str]) -> Vec<(&'static str, f64)> {
    let ok = paths.iter().filter(|p| status_of(p) == 200).count() as f64;
    vec![("200", ok), ("404", paths.len() as f64 - ok)]
}

/// Checks that a client of the Python or Node server got the status and body each path gets.
pub fn check_exchanges(out: &str, paths: &[&str]) {
    let got = exchanges(out);
    let want: Vec<(u16, usize)> = paths.iter().map(|p| (status_of(p), body_len(p))).collect();
    assert_eq!(got, want, "client output:\n{out}");
}

/// An HTTPS server on Python's http.server: ThreadingHTTPServer, HTTP/1.1 keep-alive, a
/// Content-Length on every response, TCP_NODELAY (headers and body go in two writes, which
/// with Nagle's algorithm wait ~40 ms for the client's delayed ACK). `/ok` 200 "ok", `/delay`
/// 200 "delayed" after 10 ms, `/big` 200 with 10 MiB, anything else 404 "not found". The
/// handshake happens in the connection's thread. Prints `ready` once it listens.
pub const PY_SERVER: &str = r#"
import http.server, ssl, sys, time
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
BIG = b"x" * (10 << 20)
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def setup(self):
        self.request.do_handshake()
        super().setup()
    def log_message(self, *args):
        pass
    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/ok":
            self.reply(200, b"ok")
        elif self.path == "/delay":
            time.sleep(0.01)
            self.reply(200, b"delayed")
        elif self.path == "/big":
            self.reply(200, BIG)
        else:
            self.reply(404, b"not found")
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
print("ready", flush=True)
srv.serve_forever()
"#;

/// Python HTTPS clients, certificates unverified. `PORT keepalive PATH...`: http.client, every
/// request on one connection; `PORT new PATH...`: urllib.request.urlopen, a new connection per
/// request. Each prints `status body-length` per request. `PORT timed PATH N`: N requests on
/// one TLS connection (handshake done before the first), each timed with perf_counter from
/// just before the request is written to just after the last body byte is read; prints
/// `mean SECONDS`. A raw TLS socket rather than http.client, whose own Python work around the
/// reads and writes (~0.5 ms a request here) no collector can see; blocking reads rather than
/// busy-polling, which in Python starves the server on a small machine (requests delayed by
/// milliseconds before the server reads them).
pub const PY_CLIENT: &str = r#"
import http.client, socket, ssl, sys, time, urllib.error, urllib.request
port, mode, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def connection():
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
    conn.connect()
    return conn
if mode == "keepalive":
    conn = connection()
    sock = conn.sock
    for path in args:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        assert conn.sock is sock, "the connection was not kept alive"
        print(r.status, len(body), flush=True)
    conn.close()
elif mode == "new":
    for path in args:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=20) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        print(status, len(body), flush=True)
elif mode == "timed":
    path, n = args[0], int(args[1])
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        s.sendall(request)
        got = b""
        while True:
            chunk = s.recv(1 << 16)
            assert chunk, "connection closed during a response"
            got += chunk
            end = got.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = got[:end].decode().lower().split("\r\n")
            length = int(next(h.split(":")[1] for h in head if h.startswith("content-length:")))
            if len(got) >= end + 4 + length:
                assert len(got) == end + 4 + length, "one response at a time"
                break
        lat.append(time.perf_counter() - t)
        assert got.startswith(b"HTTP/1.1 200 "), got[:40]
    s.close()
    print("mean", sum(lat) / n)
else:
    sys.exit(f"unknown mode {mode}")
"#;

/// Body lengths the Python and Node servers send per path.
pub fn body_len(path: &str) -> usize {
    match path {
        "/ok" => 2,
        "/delay" => 7,
        "/big" => BIG,
        _ => 9,
    }
}

/// Python, with the libssl.so.3 of directory `lib` when given (LD_LIBRARY_PATH).
pub fn python(lib: Option<&Path>) -> Command {
    let mut cmd = Command::new(PYTHON);
    if let Some(lib) = lib {
        cmd.env("LD_LIBRARY_PATH", lib);
    }
    cmd
}

/// A private copy of the system's libssl.so.3 in `dir/lib`: a file no process maps before the
/// test; its directory.
pub fn private_libssl(dir: &Path) -> PathBuf {
    let out = run_ok(Command::new(PYTHON).args([
        "-c",
        "import ssl; print(next(l.split()[5] for l in open('/proc/self/maps') if l.rstrip().endswith('/libssl.so.3')))",
    ]));
    let lib = dir.join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::copy(out.trim(), lib.join("libssl.so.3")).unwrap();
    lib
}

/// Python's HTTPS server ([`python_server`], the system's libssl.so.3) started before a
/// collector (`FAST`), returned once the collector's probes are on the library the server maps.
pub fn python_server_then_collector(dir: &Path, cert: &Cert) -> (KillOnDrop, u16, Collector) {
    let (srv, port) = python_server(dir, cert, None);
    let c = Collector::start(common::FAST);
    wait_attached(&c, &mapped_file(srv.id(), "libssl.so.3"));
    (srv, port, c)
}

/// A Python HTTPS server on a free port; (guard, port).
pub fn python_server(dir: &Path, cert: &Cert, lib: Option<&Path>) -> (KillOnDrop, u16) {
    let srv = script(dir, "server.py", PY_SERVER);
    let port = free_port();
    let p = spawn_ready(
        python(lib).arg(&srv).arg(port.to_string()).arg(&cert.cert).arg(&cert.key),
        "the Python HTTPS server",
    );
    (p, port)
}

/// Runs the Python client (a new process) to completion; its stdout.
pub fn python_client(dir: &Path, port: u16, mode: &str, args: &[&str], lib: Option<&Path>) -> String {
    let cl = script(dir, "client.py", PY_CLIENT);
    let out = python(lib)
        .arg(&cl)
        .arg(port.to_string())
        .arg(mode)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "Python client {mode} {args:?} failed:\n{text}");
    text
}

/// Runs the Python client with `paths` and checks what it got; the counts to expect.
pub fn python_exchanges(
    dir: &Path,
    port: u16,
    mode: &str,
    paths: &[&str],
    lib: Option<&Path>,
) -> Vec<(&'static str, f64)> {
    let out = python_client(dir, port, mode, paths, lib);
    check_exchanges(&out, paths);
    expected(paths)
}

/// Keep-alive requests on one connection, then a new connection per request.
pub const PY_KEEPALIVE: &[&str] =
    &["/ok", "/ok", "/missing", "/ok", "/big", "/ok", "/missing", "/delay", "/ok", "/ok", "/missing", "/ok", "/ok"];

pub const PY_NEW: &[&str] = &["/ok", "/missing", "/ok", "/ok", "/missing", "/ok"];

pub fn sum_counts(a: &[(&'static str, f64)], b: &[(&'static str, f64)]) -> Vec<(&'static str, f64)> {
    a.iter().map(|(s, n)| (*s, n + b.iter().find(|(t, _)| t == s).map_or(0.0, |(_, m)| *m))).collect()
}

/// The mean of the clients' per-request seconds (the last field of each output line).
pub fn mean_seconds(out: &str) -> f64 {
    let secs: Vec<f64> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().last().unwrap().parse().unwrap_or_else(|_| panic!("bad line {l:?} in:\n{out}")))
        .collect();
    assert!(!secs.is_empty(), "no client output");
    secs.iter().sum::<f64>() / secs.len() as f64
}

/// The mean of `side`'s durations of the `n` GET exchanges with status 200 on server port
/// `port` over `scheme` counted between the scrapes `before` and `after`.
pub fn histogram_mean(before: &Metrics, after: &Metrics, side: &str, port: u16, scheme: &str, n: usize) -> f64 {
    let p = port.to_string();
    let mut want = labels(side, &p, scheme, "200");
    want.push(("http_request_method", "GET"));
    common::mean_between(before, after, &format!("http_{side}_request_duration_seconds"), &want, n)
}

/// Both sides' histograms of `port` (GET, 200, https) gained `n` exchanges between the scrapes
/// `before` and `after`, whose means agree with `client_mean` (what the client measured) under
/// the tests' noise model, `null` being the same client's mean for null exchanges.
pub fn assert_means_agree(
    before: &Metrics,
    after: &Metrics,
    port: u16,
    n: usize,
    client_mean: f64,
    null: f64,
    what: &str,
) {
    for side in ["server", "client"] {
        let mean = histogram_mean(before, after, side, port, "https", n);
        common::assert_agrees(&format!("{what} over TLS, {side} side"), mean, client_mean, null);
    }
}
