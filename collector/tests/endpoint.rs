//! The HTTP endpoint: pages, content type, gzip, telemetry path; its security (TLS, client
//! certificates, basic auth, an invalid web config), timeouts against slow clients and the cap
//! on concurrent scrapes. The daemon's side, the same on every kernel: not in the kernel matrix.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use common::Collector;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

#[test]
fn pages_content_type_and_gzip() {
    let c = Collector::start(&["--no-collector.diskbpf", "--no-collector.netbpf"]);
    let landing = ureq::get(&c.url("/")).call().unwrap().into_string().unwrap();
    assert!(landing.contains("href=\"/metrics\""), "{landing}");
    assert_eq!(ureq::get(&c.url("/-/healthy")).call().unwrap().status(), 200);
    assert_eq!(ureq::get(&c.url("/-/ready")).call().unwrap().status(), 200);

    let plain = ureq::get(&c.url("/metrics")).call().unwrap();
    assert_eq!(plain.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert_eq!(plain.header("content-encoding"), None);

    let gz = ureq::get(&c.url("/metrics")).set("Accept-Encoding", "gzip").call().unwrap();
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut compressed = Vec::new();
    gz.into_reader().read_to_end(&mut compressed).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..]).read_to_string(&mut text).unwrap();
    assert!(compressed.len() < text.len() / 2, "{} compressed vs {} plain", compressed.len(), text.len());
    let m = common::Metrics::parse(&text);
    assert!(m.get("system_memory_total_bytes", &[]) > 0.0);
    assert_eq!(m.get("collector_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
}

#[test]
fn telemetry_path_is_configurable() {
    let c = Collector::start(&["--no-collector.diskbpf", "--no-collector.netbpf", "--web.telemetry-path", "/custom"]);
    assert_eq!(ureq::get(&c.url("/custom")).call().unwrap().status(), 200);
    match ureq::get(&c.url("/metrics")).call() {
        Err(ureq::Error::Status(404, _)) => {}
        other => panic!("expected 404 for /metrics, got {other:?}"),
    }
}

/// Waits for `needle` in the collector's log (the log reader runs on its own thread).
fn wait_log(c: &Collector, needle: &str) {
    assert!(c.log_appears(needle, Duration::from_secs(5)), "{needle:?} not in the log:\n{}", c.log_text());
}

/// Only procfs collectors: fast start, no programs.
const NO_BPF: &[&str] = &["--no-collector.diskbpf", "--no-collector.netbpf", "--no-collector.http"];

fn with(base: &[&str], more: &[&str]) -> Vec<String> {
    base.iter().chain(more).map(|s| s.to_string()).collect()
}

fn start(args: &[String]) -> Collector {
    Collector::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A CA and the certificates it signs, written as PEM files into a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
}

fn key_pem(k: &rcgen::KeyPair) -> String {
    k.serialize_pem()
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_issuer) = Self::make_ca("collector test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let ca_der = ca.der().clone();
        // Server certificate for localhost / 127.0.0.1.
        let (cert, key) = Self::leaf(&ca_issuer, &["localhost", "127.0.0.1"], false);
        std::fs::write(dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        let (cert, key) = Self::leaf(&ca_issuer, &["scraper"], true);
        std::fs::write(dir.path().join("client.pem"), cert).unwrap();
        std::fs::write(dir.path().join("client.key"), key).unwrap();
        // A client certificate from a CA the server does not trust.
        let (_, rogue_issuer) = Self::make_ca("rogue CA");
        let (cert, key) = Self::leaf(&rogue_issuer, &["scraper"], true);
        std::fs::write(dir.path().join("rogue.pem"), cert).unwrap();
        std::fs::write(dir.path().join("rogue.key"), key).unwrap();
        Pki { dir, ca: ca_der }
    }

    fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert, rcgen::Issuer::new(p, key))
    }

    fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, names: &[&str], client: bool) -> (String, String) {
        let mut p = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        p.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.pem(), key_pem(&key))
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn write_config(&self, yaml: &str) -> String {
        let p = self.dir.path().join("web.yml");
        std::fs::write(&p, yaml).unwrap();
        p.to_str().unwrap().to_owned()
    }

    fn client_identity(&self, name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let certs = CertificateDer::pem_file_iter(self.dir.path().join(format!("{name}.pem")))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.dir.path().join(format!("{name}.key"))).unwrap();
        (certs, key)
    }
}

/// One HTTPS GET with `Connection: close`; `Err` when the handshake fails or no HTTP response
/// comes back.
fn tls_get(
    addr: &str,
    ca: &CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    path: &str,
) -> Result<(u16, String), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match identity {
        Some((c, k)) => b.with_client_auth_cert(c, k).unwrap(),
        None => b.with_no_client_auth(),
    };
    let conn = rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    match tls.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if buf.is_empty() => return Err(format!("read: {e}")),
        Err(_) => {}
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    Ok((status, text))
}

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// Starts the collector with a web config and expects it to stop with one error line
/// containing `want`.
fn rejects(config: &str, want: &str) {
    let out = Command::new(common::BIN)
        .args(["--web.listen-address", "127.0.0.1:0", "--web.config.file", config])
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {config}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{stderr}");
    assert!(lines[0].contains(want) && lines[0].contains("--web.config.file"), "{want:?} not in {:?}", lines[0]);
}

#[test]
fn invalid_web_configs_stop_start_up_with_one_line() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    rejects("/nonexistent/web.yml", "/nonexistent/web.yml");
    rejects(&file("typo.yml", "tls_server_config:\n  cert_fil: server.pem\n"), "unknown field `cert_fil`");
    rejects(&file("top.yml", "basic_auth:\n  a: b\n"), "unknown field `basic_auth`");
    rejects(&file("yaml.yml", "tls_server_config: [\n"), "web config");
    rejects(&file("missing.yml", "tls_server_config:\n  cert_file: nope.pem\n  key_file: server.key\n"), "nope.pem");
    std::fs::write(dir.join("garbage.pem"), "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
        .unwrap();
    rejects(
        &file("badcert.yml", "tls_server_config:\n  cert_file: garbage.pem\n  key_file: server.key\n"),
        "cert_file",
    );
    // A key that does not belong to the certificate.
    rejects(&file("mismatch.yml", "tls_server_config:\n  cert_file: server.pem\n  key_file: client.key\n"), "key");
    rejects(&file("plain.yml", "basic_auth_users:\n  alice: hunter2\n"), "not a bcrypt hash");
    rejects(
        &file(
            "noca.yml",
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n",
        ),
        "needs client_ca_file",
    );
    rejects(
        &file(
            "tls10.yml",
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS10\n",
        ),
        "not supported",
    );
}

#[test]
fn tls_with_client_certificates() {
    let pki = Pki::new();
    let cfg = pki.write_config(&format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
        pki.path("server.key") // absolute and relative names both work
    ));
    let c = start(&with(NO_BPF, &["--web.config.file", &cfg]));
    wait_log(&c, "\"tls\":true");

    let (status, body) = tls_get(&c.addr, &pki.ca, Some(pki.client_identity("client")), BOTH, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("system_memory_total_bytes"));
    // TLS 1.2 clients are served too (the default min_version).
    let (status, _) = tls_get(&c.addr, &pki.ca, Some(pki.client_identity("client")), TLS12_ONLY, "/metrics").unwrap();
    assert_eq!(status, 200);

    // No client certificate, or one from another CA: no response.
    let e = tls_get(&c.addr, &pki.ca, None, BOTH, "/metrics").unwrap_err();
    assert!(!e.is_empty());
    tls_get(&c.addr, &pki.ca, Some(pki.client_identity("rogue")), BOTH, "/metrics").unwrap_err();
    // Plain HTTP on the TLS port gets nothing.
    assert!(ureq::get(&c.url("/metrics")).timeout(Duration::from_secs(10)).call().is_err());
    // The collector is still serving after all that.
    let (status, _) = tls_get(&c.addr, &pki.ca, Some(pki.client_identity("client")), BOTH, "/-/healthy").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn tls_min_version_is_enforced() {
    let pki = Pki::new();
    let cfg =
        pki.write_config("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS13\n");
    let c = start(&with(NO_BPF, &["--web.config.file", &cfg, "--web.header-read-timeout", "1s"]));
    assert_eq!(tls_get(&c.addr, &pki.ca, None, BOTH, "/metrics").unwrap().0, 200);
    // A client that never starts the handshake is cut off at the header-read timeout.
    let mut idle = TcpStream::connect(&c.addr).unwrap();
    let closed = wait_closed(&mut idle, Duration::from_secs(10), |_| {}).expect("TLS port held by an idle client");
    assert!(closed < Duration::from_secs(3), "{closed:?}");
    let e = tls_get(&c.addr, &pki.ca, None, TLS12_ONLY, "/metrics").unwrap_err();
    assert!(e.contains("ProtocolVersion") || e.contains("alert") || e.contains("HandshakeFailure"), "{e}");
}

#[test]
fn basic_auth_and_security_headers() {
    let pki = Pki::new();
    let hash = bcrypt::hash("correct horse", 10).unwrap();
    let cfg = pki.write_config(&format!(
        "basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
    ));
    let c = start(&with(NO_BPF, &["--web.config.file", &cfg]));
    use base64::Engine as _;
    let basic =
        |u: &str, p: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
    for path in ["/metrics", "/", "/-/healthy"] {
        match ureq::get(&c.url(path)).call() {
            Err(ureq::Error::Status(401, r)) => {
                assert_eq!(r.header("www-authenticate"), Some("Basic"));
                assert_eq!(r.header("x-frame-options"), Some("deny"));
            }
            other => panic!("{path} without credentials: {other:?}"),
        }
    }
    for (u, p) in [("alice", "wrong"), ("bob", "correct horse"), ("alice", "")] {
        assert!(
            matches!(
                ureq::get(&c.url("/metrics")).set("Authorization", &basic(u, p)).call(),
                Err(ureq::Error::Status(401, _))
            ),
            "{u}:{p}"
        );
    }
    // The right credentials; repeated scrapes are answered from the verification cache
    // (a bcrypt at cost 10 takes tens of milliseconds; cached checks take microseconds).
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = ureq::get(&c.url("/metrics")).set("Authorization", &basic("alice", "correct horse")).call().unwrap();
        times.push(t.elapsed());
        assert_eq!(r.status(), 200);
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.into_string().unwrap().contains("system_memory_total_bytes"));
    }
}

/// Reads until the server closes the connection; returns how long that took (None if it stayed
/// open for `limit`). `tick` is called every 100 ms while waiting (to trickle bytes).
fn wait_closed(s: &mut TcpStream, limit: Duration, mut tick: impl FnMut(&mut TcpStream)) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {} // e.g. a 408 before the close
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => tick(s),
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn slow_clients_cannot_hold_connections() {
    let c = start(&with(NO_BPF, &["--web.header-read-timeout", "1s"]));
    // Slowloris: a request head trickled a byte every 100 ms, never finished.
    let mut slow = TcpStream::connect(&c.addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    let closed = wait_closed(&mut slow, Duration::from_secs(10), |s| {
        let _ = s.write_all(b"a");
    });
    let closed = closed.expect("a trickling client held the connection for 10 s");
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");

    // A client that connects and sends nothing, and an idle keep-alive connection.
    let mut idle = TcpStream::connect(&c.addr).unwrap();
    assert!(
        wait_closed(&mut idle, Duration::from_secs(10), |_| {}).expect("idle connection held") < Duration::from_secs(3)
    );
    let mut ka = TcpStream::connect(&c.addr).unwrap();
    ka.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(wait_closed(&mut ka, Duration::from_secs(10), |_| {}).expect("keep-alive held") < Duration::from_secs(3));

    // 200 slow connections at once do not keep a scrape from being served.
    let mut held: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&c.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    let t = Instant::now();
    let m = c.scrape();
    assert!(m.get("system_memory_total_bytes", &[]) > 0.0);
    assert!(t.elapsed() < Duration::from_secs(2), "scrape took {:?} under 200 slow connections", t.elapsed());
    for s in &mut held {
        assert!(wait_closed(s, Duration::from_secs(10), |_| {}).is_some());
    }
}

/// A procfs whose loadavg is a FIFO: a scrape blocks in the collector until something writes.
fn blocking_procfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fifo = std::ffi::CString::new(dir.path().join("loadavg").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    dir
}

fn only_loadavg(procfs: &Path, more: &[&str]) -> Vec<String> {
    let mut a = with(
        NO_BPF,
        &[
            "--no-collector.cpu",
            "--no-collector.meminfo",
            "--no-collector.pressure",
            "--no-collector.diskstats",
            "--no-collector.netdev",
            "--path.procfs",
            procfs.to_str().unwrap(),
        ],
    );
    a.extend(more.iter().map(|s| s.to_string()));
    a
}

fn get_status(url: &str) -> (u16, String) {
    match ureq::get(url).timeout(Duration::from_secs(20)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{url}: {e}"),
    }
}

#[test]
fn concurrent_scrapes_beyond_the_limit_get_503_and_slow_ones_time_out() {
    let procfs = blocking_procfs();
    let c = start(&only_loadavg(procfs.path(), &["--web.max-requests", "2", "--web.request-timeout", "2s"]));
    let url = c.url("/metrics");
    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (get_status(&url), t.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    // Two scrapes are in flight (blocked on the FIFO): a third is refused at once.
    let t = Instant::now();
    let (status, body) = get_status(&url);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Limit of concurrent requests reached (2)"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(1));
    // Other pages are not limited.
    assert_eq!(get_status(&c.url("/-/healthy")).0, 200);
    // The blocked scrapes are answered 503 at the request timeout.
    for b in blocked {
        let ((status, _), took) = b.join().unwrap();
        assert_eq!(status, 503);
        assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(5), "{took:?}");
    }
    // Their collection work is still stuck, so the slots are still taken.
    assert_eq!(get_status(&url).0, 503);

    // Unblock: answer every reader of the FIFO from now on.
    let fifo = procfs.path().join("loadavg");
    std::thread::spawn(move || {
        loop {
            let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) else { return };
            let _ = f.write_all(b"0.50 0.40 0.30 1/100 1234\n");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_status(&url);
        // A stuck reader and a new one can share one write to the FIFO: one of them then reads
        // nothing and that scrape has no load average. The next one does.
        if status == 200 && !common::Metrics::parse(&body).find("system_load_average", &[("period", "1m")]).is_empty() {
            let m = common::Metrics::parse(&body);
            assert_eq!(m.get("system_load_average", &[("period", "1m")]), 0.5);
            break;
        }
        assert!(Instant::now() < deadline, "still {status} (or no load average) after unblocking");
        std::thread::sleep(Duration::from_millis(100));
    }
}
