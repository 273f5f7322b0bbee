//! HTTPS measured through uprobes, library by library and server by server: OpenSSL 3
//! (libssl.so.3) with nginx, curl and Python's http.server, http.client and urllib; the OpenSSL
//! built into Node.js; OpenSSL 1.1's and BoringSSL's libssl.so through a ctypes harness; Go's
//! crypto/tls. Each counts exactly per status code on both sides with `url_scheme="https"`; TLS
//! that is not HTTP makes no series; no payload byte reaches the metrics; a server in a mount
//! namespace of its own is found; `--no-collector.http.tls` turns the capture off; what the probes
//! keep per process goes when it exits. Durations:
//! tls_timing.rs; the files the capture attaches to: tls_files.rs.
mod common;

#[path = "common/http.rs"]
mod http_util;
#[path = "common/tls_peers.rs"]
mod tls_peers;
#[path = "common/tls.rs"]
mod tls_util;

use std::{
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    Collector, FAST, Metrics,
    process::{KillOnDrop, free_port, run_ok, wait_port},
};
use http_util::{Client, TestServer};
use tls_peers::*;
use tls_util::*;

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
    let (_srv, port, c) = python_server_then_collector(d, &cert);

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

/// Node.js (OpenSSL linked into /usr/bin/node, no libssl.so) as HTTPS server and keep-alive
/// client: the uprobes attach to the node binary and count exactly on both sides.
/// The Node.js HTTPS server of `NODE_SERVER` on a free port, ready: (process, port, the node
/// binary's path).
fn node_server(d: &Path, cert: &Cert) -> (KillOnDrop, u16, String) {
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
    (srv, port, node)
}

#[test]
fn node_https_server_and_keep_alive_client() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let c = Collector::start(FAST);
    let (srv, port, node) = node_server(d, &cert);
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

/// The collector as deployed (`--runas.user`): the process that attaches uprobes to libraries
/// found after start-up runs as an unprivileged user with only the capabilities the capture
/// keeps, and a Node.js server and client started after it (OpenSSL inside the node binary,
/// attached when the scan finds it mapped) are counted exactly on both sides.
#[test]
fn processes_started_later_are_captured_by_an_unprivileged_collector() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let c = Collector::start(&[FAST, &["--runas.user=65532"]].concat());
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("65532")), "{status}");
    let (_srv, port, node) = node_server(d, &cert);
    wait_attached(&c, &node);
    let paths = ["/ok", "/missing", "/ok", "/delay", "/ok"];
    let out = run_ok(Command::new("node").arg(script(d, "client.js", NODE_CLIENT)).arg(port.to_string()).args(paths));
    check_exchanges(&out, &paths);
    let want = expected(&paths);
    assert_eq!(want, [("200", 4.0), ("404", 1.0)]);
    assert_https_counts(&c.scrape(), port, &want, &["server", "client"], "Node.js, unprivileged collector");
}

/// A client that makes one HTTPS request (certificate not checked), prints its status, then
/// waits for its standard input to close.
const PY_HOLD: &str = r#"
import http.client, ssl, sys
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ssl._create_unverified_context())
c.request("GET", "/ok")
r = c.getresponse()
r.read()
print(r.status, flush=True)
sys.stdin.read()
"#;

/// The keys of the collector's map `name` (`bpftool map dump`: bytes, in hex), as
/// little-endian words of 8 bytes (the last one shorter when the key is).
fn map_keys(name: &str) -> Vec<Vec<u64>> {
    let out = Command::new("bpftool").args(["-j", "map", "dump", "name", name]).output().expect("bpftool");
    assert!(out.status.success(), "bpftool map dump name {name}: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = |k: &serde_json::Value| -> Vec<u8> {
        let hex = k.as_array().unwrap();
        hex.iter().map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()).collect()
    };
    let words = |b: Vec<u8>| -> Vec<u64> {
        b.chunks(8).map(|c| c.iter().rev().fold(0u64, |w, &x| w << 8 | x as u64)).collect()
    };
    v.as_array().unwrap().iter().map(|e| words(bytes(&e["key"]))).collect()
}

/// How many entries of process `pid` the probes keep between its calls: the process
/// (`TLS_PROCS`, by process id), its threads' last calls (`TLS_CALLS`, by thread: the
/// `bpf_get_current_pid_tgid` word, then 0) and the sockets they received from (`TLS_RECV`,
/// by thread).
fn kept_entries(pid: u32) -> [usize; 3] {
    let pid = pid as u64;
    let procs = map_keys("TLS_PROCS").iter().filter(|k| k[0] == pid).count();
    let calls = map_keys("TLS_CALLS").iter().filter(|k| k[1] == 0 && k[0] >> 32 == pid).count();
    let recv = map_keys("TLS_RECV").iter().filter(|k| k[0] >> 32 == pid).count();
    [procs, calls, recv]
}

/// The entries the probes keep for a TLS-using process between its calls (in place, so that a
/// call costs no map update) go once it has exited: the daemon's sweep of exited processes.
#[test]
fn an_exited_process_leaves_no_entries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = make_cert(d);
    let (_srv, port, c) = python_server_then_collector(d, &cert);
    let hold = script(d, "hold.py", PY_HOLD);
    let mut client = python(None)
        .arg(&hold)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut status = [0u8; 3];
    client.stdout.take().unwrap().read_exact(&mut status).unwrap();
    assert_eq!(&status, b"200");
    let pid = client.id();
    let alive = kept_entries(pid);
    eprintln!("entries of the client ({pid}) while it runs: {alive:?}");
    assert!(alive.iter().all(|&n| n > 0), "the client's process, call and socket entries: {alive:?}");
    drop(client.stdin.take());
    assert!(client.wait().unwrap().success());
    // The sweep runs every 30 s, after a scan of the processes.
    let start = std::time::Instant::now();
    let mut left = kept_entries(pid);
    while left != [0, 0, 0] && start.elapsed() < Duration::from_secs(75) {
        std::thread::sleep(Duration::from_secs(1));
        left = kept_entries(pid);
    }
    eprintln!("entries of the exited client after {:?}: {left:?}", start.elapsed());
    assert_eq!(left, [0, 0, 0], "entries of the exited client {pid}");
    let m = c.scrape();
    assert_eq!(https_count(&m, "server", port, "200"), 1.0);
}
