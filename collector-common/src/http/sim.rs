//! Host-side driver of the framer (tests and the fuzz target): feeds it segments of a
//! connection's two byte streams the way the kernel programs do — positional bookkeeping,
//! window loads limited to the segment, steps, bytes beyond a missing one kept in the reorder
//! stash and parsed once it arrives, settling, FIN — and records what it reports. The
//! receiving side's in-order point (`frontier`) is simulated from the segments delivered.
extern crate std;

use std::{collections::HashMap, vec::Vec};

use super::framer::{
    Exchange, Pending, S_IGNORE, S_LOST, SF_RECEIVED, Sink, WINDOW_WORDS, after, needs_bytes, skippable,
};
use crate::{
    capture::stash::{self, BLOCK, Block},
    drop,
};

/// One finished exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub method: u8,
    pub status: u16,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub start: u64,
    pub end: u64,
}

/// What the framer reported.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub started: u64,
    pub done: Vec<Done>,
    pub abandoned: u64,
    pub drops: [u64; drop::COUNT as usize],
}

impl Sink for Recorder {
    fn request_started(&mut self) {
        self.started += 1;
    }
    fn exchange_done(&mut self, req: &Pending, status: u16, resp_bytes: u64, now: u64) {
        self.done.push(Done {
            method: req.method,
            status,
            req_bytes: req.req_bytes,
            resp_bytes,
            start: req.start_ns,
            end: now,
        });
    }
    fn abandoned(&mut self, n: u64) {
        self.abandoned += n;
    }
    fn dropped(&mut self, reason: u32) {
        if let Some(d) = self.drops.get_mut(reason as usize) {
            *d += 1;
        }
    }
}

/// Byte ranges received, for the in-order point of a receiving direction.
#[derive(Clone, Debug, Default)]
struct Received(Vec<(u64, u64)>);

impl Received {
    fn add(&mut self, a: u64, b: u64) {
        self.0.push((a, b));
        self.0.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for &(s, e) in &self.0 {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged;
    }

    /// End of the prefix received without a gap.
    fn in_order(&self) -> u64 {
        match self.0.first() {
            Some(&(0, e)) => e,
            _ => 0,
        }
    }
}

/// One connection as seen from one host.
pub struct Conn {
    pub ex: Exchange,
    pub sink: Recorder,
    /// The request and the response stream.
    pub streams: [Vec<u8>; 2],
    /// Stream position of byte 0 of each stream.
    pub base: [u32; 2],
    /// Whether this host receives the stream (its in-order point is the kernel's `rcv_nxt`);
    /// a stream the host sends passes in order.
    pub receives: [bool; 2],
    received: [Received; 2],
    /// Segments of a received stream by which the kernel's in-order point lags behind what
    /// was delivered: they wait in the socket's backlog while its reader holds it, and
    /// `rcv_nxt` moves only when the reader lets go (0: it never lags).
    pub lag: usize,
    /// The in-order point of each stream after each of its segments (starting with 0).
    in_order_after: [Vec<u64>; 2],
    /// Most steps one segment took.
    pub max_steps: usize,
    /// Steps taken over all segments (each is a call of a global function in the kernel).
    pub steps: usize,
    /// The reorder stash (collector_common::http::stash), per direction and block.
    pub stash: HashMap<(bool, u32), Block>,
    /// Most blocks the stash held at once.
    pub max_blocks: usize,
}

fn idx(is_req: bool) -> usize {
    if is_req { 0 } else { 1 }
}

impl Conn {
    /// A connection seen by its server (`server`: requests arrive) or its client, followed from
    /// its first byte in both directions.
    pub fn new(server: bool, base_req: u32, base_resp: u32) -> Conn {
        let mut ex = Exchange::ZERO;
        ex.req.sync(base_req);
        ex.resp.sync(base_resp);
        ex.dir_mut(server).sflags |= SF_RECEIVED;
        Conn {
            ex,
            sink: Recorder::default(),
            streams: [Vec::new(), Vec::new()],
            base: [base_req, base_resp],
            receives: [server, !server],
            received: Default::default(),
            lag: 0,
            in_order_after: [std::vec![0], std::vec![0]],
            max_steps: 0,
            steps: 0,
            stash: HashMap::new(),
            max_blocks: 0,
        }
    }

    /// The kernel's in-order point of stream `i` (`rcv_nxt`), `lag` segments behind.
    fn kernel_in_order(&self, i: usize) -> u64 {
        let h = &self.in_order_after[i];
        h[h.len().saturating_sub(1 + self.lag)]
    }

    /// Appends bytes to a stream (what one side wrote).
    pub fn write(&mut self, is_req: bool, bytes: &[u8]) {
        self.streams[idx(is_req)].extend_from_slice(bytes);
    }

    pub fn len(&self, is_req: bool) -> usize {
        self.streams[idx(is_req)].len()
    }

    /// Delivers stream bytes `[off, off + len)` as one segment at time `now`, with a FIN after
    /// them when `fin`.
    pub fn segment(&mut self, is_req: bool, off: usize, len: usize, fin: bool, now: u64) {
        let i = idx(is_req);
        let stream_len = self.streams[i].len();
        let (off, len) = (off.min(stream_len), len.min(stream_len - off.min(stream_len)));
        let seq = self.base[i].wrapping_add(off as u32);
        let in_order = self.base[i].wrapping_add(self.kernel_in_order(i) as u32);
        let frontier = if self.receives[i] { in_order } else { seq };
        let seg_end = seq.wrapping_add(len as u32);
        // As the kernel programs do on every segment: the received stream's bytes before the
        // in-order point have arrived.
        let received = self.receives[0];
        let upto = self.base[idx(received)].wrapping_add(self.kernel_in_order(idx(received)) as u32);
        if skippable(self.ex.dir(received).state) {
            self.ex.reached(received, upto, now, &mut self.sink);
        }
        // A response waiting for a gap that has been filled meanwhile.
        if !received && self.ex.has_deferred() {
            let when = self.ex.resp.fill_ns;
            self.ex.resolve(upto, when, &mut self.sink);
        }
        self.drain(is_req, now);
        if self.ex.arrive(is_req, seq, len as u32, frontier, now, &mut self.sink) {
            let mut steps = 0;
            // The kernel programs bound the steps per segment; so does this driver (generously:
            // a step consumes at least one byte).
            while steps <= len + 8 {
                if let Some((p, n)) = self.ex.dir(is_req).needs_window(seg_end) {
                    let from = p.wrapping_sub(self.base[i]) as usize;
                    let bytes = &self.streams[i][from..from + n as usize];
                    let w = &mut self.ex.dir_mut(is_req).w;
                    w.buf = [0; WINDOW_WORDS];
                    for (k, b) in bytes.iter().enumerate() {
                        w.buf[k / 8] |= (*b as u64) << (8 * (k % 8));
                    }
                    w.base = p;
                    w.len = n;
                }
                steps += 1;
                if self.ex.step(is_req, seg_end, now, &mut self.sink) {
                    break;
                }
            }
            self.max_steps = self.max_steps.max(steps);
            self.steps += steps;
        } else {
            let d = self.ex.dir(is_req);
            if needs_bytes(d.state) && after(seq, d.pos) {
                self.keep(is_req, seq, seg_end);
            }
        }
        self.drain(is_req, now);
        self.received[i].add(off as u64, (off + len) as u64);
        let now_in_order = self.received[i].in_order();
        self.in_order_after[i].push(now_in_order);
        self.ex.settle(is_req, now, &mut self.sink);
        // The host driver follows no protocol but HTTP/1 (the kernel's packet driver switches
        // to HTTP/2 after an `Upgrade: h2c`).
        crate::capture::Stream::not_switched(&mut self.ex, now, &mut self.sink);
        if fin {
            self.ex.fin(is_req, seg_end, now, &mut self.sink);
        }
    }

    /// Keeps the bytes of a segment that arrived beyond the position the framer waits at.
    fn keep(&mut self, is_req: bool, seq: u32, end: u32) {
        let pos = self.ex.dir(is_req).pos;
        let i = idx(is_req);
        let from = if after(pos, seq) { pos } else { seq };
        let mut index = stash::index_of(from);
        while let Some((o, n, at)) = stash::overlap(seq, end, pos, index) {
            let block = self.stash.entry((is_req, index)).or_insert(Block::ZERO);
            let first = seq.wrapping_sub(self.base[i]).wrapping_add(at) as usize;
            for (k, b) in self.streams[i][first..first + n as usize].iter().enumerate() {
                let at = o as usize + k;
                block.data[at / 8] &= !(0xff << (8 * (at % 8)));
                block.data[at / 8] |= (*b as u64) << (8 * (at % 8));
            }
            block.mark(o, n);
            index = index.wrapping_add(1);
        }
        self.max_blocks = self.max_blocks.max(self.stash.len());
    }

    /// Parses what the stash holds from the position on, then forgets the blocks behind it (all
    /// of them when the direction stopped following).
    fn drain(&mut self, is_req: bool, now: u64) {
        let mut steps = 0;
        while steps < 4096 {
            let d = self.ex.dir(is_req);
            let pos = d.pos;
            if !(needs_bytes(d.state) || skippable(d.state)) {
                break;
            }
            let index = stash::index_of(pos);
            let start = index.wrapping_mul(BLOCK);
            let Some(block) = self.stash.get(&(is_req, index)).copied() else { break };
            let o = pos.wrapping_sub(start);
            if !block.has(o) {
                break;
            }
            let end = start.wrapping_add(block.run_end(o));
            loop {
                steps += 1;
                let d = self.ex.dir_mut(is_req);
                if let Some((p, _)) = d.needs_window(end) {
                    block.fill_window(&mut d.w, start, p, end);
                }
                if self.ex.step(is_req, end, now, &mut self.sink) || steps >= 4096 {
                    break;
                }
            }
        }
        let d = self.ex.dir(is_req);
        let (state, floor) = (d.state, stash::index_of(d.pos));
        let gone = state == S_LOST || state == S_IGNORE;
        self.stash.retain(|(r, index), _| *r != is_req || (!gone && !after(floor, *index)));
    }

    /// Delivers all of a stream from `off` in segments of `mss` bytes, in order.
    pub fn send_all(&mut self, is_req: bool, off: usize, mss: usize, now: u64) {
        let end = self.len(is_req);
        let mut o = off;
        while o < end {
            let n = mss.min(end - o);
            self.segment(is_req, o, n, false, now);
            o += n;
        }
    }
}
