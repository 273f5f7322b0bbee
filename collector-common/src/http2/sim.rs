//! Host-side driver of the HTTP/2 framer (tests and the fuzz target): feeds it pieces of a
//! connection's byte streams the way the kernel's packet driver does (`capture::segment`) —
//! positional bookkeeping, window loads limited to the piece, steps, settling — and records
//! what it reports: each event with the chunk's bytes.
extern crate std;

use std::vec::Vec;

use super::{Frame, framer::H2};
use crate::capture::{Pending, Sink, Stream, WINDOW_WORDS, Window};

/// An event as the daemon would get it: the frame and the chunk's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub f: Frame,
    pub bytes: Vec<u8>,
}

/// What the framer reported.
#[derive(Default)]
pub struct Rec {
    pub got: Vec<Got>,
    pub drops: Vec<u32>,
}

impl Sink for Rec {
    fn request_started(&mut self) {}
    fn exchange_done(&mut self, _: &Pending, _: u16, _: u64, _: u64) {}
    fn abandoned(&mut self, _: u64) {}
    fn dropped(&mut self, reason: u32) {
        self.drops.push(reason);
    }
    fn frame(&mut self, f: &Frame, w: &Window) {
        let bytes = (f.at as usize..(f.at + f.n) as usize)
            .map(|i| (w.buf[(i / 8) % WINDOW_WORDS] >> (8 * (i % 8))) as u8)
            .collect();
        self.got.push(Got { f: *f, bytes });
    }
}

/// One piece `[seq, seq + len)` of direction `is_req`, whose stream's bytes are `stream` from
/// position `base` on, with `frontier` as the socket's in-order point. Returns whether the
/// piece was parsed (else the kernel would keep it in the reorder stash).
#[allow(clippy::too_many_arguments)]
pub fn feed(
    h: &mut H2,
    is_req: bool,
    stream: &[u8],
    base: u32,
    seq: u32,
    len: u32,
    frontier: u32,
    now: u64,
    rec: &mut Rec,
) -> bool {
    let parse = h.arrive(is_req, seq, len, frontier, now, rec);
    if parse {
        let end = seq.wrapping_add(len);
        // The kernel's bound on steps per segment (`capture::segment::MAX_STEPS`).
        for _ in 0..512 {
            if let Some((p, n)) = h.needs_window(is_req, end) {
                let w = h.window(is_req);
                w.buf = [0; WINDOW_WORDS];
                for i in 0..n as usize {
                    let b = stream.get(p.wrapping_sub(base) as usize + i).copied().unwrap_or(0);
                    w.buf[i / 8] |= (b as u64) << (8 * (i % 8));
                }
                w.base = p;
                w.len = n;
            }
            if h.step(is_req, end, now, rec) {
                break;
            }
        }
    }
    h.settle(is_req, now, rec);
    parse
}
