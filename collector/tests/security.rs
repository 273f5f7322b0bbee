//! Endpoint security (TLS, client certificates, basic auth, an invalid web config), timeouts
//! against slow clients, the cap on concurrent scrapes, privacy of HTTP payloads, and least
//! privilege (capabilities dropped after attach, running with capabilities instead of root).
mod common;

#[path = "common/http.rs"]
mod http_util;

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

/// Only procfs collectors: fast start, no programs.
const NO_BPF: &[&str] = &["--no-collector.diskbpf", "--no-collector.netbpf", "--no-collector.http"];

fn with(base: &[&str], more: &[&str]) -> Vec<String> {
    base.iter().chain(more).map(|s| s.to_string()).collect()
}

/// Waits for `needle` in the collector's log (the log reader runs on its own thread).
fn wait_log(c: &Collector, needle: &str) {
    assert!(c.log_appears(needle, Duration::from_secs(5)), "{needle:?} not in the log:\n{}", c.log_text());
}

/// The capability the collector keeps to read its maps, as a mask: kernels before 6.x (5.10
/// here) check CAP_BPF on every bpf() call while `kernel.unprivileged_bpf_disabled` is set, and
/// the collector then keeps that one capability, saying so in its log. 0 elsewhere.
fn kept_for_maps(c: &Collector) -> u64 {
    wait_log(c, "collector started");
    let log = c.log_text();
    let Some(line) = log.lines().find(|l| l.contains("checks capabilities on every bpf() call")) else { return 0 };
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap();
    assert_ne!(disabled.trim(), "0", "a capability kept while unprivileged BPF is allowed: {line}");
    if line.contains("CAP_BPF") {
        1 << 39
    } else {
        assert!(line.contains("CAP_SYS_ADMIN"), "{line}");
        1 << 21
    }
}

/// A wrapper that raises the BPF memory limit, as a service unit with LimitMEMLOCK=infinity
/// does, on kernels that need it: before 5.11 maps are charged to RLIMIT_MEMLOCK, which a
/// process without CAP_SYS_RESOURCE cannot raise itself (README, Security). Elsewhere `env`,
/// which changes nothing.
fn memlock() -> [&'static str; 2] {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (v.next().unwrap(), v.next().unwrap());
    if (major, minor) < (5, 11) { ["prlimit", "--memlock=unlimited:unlimited"] } else { ["env", "--"] }
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

#[test]
fn http_payloads_never_reach_the_metrics() {
    let c = Collector::start(&["--no-collector.diskbpf"]);
    let srv = http_util::TestServer::start("127.0.0.1");
    let secret = format!("Zq{}x{}Secret", std::process::id(), Instant::now().elapsed().as_nanos() % 9973);
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    let body = format!("password={secret}");
    let req = format!(
        "POST /{secret}/login?token={secret} HTTP/1.1\r\nHost: {secret}.example\r\nCookie: session={secret}\r\n\
         Authorization: Bearer {secret}\r\nUser-Agent: {secret}\r\nX-{secret}: {secret}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut exchange = |s: &mut TcpStream, req: &[u8]| {
        s.write_all(req).unwrap();
        let mut buf = [0u8; 4096];
        let before = String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count();
        while String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count() == before {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
    };
    exchange(&mut s, req.as_bytes());
    // A request whose method is the secret too (longer than any known method: over 30 bytes).
    exchange(&mut s, format!("{}-LONG-METHOD-TOKEN / HTTP/1.1\r\nHost: x\r\n\r\n", secret.to_uppercase()).as_bytes());
    let text = c.scrape_text();
    let m = common::Metrics::parse(&text);
    let port = srv.port.to_string();
    let seen: f64 =
        m.find("http_server_request_duration_seconds_count", &[("server_port", &port)]).iter().map(|s| s.value).sum();
    // Both are measured: the POST, and the request with an unknown method as `_OTHER`.
    assert_eq!(seen, 2.0, "requests measured");
    let other = m.find(
        "http_server_request_duration_seconds_count",
        &[("server_port", &port), ("http_request_method", "_OTHER")],
    );
    assert_eq!(other.iter().map(|s| s.value).sum::<f64>(), 1.0, "{other:?}");
    for needle in [secret.as_str(), &secret.to_uppercase(), &secret.to_lowercase(), "login", "password", "Bearer"] {
        assert!(!text.contains(needle), "{needle:?} appears in /metrics");
    }
    assert!(!c.log_text().contains(&secret), "the secret appears in the log");
}

/// `CapEff`, `CapPrm`, `CapInh`, `CapAmb` and `CapBnd` of every thread of `pid`.
fn thread_caps(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        for l in status.lines() {
            if let Some((k, v)) = l.split_once(':')
                && k.starts_with("Cap")
            {
                out.push((
                    format!("{}/{k}", t.file_name().to_string_lossy()),
                    u64::from_str_radix(v.trim(), 16).unwrap(),
                ));
            }
        }
    }
    out
}

/// Whether diskbpf may be skipped: with capabilities only, kernels that keep tracepoint events
/// to CAP_SYS_ADMIN at `kernel.perf_event_paranoid` 3 (Debian 11's 5.10) refuse it, and the
/// collector must then say so in the reason (README, Security).
fn diskbpf_refused(m: &common::Metrics) -> bool {
    let skipped = m.find("collector_collector_skipped_info", &[("collector", "diskbpf")]);
    let Some(s) = skipped.first() else { return false };
    let level = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap();
    assert!(s.labels["reason"].contains("perf_event_paranoid") && level.trim() == "3", "{s:?}");
    true
}

/// Scrapes until the eBPF collectors have all succeeded twice and their counters moved.
fn ebpf_collectors_work(c: &Collector) {
    let before = c.scrape();
    let disk = if diskbpf_refused(&before) { &[][..] } else { &["diskbpf"][..] };
    for name in disk.iter().chain(&["netbpf", "http"]) {
        assert_eq!(before.get("collector_collector_enabled", &[("collector", name)]), 1.0, "{name}: {}", c.log_text());
        assert_eq!(before.get("collector_scrape_collector_success", &[("collector", name)]), 1.0, "{name}");
    }
    // Traffic the programs must see after the privileges are gone.
    let srv = http_util::TestServer::start("127.0.0.1");
    let mut cl = http_util::Client::connect(&srv.addr);
    for _ in 0..3 {
        assert_eq!(cl.get("/x").status, 200);
    }
    let after = c.scrape();
    for name in disk.iter().chain(&["netbpf", "http"]) {
        assert_eq!(after.get("collector_scrape_collector_success", &[("collector", name)]), 1.0, "{name}");
    }
    let port = srv.port.to_string();
    let n: f64 = after
        .find("http_server_request_duration_seconds_count", &[("server_port", &port)])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(n, 3.0);
    let total =
        |m: &common::Metrics| -> f64 { m.find("cgroup_network_bytes_total", &[]).iter().map(|s| s.value).sum() };
    assert!(total(&after) > total(&before));
}

#[test]
fn every_capability_is_dropped_after_attach() {
    // The HTTPS capture keeps what attaching uprobes later needs (see the next tests).
    let c = Collector::start(&["--no-identity.environment", "--no-collector.http.tls"]);
    let kept = kept_for_maps(&c);
    let caps = thread_caps(c.pid());
    assert!(caps.len() >= 5 * 3, "threads: {caps:?}");
    for (what, v) in &caps {
        let want = if what.ends_with("CapAmb") { 0 } else { kept };
        assert_eq!(*v, want, "{what} = {v:#x}");
    }
    if kept == 0 {
        wait_log(&c, "\"capabilities\":\"none\"");
    }
    ebpf_collectors_work(&c);
    // Scrapes ran on the worker threads without capabilities, and still none came back.
    assert!(thread_caps(c.pid()).iter().all(|(_, v)| *v & !kept == 0));
}

#[test]
fn capabilities_keep_keeps_the_named_ones() {
    let c = Collector::start(&[
        "--no-collector.diskbpf",
        "--no-collector.http.tls",
        "--capabilities.keep",
        "cap_net_admin",
    ]);
    let kept = kept_for_maps(&c);
    // CAP_NET_ADMIN as asked, and nothing for the processes' declared service names (identity,
    // on by default): the helper reads them.
    for (what, v) in thread_caps(c.pid()) {
        if what.ends_with("CapEff") || what.ends_with("CapPrm") || what.ends_with("CapBnd") {
            assert_eq!(v, (1 << 12) | kept, "{what} = {v:#x}");
        }
    }
    wait_log(&c, "CAP_NET_ADMIN");
    wait_log(&c, "read by the privileged helper");
}

/// Files the HTTPS capture's uprobes are attached to, by the last scrape.
fn tls_attached(c: &Collector) -> usize {
    c.scrape().find("collector_tls_attached", &[]).iter().filter(|s| s.value == 1.0).count()
}

/// A process that maps OpenSSL (Python's ssl module, asleep), and waits until the capture has
/// attached to a file (the host's libssl at start-up, or this process's at the next scan: in
/// the kernel matrix's chroot the host's library directories are not process 1's).
fn tls_process_attached(c: &Collector) -> common::process::KillOnDrop {
    let p = common::process::KillOnDrop(
        Command::new("python3").args(["-c", "import ssl, time; time.sleep(120)"]).spawn().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while tls_attached(c) == 0 {
        assert!(Instant::now() < deadline, "nothing attached:\n{}", c.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    p
}

/// The helper the collector forked: its pid (the collector's one child).
fn helper_of(c: &Collector) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", c.pid())).unwrap();
    let kids: Vec<u32> = children.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(kids.len(), 1, "children {kids:?}");
    assert_eq!(std::fs::read_to_string(format!("/proc/{}/comm", kids[0])).unwrap().trim(), "collector-help");
    kids[0]
}

/// A line of /proc/<pid>/status, after its key.
fn status_of(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("{key}: {status}"));
    line.split_once(':').unwrap().1.trim().to_owned()
}

/// The process that listens on the network runs as its own user (`--runas.user`) without any
/// capability and with no_new_privs, while every collector works; another user's declared
/// service name still names its series, through the helper forked before the drop: root's, with
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH only, no_new_privs, and no descriptor or eBPF map of
/// the collector's but its socket.
#[test]
fn the_listening_process_runs_as_its_own_user_without_capabilities() {
    let c = Collector::start(&["--runas.user=65532", "--no-collector.http.tls"]);
    let kept = kept_for_maps(&c);
    let pid = c.pid();
    assert_eq!(status_of(pid, "Uid"), "65532\t65532\t65532\t65532");
    assert_eq!(status_of(pid, "Gid"), "65532\t65532\t65532\t65532");
    assert_eq!(status_of(pid, "Groups"), "");
    assert_eq!(status_of(pid, "NoNewPrivs"), "1");
    for (what, v) in thread_caps(pid) {
        let want = if what.ends_with("CapAmb") { 0 } else { kept };
        assert_eq!(v, want, "{what} = {v:#x}");
    }
    if kept == 0 {
        wait_log(&c, "\"capabilities\":\"none\"");
    }
    let helper = helper_of(&c);
    assert_eq!(status_of(helper, "Uid"), "0\t0\t0\t0");
    assert_eq!(status_of(helper, "NoNewPrivs"), "1");
    for (what, v) in thread_caps(helper) {
        let want = if what.ends_with("CapAmb") || what.ends_with("CapInh") { 0 } else { (1 << 19) | (1 << 2) };
        assert_eq!(v, want, "helper {what} = {v:#x}");
    }
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{helper}/fd"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_link(e.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(fds.len(), 4, "{fds:?}");
    assert_eq!(fds.iter().filter(|f| f.starts_with("socket:")).count(), 1, "{fds:?}");
    let maps = std::fs::read_to_string(format!("/proc/{helper}/maps")).unwrap();
    assert!(!maps.contains("bpf"), "the helper maps eBPF objects: {maps}");
    ebpf_collectors_work(&c);
    // Another user's process (uid 65534, not the collector's): its environment is the
    // owner's, behind a ptrace check.
    let port = common::process::free_port();
    let _srv = common::process::KillOnDrop(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "env", "OTEL_SERVICE_NAME=ledger"])
            .args(["python3", "-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory", "/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::process::wait_port(port);
    let mut n = 0.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while n < 3.0 && Instant::now() < deadline {
        let out =
            Command::new("curl").args(["-sf", "-o", "/dev/null"]).arg(format!("http://127.0.0.1:{port}/")).status();
        assert!(out.unwrap().success());
        n = c
            .scrape()
            .find("http_server_request_duration_seconds_count", &[("server_port", &port.to_string())])
            .iter()
            .filter(|s| s.labels["service_name"] == "ledger")
            .map(|s| s.value)
            .sum();
    }
    assert!(
        n >= 3.0,
        "another user's declared name: {:?}",
        c.scrape().find("http_server_request_duration_seconds_count", &[])
    );
    assert_eq!(c.scrape().get("collector_helper_up", &[]), 1.0);
}

/// The helper killed: the collector says so (log and collector_helper_up 0), reaps it, and
/// everything else goes on; the HTTPS capture, whose uprobes were the helper's, says it stopped
/// and reports no file attached any more.
#[test]
fn the_helper_killed_mid_run_is_reported_and_the_rest_goes_on() {
    let mut c = Collector::start(&[]);
    wait_log(&c, "collector started");
    let _tls = tls_process_attached(&c);
    let helper = helper_of(&c);
    assert_eq!(c.scrape().get("collector_helper_up", &[]), 1.0);
    assert!(Command::new("kill").args(["-KILL", &helper.to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.scrape().get("collector_helper_up", &[]) != 0.0 {
        assert!(Instant::now() < deadline, "collector_helper_up still 1");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_log(&c, "the privileged helper is gone");
    wait_log(&c, "tls: the privileged helper is gone, and its uprobes with it");
    assert_eq!(tls_attached(&c), 0);
    // Reaped: no zombie left.
    assert!(!Path::new(&format!("/proc/{helper}")).exists(), "helper {helper} not reaped");
    ebpf_collectors_work(&c);
    assert!(c.child.0.try_wait().is_ok_and(|s| s.is_none()), "the collector exited");
}

/// The HTTPS capture attaches uprobes to libraries found after start-up and reads every
/// process's memory map and files: the helper does it, with CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH
/// and the capability the kernel's uprobe events ask for (CAP_PERFMON, or CAP_SYS_ADMIN on
/// kernels that still want it, which the collector tries and logs), and nothing else. The
/// listening process keeps none of them; the helper holds the uprobe programs, their links and
/// the watches, and no eBPF map.
#[test]
fn the_https_capture_runs_in_the_helper_and_the_listening_process_keeps_nothing() {
    let c = Collector::start(&["--runas.user=65532"]);
    let kept = kept_for_maps(&c);
    let pid = c.pid();
    assert_eq!(status_of(pid, "Uid"), "65532\t65532\t65532\t65532");
    assert_eq!(status_of(pid, "NoNewPrivs"), "1");
    for (what, v) in thread_caps(pid) {
        let want = if what.ends_with("CapAmb") { 0 } else { kept };
        assert_eq!(v, want, "{what} = {v:#x}");
    }
    wait_log(&c, "\"by\":\"the privileged helper\"");
    let admin = c.log_appears("attaches uprobes only with CAP_SYS_ADMIN", Duration::from_secs(1));
    let perf = if admin { 1 << 21 } else { 1 << 38 };
    let _tls = tls_process_attached(&c);
    let helper = helper_of(&c);
    assert_eq!(status_of(helper, "Uid"), "0\t0\t0\t0");
    assert_eq!(status_of(helper, "NoNewPrivs"), "1");
    for (what, v) in thread_caps(helper) {
        let want =
            if what.ends_with("CapAmb") || what.ends_with("CapInh") { 0 } else { perf | (1 << 19) | (1 << 2) | kept };
        assert_eq!(v, want, "helper {what} = {v:#x}");
    }
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{helper}/fd"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_link(e.path()).unwrap().display().to_string())
        .collect();
    assert!(
        fds.iter().skip(3).all(|f| f.starts_with("socket:")
            || ["anon_inode:bpf-prog", "anon_inode:bpf_link", "anon_inode:[perf_event]", "anon_inode:inotify"]
                .contains(&f.as_str())),
        "{fds:?}"
    );
    assert_eq!(fds.iter().filter(|f| f.starts_with("socket:")).count(), 1, "{fds:?}");
    assert_eq!(fds.iter().filter(|f| *f == "anon_inode:inotify").count(), 1, "{fds:?}");
    assert!(fds.iter().any(|f| f == "anon_inode:bpf-prog"), "{fds:?}");
    let maps = std::fs::read_to_string(format!("/proc/{helper}/maps")).unwrap();
    assert!(!maps.contains("bpf-map"), "the helper maps eBPF maps: {maps}");
    let line = |pid: u32| {
        ["Uid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs"].map(|k| format!("{k} {}", status_of(pid, k))).join(", ")
    };
    eprintln!("listening process {pid}: {}; helper {helper}: {}", line(pid), line(helper));
    // The probes attached are the helper's links.
    assert!(fds.iter().any(|f| f == "anon_inode:bpf_link" || f == "anon_inode:[perf_event]"), "{fds:?}");
    ebpf_collectors_work(&c);
}

#[test]
fn runs_as_root_with_only_bpf_perfmon_and_net_admin() {
    // uid 0, but the bounding set (and so every other set) holds only the three capabilities.
    let c = Collector::start_wrapped(
        &[memlock()[0], memlock()[1], "setpriv", "--bounding-set=-all,+bpf,+perfmon,+net_admin", "--inh-caps=-all"],
        &[],
    );
    ebpf_collectors_work(&c);
}

#[test]
fn runs_as_nobody_with_ambient_capabilities() {
    // A non-root user: tracefs is root-only (mode 0700), so reading the block tracepoints'
    // format files also needs CAP_DAC_READ_SEARCH.
    let set = "+bpf,+perfmon,+net_admin,+dac_read_search";
    let inh = format!("--inh-caps={set}");
    let amb = format!("--ambient-caps={set}");
    let c = Collector::start_wrapped(
        &[memlock()[0], memlock()[1], "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", &inh, &amb],
        &["--no-collector.http.tls"],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")), "{status}");
    ebpf_collectors_work(&c);
    // Without CAP_SETPCAP the bounding set stays; every set a thread can use is empty (but for
    // the capability map reads need on kernels that check it on every call).
    let kept = kept_for_maps(&c);
    assert!(thread_caps(c.pid()).iter().all(|(k, v)| k.ends_with("CapBnd") || *v & !kept == 0));
}

#[test]
fn netbpf_alone_needs_only_bpf_and_net_admin() {
    let c = Collector::start_wrapped(
        &[memlock()[0], memlock()[1], "setpriv", "--bounding-set=-all,+bpf,+net_admin", "--inh-caps=-all"],
        &["--no-collector.diskbpf", "--no-collector.http"],
    );
    let m = c.scrape();
    assert_eq!(m.get("collector_collector_enabled", &[("collector", "netbpf")]), 1.0, "{}", c.log_text());
    assert_eq!(m.get("collector_scrape_collector_success", &[("collector", "netbpf")]), 1.0);
    // The HTTP parser needs CAP_PERFMON: without it the start-up check names it.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all,+bpf,+net_admin", "--inh-caps=-all", common::BIN])
        .args(["--web.listen-address", "127.0.0.1:0", "--no-collector.diskbpf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing capabilities CAP_PERFMON"));
}
