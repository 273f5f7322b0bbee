//! A raw HTTP/1.x test server and client with exact control over framing: delays, body sizes,
//! chunking, byte-by-byte writes, interim responses, pipelining. Written on std::net rather than
//! an HTTP library because the tests need precisely the framings libraries hide.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// How the server answers, from the request's query string:
/// `delay_ms`, `size` (body bytes), `status`, `chunks` (chunked body in that many writes),
/// `close` (Connection: close), `split` (headers written byte by byte), `interim` (a 100
/// Continue first).
#[derive(Debug, Default, Clone)]
struct Plan {
    delay_ms: u64,
    size: usize,
    status: u16,
    chunks: usize,
    close: bool,
    split: bool,
    interim: bool,
}

fn plan(path: &str) -> Plan {
    let mut p = Plan { status: 200, ..Plan::default() };
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, "1"));
        let n: u64 = v.parse().unwrap_or(1);
        match k {
            "delay_ms" => p.delay_ms = n,
            "size" => p.size = n as usize,
            "status" => p.status = n as u16,
            "chunks" => p.chunks = n as usize,
            "close" => p.close = n != 0,
            "split" => p.split = n != 0,
            "interim" => p.interim = n != 0,
            _ => {}
        }
    }
    p
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    version: String,
    content_length: usize,
    chunked: bool,
}

fn read_head(r: &mut impl BufRead) -> Option<Head> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path, version) = (parts.next()?.to_owned(), parts.next()?.to_owned(), parts.next()?.to_owned());
    let (mut content_length, mut chunked) = (0, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.trim().parse().ok()?,
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    Some(Head { method, path, version, content_length, chunked })
}

/// Reads a body framed by Content-Length or chunked encoding; returns its length.
fn read_body(r: &mut impl BufRead, content_length: usize, chunked: bool) -> Option<usize> {
    if !chunked {
        let mut buf = vec![0u8; content_length];
        r.read_exact(&mut buf).ok()?;
        return Some(content_length);
    }
    let mut total = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim().split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                let mut t = String::new();
                r.read_line(&mut t).ok()?;
                if t.trim().is_empty() {
                    return Some(total);
                }
            }
        }
        let mut buf = vec![0u8; size + 2];
        r.read_exact(&mut buf).ok()?;
        total += size;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

fn respond(w: &mut impl Write, head: &Head, p: &Plan) -> std::io::Result<()> {
    if p.delay_ms > 0 {
        thread::sleep(Duration::from_millis(p.delay_ms));
    }
    if p.interim {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let http10 = head.version == "HTTP/1.0";
    let no_body = head.method == "HEAD" || p.status == 204 || p.status == 304;
    let mut headers = format!("HTTP/1.1 {} {}\r\nServer: collector-test\r\n", p.status, reason(p.status));
    if http10 {
        headers = format!("HTTP/1.0 {} {}\r\n", p.status, reason(p.status));
    } else if p.chunks > 0 && !no_body {
        headers.push_str("Transfer-Encoding: chunked\r\n");
    } else if p.status != 204 && p.status != 304 {
        headers.push_str(&format!("Content-Length: {}\r\n", p.size));
    }
    if p.close && !http10 {
        headers.push_str("Connection: close\r\n");
    }
    headers.push_str("\r\n");
    if p.split {
        for b in headers.as_bytes() {
            w.write_all(&[*b])?;
        }
    } else {
        w.write_all(headers.as_bytes())?;
    }
    if no_body {
        return Ok(());
    }
    let body = vec![b'x'; p.size];
    if p.chunks > 0 && !http10 {
        let per = p.size.div_ceil(p.chunks).max(1);
        for c in body.chunks(per) {
            w.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
            w.write_all(c)?;
            w.write_all(b"\r\n")?;
        }
        w.write_all(b"0\r\n\r\n")?;
    } else {
        w.write_all(&body)?;
    }
    Ok(())
}

/// One connection, read and written through one file descriptor (as servers do; a tracer
/// that pairs requests with responses by descriptor, as the benchmark's peer does, loses a
/// `try_clone`d pair).
fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut w = &stream;
    let mut r = BufReader::new(&stream);
    while let Some(head) = read_head(&mut r) {
        if read_body(&mut r, head.content_length, head.chunked).is_none() {
            return;
        }
        let p = plan(&head.path);
        if respond(&mut w, &head, &p).is_err() {
            return;
        }
        if p.close || head.version == "HTTP/1.0" {
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// The test server: a thread per connection, stopped on drop.
pub struct TestServer {
    pub port: u16,
    pub addr: String,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    /// Listens on `ip` ("127.0.0.1" or "::1") at a free port.
    pub fn start(ip: &str) -> TestServer {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let local = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        thread::spawn(move || {
            for s in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(s) = s {
                    thread::spawn(move || serve(s));
                }
            }
        });
        TestServer { port: local.port(), addr: local.to_string(), stop }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// One exchange as the client saw it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub status: u16,
    pub body: usize,
    pub latency: Duration,
}

/// A client connection that records each request's latency: from just before the request is
/// written to just after the last response byte is read.
pub struct Client {
    /// Read and written through one file descriptor (see `serve`).
    r: BufReader<TcpStream>,
    pub host: String,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { r: BufReader::new(s), host: addr.to_owned() }
    }

    /// The bytes of a request: a body is sent with Content-Length, or chunked in `chunks` pieces.
    pub fn encode(&self, method: &str, path: &str, body: &[u8], chunks: usize, version: &str) -> Vec<u8> {
        let mut out = format!("{method} {path} {version}\r\nHost: {}\r\nUser-Agent: collector-test\r\n", self.host);
        if chunks > 0 {
            out.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let mut v = out.into_bytes();
            let per = body.len().div_ceil(chunks).max(1);
            for c in body.chunks(per) {
                v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                v.extend_from_slice(c);
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"0\r\n\r\n");
            return v;
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        let mut v = out.into_bytes();
        v.extend_from_slice(body);
        v
    }

    /// Closes the connection with a RST instead of a FIN (SO_LINGER with a zero timeout).
    pub fn close_with_reset(self) {
        use std::os::fd::AsRawFd as _;
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        let r = unsafe {
            libc::setsockopt(
                self.r.get_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).unwrap();
    }

    /// Reads one final response (skipping 1xx); `head` says the request was HEAD.
    pub fn read_response(&mut self, head: bool) -> (u16, usize) {
        loop {
            let mut line = String::new();
            assert!(self.r.read_line(&mut line).unwrap() > 0, "connection closed before a response");
            let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            let http10 = line.starts_with("HTTP/1.0");
            let (mut cl, mut chunked) = (None, false);
            loop {
                let mut h = String::new();
                self.r.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (n, v) = h.split_once(':').unwrap();
                match n.to_ascii_lowercase().as_str() {
                    "content-length" => cl = Some(v.trim().parse::<usize>().unwrap()),
                    "transfer-encoding" => chunked = v.contains("chunked"),
                    _ => {}
                }
            }
            if (100..200).contains(&status) {
                continue;
            }
            if head || status == 204 || status == 304 {
                return (status, 0);
            }
            if chunked {
                return (status, read_body(&mut self.r, 0, true).unwrap());
            }
            if let Some(cl) = cl {
                return (status, read_body(&mut self.r, cl, false).unwrap());
            }
            assert!(http10 || cl.is_none());
            let mut rest = Vec::new();
            self.r.read_to_end(&mut rest).unwrap();
            return (status, rest.len());
        }
    }

    /// One request and its response, timed.
    pub fn exchange(&mut self, method: &str, path: &str, body: &[u8], chunks: usize) -> Exchange {
        let bytes = self.encode(method, path, body, chunks, "HTTP/1.1");
        let start = Instant::now();
        self.send(&bytes);
        let (status, body) = self.read_response(method == "HEAD");
        Exchange { status, body, latency: start.elapsed() }
    }

    /// A GET whose response has a Content-Length, read by spinning on a non-blocking socket: the
    /// measured latency then holds no scheduler wake-up of the client, which the kernel-side
    /// measure cannot see either.
    pub fn get_spinning(&mut self, path: &str) -> Exchange {
        assert!(self.r.buffer().is_empty(), "no buffered bytes before a spinning read");
        let bytes = self.encode("GET", path, b"", 0, "HTTP/1.1");
        let s = self.r.get_mut();
        s.set_nonblocking(true).unwrap();
        let start = Instant::now();
        s.write_all(&bytes).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let (status, body) = loop {
            match s.read(&mut buf) {
                Ok(0) => panic!("connection closed during a response"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let cl: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .expect("a Content-Length response")
                .trim()
                .parse()
                .unwrap();
            if got.len() >= end + 4 + cl {
                assert_eq!(got.len(), end + 4 + cl, "one response at a time");
                break (head.split_whitespace().nth(1).unwrap().parse().unwrap(), cl);
            }
        };
        let latency = start.elapsed();
        s.set_nonblocking(false).unwrap();
        Exchange { status, body, latency }
    }

    pub fn get(&mut self, path: &str) -> Exchange {
        self.exchange("GET", path, b"", 0)
    }
}
