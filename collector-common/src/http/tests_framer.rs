//! The framer's rules, on the host: framing (RFC 9112), pipelining, and following the streams
//! through loss, reordering and duplication of segments.
extern crate std;

use std::{format, string::String, vec, vec::Vec};

use super::{
    framer::S_LOST,
    method,
    sim::{Conn, Done},
};
use crate::drop;

/// How a message body is framed.
#[derive(Clone, Debug)]
pub enum Body {
    None,
    Length(usize),
    /// Chunk sizes (the terminating zero chunk is added).
    Chunked(Vec<usize>),
}

fn body_bytes(body: &Body, out: &mut Vec<u8>) -> usize {
    match body {
        Body::None => 0,
        Body::Length(n) => {
            out.extend((0..*n).map(|i| b'a' + (i % 26) as u8));
            *n
        }
        Body::Chunked(sizes) => {
            let mut total = 0;
            for s in sizes {
                out.extend_from_slice(format!("{s:x}\r\n").as_bytes());
                out.extend((0..*s).map(|i| b'0' + (i % 10) as u8));
                out.extend_from_slice(b"\r\n");
                total += s;
            }
            out.extend_from_slice(b"0\r\n\r\n");
            total
        }
    }
}

fn framing(body: &Body) -> String {
    match body {
        Body::None => String::new(),
        Body::Length(n) => format!("Content-Length: {n}\r\n"),
        Body::Chunked(_) => "Transfer-Encoding: chunked\r\n".into(),
    }
}

pub fn request(m: &str, body: &Body) -> Vec<u8> {
    let mut v = format!(
        "{m} /api/items?id=42 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: framer-test/1.0\r\n{}Accept: */*\r\n\r\n",
        framing(body)
    )
    .into_bytes();
    body_bytes(body, &mut v);
    v
}

pub fn response(status: u16, body: &Body) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status} Whatever\r\nServer: test\r\nDate: Sun, 29 Nov 2026 04:00:00 GMT\r\n{}Cache-Control: no-store\r\n\r\n",
        framing(body)
    )
    .into_bytes();
    body_bytes(body, &mut v);
    v
}

fn body_len(b: &Body) -> u64 {
    match b {
        Body::None => 0,
        Body::Length(n) => *n as u64,
        Body::Chunked(s) => s.iter().sum::<usize>() as u64,
    }
}

/// A simple xorshift generator: the tests are deterministic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What happens to the segments of the stream a host receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every `n`th segment is lost and arrives again after the `later` segments that follow it.
    Drop {
        n: usize,
        later: usize,
    },
    /// Every `n`th segment arrives twice.
    Duplicate {
        n: usize,
    },
    /// Every `n`th segment arrives after the next one.
    Swap {
        n: usize,
    },
}

/// Cuts `[from, to)` of a stream into segments of at most `mss` bytes and the order in which
/// they arrive under `fault`; `counter` counts segments across calls.
pub fn schedule(from: usize, to: usize, mss: usize, fault: Fault, counter: &mut usize) -> Vec<(usize, usize)> {
    let mut segs = Vec::new();
    let mut o = from;
    while o < to {
        let n = mss.min(to - o);
        segs.push((o, n));
        o += n;
    }
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut held: Vec<(usize, (usize, usize))> = Vec::new(); // (release after this many more, seg)
    for s in segs {
        *counter += 1;
        let hit = |n: usize| n > 0 && (*counter).is_multiple_of(n);
        let mut release = Vec::new();
        for h in held.iter_mut() {
            h.0 = h.0.saturating_sub(1);
        }
        match fault {
            Fault::Drop { n, later } if hit(n) => held.push((later + 1, s)),
            Fault::Swap { n } if hit(n) => held.push((2, s)),
            Fault::Duplicate { n } if hit(n) => {
                out.push(s);
                out.push(s);
            }
            _ => out.push(s),
        }
        held.retain(|h| {
            if h.0 == 1 {
                release.push(h.1);
                false
            } else {
                true
            }
        });
        for h in held.iter_mut().filter(|h| h.0 == 0) {
            h.0 = 1;
        }
        out.extend(release);
    }
    // What is still held arrives at the end (the retransmission after a timeout).
    out.extend(held.into_iter().map(|h| h.1));
    out
}

/// One request/response exchange of a scenario.
#[derive(Clone, Debug)]
pub struct Ex {
    pub method: &'static str,
    pub req_body: Body,
    pub status: u16,
    pub resp_body: Body,
}

impl Ex {
    fn get(status: u16, resp: Body) -> Ex {
        Ex { method: "GET", req_body: Body::None, status, resp_body: resp }
    }
}

fn method_id(m: &str) -> u8 {
    method::NAMES.iter().position(|n| *n == m).map_or(method::OTHER, |p| p as u8)
}

/// Runs a keep-alive scenario on one side (`server`: the host receives requests) with `fault`
/// on the stream it receives; `pipeline` requests are written before their responses.
pub fn run(exchanges: &[Ex], server: bool, mss: usize, fault: Fault, pipeline: usize) -> Conn {
    run_lagging(exchanges, server, mss, fault, pipeline, 0)
}

/// [`run`] with the kernel's in-order point `lag` segments behind what was delivered.
pub fn run_lagging(exchanges: &[Ex], server: bool, mss: usize, fault: Fault, pipeline: usize, lag: usize) -> Conn {
    let mut c = run_open(exchanges, server, mss, fault, pipeline, lag);
    // The reader has let go of the socket long before (its backlog processed).
    c.lag = 0;
    // The client closes the connection: a response whose gap was filled by the last segments
    // is recorded now, with the time the gap was filled (the kernel programs learn the socket's
    // in-order point on any segment; more than two runs beyond a gap are not tracked).
    let end = c.len(true);
    c.segment(true, end, 0, true, 2_000_000_000);
    c
}

/// [`run`] with the kernel's in-order point `lag` segments behind, and the connection left
/// open at the end.
pub fn run_open(exchanges: &[Ex], server: bool, mss: usize, fault: Fault, pipeline: usize, lag: usize) -> Conn {
    let mut c = Conn::new(server, 1_000, 4_000_000_000);
    c.lag = lag;
    let mut counter = 0;
    let mut now = 1_000_000u64;
    for batch in exchanges.chunks(pipeline.max(1)) {
        let from = c.len(true);
        for e in batch {
            c.write(true, &request(e.method, &e.req_body));
        }
        let to = c.len(true);
        let f = if server { fault } else { Fault::None };
        for (o, n) in schedule(from, to, mss, f, &mut counter) {
            now += 1_000;
            c.segment(true, o, n, false, now);
        }
        let from = c.len(false);
        for e in batch {
            c.write(false, &response(e.status, &e.resp_body));
        }
        let to = c.len(false);
        let f = if server { Fault::None } else { fault };
        for (o, n) in schedule(from, to, mss, f, &mut counter) {
            now += 1_000;
            c.segment(false, o, n, false, now);
        }
    }
    c
}

fn check_exact(c: &Conn, exchanges: &[Ex]) {
    let got: Vec<(u8, u16, u64, u64)> =
        c.sink.done.iter().map(|d| (d.method, d.status, d.req_bytes, d.resp_bytes)).collect();
    let want: Vec<(u8, u16, u64, u64)> = exchanges
        .iter()
        .map(|e| (method_id(e.method), e.status, body_len(&e.req_body), body_len(&e.resp_body)))
        .collect();
    assert_eq!(got, want, "drops {:?}", c.sink.drops);
    assert_eq!(c.sink.abandoned, 0);
    assert_eq!(c.ex.waiting(), 0);
    assert_eq!(c.sink.drops, [0; drop::COUNT as usize]);
}

fn mixed(n: usize) -> Vec<Ex> {
    (0..n)
        .map(|i| match i % 6 {
            0 => Ex::get(200, Body::Length(i * 37)),
            1 => Ex::get(404, Body::Length(0)),
            2 => Ex { method: "POST", req_body: Body::Length(3000 + i), status: 201, resp_body: Body::Length(12) },
            3 => Ex::get(200, Body::Chunked(vec![100, 3000, 7, 1])),
            4 => {
                Ex { method: "PUT", req_body: Body::Chunked(vec![500, 2500]), status: 500, resp_body: Body::Length(0) }
            }
            _ => Ex::get(200, Body::Length(70_000)),
        })
        .collect()
}

#[test]
fn keep_alive_both_sides_every_segment_size() {
    let ex = mixed(24);
    for mss in [1, 2, 3, 7, 13, 64, 127, 128, 129, 536, 1448, 65_535] {
        for server in [true, false] {
            let c = run(&ex, server, mss, Fault::None, 1);
            check_exact(&c, &ex);
        }
    }
}

#[test]
fn every_split_point_of_an_exchange() {
    let ex = [Ex { method: "POST", req_body: Body::Chunked(vec![5, 17]), status: 200, resp_body: Body::Length(9) }];
    let req = request("POST", &ex[0].req_body);
    let resp = response(200, &ex[0].resp_body);
    for server in [true, false] {
        for cut in 1..req.len().max(resp.len()) {
            let mut c = Conn::new(server, 77, 0xffff_ff00);
            c.write(true, &req);
            c.write(false, &resp);
            let (rc, sc) = (cut.min(req.len() - 1), cut.min(resp.len() - 1));
            c.segment(true, 0, rc, false, 10);
            c.segment(true, rc, req.len(), false, 20);
            c.segment(false, 0, sc, false, 30);
            c.segment(false, sc, resp.len(), false, 40);
            check_exact(&c, &ex);
            assert_eq!(c.sink.done[0].start, if rc == 0 { 20 } else { 10 });
            assert_eq!(c.sink.done[0].end, 40, "cut {cut}");
        }
    }
}

/// A head of `lines` header lines (at least 1: one of them is Content-Length) and `body` bytes.
fn head_with(start: &str, lines: usize, body: usize) -> Vec<u8> {
    let mut v = format!("{start}\r\n").into_bytes();
    for k in 0..lines.max(1) {
        if k == lines / 2 {
            v.extend_from_slice(format!("Content-Length: {body}\r\n").as_bytes());
        } else {
            v.extend_from_slice(format!("X-H{k}: v\r\n").as_bytes());
        }
    }
    v.extend_from_slice(b"\r\n");
    v.extend((0..body).map(|i| b'a' + (i % 26) as u8));
    v
}

#[test]
fn heads_in_few_steps_each_segment_whole() {
    // What the bench's wrk sends and nginx answers (a 25-byte file; 8 header lines): each
    // message in one segment takes two steps, the start line and then the header lines, the
    // blank line and the body (each step is a global function call in the kernel programs).
    let wrk = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n";
    let nginx = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 10:56:59 GMT\r\n\
Content-Type: text/html\r\nContent-Length: 25\r\nLast-Modified: Sun, 06 Dec 2026 10:56:15 GMT\r\n\
Connection: keep-alive\r\nETag: \"6b153f4f-19\"\r\nAccept-Ranges: bytes\r\n\r\nhello world 25 bytes....\n";
    let nginx_get = Ex::get(200, Body::Length(25));
    for server in [true, false] {
        let mut c = Conn::new(server, 5, 9);
        c.write(true, wrk);
        c.write(false, nginx);
        c.segment(true, 0, wrk.len(), false, 10);
        assert_eq!(c.steps, 2, "the request");
        c.segment(false, 0, nginx.len(), false, 20);
        assert_eq!(c.steps, 4, "the response");
        check_exact(&c, core::slice::from_ref(&nginx_get));
    }
    // Up to 8 header lines and the blank line in one step, a Content-Length body with them.
    for lines in 1..=20usize {
        for body in [0usize, 1, 25] {
            let ex = [Ex { method: "POST", req_body: Body::Length(body), status: 200, resp_body: Body::Length(body) }];
            let req = head_with("POST /x HTTP/1.1", lines, body);
            let resp = head_with("HTTP/1.1 200 OK", lines, body);
            let head_steps = 1 + lines.div_ceil(8);
            for server in [true, false] {
                let mut c = Conn::new(server, 5, 9);
                c.write(true, &req);
                c.write(false, &resp);
                c.segment(true, 0, req.len(), false, 10);
                assert_eq!(c.steps, head_steps, "request, {lines} lines, body {body}");
                c.segment(false, 0, resp.len(), false, 20);
                assert_eq!(c.steps, 2 * head_steps, "response, {lines} lines, body {body}");
                check_exact(&c, &ex);
            }
        }
    }
}

/// A header line longer than the header step searches for its end (16 words: 121 to 128 bytes
/// past its first byte) goes on in the next steps, which skip it: exact whatever its length and
/// place, the Content-Length before or after it.
#[test]
fn long_header_lines_take_more_steps_exactly() {
    for long in [100usize, 120, 121, 127, 128, 129, 136, 200, 300, 1000] {
        for cl_first in [true, false] {
            let ex = [Ex { method: "POST", req_body: Body::Length(7), status: 200, resp_body: Body::Length(25) }];
            let value = "x".repeat(long.saturating_sub(10));
            let head = |start: &str, body: usize| {
                let cl = format!("Content-Length: {body}\r\n");
                let long_line = format!("X-Long: {value}\r\n");
                let (a, b) = if cl_first { (cl, long_line) } else { (long_line, cl) };
                let mut v = format!("{start}\r\nHost: h\r\n{a}{b}Accept: */*\r\n\r\n").into_bytes();
                v.extend((0..body).map(|i| b'a' + (i % 26) as u8));
                v
            };
            let (req, resp) = (head("POST /x HTTP/1.1", 7), head("HTTP/1.1 200 OK", 25));
            for server in [true, false] {
                let mut c = Conn::new(server, 5, 9);
                c.write(true, &req);
                c.write(false, &resp);
                c.segment(true, 0, req.len(), false, 10);
                let req_steps = c.steps;
                c.segment(false, 0, resp.len(), false, 20);
                check_exact(&c, &ex);
                // A head of short lines takes one step after its start line's; a line past the
                // bound two more (the step ends at it, the next skips it, the next takes the
                // rest), while the head fits the window.
                let want = match long {
                    ..=121 => Some(2),
                    127..=200 => Some(4),
                    _ => None,
                };
                if let Some(w) = want {
                    assert_eq!((req_steps, c.steps - req_steps), (w, w), "{long}-byte line");
                }
            }
        }
    }
}

#[test]
fn pipelining_up_to_the_queue_depth() {
    let ex = mixed(40);
    for mss in [9, 100, 1448] {
        for server in [true, false] {
            let c = run(&ex, server, mss, Fault::None, 8);
            check_exact(&c, &ex);
        }
    }
}

#[test]
fn interim_head_204_304_and_upgrade() {
    let mut c = Conn::new(true, 0, 0);
    let msgs: [(&str, &[u8]); 4] = [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"),
        ("GET", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
    ];
    for (m, resp) in msgs {
        let o = c.len(true);
        c.write(true, &request(m, &Body::None));
        c.segment(true, o, 10_000, false, 1);
        let o = c.len(false);
        c.write(false, resp);
        c.segment(false, o, 10_000, false, 2);
    }
    // Bytes after the upgrade are not HTTP and are not parsed.
    let o = c.len(true);
    c.write(true, b"\x81\x85garbage that is not a request");
    c.segment(true, o, 100, false, 3);
    let got: Vec<(u8, u16)> = c.sink.done.iter().map(|d| (d.method, d.status)).collect();
    assert_eq!(got, vec![(method::HEAD, 200), (method::GET, 204), (method::GET, 304), (method::GET, 101)]);
    assert_eq!(c.sink.drops, [0; drop::COUNT as usize]);
}

#[test]
fn http10_body_until_close_and_fin_positions() {
    // The FIN arrives before the last body segment (reordered): the body ends when the bytes
    // before the FIN are all accounted for.
    for reorder in [false, true] {
        let mut c = Conn::new(false, 5, 9);
        c.write(true, b"GET / HTTP/1.0\r\n\r\n");
        c.segment(true, 0, 100, false, 1);
        c.write(false, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n");
        let head = c.len(false);
        c.write(false, &[b'z'; 5000]);
        let total = c.len(false);
        c.segment(false, 0, head + 1000, false, 2);
        if reorder {
            c.segment(false, head + 3000, 2000, true, 3);
            assert!(c.sink.done.is_empty() || c.sink.done[0].resp_bytes == 5000);
            c.segment(false, head + 1000, 2000, false, 4);
        } else {
            c.segment(false, head + 1000, total - head - 1000, true, 4);
        }
        assert_eq!(c.sink.done.len(), 1);
        assert_eq!((c.sink.done[0].status, c.sink.done[0].resp_bytes), (200, 5000));
        assert_eq!(c.sink.abandoned, 0);
    }
}

#[test]
fn a_fin_on_the_response_stream_abandons_the_waiting_requests() {
    let mut c = Conn::new(true, 0, 0);
    c.write(true, &request("GET", &Body::None));
    c.write(true, &request("GET", &Body::None));
    c.segment(true, 0, 10_000, false, 1);
    c.write(false, &response(200, &Body::Length(3)));
    c.segment(false, 0, 10_000, true, 2);
    assert_eq!(c.sink.done.len(), 1);
    assert_eq!(c.sink.abandoned, 1);
}

/// Segment faults on the stream the host receives, for bodies framed by length: the position
/// skips the gaps, so every exchange is counted with its sizes.
#[test]
fn loss_reorder_and_duplicates_inside_length_framed_bodies() {
    let ex: Vec<Ex> = (0..30)
        .map(|i| {
            if i % 2 == 0 {
                Ex::get(200 + (i % 3) as u16, Body::Length(65_536))
            } else {
                Ex { method: "POST", req_body: Body::Length(20_000 + i), status: 201, resp_body: Body::Length(5) }
            }
        })
        .collect();
    for fault in [
        Fault::Drop { n: 20, later: 14 },
        Fault::Drop { n: 7, later: 3 },
        Fault::Drop { n: 200, later: 40 },
        Fault::Duplicate { n: 5 },
        Fault::Swap { n: 3 },
        Fault::Swap { n: 20 },
    ] {
        for server in [true, false] {
            let c = run(&ex, server, 1448, fault, 1);
            check_exact(&c, &ex);
        }
    }
}

/// A lost segment that holds the headers, followed by the rest of the body out of order: once
/// the retransmission brings the headers, the body is known to have arrived already.
#[test]
fn lost_headers_then_the_body_out_of_order() {
    for server in [true, false] {
        // The host receives the requests (server) or the responses (client); the first segment
        // of the received message (headers and the body's start) is lost, the rest arrives.
        let ex = if server {
            [
                Ex { method: "POST", req_body: Body::Length(10_000), status: 200, resp_body: Body::Length(1) },
                Ex::get(200, Body::Length(10)),
            ]
        } else {
            [Ex::get(200, Body::Length(10_000)), Ex::get(200, Body::Length(10))]
        };
        let mut c = Conn::new(server, 1, 2);
        // The stream with the big message: requests on the server, responses on the client.
        let big = server;
        c.write(true, &request(ex[0].method, &ex[0].req_body));
        c.write(false, &response(200, &ex[0].resp_body));
        let total = c.len(big);
        if !big {
            c.segment(true, 0, 100_000, false, 10);
        }
        for o in (1448..total).step_by(1448) {
            c.segment(big, o, 1448, false, 20);
        }
        assert!(c.sink.done.is_empty());
        c.segment(big, 0, 1448, false, 30);
        if big {
            // The request has been taken whole; its response follows.
            c.segment(false, 0, 100_000, false, 40);
            assert_eq!(c.sink.done.len(), 1, "{:?}", c.sink.drops);
            assert_eq!((c.sink.done[0].start, c.sink.done[0].req_bytes), (30, 10_000));
        } else {
            assert_eq!(c.sink.done.len(), 1, "{:?}", c.sink.drops);
            assert_eq!(c.sink.done[0].end, 30);
        }
        let o = c.len(true);
        c.write(true, &request("GET", &Body::None));
        c.segment(true, o, 1000, false, 50);
        let o = c.len(false);
        c.write(false, &response(200, &ex[1].resp_body));
        c.segment(false, o, 1000, false, 60);
        check_exact(&c, &ex);
    }
}

/// Bytes the framer needs that passed out of order and were not kept (here: beyond the
/// stash's span): the exchange in flight is given up and counted, and the next one is followed
/// again.
#[test]
fn needed_bytes_lost_for_good_cost_only_the_message_in_flight() {
    let mut c = Conn::new(false, 1, 2);
    c.write(true, &request("GET", &Body::None));
    c.segment(true, 0, 1000, false, 10);
    c.write(false, &response(200, &Body::Chunked(vec![4096; 80])));
    let total = c.len(false);
    // A segment holding a chunk size is lost; 320 KiB pass after it (more than the stash
    // keeps); then it is retransmitted: chunk sizes beyond the stash have passed for good.
    let lost = (4200, 1448);
    c.segment(false, 0, lost.0, false, 20);
    let mut o = lost.0 + lost.1;
    while o < total {
        c.segment(false, o, 1448, false, 21);
        o += 1448;
    }
    c.segment(false, lost.0, lost.1, false, 22);
    assert!(c.sink.done.is_empty());
    assert!(c.max_blocks <= (crate::capture::stash::SPAN / crate::capture::stash::BLOCK) as usize + 1);
    // The next exchange: its response segment reveals that the bytes were taken (the
    // receiver's in-order point passed them).
    let o = c.len(true);
    c.write(true, &request("GET", &Body::None));
    c.segment(true, o, 1000, false, 30);
    let o = c.len(false);
    c.write(false, &response(404, &Body::Length(3)));
    c.segment(false, o, 1000, false, 40);
    assert_eq!(c.sink.drops[drop::HTTP_OUT_OF_ORDER as usize], 1);
    assert_eq!(c.sink.abandoned, 2, "the exchange in flight and the next request");
    assert_ne!(c.ex.resp.state, S_LOST);
    assert!(c.stash.is_empty());
    // The one after is counted.
    let o = c.len(true);
    c.write(true, &request("DELETE", &Body::None));
    c.segment(true, o, 1000, false, 50);
    let o = c.len(false);
    c.write(false, &response(204, &Body::None));
    c.segment(false, o, 1000, false, 60);
    assert_eq!(
        c.sink.done,
        vec![Done { method: method::DELETE, status: 204, req_bytes: 0, resp_bytes: 0, start: 50, end: 60 }]
    );
}

/// Chunk sizes and pipelined messages in segments that arrive while a segment before them is
/// missing: the stash keeps them, and once the missing segment arrives they are parsed.
#[test]
fn loss_and_reordering_with_chunks_and_pipelining() {
    let ex: Vec<Ex> = (0..40)
        .map(|i| match i % 4 {
            0 => Ex::get(200, Body::Chunked(vec![4096; 16])),
            1 => Ex { method: "POST", req_body: Body::Chunked(vec![1000; 7]), status: 201, resp_body: Body::Length(3) },
            2 => Ex::get(404, Body::Length(4096)),
            _ => Ex::get(200, Body::Chunked(vec![10, 20_000, 7])),
        })
        .collect();
    for fault in [
        Fault::Drop { n: 20, later: 14 },
        Fault::Drop { n: 7, later: 30 },
        Fault::Drop { n: 200, later: 60 },
        Fault::Swap { n: 3 },
        Fault::Swap { n: 20 },
        Fault::Duplicate { n: 4 },
    ] {
        for server in [true, false] {
            for pipeline in [1, 8] {
                // Also with the kernel's in-order point behind the segments that passed.
                for lag in [0, 1, 3] {
                    let c = run_lagging(&ex, server, 1448, fault, pipeline, lag);
                    check_exact(&c, &ex);
                    // Blocks behind a direction's position are forgotten as it moves on.
                    for (is_req, index) in c.stash.keys() {
                        let floor = crate::capture::stash::index_of(c.ex.dir(*is_req).pos);
                        assert!(!super::framer::after(floor, *index), "{fault:?}: a block left behind");
                    }
                }
            }
        }
    }
}

/// Never more exchanges than requests, no panic, whatever the bytes and the segment order.
#[test]
fn arbitrary_bytes_and_orders() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let server = round % 2 == 0;
        let mut c = Conn::new(server, rng.next() as u32, rng.next() as u32);
        let ex = mixed(8);
        let mut reqs = 0;
        for e in &ex {
            let mut r = request(e.method, &e.req_body);
            let mut s = response(e.status, &e.resp_body);
            // Corrupt a byte now and then.
            if rng.below(4) == 0 {
                let i = rng.below(r.len() as u64) as usize;
                r[i] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                let i = rng.below(s.len() as u64) as usize;
                s[i] = rng.next() as u8;
            }
            c.write(true, &r);
            c.write(false, &s);
            reqs += 1;
        }
        for _ in 0..200 {
            let is_req = rng.below(2) == 0;
            let len = c.len(is_req);
            let off = rng.below(len as u64 + 10) as usize;
            let n = rng.below(3000) as usize;
            c.segment(is_req, off, n, rng.below(50) == 0, rng.next() >> 20);
        }
        assert!(c.sink.done.len() <= reqs);
        assert!(c.sink.started as usize <= reqs * 2 + 64);
        assert!(c.ex.waiting() as usize <= super::framer::PIPELINE);
    }
}

#[test]
fn content_length_values_every_width() {
    for (v, space) in [
        (0u64, true),
        (7, false),
        (42, true),
        (12_345_678, true),
        (123_456_789, false),
        (9_999_999_999_999_999, true),
        (1_000_000_000_000_000, false),
    ] {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length:{}{v}\r\nX: y\r\n\r\n", if space { " " } else { "" });
        let mut c = Conn::new(false, 0, 0);
        c.write(true, &request("GET", &Body::None));
        c.segment(true, 0, 1000, false, 1);
        c.write(false, head.as_bytes());
        c.segment(false, 0, head.len(), false, 2);
        let body = v.min(100_000) as usize;
        if v > 0 && v <= 100_000 {
            c.write(false, &vec![b'b'; body]);
            c.segment(false, head.len(), body, false, 3);
            assert_eq!(c.sink.done.len(), 1, "{v}");
            assert_eq!(c.sink.done[0].resp_bytes, v);
        } else if v == 0 {
            assert_eq!(c.sink.done.len(), 1);
        } else {
            assert!(c.sink.done.is_empty(), "{v}: a body of that size is still to come");
            assert_eq!(c.ex.resp.state, super::framer::S_BODY);
        }
    }
}

#[test]
fn chunk_sizes_every_width_and_case() {
    for size in [1usize, 9, 10, 15, 16, 255, 0xabc, 0xffff, 0x12345, 0x7fffff] {
        for upper in [false, true] {
            let mut c = Conn::new(false, 0, 0);
            c.write(true, &request("GET", &Body::None));
            c.segment(true, 0, 1000, false, 1);
            let hex = if upper { format!("{size:X}") } else { format!("{size:x}") };
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(hex.as_bytes());
            r.extend_from_slice(b"\r\n");
            r.extend(std::iter::repeat_n(b'x', size));
            r.extend_from_slice(b"\r\n0\r\n\r\n");
            c.write(false, &r);
            c.send_all(false, 0, 1448, 2);
            assert_eq!(c.sink.done.len(), 1, "{hex}");
            assert_eq!(c.sink.done[0].resp_bytes, size as u64, "{hex}");
        }
    }
}

/// A response whose last segment arrives while an earlier one is missing reaches the
/// application when the gap is filled: that is when it ends, on the client side.
#[test]
fn a_response_ends_when_its_gap_is_filled() {
    let mut c = Conn::new(false, 100, 200);
    c.write(true, &request("GET", &Body::None));
    c.segment(true, 0, 1000, false, 10);
    c.write(false, &response(200, &Body::Length(5000)));
    let total = c.len(false);
    c.segment(false, 0, 1448, false, 20);
    // The second segment is lost; the rest (holding the last byte) arrives.
    c.segment(false, 2896, total - 2896, false, 30);
    assert!(c.sink.done.is_empty(), "the application cannot have the response yet");
    c.segment(false, 1448, 1448, false, 40);
    assert_eq!(c.sink.done.len(), 1);
    assert_eq!((c.sink.done[0].start, c.sink.done[0].end, c.sink.done[0].resp_bytes), (10, 40, 5000));
    // Seen from the server (the stream it sends passes in order), the same response ends
    // with its last byte leaving.
    let mut s = Conn::new(true, 100, 200);
    s.write(true, &request("GET", &Body::None));
    s.segment(true, 0, 1000, false, 10);
    s.write(false, &response(200, &Body::Length(5000)));
    s.segment(false, 0, 1448, false, 20);
    s.segment(false, 1448, total - 1448, false, 30);
    assert_eq!((s.sink.done[0].start, s.sink.done[0].end), (10, 30));
}

/// Segments that reach the hook while the receiving socket is held by its reader wait in its
/// backlog, so the kernel's in-order point lags behind them. A response is still recorded when
/// its last byte arrives, even the last one on a connection that then stays idle (a keep-alive
/// client that reads each response while the next arrives).
#[test]
fn responses_are_recorded_while_the_kernel_in_order_point_lags() {
    let ex = mixed(24);
    for lag in [1, 2, 5] {
        for mss in [7, 536, 1448] {
            for pipeline in [1, 8] {
                for server in [true, false] {
                    let c = run_open(&ex, server, mss, Fault::None, pipeline, lag);
                    check_exact(&c, &ex);
                    // Each at the arrival of its last byte, as when the kernel keeps up.
                    let prompt = run_open(&ex, server, mss, Fault::None, pipeline, 0);
                    assert_eq!(c.sink.done, prompt.sink.done, "lag {lag} mss {mss}");
                }
            }
        }
    }
}
