//! HTTPS durations against what the clients measured, under the tests' noise model
//! (`common::assert_agrees`): Python, Node.js, Go, OpenSSL 1.1, BoringSSL, nginx with curl, and
//! a server that reads its requests late (its requests start when they arrive at the host).
mod common;

#[path = "common/http.rs"]
mod http_util;
#[path = "common/tls_peers.rs"]
mod tls_peers;
#[path = "common/tls.rs"]
mod tls_util;

use std::process::Command;

use common::{
    Collector, FAST,
    process::{KillOnDrop, free_port, run_ok, wait_port},
};
use http_util::TestServer;
use tls_peers::*;
use tls_util::*;

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
