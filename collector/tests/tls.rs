//! HTTPS measured through uprobes on OpenSSL (libssl.so.3, and binaries that link it in, as
//! node does; OpenSSL 1.1's and BoringSSL's libssl.so through a ctypes harness) and Go's
//! crypto/tls: nginx with curl, Python's http.server with http.client and urllib, and Node's
//! https module count exactly per status code on both sides with `url_scheme="https"`; durations
//! agree with what the client measured (Python, Node.js, Go, OpenSSL 1.1, BoringSSL); a process started after the collector is covered; TLS
//! that is not HTTP makes no series; `--no-collector.http.tls` turns the capture off.
mod common;

#[path = "common/http.rs"]
mod http_util;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{
    Collector, FAST, Metrics,
    process::{KillOnDrop, free_port, run_ok, wait_port},
};
use http_util::{Client, TestServer};

const PYTHON: &str = "/usr/bin/python3";
const CURL: &str = "/usr/bin/curl";
const NGINX: &str = "/usr/sbin/nginx";

/// The large response of every server: 10 MiB.
const BIG: usize = 10 << 20;

/// A self-signed certificate and its key, made with the openssl command line tool.
struct Cert {
    cert: PathBuf,
    key: PathBuf,
}

fn make_cert(dir: &Path) -> Cert {
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

/// Starts `cmd` with its stdout piped and waits up to 10 s for its first line, which must be
/// `ready` (the servers print it once they listen); killed on drop.
fn spawn_ready(cmd: &mut Command, what: &str) -> KillOnDrop {
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
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(l) if l.trim() == "ready" => child,
        other => panic!("{what} did not start: {other:?}"),
    }
}

/// Writes `text` to `dir/name`; its path.
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The path of the file named `file_name` that process `pid` maps, as the process sees it.
fn mapped_file(pid: u32, file_name: &str) -> String {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| Path::new(p).file_name().and_then(|n| n.to_str()) == Some(file_name))
        .unwrap_or_else(|| panic!("process {pid} maps no {file_name}:\n{maps}"))
        .to_owned()
}

/// The files the OpenSSL uprobes are attached to.
fn attached(m: &Metrics) -> Vec<String> {
    attached_as(m, "openssl")
}

/// The files the uprobes of `library` (`openssl`, `go`) are attached to.
fn attached_as(m: &Metrics, library: &str) -> Vec<String> {
    m.find("collector_tls_attached", &[("library", library)])
        .iter()
        .filter(|s| s.value == 1.0)
        .map(|s| s.labels["path"].clone())
        .collect()
}

/// Waits up to 15 s until the collector reports the OpenSSL uprobes attached to `path`.
fn wait_attached(c: &Collector, path: &str) {
    wait_attached_as(c, "openssl", path)
}

/// Waits up to 15 s until the collector reports the uprobes of `library` attached to `path`.
fn wait_attached_as(c: &Collector, library: &str, path: &str) {
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
fn labels<'a>(side: &str, port: &'a str, scheme: &'a str, status: &'a str) -> Vec<(&'a str, &'a str)> {
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
fn total(m: &Metrics, side: &str, family: &str, port: u16, scheme: &str, status: &str) -> f64 {
    let p = port.to_string();
    m.find(&format!("http_{side}_{family}"), &labels(side, &p, scheme, status)).iter().fold(0.0, |a, s| a + s.value)
}

/// Requests `side` counted for a port over TLS, per status ("" = all).
fn https_count(m: &Metrics, side: &str, port: u16, status: &str) -> f64 {
    total(m, side, "request_duration_seconds_count", port, "https", status)
}

/// Requests of a port on `side` whatever their scheme.
fn any_count(m: &Metrics, side: &str, port: u16) -> f64 {
    let p = port.to_string();
    m.find(&format!("http_{side}_request_duration_seconds_count"), &[("server_port", &p)])
        .iter()
        .fold(0.0, |a, s| a + s.value)
}

/// Exact counts per status on the given sides, all with `url_scheme="https"` (none counted
/// twice, none under another scheme or another status).
fn assert_https_counts(m: &Metrics, port: u16, want: &[(&str, f64)], sides: &[&str], what: &str) {
    for side in sides {
        for (status, n) in want {
            assert_eq!(https_count(m, side, port, status), *n, "{what}: {side} side, status {status}");
        }
        let all = want.iter().fold(0.0, |a, (_, n)| a + n);
        assert_eq!(any_count(m, side, port), all, "{what}: {side} side, all statuses and schemes");
    }
}

/// Nothing in flight on a port once every exchange completed.
fn assert_none_active(m: &Metrics, port: u16) {
    let active = m.find("http_server_active_requests", &[("server_port", &port.to_string())]);
    assert!(active.iter().all(|s| s.value == 0.0), "{active:?}");
}

/// Observations of a body size histogram above the largest bucket bound below `size`.
fn observations_above(m: &Metrics, name: &str, want: &[(&str, &str)], size: usize) -> f64 {
    let buckets = m.find(&format!("{name}_bucket"), want);
    let bound = |s: &common::Sample| s.labels["le"].parse::<f64>().unwrap();
    let below = buckets.iter().map(|s| bound(s)).filter(|b| *b < size as f64).fold(f64::NAN, f64::max);
    assert!(!below.is_nan(), "no {name} bucket below {size}: {buckets:?}");
    let at = |le: f64| buckets.iter().filter(|s| bound(s) == le).fold(0.0, |a, s| a + s.value);
    at(f64::INFINITY) - at(below)
}

/// No series of any HTTP family for a port, on either side, in any scheme.
fn assert_no_http_series(m: &Metrics, port: u16, what: &str) {
    let p = port.to_string();
    let found: Vec<_> =
        m.samples.iter().filter(|s| s.name.starts_with("http_") && s.labels.get("server_port") == Some(&p)).collect();
    assert!(found.is_empty(), "{what}: HTTP series for port {p}: {found:?}");
}

/// Parses the clients' output, one `status body-length [...]` line per request.
fn exchanges(out: &str) -> Vec<(u16, usize)> {
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
fn status_of(path: &str) -> u16 {
    if path == "/missing" { 404 } else { 200 }
}

/// Counts per status ("200", "404") of the paths.
fn expected(paths: &[&str]) -> Vec<(&'static str, f64)> {
    let ok = paths.iter().filter(|p| status_of(p) == 200).count() as f64;
    vec![("200", ok), ("404", paths.len() as f64 - ok)]
}

/// Checks that a client of the Python or Node server got the status and body each path gets.
fn check_exchanges(out: &str, paths: &[&str]) {
    let got = exchanges(out);
    let want: Vec<(u16, usize)> = paths.iter().map(|p| (status_of(p), body_len(p))).collect();
    assert_eq!(got, want, "client output:\n{out}");
}

// ---------------------------------------------------------------------------------------------
// Python

/// An HTTPS server on Python's http.server: ThreadingHTTPServer, HTTP/1.1 keep-alive, a
/// Content-Length on every response, TCP_NODELAY (headers and body go in two writes, which
/// with Nagle's algorithm wait ~40 ms for the client's delayed ACK). `/ok` 200 "ok", `/delay`
/// 200 "delayed" after 10 ms, `/big` 200 with 10 MiB, anything else 404 "not found". The
/// handshake happens in the connection's thread. Prints `ready` once it listens.
const PY_SERVER: &str = r#"
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
const PY_CLIENT: &str = r#"
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
fn body_len(path: &str) -> usize {
    match path {
        "/ok" => 2,
        "/delay" => 7,
        "/big" => BIG,
        _ => 9,
    }
}

/// Python, with the libssl.so.3 of directory `lib` when given (LD_LIBRARY_PATH).
fn python(lib: Option<&Path>) -> Command {
    let mut cmd = Command::new(PYTHON);
    if let Some(lib) = lib {
        cmd.env("LD_LIBRARY_PATH", lib);
    }
    cmd
}

/// A private copy of the system's libssl.so.3 in `dir/lib`: a file no process maps before the
/// test; its directory.
fn private_libssl(dir: &Path) -> PathBuf {
    let out = run_ok(Command::new(PYTHON).args([
        "-c",
        "import ssl; print(next(l.split()[5] for l in open('/proc/self/maps') if l.rstrip().endswith('/libssl.so.3')))",
    ]));
    let lib = dir.join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::copy(out.trim(), lib.join("libssl.so.3")).unwrap();
    lib
}

/// A Python HTTPS server on a free port; (guard, port).
fn python_server(dir: &Path, cert: &Cert, lib: Option<&Path>) -> (KillOnDrop, u16) {
    let srv = script(dir, "server.py", PY_SERVER);
    let port = free_port();
    let p = spawn_ready(
        python(lib).arg(&srv).arg(port.to_string()).arg(&cert.cert).arg(&cert.key),
        "the Python HTTPS server",
    );
    (p, port)
}

/// Runs the Python client (a new process) to completion; its stdout.
fn python_client(dir: &Path, port: u16, mode: &str, args: &[&str], lib: Option<&Path>) -> String {
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
fn python_exchanges(dir: &Path, port: u16, mode: &str, paths: &[&str], lib: Option<&Path>) -> Vec<(&'static str, f64)> {
    let out = python_client(dir, port, mode, paths, lib);
    check_exchanges(&out, paths);
    expected(paths)
}

/// Keep-alive requests on one connection, then a new connection per request.
const PY_KEEPALIVE: &[&str] =
    &["/ok", "/ok", "/missing", "/ok", "/big", "/ok", "/missing", "/delay", "/ok", "/ok", "/missing", "/ok", "/ok"];
const PY_NEW: &[&str] = &["/ok", "/missing", "/ok", "/ok", "/missing", "/ok"];

fn sum_counts(a: &[(&'static str, f64)], b: &[(&'static str, f64)]) -> Vec<(&'static str, f64)> {
    a.iter().map(|(s, n)| (*s, n + b.iter().find(|(t, _)| t == s).map_or(0.0, |(_, m)| *m))).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

/// nginx (libssl.so.3) serving TLS to curl (libssl.so.3 too): several requests per connection
/// and new connections, a 404 and a 10 MiB static file, counted exactly on both sides.
#[test]
fn nginx_and_curl_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let root = d.join("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("big.bin"), vec![7u8; BIG]).unwrap();
    let port = free_port();
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log {d}/access.log; default_type text/plain; sendfile on;\n\
               keepalive_timeout 30; keepalive_requests 1000;\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen 127.0.0.1:{port} ssl; root {root};\n\
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
    run_ok(Command::new(NGINX).arg("-t").arg("-c").arg(&conf));
    let c = Collector::start(FAST);
    let nginx = KillOnDrop(Command::new(NGINX).arg("-c").arg(&conf).spawn().expect("nginx (Debian package) installed"));
    wait_port(port);
    wait_attached(&c, &mapped_file(nginx.id(), "libssl.so.3"));

    let base = format!("https://127.0.0.1:{port}");
    // One invocation with several URLs: curl reuses its connection for all of them.
    let curl = |paths: &[&str]| -> Vec<(u16, usize, u32)> {
        let mut cmd = Command::new(CURL);
        cmd.args(["-sS", "-k", "--http1.1", "-w", "%{http_code} %{size_download} %{num_connects}\\n"]);
        for p in paths {
            cmd.arg("-o").arg("/dev/null").arg(format!("{base}{p}"));
        }
        let out = run_ok(&mut cmd);
        let got: Vec<(u16, usize, u32)> = out
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap())
            })
            .collect();
        assert_eq!(got.len(), paths.len(), "curl output:\n{out}");
        got
    };
    let reused = ["/ok", "/missing", "/ok", "/big.bin", "/ok", "/missing", "/ok"];
    let mut got = curl(&reused);
    let connects: Vec<u32> = got.iter().map(|g| g.2).collect();
    assert_eq!(connects, [1, 0, 0, 0, 0, 0, 0], "curl reuses its connection: {got:?}");
    for _ in 0..3 {
        got.extend(curl(&["/ok"]));
    }
    let statuses: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(statuses, [200, 404, 200, 200, 200, 404, 200, 200, 200, 200]);
    assert_eq!(got[3].1, BIG, "the 10 MiB file");
    let ok_bodies: usize = got.iter().filter(|g| g.0 == 200).map(|g| g.1).sum();
    let missing_bodies: usize = got.iter().filter(|g| g.0 == 404).map(|g| g.1).sum();
    eprintln!("nginx bodies: {got:?}");

    let m = c.scrape();
    assert_https_counts(&m, port, &[("200", 8.0), ("404", 2.0)], &["server", "client"], "nginx/curl");
    let p = port.to_string();
    for side in ["server", "client"] {
        // nginx sends exactly the file: the 200 bodies are 7 x "ok" and the 10 MiB.
        let name = format!("http_{side}_response_body_size_bytes");
        assert_eq!(total(&m, side, "response_body_size_bytes_sum", port, "https", "200"), ok_bodies as f64, "{side}");
        assert_eq!(total(&m, side, "response_body_size_bytes_count", port, "https", "200"), 8.0, "{side}");
        // nginx's own error page.
        let missing = total(&m, side, "response_body_size_bytes_sum", port, "https", "404");
        assert_eq!(missing, missing_bodies as f64, "{side}");
        // The large response counts once, in one bucket.
        let want = labels(side, &p, "https", "200");
        assert_eq!(observations_above(&m, &name, &want, BIG), 1.0, "{side}: one body of 10 MiB");
        // GETs without bodies.
        assert_eq!(total(&m, side, "request_body_size_bytes_sum", port, "https", ""), 0.0, "{side}");
    }
    assert_none_active(&m, port);
}

/// Python's http.server over TLS, with http.client on one keep-alive connection and urllib
/// with a new connection per request (both Python, libssl.so.3): exact counts on both sides,
/// the 10 MiB body once. The server starts before the collector.
#[test]
fn python_https_server_and_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let (srv, port) = python_server(d, &cert, None);
    let c = Collector::start(FAST);
    wait_attached(&c, &mapped_file(srv.id(), "libssl.so.3"));

    let a = python_exchanges(d, port, "keepalive", PY_KEEPALIVE, None);
    let b = python_exchanges(d, port, "new", PY_NEW, None);
    let want = sum_counts(&a, &b);
    assert_eq!(want, [("200", 14.0), ("404", 5.0)]);
    let m = c.scrape();
    assert_https_counts(&m, port, &want, &["server", "client"], "Python");
    let ok_bodies: usize = PY_KEEPALIVE.iter().chain(PY_NEW).filter(|p| status_of(p) == 200).map(|p| body_len(p)).sum();
    let p = port.to_string();
    for side in ["server", "client"] {
        assert_eq!(total(&m, side, "response_body_size_bytes_sum", port, "https", "200"), ok_bodies as f64, "{side}");
        assert_eq!(total(&m, side, "response_body_size_bytes_sum", port, "https", "404"), 5.0 * 9.0, "{side}");
        let name = format!("http_{side}_response_body_size_bytes");
        assert_eq!(observations_above(&m, &name, &labels(side, &p, "https", "200"), BIG), 1.0, "{side}");
        let get = m.find(
            &format!("http_{side}_request_duration_seconds_count"),
            &[("server_port", &p), ("url_scheme", "https"), ("http_request_method", "GET")],
        );
        assert_eq!(get.iter().fold(0.0, |a, s| a + s.value), 19.0, "{side}: all GET");
    }
    assert_none_active(&m, port);
}

/// 50 requests the Python server holds 10 ms each, on one TLS connection: the server and
/// client histograms' means agree with the client's own measurement under the tests' noise
/// model (`common::assert_agrees`; the null exchanges: 20 of `/ok` by the same client).
#[test]
fn python_https_durations_agree_with_client_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let c = Collector::start(FAST);
    let (srv, port) = python_server(d, &cert, None);
    wait_attached(&c, &mapped_file(srv.id(), "libssl.so.3"));
    let null = mean_seconds(&python_client(d, port, "timed", &["/ok", "20"], None));
    let before = c.scrape();
    let n = 50;
    let out = python_client(d, port, "timed", &["/delay", &n.to_string()], None);
    assert_means_agree(&before, &c.scrape(), port, n, mean_seconds(&out), null, "Python");
}

/// A Python HTTPS server that is busy for DELAY seconds between the arrival of each request
/// and its read of it (`PORT CERT KEY DELAY`; every request is answered `200 ok` at once after
/// the read).
const LATE_READER: &str = r#"
import select, socket, ssl, sys, time
port, cert, key, delay = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.create_server(("127.0.0.1", port))
print("ready", flush=True)
while True:
    raw, _ = ls.accept()
    with ctx.wrap_socket(raw, server_side=True) as s:
        while True:
            if not s.pending():
                select.select([s], [], [])
            time.sleep(delay)
            data = s.recv(65536)
            if not data:
                break
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
"#;

/// A server that reads its requests 30 ms after they arrive: the server side counts the wait,
/// as over cleartext (a TLS server's request starts when its bytes arrive at the host, not when
/// the read returns them), and agrees with curl's clock on the same keep-alive connection under
/// the tests' noise model (the null exchanges: the same curl command against the same server
/// reading at once).
#[test]
fn a_server_that_reads_its_request_late_counts_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let c = Collector::start(FAST);
    let late = script(d, "late.py", LATE_READER);
    const N: usize = 11;
    // curl's seconds per request after the first (which holds the connection and the
    // handshake), N requests on one connection to a server reading each `delay` after it came.
    let curl = |delay: &str| -> (u16, KillOnDrop, String) {
        let port = free_port();
        let srv = spawn_ready(
            Command::new(PYTHON).arg(&late).arg(port.to_string()).arg(&cert.cert).arg(&cert.key).arg(delay),
            "the late-reading server",
        );
        wait_attached(&c, &mapped_file(srv.id(), "libssl.so.3"));
        let mut cmd = Command::new(CURL);
        cmd.args(["-sS", "-k", "--http1.1", "-w", "%{http_code} %{size_download} %{time_total}\\n"]);
        for _ in 0..N {
            cmd.arg("-o").arg("/dev/null").arg(format!("https://127.0.0.1:{port}/x"));
        }
        let out = run_ok(&mut cmd);
        assert_eq!(out.lines().filter(|l| l.starts_with("200 2 ")).count(), N, "curl output:\n{out}");
        (port, srv, out.lines().skip(1).collect::<Vec<_>>().join("\n"))
    };
    let (_, null_srv, null_out) = curl("0");
    drop(null_srv);
    let before = c.scrape();
    let (port, _srv, later) = curl("0.03");
    let client_mean = mean_seconds(&later);
    assert!(client_mean >= 0.03, "curl: {client_mean} s per request, the server waits 30 ms");
    // All N exchanges are counted; the first is left out of the means, as of curl's.
    assert_eq!(https_count(&c.scrape(), "server", port, "200"), N as f64);
    let m = c.scrape();
    for side in ["server", "client"] {
        let p = port.to_string();
        let mut want = labels(side, &p, "https", "200");
        want.push(("http_request_method", "GET"));
        let name = format!("http_{side}_request_duration_seconds");
        let (count, sum) = common::histogram_totals(&m, &name, &want);
        let (c0, s0) = common::histogram_totals(&before, &name, &want);
        assert_eq!(count - c0, N as f64, "{side} count");
        // The mean of the N, against curl's mean of the N - 1 after the first: the first's
        // handshake is before its request starts on either side, so it is not in the sum.
        let mean = (sum - s0) / N as f64;
        common::assert_agrees(
            &format!("a late-reading Python server, {side} side"),
            mean,
            client_mean,
            mean_seconds(&null_out),
        );
    }
}

/// Both sides' histograms of `port` (GET, 200, https) gained `n` exchanges between the scrapes
/// `before` and `after`, whose means agree with `client_mean` (what the client measured) under
/// the tests' noise model, `null` being the same client's mean for null exchanges.
fn assert_means_agree(before: &Metrics, after: &Metrics, port: u16, n: usize, client_mean: f64, null: f64, what: &str) {
    for side in ["server", "client"] {
        let mean = histogram_mean(before, after, side, port, "https", n);
        common::assert_agrees(&format!("{what} over TLS, {side} side"), mean, client_mean, null);
    }
}

/// The mean of `side`'s durations of the `n` GET exchanges with status 200 on server port
/// `port` over `scheme` counted between the scrapes `before` and `after`.
fn histogram_mean(before: &Metrics, after: &Metrics, side: &str, port: u16, scheme: &str, n: usize) -> f64 {
    let p = port.to_string();
    let mut want = labels(side, &p, scheme, "200");
    want.push(("http_request_method", "GET"));
    common::mean_between(before, after, &format!("http_{side}_request_duration_seconds"), &want, n)
}

/// The mean of the clients' per-request seconds (the last field of each output line).
fn mean_seconds(out: &str) -> f64 {
    let secs: Vec<f64> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().last().unwrap().parse().unwrap_or_else(|_| panic!("bad line {l:?} in:\n{out}")))
        .collect();
    assert!(!secs.is_empty(), "no client output");
    secs.iter().sum::<f64>() / secs.len() as f64
}

/// A Node.js HTTPS server: same paths as the Python one. Prints `ready` once it listens.
/// `PORT CERT KEY [plain]`: with `plain`, the same handler over cleartext HTTP.
const NODE_SERVER: &str = r#"
const https = require('https');
const fs = require('fs');
const [port, cert, key, plain] = process.argv.slice(2);
const big = Buffer.alloc(10 << 20, 120);
const handle = (req, res) => {
  const send = (status, body) => {
    res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body);
  };
  if (req.url === '/ok') send(200, Buffer.from('ok'));
  else if (req.url === '/delay') setTimeout(() => send(200, Buffer.from('delayed')), 10);
  else if (req.url === '/big') send(200, big);
  else send(404, Buffer.from('not found'));
};
const server = plain === 'plain'
  ? require('http').createServer(handle)
  : https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, handle);
server.keepAliveTimeout = 30000;
server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
"#;

/// A Node.js HTTPS client, certificate unverified: `PORT PATH...`, one request after the other
/// through an agent with keepAlive (one socket); prints `status body-length reused` each.
const NODE_CLIENT: &str = r#"
const https = require('https');
const [port, ...paths] = process.argv.slice(2);
const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
function get(path) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: Number(port), path, agent, rejectUnauthorized: false }, (res) => {
      let n = 0;
      res.on('data', (chunk) => { n += chunk.length; });
      res.on('end', () => resolve(`${res.statusCode} ${n} ${req.reusedSocket ? 1 : 0}`));
    });
    req.on('error', reject);
    req.setTimeout(20000, () => req.destroy(new Error('timeout')));
  });
}
(async () => {
  for (const p of paths) console.log(await get(p));
  agent.destroy();
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// A Node.js TLS client timing requests without the https module (its own work around the
/// reads and writes, which no collector can see, took milliseconds a request here):
/// `PORT PATH N [plain]`, N requests on one `tls` socket (with `plain`, a cleartext one), each
/// timed from just before it is written to the data event that completes its response; prints
/// `status body-length seconds` each.
const NODE_TIMED: &str = r#"
const [port, path, n, plain] = process.argv.slice(2);
const opts = { host: '127.0.0.1', port: Number(port), rejectUnauthorized: false };
const connect = (ready) => plain === 'plain' ? require('net').connect(opts, ready) : require('tls').connect(opts, ready);
const sock = connect(async () => {
  sock.setNoDelay(true);
  let buf = Buffer.alloc(0);
  let wake = null;
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); if (wake) wake(); });
  const request = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  for (let i = 0; i < Number(n); i++) {
    const t = process.hrtime.bigint();
    sock.write(request);
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      const m = end >= 0 ? /content-length:\s*(\d+)/i.exec(buf.subarray(0, end).toString()) : null;
      if (m && buf.length >= end + 4 + Number(m[1])) {
        const secs = Number(process.hrtime.bigint() - t) / 1e9;
        console.log(`${buf.subarray(9, 12).toString()} ${m[1]} ${secs}`);
        buf = buf.subarray(end + 4 + Number(m[1]));
        break;
      }
      await new Promise((r) => { wake = r; });
      wake = null;
    }
  }
  sock.end();
});
sock.on('error', (e) => { console.error(e); process.exit(1); });
"#;

/// Node.js (OpenSSL linked into /usr/bin/node, no libssl.so) as HTTPS server and keep-alive
/// client: the uprobes attach to the node binary and count exactly on both sides.
#[test]
fn node_https_server_and_keep_alive_client() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let c = Collector::start(FAST);
    let port = free_port();
    let srv = spawn_ready(
        Command::new("node")
            .arg(script(d, "server.js", NODE_SERVER))
            .arg(port.to_string())
            .arg(&cert.cert)
            .arg(&cert.key),
        "the Node.js HTTPS server",
    );
    let node = std::fs::read_link(format!("/proc/{}/exe", srv.id())).unwrap().display().to_string();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", srv.id())).unwrap();
    assert!(!maps.contains("libssl"), "node is expected to link OpenSSL statically");
    assert_eq!(mapped_file(srv.id(), Path::new(&node).file_name().unwrap().to_str().unwrap()), node);
    wait_attached(&c, &node);

    let client = script(d, "client.js", NODE_CLIENT);
    let runs: [&[&str]; 2] = [
        &["/ok", "/ok", "/missing", "/delay", "/ok", "/big", "/ok", "/missing", "/delay", "/ok", "/ok", "/ok"],
        &["/ok", "/missing", "/ok", "/delay"],
    ];
    let mut want = vec![("200", 0.0), ("404", 0.0)];
    for paths in runs {
        let out = run_ok(Command::new("node").arg(&client).arg(port.to_string()).args(paths));
        check_exchanges(&out, paths);
        // Every request after the first on the one kept-alive socket.
        let reused: Vec<&str> = out.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
        let mut want_reused = vec!["1"; paths.len()];
        want_reused[0] = "0";
        assert_eq!(reused, want_reused, "node client output:\n{out}");
        want = sum_counts(&want, &expected(paths));
    }
    assert_eq!(want, [("200", 13.0), ("404", 3.0)]);
    let m = c.scrape();
    assert_https_counts(&m, port, &want, &["server", "client"], "Node.js");
    let p = port.to_string();
    for side in ["server", "client"] {
        let name = format!("http_{side}_response_body_size_bytes");
        assert_eq!(observations_above(&m, &name, &labels(side, &p, "https", "200"), BIG), 1.0, "{side}");
        let ok_bodies: usize =
            runs.iter().flat_map(|r| r.iter()).filter(|p| status_of(p) == 200).map(|p| body_len(p)).sum();
        assert_eq!(total(&m, side, "response_body_size_bytes_sum", port, "https", "200"), ok_bodies as f64, "{side}");
    }
    assert_none_active(&m, port);
}

/// Processes started after the collector, with a private copy of libssl.so.3 that no process
/// mapped before: the collector finds the first server's copy by scanning /proc and attaches
/// to it; a second server and the clients, new processes started after the attach, are covered
/// at once (no waiting).
#[test]
fn processes_started_after_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let lib = private_libssl(d);
    let c = Collector::start(FAST);
    let copy = lib.join("libssl.so.3").display().to_string();
    let before = attached(&c.scrape());
    assert!(!before.contains(&copy), "{before:?}");
    let (first, port1) = python_server(d, &cert, Some(&lib));
    assert_eq!(mapped_file(first.id(), "libssl.so.3"), copy, "the server uses the private copy");
    wait_attached(&c, &copy);
    let (second, port2) = python_server(d, &cert, Some(&lib));
    assert_eq!(mapped_file(second.id(), "libssl.so.3"), copy);
    let paths = ["/ok", "/missing", "/ok", "/delay", "/ok"];
    let want2 = python_exchanges(d, port2, "keepalive", &paths, Some(&lib));
    let want1 = sum_counts(
        &python_exchanges(d, port1, "keepalive", &paths, Some(&lib)),
        &python_exchanges(d, port1, "new", &paths, Some(&lib)),
    );
    let m = c.scrape();
    assert_https_counts(&m, port2, &want2, &["server", "client"], "server and client started after the attach");
    assert_https_counts(&m, port1, &want1, &["server", "client"], "server attached by the scan");
}

/// Waits up to 15 s until `cond` holds of a scrape (`what` for the failure).
fn wait_for(c: &Collector, what: &str, cond: impl Fn(&Metrics) -> bool) {
    let start = Instant::now();
    loop {
        let m = c.scrape();
        if cond(&m) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not within 15 s: {what}; attached: {:?}; log:\n{}",
            attached(&m),
            c.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Processes mapping the attached file `path`, at the collector's last scan.
fn processes_of(m: &Metrics, path: &str) -> f64 {
    m.get_or_zero("collector_tls_processes", &[("library", "openssl"), ("path", path)])
}

/// Files detached for `reason` (deleted, replaced, evicted).
fn detached_for(m: &Metrics, reason: &str) -> f64 {
    m.get("collector_tls_detached_files_total", &[("reason", reason)])
}

/// Clients that start after the collector and are done in a fraction of the scan interval are
/// counted from their first request, every time: the host's libssl is attached at start-up,
/// whether or not a process maps it, and a library attached once keeps its probes while it
/// exists, used or not, so that a process mapping it later runs into them from its first call
/// (no attach races the client). Each client here uses a private copy of libssl, attached while
/// a first process mapped it and then mapped by none.
#[test]
fn short_lived_clients_are_counted_from_their_first_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let lib = private_libssl(d);
    let copy = lib.join("libssl.so.3").display().to_string();
    let c = Collector::start(FAST);
    // The host's libssl.so.3, before any scan: attached at start-up.
    let host = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libssl.so.3").unwrap();
    let now = attached(&c.scrape());
    assert!(now.iter().any(|p| std::fs::canonicalize(p).ok().as_ref() == Some(&host)), "{now:?}");
    let (srv, port) = python_server(d, &cert, None);
    wait_attached(&c, &mapped_file(srv.id(), "libssl.so.3"));
    // Short-lived clients with the host's library.
    let paths = ["/ok", "/missing", "/ok"];
    let mut want = vec![("200", 0.0), ("404", 0.0)];
    for _ in 0..3 {
        want = sum_counts(&want, &python_exchanges(d, port, "new", &paths, None));
    }
    // A process that maps the copy, so that a scan attaches it; then gone, and the probes stay.
    let holder = spawn_ready(
        python(Some(&lib)).args(["-c", "import ssl, time; print('ready', flush=True); time.sleep(600)"]),
        "a process mapping the copy",
    );
    wait_attached(&c, &copy);
    drop(holder);
    wait_for(&c, "no process maps the copy", |m| processes_of(m, &copy) == 0.0);
    std::thread::sleep(Duration::from_secs(2));
    assert!(attached(&c.scrape()).contains(&copy), "the probes stay on a file no process maps");
    for _ in 0..6 {
        let started = Instant::now();
        want = sum_counts(&want, &python_exchanges(d, port, "new", &paths, Some(&lib)));
        eprintln!("a client with the copy ran for {:?}", started.elapsed());
    }
    let m = c.scrape();
    assert_https_counts(&m, port, &want, &["server", "client"], "short-lived clients started after the collector");
    assert_eq!(detached_for(&m, "evicted") + detached_for(&m, "deleted") + detached_for(&m, "replaced"), 0.0);
}

/// Probes leave a file once it is gone and no process maps it: deleted (while a process maps
/// it, it stays attached and shows as `PATH (deleted)`), replaced by another file under its
/// name (an upgrade: the new file is attached at once, before any process maps it), and past
/// `--collector.http.tls-max-files` the least recently used file that no process maps is
/// evicted (the host's libraries are not); a process opening an evicted file has it attached
/// again. Each is counted.
#[test]
fn attached_files_leave_when_deleted_replaced_or_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The host's libssl plus three (and what else a running process maps: cargo, which has
    // OpenSSL linked in).
    let c = Collector::start(&[FAST, &["--collector.http.tls-max-files=4"]].concat());
    let host = host_libssl(&c);
    let others = attached(&c.scrape()).len() - 1;
    assert!(others <= 1, "{:?}", attached(&c.scrape()));
    let copy = |name: &str| {
        let lib = d.join(name);
        std::fs::create_dir(&lib).unwrap();
        std::fs::copy(&host, lib.join("libssl.so.3")).unwrap();
        (lib.clone(), lib.join("libssl.so.3").display().to_string())
    };
    let hold = |lib: &Path| {
        spawn_ready(
            python(Some(lib)).args(["-c", "import ssl, time; print('ready', flush=True); time.sleep(600)"]),
            "a process mapping a copy",
        )
    };
    // Deleted while mapped: kept (and named as maps name it) until the process exits.
    let (a_dir, a) = copy("a");
    let holder = hold(&a_dir);
    wait_attached(&c, &a);
    std::fs::remove_file(&a).unwrap();
    let a_deleted = format!("{a} (deleted)");
    wait_for(&c, "the deleted copy shown as deleted", |m| attached(m).contains(&a_deleted));
    assert_eq!(processes_of(&c.scrape(), &a_deleted), 1.0);
    drop(holder);
    wait_for(&c, "the deleted copy detached", |m| detached_for(m, "deleted") == 1.0);
    assert!(!attached(&c.scrape()).iter().any(|p| p.starts_with(&a)));
    // Replaced under its name (written beside it, renamed over it, as package managers do):
    // the new file is attached before any process maps it; the old one goes with its process.
    let (b_dir, b) = copy("b");
    let holder = hold(&b_dir);
    wait_attached(&c, &b);
    let new = b_dir.join("libssl.so.3.new");
    std::fs::copy(&host, &new).unwrap();
    std::fs::rename(&new, &b).unwrap();
    let b_deleted = format!("{b} (deleted)");
    wait_for(&c, "the old file shown as deleted, the new one attached", |m| {
        let now = attached(m);
        now.contains(&b_deleted) && now.contains(&b)
    });
    assert_eq!(processes_of(&c.scrape(), &b), 0.0, "the new file is attached before a process maps it");
    drop(holder);
    wait_for(&c, "the replaced file detached", |m| detached_for(m, "replaced") == 1.0);
    assert!(attached(&c.scrape()).contains(&b));
    // Past the limit (cargo's place taken by another copy where no cargo is running): host, b
    // and c, then d evicts the least recently used file no process maps (b), never a host
    // library.
    let extra = (others == 0).then(|| {
        let (x_dir, x) = copy("x");
        let holder = hold(&x_dir);
        wait_attached(&c, &x);
        drop(holder);
    });
    let (c_dir, c_lib) = copy("c");
    let holder = hold(&c_dir);
    wait_attached(&c, &c_lib);
    drop(holder);
    wait_for(&c, "no process maps c", |m| processes_of(m, &c_lib) == 0.0);
    let (d_dir, d_lib) = copy("d");
    let d_holder = hold(&d_dir);
    wait_attached(&c, &d_lib);
    let m = c.scrape();
    assert_eq!(detached_for(&m, "evicted"), 1.0, "attached: {:?}", attached(&m));
    let now = attached(&m);
    assert_eq!(now.len(), 4, "{now:?}");
    assert!(now.contains(&d_lib) && now.contains(&host), "{now:?}");
    let evicted: Vec<&String> = [&b, &c_lib].into_iter().filter(|p| !now.contains(p)).collect();
    assert_eq!(evicted.len(), 1, "{now:?}");
    // An evicted file opened again: attached again at the open (its watch stays).
    let evicted_dir = Path::new(evicted[0]).parent().unwrap().to_owned();
    let reopened = hold(&evicted_dir);
    wait_attached(&c, evicted[0]);
    assert_eq!(detached_for(&c.scrape(), "evicted"), 2.0, "d is in use, so one of the others made room");
    drop((reopened, d_holder, extra));
}

/// With probes that stay on every file, the exit must not grow with the files attached: on a
/// kernel with uprobe_multi links (6.6, as this one), one link per program and file, closed
/// together, shares the kernel's wait for a grace period. The host's libssl and four copies
/// attached, SIGTERM: the collector is gone within 2 s (a probe per offset took about 0.8 s per
/// file, one after the other).
#[test]
fn sigterm_with_many_attached_files_exits_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut c = Collector::start(FAST);
    let m = c.scrape();
    assert_eq!(
        m.get("collector_bpf_program_attached", &[("program", "tls_ret")]),
        1.0,
        "{:?}",
        m.find("collector_bpf_program_attached", &[])
    );
    let multi =
        m.find("collector_bpf_program_attached", &[("program", "tls_ret")])[0].labels["hook"].contains(".multi");
    let host = host_libssl(&c);
    for i in 0..4 {
        let lib = d.join(format!("l{i}"));
        std::fs::create_dir(&lib).unwrap();
        std::fs::copy(&host, lib.join("libssl.so.3")).unwrap();
        let holder = spawn_ready(
            python(Some(&lib)).args(["-c", "import ssl, time; print('ready', flush=True); time.sleep(600)"]),
            "a process mapping a copy",
        );
        wait_attached(&c, &lib.join("libssl.so.3").display().to_string());
        drop(holder);
    }
    let n = attached(&c.scrape()).len();
    let t = Instant::now();
    assert_eq!(unsafe { libc::kill(c.pid() as i32, libc::SIGTERM) }, 0);
    let status = c.child.wait().unwrap();
    let took = t.elapsed();
    eprintln!("exited {took:?} after SIGTERM with {n} files attached (uprobe_multi links: {multi})");
    assert!(status.success(), "{status:?}");
    if multi {
        assert!(took < Duration::from_secs(2), "{took:?} to exit with {n} files attached");
    }
}

/// The host's libssl.so.3 as the collector names it (attached at start-up).
fn host_libssl(c: &Collector) -> String {
    let now = attached(&c.scrape());
    now.iter().find(|p| p.ends_with("/libssl.so.3")).unwrap_or_else(|| panic!("no host libssl.so.3: {now:?}")).clone()
}

/// A library no process used before, at a path the collector does not watch, is attached
/// within the scan interval of its first open: the one race left, measured here. 100 first
/// opens, each of a copy of libssl.so.3 of its own in a directory of its own, each timed by the
/// process that opens it from just before `dlopen` to the moment the breakpoint of a probe shows
/// in its own copy of `SSL_write` (the kernel writes 0xcc there when it attaches one), in four
/// workers that wait a random part of a second between opens, so that opens fall anywhere in
/// the scan's period. Then 100 copies written into a directory the collector watches (that of
/// a library it attached): attached when written, before they are opened. Asserted: every open
/// is attached within two scan intervals (the guarantee); the figures are reported.
#[test]
fn first_opens_of_libraries_never_seen_are_attached_within_two_scans() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = Collector::start(FAST);
    let host = host_libssl(&c);
    let harness = script(d, "first_open.py", FIRST_OPEN);
    let unwatched = d.join("unwatched");
    std::fs::create_dir(&unwatched).unwrap();
    // A directory the collector watches: that of a copy it attached.
    let watched = d.join("watched");
    std::fs::create_dir(&watched).unwrap();
    std::fs::copy(&host, watched.join("libssl.so.3")).unwrap();
    let holder = spawn_ready(
        python(Some(&watched)).args(["-c", "import ssl, time; print('ready', flush=True); time.sleep(600)"]),
        "a process mapping the first copy",
    );
    wait_attached(&c, &watched.join("libssl.so.3").display().to_string());
    drop(holder);
    let mut report = String::new();
    for (what, base, dirs) in [("unwatched", &unwatched, "dirs"), ("watched", &watched, "files")] {
        let out = run_ok(Command::new(PYTHON).arg(&harness).arg(&host).arg(base).arg(dirs).arg("100"));
        let mut ms: Vec<f64> = out.lines().filter_map(|l| l.strip_prefix("attached ")?.trim().parse().ok()).collect();
        assert_eq!(ms.len(), 100, "harness output:\n{out}");
        ms.sort_by(f64::total_cmp);
        let (median, p99, max) = (ms[49], ms[98], ms[99]);
        report += &format!(
            "first open to probes attached, {what} directory: median {median:.1} ms, p99 {p99:.1} ms, max {max:.1} ms \
             (before the open: {})\n",
            ms.iter().filter(|m| **m == 0.0).count()
        );
        assert!(max < 2000.0, "{what}: an open waited {max} ms for its probes");
    }
    eprint!("{report}");
}

/// The first-open harness (see the test above): `LIB BASE dirs|files N`: N copies of LIB under
/// BASE (each in a directory of its own, or side by side), each loaded and timed until the
/// first byte of its `SSL_write` is a breakpoint; prints `attached MS` per copy (0 when it was
/// one at the first look). Four workers for `dirs`, which wait a random part of a second
/// between opens; one for `files`.
const FIRST_OPEN: &str = r#"
import ctypes, os, random, shutil, sys, threading, time
lib, base, how, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
keep, lock = [], threading.Lock()
def one(i):
    if how == "dirs":
        d = os.path.join(base, f"d{i}")
        os.mkdir(d)
        path = os.path.join(d, "libssl.so.3")
        shutil.copy(lib, path)
    else:
        path = os.path.join(base, f"libssl.so.3.{i}")
        shutil.copy(lib, path)
    t = time.monotonic()
    h = ctypes.CDLL(path)
    at = ctypes.cast(h.SSL_write, ctypes.c_void_p).value
    first = True
    while ctypes.string_at(at, 1) != b"\xcc":
        first = False
        if time.monotonic() - t > 10:
            print("timeout", path, flush=True)
            return
        time.sleep(0.0002)
    ms = 0.0 if first else (time.monotonic() - t) * 1e3
    with lock:
        keep.append(h)
        print("attached", ms, flush=True)
def worker(ids):
    for i in ids:
        if how == "dirs":
            time.sleep(random.random())
        one(i)
workers = 4 if how == "dirs" else 1
ts = [threading.Thread(target=worker, args=(range(w, n, workers),)) for w in range(workers)]
for t in ts: t.start()
for t in ts: t.join()
"#;

// ---------------------------------------------------------------------------------------------
// OpenSSL 1.1 and BoringSSL

/// An HTTPS server and clients that call a given libssl through ctypes: `SSL_read`,
/// `SSL_write`, `SSL_accept`/`SSL_connect`, `SSL_shutdown`, `SSL_free`, the calls C programs
/// (nginx, curl, Ruby, PHP) make, with no other TLS code in the process (Python's own `ssl`
/// module, linked to the system's libssl.so.3, is not imported). The same API in OpenSSL 1.1,
/// 3 and BoringSSL. `server LIB PORT CERT KEY`: the paths and replies of `PY_SERVER`
/// (headers and body in two writes, the 10 MiB body in 64 KiB writes), keep-alive, a thread
/// per connection; prints `ready`. `client LIB PORT keepalive|new PATH...`: every request on
/// one connection, or a new one per request; prints `status body-length seconds` per request
/// (from just before the request is written to just after the last body byte is read).
const CTYPES_TLS: &str = r#"
import ctypes, socket, sys, threading, time
from ctypes import c_char_p, c_int, c_void_p
mode, lib = sys.argv[1], ctypes.CDLL(sys.argv[2])
for name, res, args in [
    ("TLS_server_method", c_void_p, []), ("TLS_client_method", c_void_p, []),
    ("SSL_CTX_new", c_void_p, [c_void_p]),
    ("SSL_CTX_use_certificate_chain_file", c_int, [c_void_p, c_char_p]),
    ("SSL_CTX_use_PrivateKey_file", c_int, [c_void_p, c_char_p, c_int]),
    ("SSL_new", c_void_p, [c_void_p]), ("SSL_set_fd", c_int, [c_void_p, c_int]),
    ("SSL_accept", c_int, [c_void_p]), ("SSL_connect", c_int, [c_void_p]),
    ("SSL_read", c_int, [c_void_p, c_void_p, c_int]), ("SSL_write", c_int, [c_void_p, c_char_p, c_int]),
    ("SSL_shutdown", c_int, [c_void_p]), ("SSL_free", None, [c_void_p]),
]:
    f = getattr(lib, name)
    f.restype, f.argtypes = res, args
class Conn:
    def __init__(self, ctx, sock, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.ssl, self.buf = sock, lib.SSL_new(ctx), b""
        self.rbuf = ctypes.create_string_buffer(1 << 16)
        assert lib.SSL_set_fd(self.ssl, sock.fileno()) == 1
        assert (lib.SSL_accept if server else lib.SSL_connect)(self.ssl) == 1, "handshake"
    def fill(self):
        n = lib.SSL_read(self.ssl, self.rbuf, len(self.rbuf))
        if n > 0:
            self.buf += self.rbuf.raw[:n]
        return n > 0
    def head(self):
        while b"\r\n\r\n" not in self.buf:
            if not self.fill():
                return None
        h, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return h.decode()
    def body(self, n):
        while len(self.buf) < n:
            assert self.fill(), "closed in a body"
        b, self.buf = self.buf[:n], self.buf[n:]
        return b
    def send(self, data):
        for off in range(0, len(data), 1 << 16):
            chunk = data[off:off + (1 << 16)]
            assert lib.SSL_write(self.ssl, chunk, len(chunk)) == len(chunk), "SSL_write"
    def close(self):
        lib.SSL_shutdown(self.ssl)
        lib.SSL_free(self.ssl)
        self.sock.close()
if mode == "server":
    port, cert, key = int(sys.argv[3]), sys.argv[4], sys.argv[5]
    ctx = lib.SSL_CTX_new(lib.TLS_server_method())
    assert lib.SSL_CTX_use_certificate_chain_file(ctx, cert.encode()) == 1, "certificate"
    assert lib.SSL_CTX_use_PrivateKey_file(ctx, key.encode(), 1) == 1, "key"
    BIG = b"x" * (10 << 20)
    def serve(sock):
        c = Conn(ctx, sock, True)
        while True:
            h = c.head()
            if h is None:
                break
            path = h.split(" ")[1]
            if path == "/ok":
                status, body = 200, b"ok"
            elif path == "/delay":
                time.sleep(0.01)
                status, body = 200, b"delayed"
            elif path == "/big":
                status, body = 200, BIG
            else:
                status, body = 404, b"not found"
            reason = "OK" if status == 200 else "Not Found"
            c.send(f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            c.send(body)
        c.close()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(64)
    print("ready", flush=True)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()
else:
    port, how, paths = int(sys.argv[3]), sys.argv[4], sys.argv[5:]
    ctx = lib.SSL_CTX_new(lib.TLS_client_method())
    def connect():
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        s.settimeout(None)  # a blocking descriptor, as libssl's blocking calls expect
        return Conn(ctx, s, False)
    c = connect() if how == "keepalive" else None
    for path in paths:
        if how == "new":
            c = connect()
        t = time.perf_counter()
        c.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        h = c.head()
        assert h, "closed before a response"
        length = int(next(l.split(":")[1] for l in h.lower().split("\r\n") if l.startswith("content-length:")))
        n = len(c.body(length))
        print(int(h.split(" ")[1]), n, time.perf_counter() - t, flush=True)
        if how == "new":
            c.close()
    if how == "keepalive":
        c.close()
"#;

/// Python running the ctypes harness `harness` with the libssl `lib` (and the libcrypto beside
/// it) found first.
fn ctypes_python(harness: &Path, lib: &Path) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.env("LD_LIBRARY_PATH", lib.parent().unwrap()).arg(harness);
    cmd
}

/// The libraries `cargo xtask test` extracted from Debian's packages (target/tls-libs, or
/// `$TLS_LIBS`): directory `name` holds `file` and the libcrypto it needs.
fn fetched_lib(name: &str, file: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let base = std::env::var_os("TLS_LIBS").map(|d| repo.join(d)).unwrap_or_else(|| repo.join("target/tls-libs"));
    let lib = base.join(name).join(file);
    assert!(lib.exists(), "{} is missing: `cargo xtask test` fetches it (Debian packages)", lib.display());
    lib
}

/// OpenSSL 1.1 (Debian 11's libssl1.1, 1.1.1w: the version whose users report crashes under
/// other tools' return probes) and BoringSSL (Debian's android-libboringssl, which has no
/// `_ex` functions) through their libssl.so, used by a server and by clients, keep-alive and
/// new connections, a 10 MiB response: exact counts per status on both sides, and the
/// processes survive the probes.
#[test]
fn openssl_1_1_and_boringssl_through_their_libssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let harness = script(d, "ctypes_tls.py", CTYPES_TLS);
    let c = Collector::start(FAST);
    for (name, file) in [("openssl-1.1", "libssl.so.1.1"), ("boringssl", "libssl.so.0")] {
        let lib = fetched_lib(name, file);
        let python = || ctypes_python(&harness, &lib);
        let port = free_port();
        let mut server = spawn_ready(
            python().args(["server"]).arg(&lib).arg(port.to_string()).arg(&cert.cert).arg(&cert.key),
            &format!("the {name} server"),
        );
        assert_eq!(mapped_file(server.id(), file), lib.display().to_string());
        wait_attached(&c, &lib.display().to_string());
        let mut want = Vec::new();
        for (how, paths) in [("keepalive", PY_KEEPALIVE), ("new", PY_NEW)] {
            let out = python()
                .arg("client")
                .arg(&lib)
                .arg(port.to_string())
                .arg(how)
                .args(paths)
                .stderr(Stdio::inherit())
                .output()
                .expect("python3");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{name} client {how} failed:\n{text}");
            check_exchanges(&text, paths);
            want = if want.is_empty() { expected(paths) } else { sum_counts(&want, &expected(paths)) };
        }
        assert_eq!(want, [("200", 14.0), ("404", 5.0)]);
        let m = c.scrape();
        assert_https_counts(&m, port, &want, &["server", "client"], name);
        assert_none_active(&m, port);
        let ok_bodies: usize =
            PY_KEEPALIVE.iter().chain(PY_NEW).filter(|p| status_of(p) == 200).map(|p| body_len(p)).sum();
        let p = port.to_string();
        for side in ["server", "client"] {
            let sum = total(&m, side, "response_body_size_bytes_sum", port, "https", "200");
            assert_eq!(sum, ok_bodies as f64, "{name} {side}");
            let family = format!("http_{side}_response_body_size_bytes");
            assert_eq!(observations_above(&m, &family, &labels(side, &p, "https", "200"), BIG), 1.0, "{name} {side}");
        }
        assert!(server.try_wait().unwrap().is_none(), "the {name} server exited");
    }
}

/// 10 ms server delays, 30 requests on one keep-alive connection, for each other library and
/// runtime with both its server and its client (Python has its own test above): Node.js, Go,
/// OpenSSL 1.1, BoringSSL, and nginx with curl. The server and client histograms' means agree
/// with what the client measured around each request under the tests' noise model
/// (`common::assert_agrees`; the null exchanges: 20 of `/ok` by the same client on its own
/// connection first). Node.js's server misses as much of its client's clock over TLS as over
/// cleartext, measured at the wire, under the same model (the slack: how much more the TLS
/// client's clock holds for a null exchange than the cleartext one's).
#[test]
fn durations_agree_with_client_measurements_for_node_go_openssl_1_1_and_boringssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let go = go_binary(d);
    let harness = script(d, "ctypes_tls.py", CTYPES_TLS);
    let node_server = script(d, "server.js", NODE_SERVER);
    let node_client = script(d, "timed.js", NODE_TIMED);
    let c = Collector::start(FAST);
    const N: usize = 30;
    const NULL: usize = 20;
    for what in ["Node.js", "Go", "OpenSSL 1.1", "BoringSSL"] {
        let port = free_port();
        let ps = port.to_string();
        let lib = match what {
            "OpenSSL 1.1" => Some(fetched_lib("openssl-1.1", "libssl.so.1.1")),
            "BoringSSL" => Some(fetched_lib("boringssl", "libssl.so.0")),
            _ => None,
        };
        // The server, and the client sending `n` requests for `path` on one connection (each
        // prints `status length seconds` per request).
        let mut server = match (what, &lib) {
            ("Node.js", _) => {
                let mut s = Command::new("node");
                s.arg(&node_server).arg(&ps).arg(&cert.cert).arg(&cert.key);
                s
            }
            ("Go", _) => {
                let mut s = Command::new(&go);
                s.arg("server").arg(&ps).arg(&cert.cert).arg(&cert.key);
                s
            }
            (_, Some(lib)) => {
                let mut s = ctypes_python(&harness, lib);
                s.arg("server").arg(lib).arg(&ps).arg(&cert.cert).arg(&cert.key);
                s
            }
            _ => unreachable!(),
        };
        let client = |path: &str, n: usize| -> String {
            let mut c = match (what, &lib) {
                ("Node.js", _) => {
                    let mut c = Command::new("node");
                    c.arg(&node_client).arg(&ps).arg(path).arg(n.to_string());
                    c
                }
                ("Go", _) => {
                    let mut c = Command::new(&go);
                    c.arg("timed").arg(&ps).arg(path).arg(n.to_string());
                    c
                }
                (_, Some(lib)) => {
                    let mut c = ctypes_python(&harness, lib);
                    c.arg("client").arg(lib).arg(&ps).arg("keepalive").args(vec![path; n]);
                    c
                }
                _ => unreachable!(),
            };
            let out = run_ok(&mut c);
            check_exchanges(&out, &vec![path; n]);
            out
        };
        let srv = spawn_ready(&mut server, &format!("the {what} server"));
        // The file the probes go into: the library, or the executable that holds the TLS code.
        let file = match &lib {
            Some(l) => l.display().to_string(),
            None => std::fs::read_link(format!("/proc/{}/exe", srv.id())).unwrap().display().to_string(),
        };
        let library = if what == "Go" { "go" } else { "openssl" };
        wait_attached_as(&c, library, &file);
        let null = mean_seconds(&client("/ok", NULL));
        let before = c.scrape();
        let out = client("/delay", N);
        let m = c.scrape();
        assert_means_agree(&before, &m, port, N, mean_seconds(&out), null, what);
        drop(srv);
        if what == "Node.js" {
            // The same server and client over cleartext, measured at the wire: the server side
            // misses as much of the client's clock there as over TLS (the TLS exchanges take
            // longer, the encryption on both sides, so the means themselves differ).
            let tls_gap = mean_seconds(&out) - histogram_mean(&before, &m, "server", port, "https", N);
            let plain_port = free_port();
            let pp = plain_port.to_string();
            let mut plain = Command::new("node");
            plain.arg(&node_server).arg(&pp).arg(&cert.cert).arg(&cert.key).arg("plain");
            let plain_srv = spawn_ready(&mut plain, "the Node.js cleartext server");
            let plain_client = |path: &str, n: usize| {
                let mut cmd = Command::new("node");
                cmd.arg(&node_client).arg(&pp).arg(path).arg(n.to_string()).arg("plain");
                let out = run_ok(&mut cmd);
                check_exchanges(&out, &vec![path; n]);
                out
            };
            let plain_null = mean_seconds(&plain_client("/ok", NULL));
            let before = c.scrape();
            let plain_out = plain_client("/delay", N);
            let plain_gap =
                mean_seconds(&plain_out) - histogram_mean(&before, &c.scrape(), "server", plain_port, "http", N);
            eprintln!(
                "Node.js server, 10 ms: below the client's clock by {:.3} ms over TLS, {:.3} ms over cleartext",
                tls_gap * 1e3,
                plain_gap * 1e3,
            );
            common::assert_agrees(
                "Node.js server's gap to its client, TLS against cleartext",
                mean_seconds(&out) - tls_gap + plain_gap,
                mean_seconds(&out),
                (null - plain_null).abs(),
            );
            drop(plain_srv);
        }
    }
    // nginx, whose delay comes from the cleartext upstream it proxies to (the HTTP tests'
    // server, holding each request 10 ms), and curl: one invocation, one connection, a 404
    // first (its time includes the handshake, and it is not among the 200s compared).
    let upstream = TestServer::start("127.0.0.1");
    let port = free_port();
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; keepalive_timeout 30; keepalive_requests 1000;\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               upstream up {{ server 127.0.0.1:{up}; keepalive 4; }}\n\
               server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};\n\
                 location = /missing {{ return 404; }}\n\
                 location = /ok {{ proxy_pass http://up/d?delay_ms=0&size=2; proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\"; }}\n\
                 location = /delay {{ proxy_pass http://up/d?delay_ms=10&size=7; proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\"; }} }} }}\n",
            d = d.display(),
            up = upstream.port,
            cert = cert.cert.display(),
            key = cert.key.display(),
        ),
    )
    .unwrap();
    let nginx = KillOnDrop(Command::new(NGINX).arg("-c").arg(&conf).spawn().expect("nginx (Debian package) installed"));
    wait_port(port);
    wait_attached(&c, &mapped_file(nginx.id(), "libssl.so.3"));
    // curl's `status length seconds` of each request after a first 404.
    let curl = |path: &str, n: usize| -> String {
        let mut cmd = Command::new(CURL);
        cmd.args(["-sS", "-k", "--http1.1", "-w", "%{http_code} %{size_download} %{time_total}\\n"]);
        for p in std::iter::once("/missing").chain(std::iter::repeat_n(path, n)) {
            cmd.arg("-o").arg("/dev/null").arg(format!("https://127.0.0.1:{port}{p}"));
        }
        let out = run_ok(&mut cmd);
        let timed = out.lines().skip(1).collect::<Vec<_>>().join("\n");
        check_exchanges(&timed, &vec![path; n]);
        timed
    };
    let null = mean_seconds(&curl("/ok", NULL));
    let before = c.scrape();
    let timed = curl("/delay", N);
    assert_means_agree(&before, &c.scrape(), port, N, mean_seconds(&timed), null, "nginx and curl");
}

/// A TLS server speaking a PostgreSQL-like protocol: the SSLRequest in cleartext, answered
/// 'S', then TLS; inside it a startup message answered with AuthenticationOk, ParameterStatus,
/// BackendKeyData and ReadyForQuery, then each query 'Q' answered with RowDescription,
/// DataRow (binary data), CommandComplete and ReadyForQuery, until Terminate 'X'.
const PG_SERVER: &str = r#"
import socket, ssl, struct, sys, threading
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
def exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf
def msg(t, payload):
    return t + struct.pack("!I", len(payload) + 4) + payload
def serve(raw):
    try:
        assert exact(raw, 8) == b"\x00\x00\x00\x08\x04\xd2\x16\x2f", "SSLRequest"
        raw.sendall(b"S")
        with ctx.wrap_socket(raw, server_side=True) as s:
            n = struct.unpack("!I", exact(s, 4))[0]
            exact(s, n - 4)
            s.sendall(msg(b"R", struct.pack("!I", 0)) + msg(b"S", b"server_version\x0016.2\x00")
                      + msg(b"K", struct.pack("!II", 4242, 0xdeadbeef)) + msg(b"Z", b"I"))
            while True:
                t = exact(s, 1)
                n = struct.unpack("!I", exact(s, 4))[0]
                body = exact(s, n - 4)
                if t == b"X":
                    return
                data = bytes((i * 2654435761 >> 24) & 0xff for i in range(3000)) + body
                s.sendall(msg(b"T", struct.pack("!H", 1) + b"v\x00" + struct.pack("!IHIhih", 0, 0, 17, -1, -1, 1))
                          + msg(b"D", struct.pack("!HI", 1, len(data)) + data)
                          + msg(b"C", b"SELECT 1\x00") + msg(b"Z", b"I"))
    except (EOFError, OSError):
        pass
ls = socket.create_server(("127.0.0.1", port))
print("ready", flush=True)
while True:
    conn, _ = ls.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// The PostgreSQL-like client: `PORT CONNECTIONS QUERIES`; prints `done N` with the number of
/// queries answered.
const PG_CLIENT: &str = r#"
import socket, ssl, struct, sys
port, conns, queries = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf
def msg(t, payload):
    return t + struct.pack("!I", len(payload) + 4) + payload
def until_ready(s):
    while True:
        t = exact(s, 1)
        n = struct.unpack("!I", exact(s, 4))[0]
        exact(s, n - 4)
        if t == b"Z":
            return
done = 0
for _ in range(conns):
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    raw.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
    assert exact(raw, 1) == b"S"
    s = ctx.wrap_socket(raw)
    params = b"user\x00postgres\x00database\x00app\x00application_name\x00GET / HTTP/1.1\x00\x00"
    s.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
    until_ready(s)
    for i in range(queries):
        s.sendall(msg(b"Q", f"SELECT {i}, 'HTTP/1.1 200 OK' AS s, decode('00ff10', 'hex');".encode() + b"\x00"))
        until_ready(s)
        done += 1
    s.sendall(msg(b"X", b""))
    s.close()
print("done", done)
"#;

/// TLS carrying a PostgreSQL-like binary protocol makes no HTTP series, while HTTPS at the
/// same time (Python, same libssl.so.3) is counted: the capture was on.
#[test]
fn tls_that_is_not_http_makes_no_series() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let c = Collector::start(FAST);
    let pg_port = free_port();
    let pg = spawn_ready(
        Command::new(PYTHON).arg(script(d, "pg.py", PG_SERVER)).arg(pg_port.to_string()).arg(&cert.cert).arg(&cert.key),
        "the PostgreSQL-like TLS server",
    );
    let (_https, port) = python_server(d, &cert, None);
    wait_attached(&c, &mapped_file(pg.id(), "libssl.so.3"));

    // The PostgreSQL-like client runs while the HTTPS client does.
    let mut pg_client = KillOnDrop(
        Command::new(PYTHON)
            .arg(script(d, "pg_client.py", PG_CLIENT))
            .args([pg_port.to_string().as_str(), "3", "20"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut pg_out = pg_client.stdout.take().unwrap();
    let want = python_exchanges(d, port, "keepalive", PY_KEEPALIVE, None);
    let mut pg_text = String::new();
    pg_out.read_to_string(&mut pg_text).unwrap();
    assert!(pg_client.wait().unwrap().success(), "PostgreSQL-like client failed: {pg_text}");
    assert_eq!(pg_text.trim(), "done 60");

    let m = c.scrape();
    assert_https_counts(&m, port, &want, &["server", "client"], "HTTPS alongside");
    assert_no_http_series(&m, pg_port, "PostgreSQL-like TLS");
}

/// With `--no-collector.http.tls` nothing is attached and HTTPS makes no series, while
/// cleartext HTTP is still counted as `url_scheme="http"`.
#[test]
fn no_tls_flag_turns_the_capture_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let args: Vec<&str> = FAST.iter().copied().chain(["--no-collector.http.tls"]).collect();
    let c = Collector::start(&args);
    let (_srv, port) = python_server(d, &cert, None);
    // Longer than a few /proc scans: with the capture on, libssl.so.3 would be attached by now.
    std::thread::sleep(Duration::from_millis(3000));
    let m = c.scrape();
    assert!(attached(&m).is_empty(), "attached with --no-collector.http.tls: {:?}", attached(&m));

    python_exchanges(d, port, "keepalive", PY_KEEPALIVE, None);
    python_exchanges(d, port, "new", PY_NEW, None);
    let plain = TestServer::start("127.0.0.1");
    let mut cl = Client::connect(&plain.addr);
    for status in [200, 404, 200] {
        assert_eq!(cl.get(&format!("/x?status={status}&size=5")).status, status);
    }

    let m = c.scrape();
    let https: Vec<_> =
        m.samples.iter().filter(|s| s.labels.get("url_scheme").map(String::as_str) == Some("https")).collect();
    assert!(https.is_empty(), "https series with the capture off: {https:?}");
    assert_no_http_series(&m, port, "HTTPS with the capture off");
    for side in ["server", "client"] {
        for (status, n) in [("200", 2.0), ("404", 1.0)] {
            assert_eq!(
                total(&m, side, "request_duration_seconds_count", plain.port, "http", status),
                n,
                "cleartext {side} {status}"
            );
        }
        assert_eq!(any_count(&m, side, plain.port), 3.0, "cleartext {side}, all schemes");
    }
}

// ---------------------------------------------------------------------------------------------
// Go

/// The Go crypto/tls server and client of `tests/tls_go` (Debian's golang-go), built once into
/// cargo's test directory. Where that is read-only (the kernel matrix's guests see the checkout
/// read-only) and the binary is missing or older than its source, it is built in `tmp`.
fn go_binary(tmp: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls_go");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_src = ["main.go", "go.mod"].iter().filter_map(|f| modified(&src.join(f))).max().unwrap();
    let cached = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls_go");
    if modified(&cached).is_some_and(|t| t >= newest_src) {
        return cached;
    }
    let out = if std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).is_ok()
        && std::fs::metadata(env!("CARGO_TARGET_TMPDIR")).is_ok_and(|m| !m.permissions().readonly())
        && std::fs::File::create(cached.with_extension("probe")).is_ok()
    {
        let _ = std::fs::remove_file(cached.with_extension("probe"));
        cached
    } else {
        tmp.join("tls_go")
    };
    run_ok(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", std::env::temp_dir().join("collector-tests-gocache"))
            .env("GOPATH", std::env::temp_dir().join("collector-tests-gopath")),
    );
    out
}

/// Go's net/http over crypto/tls (HTTP/1.1), server and client in Go: probes on (*Conn).Read,
/// its return instructions and (*Conn).Write — no return probe, which would break Go's moving
/// stacks — count exactly on both sides, on one kept-alive connection and on new ones, with a
/// 10 MiB response; the traced processes run to completion.
#[test]
fn go_https_server_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let bin = go_binary(d);
    let c = Collector::start(FAST);
    let port = free_port();
    let srv = spawn_ready(
        Command::new(&bin).arg("server").arg(port.to_string()).arg(&cert.cert).arg(&cert.key),
        "the Go HTTPS server",
    );
    let path = std::fs::read_link(format!("/proc/{}/exe", srv.id())).unwrap().display().to_string();
    wait_attached_as(&c, "go", &path);
    let url = format!("https://127.0.0.1:{port}");
    let keep: &[&str] = &["/ok", "/ok", "/missing", "/delay", "/big", "/ok", "/missing", "/ok", "/delay", "/ok"];
    let fresh: &[&str] = &["/ok", "/missing", "/ok", "/ok"];
    let out = run_ok(Command::new(&bin).arg("client").arg(&url).args(keep));
    check_exchanges(&out, keep);
    let out = run_ok(Command::new(&bin).arg("client").arg("--new").arg(&url).args(fresh));
    check_exchanges(&out, fresh);
    let want = sum_counts(&expected(keep), &expected(fresh));
    assert_eq!(want, [("200", 11.0), ("404", 3.0)]);
    let m = c.scrape();
    assert_https_counts(&m, port, &want, &["server", "client"], "Go");
    let p = port.to_string();
    for side in ["server", "client"] {
        let name = format!("http_{side}_response_body_size_bytes");
        assert_eq!(observations_above(&m, &name, &labels(side, &p, "https", "200"), BIG), 1.0, "{side}");
        let ok: usize = keep.iter().chain(fresh).filter(|p| status_of(p) == 200).map(|p| body_len(p)).sum();
        assert_eq!(total(&m, side, "response_body_size_bytes_sum", port, "https", "200"), ok as f64, "{side}");
    }
    assert_none_active(&m, port);
    // The traced server kept running through all of it.
    assert!(run_ok(Command::new(&bin).arg("client").arg(&url).arg("/ok")).starts_with("200 "));
    drop(srv);
}

/// What the uprobes read stays in the kernel: a secret in the path, a header and the body of
/// an HTTPS request reaches neither /metrics nor the log, while the request is counted.
#[test]
fn https_payloads_never_reach_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let (_srv, port) = python_server(d, &cert, None);
    let c = Collector::start(FAST);
    let secret = "zq7SECRETpayloadTOKEN";
    let out = run_ok(Command::new(CURL).args([
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {secret}"),
        &format!("https://127.0.0.1:{port}/login?password={secret}"),
    ]));
    assert_eq!(out.trim(), "404");
    let text = c.scrape_text();
    let m = Metrics::parse(&text);
    assert_https_counts(&m, port, &[("404", 1.0)], &["server", "client"], "curl");
    for needle in [secret, "login", "password", "Bearer"] {
        assert!(!text.contains(needle), "{needle:?} appears in /metrics");
    }
    assert!(!c.log_text().contains(secret), "the secret appears in the log");
}

/// A server in a mount namespace of its own (as in a container): its libssl is at a path that
/// exists only inside it (a tmpfs mounted over an empty directory), so the collector must open
/// it through `/proc/<pid>/root`; its exchanges count exactly on the server side.
#[test]
fn a_server_in_its_own_mount_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let staged = private_libssl(d);
    let inside = d.join("container-lib");
    std::fs::create_dir(&inside).unwrap();
    let c = Collector::start(FAST);
    let srv = script(d, "server.py", PY_SERVER);
    let port = free_port();
    let sh = format!(
        "mount -t tmpfs tmpfs {inside} && cp {staged}/libssl.so.3 {inside}/ && \
         LD_LIBRARY_PATH={inside} exec {PYTHON} {srv} {port} {cert} {key}",
        inside = inside.display(),
        staged = staged.display(),
        srv = srv.display(),
        cert = cert.cert.display(),
        key = cert.key.display(),
    );
    let server = spawn_ready(
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &sh]),
        "the Python HTTPS server in its own mount namespace",
    );
    let path = inside.join("libssl.so.3").display().to_string();
    assert_eq!(mapped_file(server.id(), "libssl.so.3"), path);
    assert!(!Path::new(&path).exists(), "the library is visible only inside the namespace");
    wait_attached(&c, &path);
    let paths = ["/ok", "/missing", "/ok", "/delay", "/ok", "/ok"];
    // The client outside, with the system's libssl: only the server side runs on the copy.
    let want = python_exchanges(d, port, "keepalive", &paths, None);
    let m = c.scrape();
    assert_https_counts(&m, port, &want, &["server"], "a server in its own mount namespace");
}
