//! The assembler on the host: HPACK's examples (RFC 7541 Appendix C), gRPC calls, frames split
//! in chunks and CONTINUATIONs, padding, push, resets, loss and the bounds. Header blocks are
//! typed from the RFC or encoded by httlib-hpack, an encoder written apart from the decoder.
use collector_common::http2::{
    CHUNK, CONTINUATION, DATA, EV_CLOSED, EV_FRAME, EV_LOST, Event, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED,
    FLAG_PRIORITY, GOAWAY, HEADERS, PUSH_PROMISE, RST_STREAM, SETTINGS,
};

use collector_common::http::method;

use super::*;

/// Hex, spaces ignored (as RFC 7541 prints its examples).
fn hex(s: &str) -> Vec<u8> {
    let d: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    d.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

// RFC 7541 C.4: requests with Huffman coding; C.6: responses with Huffman coding, table size 256.
const C41: &str = "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff";
const C42: &str = "8286 84be 5886 a8eb 1064 9cbf";
const C43: &str = "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf";
const C61: &str = "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                   2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3";
const C62: &str = "4883 640e ffc1 c0bf";
const C63: &str = "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                   77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                   9587 3160 65c0 03ed 4ee5 b106 3d50 07";
/// GET http / (static table only), and `:status 200`.
const GET: &[u8] = &[0x82, 0x86, 0x84];
const OK: &[u8] = &[0x88];

const REQ_DIR: bool = true;
const RESP_DIR: bool = false;

/// An HPACK encoder (httlib-hpack) that indexes and Huffman-codes everything.
struct Enc(httlib_hpack::Encoder<'static>);

impl Enc {
    fn new() -> Self {
        Self(httlib_hpack::Encoder::default())
    }

    fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut dst = Vec::new();
        for (n, v) in headers {
            let flags = 0x1 | 0x2 | 0x4 | 0x10;
            self.0.encode((n.as_bytes().to_vec(), v.as_bytes().to_vec(), flags), &mut dst).unwrap();
        }
        dst
    }
}

/// Drives an assembler, one connection at a time (`cookie`), with times that grow by one per
/// event.
struct T {
    a: Assembler,
    done: Vec<Done>,
    cookie: u64,
    ns: u64,
    /// The next event number of each connection (`Event::seq`), as the kernel counts them.
    seqs: std::collections::HashMap<u64, u32>,
    /// The local port the events carry (0: the kernel does not know the socket yet).
    port: u16,
}

impl T {
    /// With both directions' SETTINGS sent on connection 1.
    fn new() -> Self {
        Self::with(Limits::default())
    }

    fn with(limits: Limits) -> Self {
        let mut t = T {
            a: Assembler::new(limits),
            done: Vec::new(),
            cookie: 1,
            ns: 1000,
            seqs: Default::default(),
            port: 50051,
        };
        t.preface();
        t
    }

    /// With both directions' SETTINGS sent carrying local port `port`.
    fn with_port(port: u16) -> Self {
        let mut t = T {
            a: Assembler::new(Limits::default()),
            done: Vec::new(),
            cookie: 1,
            ns: 1000,
            seqs: Default::default(),
            port,
        };
        t.preface();
        t
    }

    fn preface(&mut self) {
        self.settings(REQ_DIR, &[]);
        self.settings(RESP_DIR, &[]);
    }

    fn send(&mut self, ev: &Event) {
        let mut ev = *ev;
        let seq = self.seqs.entry(ev.cookie).or_insert(0);
        ev.seq = *seq;
        *seq = seq.wrapping_add(1);
        let done = &mut self.done;
        self.a.event(&ev, &mut |d| done.push(d));
    }

    #[allow(clippy::too_many_arguments)]
    fn event(&mut self, is_req: bool, ftype: u8, flags: u8, stream: u32, flen: usize, off: usize, data: &[u8]) -> u64 {
        self.ns += 1;
        let mut ev = Event::ZERO;
        ev.cookie = self.cookie;
        ev.ns = self.ns;
        ev.cgroup_id = 42;
        ev.comm[..4].copy_from_slice(b"grpc");
        ev.addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        ev.local_port = self.port;
        ev.peer_port = if self.port == 0 { 0 } else { 40000 };
        ev.family = 2;
        ev.role = 1;
        ev.is_req = u8::from(is_req);
        ev.kind = EV_FRAME;
        ev.ftype = ftype;
        ev.fflags = flags;
        ev.stream = stream;
        ev.flen = flen as u32;
        ev.off = off as u32;
        ev.n = data.len() as u32;
        ev.data[..data.len()].copy_from_slice(data);
        self.send(&ev);
        self.ns
    }

    /// A frame with a payload, in chunks of `CHUNK` bytes; the times of its first and last event.
    fn frame(&mut self, is_req: bool, ftype: u8, flags: u8, stream: u32, payload: &[u8]) -> (u64, u64) {
        if payload.is_empty() {
            let ns = self.event(is_req, ftype, flags, stream, 0, 0, &[]);
            return (ns, ns);
        }
        let first = self.ns + 1;
        for (i, c) in payload.chunks(CHUNK).enumerate() {
            self.event(is_req, ftype, flags, stream, payload.len(), i * CHUNK, c);
        }
        (first, self.ns)
    }

    fn settings(&mut self, is_req: bool, values: &[(u16, u32)]) {
        let p: Vec<u8> =
            values.iter().flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes())).collect();
        self.frame(is_req, SETTINGS, 0, 0, &p);
    }

    /// A header block in one HEADERS frame.
    fn headers(&mut self, is_req: bool, stream: u32, block: &[u8], end_stream: bool) -> (u64, u64) {
        let flags = FLAG_END_HEADERS | if end_stream { FLAG_END_STREAM } else { 0 };
        self.frame(is_req, HEADERS, flags, stream, block)
    }

    fn data(&mut self, is_req: bool, stream: u32, len: usize, end_stream: bool) -> u64 {
        self.event(is_req, DATA, if end_stream { FLAG_END_STREAM } else { 0 }, stream, len, 0, &[])
    }

    fn kind(&mut self, kind: u8, is_req: bool) {
        let mut ev = Event::ZERO;
        ev.cookie = self.cookie;
        ev.kind = kind;
        ev.is_req = u8::from(is_req);
        self.send(&ev);
    }

    fn stats(&self) -> Stats {
        *self.a.stats()
    }

    /// The only exchange completed since the last call.
    fn one(&mut self) -> Done {
        assert_eq!(self.done.len(), 1, "{:?}", self.done);
        self.done.remove(0)
    }
}

#[test]
fn rfc7541_c6_hex_decodes_as_printed() {
    // The typed hex, checked against the RFC's decoded lists with the decoder alone.
    let mut d = super::hpack::Decoder::new(256);
    let mut decode = |block: &[u8]| {
        let mut got = Vec::new();
        d.decode(block, |n, v| got.push((n.to_vec(), v.to_vec()))).unwrap();
        got
    };
    let s =
        |l: &[(&str, &str)]| l.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect::<Vec<_>>();
    let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    let loc = "https://www.example.com";
    let first = s(&[(":status", "302"), ("cache-control", "private"), ("date", date1), ("location", loc)]);
    assert_eq!(decode(&hex(C61)), first);
    let second = s(&[(":status", "307"), ("cache-control", "private"), ("date", date1), ("location", loc)]);
    assert_eq!(decode(&hex(C62)), second);
    let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
    let third = s(&[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", loc),
        ("content-encoding", "gzip"),
        ("set-cookie", cookie),
    ]);
    assert_eq!(decode(&hex(C63)), third);
}

#[test]
fn rfc7541_c4_requests_with_huffman() {
    let mut t = T::new();
    for (i, block) in [C41, C42, C43].into_iter().enumerate() {
        let id = 1 + 2 * i as u32;
        let (start, _) = t.headers(REQ_DIR, id, &hex(block), true);
        let (_, end) = t.headers(RESP_DIR, id, OK, true);
        let d = t.one();
        assert_eq!((d.stream, d.method, d.status, d.certain), (id, method::GET, 200, true));
        assert_eq!((d.start_ns, d.end_ns, d.reset, d.grpc), (start, end, false, None));
        assert_eq!(d.conn.cookie, 1);
        assert_eq!((d.conn.cgroup_id, d.conn.local_port, d.conn.role, &d.conn.comm[..4]), (42, 50051, 1, &b"grpc"[..]));
    }
    assert_eq!(t.stats(), Stats::default());
}

#[test]
fn rfc7541_c6_responses_size_update_and_eviction() {
    let mut t = T::new();
    // A table size update to 256 (RFC 7541 §6.3) first, as the examples' encoder uses.
    let mut first = hex("3fe101");
    first.extend(hex(C61));
    let blocks = [first, hex(C62), hex(C63), hex("88c0 bfbe")];
    for (i, (block, status)) in blocks.iter().zip([302, 307, 200, 200]).enumerate() {
        let id = 1 + 2 * i as u32;
        t.headers(REQ_DIR, id, GET, true);
        t.headers(RESP_DIR, id, block, true);
        let d = t.one();
        assert_eq!((d.stream, d.status, d.certain), (id, status, true));
    }
    // After C.6.3 the 256-byte table holds three entries (62..=64): 65 was evicted.
    t.headers(REQ_DIR, 9, GET, true);
    t.headers(RESP_DIR, 9, &hex("c1"), true);
    let d = t.one();
    assert_eq!((d.status, d.certain, t.stats().decode_errors), (0, false, 1));
    // The direction's table is no longer known: a status from the static table still is, one
    // from the dynamic table is not (until entries are added again).
    t.headers(REQ_DIR, 11, GET, true);
    t.headers(RESP_DIR, 11, OK, true);
    let d = t.one();
    assert_eq!((d.method, d.status, d.certain), (method::GET, 200, true));
    t.headers(REQ_DIR, 13, GET, true);
    t.headers(RESP_DIR, 13, &hex("be"), true);
    let d = t.one();
    assert_eq!((d.status, d.certain), (0, false));
    t.headers(REQ_DIR, 15, GET, true);
    // `:status: 404` added (literal with incremental indexing, static name 8), then referred to.
    t.headers(RESP_DIR, 15, &hex("4803 3430 34"), true);
    let d = t.one();
    assert_eq!((d.status, d.certain), (404, true));
    t.headers(REQ_DIR, 17, GET, true);
    t.headers(RESP_DIR, 17, &hex("be"), true);
    let d = t.one();
    assert_eq!((d.status, d.certain, t.stats().decode_errors), (404, true, 1));
}

#[test]
fn settings_header_table_size_bounds_the_other_direction() {
    // The client allows 256 bytes: the server may not grow its table to 4096.
    let mut t = T::new();
    t.settings(REQ_DIR, &[(4, 65535), (1, 256)]);
    t.headers(REQ_DIR, 1, GET, true);
    let mut block = hex("3fe11f");
    block.push(0x88);
    t.headers(RESP_DIR, 1, &block, true);
    assert_eq!((t.one().certain, t.stats().decode_errors), (false, 1));

    // A larger setting is followed up to `Limits::table`.
    for (update, ok) in [("3fe1ff03", true), ("3fe2ff03", false)] {
        let mut t = T::new();
        t.settings(REQ_DIR, &[(1, 1 << 20)]);
        t.headers(REQ_DIR, 1, GET, true);
        let mut block = hex(update);
        block.push(0x88);
        t.headers(RESP_DIR, 1, &block, true);
        let d = t.one();
        assert_eq!((d.status == 200, d.certain), (ok, ok), "{update}");
    }
}

/// `n` printable characters that Huffman coding does not shorten much.
fn noise(n: usize) -> String {
    (0..n).map(|i| char::from(b'!' + (i * 7 % 90) as u8)).collect()
}

fn grpc_request() -> [(&'static str, &'static str); 8] {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/helloworld.Greeter/SayHello"),
        (":authority", "localhost:50051"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "1S"),
        ("user-agent", "grpc-go/1.60.0"),
    ]
}

#[test]
fn grpc_call_with_trailers() {
    let mut t = T::new();
    let (mut req, mut resp) = (Enc::new(), Enc::new());
    // Twice: the second call's blocks are mostly indices into the tables.
    for (id, code) in [(1, "5"), (3, "0")] {
        let (start, _) = t.headers(REQ_DIR, id, &req.block(&grpc_request()), false);
        t.data(REQ_DIR, id, 17, true);
        t.headers(RESP_DIR, id, &resp.block(&[(":status", "200"), ("content-type", "application/grpc")]), false);
        t.data(RESP_DIR, id, 20, false);
        t.data(RESP_DIR, id, 5, false);
        assert!(t.done.is_empty());
        let trailers = resp.block(&[("grpc-status", code), ("grpc-message", "no such greeting")]);
        let (_, end) = t.headers(RESP_DIR, id, &trailers, true);
        let d = t.one();
        assert_eq!((d.method, d.status, d.req_bytes, d.resp_bytes), (method::POST, 200, 17, 25));
        assert_eq!((d.start_ns, d.end_ns, d.certain, d.reset), (start, end, true, false));
        let grpc = Grpc {
            method: "helloworld.Greeter/SayHello".into(),
            status: code.parse().ok(),
            timeout_ns: Some(1_000_000_000),
        };
        assert_eq!(d.grpc, Some(grpc));
    }
}

#[test]
fn grpc_trailers_only_response() {
    let mut t = T::new();
    let (mut req, mut resp) = (Enc::new(), Enc::new());
    t.headers(REQ_DIR, 1, &req.block(&grpc_request()), true);
    let block = resp.block(&[(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "12")]);
    let (_, end) = t.headers(RESP_DIR, 1, &block, true);
    let d = t.one();
    assert_eq!((d.status, d.end_ns, d.grpc.unwrap().status), (200, end, Some(12)));
}

#[test]
fn informational_response_is_skipped() {
    let mut t = T::new();
    let (mut req, mut resp) = (Enc::new(), Enc::new());
    let block = req.block(&[(":method", "PUT"), (":path", "/up"), ("expect", "100-continue")]);
    t.headers(REQ_DIR, 1, &block, false);
    t.headers(RESP_DIR, 1, &resp.block(&[(":status", "100")]), false);
    t.data(REQ_DIR, 1, 1000, true);
    t.headers(RESP_DIR, 1, &resp.block(&[(":status", "201"), ("content-type", "text/plain")]), false);
    let end = t.data(RESP_DIR, 1, 7, true);
    let d = t.one();
    assert_eq!((d.method, d.status, d.req_bytes, d.resp_bytes, d.end_ns), (method::PUT, 201, 1000, 7, end));
    assert_eq!((d.grpc, d.certain), (None, true));
}

#[test]
fn hundred_interleaved_streams() {
    let mut t = T::new();
    let (mut req, mut resp) = (Enc::new(), Enc::new());
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PROPFIND"];
    let ids = [method::GET, method::POST, method::PUT, method::DELETE, method::PATCH, method::HEAD, method::OPTIONS, 0];
    // Distinct values in both directions: the 4096-byte tables evict as they go.
    for i in 0..100u32 {
        let rid = format!("{i:08}-request");
        let block = req.block(&[(":method", methods[i as usize % 8]), (":path", "/items"), ("x-request-id", &rid)]);
        t.headers(REQ_DIR, 1 + 2 * i, &block, i % 2 == 0);
    }
    let order: Vec<u32> = (0..100).map(|i| (i * 37 + 11) % 100).collect();
    for &i in &order {
        let status = (200 + i).to_string();
        let trace = format!("trace-{i:04}-{}", "z".repeat(i as usize % 40));
        t.headers(RESP_DIR, 1 + 2 * i, &resp.block(&[(":status", &status), ("x-trace", &trace)]), false);
        if i % 2 == 1 {
            t.data(REQ_DIR, 1 + 2 * i, i as usize, true);
        }
    }
    assert!(t.done.is_empty());
    for &i in order.iter().rev() {
        t.data(RESP_DIR, 1 + 2 * i, 10, true);
    }
    assert_eq!(t.done.len(), 100);
    for d in &t.done {
        let i = (d.stream - 1) / 2;
        assert_eq!((d.method, d.status, d.certain), (ids[i as usize % 8], 200 + i as u16, true), "{i}");
        assert_eq!((d.req_bytes, d.resp_bytes), (if i % 2 == 1 { u64::from(i) } else { 0 }, 10));
    }
    assert_eq!(t.stats(), Stats::default());
}

#[test]
fn block_in_continuations_and_chunks() {
    let mut t = T::new();
    let (mut req, mut resp) = (Enc::new(), Enc::new());
    let agent = noise(700);
    let mut headers = grpc_request().to_vec();
    headers.push(("user-agent", &agent));
    let block = req.block(&headers);
    assert!(block.len() > 600);
    let (a, b) = block.split_at(300);
    let (b, c) = b.split_at(200);
    let (start, _) = t.frame(REQ_DIR, HEADERS, 0, 1, a);
    // The other direction's frames may come in between; this one's may not.
    t.settings(RESP_DIR, &[(3, 100)]);
    t.frame(REQ_DIR, CONTINUATION, 0, 1, b);
    t.frame(REQ_DIR, CONTINUATION, FLAG_END_HEADERS, 1, c);
    assert_eq!(t.a.conns[&1].buffered(true), 0);
    assert_eq!(t.a.conns[&1].open(), 1);
    t.headers(RESP_DIR, 1, &resp.block(&[(":status", "200"), ("grpc-status", "0")]), true);
    let d = t.one();
    assert_eq!((d.method, d.start_ns, d.certain), (method::POST, start, true));
    assert_eq!(d.grpc.unwrap().method, "helloworld.Greeter/SayHello");

    // A block not continued is a protocol error.
    t.frame(REQ_DIR, HEADERS, 0, 3, GET);
    t.data(REQ_DIR, 3, 4, true);
    t.frame(REQ_DIR, CONTINUATION, FLAG_END_HEADERS, 3, &[]);
    assert_eq!(t.stats().protocol_errors, 2);
    t.headers(RESP_DIR, 3, OK, true);
    assert_eq!((t.one().certain, t.stats().chunks_lost), (false, 0));
}

#[test]
fn padding_priority_and_push() {
    let mut t = T::new();
    let (mut req, mut resp) = (Enc::new(), Enc::new());
    // Pad length, 5 priority bytes, the block, 250 bytes of padding (across a chunk boundary).
    let mut p = vec![250, 0x80, 0, 0, 0, 15];
    p.extend(req.block(&[(":method", "GET"), (":path", "/index.html"), (":authority", "example.com")]));
    p.extend([0; 250]);
    assert!(p.len() > CHUNK);
    let flags = FLAG_END_HEADERS | FLAG_END_STREAM | FLAG_PADDED | FLAG_PRIORITY;
    t.frame(REQ_DIR, HEADERS, flags, 1, &p);
    // The server pushes stream 2 (pad length, promised stream id, block, padding): its block
    // indexes a field that the response to stream 1 refers to.
    let mut p = vec![10, 0, 0, 0, 2];
    p.extend(resp.block(&[(":method", "GET"), (":path", "/style.css"), ("x-pushed", "style")]));
    p.extend([0; 10]);
    t.frame(RESP_DIR, PUSH_PROMISE, FLAG_END_HEADERS | FLAG_PADDED, 1, &p);
    t.headers(RESP_DIR, 2, &resp.block(&[(":status", "200"), ("x-pushed", "style")]), false);
    let block = resp.block(&[(":status", "203"), ("x-pushed", "style")]);
    // `x-pushed: style` is an index into the dynamic table (62 or above).
    assert!(*block.last().unwrap() >= 0x80 | 62, "{block:?}");
    t.headers(RESP_DIR, 1, &block, false);
    t.data(RESP_DIR, 2, 100, true);
    t.data(RESP_DIR, 1, 50, true);
    let d = t.one();
    assert_eq!((d.stream, d.method, d.status, d.resp_bytes, d.certain), (1, method::GET, 203, 50, true));
    assert_eq!(t.stats(), Stats::default());

    // Padding longer than the frame.
    t.frame(REQ_DIR, HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 3, &[9, 0x82]);
    t.headers(RESP_DIR, 3, OK, true);
    assert_eq!((t.one().certain, t.stats().protocol_errors), (false, 1));
}

#[test]
fn rst_stream() {
    let mut t = T::new();
    let (start, _) = t.headers(REQ_DIR, 1, GET, true);
    let end = t.event(RESP_DIR, RST_STREAM, 0, 1, 4, 0, &[]);
    let d = t.one();
    assert_eq!((d.status, d.reset, d.start_ns, d.end_ns, d.certain), (0, true, start, end, true));

    // The client resets after the response headers; a reset after the response is nothing.
    t.headers(REQ_DIR, 3, GET, true);
    t.headers(RESP_DIR, 3, OK, false);
    t.event(REQ_DIR, RST_STREAM, 0, 3, 4, 0, &[]);
    let d = t.one();
    assert_eq!((d.status, d.reset), (200, true));
    t.headers(REQ_DIR, 5, GET, true);
    t.headers(RESP_DIR, 5, OK, true);
    assert!(!t.one().reset);
    t.event(REQ_DIR, RST_STREAM, 0, 5, 4, 0, &[]);
    assert!(t.done.is_empty());
}

#[test]
fn lost_and_closed_abandon_streams() {
    let mut t = T::new();
    for id in [1, 3, 5] {
        t.headers(REQ_DIR, id, GET, true);
    }
    t.kind(EV_LOST, REQ_DIR);
    assert_eq!(t.stats().abandoned, 3);
    t.headers(REQ_DIR, 7, GET, true);
    t.headers(RESP_DIR, 1, OK, true);
    assert!(t.done.is_empty() && t.a.conns[&1].open() == 0);

    // The responses' direction lost: a later request cannot complete.
    t.cookie = 2;
    t.preface();
    t.headers(REQ_DIR, 1, GET, true);
    t.kind(EV_LOST, RESP_DIR);
    t.headers(REQ_DIR, 3, GET, true);
    assert_eq!(t.stats().abandoned, 5);
    // Both directions lost: the state goes.
    t.kind(EV_LOST, REQ_DIR);
    assert!(!t.a.conns.contains_key(&2));

    t.cookie = 3;
    t.preface();
    t.headers(REQ_DIR, 1, GET, true);
    t.headers(REQ_DIR, 3, GET, true);
    t.headers(RESP_DIR, 1, OK, true);
    assert_eq!(t.one().stream, 1);
    t.kind(EV_CLOSED, RESP_DIR);
    assert_eq!(t.stats().abandoned, 6);
    assert!(t.a.conns.contains_key(&1) && !t.a.conns.contains_key(&3) && t.a.lru.len() == 1);
    assert_eq!(t.a.connections(), 1);
    assert!(t.done.is_empty());
}

#[test]
fn undecodable_block() {
    let mut t = T::new();
    // Index 64: the dynamic table is empty.
    t.headers(REQ_DIR, 1, &[0xc0], true);
    t.headers(RESP_DIR, 1, OK, true);
    let d = t.one();
    assert_eq!((d.method, d.status, d.certain), (0, 200, false));
    assert_eq!(t.stats().decode_errors, 1);
    // The requests' table is no longer known: the static table still is.
    t.headers(REQ_DIR, 3, GET, true);
    t.headers(RESP_DIR, 3, OK, true);
    let d = t.one();
    assert_eq!((d.method, d.status, d.certain), (method::GET, 200, true));
    t.headers(REQ_DIR, 5, &[0x82, 0xc0], true);
    t.headers(RESP_DIR, 5, OK, true);
    let d = t.one();
    assert_eq!((d.method, d.status, d.certain), (method::GET, 200, false));
    assert_eq!(t.stats().decode_errors, 1);
}

#[test]
fn chunks_lost_and_joined_late() {
    let mut t = T::new();
    let mut req = Enc::new();
    let big = noise(600);
    let block = req.block(&[(":method", "GET"), (":path", "/"), ("cookie", &big)]);
    assert!(block.len() > 2 * CHUNK);
    let flags = FLAG_END_HEADERS | FLAG_END_STREAM;
    let start = t.event(REQ_DIR, HEADERS, flags, 1, block.len(), 0, &block[..CHUNK]);
    t.event(REQ_DIR, HEADERS, flags, 1, block.len(), 2 * CHUNK, &block[2 * CHUNK..]);
    t.headers(RESP_DIR, 1, OK, true);
    let d = t.one();
    assert_eq!((d.start_ns, d.method, d.status, d.certain), (start, 0, 200, false));
    assert_eq!(t.stats().chunks_lost, 1);
    // A frame cut short ends its block.
    t.event(REQ_DIR, HEADERS, flags, 3, block.len(), 0, &block[..CHUNK]);
    t.data(REQ_DIR, 3, 0, true);
    t.headers(RESP_DIR, 3, OK, true);
    assert_eq!((t.one().certain, t.stats().chunks_lost, t.stats().protocol_errors), (false, 2, 0));

    // The block after the lost bytes: its table is not known, its static references are.
    t.headers(REQ_DIR, 5, GET, true);
    t.headers(RESP_DIR, 5, OK, true);
    assert_eq!((t.one().certain, t.stats().chunks_lost), (true, 2));

    // A connection whose first frame is not SETTINGS: followed from its middle (opened before
    // the collector started). Streams opened before it are not followed; what the static table
    // and the entries added from then on give is known, the rest is not.
    let mut t = T::new();
    t.cookie = 2;
    t.data(RESP_DIR, 7, 10, true);
    t.headers(REQ_DIR, 9, &hex("83 be 86"), false);
    t.headers(RESP_DIR, 9, OK, false);
    t.data(REQ_DIR, 9, 5, true);
    t.data(RESP_DIR, 9, 12, true);
    let d = t.one();
    assert_eq!((d.stream, d.method, d.status, d.req_bytes, d.resp_bytes), (9, method::POST, 200, 5, 12));
    assert_eq!((d.certain, t.stats().joined_late), (false, 2));
    t.headers(REQ_DIR, 11, GET, true);
    t.headers(RESP_DIR, 11, OK, true);
    assert!(t.one().certain);
}

#[test]
fn block_too_large() {
    let mut t = T::with(Limits { block: 100, ..Limits::default() });
    let mut req = Enc::new();
    let block = req.block(&[(":method", "GET"), (":path", &"/x".repeat(100))]);
    t.headers(REQ_DIR, 1, &block, true);
    t.headers(RESP_DIR, 1, OK, true);
    assert_eq!((t.one().certain, t.stats().block_too_large), (false, 1));
}

#[test]
fn stream_and_connection_bounds() {
    let mut t = T::with(Limits { streams: 2, conns: 2, ..Limits::default() });
    for id in [1, 3, 5] {
        t.headers(REQ_DIR, id, GET, true);
    }
    assert_eq!(t.stats().streams_overflow, 1);
    for id in [5, 3, 1] {
        t.headers(RESP_DIR, id, OK, true);
    }
    let ids: Vec<u32> = t.done.drain(..).map(|d| d.stream).collect();
    assert_eq!(ids, [3, 1]);
    t.headers(REQ_DIR, 7, GET, true);
    t.headers(REQ_DIR, 9, GET, true);
    assert_eq!(t.stats().streams_overflow, 1);

    // Connection 2, then 1 active again: 3 evicts 2, the least recently active.
    t.cookie = 2;
    t.preface();
    t.headers(REQ_DIR, 1, GET, true);
    t.cookie = 1;
    t.headers(RESP_DIR, 7, OK, true);
    assert_eq!(t.one().stream, 7);
    t.cookie = 3;
    t.preface();
    assert_eq!((t.stats().conns_evicted, t.stats().abandoned), (1, 1));
    assert!(t.a.conns.contains_key(&1) && t.a.conns.contains_key(&3) && t.a.lru.len() == 2);
    // Its next frames find no state: a connection joined late.
    t.cookie = 2;
    t.headers(REQ_DIR, 3, GET, true);
    assert_eq!((t.stats().conns_evicted, t.stats().joined_late), (2, 1));
}

#[test]
fn lost_events_give_up_the_open_streams() {
    let mut t = T::new();
    let (mut up, mut down) = (Enc::new(), Enc::new());
    let req = up.block(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]);
    t.headers(REQ_DIR, 1, &req, true);
    t.headers(REQ_DIR, 3, &req, true);
    // The kernel's event 6 did not fit in the ring buffer.
    *t.seqs.get_mut(&t.cookie).unwrap() += 1;
    let resp = down.block(&[(":status", "200")]);
    t.headers(RESP_DIR, 1, &resp, true);
    assert!(t.done.is_empty() || !t.done[0].certain, "{:?}", t.done);
    let st = t.stats();
    assert_eq!((st.events_lost, st.abandoned), (1, 2));
}

/// Over TLS the kernel may name the socket after the connection's first frames (Go's HTTP/2
/// server writes its SETTINGS before a read is seen): the exchanges take the later name.
#[test]
fn socket_named_after_the_first_frames() {
    let mut t = T::with_port(0);
    t.port = 50051;
    t.headers(REQ_DIR, 1, GET, true);
    t.headers(RESP_DIR, 1, OK, true);
    let d = t.one();
    assert_eq!((d.conn.local_port, d.conn.peer_port, d.conn.family), (50051, 40000, 2));
    // An event without a name (a write before the read that names it) changes nothing.
    t.port = 0;
    t.headers(REQ_DIR, 3, GET, true);
    t.headers(RESP_DIR, 3, OK, true);
    assert_eq!(t.one().conn.local_port, 50051);
}

/// The server's GOAWAY: requests above its last stream id were not processed (the client
/// retries them on another connection): they are forgotten, neither counted nor abandoned when
/// the connection closes; those at or below it are answered and counted. Its first 8 bytes
/// come in chunks of any size (the kernel sends no more: not the debug data).
#[test]
fn goaway_forgets_the_requests_it_refused() {
    for split in [8, 4, 1] {
        let mut t = T::new();
        let before = t.stats().abandoned;
        for id in [1, 3, 5, 7] {
            t.headers(REQ_DIR, id, GET, true);
        }
        let goaway = [0, 0, 0, 3, 0, 0, 0, 0];
        for (i, c) in goaway.chunks(split).enumerate() {
            t.event(RESP_DIR, GOAWAY, 0, 0, 8 + 40, i * split, c);
        }
        // A request that crossed the GOAWAY on the wire: not processed either.
        t.headers(REQ_DIR, 9, GET, true);
        t.headers(RESP_DIR, 1, OK, true);
        t.headers(RESP_DIR, 3, OK, true);
        let mut done: Vec<u32> = t.done.drain(..).map(|d| d.stream).collect();
        done.sort();
        assert_eq!(done, [1, 3], "chunks of {split}");
        t.kind(EV_CLOSED, RESP_DIR);
        let s = t.stats();
        assert_eq!((s.abandoned - before, s.chunks_lost, s.protocol_errors), (0, 0, 0), "chunks of {split}");
        assert!(t.done.is_empty());
    }
    // A GOAWAY from the client (about pushed streams) leaves the requests alone.
    let mut t = T::new();
    t.headers(REQ_DIR, 1, GET, true);
    t.headers(REQ_DIR, 3, GET, true);
    t.event(REQ_DIR, GOAWAY, 0, 0, 8, 0, &[0, 0, 0, 0, 0, 0, 0, 0]);
    t.headers(RESP_DIR, 3, OK, true);
    assert_eq!(t.one().stream, 3);
}
