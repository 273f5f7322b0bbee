//! The HTTP/2 capture end to end in userspace: the kernel's framer
//! (collector_common::http2::framer), driven as the packet driver drives it, on a connection
//! whose two byte streams (frames of every type with lengths, flags and payloads from the
//! input, header blocks of arbitrary bytes) are cut into segments of any size, each sometimes
//! lost; its events go to the daemon's assembler (collector::http2::assemble), which decodes
//! the header blocks. Invariants: no panic anywhere; every chunk lies within its frame; the
//! framer's events for the streams cut into segments, joined per frame, are those of the
//! streams in one piece when no segment is lost; the assembler reports no more exchanges than
//! request HEADERS frames written.
#![no_main]
use collector::http2::assemble::{Assembler, Limits};
use collector_common::http2::{
    EV_FRAME, Event, HEADERS,
    framer::H2,
    sim::{Got, Rec, feed},
};
use collector_common::capture::Stream;
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
}

/// Frames of one direction from the input; the number of HEADERS frames written.
fn frames(input: &mut Input, out: &mut Vec<u8>, preface: bool) -> usize {
    if preface {
        out.extend_from_slice(collector_common::http2::PREFACE);
    }
    // Each endpoint's first frame: SETTINGS.
    out.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x10, 0]);
    let mut headers = 0;
    for _ in 0..input.byte() % 24 {
        let ftype = input.byte() % 11;
        let flags = input.byte();
        // Stream 0 sometimes (SETTINGS, PING, GOAWAY belong there).
        let stream = match input.byte() % 9 {
            8 => 0,
            s => s as u32 * 2 + 1,
        };
        let len = match input.byte() % 4 {
            0 => 0,
            1 => input.byte() as usize,
            2 => input.u16() as usize % 1500,
            _ => input.u16() as usize,
        };
        if ftype == HEADERS {
            headers += 1;
        }
        let n = len as u32;
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8, ftype, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        let fill = input.byte();
        out.extend((0..len).map(|i| fill.wrapping_add(i as u8)));
    }
    headers
}

/// The events of each direction (requests' first), chunks joined per frame (the directions'
/// events interleave as the segments came).
fn joined(got: &[Got]) -> Vec<(u8, u8, u32, u32, Vec<u8>)> {
    let mut out: Vec<(u8, u8, u32, u32, Vec<u8>)> = Vec::new();
    for g in got.iter().filter(|g| g.f.is_req).chain(got.iter().filter(|g| !g.f.is_req)) {
        match out.last_mut() {
            Some(last) if g.f.off != 0 && last.1 == g.f.ftype && last.2 == g.f.stream => last.4.extend(&g.bytes),
            _ => out.push((g.f.kind, g.f.ftype, g.f.stream, g.f.flen, g.bytes.clone())),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let requests = frames(&mut input, &mut up, true);
    frames(&mut input, &mut down, false);
    let base = 1000u32;
    let lossy = input.byte() & 1 == 1;
    // Whole streams, then the same cut into other segments (some lost when `lossy`).
    let mut whole = Rec::default();
    let mut h = H2::ZERO;
    h.start(true, true, base, Some(base));
    // In pieces of 1,500 bytes (a segment's parse is bounded at 512 steps, as in the kernel).
    for (is_req, s) in [(true, &up), (false, &down)] {
        for at in (0..s.len()).step_by(1500) {
            let seq = base + at as u32;
            feed(&mut h, is_req, s, base, seq, (s.len() - at).min(1500) as u32, seq, 1, &mut whole);
        }
    }
    let mut cut = Rec::default();
    let mut h = H2::ZERO;
    h.start(true, true, base, Some(base));
    let (mut at_up, mut at_down) = (0usize, 0usize);
    let mut now = 1;
    while at_up < up.len() || at_down < down.len() {
        let is_req = at_down >= down.len() || (at_up < up.len() && input.byte() & 1 == 0);
        let (s, at) = if is_req { (&up, &mut at_up) } else { (&down, &mut at_down) };
        let len = (input.u16() as usize % 1500 + 1).min(s.len() - *at);
        let seq = base + *at as u32;
        let lost = lossy && input.byte() % 16 == 0;
        if !lost {
            // The socket has taken everything before this piece (a sender's stream).
            feed(&mut h, is_req, s, base, seq, len as u32, seq, now, &mut cut);
        }
        *at += len;
        now += 1;
    }
    for g in whole.got.iter().chain(&cut.got) {
        assert!(g.f.off as u64 + g.f.n as u64 <= g.f.flen as u64, "chunk beyond its frame: {:?}", g.f);
        assert_eq!(g.bytes.len(), g.f.n as usize);
    }
    if !lossy {
        assert_eq!(joined(&cut.got), joined(&whole.got));
    }
    // The daemon's side.
    let mut asm = Assembler::new(Limits::default());
    let mut done = 0usize;
    for (seq, g) in cut.got.iter().enumerate() {
        let mut ev = Event::ZERO;
        ev.cookie = 7;
        ev.ns = g.f.ns;
        ev.role = 1;
        ev.is_req = g.f.is_req as u8;
        ev.kind = g.f.kind;
        ev.ftype = g.f.ftype;
        ev.fflags = g.f.fflags;
        ev.stream = g.f.stream;
        ev.flen = g.f.flen;
        ev.off = g.f.off;
        ev.n = g.f.n;
        ev.seq = seq as u32;
        ev.data[..g.bytes.len()].copy_from_slice(&g.bytes);
        asm.event(&ev, &mut |_| done += 1);
        let _ = EV_FRAME;
    }
    assert!(done <= requests, "{done} exchanges from {requests} request HEADERS");
});
