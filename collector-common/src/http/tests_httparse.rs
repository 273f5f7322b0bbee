//! The framer against a reference parser, httparse (the parser of hyper, the Rust ecosystem's
//! HTTP/1.x standard): generated message heads — header names in any case, with or without
//! space after the colon, long and odd headers, framing headers anywhere, HTTP/1.0 and 1.1,
//! any status and reason — delivered in segments of random sizes. Where httparse reads a
//! complete head whose framing RFC 9112 fixes (one Content-Length of digits and no
//! Transfer-Encoding, or Transfer-Encoding: chunked), the framer must report the same method
//! or status and the body size. (What a head httparse would reject leads to is the peers'
//! business: a server answers it, 400 or otherwise, and the framer counts what they exchanged;
//! the fuzz target covers such bytes.)
extern crate std;

use std::{format, string::String, vec::Vec};

use super::{method, sim::Conn};

/// xorshift64*: deterministic, so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// A header name in a random case.
fn cased(r: &mut Rng, name: &str) -> String {
    name.chars().map(|c| if r.below(2) == 0 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect()
}

/// How a generated message frames its body.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    Length(usize),
    Chunked(usize),
    None,
}

/// Header lines (each ending in CRLF) around the framing header, and the body.
fn headers_and_body(r: &mut Rng, head: &mut Vec<u8>, body: &mut Vec<u8>) -> Framing {
    let others = ["Host", "Server", "Date", "Cache-Control", "X-Request-Id", "Content-Type", "Connection", "Vary"];
    let framing = match r.below(3) {
        0 => Framing::Length(r.below(3000) as usize),
        1 => Framing::Chunked(1 + r.below(4) as usize),
        _ => Framing::None,
    };
    let n = r.below(12) as usize;
    let at = r.below(n as u64 + 1) as usize;
    for i in 0..=n {
        if i == at {
            let sp = ["", " ", "  ", "\t"][r.below(4) as usize];
            match framing {
                Framing::Length(len) => {
                    head.extend_from_slice(format!("{}:{sp}{len}\r\n", cased(r, "content-length")).as_bytes())
                }
                Framing::Chunked(_) => head.extend_from_slice(
                    format!("{}:{sp}{}\r\n", cased(r, "transfer-encoding"), cased(r, "chunked")).as_bytes(),
                ),
                Framing::None => {}
            }
        }
        if i < n {
            let pick = r.pick(&others);
            let name = cased(r, pick);
            let len = if r.below(8) == 0 { 200 + r.below(300) } else { r.below(40) };
            let value: String = (0..len).map(|k| (b'a' + ((k * 7 + len) % 26) as u8) as char).collect();
            let sp = if r.below(3) == 0 { "" } else { " " };
            head.extend_from_slice(format!("{name}:{sp}{value}\r\n").as_bytes());
        }
    }
    head.extend_from_slice(b"\r\n");
    match framing {
        Framing::Length(len) => body.extend((0..len).map(|k| b'a' + (k % 26) as u8)),
        Framing::Chunked(chunks) => {
            for c in 0..chunks {
                let size = 1 + (c * 37) % 200;
                body.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                body.extend((0..size).map(|_| b'x'));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::None => {}
    }
    framing
}

/// Body bytes a framing carries.
fn body_size(f: Framing) -> u64 {
    match f {
        Framing::Length(n) => n as u64,
        Framing::Chunked(chunks) => (0..chunks).map(|c| (1 + (c * 37) % 200) as u64).sum(),
        Framing::None => 0,
    }
}

/// What httparse says of a head's framing: Some((content length, chunked)) for a complete
/// head whose framing is fixed, None otherwise.
fn reference_framing(headers: &[httparse::Header<'_>]) -> Option<(Option<u64>, bool)> {
    let cl: Vec<&[u8]> =
        headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")).map(|h| h.value).collect();
    let te: Vec<&[u8]> =
        headers.iter().filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding")).map(|h| h.value).collect();
    match (cl.as_slice(), te.as_slice()) {
        ([], []) => Some((None, false)),
        ([v], []) => {
            let s = std::str::from_utf8(v).ok()?.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((Some(s.parse().ok()?), false))
        }
        ([], [v]) => std::str::from_utf8(v).ok()?.trim().eq_ignore_ascii_case("chunked").then_some((None, true)),
        _ => None,
    }
}

/// Delivers `bytes` of one direction in segments of random sizes, in order.
fn deliver(c: &mut Conn, r: &mut Rng, is_req: bool, from: usize, now: u64) {
    let end = c.len(is_req);
    let mut o = from;
    while o < end {
        let n = (1 + r.below(700) as usize).min(end - o);
        c.segment(is_req, o, n, false, now);
        o += n;
    }
}

#[test]
fn responses_agree_with_httparse() {
    let mut agreed = 0;
    for seed in 1..=3000u64 {
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let status = 200 + r.below(400) as u16;
        let version = if r.below(4) == 0 { "1.0" } else { "1.1" };
        let reason = r.pick(&["OK", "Not Found", "", "Some Reason Phrase"]);
        let mut head = format!("HTTP/{version} {status} {reason}\r\n").into_bytes();
        let mut body = Vec::new();
        let framing = headers_and_body(&mut r, &mut head, &mut body);
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut hs);
        let parsed = resp.parse(&head);
        let mut c = Conn::new(false, 1000, 5000);
        c.write(true, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        c.write(false, &head);
        c.write(false, &body);
        deliver(&mut c, &mut r, true, 0, 10);
        deliver(&mut c, &mut r, false, 0, 20);
        match parsed {
            Ok(httparse::Status::Complete(n)) => {
                assert_eq!(n, head.len(), "seed {seed}");
                let Some((cl, chunked)) = reference_framing(resp.headers) else { continue };
                if status == 204 || status == 304 || (cl.is_none() && !chunked) {
                    // No body, or one that runs to the end of the connection.
                    continue;
                }
                assert_eq!(c.sink.done.len(), 1, "seed {seed}: {framing:?}\n{}", String::from_utf8_lossy(&head));
                let d = &c.sink.done[0];
                assert_eq!((d.status, d.resp_bytes), (resp.code.unwrap(), body_size(framing)), "seed {seed}");
                agreed += 1;
            }
            Ok(httparse::Status::Partial) => panic!("seed {seed}: a whole head is partial to httparse"),
            Err(e) => panic!("seed {seed}: httparse rejects a generated head ({e})"),
        }
    }
    assert!(agreed > 1000, "only {agreed} heads compared");
}

#[test]
fn requests_agree_with_httparse() {
    let mut agreed = 0;
    for seed in 1..=3000u64 {
        let mut r = Rng(seed.wrapping_mul(0xd1b5_4a32_d192_ed03) | 1);
        let m = r.pick(&["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"]);
        let target = r.pick(&["/", "/a/b?c=d&e=f", "*", "/very/long/path/that/goes/on/and/on/index.html"]);
        let version = if r.below(4) == 0 { "1.0" } else { "1.1" };
        let mut head = format!("{m} {target} HTTP/{version}\r\n").into_bytes();
        let mut body = Vec::new();
        let framing = headers_and_body(&mut r, &mut head, &mut body);
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut hs);
        let parsed = req.parse(&head);
        let mut c = Conn::new(true, 1000, 5000);
        c.write(true, &head);
        c.write(true, &body);
        c.write(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        deliver(&mut c, &mut r, true, 0, 10);
        deliver(&mut c, &mut r, false, 0, 20);
        match parsed {
            Ok(httparse::Status::Complete(_)) => {
                let Some((cl, chunked)) = reference_framing(req.headers) else { continue };
                let size = if cl.is_some() || chunked { body_size(framing) } else { 0 };
                assert_eq!(c.sink.done.len(), 1, "seed {seed}: {framing:?}\n{}", String::from_utf8_lossy(&head));
                let d = &c.sink.done[0];
                let want = method::NAMES.iter().position(|n| *n == req.method.unwrap()).unwrap_or(0) as u8;
                assert_eq!((d.method, d.req_bytes), (want, size), "seed {seed}");
                agreed += 1;
            }
            Ok(httparse::Status::Partial) => panic!("seed {seed}: a whole head is partial to httparse"),
            Err(e) => panic!("seed {seed}: httparse rejects a generated head ({e})"),
        }
    }
    assert!(agreed > 1000, "only {agreed} heads compared");
}
