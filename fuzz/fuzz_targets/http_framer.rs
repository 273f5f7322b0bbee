//! The HTTP framer (collector_common::http::framer), driven as the kernel programs drive it,
//! on a connection whose two byte streams and segment order come from the input: valid
//! exchanges, sometimes with bytes corrupted, cut into segments of any size, delivered in any
//! order, duplicated or never, with FINs anywhere. Invariants: no panic; never more exchanges
//! than requests started; without corruption, never more requests started than request lines
//! written (each position of the stream is parsed at most once, whatever the segment order);
//! the pipeline queue stays within its bounds.
#![no_main]
use collector_common::http::{framer::PIPELINE, sim::Conn};
use libfuzzer_sys::fuzz_target;

/// Reads the input a byte at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

const METHODS: [&str; 6] = ["GET", "POST", "HEAD", "PUT", "CONNECT", "PROPFIND"];

fn body(input: &mut Input, out: &mut Vec<u8>, head: &mut String) {
    match input.byte() % 4 {
        0 => head.push_str("\r\n"),
        1 => {
            let n = input.u16() as usize % 3000;
            head.push_str(&format!("Content-Length: {n}\r\n\r\n"));
            out.extend_from_slice(head.as_bytes());
            out.extend(std::iter::repeat_n(b'b', n));
            return;
        }
        2 => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            out.extend_from_slice(head.as_bytes());
            for _ in 0..input.byte() % 5 {
                let n = input.u16() as usize % 2000 + 1;
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                out.extend(std::iter::repeat_n(b'c', n));
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            return;
        }
        _ => head.push_str("Connection: close\r\n\r\n"),
    }
    out.extend_from_slice(head.as_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let server = input.byte() & 1 == 0;
    let mut c = Conn::new(server, input.u32(), input.u32());
    let mut lines = 0usize;
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    for _ in 0..input.byte() % 12 {
        let m = METHODS[input.byte() as usize % METHODS.len()];
        let mut head = format!("{m} /path?q={} HTTP/1.{}\r\nHost: h\r\n", input.byte(), input.byte() & 1);
        body(&mut input, &mut req, &mut head);
        lines += 1;
        let mut head = format!("HTTP/1.1 {} R\r\nServer: s\r\n", 100 + input.u16() % 500);
        body(&mut input, &mut resp, &mut head);
    }
    // Corruption: a few bytes overwritten anywhere.
    let corrupted = input.byte() % 4;
    for _ in 0..corrupted {
        let (stream, at, b) = (input.byte() & 1, input.u32() as usize, input.byte());
        let s = if stream == 0 { &mut req } else { &mut resp };
        if !s.is_empty() {
            let i = at % s.len();
            s[i] = b;
        }
    }
    c.write(true, &req);
    c.write(false, &resp);
    // Segments: direction, offset, length, FIN, from the rest of the input.
    let mut now = 1u64;
    while !input.0.is_empty() {
        let is_req = input.byte() & 1 == 0;
        let len = c.len(is_req).max(1);
        let off = input.u32() as usize % (len + 16);
        let n = input.u16() as usize % 4000;
        let fin = input.byte() % 16 == 0;
        now += input.byte() as u64;
        c.segment(is_req, off, n, fin, now);
        assert!(c.sink.done.len() as u64 <= c.sink.started);
        assert!(corrupted > 0 || c.sink.started as usize <= lines);
        assert!(c.ex.waiting() as usize <= PIPELINE);
    }
});
